//! One publishing pipeline's feed: a hub consumer pushed into an `appsrc`, frames as they are (no re-encoding), and
//! the camera's audio into a second `appsrc` where the pipeline republishes sound. The feed starts when the pipeline
//! first asks for data (so a new reader gets the current GOP from its keyframe, at once), keeps the stream's own frame
//! spacing on the pipeline's running time (decode order moving forward, each frame's presentation delay kept, for
//! B-frames; audio on the same offset as the video, so they stay in sync), and ends when
//! told to, when the pipeline refuses data, when the camera goes away, or when the camera's codec changes (the
//! payloader is fixed). Audio in another codec than the pipeline's audio payloader takes is left out.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Counters;
use crate::base::Codec;
use crate::media::clock::Forward;
use crate::media::hub::{HubItem, Start, StreamHub};
use crate::media::{audio_codec_of, codec_of};

/// Frames a feed may have queued from the hub before it loses some (and resumes at the next keyframe).
const QUEUE: usize = 128;

/// Why a feed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEnd {
    Stopped,
    /// The camera was removed (its hub is gone).
    CameraGone,
    /// The camera now sends another codec than the pipeline's payloader takes.
    CodecChanged,
    /// The pipeline stopped taking data (torn down, or failed).
    Refused,
}

/// An `appsrc` named `name` for hub frames with `caps`: live, timestamps set by the feed, bounded (oldest dropped if
/// the pipeline stalls, so a stuck peer cannot grow memory).
pub fn appsrc(name: &str, caps: &gst::Caps) -> gst_app::AppSrc {
    gst_app::AppSrc::builder()
        .name(name)
        .caps(caps)
        .format(gst::Format::Time)
        .is_live(true)
        .do_timestamp(false)
        .stream_type(gst_app::AppStreamType::Stream)
        .max_bytes(8 * 1024 * 1024)
        .block(false)
        .leaky_type(gst_app::AppLeakyType::Downstream)
        .build()
}

/// Notifies `started` whenever the pipeline wants data from `src` (the first time: it is running).
pub fn on_need_data(src: &gst_app::AppSrc, started: Arc<Notify>) {
    src.set_callbacks(gst_app::AppSrcCallbacks::builder().need_data(move |_, _| started.notify_one()).build());
}

/// Counts the bytes leaving `pad` (a payloader's src): each buffer `multiplier()` times.
pub fn count_bytes(
    pad: &gst::Pad,
    counters: Arc<Counters>,
    multiplier: impl Fn(&Counters) -> u64 + Send + Sync + 'static,
) {
    pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, info| {
        let size = match &info.data {
            Some(gst::PadProbeData::Buffer(b)) => b.size(),
            Some(gst::PadProbeData::BufferList(l)) => l.calculate_size(),
            _ => 0,
        } as u64;
        counters.bytes_sent.fetch_add(size * multiplier(&counters), Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
}

/// How much faster than real time the GOP a new reader starts with goes out: a one-second GOP in 40 ms, its frames on
/// distinct timestamps, in their order (B-frames keep their place, scaled alike).
const CATCH_UP_SPEED: u64 = 25;

/// A frame that arrived this much before its feed (re)started is history, sent to catch up.
const HISTORY: std::time::Duration = std::time::Duration::from_millis(5);

/// Maps hub timestamps (one timeline per camera connection) onto the pipeline's running time, at the live edge: each
/// frame at the running time it arrived (its age taken off now when the feed starts, then the stream's own spacing),
/// never backwards (`media::clock`). A new reader starts at the latest keyframe, which may be a GOP old: the frames of
/// that GOP that arrived before the feed started are sent at once, their timeline compressed `CATCH_UP_SPEED` times, so
/// the reader catches up with the live picture within tens of milliseconds instead of staying a GOP behind for as long
/// as it reads.
#[derive(Debug, Default)]
struct Timestamps {
    offset: Option<i128>,
    forward: Forward,
    /// When this feed (re)started: frames that arrived before it are history.
    live_from: Option<std::time::Instant>,
    /// Where the history being caught up with starts: (output, its first frame's decode time).
    catch_up: Option<(gst::ClockTime, i128)>,
    /// The last audio output: audio never goes back either.
    last_audio: Option<gst::ClockTime>,
}

impl Timestamps {
    fn gap(&mut self) {
        self.offset = None;
        self.live_from = None;
        self.catch_up = None;
    }

    /// A frame's (decode, presentation) outputs, from its decode time (its DTS, else its PTS) and how much later it
    /// is shown than decoded.
    fn map(
        &mut self,
        decode: Option<gst::ClockTime>,
        delay: gst::ClockTime,
        arrived: std::time::Instant,
        now: gst::ClockTime,
    ) -> (gst::ClockTime, gst::ClockTime) {
        let age = arrived.elapsed();
        // Without a camera timestamp, arrival time keeps the spacing.
        let anchor = match decode {
            Some(t) => t.nseconds() as i128,
            None => -(age.as_nanos() as i128),
        };
        let live_from = *self.live_from.get_or_insert_with(std::time::Instant::now);
        let offset = *self.offset.get_or_insert(now.nseconds() as i128 - age.as_nanos() as i128 - anchor);
        let natural = gst::ClockTime::from_nseconds((anchor + offset).max(0) as u64);
        if age > live_from.elapsed() + HISTORY {
            let last = self.forward.last();
            let start = last.map_or(natural, |last| natural.max(last + gst::ClockTime::MSECOND));
            let (start, first) = *self.catch_up.get_or_insert((start, anchor));
            let since = u64::try_from(anchor - first).unwrap_or(0);
            let (out, _) = self.forward.next(start + gst::ClockTime::from_nseconds(since / CATCH_UP_SPEED));
            return (out, out + delay / CATCH_UP_SPEED);
        }
        let (out, shift) = self.forward.next(natural);
        if let Some(shift) = shift {
            self.offset = Some(offset + shift);
        }
        (out, out + delay)
    }

    /// An audio frame's output, on the video's offset; `None` before the connection's first video frame placed the
    /// timeline, or for a frame not after the last audio output.
    fn map_audio(&mut self, pts: Option<gst::ClockTime>) -> Option<gst::ClockTime> {
        let at = pts?.nseconds() as i128 + self.offset?;
        let at = gst::ClockTime::from_nseconds(u64::try_from(at).ok()?);
        if self.last_audio.is_some_and(|last| at <= last) {
            return None;
        }
        self.last_audio = Some(at);
        Some(at)
    }
}

/// What a feed needs.
pub struct Feed {
    pub appsrc: gst_app::AppSrc,
    /// The audio track's `appsrc` (caps set), where the pipeline republishes the camera's sound.
    pub audio: Option<gst_app::AppSrc>,
    pub hub: std::sync::Weak<StreamHub>,
    pub codec: Codec,
    pub counters: Arc<Counters>,
    /// Notified when the pipeline wants data (the appsrc's need-data).
    pub started: Arc<Notify>,
    /// Notified to start over from the latest keyframe (a WebRTC peer just connected).
    pub restart: Option<Arc<Notify>>,
    pub stop: CancellationToken,
}

/// Runs a feed until it ends; sends EOS into the pipeline when the camera goes away.
pub async fn run(feed: Feed) -> FeedEnd {
    let Feed { appsrc, audio, hub, codec, counters, started, restart, stop } = feed;
    tokio::select! {
        _ = stop.cancelled() => return FeedEnd::Stopped,
        _ = started.notified() => {}
    }
    // Someone watches: the media thread turns at its live pace while the feed runs.
    let _live = crate::media::runtime::Live::take();
    // The audio payloader is fixed too: sound in another codec (after a reconnect) is left out until it returns.
    let audio_codec = audio.as_ref().and_then(|a| a.caps()).as_ref().and_then(audio_codec_of);
    let mut audio_matches = true;
    let subscribe = || {
        hub.upgrade().map(|h| match audio {
            Some(_) => h.subscribe_with_audio("publish", QUEUE, Start::LatestKeyframe),
            None => h.subscribe("publish", QUEUE, Start::LatestKeyframe),
        })
    };
    let Some(mut consumer) = subscribe() else { return FeedEnd::CameraGone };
    let restart = restart.unwrap_or_default();
    let mut stamps = Timestamps::default();
    let end = loop {
        let item = tokio::select! {
            _ = stop.cancelled() => break FeedEnd::Stopped,
            _ = restart.notified() => {
                let Some(c) = subscribe() else { break FeedEnd::CameraGone };
                consumer = c;
                stamps.gap();
                continue;
            }
            item = consumer.rx.recv() => item,
        };
        match item {
            None => break FeedEnd::CameraGone,
            Some(HubItem::Caps(caps)) => {
                if codec_of(&caps) != Some(codec) {
                    break FeedEnd::CodecChanged;
                }
                appsrc.set_caps(Some(&caps));
            }
            Some(HubItem::Gap) => stamps.gap(),
            Some(HubItem::Frame(frame)) => {
                let now = appsrc.current_running_time().unwrap_or(gst::ClockTime::ZERO);
                let mut buffer = frame.buffer.copy();
                {
                    let b = buffer.make_mut();
                    // The decode timeline is what moves forward; a frame shown later than it is decoded (B-frames,
                    // common from RTMP encoders) keeps that delay, so readers reorder it as the encoder did.
                    let (pts, dts) = (frame.buffer.pts(), frame.buffer.dts());
                    let delay = match (pts, dts) {
                        (Some(p), Some(d)) => p.saturating_sub(d),
                        _ => gst::ClockTime::ZERO,
                    };
                    let (decode, show) = stamps.map(dts.or(pts), delay, frame.arrived, now);
                    b.set_dts(dts.map(|_| decode));
                    b.set_pts(show);
                    b.set_duration(gst::ClockTime::NONE);
                }
                if appsrc.push_buffer(buffer).is_err() {
                    break FeedEnd::Refused;
                }
                counters.frames_sent.fetch_add(1, Ordering::Relaxed);
            }
            Some(HubItem::AudioCaps(caps)) => {
                audio_matches = audio_codec.is_some() && audio_codec_of(&caps) == audio_codec;
                if let Some(src) = audio.as_ref().filter(|_| audio_matches) {
                    src.set_caps(Some(&caps));
                }
            }
            Some(HubItem::Audio(frame)) => {
                let Some(src) = audio.as_ref().filter(|_| audio_matches) else { continue };
                let Some(at) = stamps.map_audio(frame.buffer.pts()) else { continue };
                let mut buffer = frame.buffer.copy();
                {
                    let b = buffer.make_mut();
                    b.set_pts(at);
                    b.set_dts(gst::ClockTime::NONE);
                }
                if src.push_buffer(buffer).is_err() {
                    break FeedEnd::Refused;
                }
            }
        }
    };
    if matches!(end, FeedEnd::CameraGone | FeedEnd::CodecChanged) {
        let _ = appsrc.end_of_stream();
        if let Some(src) = &audio {
            let _ = src.end_of_stream();
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{Duration, Instant};

    /// Whether `a` is within a millisecond of `b` (map reads the clock for a frame's age).
    fn near(a: gst::ClockTime, b: gst::ClockTime) -> bool {
        a.nseconds().abs_diff(b.nseconds()) < 1_000_000
    }

    #[test]
    fn timestamps_keep_spacing_start_at_now_and_never_go_back() {
        let s = gst::ClockTime::SECOND;
        let mut m = Timestamps::default();
        let first = m.map(Some(s * 100), gst::ClockTime::ZERO, Instant::now(), s * 5).0;
        assert!(near(first, s * 5), "{first}");
        assert!(near(m.map(Some(s * 101), gst::ClockTime::ZERO, Instant::now(), s * 5).0, s * 6));
        // A new connection with its own timeline: anchored at the running time again, still after the last.
        m.gap();
        assert!(near(m.map(Some(s / 10), gst::ClockTime::ZERO, Instant::now(), s * 7).0, s * 7));
        m.gap();
        let back = m.map(Some(s), gst::ClockTime::ZERO, Instant::now(), s * 3).0;
        assert!(back > s * 7, "{back}");
    }

    #[test]
    fn audio_follows_the_video_offset_and_never_goes_back() {
        let (s, ms) = (gst::ClockTime::SECOND, gst::ClockTime::MSECOND);
        let mut m = Timestamps::default();
        // No video yet: nowhere to place it.
        assert_eq!(m.map_audio(Some(s * 100)), None);
        let video = m.map(Some(s * 100), gst::ClockTime::ZERO, Instant::now(), s * 5).0;
        assert!(near(video, s * 5), "{video}");
        assert_eq!(m.map_audio(Some(s * 100 + ms * 20)), Some(video + ms * 20));
        assert_eq!(m.map_audio(Some(s * 100 + ms * 10)), None);
        assert_eq!(m.map_audio(Some(s * 100 + ms * 40)), Some(video + ms * 40));
    }

    #[test]
    fn a_camera_clock_that_goes_back_continues_one_frame_after_the_last() {
        let (s, frame) = (gst::ClockTime::SECOND, gst::ClockTime::from_mseconds(66));
        let mut m = Timestamps::default();
        let start = m.map(Some(s * 100), gst::ClockTime::ZERO, Instant::now(), s * 5).0;
        for i in 1..10 {
            assert!(near(
                m.map(Some(s * 100 + frame * i), gst::ClockTime::ZERO, Instant::now(), s * 5).0,
                start + frame * i
            ));
        }
        // Back to 0 on the same connection: a new timeline, each frame its own time, not 1 ns apart.
        let restarted = m.map(Some(gst::ClockTime::ZERO), gst::ClockTime::ZERO, Instant::now(), s * 5).0;
        assert!(near(restarted, start + frame * 10), "{restarted}");
        assert!(near(m.map(Some(frame), gst::ClockTime::ZERO, Instant::now(), s * 5).0, restarted + frame));
        // A frame a little older than the last (sent out of presentation order) does not restart the timeline.
        let _ = m.map(Some(frame / 2), gst::ClockTime::ZERO, Instant::now(), s * 5).0;
        assert!(near(m.map(Some(frame * 3), gst::ClockTime::ZERO, Instant::now(), s * 5).0, restarted + frame * 3));
    }

    #[test]
    fn a_new_reader_catches_up_with_the_gop_and_then_runs_at_the_live_edge() {
        let (ms, frame) = (gst::ClockTime::MSECOND, gst::ClockTime::from_mseconds(40));
        let now = Instant::now();
        let mut m = Timestamps::default();
        // The pipeline has run 200 ms; the latest keyframe arrived 1 s ago, then 24 frames up to now: the GOP goes out
        // 25 times faster than it was shot (40 ms frames 1.6 ms apart), all of it before now, so it is sent at once.
        let mut last = gst::ClockTime::ZERO;
        for i in 0..25u32 {
            let arrived = now - Duration::from_millis(1000 - 40 * u64::from(i));
            let out = m.map(Some(frame * u64::from(i)), gst::ClockTime::ZERO, arrived, ms * 200).0;
            if i > 0 {
                assert_eq!(out, last + frame / CATCH_UP_SPEED, "history {i} follows the one before, compressed");
            }
            last = out;
        }
        assert!(last < ms * 200, "the whole GOP goes out before now: {last}");
        // The next frame arrives now: placed at now (the live edge), not a GOP later.
        let live = m.map(Some(frame * 25), gst::ClockTime::ZERO, Instant::now(), ms * 200).0;
        assert!(live >= ms * 195 && live <= ms * 215, "{live}");
    }

    #[test]
    fn b_frames_keep_their_place_in_the_catch_up_and_live() {
        let (ms, frame) = (gst::ClockTime::MSECOND, gst::ClockTime::from_mseconds(40));
        let now = Instant::now();
        let mut m = Timestamps::default();
        // Decode order I P B (shown I B P): delays 80, 120, 40 ms.
        let gop = [(0u64, 80u64), (1, 120), (2, 40)];
        let mut shown = Vec::new();
        for (i, delay) in gop {
            let arrived = now - Duration::from_millis(900 - 40 * i);
            shown.push(m.map(Some(frame * i), ms * delay, arrived, ms * 2000).1);
        }
        assert!(shown[0] < shown[2] && shown[2] < shown[1], "I, B, P in presentation order: {shown:?}");
        let (decode, show) = m.map(Some(frame * 3), ms * 80, Instant::now(), ms * 2000);
        assert_eq!(show, decode + ms * 80, "live frames keep their whole delay");
    }
}
