//! The in-process event bus: every change worth telling a client about (camera status, cameras added and removed,
//! recordings, snapshots, detections, streams found by network discovery, storage, config reloads, start-up and
//! shutdown) is published here once, naming cameras by id, and fanned
//! out to WebSocket connections, publishing and the event log, which render it as they need.
//! Subscribers that fall behind lose the oldest events and learn how many (tokio `broadcast` semantics); a slow
//! subscriber never slows the publisher.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::base::{CameraId, CameraStatus};

/// Event topics clients can subscribe to, as the contract names them.
pub const TOPICS: &[&str] = &[
    "camera.connected",
    "camera.disconnected",
    "camera.status_change",
    "camera.added",
    "camera.removed",
    "recording.start",
    "recording.stop",
    "recording.error",
    "snapshot.taken",
    "system.health",
    "system.startup",
    "system.shutdown",
    "storage.low_space",
    "detection",
    "discovery.found",
    "config.reloaded",
    "config.reload_failed",
];

#[derive(Debug, Clone)]
pub enum EventKind {
    /// A camera's status changed. Events name cameras by id; whoever renders one looks up what else it shows.
    CameraStatus {
        camera: CameraId,
        name: String,
        status: CameraStatus,
        previous: CameraStatus,
        reason: Option<String>,
    },
    CameraAdded {
        camera: CameraId,
        name: String,
        /// `rtsp`, `v4l2`.
        source: &'static str,
    },
    CameraRemoved {
        camera: CameraId,
    },
    RecordingStarted {
        camera: CameraId,
        session: String,
        filename: String,
        format: &'static str,
    },
    RecordingStopped {
        camera: CameraId,
        session: String,
        filename: String,
        duration_s: f64,
        file_size: u64,
    },
    RecordingFailed {
        camera: CameraId,
        session: String,
        filename: String,
        duration_s: f64,
        reason: String,
    },
    SnapshotTaken {
        camera: CameraId,
        filename: String,
        file_size: u64,
    },
    StorageLowSpace {
        available: u64,
        floor: u64,
        freed: u64,
    },
    SystemStartup,
    SystemShutdown,
    /// A tracked object appeared, changed or left (topic `detection`).
    Detection {
        camera: CameraId,
        note: Arc<DetectionNote>,
    },
    /// A periodic network scan found a stream it had not found before (topic `discovery.found`).
    DiscoveryFound(Arc<FoundNote>),
    /// The config file was read again and its changes applied (topic `config.reloaded`).
    ConfigReloaded {
        /// `signal`, `watcher` or `api`.
        trigger: &'static str,
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
        /// Keys that changed and need a restart.
        restart_required: Vec<String>,
    },
    /// A new config file was refused; the running config is kept (topic `config.reload_failed`).
    ConfigReloadFailed {
        trigger: &'static str,
        key: String,
        problem: String,
    },
}

/// A stream a periodic network scan found, as discovery reports it: no credentials.
#[derive(Debug, Clone)]
pub struct FoundNote {
    /// The stream's URL, without credentials.
    pub url: String,
    pub name: String,
    /// `onvif` or `rtsp_probe`.
    pub source: &'static str,
    /// `H264`, `H265`, or the RTP encoding name of another codec; `None` when unknown.
    pub codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The camera it became, when the scan added it (`auto_add`).
    pub camera: Option<CameraId>,
}

/// A detection event as detection reports it: one tracked object's `new`, `update` or `end`.
#[derive(Debug, Clone)]
pub struct DetectionNote {
    /// The event's id (one per tracked object, kept from `new` to `end`).
    pub id: i64,
    /// `new`, `update` or `end`.
    pub phase: &'static str,
    pub track: u64,
    pub label: String,
    pub score: f32,
    pub top_score: f32,
    /// x1, y1, x2, y2 as fractions of the frame.
    pub rect: [f32; 4],
    /// When the frame it describes arrived from the camera.
    pub frame_time: SystemTime,
    /// The file name of the event's best picture (in the events area).
    pub snapshot: Option<String>,
    /// The first file of the recording it started or joined.
    pub recording: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub at: SystemTime,
    pub kind: EventKind,
}

impl Event {
    /// The topics this event is published under.
    pub fn topics(&self) -> &'static [&'static str] {
        match &self.kind {
            EventKind::CameraStatus { status: CameraStatus::Connected, .. } => {
                &["camera.connected", "camera.status_change"]
            }
            EventKind::CameraStatus { status: CameraStatus::Disconnected, .. } => {
                &["camera.disconnected", "camera.status_change"]
            }
            EventKind::CameraStatus { status: CameraStatus::Error, .. } => &["camera.status_change"],
            EventKind::CameraAdded { .. } => &["camera.added"],
            EventKind::CameraRemoved { .. } => &["camera.removed"],
            EventKind::RecordingStarted { .. } => &["recording.start"],
            EventKind::RecordingStopped { .. } => &["recording.stop"],
            EventKind::RecordingFailed { .. } => &["recording.error"],
            EventKind::SnapshotTaken { .. } => &["snapshot.taken"],
            EventKind::StorageLowSpace { .. } => &["storage.low_space"],
            EventKind::SystemStartup => &["system.startup"],
            EventKind::SystemShutdown => &["system.shutdown"],
            EventKind::Detection { .. } => &["detection"],
            EventKind::DiscoveryFound(_) => &["discovery.found"],
            EventKind::ConfigReloaded { .. } => &["config.reloaded"],
            EventKind::ConfigReloadFailed { .. } => &["config.reload_failed"],
        }
    }

    /// The camera the event concerns, if any (for device filters).
    pub fn device(&self) -> Option<&CameraId> {
        match &self.kind {
            EventKind::CameraStatus { camera, .. }
            | EventKind::CameraAdded { camera, .. }
            | EventKind::CameraRemoved { camera }
            | EventKind::RecordingStarted { camera, .. }
            | EventKind::RecordingStopped { camera, .. }
            | EventKind::RecordingFailed { camera, .. }
            | EventKind::SnapshotTaken { camera, .. }
            | EventKind::Detection { camera, .. } => Some(camera),
            EventKind::DiscoveryFound(note) => note.camera.as_ref(),
            EventKind::StorageLowSpace { .. }
            | EventKind::SystemStartup
            | EventKind::SystemShutdown
            | EventKind::ConfigReloaded { .. }
            | EventKind::ConfigReloadFailed { .. } => None,
        }
    }
}

/// The bus. Cloning shares it.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl EventBus {
    /// `capacity` events are buffered per subscriber before the oldest are dropped.
    pub fn new(capacity: usize) -> EventBus {
        EventBus { tx: broadcast::channel(capacity).0 }
    }

    pub fn publish(&self, kind: EventKind) {
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.tx.send(Arc::new(Event { at: SystemTime::now(), kind }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
