//! Notifications: what a client is sent for an event. Every authenticated client gets `camera_status_update` and
//! `recording_status_update`; a client that subscribed to an event's topic also gets `event {topic, device,
//! timestamp, data}`. Events name cameras by id; the camera's other fields are looked up here, at render time.
//! `data` is also what the event log stores.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Rpc;
use super::session::Session;
use super::wire::{CameraSummary, Streams};
use crate::base::time::unix_secs_f64;
use crate::base::{CameraId, CameraStatus};
use crate::events::{Event, EventKind};

/// `recording_status_update`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RecordingUpdate {
    pub device: String,
    /// `STARTED`, `STOPPED` or `ERROR`.
    pub status: String,
    pub filename: String,
    /// Seconds recorded.
    pub duration: f64,
    pub session_id: String,
    /// `STARTED` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub format: Option<String>,
    /// `STOPPED` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub file_size: Option<u64>,
    /// `ERROR` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub reason: Option<String>,
}

/// `event`: a topic the client subscribed to.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TopicEvent {
    pub topic: String,
    pub device: Option<String>,
    /// Seconds since the epoch, with a fraction.
    pub timestamp: f64,
    pub data: EventData,
}

/// What an event says beyond its topic and camera: neutral facts, no credentials.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EventData {
    CameraStatus {
        status: CameraStatus,
        previous: CameraStatus,
        reason: Option<String>,
    },
    CameraAdded {
        name: String,
        kind: String,
    },
    RecordingStarted {
        session: String,
        filename: String,
        format: String,
    },
    RecordingStopped {
        session: String,
        filename: String,
        duration: f64,
        file_size: u64,
    },
    RecordingFailed {
        session: String,
        filename: String,
        duration: f64,
        reason: String,
    },
    SnapshotTaken {
        filename: String,
        file_size: u64,
    },
    StorageLowSpace {
        available: u64,
        floor: u64,
        freed: u64,
    },
    Detection(DetectionData),
    DiscoveryFound(FoundData),
    ConfigReloaded {
        trigger: String,
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
        restart_required: Vec<String>,
    },
    ConfigReloadFailed {
        trigger: String,
        key: String,
        problem: String,
    },
    None {},
}

/// The `data` of a `discovery.found` event: a stream a periodic scan found for the first time.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FoundData {
    /// The stream's URL, without credentials (what `add_external_stream` takes, with credentials added if needed).
    pub url: String,
    pub name: String,
    /// `onvif` or `rtsp_probe`.
    pub source: String,
    pub codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Whether the scan added it as a camera (`auto_add`); the event's `device` is then the camera's id.
    pub auto_added: bool,
}

/// The `data` of a `detection` event: one tracked object's `new`, `update` or `end`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DetectionData {
    /// `new`, `update` or `end`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's id (`get_event`), the same from `new` to `end`.
    pub event_id: i64,
    pub track_id: u64,
    pub label: String,
    pub score: f64,
    pub top_score: f64,
    /// x1, y1, x2, y2 as fractions of the frame's width and height.
    #[serde(rename = "box")]
    pub rect: [f64; 4],
    /// When the frame arrived from the camera, seconds since the epoch.
    pub frame_time: f64,
    /// The event's best picture (`/files/events/<name>`), once saved.
    pub snapshot: Option<String>,
    /// The first file of the recording the event started or joined.
    pub recording: Option<String>,
}

/// The `data` of an event.
pub fn event_data(event: &Event) -> EventData {
    match &event.kind {
        EventKind::CameraStatus { status, previous, reason, .. } => {
            EventData::CameraStatus { status: *status, previous: *previous, reason: reason.clone() }
        }
        EventKind::CameraAdded { name, source, .. } => {
            EventData::CameraAdded { name: name.clone(), kind: (*source).to_owned() }
        }
        EventKind::RecordingStarted { session, filename, format, .. } => EventData::RecordingStarted {
            session: session.clone(),
            filename: filename.clone(),
            format: (*format).to_owned(),
        },
        EventKind::RecordingStopped { session, filename, duration_s, file_size, .. } => EventData::RecordingStopped {
            session: session.clone(),
            filename: filename.clone(),
            duration: *duration_s,
            file_size: *file_size,
        },
        EventKind::RecordingFailed { session, filename, duration_s, reason, .. } => EventData::RecordingFailed {
            session: session.clone(),
            filename: filename.clone(),
            duration: *duration_s,
            reason: reason.clone(),
        },
        EventKind::SnapshotTaken { filename, file_size, .. } => {
            EventData::SnapshotTaken { filename: filename.clone(), file_size: *file_size }
        }
        EventKind::StorageLowSpace { available, floor, freed } => {
            EventData::StorageLowSpace { available: *available, floor: *floor, freed: *freed }
        }
        EventKind::Detection { note, .. } => EventData::Detection(DetectionData {
            kind: note.phase.to_owned(),
            event_id: note.id,
            track_id: note.track,
            label: note.label.clone(),
            score: round3(note.score),
            top_score: round3(note.top_score),
            rect: note.rect.map(round3),
            frame_time: unix_secs_f64(note.frame_time),
            snapshot: note.snapshot.clone(),
            recording: note.recording.clone(),
        }),
        EventKind::DiscoveryFound(note) => EventData::DiscoveryFound(FoundData {
            url: note.url.clone(),
            name: note.name.clone(),
            source: note.source.to_owned(),
            codec: note.codec.clone(),
            width: note.width,
            height: note.height,
            auto_added: note.camera.is_some(),
        }),
        EventKind::ConfigReloaded { trigger, added, removed, changed, restart_required } => EventData::ConfigReloaded {
            trigger: (*trigger).to_owned(),
            added: added.clone(),
            removed: removed.clone(),
            changed: changed.clone(),
            restart_required: restart_required.clone(),
        },
        EventKind::ConfigReloadFailed { trigger, key, problem } => {
            EventData::ConfigReloadFailed { trigger: (*trigger).to_owned(), key: key.clone(), problem: problem.clone() }
        }
        EventKind::CameraRemoved { .. } | EventKind::SystemStartup | EventKind::SystemShutdown => EventData::None {},
    }
}

/// A score or coordinate to three decimals: more is noise, and f32's tail would show as 0.6999999881.
pub fn round3(v: impl Into<f64>) -> f64 {
    (v.into() * 1000.0).round() / 1000.0
}

/// The notifications `session` should get for `event`, as JSON-RPC frames. The frames are the same for every
/// connection: they are rendered once per event (see [`Renders`]), and each connection picks its own.
pub fn render(rpc: &Rpc, session: &Session, event: &Arc<Event>) -> Vec<String> {
    let mut out = Vec::new();
    if session.principal().is_none() {
        return out;
    }
    let frames = rpc.renders.get(event, || Frames::of(rpc, event));
    out.extend(frames.camera.iter().cloned());
    out.extend(frames.recording.iter().cloned());
    let subs = session.subscriptions.lock();
    let Some((_, note)) = frames.topics.iter().find(|(t, _)| subs.topics.contains(*t)) else { return out };
    if let (Some(wanted), Some(device)) = (&subs.device, event.device())
        && wanted != device.as_str()
    {
        return out;
    }
    out.push(note.clone());
    out
}

/// Every frame one event can become, whoever gets it.
#[derive(Debug)]
pub struct Frames {
    camera: Option<String>,
    recording: Option<String>,
    /// The `event` frame under each of the event's topics, in the event's order.
    topics: Vec<(&'static str, String)>,
}

impl Frames {
    fn of(rpc: &Rpc, event: &Event) -> Frames {
        let camera = match &event.kind {
            EventKind::CameraStatus { camera, name, status, .. } => {
                Some(frame("camera_status_update", &camera_update(rpc, camera, name, *status)))
            }
            _ => None,
        };
        let recording = recording_update(&event.kind).map(|update| frame("recording_status_update", &update));
        let topics = event
            .topics()
            .iter()
            .map(|topic| {
                let note = TopicEvent {
                    topic: (*topic).to_owned(),
                    device: event.device().map(CameraId::to_string),
                    timestamp: unix_secs_f64(event.at),
                    data: event_data(event),
                };
                (*topic, frame("event", &note))
            })
            .collect();
        Frames { camera, recording, topics }
    }
}

/// The frames of the latest events, shared by every connection: with thousands of clients, an event rendered per
/// connection (a camera summary looked up and serialised each time) kept the runtime busy for as long as it took
/// them all, and every request waited behind that burst. An entry is found by the event's allocation, held weakly:
/// once every connection has dropped an event its entry can no longer match.
#[derive(Debug, Default)]
pub struct Renders {
    latest: Mutex<VecDeque<(Weak<Event>, Arc<Frames>)>>,
}

/// Events whose frames are kept; a connection further behind renders its own (and lags soon after).
const RENDERS_KEPT: usize = 64;

impl Renders {
    fn get(&self, event: &Arc<Event>, make: impl FnOnce() -> Frames) -> Arc<Frames> {
        if let Some(frames) = self.find(event) {
            return frames;
        }
        // Rendered outside the lock (it looks up the camera); two connections racing both render, one is kept.
        let frames = Arc::new(make());
        let mut latest = self.latest.lock();
        if latest.len() >= RENDERS_KEPT {
            latest.pop_front();
        }
        latest.push_back((Arc::downgrade(event), frames.clone()));
        frames
    }

    fn find(&self, event: &Arc<Event>) -> Option<Arc<Frames>> {
        let latest = self.latest.lock();
        latest
            .iter()
            .rev()
            .find(|(weak, _)| weak.upgrade().is_some_and(|e| Arc::ptr_eq(&e, event)))
            .map(|(_, frames)| frames.clone())
    }
}

/// A camera's summary with the status of its event (not of now). A camera removed since has no resolution or
/// streams left to show.
fn camera_update(rpc: &Rpc, id: &CameraId, name: &str, status: CameraStatus) -> CameraSummary {
    match rpc.app.cameras().get(id) {
        Some(camera) => super::wire::summary_with(&camera, status, &camera.hub.stats(), rpc.app.streams()),
        None => CameraSummary {
            device: id.to_string(),
            status,
            name: name.to_owned(),
            resolution: String::new(),
            fps: 0,
            streams: Streams::default(),
        },
    }
}

/// The `recording_status_update` of a recording event.
fn recording_update(kind: &EventKind) -> Option<RecordingUpdate> {
    let base = |camera: &CameraId, status: &str, filename: &str, duration: f64, session: &str| RecordingUpdate {
        device: camera.to_string(),
        status: status.to_owned(),
        filename: filename.to_owned(),
        duration,
        session_id: session.to_owned(),
        format: None,
        file_size: None,
        reason: None,
    };
    Some(match kind {
        EventKind::RecordingStarted { camera, session, filename, format } => {
            RecordingUpdate { format: Some((*format).to_owned()), ..base(camera, "STARTED", filename, 0.0, session) }
        }
        EventKind::RecordingStopped { camera, session, filename, duration_s, file_size } => {
            RecordingUpdate { file_size: Some(*file_size), ..base(camera, "STOPPED", filename, *duration_s, session) }
        }
        EventKind::RecordingFailed { camera, session, filename, duration_s, reason } => {
            RecordingUpdate { reason: Some(reason.clone()), ..base(camera, "ERROR", filename, *duration_s, session) }
        }
        _ => return None,
    })
}

/// A JSON-RPC notification frame.
pub fn frame(method: &str, params: &impl Serialize) -> String {
    #[derive(Serialize)]
    struct Notification<'a, P> {
        jsonrpc: &'static str,
        method: &'a str,
        params: &'a P,
    }
    serde_json::to_string(&Notification { jsonrpc: "2.0", method, params })
        .expect("notifications are plain data, which always serialize")
}
