//! The stream hub: one per camera. The ingest pushes encoded access units in; the hub keeps the recent history (from a
//! keyframe), measures the stream, and fans every frame out to consumers through bounded per-consumer queues.
//!
//! The contract (see ARCHITECTURE.md):
//! - `push` never blocks and never waits on a consumer: a full queue drops that consumer's frame, counts it, and the
//!   consumer is resynchronised at the next keyframe so it never decodes across a hole.
//! - A new consumer receives the caps, then the history from a keyframe, then live frames: its first frame is a
//!   keyframe.
//! - Consumers come and go at any time without touching the ingest; dropping a [`Consumer`] unsubscribes it.
//! - `reset` (the source went away) clears history and tells every consumer there is a gap.
//! - A camera with sound has an audio track beside the video: the ingest calls `push_audio_caps` (before its first
//!   video frame, so consumers that open a file at that keyframe know there is sound) and `push_audio` with
//!   timestamps on the same timeline as the video it pushes. Audio is kept in history among the video frames it
//!   arrived with and goes only to consumers that subscribed with [`StreamHub::subscribe_with_audio`]; the others
//!   never see it. It counts in no video statistic.
//!
//! The hub never calls into GStreamer beyond cloning buffers and caps, and holds its lock only for bookkeeping.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use super::picture::Pictures;
use crate::base::{AudioCodec, CameraId, Codec};

/// How far back the hub keeps frames, at most; beyond it history restarts at the next keyframe.
const MAX_HISTORY_FRAMES: usize = 3000;
/// Audio frames kept while waiting for a connection's first keyframe (over a second of 20 ms frames): a keyframe is
/// large and arrives after the sound sent with it (a WebRTC publisher's by about 200 ms).
const MAX_EARLY_AUDIO: usize = 64;
const MAX_HISTORY_BYTES: usize = 64 * 1024 * 1024;
/// The window over which fps and bitrate are measured.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// One encoded access unit (a whole frame), as the parser put it out.
#[derive(Debug, Clone)]
pub struct Frame {
    pub buffer: gst::Buffer,
    pub keyframe: bool,
    /// When the hub received it.
    pub arrived: Instant,
    /// Its number among the hub's video frames, counted from 1 across connections: a frame's identity.
    pub seq: u64,
}

/// One encoded audio frame (an AAC access unit, or a packet's worth of G.711 samples), with its PTS on the video's
/// timeline and, where the ingest knows it, its duration.
#[derive(Debug, Clone)]
pub struct AudioFrame {
    pub buffer: gst::Buffer,
    /// When the hub received it.
    pub arrived: Instant,
}

/// What a consumer receives, in order.
#[derive(Debug, Clone)]
pub enum HubItem {
    /// The stream's caps: sent first, and again whenever they change.
    Caps(gst::Caps),
    Frame(Frame),
    /// The audio track's caps (consumers with audio only): sent after the video caps, and again when they change or
    /// a new connection brings them; a consumer forgets them at a `Gap` (the next connection may have no sound).
    AudioCaps(gst::Caps),
    /// An audio frame (consumers with audio only), in arrival order among the video frames.
    Audio(AudioFrame),
    /// The source went away; frames after this come from a new connection.
    Gap,
}

/// Where a new consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The most recent keyframe: the lowest latency that still decodes.
    LatestKeyframe,
    /// The oldest keyframe in history.
    History,
    /// The newest keyframe at least this old (or the oldest there is): pre-roll.
    PreRoll(Duration),
}

/// Measured properties of the stream, as of now.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    pub frames: u64,
    pub bytes: u64,
    pub keyframes: u64,
    pub fps: f64,
    pub bitrate_bps: u64,
    pub width: u32,
    pub height: u32,
    pub codec: Option<Codec>,
    pub consumers: usize,
    /// The audio track of the current connection, if the camera sends sound.
    pub audio: Option<AudioTrack>,
}

/// The audio track as its caps describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTrack {
    pub codec: AudioCodec,
    pub rate: u32,
    pub channels: u32,
}

impl AudioTrack {
    fn of(caps: &gst::Caps) -> Option<AudioTrack> {
        let s = caps.structure(0)?;
        let positive = |field: &str| s.get::<i32>(field).ok().filter(|v| *v > 0).map(|v| v as u32);
        Some(AudioTrack {
            codec: crate::media::audio_codec_of(caps)?,
            rate: positive("rate")?,
            channels: positive("channels").unwrap_or(1),
        })
    }
}

#[derive(Debug)]
pub struct StreamHub {
    camera_id: CameraId,
    /// Everything the ingest thread and consumers share; short critical sections only.
    state: Mutex<HubState>,
    /// Woken on the first frame after a (re)start, so the supervisor reports CONNECTED at once.
    first_frame: Notify,
    /// Whether the camera's sound is kept (false: dropped here, so nothing records or republishes it).
    sound: std::sync::atomic::AtomicBool,
    /// The latest picture a decoder of this camera made (detection's), for snapshots.
    pictures: Arc<Pictures>,
}

#[derive(Debug)]
struct HubState {
    caps: Option<gst::Caps>,
    width: u32,
    height: u32,
    codec: Option<Codec>,
    audio_caps: Option<gst::Caps>,
    audio: Option<AudioTrack>,
    /// Video frames and the audio that arrived among them, in arrival order, from a keyframe.
    history: VecDeque<Held>,
    /// Video frames in `history` (audio does not count against `MAX_HISTORY_FRAMES`).
    history_frames: usize,
    /// Bytes of video and audio in `history`.
    history_bytes: usize,
    /// How much history to keep behind the latest keyframe (pre-roll); zero keeps only the current GOP.
    retain: Duration,
    consumers: Vec<Slot>,
    next_consumer: u64,
    frames: u64,
    bytes: u64,
    keyframes: u64,
    last_frame: Option<Instant>,
    /// (arrival, presentation time, size) of frames that arrived in the last `RATE_WINDOW`.
    window: VecDeque<(Instant, Option<gst::ClockTime>, usize)>,
    awaiting_first: bool,
    /// The latest audio frames while history is empty: the first keyframe keeps those of its time or later.
    early_audio: VecDeque<AudioFrame>,
}

/// One entry of history.
#[derive(Debug, Clone)]
enum Held {
    Video(Frame),
    Audio(AudioFrame),
}

impl Held {
    fn is_keyframe(&self) -> bool {
        matches!(self, Held::Video(f) if f.keyframe)
    }

    fn arrived(&self) -> Instant {
        match self {
            Held::Video(f) => f.arrived,
            Held::Audio(a) => a.arrived,
        }
    }

    fn size(&self) -> usize {
        match self {
            Held::Video(f) => f.buffer.size(),
            Held::Audio(a) => a.buffer.size(),
        }
    }

    /// What a consumer receives for it; `None` for audio unless the consumer takes audio.
    fn item(&self, audio: bool) -> Option<HubItem> {
        match self {
            Held::Video(f) => Some(HubItem::Frame(f.clone())),
            Held::Audio(a) if audio => Some(HubItem::Audio(a.clone())),
            Held::Audio(_) => None,
        }
    }
}

#[derive(Debug)]
struct Slot {
    id: u64,
    name: &'static str,
    tx: mpsc::Sender<HubItem>,
    /// Whether it takes the audio track.
    audio: bool,
    /// Set after a drop: the consumer gets nothing until the next keyframe.
    resync: bool,
    dropped: Arc<AtomicU64>,
}

impl Slot {
    /// Queues `item`; false if the consumer is gone. A video frame that does not fit sends the consumer to the next
    /// keyframe; an audio frame that does not fit is only lost (its neighbours still decode).
    fn offer(&mut self, item: HubItem) -> bool {
        let video = !matches!(item, HubItem::Audio(_));
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if video {
                    if !self.resync {
                        tracing::debug!(
                            consumer = self.name,
                            "consumer queue full: dropping its frames until a keyframe"
                        );
                    }
                    self.resync = true;
                }
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// A subscription to a hub. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Consumer {
    pub rx: mpsc::Receiver<HubItem>,
    /// When the first frame it was given (from history) arrived; `None` if it starts with live frames.
    pub first_arrival: Option<Instant>,
    id: u64,
    dropped: Arc<AtomicU64>,
    hub: std::sync::Weak<StreamHub>,
}

impl Consumer {
    /// Frames (video and audio) this consumer lost because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.state.lock().consumers.retain(|s| s.id != self.id);
        }
    }
}

impl StreamHub {
    pub fn new(camera_id: CameraId) -> StreamHub {
        StreamHub {
            camera_id,
            state: Mutex::new(HubState {
                caps: None,
                width: 0,
                height: 0,
                codec: None,
                audio_caps: None,
                audio: None,
                history: VecDeque::new(),
                history_frames: 0,
                history_bytes: 0,
                retain: Duration::ZERO,
                consumers: Vec::new(),
                next_consumer: 0,
                frames: 0,
                bytes: 0,
                keyframes: 0,
                last_frame: None,
                window: VecDeque::new(),
                awaiting_first: true,
                early_audio: VecDeque::new(),
            }),
            first_frame: Notify::new(),
            sound: std::sync::atomic::AtomicBool::new(true),
            pictures: Arc::new(Pictures::default()),
        }
    }

    /// The latest picture a decoder of this camera made, shared (see [`Pictures`]).
    pub fn pictures(&self) -> &Arc<Pictures> {
        &self.pictures
    }

    pub fn camera_id(&self) -> &CameraId {
        &self.camera_id
    }

    /// Keeps at least `retain` of history behind the latest keyframe (for pre-roll).
    /// Keeps the camera's sound (the default) or drops it as it arrives (a camera configured with `audio = false`:
    /// where recording sound needs consent, nothing records or republishes it).
    pub fn set_sound(&self, keep: bool) {
        self.sound.store(keep, std::sync::atomic::Ordering::Relaxed);
    }

    fn keeps_sound(&self) -> bool {
        self.sound.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_retain(&self, retain: Duration) {
        self.state.lock().retain = retain;
    }

    /// New caps from the parser; consumers get them before the next frame.
    pub fn push_caps(&self, caps: gst::Caps) {
        let mut st = self.state.lock();
        if st.caps.as_ref() == Some(&caps) {
            return;
        }
        if let Some(s) = caps.structure(0) {
            st.width = s.get::<i32>("width").map(|w| w.max(0) as u32).unwrap_or(0);
            st.height = s.get::<i32>("height").map(|h| h.max(0) as u32).unwrap_or(0);
            st.codec = Codec::from_media_type(s.name().as_str());
        }
        st.caps = Some(caps.clone());
        st.consumers.retain_mut(|slot| slot.offer(HubItem::Caps(caps.clone())));
    }

    /// The caps of the camera's audio track (see [`crate::media::audio_codec_of`] for those camhub carries), for
    /// consumers with audio before the next audio frame. An ingest with sound calls it before its first video frame
    /// of each connection: a consumer that opens a file at a keyframe decides then whether it has a sound track.
    pub fn push_audio_caps(&self, caps: gst::Caps) {
        if !self.keeps_sound() {
            return;
        }
        let mut st = self.state.lock();
        if st.audio_caps.as_ref() == Some(&caps) {
            return;
        }
        st.audio = AudioTrack::of(&caps);
        st.audio_caps = Some(caps.clone());
        st.consumers.retain_mut(|slot| !slot.audio || slot.offer(HubItem::AudioCaps(caps.clone())));
    }

    /// One audio frame, PTS on the timeline of the video pushed to this hub (its duration set where known). Like
    /// `push`, it never blocks. Audio without caps is dropped; audio before the connection's first keyframe is held
    /// back (the last `MAX_EARLY_AUDIO` frames) until that keyframe keeps what is of its time or later and drops
    /// the rest: no consumer could place it.
    pub fn push_audio(&self, buffer: gst::Buffer) {
        if !self.keeps_sound() {
            return;
        }
        let now = Instant::now();
        let mut st = self.state.lock();
        if st.audio_caps.is_none() {
            return;
        }
        let frame = AudioFrame { buffer, arrived: now };
        if st.history.is_empty() {
            if st.early_audio.len() >= MAX_EARLY_AUDIO {
                st.early_audio.pop_front();
            }
            st.early_audio.push_back(frame);
            return;
        }
        st.history_bytes += frame.buffer.size();
        st.history.push_back(Held::Audio(frame.clone()));
        st.consumers.retain_mut(|slot| {
            if !slot.audio || slot.resync {
                return !slot.tx.is_closed();
            }
            slot.offer(HubItem::Audio(frame.clone()))
        });
    }

    /// One access unit from the ingest. Called on a GStreamer streaming thread: it must not block.
    pub fn push(&self, buffer: gst::Buffer) {
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let now = Instant::now();
        let size = buffer.size();
        let pts = buffer.pts();
        let mut st = self.state.lock();
        if st.history.is_empty() && !keyframe {
            // Joined mid-GOP: nothing before the first keyframe can be decoded or recorded.
            return;
        }
        st.frames += 1;
        let frame = Frame { buffer, keyframe, arrived: now, seq: st.frames };
        st.bytes += size as u64;
        st.last_frame = Some(now);
        st.window.push_back((now, pts, size));
        while st.window.front().is_some_and(|(t, _, _)| now.duration_since(*t) > RATE_WINDOW) {
            st.window.pop_front();
        }
        let mut early = Vec::new();
        // The connection's first keyframe (or the first after history started over): the sound held back for it.
        let mut first_sound = Vec::new();
        if keyframe {
            st.keyframes += 1;
            let held = std::mem::take(&mut st.early_audio);
            if let Some(pts) = pts {
                if st.history.is_empty() {
                    first_sound = held.into_iter().filter(|a| a.buffer.pts().is_some_and(|t| t >= pts)).collect();
                } else {
                    early = st.take_audio_from(pts);
                }
            }
            st.trim_history(now);
        }
        st.history_bytes += size;
        st.history_frames += 1;
        st.history.push_back(Held::Video(frame.clone()));
        for held in early.into_iter().chain(first_sound.iter().cloned().map(Held::Audio)) {
            st.history_bytes += held.size();
            st.history.push_back(held);
        }
        if st.history_frames > MAX_HISTORY_FRAMES || st.history_bytes > MAX_HISTORY_BYTES {
            // A source without keyframes for this long: start over at the next one rather than grow without bound.
            st.clear_history();
        }
        st.consumers.retain_mut(|slot| {
            if slot.resync {
                if !keyframe {
                    slot.dropped.fetch_add(1, Ordering::Relaxed);
                    return !slot.tx.is_closed();
                }
                slot.resync = false;
            }
            slot.offer(HubItem::Frame(frame.clone()))
                && (!slot.audio || first_sound.iter().all(|a| slot.offer(HubItem::Audio(a.clone()))))
        });
        let first = std::mem::replace(&mut st.awaiting_first, false);
        drop(st);
        if first {
            self.first_frame.notify_one();
        }
    }

    /// The source went away: history is stale, consumers learn of the gap. The audio caps go too: the next connection
    /// brings its own, or has no sound.
    pub fn reset(&self) {
        let mut st = self.state.lock();
        st.clear_history();
        st.early_audio.clear();
        st.audio_caps = None;
        st.audio = None;
        st.window.clear();
        st.awaiting_first = true;
        st.consumers.retain_mut(|slot| {
            slot.resync = true;
            slot.offer(HubItem::Gap)
        });
    }

    /// Waits for the first frame since the last `reset` (or since creation).
    pub async fn first_frame(&self) {
        loop {
            let notified = self.first_frame.notified();
            if !self.state.lock().awaiting_first {
                return;
            }
            notified.await;
        }
    }

    /// Subscribes a video consumer with a queue of `capacity` frames (grown to fit the history it starts with). It
    /// never receives audio.
    pub fn subscribe(self: &Arc<Self>, name: &'static str, capacity: usize, start: Start) -> Consumer {
        self.attach(name, capacity, start, false)
    }

    /// Subscribes a consumer of video and audio: like `subscribe`, plus the audio caps after the video caps and the
    /// audio frames in arrival order among the video frames, from its first keyframe on. `capacity` counts both.
    pub fn subscribe_with_audio(self: &Arc<Self>, name: &'static str, capacity: usize, start: Start) -> Consumer {
        self.attach(name, capacity, start, true)
    }

    fn attach(self: &Arc<Self>, name: &'static str, capacity: usize, start: Start, audio: bool) -> Consumer {
        let mut st = self.state.lock();
        let from = match start {
            Start::History => 0,
            Start::LatestKeyframe => st.history.iter().rposition(Held::is_keyframe).unwrap_or(st.history.len()),
            Start::PreRoll(age) => {
                let now = Instant::now();
                st.history.iter().rposition(|f| f.is_keyframe() && now.duration_since(f.arrived()) >= age).unwrap_or(0)
            }
        };
        let first_arrival = st.history.get(from).map(Held::arrived);
        let backlog: Vec<HubItem> = st.history.iter().skip(from).filter_map(|h| h.item(audio)).collect();
        // Room for the history and the caps it starts with, and one more.
        let audio_caps = if audio { st.audio_caps.clone() } else { None };
        let (tx, rx) = mpsc::channel(capacity.max(backlog.len() + 2 + usize::from(audio_caps.is_some())));
        if let Some(caps) = &st.caps {
            let _ = tx.try_send(HubItem::Caps(caps.clone()));
        }
        if let Some(caps) = audio_caps {
            let _ = tx.try_send(HubItem::AudioCaps(caps));
        }
        // With no history yet the consumer must still start on a keyframe.
        let resync = backlog.is_empty();
        for item in backlog {
            let _ = tx.try_send(item);
        }
        let id = st.next_consumer;
        st.next_consumer += 1;
        let dropped = Arc::new(AtomicU64::new(0));
        st.consumers.push(Slot { id, name, tx, audio, resync, dropped: dropped.clone() });
        Consumer { rx, first_arrival, id, dropped, hub: Arc::downgrade(self) }
    }

    /// The stream's current caps (`None` before the first connection delivered them).
    pub fn caps(&self) -> Option<gst::Caps> {
        self.state.lock().caps.clone()
    }

    /// The audio track's caps on the current connection (`None` without sound).
    pub fn audio_caps(&self) -> Option<gst::Caps> {
        self.state.lock().audio_caps.clone()
    }

    /// How long ago the last frame arrived (the stall watchdog's question, without computing rates).
    pub fn since_last_frame(&self) -> Option<Duration> {
        self.state.lock().last_frame.map(|t| t.elapsed())
    }

    pub fn stats(&self) -> StreamStats {
        let st = self.state.lock();
        let (fps, bitrate_bps) = st.rates();
        StreamStats {
            frames: st.frames,
            bytes: st.bytes,
            keyframes: st.keyframes,
            fps: (fps * 10.0).round() / 10.0,
            bitrate_bps,
            width: st.width,
            height: st.height,
            codec: st.codec,
            consumers: st.consumers.len(),
            audio: st.audio,
        }
    }
}

impl HubState {
    /// Frame rate and bitrate over the window. Timed by presentation timestamps where the stream has them, since
    /// frames often arrive in bursts (jitterbuffer, TCP); by arrival otherwise.
    fn rates(&self) -> (f64, u64) {
        let (Some(first), Some(last)) = (self.window.front(), self.window.back()) else { return (0.0, 0) };
        if self.window.len() < 2 {
            return (0.0, 0);
        }
        let span = match (first.1, last.1) {
            (Some(a), Some(b)) if b > a => (b - a).seconds_f64(),
            _ => last.0.duration_since(first.0).as_secs_f64(),
        };
        // Over less than half a second the estimate is noise.
        if span < 0.5 {
            return (0.0, 0);
        }
        // Every frame but the first arrived within `span`.
        let bytes: usize = self.window.iter().skip(1).map(|(_, _, s)| s).sum();
        ((self.window.len() - 1) as f64 / span, (bytes as f64 * 8.0 / span) as u64)
    }

    /// Takes the audio frames at the end of history (since the last video frame) whose time is `pts` or later: a
    /// keyframe is large and arrives after the sound sent with it, which history then keeps after the keyframe, so a
    /// consumer starting there gets its sound from the keyframe's time on.
    fn take_audio_from(&mut self, pts: gst::ClockTime) -> Vec<Held> {
        let mut taken = Vec::new();
        while let Some(Held::Audio(a)) = self.history.back()
            && a.buffer.pts().is_some_and(|t| t >= pts)
            && let Some(held) = self.history.pop_back()
        {
            self.history_bytes -= held.size();
            taken.push(held);
        }
        taken.reverse();
        taken
    }

    fn clear_history(&mut self) {
        self.history.clear();
        self.history_frames = 0;
        self.history_bytes = 0;
    }

    /// Called at a new keyframe: drops whole GOPs (with the audio among them) that are older than `retain`.
    fn trim_history(&mut self, now: Instant) {
        loop {
            // The second keyframe in history: everything before it is one whole GOP.
            let Some(next) = self.history.iter().skip(1).position(Held::is_keyframe).map(|i| i + 1) else {
                if self.retain.is_zero() {
                    self.clear_history();
                }
                return;
            };
            if now.duration_since(self.history[next].arrived()) < self.retain {
                return;
            }
            for held in self.history.drain(..next) {
                self.history_bytes -= held.size();
                if let Held::Video(_) = held {
                    self.history_frames -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Arc<StreamHub> {
        gst::init().expect("gstreamer initialises");
        Arc::new(StreamHub::new(CameraId::parse("t").expect("valid id")))
    }

    fn frame(key: bool, tag: u8) -> gst::Buffer {
        let mut b = gst::Buffer::from_slice(vec![tag; 100]);
        if !key {
            b.get_mut().expect("fresh buffer is writable").set_flags(gst::BufferFlags::DELTA_UNIT);
        }
        b
    }

    fn tag(item: HubItem) -> (bool, u8) {
        match item {
            HubItem::Frame(f) => (f.keyframe, f.buffer.map_readable().expect("readable")[0]),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn frames_before_the_first_keyframe_are_dropped() {
        let hub = hub();
        hub.push(frame(false, 1));
        assert_eq!(hub.stats().frames, 0);
        hub.push(frame(true, 2));
        assert_eq!(hub.stats().frames, 1);
    }

    #[test]
    fn a_late_consumer_starts_at_the_latest_keyframe() {
        let hub = hub();
        hub.push_caps(gst::Caps::builder("video/x-h264").field("width", 640i32).field("height", 480i32).build());
        for (key, t) in [(true, 1), (false, 2), (true, 3), (false, 4)] {
            hub.push(frame(key, t));
        }
        let mut c = hub.subscribe("test", 8, Start::LatestKeyframe);
        assert!(matches!(c.rx.try_recv(), Ok(HubItem::Caps(_))));
        assert_eq!(tag(c.rx.try_recv().expect("gop frame")), (true, 3));
        assert_eq!(tag(c.rx.try_recv().expect("gop frame")), (false, 4));
        hub.push(frame(false, 5));
        assert_eq!(tag(c.rx.try_recv().expect("live frame")), (false, 5));
        let s = hub.stats();
        assert_eq!((s.width, s.height, s.codec), (640, 480, Some(Codec::H264)));
    }

    #[test]
    fn a_slow_consumer_drops_only_its_own_frames_and_resumes_on_a_keyframe() {
        let hub = hub();
        hub.push(frame(true, 0));
        let mut slow = hub.subscribe("slow", 2, Start::LatestKeyframe);
        let mut fast = hub.subscribe("fast", 64, Start::LatestKeyframe);
        let drain = |c: &mut Consumer| std::iter::from_fn(|| c.rx.try_recv().ok()).map(tag).collect::<Vec<_>>();
        for t in 1..10 {
            hub.push(frame(false, t));
        }
        // Its queue held three (two, grown by the one frame of history it started with); the rest were dropped.
        assert_eq!(drain(&mut slow), [(true, 0), (false, 1), (false, 2)]);
        assert_eq!(slow.dropped(), 7);
        // Having caught up, it gets nothing until the next keyframe, so it never decodes across the hole.
        hub.push(frame(false, 10));
        hub.push(frame(true, 11));
        hub.push(frame(false, 12));
        assert_eq!(drain(&mut slow), [(true, 11), (false, 12)]);
        let fast_tags: Vec<u8> = drain(&mut fast).into_iter().map(|(_, t)| t).collect();
        assert_eq!(fast_tags, (0..=12).collect::<Vec<_>>());
        assert_eq!(fast.dropped(), 0);
    }

    #[test]
    fn dropping_a_consumer_unsubscribes_it() {
        let hub = hub();
        let c = hub.subscribe("x", 4, Start::LatestKeyframe);
        assert_eq!(hub.stats().consumers, 1);
        drop(c);
        assert_eq!(hub.stats().consumers, 0);
    }

    #[test]
    fn reset_sends_a_gap_and_clears_history() {
        let hub = hub();
        hub.push(frame(true, 1));
        let mut c = hub.subscribe("x", 8, Start::LatestKeyframe);
        let _ = c.rx.try_recv();
        hub.reset();
        assert!(matches!(c.rx.try_recv(), Ok(HubItem::Gap)));
        hub.push(frame(false, 2));
        hub.push(frame(true, 3));
        assert_eq!(tag(c.rx.try_recv().expect("frame after gap")), (true, 3));
        let late = hub.subscribe("late", 8, Start::History);
        drop(late);
    }

    fn aac_caps() -> gst::Caps {
        gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .field("stream-format", "raw")
            .field("rate", 48000i32)
            .field("channels", 1i32)
            .build()
    }

    /// What a consumer has queued, as `v<tag>` (video, `V` for a keyframe), `a<tag>` (audio), `caps`, `acaps`, `gap`.
    fn drain_names(c: &mut Consumer) -> Vec<String> {
        std::iter::from_fn(|| c.rx.try_recv().ok())
            .map(|item| match item {
                HubItem::Caps(_) => "caps".into(),
                HubItem::AudioCaps(_) => "acaps".into(),
                HubItem::Gap => "gap".into(),
                HubItem::Audio(a) => format!("a{}", a.buffer.map_readable().expect("readable")[0]),
                HubItem::Frame(f) => {
                    format!("{}{}", if f.keyframe { "V" } else { "v" }, f.buffer.map_readable().expect("readable")[0])
                }
            })
            .collect()
    }

    #[test]
    fn audio_goes_only_to_consumers_that_ask_and_is_kept_in_history_among_the_video() {
        let hub = hub();
        hub.push_caps(gst::Caps::builder("video/x-h264").build());
        hub.push_audio_caps(aac_caps());
        // Before the first keyframe nothing can be placed.
        hub.push_audio(frame(true, 10));
        hub.push(frame(true, 1));
        hub.push_audio(frame(true, 11));
        hub.push(frame(false, 2));
        hub.push_audio(frame(true, 12));
        hub.push(frame(true, 3));
        hub.push_audio(frame(true, 13));
        let mut video = hub.subscribe("video", 8, Start::LatestKeyframe);
        let mut both = hub.subscribe_with_audio("both", 8, Start::LatestKeyframe);
        assert_eq!(drain_names(&mut video), ["caps", "V3"]);
        assert_eq!(drain_names(&mut both), ["caps", "acaps", "V3", "a13"]);
        hub.push_audio(frame(true, 14));
        hub.push(frame(false, 4));
        assert_eq!(drain_names(&mut video), ["v4"]);
        assert_eq!(drain_names(&mut both), ["a14", "v4"]);
        // Audio counts in no video figure.
        let s = hub.stats();
        assert_eq!((s.frames, s.keyframes), (4, 2));
        assert_eq!(s.audio, Some(AudioTrack { codec: AudioCodec::Aac, rate: 48000, channels: 1 }));
        // A reset forgets the audio track: the next connection brings its own caps, or none.
        hub.reset();
        assert_eq!(drain_names(&mut both), ["gap"]);
        assert!(hub.audio_caps().is_none() && hub.stats().audio.is_none());
        hub.push(frame(true, 5));
        hub.push_audio(frame(true, 15));
        assert_eq!(drain_names(&mut both), ["V5"]);
    }

    #[test]
    fn sound_that_arrived_before_the_first_keyframe_is_kept_from_its_time_on() {
        let hub = hub();
        hub.push_caps(gst::Caps::builder("video/x-h264").build());
        hub.push_audio_caps(aac_caps());
        let mut live = hub.subscribe_with_audio("live", 16, Start::LatestKeyframe);
        // A WebRTC publisher's keyframe comes about 200 ms after the sound of its time.
        for (tag, ms) in [(10, 80), (11, 100), (12, 120), (13, 140), (14, 160)] {
            hub.push_audio(stamped(true, tag, ms));
        }
        hub.push(stamped(true, 1, 110));
        hub.push_audio(stamped(true, 15, 180));
        assert_eq!(drain_names(&mut live), ["caps", "acaps", "V1", "a12", "a13", "a14", "a15"]);
        let mut late = hub.subscribe_with_audio("late", 16, Start::LatestKeyframe);
        assert_eq!(drain_names(&mut late), ["caps", "acaps", "V1", "a12", "a13", "a14", "a15"]);
    }

    fn stamped(key: bool, tag: u8, ms: u64) -> gst::Buffer {
        let mut b = frame(key, tag);
        b.get_mut().expect("fresh buffer is writable").set_pts(gst::ClockTime::from_mseconds(ms));
        b
    }

    #[test]
    fn a_new_consumer_gets_the_sound_from_its_keyframe_s_time_even_if_it_arrived_before() {
        let hub = hub();
        hub.push_audio_caps(aac_caps());
        hub.push(stamped(true, 1, 0));
        hub.push(stamped(false, 2, 40));
        hub.push_audio(stamped(true, 10, 60));
        // Sent with the keyframe at 80 ms, but arrived before it.
        hub.push_audio(stamped(true, 11, 80));
        hub.push_audio(stamped(true, 12, 100));
        hub.push(stamped(true, 3, 80));
        hub.push_audio(stamped(true, 13, 120));
        let mut c = hub.subscribe_with_audio("late", 8, Start::LatestKeyframe);
        assert_eq!(drain_names(&mut c), ["acaps", "V3", "a11", "a12", "a13"]);
    }

    #[test]
    fn pre_roll_history_keeps_the_audio_between_its_keyframes() {
        let hub = hub();
        hub.set_retain(Duration::from_secs(60));
        hub.push_audio_caps(aac_caps());
        for t in 0..4 {
            hub.push(frame(t % 2 == 0, t));
            hub.push_audio(frame(true, 100 + t));
        }
        let mut c = hub.subscribe_with_audio("preroll", 2, Start::History);
        assert_eq!(drain_names(&mut c), ["acaps", "V0", "a100", "v1", "a101", "V2", "a102", "v3", "a103"]);
    }

    #[test]
    fn a_full_queue_loses_audio_without_waiting_for_a_keyframe() {
        let hub = hub();
        hub.push_audio_caps(aac_caps());
        hub.push(frame(true, 0));
        let mut c = hub.subscribe_with_audio("slow", 2, Start::LatestKeyframe);
        // acaps and V0 are queued; capacity is 4 (history grown by 3): two more fit.
        hub.push_audio(frame(true, 10));
        hub.push_audio(frame(true, 11));
        hub.push_audio(frame(true, 12));
        assert_eq!(c.dropped(), 1);
        assert_eq!(drain_names(&mut c), ["acaps", "V0", "a10", "a11"]);
        // Video continues at once: a lost audio frame is no hole in the picture.
        hub.push(frame(false, 1));
        assert_eq!(drain_names(&mut c), ["v1"]);
    }

    #[test]
    fn history_keeps_the_retained_window_from_a_keyframe() {
        let hub = hub();
        hub.set_retain(Duration::from_secs(60));
        for t in 0..6 {
            hub.push(frame(t % 2 == 0, t));
        }
        let mut c = hub.subscribe("preroll", 4, Start::History);
        let tags: Vec<_> = std::iter::from_fn(|| c.rx.try_recv().ok()).map(|i| tag(i).1).collect();
        assert_eq!(tags, vec![0, 1, 2, 3, 4, 5]);
    }
}
