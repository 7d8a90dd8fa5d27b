//! Cameras: their public ids, sources and observed state. The registry and the per-camera supervisors live in
//! `manager` and `supervisor`; this module owns the nouns they share. It knows nothing about the RPC wire format.

pub mod device;
pub mod manager;
pub mod source;
pub mod supervisor;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;

use crate::base::url::redact_url;
pub use crate::base::{CameraId, CameraStatus};
use crate::error::{Error, Result, State};
use crate::media::hub::StreamHub;
use crate::media::push::PushSlot;

pub use manager::CameraManager;

/// Where a camera's frames come from.
#[derive(Debug, Clone)]
pub enum CameraSource {
    /// A network camera; the URL may carry credentials and so never leaves the process.
    Rtsp { url: url::Url },
    /// A local V4L2 (USB) device, known by its physical identity; its node comes and goes with hot-plug.
    V4l2 { device: Arc<device::LocalDevice> },
    /// A clip played in a loop (configured only: a client never names a path).
    File { path: std::path::PathBuf },
    /// A stream pushed to camhub (RTMP, SRT, WHIP) with the camera's stream key.
    Push { slot: Arc<PushSlot> },
}

impl CameraSource {
    /// `source_type` as clients see it: a pushed camera's is the protocol of its current or last publisher.
    pub fn kind(&self) -> &'static str {
        match self {
            CameraSource::Rtsp { .. } => "rtsp",
            CameraSource::V4l2 { .. } => "v4l2",
            CameraSource::File { .. } => "file",
            CameraSource::Push { slot } => slot.protocol().map_or("push", |p| p.as_str()),
        }
    }

    /// The kind the `cameras` table stores (a pushed camera is `push` whatever its publisher uses).
    pub fn stored_kind(&self) -> &'static str {
        match self {
            CameraSource::Push { .. } => "push",
            other => other.kind(),
        }
    }

    pub fn device(&self) -> Option<&Arc<device::LocalDevice>> {
        match self {
            CameraSource::V4l2 { device } => Some(device),
            _ => None,
        }
    }

    pub fn push_slot(&self) -> Option<&Arc<PushSlot>> {
        match self {
            CameraSource::Push { slot } => Some(slot),
            _ => None,
        }
    }
}

/// Who declared the camera: the config file or a client at run time (persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Config,
    Api,
    /// Found on the machine (a V4L2 device through udev).
    Discovered,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
            Origin::Discovered => "discovered",
        }
    }
}

/// What the supervisor last observed.
#[derive(Debug, Clone)]
pub struct CameraState {
    pub status: CameraStatus,
    /// When the current connection delivered its first frame.
    pub connected_since: Option<Instant>,
    pub last_change: SystemTime,
    /// The last failure, already free of credentials.
    pub last_error: Option<String>,
    pub reconnects: u64,
}

/// One camera: identity, source, live state and the hub its frames flow through.
#[derive(Debug)]
pub struct Camera {
    pub id: CameraId,
    pub name: String,
    pub source: CameraSource,
    pub origin: Origin,
    pub hub: Arc<StreamHub>,
    /// Written only by the camera's supervisor; read by any RPC. Never held across `.await`.
    state: Mutex<CameraState>,
}

impl Camera {
    pub fn new(id: CameraId, name: String, source: CameraSource, origin: Origin) -> Camera {
        Camera {
            hub: Arc::new(StreamHub::new(id.clone())),
            id,
            name,
            source,
            origin,
            state: Mutex::new(CameraState {
                status: CameraStatus::Disconnected,
                connected_since: None,
                last_change: SystemTime::now(),
                last_error: None,
                reconnects: 0,
            }),
        }
    }

    pub fn state(&self) -> CameraState {
        self.state.lock().clone()
    }

    /// Refuses work that needs frames (-32020 with the current status) unless the camera is connected.
    pub fn require_connected(&self) -> Result<()> {
        match self.state.lock().status {
            CameraStatus::Connected => Ok(()),
            CameraStatus::Disconnected => Err(Error::invalid_state(State::Disconnected, &[State::Connected])),
            CameraStatus::Error => Err(Error::invalid_state(State::Error, &[State::Connected])),
        }
    }

    /// The source as logs may show it: an RTSP URL without credentials, a device's physical identity (never its
    /// `/dev` node), a clip's path, or `push:<id>` for a pushed stream (never its key).
    pub fn public_url(&self) -> String {
        match &self.source {
            CameraSource::Rtsp { url } => redact_url(url),
            CameraSource::V4l2 { device } => format!("v4l2:{}", device.key),
            CameraSource::File { path } => format!("file://{}", path.display()),
            CameraSource::Push { .. } => format!("push:{}", self.id),
        }
    }

    /// Applies `change` and says whether the status changed.
    fn update_state(&self, change: impl FnOnce(&mut CameraState)) -> bool {
        let mut state = self.state.lock();
        let before = state.status;
        change(&mut state);
        if state.status != before {
            state.last_change = SystemTime::now();
            true
        } else {
            false
        }
    }
}
