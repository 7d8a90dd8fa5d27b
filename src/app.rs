//! The application: what camhub is once started (config, database, auth, event bus, cameras) and the questions any
//! transport can ask of it. Transports (`rpc`, `http`) hold an `Arc<App>`; the app knows nothing about them.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use crate::auth::Authenticator;
use crate::camera::{CameraManager, CameraStatus};
use crate::config::Config;
use crate::events::EventBus;
use crate::recording::Recordings;
use crate::snapshot::Snapshots;
use crate::storage::Db;
use crate::storage::files::Files;

pub const NAME: &str = "camhub";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Running = 1,
    Stopping = 2,
}

/// The started service. Built field by field in `service`; `life` tracks the process's phase.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub db: Db,
    pub auth: Authenticator,
    pub events: EventBus,
    pub cameras: CameraManager,
    pub recordings: std::sync::Arc<Recordings>,
    pub snapshots: Snapshots,
    /// RTSP and WebRTC publishing of every camera.
    pub publish: std::sync::Arc<crate::publish::Publisher>,
    pub files: Files,
    pub life: Lifecycle,
    /// Whether local-device discovery (udev) is following hot-plug; set by `discovery`.
    pub discovery_active: std::sync::atomic::AtomicBool,
}

/// When the process started and where it is in its life.
#[derive(Debug)]
pub struct Lifecycle {
    started: Instant,
    phase: AtomicU8,
}

impl Lifecycle {
    pub fn new() -> Lifecycle {
        Lifecycle { started: Instant::now(), phase: AtomicU8::new(Phase::Starting as u8) }
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
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

impl App {
    pub fn phase(&self) -> Phase {
        match self.life.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Stopping,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.life.phase.store(phase as u8, Ordering::Release);
    }

    /// (connected, total) cameras.
    pub fn camera_counts(&self) -> (usize, usize) {
        let cameras = self.cameras.list();
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
        self.life.started.elapsed().as_secs()
    }
}
