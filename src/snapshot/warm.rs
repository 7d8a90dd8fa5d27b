//! A camera's snapshot pipelines, kept for a short while after a call: a decoder (`appsrc ! avdec ! appsink`) that
//! remembers the last frame it decoded, so that a call soon after decodes only the frames since (or from the GOP's
//! keyframe, when that is fewer), and a JPEG encoder (`appsrc ! videoconvert [! videoscale] ! jpegenc ! appsink`).
//! Nothing feeds them between calls: kept, they hold memory and idle threads, and cost no CPU. Everything here blocks
//! (GStreamer state changes, pulling samples): it runs on the blocking pool, never on the async runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::error::{Dependency, Error, Result};
use crate::media::hub::Frame;

/// How long an encoder may take for one picture, or a decoder to drain at the end of its stream.
const PULL_LIMIT: Duration = Duration::from_secs(5);
/// Calls in a row whose picture came out only at the end of the stream, after which the decoder is taken for one that
/// holds pictures back.
const HELD_BACK: u32 = 3;

fn fail(detail: impl std::fmt::Display) -> Error {
    Error::dependency(Dependency::SnapshotPipeline, detail.to_string())
}

/// A JPEG and the size of its picture.
pub struct Jpeg {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// One camera's snapshot pipelines, built on first use and kept while calls keep coming.
pub struct Warm {
    decoder: Option<Decoder>,
    encoder: Option<Encoder>,
    /// The stream's decoder holds pictures back (B-frames, or a reorder depth signalled): a decoder's picture comes
    /// out only at the end of its stream, so each call decodes from the keyframe into a decoder of its own.
    reorders: bool,
    /// Calls in a row whose picture did not come out in time (a loaded machine, or a decoder that holds pictures
    /// back: after `HELD_BACK` of them it is taken for the latter).
    late: u32,
    /// When the last call ended: the pipelines go `KEEP_WARM` after it.
    pub used: Instant,
}

impl Warm {
    pub fn new() -> Warm {
        Warm { decoder: None, encoder: None, reorders: false, late: 0, used: Instant::now() }
    }

    /// The picture of the last frame of `gop` (from a keyframe, in decode order, as the hub holds it) and how many
    /// frames were decoded for it: none when the kept decoder's last picture is that frame, the frames since its last
    /// one when that frame is in `gop`, else the whole of `gop`.
    pub fn picture(&mut self, caps: &gst::Caps, gop: &[Frame], wait: Duration) -> Result<(gst::Sample, usize)> {
        let target = gop.last().ok_or_else(|| fail("no frame to decode"))?;
        // Presentation times that go back in decode order: B-frames, which a decoder holds back.
        self.reorders |=
            gop.windows(2).any(|w| matches!((w[0].buffer.pts(), w[1].buffer.pts()), (Some(a), Some(b)) if b < a));
        if self.reorders {
            self.decoder = None;
            let mut decoder = Decoder::new(caps)?;
            decoder.decode(gop, target.seq, None)?;
            return decoder.drain().map(|s| (s, gop.len()));
        }
        if self.decoder.as_ref().is_some_and(|d| d.caps != *caps) {
            self.decoder = None;
        }
        let mut decoder = match self.decoder.take() {
            Some(d) => d,
            None => Decoder::new(caps)?,
        };
        if let Some((seq, sample)) = &decoder.last
            && *seq == target.seq
        {
            let sample = sample.clone();
            self.decoder = Some(decoder);
            return Ok((sample, 0));
        }
        // Continue from the last decoded frame when it is in this GOP; otherwise the keyframe starts afresh.
        let from = decoder
            .last
            .as_ref()
            .and_then(|(seq, _)| gop.iter().position(|f| f.seq == *seq))
            .map(|i| i + 1)
            .unwrap_or(0);
        let frames = &gop[from..];
        match decoder.decode(frames, target.seq, Some(wait))? {
            Some(sample) => {
                self.late = 0;
                self.decoder = Some(decoder);
                Ok((sample, frames.len()))
            }
            None => {
                // Not out in time: the machine is loaded, or the decoder holds it back. Either way it comes out at the
                // end of the stream, and the next call starts a new decoder. Late every time, the decoder holds
                // pictures back: from then on each call decodes into a decoder of its own and ends its stream.
                self.late += 1;
                if self.late >= HELD_BACK {
                    tracing::debug!("the snapshot decoder holds pictures back: draining each call's decoder");
                    self.reorders = true;
                }
                decoder.drain().map(|s| (s, frames.len()))
            }
        }
    }

    /// `sample` as a JPEG of `quality`, scaled to `size` if given.
    pub fn jpeg(&mut self, sample: &gst::Sample, quality: u8, size: Option<(u32, u32)>) -> Result<Jpeg> {
        if self.encoder.as_ref().is_some_and(|e| (e.quality, e.size) != (quality, size)) {
            self.encoder = None;
        }
        let mut encoder = match self.encoder.take() {
            Some(e) => e,
            None => Encoder::new(quality, size)?,
        };
        let jpeg = encoder.encode(sample)?;
        // A failed encoder is dropped (above, by `?`), so the next call builds a fresh one.
        self.encoder = Some(encoder);
        Ok(jpeg)
    }
}

/// Builds `launch` and returns it with its `appsrc` named `src` and `appsink` named `out`.
fn pipeline(launch: &str) -> Result<(gst::Pipeline, gst_app::AppSrc, gst_app::AppSink)> {
    let pipeline =
        gst::parse::launch(launch).map_err(fail)?.downcast::<gst::Pipeline>().map_err(|_| fail("not a pipeline"))?;
    let src =
        pipeline.by_name("src").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()).ok_or_else(|| fail("no appsrc"))?;
    let sink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| fail("no appsink"))?;
    Ok((pipeline, src, sink))
}

/// The error a pipeline posted, if any, as the reason it gave no sample.
fn reason(pipeline: &gst::Pipeline, otherwise: &str) -> Error {
    let error = pipeline.bus().and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]));
    match error.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Error(e)) => fail(e.error()),
        _ => fail(otherwise),
    }
}

/// `appsrc ! decoder ! appsink`: live (so that the decoder uses slice threads and gives each picture out as soon as it
/// is decoded, where frame threads would hold one back per thread), only the wanted picture let through.
struct Decoder {
    /// The caps it was built for: others need a new decoder.
    caps: gst::Caps,
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    /// The timestamp of the frame wanted: the decoder's pictures before it are dropped at its output.
    wanted: Arc<AtomicU64>,
    /// The next frame's timestamp (milliseconds counted from 0: only their order matters).
    next: u64,
    /// The hub's number of the last frame decoded, and its picture.
    last: Option<(u64, gst::Sample)>,
}

impl Decoder {
    fn new(caps: &gst::Caps) -> Result<Decoder> {
        let decoder = crate::media::codec_of(caps).unwrap_or(crate::base::Codec::H264).decoder();
        let threads = if decoder.starts_with("avdec_") { " thread-type=slice" } else { "" };
        let (pipeline, src, sink) = pipeline(&format!(
            "appsrc name=src format=time is-live=true max-bytes=0 ! {decoder} name=dec{threads} ! appsink name=out sync=false"
        ))?;
        src.set_caps(Some(caps));
        let wanted = Arc::new(AtomicU64::new(0));
        let dec = pipeline.by_name("dec").ok_or_else(|| fail("no decoder"))?;
        let pad = dec.static_pad("src").ok_or_else(|| fail("decoder without a source pad"))?;
        let want = wanted.clone();
        // Only the wanted picture goes on: no other is handed over, converted or encoded.
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| match info.buffer() {
            Some(b) if b.pts().is_some_and(|pts| pts.mseconds() < want.load(Ordering::Relaxed)) => {
                gst::PadProbeReturn::Drop
            }
            _ => gst::PadProbeReturn::Ok,
        });
        pipeline.set_state(gst::State::Playing).map_err(fail)?;
        Ok(Decoder { caps: caps.clone(), pipeline, src, sink, wanted, next: 0, last: None })
    }

    /// Feeds `frames` (the first a keyframe, or the one after the last fed) and waits up to `wait` for the last one's
    /// picture: `None` when it did not come out in time. With no `wait`, only feeds.
    fn decode(&mut self, frames: &[Frame], seq: u64, wait: Option<Duration>) -> Result<Option<gst::Sample>> {
        self.last = None;
        let Some(count) = frames.len().checked_sub(1) else { return Err(fail("no frame to decode")) };
        let wanted = self.next + count as u64;
        self.wanted.store(wanted, Ordering::Relaxed);
        for frame in frames {
            let mut buffer = frame.buffer.copy();
            {
                let b = buffer.make_mut();
                let t = gst::ClockTime::from_mseconds(self.next);
                b.set_pts(t);
                b.set_dts(t);
                b.set_duration(gst::ClockTime::from_mseconds(1));
            }
            self.next += 1;
            self.src.push_buffer(buffer).map_err(|e| fail(format!("decoder refused a frame: {e:?}")))?;
        }
        let Some(wait) = wait else { return Ok(None) };
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
                if self.sink.is_eos() {
                    return Err(reason(&self.pipeline, "the decoder stopped"));
                }
                return Ok(None);
            };
            if sample.buffer().and_then(|b| b.pts()).is_some_and(|pts| pts.mseconds() >= wanted) {
                self.last = Some((seq, sample.clone()));
                return Ok(Some(sample));
            }
        }
    }

    /// Ends the stream, so that a decoder that holds pictures back gives them out, and returns the wanted one.
    fn drain(self) -> Result<gst::Sample> {
        let _ = self.src.end_of_stream();
        self.sink
            .try_pull_sample(gst::ClockTime::from_nseconds(PULL_LIMIT.as_nanos() as u64))
            .ok_or_else(|| reason(&self.pipeline, "the decoder produced no picture"))
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// `appsrc ! videoconvert [! videoscale ! caps] ! jpegenc ! appsink`, for one quality and size.
struct Encoder {
    quality: u8,
    size: Option<(u32, u32)>,
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    next: u64,
}

impl Encoder {
    fn new(quality: u8, size: Option<(u32, u32)>) -> Result<Encoder> {
        let scale = match size {
            Some((w, h)) => format!(" ! videoscale ! video/x-raw,width={w},height={h}"),
            None => String::new(),
        };
        let (pipeline, src, sink) = pipeline(&format!(
            "appsrc name=src format=time max-bytes=0 ! videoconvert{scale} ! jpegenc quality={quality} ! appsink name=out sync=false"
        ))?;
        pipeline.set_state(gst::State::Playing).map_err(fail)?;
        Ok(Encoder { quality, size, pipeline, src, sink, next: 0 })
    }

    fn encode(&mut self, picture: &gst::Sample) -> Result<Jpeg> {
        let caps = picture.caps().ok_or_else(|| fail("a picture without caps"))?;
        if self.src.caps().as_ref().map(|c| c.as_ref()) != Some(caps) {
            self.src.set_caps(Some(&caps.to_owned()));
        }
        let mut buffer = picture.buffer_owned().ok_or_else(|| fail("a picture without a buffer"))?;
        {
            let b = buffer.make_mut();
            b.set_pts(gst::ClockTime::from_mseconds(self.next));
            b.set_dts(gst::ClockTime::NONE);
        }
        self.next += 1;
        self.src.push_buffer(buffer).map_err(|e| fail(format!("encoder refused a picture: {e:?}")))?;
        let sample = self
            .sink
            .try_pull_sample(gst::ClockTime::from_nseconds(PULL_LIMIT.as_nanos() as u64))
            .ok_or_else(|| reason(&self.pipeline, "the encoder produced no JPEG"))?;
        let (width, height) = sample
            .caps()
            .and_then(|c| {
                c.structure(0).map(|s| (s.get::<i32>("width").unwrap_or(0), s.get::<i32>("height").unwrap_or(0)))
            })
            .map(|(w, h)| (w.max(0) as u32, h.max(0) as u32))
            .unwrap_or((0, 0));
        let data = sample
            .buffer()
            .and_then(|b| b.map_readable().ok().map(|m| m.as_slice().to_vec()))
            .ok_or_else(|| fail("empty JPEG"))?;
        Ok(Jpeg { data, width, height })
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
