//! Detection methods: `list_events`, `get_event`, `set_detection`, `get_inference_status`.

use std::sync::Arc;
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PageParams, find_camera, page};
use crate::base::CameraId;
use crate::base::time::{from_millis, iso, millis};
use crate::detection::{CameraDetection, EventRow};
use crate::error::{Error, Result};
use crate::rpc::Rpc;
use crate::rpc::notify::round3;
use crate::rpc::session::Session;
use crate::storage::db::DetectionFilter;
use crate::storage::files::{Area, download_url};

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListEventsParams {
    pub device: Option<String>,
    pub label: Option<String>,
    /// Events that started at or after this time (RFC 3339, UTC: `2026-12-01T14:02:00Z`).
    pub since: Option<String>,
    /// Events that started before this time.
    pub until: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// A detection event: one tracked object from `new` to `end`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    pub id: i64,
    pub device: String,
    pub label: String,
    /// The last score, and the best.
    pub score: f64,
    pub top_score: f64,
    /// The box in the best frame: x1, y1, x2, y2 as fractions of the frame.
    #[serde(rename = "box")]
    pub rect: [f64; 4],
    pub track_id: i64,
    pub started_at: String,
    /// When the best frame arrived from the camera.
    pub frame_time: String,
    /// `null` while the object is in view.
    pub ended_at: Option<String>,
    /// The best frame as a JPEG of the camera's size (file name, and where to download it).
    pub snapshot: Option<String>,
    pub snapshot_url: Option<String>,
    /// The first file of the recording the event started or joined.
    pub recording: Option<String>,
}

impl From<&EventRow> for Event {
    fn from(r: &EventRow) -> Event {
        Event {
            id: r.id,
            device: r.camera.clone(),
            label: r.label.clone(),
            score: round3(r.score),
            top_score: round3(r.top_score),
            rect: r.rect.map(round3),
            track_id: r.track,
            started_at: iso(from_millis(r.started_at)),
            frame_time: iso(from_millis(r.frame_time)),
            ended_at: r.ended_at.map(|t| iso(from_millis(t))),
            snapshot: r.snapshot.clone(),
            snapshot_url: r.snapshot.as_deref().map(|s| download_url(Area::Events, s)),
            recording: r.recording.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EventList {
    pub events: Vec<Event>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// A time parameter: RFC 3339 in UTC, to the millisecond.
fn time(param: &'static str, value: Option<&str>) -> Result<Option<i64>> {
    value
        .map(|v| {
            humantime::parse_rfc3339_weak(v)
                .map(millis)
                .map_err(|_| Error::invalid_param(param, "an RFC 3339 time in UTC, e.g. 2026-12-01T14:02:00Z"))
        })
        .transpose()
}

pub async fn list(rpc: Arc<Rpc>, _: Arc<Session>, p: ListEventsParams) -> Result<EventList> {
    let (limit, offset) = page(&PageParams { limit: p.limit, offset: p.offset })?;
    let camera = p
        .device
        .as_deref()
        .map(|d| CameraId::parse(d).map_err(|rule| Error::invalid_param("device", rule)))
        .transpose()?;
    if p.label.as_deref().is_some_and(|l| l.is_empty() || l.len() > 64) {
        return Err(Error::invalid_param("label", "1 to 64 characters"));
    }
    let (since, until) = (time("since", p.since.as_deref())?, time("until", p.until.as_deref())?);
    if let (Some(s), Some(u)) = (since, until)
        && u < s
    {
        return Err(Error::invalid_param("until", "not before since"));
    }
    let filter = DetectionFilter { camera: camera.map(|c| c.to_string()), label: p.label, since, until };
    let (rows, total) = rpc.app.detections().list(&filter, limit, offset).await?;
    Ok(EventList { events: rows.iter().map(Event::from).collect(), total, limit, offset })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    pub id: i64,
}

pub async fn get(rpc: Arc<Rpc>, _: Arc<Session>, p: EventParams) -> Result<Event> {
    if p.id < 1 {
        return Err(Error::invalid_param("id", "a positive event id"));
    }
    Ok(Event::from(&rpc.app.detections().get(p.id).await?))
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDetectionParams {
    pub device: String,
    pub enabled: bool,
    /// Labels to report (of the camera's model); absent keeps the current ones, empty means all.
    pub labels: Option<Vec<String>>,
    /// Frames per second given to the model while something moves (0.1 to 30).
    pub fps: Option<f64>,
}

/// A camera's detection and its figures.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Detection {
    pub device: String,
    pub enabled: bool,
    pub model: String,
    /// The configured rate while something moves.
    pub fps: f64,
    /// Inferences per second over the last five seconds.
    pub actual_fps: f64,
    pub labels: Vec<String>,
    /// `keyframes` (still picture: keyframes decoded, no inference), `all` (moving: every frame decoded) or `off`.
    pub decode_mode: String,
    pub frames_decoded: u64,
    pub frames_inferred: u64,
    /// Frames lost because inference or the decoder could not keep up.
    pub dropped_frames: u64,
    /// Frame arrival to detection result, ms.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

impl From<CameraDetection> for Detection {
    fn from(c: CameraDetection) -> Detection {
        let round = |v: f64| (v * 10.0).round() / 10.0;
        Detection {
            device: c.camera.to_string(),
            enabled: c.enabled,
            model: c.model,
            fps: c.target_fps,
            actual_fps: round(c.fps),
            labels: c.labels,
            decode_mode: c.decode_mode.to_owned(),
            frames_decoded: c.frames_decoded,
            frames_inferred: c.frames_inferred,
            dropped_frames: c.dropped,
            latency_p50_ms: round(c.latency_p50_ms),
            latency_p99_ms: round(c.latency_p99_ms),
        }
    }
}

pub async fn set(rpc: Arc<Rpc>, _: Arc<Session>, p: SetDetectionParams) -> Result<Detection> {
    if let Some(fps) = p.fps
        && !(0.1..=30.0).contains(&fps)
    {
        return Err(Error::invalid_param("fps", "between 0.1 and 30"));
    }
    if let Some(labels) = &p.labels
        && (labels.len() > 100 || labels.iter().any(|l| l.is_empty() || l.chars().count() > 64))
    {
        return Err(Error::invalid_param("labels", "at most 100 labels of 1 to 64 characters"));
    }
    let camera = find_camera(&rpc, &p.device)?;
    Ok(rpc.app.detections().set(&camera, p.enabled, p.labels, p.fps).await?.into())
}

/// A model as status reports it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModelInfo {
    pub name: String,
    /// `boxes`, `yolov8`, `yolov5` or `blazeface`.
    pub kind: String,
    /// Where it runs: `cpu`, `cuda` or `tensorrt`.
    pub provider: String,
    /// `WIDTHxHEIGHT`.
    pub input: String,
    pub labels: usize,
    pub runs: u64,
    /// Time in the model per frame, over the recent runs.
    pub inference_p50_ms: f64,
    pub inference_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InferenceStatus {
    pub available: bool,
    /// Why detection is unavailable; `null` when it is available.
    pub reason: Option<String>,
    /// The execution provider in use (`cpu`, `cuda`, `tensorrt`); `null` without an engine.
    pub provider: Option<String>,
    pub threads: usize,
    /// Frames waiting for inference, and how many may wait.
    pub queue_depth: u64,
    pub queue_capacity: usize,
    /// Frames dropped because the queue was full, since start.
    pub dropped_frames: u64,
    pub models: Vec<ModelInfo>,
    /// Cameras with detection on.
    pub cameras: Vec<Detection>,
    pub timestamp: String,
}

pub async fn status(rpc: Arc<Rpc>, _: Arc<Session>, _: super::NoParams) -> Result<InferenceStatus> {
    let s = rpc.app.detections().status();
    Ok(InferenceStatus {
        available: s.unavailable.is_none(),
        reason: s.unavailable,
        provider: s.provider.map(str::to_owned),
        threads: s.threads,
        queue_depth: s.queue.0,
        queue_capacity: s.queue.1,
        dropped_frames: s.dropped,
        models: s
            .models
            .into_iter()
            .map(|m| ModelInfo {
                name: m.name,
                kind: m.kind.as_str().to_owned(),
                provider: m.provider.as_str().to_owned(),
                input: format!("{}x{}", m.input.0, m.input.1),
                labels: m.labels,
                runs: m.runs,
                inference_p50_ms: round3(m.p50_ms),
                inference_p99_ms: round3(m.p99_ms),
            })
            .collect(),
        cameras: s.cameras.into_iter().map(Detection::from).collect(),
        timestamp: iso(SystemTime::now()),
    })
}
