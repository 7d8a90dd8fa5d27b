//! The application: what camhub is once started, as parts a transport asks for by name (cameras, recordings,
//! snapshots, streams, detections, network discovery) and the questions about the whole (authenticate, health, status, process figures). Each part's
//! methods are its use cases; a transport parses a request, checks the caller's role, calls one use case and renders
//! its answer. Transports hold an `Arc<App>`; the app knows nothing about them, and its database and files are
//! reached only through its parts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};

use crate::auth::{Authenticator, Principal};
use crate::camera::{CameraManager, CameraStatus};
use crate::config::{CameraConfig, Config, RecordMode};
use crate::detection::Detections;
use crate::error::{Dependency, Error, Result};
use crate::events::{Event, EventBus, EventKind};
use crate::publish::Publisher;
use crate::recording::{Recordings, Trigger as RecordingTrigger};
use crate::reload::{Reloading, Report, Trigger};
use crate::scanner::Scanner;
use crate::snapshot::Snapshots;

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Running = 1,
    Stopping = 2,
}

/// The parts the service starts with; `service` builds them in order.
#[derive(Debug)]
pub struct Parts {
    pub config: Config,
    /// Where the config came from and how to change the log filter, for reloads.
    pub reloading: Reloading,
    pub auth: Authenticator,
    pub events: EventBus,
    /// Shared with network discovery, which adds cameras it finds (`auto_add`).
    pub cameras: Arc<CameraManager>,
    pub recordings: Arc<Recordings>,
    pub snapshots: Snapshots,
    pub streams: Arc<Publisher>,
    pub detections: Arc<Detections>,
    pub scanner: Arc<Scanner>,
}

/// The started service.
#[derive(Debug)]
pub struct App {
    parts: Parts,
    /// The config in force: the one started with, then each reload's cameras and live settings (`Config::applying`).
    config: RwLock<Arc<Config>>,
    /// One reload at a time.
    reloads: tokio::sync::Mutex<()>,
    started: Instant,
    phase: AtomicU8,
    /// Whether local-device discovery (udev) is following hot-plug; set by `discovery`.
    local_discovery: AtomicBool,
    /// Sampled on demand for process figures; behind a lock because refreshing it mutates it.
    system: Mutex<Option<sysinfo::System>>,
    /// Where the push listeners bound (the configured port, or the one the system gave for port 0).
    listeners: Mutex<[Option<std::net::SocketAddr>; 2]>,
}

/// The listeners publishers push to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Rtmp = 0,
    Srt = 1,
}

/// Overall health, derived from the cameras and the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "HEALTHY",
            Health::Degraded => "DEGRADED",
            Health::Unhealthy => "UNHEALTHY",
        }
    }
}

/// Process figures for `get_metrics` and `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct ProcessMetrics {
    pub cpu_percent: f32,
    pub rss_bytes: u64,
    /// The process's resident memory as a share of the machine's, in percent.
    pub memory_percent: f64,
    pub threads: usize,
    pub disk_usage_percent: f64,
}

impl App {
    pub fn new(parts: Parts) -> App {
        App {
            config: RwLock::new(Arc::new(parts.config.clone())),
            reloads: tokio::sync::Mutex::new(()),
            parts,
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
            local_discovery: AtomicBool::new(false),
            system: Mutex::new(sysinfo::System::new().ok()),
            listeners: Mutex::new([None; 2]),
        }
    }

    /// Records where a push listener bound; set by the composition root once it listens.
    pub fn set_listener(&self, which: Listener, addr: std::net::SocketAddr) {
        self.listeners.lock()[which as usize] = Some(addr);
    }

    /// The URL publishers push to on `which` without the key: `rtmp://HOST:PORT/live` or `srt://HOST:PORT`, HOST being
    /// `rtsp_server.public_host` when set (the host of every published URL) else the bound address. `None` while the
    /// listener is off.
    pub fn push_base(&self, which: Listener) -> Option<String> {
        let addr = self.listeners.lock()[which as usize]?;
        let host = match &self.config().rtsp_server.public_host {
            Some(h) => h.clone(),
            None if addr.ip().is_ipv6() => format!("[{}]", addr.ip()),
            None => addr.ip().to_string(),
        };
        Some(match which {
            Listener::Rtmp => format!("rtmp://{host}:{}/live", addr.port()),
            Listener::Srt => format!("srt://{host}:{}", addr.port()),
        })
    }

    /// The config in force (a reload may replace it; hold the `Arc` only as long as one answer needs it).
    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    pub fn cameras(&self) -> &CameraManager {
        &self.parts.cameras
    }

    pub fn recordings(&self) -> &Arc<Recordings> {
        &self.parts.recordings
    }

    pub fn snapshots(&self) -> &Snapshots {
        &self.parts.snapshots
    }

    /// Object detection: detectors per camera, events, the engine's figures.
    pub fn detections(&self) -> &Arc<Detections> {
        &self.parts.detections
    }

    /// Publishing (RTSP and WebRTC) of every camera.
    pub fn streams(&self) -> &Arc<Publisher> {
        &self.parts.streams
    }

    /// Network discovery: scans on request, and the periodic scan.
    pub fn scanner(&self) -> &Arc<Scanner> {
        &self.parts.scanner
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Event>> {
        self.parts.events.subscribe()
    }

    /// Verifies a JWT or an API key.
    pub async fn authenticate(&self, credential: &str) -> Result<Principal> {
        self.parts.auth.verify(credential).await
    }

    /// A short-lived token that opens `camera`'s media (HLS, playback) when carried in a URL; with its expiry (Unix s).
    pub fn media_token(&self, camera: &str, ttl: std::time::Duration) -> Result<(String, u64)> {
        self.parts.auth.issue_media(camera, ttl)
    }

    /// Verifies a media token for `camera`.
    pub fn verify_media_token(&self, token: &str, camera: &str) -> Result<()> {
        self.parts.auth.verify_media(token, camera)
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Stopping,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Whether camhub is finding cameras on its own: following udev hot-plug, or scanning the network periodically.
    pub fn discovery_active(&self) -> bool {
        self.local_discovery.load(Ordering::Relaxed) || self.parts.scanner.periodic()
    }

    /// Set by local-device discovery while it follows udev.
    pub fn set_discovery_active(&self, active: bool) {
        self.local_discovery.store(active, Ordering::Relaxed);
    }

    /// (connected, total) cameras.
    pub fn camera_counts(&self) -> (usize, usize) {
        let cameras = self.cameras().list();
        let connected = cameras.iter().filter(|c| c.state().status == CameraStatus::Connected).count();
        (connected, cameras.len())
    }

    /// Healthy when running with every camera connected; degraded when some are not; unhealthy when stopping or
    /// when cameras exist and none is connected.
    pub fn health(&self) -> Health {
        let (connected, total) = self.camera_counts();
        match self.phase() {
            Phase::Stopping => Health::Unhealthy,
            _ if connected == total => Health::Healthy,
            _ if connected == 0 => Health::Unhealthy,
            _ => Health::Degraded,
        }
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// CPU, memory, threads and disk of this process, read from the kernel off the async runtime.
    pub async fn process_metrics(self: &Arc<Self>) -> Result<ProcessMetrics> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || app.sample_process()).await.map_err(Error::internal)
    }

    fn sample_process(&self) -> ProcessMetrics {
        let pid = sysinfo::Pid::from_u32(std::process::id());
        let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
        let disk_usage_percent = crate::storage::disk_usage(&self.config().storage.root)
            .map(|(total, available)| if total == 0 { 0.0 } else { 100.0 * (total - available) as f64 / total as f64 })
            .unwrap_or(0.0);
        let mut sys = self.system.lock();
        let Some(sys) = sys.as_mut() else {
            return ProcessMetrics { threads, disk_usage_percent, ..Default::default() };
        };
        sys.refresh_memory();
        sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
        let total = sys.total_memory();
        match sys.process(pid) {
            Some(p) => ProcessMetrics {
                cpu_percent: p.cpu_usage(),
                rss_bytes: p.memory(),
                memory_percent: if total == 0 { 0.0 } else { 100.0 * p.memory() as f64 / total as f64 },
                threads,
                disk_usage_percent,
            },
            None => ProcessMetrics { threads, disk_usage_percent, ..Default::default() },
        }
    }

    /// Reads the config file again and applies what changed: configured cameras added, removed or changed one by one
    /// (the others untouched), live settings at once, and the keys that need a restart named. A file that does not
    /// validate is refused (`config.reload_failed`, one log line naming the key) and the running config kept. With
    /// `Trigger::DryRun` nothing is applied: the report says what a reload would do, of the config file or of
    /// `candidate` (a config's text, checked before it is put in place).
    pub async fn reload(&self, trigger: Trigger, candidate: Option<String>) -> Result<Report> {
        let _one = self.reloads.lock().await;
        let began = Instant::now();
        let refuse = |key: String, problem: String| {
            warn!(trigger = trigger.as_str(), key, problem, "config reload refused; the running config is kept");
            if trigger != Trigger::DryRun {
                self.parts.events.publish(EventKind::ConfigReloadFailed {
                    trigger: trigger.as_str(),
                    key: key.clone(),
                    problem: problem.clone(),
                });
            }
            Error::dependency(Dependency::Config, format!("{key}: {problem}"))
        };
        let loaded = match (candidate, self.parts.reloading.path.clone()) {
            (Some(text), _) if trigger == Trigger::DryRun => Config::from_toml(&text),
            (Some(_), _) => return Err(Error::internal("a config text is only compared, in a dry run")),
            (None, Some(path)) => {
                tokio::task::spawn_blocking(move || Config::load(Some(&path))).await.map_err(Error::internal)?
            }
            (None, None) => return Err(refuse("--config".into(), "camhub was started without a config file".into())),
        };
        let new = loaded.map_err(|e| refuse(e.key, e.problem))?;
        let running = self.config();
        let diff = running.diff(&new);
        let mut report = Report {
            cameras_added: diff.cameras_added.iter().map(|c| c.id.to_string()).collect(),
            cameras_removed: diff.cameras_removed.iter().map(ToString::to_string).collect(),
            cameras_changed: diff.cameras_changed.iter().map(|c| c.new.id.to_string()).collect(),
            cameras_restarted: diff
                .cameras_changed
                .iter()
                .filter(|c| c.restarts())
                .map(|c| c.new.id.to_string())
                .collect(),
            live: diff.live.clone(),
            restart_required: diff.restart.clone(),
            ..Report::default()
        };
        if trigger == Trigger::DryRun || diff.is_empty() {
            return Ok(report);
        }

        for id in &diff.cameras_removed {
            self.stop_recording_of(id).await;
            self.parts.detections.reconfigure(id, None);
            if let Err(e) = self.parts.cameras.remove_configured(id).await {
                report.problems.push(format!("camera {id}: not removed: {e}"));
            }
        }
        for change in &diff.cameras_changed {
            let id = &change.new.id;
            if change.restarts() {
                self.stop_recording_of(id).await;
                if let Err(e) = self.parts.cameras.remove_configured(id).await {
                    report.problems.push(format!("camera {id}: not restarted: {e}"));
                    continue;
                }
                self.start_configured(&change.new, &mut report).await;
            } else if let Some(camera) = self.parts.cameras.get(id) {
                // Record mode and detection change on the running camera: its ingest, viewers and counters go on.
                self.parts.detections.reconfigure(id, change.new.detect.clone().map(|d| (d, change.new.record)));
                match (change.old.record == RecordMode::Always, change.new.record == RecordMode::Always) {
                    (false, true) => {
                        if let Err(e) =
                            self.parts.recordings.start(&camera, None, None, RecordingTrigger::Continuous).await
                        {
                            report.problems.push(format!("camera {id}: continuous recording not started: {e}"));
                        }
                    }
                    (true, false) => self.stop_recording_of(id).await,
                    _ => {}
                }
                self.parts.detections.restore(&camera).await;
            }
        }
        for c in &diff.cameras_added {
            self.start_configured(c, &mut report).await;
        }

        if diff.live.contains(&"storage.retention_policy")
            && let Err(e) = self.parts.recordings.set_policy(new.storage.retention.clone()).await
        {
            report.problems.push(format!("storage.retention_policy: {e}"));
        }
        if diff.live.contains(&"snapshots") {
            self.parts.snapshots.set_config(new.snapshots.clone());
        }
        if diff.live.contains(&"log.level") {
            match (&self.parts.reloading.log, self.parts.reloading.log_from_env) {
                (_, true) => report.problems.push("log.level: RUST_LOG is set and wins over it".into()),
                (Some(set), false) => {
                    if let Err(e) = set(&new.log.level) {
                        report.problems.push(format!("log.level: {e}"));
                    }
                }
                (None, false) => {}
            }
        }
        *self.config.write() = Arc::new(running.applying(&new));
        report.applied = true;
        info!(
            trigger = trigger.as_str(),
            added = ?report.cameras_added,
            removed = ?report.cameras_removed,
            changed = ?report.cameras_changed,
            live = ?report.live,
            restart_required = ?report.restart_required,
            problems = ?report.problems,
            elapsed_ms = began.elapsed().as_millis() as u64,
            "config reloaded"
        );
        self.parts.events.publish(EventKind::ConfigReloaded {
            trigger: trigger.as_str(),
            added: report.cameras_added.clone(),
            removed: report.cameras_removed.clone(),
            changed: report.cameras_changed.clone(),
            restart_required: report.restart_required.iter().map(|k| k.to_string()).collect(),
        });
        Ok(report)
    }

    /// Starts a camera a reload added (or restarted), with its continuous recording and its detection.
    async fn start_configured(&self, c: &CameraConfig, report: &mut Report) {
        self.parts.detections.reconfigure(&c.id, c.detect.clone().map(|d| (d, c.record)));
        let camera = match self.parts.cameras.add_configured(c).await {
            Ok(camera) => camera,
            Err(e) => {
                report.problems.push(format!("camera {}: not started: {e}", c.id));
                return;
            }
        };
        if c.record == RecordMode::Always
            && let Err(e) = self.parts.recordings.start(&camera, None, None, RecordingTrigger::Continuous).await
        {
            report.problems.push(format!("camera {}: continuous recording not started: {e}", c.id));
        }
        self.parts.detections.restore(&camera).await;
    }

    /// Stops the camera's recording, if one runs, so its last segment is closed and indexed before the camera goes.
    async fn stop_recording_of(&self, camera: &crate::camera::CameraId) {
        if self.parts.recordings.active(camera).is_some()
            && let Err(e) = self.parts.recordings.stop(camera).await
        {
            warn!(camera_id = %camera, err = %e, "cannot stop the recording of a reconfigured camera");
        }
    }
}
