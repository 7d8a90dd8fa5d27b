//! The application: what camhub is once started, as parts a transport asks for by name (cameras, recordings,
//! snapshots, streams, detections, network discovery) and the questions about the whole (authenticate, health, status, process figures). Each part's
//! methods are its use cases; a transport parses a request, checks the caller's role, calls one use case and renders
//! its answer. Transports hold an `Arc<App>`; the app knows nothing about them, and its database and files are
//! reached only through its parts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::auth::{Authenticator, Principal};
use crate::camera::{CameraManager, CameraStatus};
use crate::config::Config;
use crate::detection::Detections;
use crate::error::{Error, Result};
use crate::events::{Event, EventBus};
use crate::publish::Publisher;
use crate::recording::Recordings;
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

    pub fn config(&self) -> &Config {
        &self.parts.config
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
}
