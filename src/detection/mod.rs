//! Detection: object detection on cameras, as the application sees it. `Detections` starts a detector (`detector`) per
//! camera with detection on (from the config, or `set_detection` at run time), each a hub consumer feeding the shared
//! inference engine; its tracker's sightings become events here: a row in the index (one per tracked object, owner of
//! the `detections` table), the best picture as a JPEG in the events area, an `event` on topic `detection`, and with
//! `record = "events"` a recording from `pre_roll` before the object was confirmed until `post_capture` after the last
//! one ended (objects overlapping in time share one recording). Events and their pictures are kept 30 days. Use cases:
//! list and get events, turn detection on and off, the engine's and each camera's figures.

pub mod detector;
pub mod tracker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer_video as gst_video;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::base::CameraId;
use crate::base::time::millis;
use crate::camera::Camera;
use crate::config::{DetectConfig, RecordMode};
use crate::error::{Dependency, Error, Resource, Result};
use crate::events::{DetectionNote, EventBus, EventKind};
use crate::inference::{Engine, Model, ModelStatus};
use crate::recording::{Recordings, Trigger};
use crate::storage::Db;
use crate::storage::db::{DetectionFilter, DetectionRow};
use crate::storage::files::{Area, Files, sync_file_and_dir};
use detector::{Settings, Shared};
use tracker::{Phase, Sighting};

/// Sightings a camera's writer may have queued before new ones are dropped (counted).
const WRITER_QUEUE: usize = 256;

/// What `get_inference_status` reports for the engine.
#[derive(Debug, Clone)]
pub struct InferenceStatus {
    /// `None` when detection is available; else why not.
    pub unavailable: Option<String>,
    pub provider: Option<&'static str>,
    pub threads: usize,
    pub queue: (u64, usize),
    pub dropped: u64,
    pub models: Vec<ModelStatus>,
    pub cameras: Vec<CameraDetection>,
}

/// One camera's detection, as status reports it.
#[derive(Debug, Clone)]
pub struct CameraDetection {
    pub camera: CameraId,
    pub enabled: bool,
    pub model: String,
    pub target_fps: f64,
    /// Inferences per second over the last five seconds.
    pub fps: f64,
    pub labels: Vec<String>,
    pub decode_mode: &'static str,
    pub frames_decoded: u64,
    pub frames_inferred: u64,
    pub dropped: u64,
    /// Objects confirmed since detection started.
    pub objects: u64,
    /// Frame arrival to tracker result, ms.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

/// A detection event, as listed.
pub type EventRow = DetectionRow;

/// A camera's detection as last set through the API, in the `settings` table under `setting_key`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Stored {
    enabled: bool,
    labels: Option<Vec<String>>,
    fps: Option<f64>,
}

fn setting_key(camera: &CameraId) -> String {
    format!("detection/{camera}")
}

struct Running {
    model: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

#[derive(Debug)]
pub struct Detections {
    engine: Option<Arc<Engine>>,
    unavailable: Option<String>,
    db: Db,
    files: Files,
    events: EventBus,
    recordings: Arc<Recordings>,
    /// The configured cameras' detection and record modes.
    configured: Mutex<HashMap<CameraId, (DetectConfig, RecordMode)>>,
    running: Mutex<HashMap<CameraId, Running>>,
    runtime: tokio::runtime::Handle,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("model", &self.model).finish()
    }
}

/// The arguments of `Detections::new`.
pub struct DetectionParts {
    /// `None` without an `[inference]` section.
    pub engine: Option<Arc<Engine>>,
    /// The configured cameras with a `detect` table (`Config::detecting`).
    pub cameras: Vec<(CameraId, DetectConfig, RecordMode)>,
    pub db: Db,
    pub files: Files,
    pub events: EventBus,
    pub recordings: Arc<Recordings>,
    pub runtime: tokio::runtime::Handle,
    pub shutdown: CancellationToken,
}

impl Detections {
    pub fn new(p: DetectionParts) -> Detections {
        let unavailable = match &p.engine {
            Some(e) if e.models().is_empty() => Some("no models in [inference] models".to_owned()),
            Some(_) => None,
            None => Some("detection is not configured (no [inference] section)".to_owned()),
        };
        let configured = p.cameras.into_iter().map(|(id, d, record)| (id, (d, record))).collect();
        Detections {
            engine: p.engine,
            unavailable,
            db: p.db,
            files: p.files,
            events: p.events,
            recordings: p.recordings,
            configured: Mutex::new(configured),
            running: Mutex::new(HashMap::new()),
            runtime: p.runtime,
            tasks: TaskTracker::new(),
            shutdown: p.shutdown,
        }
    }

    /// Whether detection can run at all.
    pub fn available(&self) -> bool {
        self.unavailable.is_none()
    }

    /// Events left open by the last run end where they were last seen.
    pub async fn recover(&self) -> Result<()> {
        let n = self.db.end_open_detections().await?;
        if n > 0 {
            info!(events = n, "detection events left open by the last run ended");
        }
        Ok(())
    }

    /// Forgets events (rows and pictures) that started more than `keep` ago, every hour until `stop`.
    pub async fn prune(self: Arc<Self>, keep: Duration, stop: CancellationToken) {
        let mut hourly = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = hourly.tick() => {}
                _ = stop.cancelled() => return,
            }
            let before = millis(SystemTime::now()) - keep.as_millis() as i64;
            let mut removed = 0;
            loop {
                let old = match self.db.old_detections(before, 500).await {
                    Ok(old) if !old.is_empty() => old,
                    Ok(_) => break,
                    Err(e) => {
                        warn!(err = %e, "cannot list old detection events");
                        break;
                    }
                };
                for (id, picture) in old {
                    // The picture first: a row without its picture is listed honestly; a picture without a row
                    // would never be found again.
                    if let Some(name) = picture
                        && let Ok(path) = self.files.path(Area::Events, "name", &name)
                    {
                        let gone = crate::storage::files::blocking(move || match std::fs::remove_file(&path) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                                Err(Error::dependency(Dependency::Storage, e))
                            }
                            _ => Ok(()),
                        })
                        .await;
                        if let Err(e) = gone {
                            warn!(err = %e, "cannot delete an event picture");
                            continue;
                        }
                    }
                    if self.db.delete_detection(id).await.is_ok() {
                        removed += 1;
                    }
                }
            }
            if removed > 0 {
                info!(events = removed, "old detection events removed");
            }
        }
    }

    /// Starts detection on `camera` as it was last set through the API (kept across restarts), else as its config
    /// says.
    pub async fn restore(&self, camera: &Arc<Camera>) {
        if !self.available() {
            return;
        }
        let stored = match self.db.setting(&setting_key(&camera.id)).await {
            Ok(Some(json)) => serde_json::from_str::<Stored>(&json).ok(),
            Ok(None) => None,
            Err(e) => {
                warn!(camera_id = %camera.id, err = %e, "cannot read the camera's detection setting");
                None
            }
        };
        let result = match stored {
            Some(s) if s.enabled => self.start(camera, s.labels, s.fps),
            Some(_) => Ok(()),
            None if self.configured.lock().get(&camera.id).is_some_and(|(d, _)| d.enabled) => {
                self.start(camera, None, None)
            }
            None => Ok(()),
        };
        if let Err(e) = result {
            warn!(camera_id = %camera.id, err = %e, "cannot start detection");
        }
    }

    /// Turns detection on `camera` on (with optional new labels and rate) or off; the choice outlives a restart.
    pub async fn set(
        &self,
        camera: &Arc<Camera>,
        enabled: bool,
        labels: Option<Vec<String>>,
        fps: Option<f64>,
    ) -> Result<CameraDetection> {
        if enabled {
            let (_, model) = self.model_for(&camera.id)?;
            if let Some(unknown) = labels.iter().flatten().find(|l| !model.config.labels.contains(l)) {
                let rule = format!("{unknown:?} is not a label of model {}", model.config.name);
                return Err(Error::invalid_param("labels", rule));
            }
            match self.live(&camera.id) {
                Some(shared) => {
                    let mut s = shared.settings.lock();
                    if let Some(labels) = labels {
                        s.labels = labels;
                    }
                    if let Some(fps) = fps {
                        s.fps = fps;
                    }
                }
                None => self.start(camera, labels, fps)?,
            }
        } else if let Some(r) = self.running.lock().remove(&camera.id) {
            r.stop.cancel();
        }
        let status = self.camera_status(&camera.id);
        let stored = Stored {
            enabled,
            labels: enabled.then(|| status.labels.clone()),
            fps: enabled.then_some(status.target_fps),
        };
        let json = serde_json::to_string(&stored).map_err(Error::internal)?;
        self.db.set_setting(&setting_key(&camera.id), &json).await?;
        Ok(status)
    }

    /// The engine and the model `camera` uses (its configured one, else the first loaded), or why there is none.
    fn model_for(&self, camera: &CameraId) -> Result<(Arc<Engine>, Arc<Model>)> {
        let unavailable =
            || Error::dependency(Dependency::Inference, self.unavailable.as_deref().unwrap_or("no engine"));
        let engine = self.engine.clone().ok_or_else(unavailable)?;
        let configured = self.configured.lock().get(camera).map(|(d, _)| d.model.clone());
        let model = match configured {
            Some(name) => engine.model(&name),
            None => engine.models().into_iter().next(),
        };
        let model = model.ok_or_else(unavailable)?;
        Ok((engine, model))
    }

    fn start(&self, camera: &Arc<Camera>, labels: Option<Vec<String>>, fps: Option<f64>) -> Result<()> {
        let (engine, model) = self.model_for(&camera.id)?;
        let model_name = model.config.name.clone();
        let configured = self.configured.lock().get(&camera.id).cloned();
        let (detect, record) = match configured {
            Some((d, r)) => (Some(d), r),
            None => (None, RecordMode::OnDemand),
        };
        let settings = Settings {
            fps: fps.or(detect.as_ref().map(|d| d.fps)).unwrap_or(5.0),
            labels: labels.or(detect.as_ref().map(|d| d.labels.clone())).unwrap_or_default(),
            min_score: detect.as_ref().and_then(|d| d.min_score).unwrap_or(model.config.min_score),
            threshold: detect.as_ref().and_then(|d| d.threshold).unwrap_or(model.config.threshold),
            end_after: detect.as_ref().map(|d| d.end_after).unwrap_or(Duration::from_secs(3)),
        };
        let shared = Arc::new(Shared::new(settings, camera.hub.pictures().clone()));
        let stop = self.shutdown.child_token();
        {
            let mut running = self.running.lock();
            if running.get(&camera.id).is_some_and(|r| !r.stop.is_cancelled()) {
                return Ok(());
            }
            running
                .insert(camera.id.clone(), Running { model: model_name, shared: shared.clone(), stop: stop.clone() });
        }
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let writer = Writer {
            camera: Arc::downgrade(camera),
            camera_id: camera.id.clone(),
            db: self.db.clone(),
            files: self.files.clone(),
            events: self.events.clone(),
            recordings: self.recordings.clone(),
            record: match (record, &detect) {
                (RecordMode::Events, Some(d)) => Some((d.record_labels.clone(), d.post_capture)),
                _ => None,
            },
            open: HashMap::new(),
            recording: None,
        };
        let consumer =
            camera.hub.subscribe("detection", detector::QUEUE_FRAMES, crate::media::hub::Start::LatestKeyframe);
        let dropped = shared.clone();
        let report: detector::Report = Box::new(move |batch| {
            if tx.try_send(batch).is_err() {
                dropped.dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Not the child of the request that turned detection on: it runs for as long as the camera does.
        let span = info_span!(parent: None, "detection", camera_id = %camera.id);
        info!(camera_id = %camera.id, model = model.config.name, "detection started");
        self.tasks.spawn_on(
            detector::run(camera.id.clone(), consumer, engine, model, shared, stop.clone(), report)
                .instrument(span.clone()),
            &self.runtime,
        );
        self.tasks.spawn_on(writer.run(rx, stop).instrument(span), &self.runtime);
        Ok(())
    }

    /// A configured camera's detection or record mode changed (a config reload): its detector, if running, stops,
    /// and the camera's next `restore` starts it as now configured.
    pub fn reconfigure(&self, camera: &CameraId, configured: Option<(DetectConfig, RecordMode)>) {
        match configured {
            Some(c) => self.configured.lock().insert(camera.clone(), c),
            None => self.configured.lock().remove(camera),
        };
        if let Some(running) = self.running.lock().remove(camera) {
            running.stop.cancel();
        }
    }

    /// Waits for every detector and writer (after the shutdown token fired).
    pub async fn wait_stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The detector running on `camera`, forgetting one that has ended (its camera removed).
    fn live(&self, camera: &CameraId) -> Option<Arc<Shared>> {
        let mut running = self.running.lock();
        if running.get(camera).is_some_and(|r| r.stop.is_cancelled()) {
            running.remove(camera);
        }
        running.get(camera).map(|r| r.shared.clone())
    }

    /// One camera's detection figures (off when not running).
    pub fn camera_status(&self, camera: &CameraId) -> CameraDetection {
        let _ = self.live(camera);
        let running = self.running.lock();
        match running.get(camera) {
            Some(r) => {
                let s = r.shared.settings.lock().clone();
                let (p50, p99) = r.shared.latency();
                CameraDetection {
                    camera: camera.clone(),
                    enabled: true,
                    model: r.model.clone(),
                    target_fps: s.fps,
                    fps: r.shared.rate(),
                    labels: s.labels,
                    decode_mode: r.shared.mode().as_str(),
                    frames_decoded: r.shared.decoded.load(Ordering::Relaxed),
                    frames_inferred: r.shared.submitted.load(Ordering::Relaxed),
                    dropped: r.shared.dropped.load(Ordering::Relaxed),
                    objects: r.shared.objects.load(Ordering::Relaxed),
                    latency_p50_ms: p50,
                    latency_p99_ms: p99,
                }
            }
            None => CameraDetection {
                camera: camera.clone(),
                enabled: false,
                model: self.configured.lock().get(camera).map(|(d, _)| d.model.clone()).unwrap_or_default(),
                target_fps: 0.0,
                fps: 0.0,
                labels: Vec::new(),
                decode_mode: "off",
                frames_decoded: 0,
                frames_inferred: 0,
                dropped: 0,
                objects: 0,
                latency_p50_ms: 0.0,
                latency_p99_ms: 0.0,
            },
        }
    }

    pub fn status(&self) -> InferenceStatus {
        let mut ids: Vec<CameraId> = {
            let mut running = self.running.lock();
            running.retain(|_, r| !r.stop.is_cancelled());
            running.keys().cloned().collect()
        };
        ids.sort();
        InferenceStatus {
            unavailable: self.unavailable.clone(),
            provider: self.engine.as_ref().map(|e| e.provider.as_str()),
            threads: self.engine.as_ref().map(|e| e.threads()).unwrap_or(0),
            queue: self.engine.as_ref().map(|e| e.queue()).unwrap_or((0, 0)),
            dropped: self.engine.as_ref().map(|e| e.dropped()).unwrap_or(0),
            models: self.engine.as_ref().map(|e| e.models().iter().map(|m| m.status()).collect()).unwrap_or_default(),
            cameras: ids.iter().map(|id| self.camera_status(id)).collect(),
        }
    }

    /// Detection events matching `filter`, newest first, and how many match.
    pub async fn list(&self, filter: &DetectionFilter, limit: i64, offset: i64) -> Result<(Vec<EventRow>, i64)> {
        self.db.list_detections(filter, limit, offset).await
    }

    pub async fn get(&self, id: i64) -> Result<EventRow> {
        self.db.detection(id).await?.ok_or_else(|| Error::not_found(Resource::Event, id.to_string()))
    }
}

/// One camera's sightings made into events, in order: index rows, pictures, notifications, recordings.
struct Writer {
    camera: std::sync::Weak<Camera>,
    camera_id: CameraId,
    db: Db,
    files: Files,
    events: EventBus,
    recordings: Arc<Recordings>,
    /// With `record = "events"`: the labels that record (empty: all) and the post-capture time.
    record: Option<(Vec<String>, Duration)>,
    /// Events in progress by track.
    open: HashMap<u64, DetectionRow>,
    /// The recording detection started: its session, first file, and when to stop it (once no recording object is
    /// in view).
    recording: Option<(String, String, Option<Instant>)>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Vec<(Sighting, Option<gst::Sample>)>>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                batch = rx.recv() => match batch {
                    Some(batch) => {
                        for (sighting, picture) in batch {
                            self.write(sighting, picture).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => self.stop_recording_when_due(false).await,
                _ = stop.cancelled() => {
                    // The detector ends its tracks as it stops; take what it sent, then stop.
                    while let Ok(batch) = rx.try_recv() {
                        for (sighting, picture) in batch {
                            self.write(sighting, picture).await;
                        }
                    }
                    break;
                }
            }
        }
        self.stop_recording_when_due(true).await;
    }

    /// Writes one sighting in a `detection.event` span (the recording it starts, if any, is its child).
    async fn write(&mut self, s: Sighting, picture: Option<gst::Sample>) {
        let span = info_span!(
            "detection.event",
            camera_id = %self.camera_id,
            phase = s.phase.as_str(),
            label = s.label,
            track = s.track,
            score = s.score as f64,
            event_id = tracing::field::Empty,
            picture = tracing::field::Empty,
            recording = tracing::field::Empty,
        );
        self.write_sighting(s, picture).instrument(span).await
    }

    async fn write_sighting(&mut self, s: Sighting, picture: Option<gst::Sample>) {
        let frame_ms = millis(s.frame_time);
        let mut row = match (s.phase, self.open.remove(&s.track)) {
            (Phase::New, _) => DetectionRow {
                id: 0,
                camera: self.camera_id.to_string(),
                track: s.track as i64,
                label: s.label.clone(),
                score: s.score as f64,
                top_score: s.top_score as f64,
                rect: s.rect.map(|v| v as f64),
                started_at: frame_ms,
                frame_time: frame_ms,
                ended_at: None,
                snapshot: None,
                recording: None,
            },
            (_, Some(row)) => row,
            // An update or end of an event whose start could not be written: nothing to add to.
            (_, None) => return,
        };
        row.score = s.score as f64;
        row.top_score = s.top_score as f64;
        if s.best {
            row.rect = s.rect.map(|v| v as f64);
            row.frame_time = frame_ms;
        }
        if s.phase == Phase::End {
            row.ended_at = Some(millis(SystemTime::now()).max(frame_ms));
        }
        if s.phase == Phase::New {
            if let Some(file) = self.record_for(&s.label).await {
                row.recording = Some(file);
            }
            match self.db.insert_detection(&row).await {
                Ok(id) => row.id = id,
                Err(e) => {
                    warn!(err = %e, "cannot index a detection event");
                    return;
                }
            }
        }
        if let Some(picture) = picture {
            let name = format!("{}_{}.jpg", self.camera_id, row.id);
            match self.save_picture(&name, picture).await {
                Ok(()) => row.snapshot = Some(name),
                Err(e) => warn!(err = %e, "cannot save an event picture"),
            }
        }
        if let Err(e) = self.db.update_detection(&row).await {
            warn!(err = %e, "cannot update a detection event");
        }
        let span = tracing::Span::current();
        span.record("event_id", row.id);
        if let Some(name) = &row.snapshot {
            span.record("picture", name.as_str());
        }
        if let Some(file) = &row.recording {
            span.record("recording", file.as_str());
        }
        self.events.publish(EventKind::Detection {
            camera: self.camera_id.clone(),
            note: Arc::new(DetectionNote {
                id: row.id,
                phase: s.phase.as_str(),
                track: s.track,
                label: s.label.clone(),
                score: s.score,
                top_score: s.top_score,
                rect: s.rect,
                frame_time: s.frame_time,
                snapshot: row.snapshot.clone(),
                recording: row.recording.clone(),
            }),
        });
        if s.phase == Phase::End {
            let ended_label = row.label.clone();
            if self.records(&ended_label) && !self.open.values().any(|r| self.records(&r.label)) {
                let post = self.record.as_ref().map(|(_, p)| *p).unwrap_or_default();
                if let Some((_, _, stop_at)) = self.recording.as_mut() {
                    *stop_at = Some(Instant::now() + post);
                }
            }
        } else {
            self.open.insert(s.track, row);
        }
    }

    fn records(&self, label: &str) -> bool {
        self.record.as_ref().is_some_and(|(labels, _)| labels.is_empty() || labels.iter().any(|l| l == label))
    }

    /// With `record = "events"` and a recording label: the recording this object belongs to (started now, or the one
    /// running, whose stop is called off).
    async fn record_for(&mut self, label: &str) -> Option<String> {
        if !self.records(label) {
            return None;
        }
        // Ours only while it runs: a recording stopped meanwhile (stop_recording, no space) is forgotten.
        let ours_running = self
            .recording
            .as_ref()
            .is_some_and(|(session, _, _)| self.recordings.active(&self.camera_id).is_some_and(|a| &a.id == session));
        if !ours_running {
            self.recording = None;
        }
        if let Some((_, file, stop_at)) = self.recording.as_mut() {
            *stop_at = None;
            return Some(file.clone());
        }
        let camera = self.camera.upgrade()?;
        if let Some(active) = self.recordings.active(&camera.id) {
            // Recording already (continuous or asked for): the event joins it, and it is not ours to stop.
            return Some(active.first_filename);
        }
        match self.recordings.start(&camera, None, None, Trigger::Detection).await {
            Ok(info) => {
                self.recording = Some((info.id.clone(), info.first_filename.clone(), None));
                Some(info.first_filename)
            }
            Err(e) => {
                warn!(err = %e, "cannot start recording on detection");
                None
            }
        }
    }

    async fn stop_recording_when_due(&mut self, now: bool) {
        let due = match &self.recording {
            Some((_, _, Some(at))) => now || Instant::now() >= *at,
            Some((_, _, None)) => now,
            None => false,
        };
        if !due {
            return;
        }
        let Some((session, _, _)) = self.recording.take() else { return };
        if self.recordings.active(&self.camera_id).is_some_and(|a| a.id == session)
            && let Err(e) = self.recordings.stop(&self.camera_id).await
        {
            warn!(err = %e, "cannot stop the recording detection started");
        }
    }

    /// Encodes the frame as a JPEG at the camera's size and writes it whole (temp, fsync, rename).
    async fn save_picture(&self, name: &str, frame: gst::Sample) -> Result<()> {
        let path = self.files.path(Area::Events, "name", name)?;
        let tmp = self.files.dir(Area::Events).join(format!(".tmp-{name}"));
        crate::storage::files::blocking(move || {
            let caps = gst::Caps::builder("image/jpeg").build();
            let jpeg = gst_video::convert_sample(&frame, &caps, Some(gst::ClockTime::from_seconds(5)))
                .map_err(|e| Error::dependency(Dependency::SnapshotPipeline, e))?;
            let data = jpeg
                .buffer()
                .and_then(|b| b.map_readable().ok().map(|m| m.as_slice().to_vec()))
                .ok_or_else(|| Error::dependency(Dependency::SnapshotPipeline, "empty JPEG"))?;
            let io = |e: std::io::Error| Error::dependency(Dependency::Storage, format!("writing event picture: {e}"));
            std::fs::write(&tmp, &data).map_err(io)?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            sync_file_and_dir(&path).map_err(io)
        })
        .await
    }
}
