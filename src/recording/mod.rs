//! Recordings: one session per camera at a time, started on demand or continuously from config, each a hub consumer
//! (`recorder`), with pre-roll from the hub's history, an optional duration, and segments indexed as they close.
//! Also the storage guard: the retention policy and the free-space floor, which stops recordings cleanly (with an
//! ERROR notification and playable files) when no storage root has room, and the storage roots' health checks
//! (`watch_roots`), after which a root that came back has its files listed again. Start-up recovery lives in
//! `recovery`.

pub mod index;
pub mod naming;
pub mod playback;
pub mod recorder;
pub mod recovery;
pub mod retention;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::base::time::{from_millis, millis};
use crate::camera::{Camera, CameraId};
use crate::config::{RecordingConfig, RecordingFormat, RetentionConfig, StorageConfig};
use crate::error::{Dependency, Error, Result, State};
use crate::events::{EventBus, EventKind};
use crate::media::hub::Start;
use crate::storage::Db;
use crate::storage::db::SessionRow;
use crate::storage::disk_usage;
use crate::storage::files::{Area, Files, blocking};
use crate::storage::roots::{RootStatus, Roots};
pub use index::Segment;
pub use playback::{Built, Container, Interval};
pub use recorder::{Ending, SessionInfo};
use retention::Cleanup;

/// Frames (video and audio) a recording may fall behind before it drops (and resynchronises at a keyframe).
const QUEUE_FRAMES: usize = 1024;
const RETENTION_SETTING: &str = "retention_policy";
/// How often each storage root is checked (marker, filesystem, free space, read-only flag): with the recorder's
/// 200 ms flush, a root that goes away is left within half a second or so.
const ROOT_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Why a session exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Api,
    Continuous,
    /// Detection saw an object of a recording label (`record = "events"`).
    Detection,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Continuous => "continuous",
            Trigger::Detection => "detection",
        }
    }
}

/// The storage recordings live on, as `get_storage_info` reports it.
#[derive(Debug, Clone)]
pub struct StorageInfo {
    pub total: u64,
    pub available: u64,
    pub recordings: u64,
    pub snapshots: u64,
    /// The free-space floor recordings keep.
    pub floor: u64,
    pub policy: RetentionConfig,
    /// Recordings in progress.
    pub active: usize,
    /// Each storage root, with the bytes of recordings on it.
    pub roots: Vec<(RootStatus, u64)>,
}

/// A finished session, as `stop_recording` reports it.
#[derive(Debug, Clone)]
pub struct Summary {
    pub info: SessionInfo,
    /// The first segment file of the session (its name as indexed).
    pub first_filename: String,
    pub ending: Ending,
    pub ended_at: SystemTime,
    pub duration: Duration,
    pub file_size: u64,
    pub segments: usize,
}

#[derive(Debug)]
struct Active {
    info: SessionInfo,
    stop: CancellationToken,
    /// Set by the storage guard before it stops the session, so the session ends as an error.
    failure: Arc<Mutex<Option<String>>>,
    /// Becomes `Some` when the session has ended and its files are indexed.
    done: watch::Receiver<Option<Summary>>,
}

#[derive(Debug)]
pub struct Recordings {
    db: Db,
    files: Files,
    /// Where segment files go and are found.
    roots: Arc<Roots>,
    events: EventBus,
    config: RecordingConfig,
    storage: StorageConfig,
    /// The policy in force (config, or the last one set through the API).
    policy: Mutex<RetentionConfig>,
    /// Sessions in progress by camera; a short lock, never held across `.await`.
    active: Mutex<HashMap<CameraId, Active>>,
    /// Session tasks, so shutdown can wait for every file to be finalised.
    tasks: TaskTracker,
    /// The runtime sessions run on (the media runtime).
    runtime: tokio::runtime::Handle,
    /// Ranges of recordings as one file (playback, export), and their cache.
    playback: playback::Playback,
    /// Whether the last retention pass found free space below the floor.
    low: std::sync::atomic::AtomicBool,
    shutdown: CancellationToken,
}

impl Recordings {
    pub async fn new(
        db: Db,
        // The data dir's areas (snapshots' size is reported) and where recordings go.
        (files, roots): (Files, Arc<Roots>),
        events: EventBus,
        config: RecordingConfig,
        storage: StorageConfig,
        shutdown: CancellationToken,
        runtime: tokio::runtime::Handle,
    ) -> Result<Recordings> {
        let policy = match db.setting(RETENTION_SETTING).await? {
            Some(json) => serde_json::from_str(&json).unwrap_or_else(|e| {
                warn!(err = %e, "stored retention policy unreadable; using the config's");
                storage.retention.clone()
            }),
            None => storage.retention.clone(),
        };
        let cache = files.root().join("cache").join("playback");
        let playback = playback::Playback::new(db.clone(), roots.clone(), cache).await?;
        Ok(Recordings {
            db,
            files,
            roots,
            events,
            config,
            storage,
            policy: Mutex::new(policy),
            active: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            runtime,
            playback,
            low: std::sync::atomic::AtomicBool::new(false),
            shutdown,
        })
    }

    /// The session in progress on `camera`, if any.
    pub fn active(&self, camera: &CameraId) -> Option<SessionInfo> {
        self.active.lock().get(camera).map(|a| a.info.clone())
    }

    pub fn active_count(&self) -> usize {
        self.active.lock().len()
    }

    /// Starts recording `camera` with pre-roll; `duration` stops it on its own.
    pub async fn start(
        self: &Arc<Self>,
        camera: &Arc<Camera>,
        duration: Option<Duration>,
        format: Option<RecordingFormat>,
        trigger: Trigger,
    ) -> Result<SessionInfo> {
        if let Some(active) = self.active(&camera.id) {
            debug!(filename = active.first_filename, "already recording");
            return Err(Error::invalid_state(State::Recording, &[State::NotRecording]));
        }
        if trigger == Trigger::Api {
            camera.require_connected()?;
        }
        self.ensure_space().await?;
        let format = format.unwrap_or(self.config.format);
        let consumer = camera.hub.subscribe_with_audio("recording", QUEUE_FRAMES, Start::PreRoll(self.config.pre_roll));
        let requested_at = SystemTime::now();
        let started_at = consumer.first_arrival.map(|t| requested_at - t.elapsed()).unwrap_or(requested_at);
        let mut info = SessionInfo {
            id: session_id(),
            camera: camera.id.clone(),
            format,
            requested_at,
            started_at,
            first_filename: String::new(),
        };
        info.first_filename = info.segment_name(0);
        let stop = self.shutdown.child_token();
        let (done_tx, done_rx) = watch::channel(None);
        let failure = Arc::new(Mutex::new(None));
        {
            let mut active = self.active.lock();
            if active.contains_key(&camera.id) {
                return Err(Error::invalid_state(State::Recording, &[State::NotRecording]));
            }
            let entry = Active { info: info.clone(), stop: stop.clone(), failure: failure.clone(), done: done_rx };
            active.insert(camera.id.clone(), entry);
        }
        let row = SessionRow {
            id: info.id.clone(),
            camera: info.camera.to_string(),
            format: format.as_str().into(),
            requested_at: millis(requested_at),
            started_at: millis(started_at),
            trigger: trigger.as_str().into(),
        };
        if let Err(e) = self.db.insert_session(&row).await {
            self.active.lock().remove(&camera.id);
            return Err(e);
        }
        info!(camera_id = %camera.id, session = info.id, pre_roll_ms = requested_at.duration_since(started_at).unwrap_or_default().as_millis() as u64, "recording started");
        self.events.publish(EventKind::RecordingStarted {
            camera: camera.id.clone(),
            session: info.id.clone(),
            filename: info.first_filename.clone(),
            format: format.as_str(),
        });
        let deadline = duration.map(|d| tokio::time::Instant::now() + d);
        let this = self.clone();
        let task_info = info.clone();
        let camera_id = camera.id.clone();
        // Its own root in the process (a session may last for days), the child of what started it in the trace.
        let span = info_span!(
            parent: None,
            "recording",
            camera_id = %camera.id,
            session = info.id,
            file = info.first_filename,
            format = format.as_str(),
            trigger = trigger.as_str(),
            outcome = tracing::field::Empty,
            reason = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        crate::telemetry::follow_current(&span);
        self.tasks.spawn_on(
            async move {
                let ending = recorder::run(
                    task_info.clone(),
                    this.config.clone(),
                    this.roots.clone(),
                    this.db.clone(),
                    consumer,
                    stop,
                    deadline,
                )
                .await;
                let ending = match (ending, failure.lock().take()) {
                    (Ending::Stopped, Some(reason)) => Ending::Failed(reason),
                    (ending, _) => ending,
                };
                let summary = this.finish(task_info, ending).await;
                let span = tracing::Span::current();
                span.record("duration_ms", summary.duration.as_millis() as u64);
                match &summary.ending {
                    Ending::Stopped => span.record("outcome", "stopped"),
                    Ending::Failed(reason) => {
                        span.record("outcome", "error");
                        span.record("reason", reason.as_str());
                        span.record("otel.status_code", "ERROR")
                    }
                };
                this.active.lock().remove(&camera_id);
                let _ = done_tx.send(Some(summary));
            }
            .instrument(span),
            &self.runtime,
        );
        Ok(info)
    }

    /// Stops the session on `camera` and waits until its files are finalised and indexed.
    pub async fn stop(&self, camera: &CameraId) -> Result<Summary> {
        let (stop, mut done) = {
            let active = self.active.lock();
            let a = active.get(camera).ok_or_else(|| Error::invalid_state(State::NotRecording, &[State::Recording]))?;
            (a.stop.clone(), a.done.clone())
        };
        stop.cancel();
        let summary = tokio::time::timeout(Duration::from_secs(30), done.wait_for(Option::is_some))
            .await
            .map_err(|_| Error::dependency(Dependency::RecordingPipeline, "did not finalise"))?
            .map_err(|_| Error::internal("recording task vanished"))?
            .clone();
        summary.ok_or_else(|| Error::internal("recording ended without a summary"))
    }

    /// Waits for all session tasks (after the shutdown token fired).
    pub async fn wait_stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Closes the session in the index and tells clients.
    async fn finish(&self, info: SessionInfo, ending: Ending) -> Summary {
        let segments = self.db.segments_of_session(&info.id).await.unwrap_or_default();
        let duration = Duration::from_millis(segments.iter().map(|s| s.duration_ms.max(0) as u64).sum());
        let file_size = segments.iter().map(|s| s.size_bytes.max(0) as u64).sum();
        let ended_at = segments.last().map(|s| from_millis(s.ended_at)).unwrap_or_else(SystemTime::now);
        let (state, reason) = match &ending {
            Ending::Stopped => ("stopped", None),
            Ending::Failed(r) => ("error", Some(r.as_str())),
        };
        if let Err(e) = self.db.finish_session(&info.id, millis(ended_at), state, reason).await {
            warn!(err = %e, "cannot close session in the index");
        }
        let camera = info.camera.clone();
        let filename = segments.first().map(|s| s.filename.clone()).unwrap_or_else(|| info.first_filename.clone());
        match &ending {
            Ending::Stopped => {
                info!(duration_ms = duration.as_millis() as u64, file_size, "recording stopped");
                self.events.publish(EventKind::RecordingStopped {
                    camera,
                    session: info.id.clone(),
                    filename,
                    duration_s: duration.as_secs_f64(),
                    file_size,
                });
            }
            Ending::Failed(reason) => {
                warn!(reason, "recording failed");
                self.events.publish(EventKind::RecordingFailed {
                    camera,
                    session: info.id.clone(),
                    filename,
                    duration_s: duration.as_secs_f64(),
                    reason: reason.clone(),
                });
            }
        }
        let first_filename =
            segments.first().map(|s| s.filename.clone()).unwrap_or_else(|| info.first_filename.clone());
        Summary { info, first_filename, ending, ended_at, duration, file_size, segments: segments.len() }
    }

    /// Refuses to start when the floor cannot be kept.
    async fn ensure_space(&self) -> Result<()> {
        let cleanup = self.enforce().await?;
        if cleanup.still_low {
            return Err(Error::InsufficientStorage { available: cleanup.available, required: cleanup.floor });
        }
        Ok(())
    }

    /// Recording files, newest first, and how many there are.
    pub async fn list(&self, limit: i64, offset: i64) -> Result<(Vec<Segment>, u64)> {
        let (mut segments, total) = index::list(&self.db, limit, offset).await?;
        for s in &mut segments {
            s.available = self.roots.dir_of(&s.root).is_some();
        }
        Ok((segments, total))
    }

    /// One recording file by name.
    pub async fn info(&self, filename: &str) -> Result<Segment> {
        let mut segment = index::get(&self.db, filename).await?;
        segment.available = self.roots.dir_of(&segment.root).is_some();
        Ok(segment)
    }

    /// Deletes one recording file (row, file, directory synced); refused while its root is away.
    pub async fn delete(&self, filename: &str) -> Result<()> {
        index::delete(&self.db, &self.roots, filename).await.map(drop)
    }

    /// The path of an indexed (complete, synced) recording: only those are served. Not found when no row names it;
    /// a storage error saying so when its root is away.
    pub async fn locate(&self, filename: &str) -> Result<std::path::PathBuf> {
        index::locate(&self.db, &self.roots, filename).await
    }

    /// Ranges of recordings: spans, and files spanning segments (built and cached).
    pub fn playback(&self) -> &playback::Playback {
        &self.playback
    }

    /// Writes `camera`'s recordings over `[start, end)` as a new recording: one MP4 on the first root with room,
    /// named like a segment (its first frame's time), fsynced (file, then directory) before its session and segment
    /// rows are inserted; listed, downloaded, retained and deleted like any other. Returns it and the range's gaps.
    pub async fn export(
        &self,
        camera: &CameraId,
        start: SystemTime,
        end: SystemTime,
    ) -> Result<(Segment, Vec<Interval>)> {
        self.ensure_space().await?;
        let (root, dir) =
            self.roots.pick(None).ok_or_else(|| Error::dependency(Dependency::Storage, "no storage root is there"))?;
        let id = session_id();
        let requested_at = SystemTime::now();
        // Built under a dot-name recovery never indexes, then given its name once its first frame is known.
        let temp = dir.join(format!(".export-{id}.mp4"));
        let built = self.playback.export(camera.as_str(), start, end, temp.clone()).await?;
        let filename = naming::segment_name(camera, built.first, &id, RecordingFormat::Mp4, 0);
        let path = dir.join(&filename);
        let size = blocking(move || {
            let fail = |e: std::io::Error| Error::dependency(Dependency::Storage, format!("writing the export: {e}"));
            if path.exists() {
                let _ = std::fs::remove_file(&temp);
                return Err(Error::dependency(Dependency::Storage, "a recording of that name exists"));
            }
            std::fs::rename(&temp, &path).map_err(fail)?;
            crate::storage::files::sync_file_and_dir(&path).map_err(fail)?;
            Ok(std::fs::metadata(&path).map_err(fail)?.len())
        })
        .await?;
        let (first, last) = (millis(built.first), millis(built.end));
        self.db
            .insert_session(&SessionRow {
                id: id.clone(),
                camera: camera.to_string(),
                format: RecordingFormat::Mp4.as_str().into(),
                requested_at: millis(requested_at),
                started_at: first,
                trigger: "export".into(),
            })
            .await?;
        let row = crate::storage::db::SegmentRow {
            session_id: id.clone(),
            camera: camera.to_string(),
            filename: filename.clone(),
            format: RecordingFormat::Mp4.as_str().into(),
            started_at: first,
            ended_at: last,
            duration_ms: last - first,
            size_bytes: size as i64,
            recovered: false,
            root,
        };
        self.db.insert_segment(&row).await?;
        self.db.finish_session(&id, last, "stopped", None).await?;
        info!(camera_id = %camera, file = filename, segments = built.segments, size, "range exported");
        let mut segment = Segment::from(&row);
        segment.available = true;
        Ok((segment, built.gaps.clone()))
    }

    /// The roots, what each holds, the floor and the policy; measured off the runtime. The totals are the roots'
    /// filesystems (each counted once), so with the one default root they are the data dir's disk, as ever.
    pub async fn storage(&self) -> Result<StorageInfo> {
        let files = self.files.clone();
        let statuses = self.roots.statuses();
        let present = self.roots.present();
        let dirs: Vec<_> = statuses
            .iter()
            .map(|s| present.iter().find(|p| Some(&p.id) == s.id.as_ref()).map(|p| p.dir.clone()))
            .collect();
        let measured = blocking(move || {
            let sizes: Vec<u64> =
                dirs.iter().map(|d| d.as_deref().map(crate::storage::roots::recordings_size).unwrap_or(0)).collect();
            Ok((sizes, files.area_size(Area::Snapshots)))
        })
        .await?;
        let (sizes, snapshots) = measured;
        let mut seen = Vec::new();
        let (mut total, mut available) = (0, 0);
        for s in statuses.iter().filter(|s| s.dev.is_some()) {
            if !seen.contains(&s.dev) {
                seen.push(s.dev);
                total += s.total;
                available += s.available;
            }
        }
        if seen.is_empty() {
            // No root is there: the data dir's disk, so the figures stay meaningful.
            let root = self.files.root().to_path_buf();
            (total, available) =
                blocking(move || disk_usage(&root).map_err(|e| Error::dependency(Dependency::Storage, e)))
                    .await
                    .unwrap_or((0, 0));
        }
        Ok(StorageInfo {
            total,
            available,
            recordings: sizes.iter().sum(),
            snapshots,
            floor: self.storage.min_free_bytes,
            policy: self.policy(),
            active: self.active_count(),
            roots: statuses.into_iter().zip(sizes).collect(),
        })
    }

    /// Checks every storage root every `ROOT_CHECK_EVERY` (one task per root, so a disk that hangs holds up only its
    /// own check) until shutdown.
    pub async fn watch_roots(self: Arc<Self>) {
        let tasks = TaskTracker::new();
        for i in 0..self.roots.len() {
            let roots = self.roots.clone();
            let shutdown = self.shutdown.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = crate::media::pace(ROOT_CHECK_EVERY) => roots.check(i).await,
                        _ = shutdown.cancelled() => break,
                    }
                }
            });
        }
        tasks.close();
        tasks.wait().await;
    }

    pub fn policy(&self) -> RetentionConfig {
        self.policy.lock().clone()
    }

    /// Sets and persists the retention policy.
    pub async fn set_policy(&self, policy: RetentionConfig) -> Result<()> {
        let json = serde_json::to_string(&policy).map_err(Error::internal)?;
        self.db.set_setting(RETENTION_SETTING, &json).await?;
        *self.policy.lock() = policy;
        Ok(())
    }

    /// One retention pass: policy, then the free-space floor.
    pub async fn enforce(&self) -> Result<Cleanup> {
        let policy = self.policy();
        let cleanup = retention::enforce(&self.db, &self.roots, &policy).await?;
        // Told once per low-space episode, and again whenever recordings were deleted to defend the floor: the
        // guard checks every second while space is low, and a client wants news, not a heartbeat.
        let newly_low = cleanup.was_low && !self.low.swap(true, std::sync::atomic::Ordering::Relaxed);
        if !cleanup.was_low {
            self.low.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        if newly_low || (cleanup.was_low && cleanup.files_deleted > 0) {
            self.events.publish(EventKind::StorageLowSpace {
                available: cleanup.available,
                floor: cleanup.floor,
                freed: cleanup.space_freed,
            });
        }
        Ok(cleanup)
    }

    /// The storage guard: checks free space every second while anything records (and applies the policy every
    /// `retention_interval`); stops all recordings cleanly when no root can keep its floor. Lists again the files
    /// of a root that came back. Forgets cached playback files nobody asked for lately.
    pub async fn guard(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_policy_pass = tokio::time::Instant::now() - self.storage.retention_interval;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => break,
            }
            self.playback.forget_idle();
            for id in self.roots.take_returned() {
                let Some(dir) = self.roots.dir_of(&id) else { continue };
                let mut report = recovery::Report::default();
                match recovery::reconcile_root(&self.db, &id, &dir, true, &mut report).await {
                    Ok(()) => info!(
                        root = id,
                        unindexed = report.unindexed.len(),
                        unrecoverable = report.unrecoverable.len(),
                        gone = report.missing.len(),
                        "storage root back: its files listed again"
                    ),
                    Err(e) => warn!(err = %e, root = id, "cannot list the files of a returned storage root"),
                }
            }
            let policy_due = last_policy_pass.elapsed() >= self.storage.retention_interval;
            // The roots' health checks keep their free space current (statvfs off the runtime, per root).
            let low = self.roots.any_full();
            let defend_floor = low && self.active_count() > 0;
            if !policy_due && !defend_floor {
                continue;
            }
            if policy_due {
                last_policy_pass = tokio::time::Instant::now();
            }
            match self.enforce().await {
                Ok(c) if c.still_low && self.active_count() > 0 => {
                    warn!(available = c.available, floor = c.floor, "every storage root is full: stopping recordings");
                    let cameras: Vec<CameraId> = self.active.lock().keys().cloned().collect();
                    for camera in cameras {
                        self.fail(&camera, "insufficient storage");
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(err = %e, "retention pass failed"),
            }
        }
    }

    /// Ends a session as failed: it is finalised (playable) but reported as an error.
    fn fail(&self, camera: &CameraId, reason: &str) {
        if let Some(a) = self.active.lock().get(camera) {
            *a.failure.lock() = Some(reason.to_owned());
            a.stop.cancel();
        }
    }
}

fn session_id() -> String {
    let mut bytes = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}
