//! The application: what camhub is once started (config, database, auth, event bus, cameras) and the questions any
//! transport can ask of it. Transports (`rpc`, `http`) hold an `Arc<App>`; the app knows nothing about them.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Instant, SystemTime};

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

#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub db: Db,
    pub auth: Authenticator,
    pub events: EventBus,
    pub cameras: CameraManager,
    pub recordings: std::sync::Arc<Recordings>,
    pub snapshots: Snapshots,
    pub files: Files,
    pub started: Instant,
    pub started_wall: SystemTime,
    phase: AtomicU8,
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

/// What `App::new` assembles.
pub struct Parts {
    pub config: Config,
    pub db: Db,
    pub auth: Authenticator,
    pub events: EventBus,
    pub cameras: CameraManager,
    pub recordings: std::sync::Arc<Recordings>,
    pub snapshots: Snapshots,
    pub files: Files,
}

impl App {
    pub fn new(parts: Parts) -> App {
        let Parts { config, db, auth, events, cameras, recordings, snapshots, files } = parts;
        App {
            config,
            db,
            auth,
            events,
            cameras,
            recordings,
            snapshots,
            files,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
        }
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
        self.started.elapsed().as_secs()
    }
}
