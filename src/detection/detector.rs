//! One camera's detection: a hub consumer feeding a decoder of its own, cheaply while nothing moves.
//!
//! While the picture is still, only keyframes are decoded (about one a second) and each is compared with the last on a
//! small grid of luma means: no frame reaches the model, except the first and, while objects are tracked, each
//! keyframe (an object standing in a still picture is checked about once a second). When the grid changes, every
//! frame is decoded (the frames skipped since the last keyframe first, so the decoder never skips a reference) and
//! frames go to the model at the configured rate, for as long as something moves or is in view. A few seconds
//! without motion and without objects in view, decoding falls back to keyframes. Frames reach the inference engine through its bounded queue; a full queue drops the frame
//! (counted), never waits. Results come back to this camera's task, which runs the tracker and hands its sightings to
//! `Detections` (events, pictures, the index, record-on-detect). Every decoded frame is also the camera's latest
//! picture (`media::picture`), which a snapshot of the same moment encodes instead of decoding again; a snapshot
//! that waits for one makes the task take the hub's frames at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::tracker::{Sighting, Tracker};
use crate::base::CameraId;
use crate::inference::{Engine, Inference, Job, Model, percentile};
use crate::media::hub::{Consumer, HubItem};
use crate::media::picture::Pictures;

/// Frames the hub may queue for the detector before it drops (and resynchronises at a keyframe).
pub const QUEUE_FRAMES: usize = 256;
/// Frames the decoder may hold undecoded; more means it cannot keep up: frames are dropped until a keyframe.
const DECODER_BACKLOG: u64 = 30;
/// Non-key frames kept while decoding keyframes only, to catch up from the last keyframe when motion starts.
const PENDING_FRAMES: usize = 600;
/// Motion grid: columns (rows follow the picture's aspect).
const GRID_COLUMNS: usize = 32;
/// A cell has changed when its mean luma moved by more than this (0-255).
const CELL_CHANGE: f32 = 12.0;
/// The picture moves when at least this share of cells changed: a clock or a frame counter burnt into the picture
/// changes a few cells and stays under it; a person walking in changes dozens.
const MOTION_AREA: f32 = 0.02;
/// Without motion and without objects for this long, decoding falls back to keyframes.
const STILL_AFTER: Duration = Duration::from_secs(3);
/// After motion, frames go to the model for at least this long.
const MOTION_HOLD: Duration = Duration::from_secs(1);

/// How frames are decoded now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeMode {
    Keyframes = 0,
    All = 1,
}

impl DecodeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeMode::Keyframes => "keyframes",
            DecodeMode::All => "all",
        }
    }
}

/// What may change while the detector runs (`set_detection`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub fps: f64,
    /// Labels reported; empty means all.
    pub labels: Vec<String>,
    pub min_score: f32,
    pub threshold: f32,
    pub end_after: Duration,
}

/// The detector's figures and settings, shared by its task, its decoder's streaming thread and the status.
#[derive(Debug)]
pub struct Shared {
    pub settings: Mutex<Settings>,
    mode: AtomicU8,
    tracking: AtomicBool,
    pub decoded: AtomicU64,
    pub submitted: AtomicU64,
    /// Frames lost: the inference queue was full, the result channel was full, or the decoder fell behind.
    pub dropped: AtomicU64,
    /// Objects confirmed (`new` events).
    pub objects: AtomicU64,
    last_motion: Mutex<Option<Instant>>,
    /// Completion times of recent inferences (for the actual rate) and frame-to-result latencies (ms).
    recent: Mutex<(VecDeque<Instant>, VecDeque<f64>)>,
    /// The camera's shared latest picture: every decoded frame is published there for snapshots.
    pictures: Arc<Pictures>,
}

impl Shared {
    pub fn new(settings: Settings, pictures: Arc<Pictures>) -> Shared {
        Shared {
            pictures,
            settings: Mutex::new(settings),
            mode: AtomicU8::new(DecodeMode::Keyframes as u8),
            tracking: AtomicBool::new(false),
            decoded: AtomicU64::new(0),
            submitted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            last_motion: Mutex::new(None),
            recent: Mutex::new((VecDeque::new(), VecDeque::new())),
        }
    }

    pub fn mode(&self) -> DecodeMode {
        if self.mode.load(Ordering::Relaxed) == DecodeMode::All as u8 { DecodeMode::All } else { DecodeMode::Keyframes }
    }

    fn set_mode(&self, mode: DecodeMode) {
        self.pictures.set_every_frame(mode == DecodeMode::All);
        if self.mode.swap(mode as u8, Ordering::Relaxed) != mode as u8 {
            debug!(mode = mode.as_str(), "decode mode");
        }
    }

    /// Inferences per second over the last five seconds.
    pub fn rate(&self) -> f64 {
        let recent = self.recent.lock();
        let window = Duration::from_secs(5);
        recent.0.iter().filter(|t| t.elapsed() <= window).count() as f64 / window.as_secs_f64()
    }

    /// Frame-to-result latency percentiles (ms) over recent inferences.
    pub fn latency(&self) -> (f64, f64) {
        let mut sorted: Vec<f64> = self.recent.lock().1.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        (percentile(&sorted, 0.5), percentile(&sorted, 0.99))
    }

    fn record(&self, latency_ms: f64) {
        let mut recent = self.recent.lock();
        if recent.0.len() == 256 {
            recent.0.pop_front();
        }
        recent.0.push_back(Instant::now());
        if recent.1.len() == 512 {
            recent.1.pop_front();
        }
        recent.1.push_back(latency_ms);
    }
}

/// One frame's result, back on the camera's task.
pub struct Seen {
    pub inference: Result<Inference, String>,
    pub frame: gst::Sample,
    pub arrived: Instant,
    pub frame_time: SystemTime,
}

/// Where the task's sightings go: the caller publishes, stores and records.
pub type Report = Box<dyn FnMut(Vec<(Sighting, Option<gst::Sample>)>) + Send>;

/// How often the task takes the hub's frames while decoding keyframes only, and while decoding every frame. Frames
/// are taken in batches, as the recorder does: the task wakes a few times a second, not at the frame rate.
const PACE_STILL: Duration = Duration::from_millis(200);
const PACE_MOVING: Duration = Duration::from_millis(40);

/// Runs detection on the camera `consumer` follows until `stop` or the camera's removal (its hub gone).
pub async fn run(
    camera: CameraId,
    mut consumer: Consumer,
    engine: Arc<Engine>,
    model: Arc<Model>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    mut report: Report,
) {
    let (seen_tx, mut seen_rx) = mpsc::channel::<Seen>(8);
    let settings = shared.settings.lock().clone();
    let mut tracker = Tracker::new(settings.threshold, settings.end_after);
    let mut decoder: Option<Decoder> = None;
    let mut last_expiry = Instant::now();
    // How far the tracker has come in the camera's time: the arrival of the newest frame whose inference it took, and
    // when it took it. Tracks expire on this time, not the wall clock's: a detector running behind (a busy CPU) must
    // not end, while its results are seconds late, an object those results still show.
    let mut reached: Option<(Instant, Instant)> = None;
    let pictures = shared.pictures.clone();
    'run: loop {
        let pace = if shared.mode() == DecodeMode::All { PACE_MOVING } else { PACE_STILL };
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(seen) = seen_rx.recv() => {
                let settings = shared.settings.lock().clone();
                tracker.set_threshold(settings.threshold);
                let Seen { inference, frame, arrived, frame_time } = seen;
                let detections = match inference {
                    Ok(i) => i.detections,
                    Err(e) => {
                        warn!(camera_id = %camera, err = %e, "inference failed");
                        continue;
                    }
                };
                let wanted: Vec<_> = detections
                    .into_iter()
                    // The engine kept only boxes scoring min_score or more.
                    .filter(|d| settings.labels.is_empty() || settings.labels.contains(&d.label))
                    .collect();
                if reached.is_none_or(|(newest, _)| arrived > newest) {
                    reached = Some((arrived, Instant::now()));
                }
                let sightings = tracker.update(&wanted, arrived, frame_time);
                shared.tracking.store(tracker.active(), Ordering::Relaxed);
                shared.record(arrived.elapsed().as_secs_f64() * 1000.0);
                let confirmed = sightings.iter().filter(|s| s.phase == super::tracker::Phase::New).count();
                shared.objects.fetch_add(confirmed as u64, Ordering::Relaxed);
                if !sightings.is_empty() {
                    let with_pictures = sightings
                        .into_iter()
                        .map(|s| {
                            let picture = s.best.then(|| frame.clone());
                            (s, picture)
                        })
                        .collect();
                    report(with_pictures);
                }
                continue;
            }
            _ = crate::media::pace(pace) => {}
            // A snapshot waits for a picture: the frames queued since the last batch are decoded now.
            _ = pictures.wanted() => {}
        }
        loop {
            let item = match consumer.rx.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => break 'run,
            };
            match item {
                HubItem::Caps(caps) => {
                    if let Some(old) = decoder.take() {
                        old.close().await;
                    }
                    match Decoder::start(&caps, shared.clone(), engine.clone(), model.clone(), seen_tx.clone()) {
                        Ok(d) => decoder = Some(d),
                        Err(e) => warn!(camera_id = %camera, err = %e, "cannot decode this camera for detection"),
                    }
                }
                HubItem::Gap => {
                    if let Some(d) = decoder.as_mut() {
                        d.gap();
                    }
                }
                HubItem::Frame(frame) => {
                    if let Some(d) = decoder.as_mut() {
                        d.offer(frame.buffer, frame.keyframe, frame.arrived);
                    }
                }
                // Subscribed without audio: never sent.
                HubItem::AudioCaps(_) | HubItem::Audio(_) => {}
            }
        }
        if last_expiry.elapsed() >= Duration::from_millis(200) {
            last_expiry = Instant::now();
            // The camera's time the tracker has reached, moving on with the wall clock since its last result (so
            // tracks still end when results stop: the camera went, or nothing is looked at any more).
            let now = reached.map_or(last_expiry, |(newest, taken)| newest + taken.elapsed());
            let ended = tracker.expire(now);
            shared.tracking.store(tracker.active(), Ordering::Relaxed);
            if !ended.is_empty() {
                report(ended.into_iter().map(|s| (s, None)).collect());
            }
            let moved = shared.last_motion.lock().is_some_and(|t| t.elapsed() < STILL_AFTER);
            if shared.mode() == DecodeMode::All && !moved && !tracker.active() {
                shared.set_mode(DecodeMode::Keyframes);
            }
        }
    }
    // Whatever ended it (turned off, camera removed, shutdown), the camera's writer and status learn it is over.
    stop.cancel();
    let ended = tracker.end_all();
    shared.tracking.store(false, Ordering::Relaxed);
    if !ended.is_empty() {
        report(ended.into_iter().map(|s| (s, None)).collect());
    }
    if let Some(d) = decoder.take() {
        d.close().await;
    }
    // No picture of a decoder that stopped is offered to snapshots.
    pictures.clear();
}

/// The decoding pipeline (`appsrc ! decoder ! appsink`) and the gate in front of it.
struct Decoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    shared: Arc<Shared>,
    /// Set after a gap or a dropped frame: nothing is decoded until the next keyframe.
    need_keyframe: bool,
    /// Non-key frames since the last keyframe, while only keyframes are decoded.
    pending: Vec<(gst::Buffer, Instant)>,
    /// The pipeline's time base: a frame's timestamp is its arrival since then.
    base: Instant,
}

impl Decoder {
    fn start(
        caps: &gst::Caps,
        shared: Arc<Shared>,
        engine: Arc<Engine>,
        model: Arc<Model>,
        seen: mpsc::Sender<Seen>,
    ) -> Result<Decoder, String> {
        let codec = crate::media::codec_of(caps).ok_or_else(|| format!("no decoder for {caps}"))?;
        let decoder = codec.decoder();
        // One decoding thread: frame threading adds a frame of latency per thread, and cameras are many.
        let threads = if decoder.starts_with("avdec_") { " max-threads=1" } else { "" };
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=src format=time is-live=true ! {decoder}{threads} ! \
             appsink name=out sync=false max-buffers=2 drop=true"
        ))
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".to_owned())?;
        let src = pipeline.by_name("src").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()).ok_or("no appsrc")?;
        let sink = pipeline.by_name("out").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).ok_or("no appsink")?;
        src.set_caps(Some(caps));
        let base = Instant::now();
        let base_wall = SystemTime::now();
        let mut gate =
            Gate { shared: shared.clone(), engine, model, seen, base, base_wall, grid: None, last_look: None };
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    if let Ok(sample) = sink.pull_sample() {
                        gate.decoded(sample);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Playing).map_err(|e| e.to_string())?;
        Ok(Decoder { pipeline, src, shared, need_keyframe: true, pending: Vec::new(), base })
    }

    fn gap(&mut self) {
        self.need_keyframe = true;
        self.pending.clear();
    }

    /// Takes one access unit from the hub: decodes it, keeps it for later, or skips it.
    fn offer(&mut self, buffer: gst::Buffer, keyframe: bool, arrived: Instant) {
        if keyframe {
            self.need_keyframe = false;
            self.pending.clear();
            self.push(buffer, arrived);
            return;
        }
        if self.need_keyframe {
            return;
        }
        match self.shared.mode() {
            DecodeMode::All => {
                for (b, at) in std::mem::take(&mut self.pending) {
                    self.push(b, at);
                }
                self.push(buffer, arrived);
            }
            DecodeMode::Keyframes if self.pending.len() < PENDING_FRAMES => self.pending.push((buffer, arrived)),
            DecodeMode::Keyframes => self.gap(),
        }
    }

    fn push(&mut self, buffer: gst::Buffer, arrived: Instant) {
        if self.src.current_level_buffers() > DECODER_BACKLOG {
            // The decoder cannot keep up (CPU overload): lose frames up to the next keyframe, never decode a hole.
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            self.gap();
            return;
        }
        let mut buffer = buffer.copy();
        {
            let b = buffer.make_mut();
            let at = gst::ClockTime::from_nseconds(arrived.saturating_duration_since(self.base).as_nanos() as u64);
            b.set_pts(at);
            b.set_dts(at);
        }
        if let Err(e) = self.src.push_buffer(buffer) {
            debug!(err = ?e, "decoder refused a frame; waiting for a keyframe");
            self.gap();
        }
    }

    async fn close(self) {
        let pipeline = self.pipeline;
        let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
    }
}

/// What happens to each decoded frame, on the decoder's streaming thread: the motion check, the rate, the hand-off
/// to the engine.
struct Gate {
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    model: Arc<Model>,
    seen: mpsc::Sender<Seen>,
    base: Instant,
    base_wall: SystemTime,
    grid: Option<Vec<f32>>,
    /// When a frame was last looked at (motion check, maybe the model).
    last_look: Option<Instant>,
}

impl Gate {
    fn decoded(&mut self, sample: gst::Sample) {
        self.shared.decoded.fetch_add(1, Ordering::Relaxed);
        let pts = sample.buffer().and_then(|b| b.pts());
        let since_base = Duration::from_nanos(pts.map(|t| t.nseconds()).unwrap_or(0));
        // Its timestamp is its arrival in the hub since `base`: read back, the very `Frame::arrived` it came with.
        let arrived = self.base + since_base;
        if pts.is_some() {
            self.shared.pictures.publish(sample.clone(), arrived);
        }
        let now = Instant::now();
        let (fps, min_score) = {
            let s = self.shared.settings.lock();
            (s.fps, s.min_score)
        };
        let mode = self.shared.mode();
        let interval = Duration::from_secs_f64(1.0 / fps);
        // Decoding every frame, only frames due at the configured rate are looked at (motion and model).
        if mode == DecodeMode::All && self.last_look.is_some_and(|t| now.duration_since(t) < interval.mul_f64(0.9)) {
            return;
        }
        self.last_look = Some(now);
        let first = self.grid.is_none();
        let moved = match luma_grid(&sample) {
            Some(grid) => {
                let moved = self.grid.as_ref().is_some_and(|old| changed(old, &grid));
                self.grid = Some(grid);
                moved
            }
            None => true,
        };
        if moved {
            *self.shared.last_motion.lock() = Some(now);
            self.shared.set_mode(DecodeMode::All);
        }
        let moving = self.shared.last_motion.lock().is_some_and(|t| now.duration_since(t) < MOTION_HOLD);
        let tracking = self.shared.tracking.load(Ordering::Relaxed);
        if !(first || moving || tracking) {
            return;
        }
        let frame_time = self.base_wall + since_base;
        let (seen, shared, frame) = (self.seen.clone(), self.shared.clone(), sample.clone());
        let job = Job {
            model: self.model.clone(),
            frame: sample,
            min_score,
            done: Box::new(move |inference| {
                if seen.try_send(Seen { inference, frame, arrived, frame_time }).is_err() {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }),
        };
        if self.engine.submit(job) {
            self.shared.submitted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Mean luma of each cell of a `GRID_COLUMNS`-wide grid over a YUV frame's Y plane; `None` for other formats.
fn luma_grid(sample: &gst::Sample) -> Option<Vec<f32>> {
    let info = gst_video::VideoInfo::from_caps(sample.caps()?).ok()?;
    if !info.format_info().is_yuv() {
        return None;
    }
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer()?, &info).ok()?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let cols = GRID_COLUMNS.min(w);
    let rows = ((GRID_COLUMNS * h) / w.max(1)).clamp(1, h);
    let stride = frame.plane_stride()[0] as usize;
    let y = frame.plane_data(0).ok()?;
    // Luma is one byte per pixel in every 8-bit YUV format decoders put out; packed formats (YUY2) interleave it.
    let step = if info.format_info().is_gray() || info.n_planes() > 1 { 1 } else { 2 };
    let mut sums = vec![0u64; cols * rows];
    let mut counts = vec![0u64; cols * rows];
    // Every second row and column: plenty for means over cells of hundreds of pixels.
    for py in (0..h).step_by(2) {
        let row = &y[py * stride..];
        let cy = py * rows / h;
        for px in (0..w).step_by(2) {
            let cell = cy * cols + px * cols / w;
            sums[cell] += row[px * step] as u64;
            counts[cell] += 1;
        }
    }
    Some(sums.iter().zip(&counts).map(|(s, c)| *s as f32 / (*c).max(1) as f32).collect())
}

/// Whether enough cells changed between two grids to call it motion.
fn changed(old: &[f32], new: &[f32]) -> bool {
    if old.len() != new.len() {
        return true;
    }
    let moved = old.iter().zip(new).filter(|(a, b)| (*a - *b).abs() > CELL_CHANGE).count();
    moved as f32 >= MOTION_AREA * new.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_changed_cells_are_not_motion_many_are() {
        let still = vec![100.0; 32 * 18];
        let mut clock = still.clone();
        // A burnt-in clock and frame counter: a handful of cells.
        for c in clock.iter_mut().take(8) {
            *c = 160.0;
        }
        assert!(!changed(&still, &clock));
        let mut person = still.clone();
        for c in person.iter_mut().skip(200).take(40) {
            *c = 30.0;
        }
        assert!(changed(&still, &person));
        // Small drift (noise, exposure) is not motion.
        let drift: Vec<f32> = still.iter().map(|v| v + 8.0).collect();
        assert!(!changed(&still, &drift));
    }
}
