//! Snapshots: a JPEG of a camera's current picture, decoded on demand from the hub's current GOP; no decoder is fed
//! between calls.
//!
//! The picture is the camera's at the call: the hub's latest frame when it arrived within one frame interval before
//! the call (the next one was not due yet, so it is what the camera shows), else the first frame to arrive after it.
//! When detection already decodes the camera, its picture of that frame (or of a later one) is encoded instead of
//! decoding again: at once when it has it, and while it decodes every frame (motion) after asking it to take the
//! hub's frames now, for up to two frame intervals. Otherwise the snapshot decodes, with a decoder of its own that it
//! keeps for `KEEP_WARM` after the call (fed nothing meanwhile), so that calls close together decode only the frames
//! since the last one (`warm`). Files are written beside their final name, fsynced, then linked to it (never over
//! an existing file) and the directory fsynced, so a snapshot is whole or absent.

mod warm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use parking_lot::Mutex;
use tracing::Instrument;
use tracing::field::Empty;

use crate::base::CameraId;
use crate::camera::Camera;
use crate::config::SnapshotConfig;
use crate::error::{Dependency, Error, Resource, Result, State};
use crate::events::{EventBus, EventKind};
use crate::media::hub::{Frame, HubItem, Start};
use crate::media::picture::{Picture, Pictures};
use crate::storage::files::{Area, Files, blocking, sync_parent, validate_name};
use warm::Warm;

/// How long to wait for the next frame before giving up.
const FRAME_WAIT: Duration = Duration::from_secs(3);
/// How long a camera's snapshot decoder and encoder are kept after a call. Kept, they are fed nothing.
const KEEP_WARM: Duration = Duration::from_secs(3);
/// Cameras whose snapshot pipelines are kept at once (each holds a decoder's reference pictures): the least recently
/// used goes first.
const WARM_CAMERAS: usize = 4;
/// The longest a snapshot waits for detection's decoder to decode the frame it shows.
const DETECTION_WAIT: Duration = Duration::from_millis(100);
/// How long a kept decoder may take to give out a picture before its stream is ended to get it (it may hold pictures
/// back).
const DECODE_WAIT: Duration = Duration::from_secs(1);

/// Where a snapshot's picture came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSource {
    /// Decoded for the snapshot.
    Decoder,
    /// Detection's decoder had decoded it.
    Detection,
}

impl FrameSource {
    pub fn as_str(self) -> &'static str {
        match self {
            FrameSource::Decoder => "decoder",
            FrameSource::Detection => "detection",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub filename: String,
    pub path: PathBuf,
    pub file_size: u64,
    pub width: u32,
    pub height: u32,
    /// When the frame shown arrived from the camera: at most one frame interval before the call.
    pub frame_time: SystemTime,
    pub taken_at: SystemTime,
    /// Frames the snapshot decoded to reach it: from the GOP's keyframe, or from the last frame its kept decoder
    /// decoded; none when that was the frame, or when detection's picture was used.
    pub frames_decoded: usize,
    pub source: FrameSource,
}

/// Cameras' kept snapshot pipelines, most recently used last.
type WarmSet = Arc<Mutex<Vec<(CameraId, Arc<Mutex<Warm>>)>>>;

pub struct Snapshots {
    files: Files,
    /// Quality and size; a config reload changes them for the next snapshot.
    config: Mutex<SnapshotConfig>,
    events: EventBus,
    /// Makes temporary names unique within the process.
    counter: AtomicU64,
    /// Snapshot pipelines kept after a call, shared with the tasks that drop them `KEEP_WARM` after their last use.
    warm: WarmSet,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots").field("files", &self.files).field("warm", &self.warm.lock().len()).finish()
    }
}

impl Snapshots {
    pub fn new(files: Files, config: SnapshotConfig, events: EventBus) -> Snapshots {
        Snapshots {
            files,
            config: Mutex::new(config),
            events,
            counter: AtomicU64::new(0),
            warm: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Quality and size for the snapshots taken from now on.
    pub fn set_config(&self, config: SnapshotConfig) {
        *self.config.lock() = config;
    }

    /// Takes a snapshot of `camera`, named `filename` (validated; `.jpg` added when it has no JPEG extension), in a
    /// `snapshot` span that says how it went.
    pub async fn take(&self, camera: &Arc<Camera>, filename: Option<&str>) -> Result<Snapshot> {
        let span = tracing::info_span!(
            "snapshot",
            camera_id = %camera.id,
            file = Empty,
            outcome = Empty,
            reason = Empty,
            size_bytes = Empty,
            frames_decoded = Empty,
            frame_source = Empty,
            otel.status_code = Empty,
        );
        let result = self.shoot(camera, filename).instrument(span.clone()).await;
        match &result {
            Ok(s) => {
                span.record("outcome", "ok");
                span.record("file", s.filename.as_str());
                span.record("size_bytes", s.file_size);
                span.record("frames_decoded", s.frames_decoded);
                span.record("frame_source", s.source.as_str());
            }
            Err(e) => {
                span.record("outcome", "error");
                span.record("reason", e.to_string());
                span.record("otel.status_code", "ERROR");
            }
        }
        result
    }

    async fn shoot(&self, camera: &Arc<Camera>, filename: Option<&str>) -> Result<Snapshot> {
        let requested = Instant::now();
        // The frame shown arrives at the media thread's live pace (and detection's picture of it is asked from there).
        let _live = crate::media::runtime::Live::take();
        let taken_at = SystemTime::now();
        let filename = match filename {
            Some(name) => {
                validate_name("filename", name)?;
                let lower = name.to_ascii_lowercase();
                let name = if lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
                    name.to_owned()
                } else {
                    format!("{name}.jpg")
                };
                // The extension may push it past the length limit.
                validate_name("filename", &name)?;
                name
            }
            None => format!("{}_{}.jpg", camera.id, crate::base::time::file_stamp(taken_at)),
        };
        let path = self.files.path(Area::Snapshots, "filename", &filename)?;
        let taken = path.clone();
        if blocking(move || Ok(taken.exists())).await? {
            return Err(Error::invalid_state(State::FileExists, &[State::NewFileName]));
        }
        camera.require_connected()?;
        let target = target(camera, requested).await?;
        let chosen = Instant::now();
        let picture = detection_picture(camera.hub.pictures(), &target).await;
        let (quality, size) = {
            let c = self.config.lock();
            (c.quality, c.size)
        };
        let tmp = self.files.dir(Area::Snapshots).join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        let warm = self.warm_for(&camera.id);
        let final_path = path.clone();
        let arrived = picture.as_ref().map(|p| p.arrived).unwrap_or(target.frame().arrived);
        let source = if picture.is_some() { FrameSource::Detection } else { FrameSource::Decoder };
        let shot = tokio::task::spawn_blocking(move || {
            // A call already using the camera's kept pipelines leaves them to it and uses pipelines of its own.
            let mut own = None;
            let mut guard = warm.try_lock();
            let warm: &mut Warm = match guard.as_deref_mut() {
                Some(w) => w,
                None => own.insert(Warm::new()),
            };
            let t0 = Instant::now();
            let (sample, frames_decoded) = match picture {
                Some(p) => (p.sample, 0),
                None => warm.picture(&target.caps, &target.gop, DECODE_WAIT)?,
            };
            let t1 = Instant::now();
            let jpeg = warm.jpeg(&sample, quality, size)?;
            warm.used = Instant::now();
            drop(guard);
            let t2 = Instant::now();
            write_whole(&tmp, &final_path, &jpeg.data)?;
            let stages = [t1 - t0, t2 - t1, t2.elapsed()];
            Ok::<_, Error>((jpeg, frames_decoded, stages))
        })
        .await
        .map_err(Error::internal)?;
        let (jpeg, frames_decoded, [decode, encode, write]) = shot?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::debug!(
            wait_ms = ms(chosen - requested),
            decode_ms = ms(decode),
            encode_ms = ms(encode),
            write_ms = ms(write),
            total_ms = ms(requested.elapsed()),
            frames_decoded,
            frame_source = source.as_str(),
            "snapshot stages"
        );
        let file_size = jpeg.data.len() as u64;
        self.events.publish(EventKind::SnapshotTaken {
            camera: camera.id.clone(),
            filename: filename.clone(),
            file_size,
        });
        // The frame arrived this long before or after the call.
        let frame_time = match arrived.checked_duration_since(requested) {
            Some(after) => taken_at + after,
            None => taken_at.checked_sub(requested - arrived).unwrap_or(taken_at),
        };
        Ok(Snapshot {
            filename,
            path,
            file_size,
            width: jpeg.width,
            height: jpeg.height,
            frame_time,
            taken_at,
            frames_decoded,
            source,
        })
    }

    /// The camera's kept snapshot pipelines (made, and set to go `KEEP_WARM` after their last use, if it has none).
    fn warm_for(&self, camera: &CameraId) -> Arc<Mutex<Warm>> {
        let (entry, evicted) = {
            let mut set = self.warm.lock();
            if let Some(i) = set.iter().position(|(id, _)| id == camera) {
                let kept = set.remove(i);
                let entry = kept.1.clone();
                set.push(kept);
                return entry;
            }
            let entry = Arc::new(Mutex::new(Warm::new()));
            set.push((camera.clone(), entry.clone()));
            let evicted = if set.len() > WARM_CAMERAS { Some(set.remove(0)) } else { None };
            (entry, evicted)
        };
        if let Some(old) = evicted {
            // Pipelines are stopped off the async runtime.
            tokio::task::spawn_blocking(move || drop(old));
        }
        let (set, weak) = (self.warm.clone(), Arc::downgrade(&entry));
        tokio::spawn(async move {
            let mut wait = KEEP_WARM;
            loop {
                tokio::time::sleep(wait).await;
                let Some(entry) = weak.upgrade() else { return };
                // In use (locked): looked at again a little later; used lately: kept until `KEEP_WARM` after that.
                match entry.try_lock().map(|w| w.used.elapsed()) {
                    None => wait = KEEP_WARM / 10,
                    Some(idle) if idle < KEEP_WARM => wait = KEEP_WARM - idle,
                    Some(_) => wait = Duration::ZERO,
                }
                if !wait.is_zero() {
                    continue;
                }
                let removed = {
                    let mut set = set.lock();
                    set.iter().position(|(_, e)| Arc::ptr_eq(e, &entry)).map(|i| set.remove(i))
                };
                tokio::task::spawn_blocking(move || drop((entry, removed)));
                return;
            }
        });
        entry
    }
}

/// Writes `bytes` whole under `path`, which must not exist: to `tmp` first, fsynced, then linked to `path` (which
/// fails if a file took the name meanwhile: files are never replaced) and the directory fsynced.
fn write_whole(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let storage = |e: std::io::Error| Error::dependency(Dependency::Storage, format!("writing snapshot: {e}"));
    let written = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::hard_link(tmp, path)
    })();
    let _ = std::fs::remove_file(tmp);
    match written {
        Ok(()) => sync_parent(path).map_err(storage),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(Error::invalid_state(State::FileExists, &[State::NewFileName]))
        }
        Err(e) => Err(storage(e)),
    }
}

/// A snapshot file, as listed.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub filename: String,
    pub size: u64,
    pub modified: SystemTime,
}

impl Snapshots {
    /// Snapshot files, newest first, and how many there are: the directory is the index (a snapshot is one whole
    /// file or none). Read off the async runtime.
    pub async fn list(&self, limit: usize, offset: usize) -> Result<(Vec<SnapshotFile>, usize)> {
        let dir = self.files.dir(Area::Snapshots);
        let mut entries = blocking(move || {
            let entries = std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            let filename = e.file_name().into_string().ok()?;
                            let meta = e.metadata().ok()?;
                            (meta.is_file() && validate_name("filename", &filename).is_ok()).then(|| SnapshotFile {
                                filename,
                                size: meta.len(),
                                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            Ok(entries)
        })
        .await?;
        entries.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| b.filename.cmp(&a.filename)));
        let total = entries.len();
        Ok((entries.into_iter().skip(offset).take(limit).collect(), total))
    }

    /// One snapshot file by name.
    pub async fn info(&self, filename: &str) -> Result<SnapshotFile> {
        let path = self.files.path(Area::Snapshots, "filename", filename)?;
        let name = filename.to_owned();
        blocking(move || {
            let meta = std::fs::metadata(&path)
                .ok()
                .filter(|m| m.is_file())
                .ok_or_else(|| Error::not_found(Resource::Snapshot, name.clone()))?;
            Ok(SnapshotFile {
                filename: name,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            })
        })
        .await
    }

    /// Deletes one snapshot file, then syncs its directory.
    pub async fn delete(&self, filename: &str) -> Result<()> {
        let path = self.files.path(Area::Snapshots, "filename", filename)?;
        let name = filename.to_owned();
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => {
                // The snapshot is gone either way; a failed sync only risks it reappearing after a power cut.
                let _ = sync_parent(&path);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::not_found(Resource::Snapshot, name)),
            Err(e) => Err(Error::dependency(Dependency::Storage, format!("deleting: {e}"))),
        })
        .await
    }
}

/// The frame a snapshot shows, and the GOP that decodes it.
struct Target {
    caps: gst::Caps,
    /// From the GOP's keyframe to the frame shown, in decode order.
    gop: Vec<Frame>,
    /// One frame at the camera's measured rate (`None` while it is not known).
    interval: Option<Duration>,
}

impl Target {
    fn frame(&self) -> &Frame {
        self.gop.last().expect("a target holds at least its frame")
    }
}

/// One frame interval at `fps`, if it is known.
fn frame_interval(fps: f64) -> Option<Duration> {
    (fps.is_finite() && fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps))
}

/// The camera's picture at `requested`: the hub's latest frame if it arrived at most one frame interval before (the
/// next one was not due yet), else the first frame to arrive after `requested`; with its GOP from the keyframe.
async fn target(camera: &Camera, requested: Instant) -> Result<Target> {
    let interval = frame_interval(camera.hub.stats().fps);
    let mut consumer = camera.hub.subscribe("snapshot", 512, Start::LatestKeyframe);
    let mut caps = None;
    let mut gop: Vec<Frame> = Vec::new();
    // The history is queued at once: the current GOP up to the latest frame.
    while let Ok(item) = consumer.rx.try_recv() {
        take(item, &mut caps, &mut gop);
    }
    let deadline = tokio::time::Instant::now() + FRAME_WAIT;
    loop {
        if let (Some(c), Some(latest)) = (&caps, gop.last()) {
            let current = match interval {
                Some(interval) => requested.saturating_duration_since(latest.arrived) <= interval,
                None => latest.arrived >= requested,
            };
            if current {
                return Ok(Target { caps: c.clone(), gop, interval });
            }
        }
        let item = tokio::time::timeout_at(deadline, consumer.rx.recv())
            .await
            .map_err(|_| Error::dependency(Dependency::Camera, "no frame within 3 s"))?
            .ok_or_else(|| Error::dependency(Dependency::Camera, "camera removed"))?;
        take(item, &mut caps, &mut gop);
    }
}

/// Adds a hub item to the caps and the GOP.
fn take(item: HubItem, caps: &mut Option<gst::Caps>, gop: &mut Vec<Frame>) {
    match item {
        HubItem::Caps(c) => *caps = Some(c),
        HubItem::Gap => gop.clear(),
        HubItem::Frame(f) => {
            if f.keyframe {
                gop.clear();
            }
            gop.push(f);
        }
        // Subscribed without audio: never sent.
        HubItem::AudioCaps(_) | HubItem::Audio(_) => {}
    }
}

/// Detection's picture of the target frame or of a later one: the one it has, or, while it decodes every frame, the
/// one it makes when asked to take the hub's frames now (waiting up to two frame intervals, at most
/// `DETECTION_WAIT`). `None`: the snapshot decodes.
async fn detection_picture(pictures: &Pictures, target: &Target) -> Option<Picture> {
    let arrived = target.frame().arrived;
    let current = |p: &Option<Picture>| p.as_ref().filter(|p| p.arrived >= arrived).cloned();
    let mut follow = pictures.follow();
    if let Some(p) = current(&follow.borrow_and_update()) {
        return Some(p);
    }
    if !pictures.every_frame() {
        return None;
    }
    pictures.want();
    let wait = target.interval.map(|i| i * 2).unwrap_or(DETECTION_WAIT).min(DETECTION_WAIT);
    tokio::time::timeout(wait, async {
        loop {
            follow.changed().await.ok()?;
            if let Some(p) = current(&follow.borrow_and_update()) {
                return Some(p);
            }
        }
    })
    .await
    .ok()
    .flatten()
}
