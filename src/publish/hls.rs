//! Low-latency HLS: a camera's frames remuxed, without re-encoding, into fMP4 (ISO BMFF) parts and segments held in
//! memory, and the LL-HLS playlist over them. A camera's stream starts on its first request and stops
//! `hls.close_after` after its last (or when the camera goes away or is withdrawn); a request after that starts it
//! again.
//!
//! The muxer is gst-plugins-rs' `isofmp4mux` (registered at start from the `gst-plugin-fmp4` crate) in manual-split
//! mode: the feed decides where parts and segments end and marks the frame that starts the next one; a probe on the
//! `appsrc` sends the muxer its `FMP4MuxSplitNow` event right before that frame, in the stream's order; frames carry
//! a duration, so the muxer places each at once (without one it holds a frame until the next, and takes a split meant
//! for the next frame as this one's). The picture only, for now: with a sound track the muxer sometimes stalled at a
//! stream's start (it waits for every track's first data, and placed a split a frame early meanwhile). A segment
//! starts at a keyframe once the one before has lasted a second (so it is about one GOP); a part ends before the frame that would take it past `hls.part`. Each part is one CMAF chunk (moof+mdat);
//! a segment is its parts' bytes in order. A new connection of the camera, or new caps, ends the muxer's timeline: the
//! next muxer has a new init segment and the playlist says `EXT-X-DISCONTINUITY` there. Media sequence numbers and
//! part numbers run on across muxers, for as long as the stream lives.
//!
//! Requests block as LL-HLS asks (`_HLS_msn`/`_HLS_part` on the playlist, a part named by the preload hint) until what
//! they name exists, at most three target durations.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Counters;
use crate::base::time::iso;
use crate::base::{CameraId, Codec};
use crate::camera::Camera;
use crate::config::HlsConfig;
use crate::error::{Error, Result, State};
use crate::media::clock::Timeline;
use crate::media::hub::{HubItem, Start, StreamHub};
use crate::media::{codec_of, make};

/// Frames the feed may have queued from the hub before it loses some.
const QUEUE: usize = 256;

/// A segment ends at the first keyframe after it has lasted this long.
const MIN_SEGMENT: gst::ClockTime = gst::ClockTime::SECOND;

/// How far back in the hub's history a new stream starts: a few segments a player can start in at once.
const HISTORY: Duration = Duration::from_secs(4);

/// A viewer is someone who asked for anything of the stream within this window.
const VIEWER_WINDOW: Duration = Duration::from_secs(5);

/// Complete segments whose parts a playlist lists (the older ones are listed whole).
const SEGMENTS_WITH_PARTS: usize = 2;

/// The buffer meta that carries a split to the muxer in the stream's own order (`SPLIT_META`'s `chunk` field).
const SPLIT_META: &str = "CamhubHlsSplit";

/// Registers `isofmp4mux` and its siblings with GStreamer, and our split meta (once; after `gst::init`).
pub fn register_muxer() -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        gst::meta::CustomMeta::register_simple(SPLIT_META);
        gstfmp4::plugin_register_static().map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|e| Error::dependency(crate::error::Dependency::Gstreamer, format!("fmp4 muxer: {e}")))
}

/// One part: a CMAF chunk.
#[derive(Debug, Clone)]
struct Part {
    number: u64,
    data: Bytes,
    duration: gst::ClockTime,
    independent: bool,
}

/// One segment: its parts, from a keyframe.
#[derive(Debug, Clone)]
struct Segment {
    msn: u64,
    /// The muxer (and init segment) it belongs to.
    generation: u64,
    /// The wall-clock time of its first frame.
    started: SystemTime,
    parts: Vec<Part>,
}

impl Segment {
    fn duration(&self) -> gst::ClockTime {
        self.parts.iter().map(|p| p.duration).sum()
    }
}

/// What a stream has made, and what requests wait on.
#[derive(Debug, Default)]
struct Playlist {
    /// Init segments by generation, those still referenced.
    inits: BTreeMap<u64, Bytes>,
    /// Complete segments, oldest first.
    done: VecDeque<Segment>,
    /// The segment being written.
    open: Option<Segment>,
    next_msn: u64,
    next_part: u64,
    /// EXT-X-TARGETDURATION: the longest segment so far, rounded up (never shrinks).
    target: u64,
    /// Why the stream ended, when it did.
    ended: Option<String>,
    /// The first part holding a frame that arrived after the stream started (the ones before are the hub's history,
    /// muxed in a burst): a playlist is first served once it exists, so a player sees the live edge where it is.
    live_part: Option<u64>,
}

impl Playlist {
    /// Where the stream is: the open segment's number and its parts so far.
    fn position(&self) -> (u64, usize) {
        match &self.open {
            Some(s) => (s.msn, s.parts.len()),
            None => (self.next_msn, 0),
        }
    }

    fn part(&self, number: u64) -> Option<Bytes> {
        self.done
            .iter()
            .chain(self.open.iter())
            .flat_map(|s| s.parts.iter())
            .find(|p| p.number == number)
            .map(|p| p.data.clone())
    }
}

/// Why a request got nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// What it waits for did not come within the wait LL-HLS allows (or a new stream's first segment within 10 s).
    Timeout,
    /// The stream ended (its camera went away or was withdrawn, or the muxer failed), saying why.
    Ended(String),
    /// It asked for a segment more than two after the playlist's last (LL-HLS: a client's mistake).
    TooFarAhead,
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Timeout => f.write_str("nothing new came within the wait: the camera sends no video"),
            Miss::Ended(why) => write!(f, "the stream ended: {why}"),
            Miss::TooFarAhead => f.write_str("_HLS_msn is more than two segments after the playlist's last"),
        }
    }
}

/// Where a request is in the LL-HLS sense.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub msn: u64,
    pub part: Option<u64>,
}

/// One camera's HLS stream.
pub struct Stream {
    camera: CameraId,
    config: HlsConfig,
    playlist: Mutex<Playlist>,
    changed: watch::Sender<u64>,
    last_request: Mutex<Instant>,
    /// Requests waiting on the stream now (a blocking reload, a new stream's first playlist): it is not idle.
    waiting: std::sync::atomic::AtomicUsize,
    viewers: Mutex<HashMap<u64, Instant>>,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("camera", &self.camera).finish_non_exhaustive()
    }
}

/// The HLS service: one stream per camera watched.
pub struct Hls {
    config: HlsConfig,
    runtime: tokio::runtime::Handle,
    streams: Mutex<BTreeMap<CameraId, Arc<Stream>>>,
}

impl std::fmt::Debug for Hls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hls").field("streams", &self.streams.lock().len()).finish_non_exhaustive()
    }
}

impl Hls {
    pub fn new(config: HlsConfig, runtime: tokio::runtime::Handle) -> Hls {
        Hls { config, runtime, streams: Mutex::new(BTreeMap::new()) }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The camera's stream, started if it is not running; refused when `hls.max_streams` run already.
    pub fn stream(&self, camera: &Arc<Camera>, counters: Arc<Counters>) -> Result<Arc<Stream>> {
        let mut streams = self.streams.lock();
        if let Some(s) = streams.get(&camera.id).filter(|s| !s.stop.is_cancelled()) {
            return Ok(s.clone());
        }
        if let Some(old) = streams.get(&camera.id) {
            debug!(camera_id = %camera.id, ended = ?old.playlist.lock().ended, "hls stream ended before: a new one");
        }
        streams.retain(|_, s| !s.stop.is_cancelled());
        if streams.len() >= self.config.max_streams {
            return Err(Error::invalid_state(State::SessionLimit, &[]));
        }
        let (changed, _) = watch::channel(0);
        let stream = Arc::new(Stream {
            camera: camera.id.clone(),
            config: self.config.clone(),
            playlist: Mutex::new(Playlist { target: 1, ..Playlist::default() }),
            changed,
            last_request: Mutex::new(Instant::now()),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            viewers: Mutex::new(HashMap::new()),
            counters,
            stop: CancellationToken::new(),
        });
        streams.insert(camera.id.clone(), stream.clone());
        info!(camera_id = %camera.id, "hls stream started");
        let hub = Arc::downgrade(&camera.hub);
        let s = stream.clone();
        let span = tracing::info_span!("hls", camera_id = %camera.id);
        self.runtime.spawn(tracing::Instrument::instrument(
            async move {
                let why = run(&s, hub).await;
                info!(why, "hls stream stopped");
                s.stop.cancel();
                s.playlist.lock().ended = Some(why.to_owned());
                s.counters.hls_viewers.store(0, Ordering::Relaxed);
                s.changed.send_modify(|v| *v += 1);
            },
            span,
        ));
        Ok(stream)
    }

    /// Ends a camera's stream (withdrawn, removed).
    pub fn end_camera(&self, id: &CameraId) {
        if let Some(s) = self.streams.lock().remove(id) {
            s.stop.cancel();
        }
    }

    /// Ends every stream whose camera no longer exists.
    pub fn end_missing(&self, exists: impl Fn(&CameraId) -> bool) {
        self.streams.lock().retain(|id, s| {
            let keep = exists(id);
            if !keep {
                s.stop.cancel();
            }
            keep
        });
    }

    pub fn shutdown(&self) {
        for (_, s) in std::mem::take(&mut *self.streams.lock()) {
            s.stop.cancel();
        }
    }
}

impl Stream {
    /// Notes a request from `viewer` (a digest of who asks): keeps the stream alive and counts viewers.
    pub fn touch(&self, viewer: u64) {
        let now = Instant::now();
        *self.last_request.lock() = now;
        let count = {
            let mut viewers = self.viewers.lock();
            viewers.insert(viewer, now);
            viewers.retain(|_, at| now.duration_since(*at) < VIEWER_WINDOW);
            viewers.len()
        };
        self.counters.hls_viewers.store(count, Ordering::Relaxed);
    }

    /// Counts bytes served.
    pub fn sent(&self, bytes: usize) {
        self.counters.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// How long a blocking request may wait: three target durations (LL-HLS), and at least 3 s.
    fn patience(&self) -> Duration {
        Duration::from_secs(self.playlist.lock().target.max(1) * 3)
    }

    /// Waits until `ready` holds of the playlist, the stream ends, or `patience` runs out.
    async fn wait(&self, patience: Duration, ready: impl Fn(&Playlist) -> bool) -> std::result::Result<(), Miss> {
        let _waiting = Waiting::new(self);
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            {
                let p = self.playlist.lock();
                if ready(&p) {
                    return Ok(());
                }
                if let Some(why) = &p.ended {
                    return Err(Miss::Ended(why.clone()));
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(Miss::Timeout);
            }
        }
    }

    /// The playlist, once it has a segment and reaches the live edge (a new stream muxes the hub's history in a burst
    /// first; it waits up to 10 s), or, with `wanted`, once the stream has reached that segment (and part); `query` is appended to every URI it lists (a media token).
    pub async fn playlist(&self, wanted: Option<Wanted>, query: &str) -> std::result::Result<String, Miss> {
        let live = |p: &Playlist| !p.done.is_empty() && p.live_part.is_some_and(|live| p.next_part > live);
        if !live(&self.playlist.lock()) {
            self.wait(Duration::from_secs(10), live).await?;
        }
        if let Some(w) = wanted {
            let (msn, _) = self.playlist.lock().position();
            if w.msn > msn + 2 {
                return Err(Miss::TooFarAhead);
            }
            let patience = self.patience();
            self.wait(patience, |p| {
                let (msn, parts) = p.position();
                match w.part {
                    Some(part) => msn > w.msn || (msn == w.msn && parts as u64 > part),
                    None => msn > w.msn,
                }
            })
            .await?;
        }
        Ok(render(&self.playlist.lock(), &self.config, query))
    }

    pub fn init(&self, generation: u64) -> Option<Bytes> {
        self.playlist.lock().inits.get(&generation).cloned()
    }

    /// A complete segment's bytes (its parts in order).
    pub fn segment(&self, msn: u64) -> Option<Vec<Bytes>> {
        let p = self.playlist.lock();
        p.done.iter().find(|s| s.msn == msn).map(|s| s.parts.iter().map(|p| p.data.clone()).collect())
    }

    /// A part's bytes; a part not made yet (the preload hint's) is waited for.
    pub async fn part(&self, number: u64) -> std::result::Result<Option<Bytes>, Miss> {
        {
            let p = self.playlist.lock();
            if let Some(data) = p.part(number) {
                return Ok(Some(data));
            }
            if number < p.next_part || number > p.next_part + 2 {
                return Ok(None);
            }
        }
        let patience = self.patience();
        self.wait(patience, |p| p.next_part > number).await?;
        Ok(self.playlist.lock().part(number))
    }

    /// Nobody asked for `close_after`, and nobody waits now.
    fn idle(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) == 0 && self.last_request.lock().elapsed() > self.config.close_after
    }
}

/// A request waiting on a stream, counted while it waits; when it ends, it counts as the stream's last request.
struct Waiting<'a>(&'a Stream);

impl<'a> Waiting<'a> {
    fn new(stream: &'a Stream) -> Waiting<'a> {
        stream.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(stream)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        *self.0.last_request.lock() = Instant::now();
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The playlist's text.
fn render(p: &Playlist, config: &HlsConfig, query: &str) -> String {
    let q = if query.is_empty() { String::new() } else { format!("?{query}") };
    let part_target = config.part.as_secs_f64();
    let mut out = String::with_capacity(4096);
    let first = p.done.front().map(|s| s.msn).unwrap_or(p.next_msn);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{}\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n\
         #EXT-X-PART-INF:PART-TARGET={part_target:.3}\n#EXT-X-MEDIA-SEQUENCE:{first}\n",
        p.target,
        part_target * 3.0,
    );
    let with_parts_from = p.done.len().saturating_sub(SEGMENTS_WITH_PARTS);
    let mut generation = None;
    for (i, s) in p.done.iter().chain(p.open.iter()).enumerate() {
        if generation != Some(s.generation) {
            if generation.is_some() {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"init{}.mp4{q}\"", s.generation);
            generation = Some(s.generation);
        }
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso(s.started));
        if i >= with_parts_from {
            for part in &s.parts {
                let _ = writeln!(
                    out,
                    "#EXT-X-PART:DURATION={:.5},URI=\"part{}.mp4{q}\"{}",
                    part.duration.nseconds() as f64 / 1e9,
                    part.number,
                    if part.independent { ",INDEPENDENT=YES" } else { "" }
                );
            }
        }
        if i < p.done.len() {
            let _ = writeln!(out, "#EXTINF:{:.5},\nseg{}.mp4{q}", s.duration().nseconds() as f64 / 1e9, s.msn);
        }
    }
    let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part{}.mp4{q}\"", p.next_part);
    out
}

/// Feeds the camera's frames to muxers until the stream ends; says why it ended.
async fn run(stream: &Arc<Stream>, hub: Weak<StreamHub>) -> &'static str {
    // The picture only: with a sound track, isofmp4mux's manual splits sometimes stalled the stream at its start (it
    // places a split on the buffer before the one it was sent before while it waits for every track's first data).
    let Some(mut consumer) = hub.upgrade().map(|h| h.subscribe("hls", QUEUE, Start::PreRoll(HISTORY))) else {
        return "camera removed";
    };
    // Players ask for parts as they are made: the media thread turns at its live pace while the stream runs.
    let _live = crate::media::runtime::Live::take();
    let mut generation = 0u64;
    let mut caps: Option<gst::Caps> = None;
    let mut muxer: Option<Muxer> = None;
    let mut idle_check = tokio::time::interval(Duration::from_secs(1));
    let started = Instant::now();
    let mut live = false;
    let why = loop {
        let item = tokio::select! {
            _ = stream.stop.cancelled() => break "stopped",
            _ = idle_check.tick() => {
                if stream.idle() {
                    break "no request";
                }
                if muxer.as_ref().is_some_and(|m| m.failed()) {
                    break "the muxer failed";
                }
                continue;
            }
            item = consumer.rx.recv() => item,
        };
        match item {
            None => break "camera removed",
            Some(HubItem::Caps(c)) => {
                if caps.as_ref() != Some(&c) {
                    finish(muxer.take());
                }
                caps = Some(c);
            }
            Some(HubItem::Gap) => finish(muxer.take()),
            Some(HubItem::Frame(frame)) => {
                if muxer.is_none() {
                    if !frame.keyframe {
                        continue;
                    }
                    let Some(c) = caps.as_ref() else { continue };
                    generation += 1;
                    match Muxer::start(stream, generation, c) {
                        Ok(m) => muxer = Some(m),
                        Err(e) => {
                            warn!(camera_id = %stream.camera, err = %e, "hls muxer did not start");
                            break "the muxer did not start";
                        }
                    }
                }
                let Some(m) = muxer.as_mut() else { continue };
                if !live && frame.arrived >= started {
                    // The part this frame goes into is the first with live video: the one after the open part.
                    live = true;
                    let mut p = stream.playlist.lock();
                    p.live_part = Some(p.next_part + m.pending.lock().len().saturating_sub(1) as u64);
                }
                if m.push_video(&frame.buffer, frame.keyframe, frame.arrived).is_err() {
                    finish(muxer.take());
                }
            }
            Some(HubItem::AudioCaps(_) | HubItem::Audio(_)) => {}
        }
    };
    finish(muxer.take());
    why
}

/// Ends a muxer: its last part flushed, then torn down off the runtime.
fn finish(muxer: Option<Muxer>) {
    if let Some(m) = muxer {
        let _ = m.video.end_of_stream();
        let pipeline = m.pipeline;
        tokio::task::spawn_blocking(move || {
            // The EOS drains the last part to the sink first (bounded: a stuck pipeline is torn down anyway).
            let bus = pipeline.bus().expect("a pipeline has a bus");
            let _ = bus.timed_pop_filtered(gst::ClockTime::from_mseconds(500), &[gst::MessageType::Eos]);
            let _ = pipeline.set_state(gst::State::Null);
        });
    }
}

/// What the feed tells the sink about each part it asked for: whether it starts at a keyframe, the wall-clock time of
/// its first frame, and its timeline time (a part lasts until the next one starts).
type Pending = Arc<Mutex<VecDeque<(bool, SystemTime, gst::ClockTime)>>>;

/// One muxer: `appsrc ! isofmp4mux ! appsink`, and where the feed is in it.
struct Muxer {
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    timeline: Timeline,
    pending: Pending,
    /// The start of the open part and of the open segment (timeline time), and the last frame's.
    part_start: Option<gst::ClockTime>,
    segment_start: Option<gst::ClockTime>,
    last: Option<gst::ClockTime>,
    step: gst::ClockTime,
    part: gst::ClockTime,
}

impl Muxer {
    fn start(stream: &Arc<Stream>, generation: u64, caps: &gst::Caps) -> Result<Muxer> {
        if !matches!(codec_of(caps), Some(Codec::H264 | Codec::H265)) {
            return Err(Error::CapabilityNotSupported("this camera's codec over HLS".into()));
        }
        let pipeline = gst::Pipeline::with_name(&format!("hls-{}-{generation}", stream.camera));
        let mux = make("isofmp4mux")?;
        mux.set_property("manual-split", true);
        mux.set_property("fragment-duration", MIN_SEGMENT.nseconds());
        mux.set_property("chunk-duration", stream.config.part.as_nanos() as u64);
        mux.set_property("write-mfra", false);
        let video = source("video", caps);
        send_split_before(&video);
        let sink = gst_app::AppSink::builder().sync(false).async_(false).max_buffers(0).build();
        pipeline.add_many([video.upcast_ref(), &mux, sink.upcast_ref()]).map_err(pipeline_error)?;
        video.link(&mux).map_err(pipeline_error)?;
        mux.link(&sink).map_err(pipeline_error)?;
        let pending: Pending = Arc::default();
        sink.set_callbacks(collector(Arc::downgrade(stream), generation, pending.clone()));
        pipeline.set_state(gst::State::Playing).map_err(pipeline_error)?;
        debug!(camera_id = %stream.camera, generation, "hls muxer started");
        Ok(Muxer {
            pipeline,
            video,
            timeline: Timeline::default(),
            pending,
            part_start: None,
            segment_start: None,
            last: None,
            step: gst::ClockTime::from_mseconds(40),
            part: gst::ClockTime::from_nseconds(stream.config.part.as_nanos() as u64),
        })
    }

    /// Whether the muxer posted an error since the last look; its other messages are dropped on the way (nobody
    /// else reads this bus, and an unread bus keeps everything posted to it).
    fn failed(&self) -> bool {
        let Some(bus) = self.pipeline.bus() else { return false };
        let mut failed = false;
        while let Some(message) = bus.pop() {
            if let gst::MessageView::Error(e) = message.view() {
                warn!(err = %e.error(), debug = ?e.debug(), "hls muxer error");
                failed = true;
            }
        }
        failed
    }

    /// Pushes a video frame, telling the muxer first when it starts a new segment or part.
    fn push_video(&mut self, frame: &gst::Buffer, keyframe: bool, arrived: Instant) -> Result<()> {
        let (pts, dts) = (frame.pts(), frame.dts());
        let at = self.timeline.map(pts, dts, arrived);
        let delay = match (pts, dts) {
            (Some(p), Some(d)) if p > d => p - d,
            _ => gst::ClockTime::ZERO,
        };
        if let Some(last) = self.last {
            self.step = (at - last).clamp(gst::ClockTime::MSECOND, gst::ClockTime::SECOND);
        }
        let wall = SystemTime::now() - arrived.elapsed();
        let split = match (self.segment_start, self.part_start) {
            (Some(segment), Some(part)) => {
                // A frame's jitter short of a second still ends a one-second GOP's segment.
                if keyframe && at.saturating_sub(segment) + self.step / 2 >= MIN_SEGMENT {
                    Some(false)
                } else if at + self.step > part + self.part {
                    Some(true)
                } else {
                    None
                }
            }
            _ => {
                // The muxer's first part.
                self.pending.lock().push_back((true, wall, at));
                self.segment_start = Some(at);
                self.part_start = Some(at);
                None
            }
        };
        if let Some(chunk) = split {
            self.pending.lock().push_back((keyframe, wall, at));
            self.part_start = Some(at);
            if !chunk {
                self.segment_start = Some(at);
            }
        }
        self.last = Some(at);
        let mut buffer = frame.copy();
        {
            let b = buffer.make_mut();
            b.set_dts(at);
            b.set_pts(at + delay);
            // A duration (the last frame spacing) lets the muxer place the frame at once: without one it holds each
            // frame until the next, and takes a split meant for the next frame as this one's (a segment would start
            // a frame before its keyframe).
            b.set_duration(self.step);
            if keyframe {
                b.unset_flags(gst::BufferFlags::DELTA_UNIT);
            } else {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
            if let Some(chunk) = split {
                mark_split(b, chunk);
            }
        }
        self.video.push_buffer(buffer).map(|_| ()).map_err(|e| Error::internal(format!("hls muxer: {e:?}")))
    }
}

/// The muxer's cue: split a chunk (a part) or a fragment (a segment) before the next buffer of the stream it is sent to.
fn split_now(chunk: bool) -> gst::Event {
    gst::event::CustomDownstream::new(gst::Structure::builder("FMP4MuxSplitNow").field("chunk", chunk).build())
}

/// Asks for a split before `buffer`: `send_split_before` turns the mark into the muxer's event on the appsrc's
/// streaming thread, right before the buffer, so it is never out of order with the buffers queued in the `appsrc`.
fn mark_split(buffer: &mut gst::BufferRef, chunk: bool) {
    // Registered in `register_muxer`, before any muxer exists.
    if let Ok(mut meta) = gst::meta::CustomMeta::add(buffer, SPLIT_META) {
        meta.mut_structure().set("chunk", chunk);
    }
}

/// Sends the muxer a split before each buffer marked by `mark_split`, in the stream's order.
fn send_split_before(src: &gst_app::AppSrc) {
    let Some(pad) = src.static_pad("src") else { return };
    pad.add_probe(gst::PadProbeType::BUFFER, |pad, info| {
        let chunk = match &info.data {
            Some(gst::PadProbeData::Buffer(b)) => gst::meta::CustomMeta::from_buffer(b, SPLIT_META)
                .ok()
                .map(|m| m.structure().get::<bool>("chunk").unwrap_or(true)),
            _ => None,
        };
        if let Some(chunk) = chunk {
            pad.push_event(split_now(chunk));
        }
        gst::PadProbeReturn::Ok
    });
}

/// An `appsrc` for the muxer: the publishing feeds' (bounded, never blocking), not live: the muxer takes the stream's
/// own timeline as fast as it comes (the hub's history in a burst), and waits for every track rather than a clock.
fn source(name: &str, caps: &gst::Caps) -> gst_app::AppSrc {
    let src = super::feed::appsrc(name, caps);
    src.set_is_live(false);
    src
}

fn pipeline_error(e: impl std::fmt::Display) -> Error {
    Error::dependency(crate::error::Dependency::Gstreamer, e.to_string())
}

/// The sink's side: the muxer's buffers into the playlist. `isofmp4mux` sends the init segment (HEADER|DISCONT) once,
/// then each chunk as its header (HEADER; DELTA_UNIT when it is not a fragment's first) followed by its data, the
/// last marked MARKER.
fn collector(stream: Weak<Stream>, generation: u64, pending: Pending) -> gst_app::AppSinkCallbacks {
    let mut chunk: Option<(Vec<u8>, gst::ClockTime, bool)> = None;
    gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            let Some(stream) = stream.upgrade() else { return Err(gst::FlowError::Eos) };
            let mut buffers: Vec<gst::Buffer> = Vec::new();
            if let Some(list) = sample.buffer_list() {
                buffers.extend(list.iter_owned());
            }
            if let Some(b) = sample.buffer_owned() {
                buffers.push(b);
            }
            for buffer in buffers {
                let flags = buffer.flags();
                let Ok(map) = buffer.map_readable() else { continue };
                if flags.contains(gst::BufferFlags::HEADER | gst::BufferFlags::DISCONT) {
                    stream.playlist.lock().inits.insert(generation, Bytes::copy_from_slice(&map));
                    continue;
                }
                if flags.contains(gst::BufferFlags::HEADER) {
                    let fragment = !flags.contains(gst::BufferFlags::DELTA_UNIT);
                    chunk = Some((map.to_vec(), buffer.duration().unwrap_or(gst::ClockTime::ZERO), fragment));
                    continue;
                }
                let Some((data, ..)) = chunk.as_mut() else { continue };
                data.extend_from_slice(&map);
                if flags.contains(gst::BufferFlags::MARKER) {
                    let (data, duration, fragment) = chunk.take().expect("a chunk is open");
                    let (independent, wall, duration) = {
                        let mut pending = pending.lock();
                        match pending.pop_front() {
                            Some((independent, wall, at)) => {
                                let next = pending.front().map(|(_, _, next)| next.saturating_sub(at));
                                (independent, wall, next.unwrap_or(duration))
                            }
                            None => (fragment, SystemTime::now(), duration),
                        }
                    };
                    add_part(&stream, generation, data.into(), duration, fragment, independent, wall);
                }
            }
            Ok(gst::FlowSuccess::Ok)
        })
        .build()
}

/// Adds a part to the playlist (opening a segment when it starts one) and wakes the requests waiting.
fn add_part(
    stream: &Stream,
    generation: u64,
    data: Bytes,
    duration: gst::ClockTime,
    fragment: bool,
    independent: bool,
    wall: SystemTime,
) {
    {
        let mut p = stream.playlist.lock();
        let new_segment = fragment || p.open.as_ref().is_none_or(|s| s.generation != generation);
        if new_segment {
            if let Some(done) = p.open.take() {
                // EXT-X-TARGETDURATION: every segment's duration rounded to the nearest second is at most it.
                p.target = p.target.max(done.duration().mseconds().saturating_add(500) / 1000);
                p.done.push_back(done);
            }
            while p.done.len() > stream.config.segments {
                p.done.pop_front();
            }
            let oldest = p.done.front().map(|s| s.generation).unwrap_or(generation);
            p.inits.retain(|g, _| *g >= oldest);
            let msn = p.next_msn;
            p.next_msn += 1;
            p.open = Some(Segment { msn, generation, started: wall, parts: Vec::new() });
        }
        let number = p.next_part;
        p.next_part += 1;
        p.open.as_mut().expect("a segment is open").parts.push(Part { number, data, duration, independent });
    }
    stream.changed.send_modify(|v| *v += 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: u64, ms: u64, independent: bool) -> Part {
        Part { number, data: Bytes::from_static(b"x"), duration: gst::ClockTime::from_mseconds(ms), independent }
    }

    #[test]
    fn the_playlist_lists_segments_parts_discontinuities_and_the_next_part() {
        let config = HlsConfig {
            enabled: true,
            part: Duration::from_millis(200),
            segments: 7,
            close_after: Duration::from_secs(30),
            max_streams: 4,
            player_js: None,
        };
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut p = Playlist { target: 1, ..Playlist::default() };
        p.inits.insert(1, Bytes::from_static(b"i"));
        p.inits.insert(2, Bytes::from_static(b"i"));
        p.done.push_back(Segment {
            msn: 4,
            generation: 1,
            started: t,
            parts: (0..5).map(|i| part(20 + i, 200, i == 0)).collect(),
        });
        p.done.push_back(Segment { msn: 5, generation: 2, started: t, parts: vec![part(25, 200, true)] });
        p.open = Some(Segment { msn: 6, generation: 2, started: t, parts: vec![part(26, 150, true)] });
        p.next_msn = 7;
        p.next_part = 27;
        let text = render(&p, &config, "token=abc");
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n"), "{text}");
        assert!(text.contains("CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600"), "{text}");
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MEDIA-SEQUENCE:4\n"), "{text}");
        assert!(text.contains("#EXT-X-MAP:URI=\"init1.mp4?token=abc\""), "{text}");
        assert!(text.contains("#EXTINF:1.00000,\nseg4.mp4?token=abc\n#EXT-X-DISCONTINUITY\n"), "{text}");
        assert!(text.contains("#EXT-X-MAP:URI=\"init2.mp4?token=abc\""), "{text}");
        assert!(text.contains("#EXT-X-PART:DURATION=0.20000,URI=\"part25.mp4?token=abc\",INDEPENDENT=YES"), "{text}");
        assert!(text.contains("#EXT-X-PART:DURATION=0.15000,URI=\"part26.mp4?token=abc\",INDEPENDENT=YES\n"), "{text}");
        assert!(!text.contains("seg6"), "the open segment is listed by its parts only: {text}");
        assert!(text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part27.mp4?token=abc\"\n"), "{text}");
        assert_eq!(p.position(), (6, 1));
        assert_eq!(p.part(20).as_deref(), Some(&b"x"[..]));
        assert_eq!(p.part(19), None);
    }
}
