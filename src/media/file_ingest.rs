//! File ingest: a clip (MP4, MKV) played in real time and looped forever, `filesrc ! parsebin ! parser ! appsink`.
//! Looping is GStreamer's segment seek: the first seek is flushing with the SEGMENT flag, and each `SegmentDone` is
//! answered with a non-flushing segment seek back to the start, so the running time keeps rising across loops and the
//! hub gets running-time timestamps with no jump and no end of stream at the loop point (recordings and viewers see
//! one continuous stream). The appsink syncs on the pipeline clock, which paces the file at its own rate. A clip's AAC
//! or G.711 sound goes to the hub's audio track on the same timeline.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{make, pipeline_error};
use crate::base::Failure;
use crate::error::Result;
use crate::media::hub::StreamHub;

/// Builds (but does not start) the pipeline of a looping clip.
pub fn build_file_ingest(path: &Path, hub: Arc<StreamHub>) -> Result<gst::Pipeline> {
    let pipeline = gst::Pipeline::with_name(&format!("file-{}", hub.camera_id()));
    let src = make("filesrc")?;
    src.set_property("location", path.to_string_lossy().as_ref());
    let parse = make("parsebin")?;
    let timeline = Arc::new(Mutex::new(LoopTimeline::default()));
    let sink = running_time_sink(hub.clone(), timeline.clone());
    // One demuxer thread feeds both sinks, each of which blocks it to preroll: a queue before each (the sound's is
    // made with it) lets the other sink get its first buffer.
    let video_queue = make("queue")?;
    pipeline.add_many([&src, &parse, &video_queue, sink.upcast_ref()]).map_err(pipeline_error)?;
    src.link(&parse).map_err(pipeline_error)?;
    video_queue.link(&sink).map_err(pipeline_error)?;
    let pipeline_weak = pipeline.downgrade();
    let sink_weak = video_queue.downgrade();
    parse.connect_pad_added(move |_, pad| {
        let (Some(pipeline), Some(sink)) = (pipeline_weak.upgrade(), sink_weak.upgrade()) else { return };
        let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
        let Some(name) = caps.as_ref().and_then(|c| c.structure(0)).map(|s| s.name().to_string()) else { return };
        let linked = if name.starts_with("video/") {
            super::ingest::link_parsed_video(&pipeline, pad, &name, sink.upcast_ref())
        } else if name.starts_with("audio/") {
            let timeline = timeline.clone();
            super::ingest::add_audio_branch(&pipeline, pad, hub.clone(), true, move |sample, buffer| {
                let Some(segment) = sample.segment().and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned()) else {
                    return;
                };
                let pts = buffer.pts().and_then(|t| segment.to_running_time(t));
                buffer.set_pts(timeline.lock().place_audio(pts));
                buffer.set_dts(gst::ClockTime::NONE);
            })
        } else {
            Ok(()) // subtitles and data are not ingested
        };
        if let Err(e) = linked {
            gst::element_error!(pipeline, gst::StreamError::CodecNotFound, ("{}", e));
        }
    });
    Ok(pipeline)
}

/// The hub's appsink for a clip: synchronised to the clock (real-time pace), timestamps as running time, made to
/// rise by one frame at each loop point (a clip's duration, hence the next loop's base, may end at its last frame's
/// start rather than its end).
fn running_time_sink(hub: Arc<StreamHub>, timeline: Arc<Mutex<LoopTimeline>>) -> gst_app::AppSink {
    super::ingest::video_sink(hub, true, move |sample, buffer| {
        let Some(segment) = sample.segment().and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned()) else {
            return;
        };
        let pts = buffer.pts().and_then(|t| segment.to_running_time(t));
        let dts = buffer.dts().and_then(|t| segment.to_running_time(t));
        let (pts, dts) = timeline.lock().place(segment.base(), pts, dts);
        buffer.set_pts(pts);
        buffer.set_dts(dts);
    })
}

/// Running times across loops: each loop's first frame comes one frame spacing after the last frame of the loop
/// before, however the clip's duration was rounded.
#[derive(Debug, Default)]
struct LoopTimeline {
    base: Option<gst::ClockTime>,
    /// Added to every running time from the current loop on.
    offset: gst::ClockTime,
    /// The last decode time (or presentation time) placed, and the spacing before it.
    last: Option<gst::ClockTime>,
    step: gst::ClockTime,
}

impl LoopTimeline {
    fn place(
        &mut self,
        base: Option<gst::ClockTime>,
        pts: Option<gst::ClockTime>,
        dts: Option<gst::ClockTime>,
    ) -> (Option<gst::ClockTime>, Option<gst::ClockTime>) {
        let (mut pts, mut dts) = (pts.map(|t| t + self.offset), dts.map(|t| t + self.offset));
        let key = dts.or(pts);
        if base != self.base {
            self.base = base;
            if let (Some(last), Some(now)) = (self.last, key) {
                let wanted = last + self.step.max(gst::ClockTime::from_mseconds(1));
                if now < wanted {
                    let shift = wanted - now;
                    self.offset += shift;
                    pts = pts.map(|t| t + shift);
                    dts = dts.map(|t| t + shift);
                }
            }
        }
        if let Some(now) = dts.or(pts) {
            if let Some(last) = self.last
                && now > last
            {
                self.step = now - last;
            }
            self.last = Some(now);
        }
        (pts, dts)
    }

    /// A sound frame's running time on the same loop timeline (the offset of the loop being played).
    fn place_audio(&self, pts: Option<gst::ClockTime>) -> Option<gst::ClockTime> {
        pts.map(|t| t + self.offset)
    }
}

/// Plays a built clip pipeline in a loop until it fails or `stop` fires; sets it to NULL before returning (off the
/// async runtime).
pub async fn run_looping(pipeline: gst::Pipeline, stop: tokio_util::sync::CancellationToken) -> Failure {
    let Some(bus) = pipeline.bus() else { return Failure::retry("pipeline has no bus") };
    let mut messages = bus.stream();
    let ended = match pipeline.set_state(gst::State::Paused) {
        Err(e) => Failure::unsupported(format!("cannot open the clip: {e}")),
        Ok(_) => {
            let mut seeked = false;
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break Failure::retry("stopped"),
                    m = messages.next() => m,
                };
                let Some(message) = message else { break Failure::retry("bus closed") };
                match message.view() {
                    gst::MessageView::AsyncDone(_) if !seeked => {
                        seeked = true;
                        let flags = gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT;
                        if let Err(e) = pipeline.seek_simple(flags, gst::ClockTime::ZERO) {
                            break Failure::unsupported(format!("the clip cannot be looped (not seekable): {e}"));
                        }
                        if let Err(e) = pipeline.set_state(gst::State::Playing) {
                            break Failure::retry(format!("cannot play the clip: {e}"));
                        }
                    }
                    gst::MessageView::SegmentDone(_) => {
                        if let Err(e) = pipeline.seek_simple(gst::SeekFlags::SEGMENT, gst::ClockTime::ZERO) {
                            break Failure::retry(format!("cannot loop the clip: {e}"));
                        }
                    }
                    gst::MessageView::Error(e) => {
                        let err = e.error();
                        break if err.matches(gst::StreamError::CodecNotFound)
                            || err.matches(gst::StreamError::TypeNotFound)
                            || err.matches(gst::StreamError::WrongType)
                        {
                            Failure::unsupported(err.message().to_owned())
                        } else {
                            Failure::retry(err.message().to_owned())
                        };
                    }
                    gst::MessageView::Eos(_) => break Failure::retry("the clip ended"),
                    _ => {}
                }
            }
        }
    };
    let stopped = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
    if let Ok(Err(e)) = stopped {
        tracing::warn!(err = %e, "clip pipeline teardown failed");
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_loop_starts_one_frame_after_the_last() {
        let ms = gst::ClockTime::from_mseconds;
        let mut t = LoopTimeline::default();
        let base0 = Some(ms(0));
        for i in 0..50 {
            assert_eq!(t.place(base0, Some(ms(40 * i)), None), (Some(ms(40 * i)), None));
        }
        // The next loop's base is the clip's duration as the demuxer rounded it (the last frame's start).
        let base1 = Some(ms(1960));
        assert_eq!(t.place(base1, Some(ms(1960)), None), (Some(ms(2000)), None));
        assert_eq!(t.place(base1, Some(ms(2000)), None), (Some(ms(2040)), None));
        // A loop whose base already leaves a frame's room is not shifted further.
        let mut u = LoopTimeline::default();
        u.place(Some(ms(0)), Some(ms(0)), Some(ms(0)));
        u.place(Some(ms(0)), Some(ms(40)), Some(ms(40)));
        assert_eq!(u.place(Some(ms(80)), Some(ms(80)), Some(ms(80))), (Some(ms(80)), Some(ms(80))));
    }
}
