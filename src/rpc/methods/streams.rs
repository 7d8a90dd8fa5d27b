//! Streaming methods: `start_streaming`, `stop_streaming`, `get_stream_url`, `get_stream_status`, `get_streams`,
//! `create_media_token` (a short-lived credential for HLS and playback URLs).
//! Every camera is published (RTSP and WHEP) from the moment it exists; `stop_streaming` withdraws one (readers
//! disconnected, new ones refused) until `start_streaming` publishes it again (or camhub restarts).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::system::StreamMetrics;
use super::{DeviceParams, NoParams, find_camera};
use crate::base::CameraStatus;
use crate::base::time::iso;
use crate::camera::Camera;
use crate::error::Result;
use crate::publish::Publication;
use crate::rpc::Rpc;
use crate::rpc::session::Session;

/// What a stream is called and where it is, shared by the streaming results.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StreamIdentity {
    pub device: String,
    pub stream_name: String,
    pub stream_url: String,
    pub webrtc_url: String,
}

impl StreamIdentity {
    fn of(rpc: &Rpc, camera: &Camera) -> StreamIdentity {
        let urls = rpc.app.streams().urls(&camera.id);
        StreamIdentity {
            device: camera.id.to_string(),
            stream_name: camera.id.to_string(),
            stream_url: urls.rtsp,
            webrtc_url: urls.webrtc,
        }
    }
}

/// Published, with a connected camera, over at least one protocol.
fn ready(rpc: &Rpc, camera: &Camera) -> bool {
    let streams = rpc.app.streams();
    streams.is_published(&camera.id)
        && camera.state().status == CameraStatus::Connected
        && (streams.rtsp_enabled() || streams.webrtc_enabled())
}

/// Whether a camera is published (`get_streams`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Publishing {
    Started,
    Stopped,
}

/// `start_streaming`'s answer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Published {
    Started,
}

/// `stop_streaming`'s answer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Withdrawn {
    Stopped,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StreamStarted {
    #[serde(flatten)]
    pub stream: StreamIdentity,
    pub status: Published,
    pub start_time: String,
}

pub async fn start(rpc: Arc<Rpc>, _: Arc<Session>, p: DeviceParams) -> Result<StreamStarted> {
    let camera = find_camera(&rpc, &p.device)?;
    let since = rpc.app.streams().start_streaming(&camera.id);
    Ok(StreamStarted { stream: StreamIdentity::of(&rpc, &camera), status: Published::Started, start_time: iso(since) })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StreamStopped {
    #[serde(flatten)]
    pub stream: StreamIdentity,
    pub status: Withdrawn,
    pub start_time: String,
    pub end_time: String,
    /// Seconds it was published.
    pub duration: f64,
}

pub async fn stop(rpc: Arc<Rpc>, _: Arc<Session>, p: DeviceParams) -> Result<StreamStopped> {
    let camera = find_camera(&rpc, &p.device)?;
    let since = rpc.app.streams().stop_streaming(&camera.id).await?;
    let end = SystemTime::now();
    let duration = end.duration_since(since).unwrap_or_default().as_secs_f64();
    Ok(StreamStopped {
        stream: StreamIdentity::of(&rpc, &camera),
        status: Withdrawn::Stopped,
        start_time: iso(since),
        end_time: iso(end),
        duration: (duration * 1000.0).round() / 1000.0,
    })
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Readiness {
    Ready,
    NotReady,
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StreamUrl {
    #[serde(flatten)]
    pub stream: StreamIdentity,
    pub available: bool,
    pub active_consumers: usize,
    pub stream_status: Readiness,
}

pub async fn url(rpc: Arc<Rpc>, _: Arc<Session>, p: DeviceParams) -> Result<StreamUrl> {
    let camera = find_camera(&rpc, &p.device)?;
    let available = ready(&rpc, &camera);
    let stream_status = match (available, camera.state().status) {
        (true, _) => Readiness::Ready,
        (false, CameraStatus::Error) => Readiness::Error,
        _ => Readiness::NotReady,
    };
    Ok(StreamUrl {
        stream: StreamIdentity::of(&rpc, &camera),
        available,
        active_consumers: rpc.app.streams().counters(&camera.id).readers(),
        stream_status,
    })
}

/// A stream's state, in the contract's words.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamState {
    /// Published, and its camera delivers video.
    Active,
    /// Withdrawn by `stop_streaming`.
    Inactive,
    /// Published, and its camera is in error.
    Error,
    /// Published, waiting for its camera to connect.
    Starting,
    Stopping,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StreamFigures {
    pub bytes_sent: u64,
    pub frames_sent: u64,
    pub bitrate: u64,
    /// Frames per second, rounded.
    pub fps: u32,
    pub readers: usize,
    pub rtsp_readers: usize,
    pub webrtc_sessions: usize,
    /// Who asked for the camera's HLS stream in the last 5 s.
    pub hls_viewers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StreamStatus {
    #[serde(flatten)]
    pub stream: StreamIdentity,
    pub status: StreamState,
    pub ready: bool,
    pub metrics: StreamFigures,
    /// When it was published; `null` while withdrawn.
    pub start_time: Option<String>,
}

pub async fn status(rpc: Arc<Rpc>, _: Arc<Session>, p: DeviceParams) -> Result<StreamStatus> {
    let camera = find_camera(&rpc, &p.device)?;
    let streams = rpc.app.streams();
    let c = streams.counters(&camera.id);
    let stats = camera.hub.stats();
    let camera_status = camera.state().status;
    let connected = camera_status == CameraStatus::Connected;
    let (status, start_time) = match streams.publication(&camera.id) {
        Publication::Started { since } => (
            match camera_status {
                CameraStatus::Connected => StreamState::Active,
                CameraStatus::Error => StreamState::Error,
                CameraStatus::Disconnected => StreamState::Starting,
            },
            Some(iso(since)),
        ),
        Publication::Stopped { .. } => (StreamState::Inactive, None),
    };
    Ok(StreamStatus {
        stream: StreamIdentity::of(&rpc, &camera),
        status,
        ready: ready(&rpc, &camera),
        metrics: StreamFigures {
            bytes_sent: c.bytes_sent.load(Relaxed),
            frames_sent: c.frames_sent.load(Relaxed),
            bitrate: if connected { stats.bitrate_bps } else { 0 },
            fps: if connected { stats.fps.round() as u32 } else { 0 },
            readers: c.readers(),
            rtsp_readers: c.rtsp_readers.load(Relaxed),
            webrtc_sessions: c.webrtc_sessions.load(Relaxed),
            hls_viewers: c.hls_viewers.load(Relaxed),
        },
        start_time,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StreamEntry {
    pub name: String,
    pub device: String,
    /// `rtsp` or `v4l2`.
    pub source: String,
    pub status: Publishing,
    pub ready: bool,
    pub readers: usize,
    pub bytes_sent: u64,
    pub rtsp_url: String,
    pub webrtc_url: String,
}

pub async fn list(rpc: Arc<Rpc>, _: Arc<Session>, _: NoParams) -> Result<Vec<StreamEntry>> {
    let streams = rpc.app.streams();
    Ok(rpc
        .app
        .cameras()
        .list()
        .iter()
        .map(|camera| {
            let urls = streams.urls(&camera.id);
            let c = streams.counters(&camera.id);
            StreamEntry {
                name: camera.id.to_string(),
                device: camera.id.to_string(),
                source: camera.source.kind().to_owned(),
                status: if streams.is_published(&camera.id) { Publishing::Started } else { Publishing::Stopped },
                ready: ready(&rpc, camera),
                readers: c.readers(),
                bytes_sent: c.bytes_sent.load(Relaxed),
                rtsp_url: urls.rtsp,
                webrtc_url: urls.webrtc,
            }
        })
        .collect())
}

/// `get_metrics.stream_metrics`.
pub fn metrics(rpc: &Rpc) -> StreamMetrics {
    let streams = rpc.app.streams();
    let mut m = StreamMetrics {
        active_streams: 0,
        total_streams: 0,
        total_viewers: 0,
        webrtc_sessions: streams.whep.count(),
        bytes_sent: 0,
    };
    for camera in rpc.app.cameras().list() {
        if !streams.is_published(&camera.id) {
            continue;
        }
        m.total_streams += 1;
        m.active_streams += usize::from(camera.state().status == CameraStatus::Connected);
        let c = streams.counters(&camera.id);
        m.total_viewers += c.readers();
        m.bytes_sent += c.bytes_sent.load(Relaxed);
    }
    m
}

/// `create_media_token`'s params: the camera, and how long the token lives (seconds; 300 when absent).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaTokenParams {
    pub device: String,
    pub ttl_s: Option<u64>,
}

/// A media token: `?token=` on the camera's HLS and playback URLs, for players that cannot send a header.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MediaToken {
    pub device: String,
    pub token: String,
    /// When it stops opening anything (ISO 8601).
    pub expires_at: String,
    pub ttl_s: u64,
}

/// The longest a media token may live: it is a credential in a URL.
const MEDIA_TOKEN_MAX_TTL_S: u64 = 3600;

pub async fn media_token(rpc: Arc<Rpc>, _: Arc<Session>, p: MediaTokenParams) -> Result<MediaToken> {
    let ttl_s = match p.ttl_s {
        None => 300,
        Some(t @ 10..=MEDIA_TOKEN_MAX_TTL_S) => t,
        Some(_) => return Err(crate::error::Error::invalid_param("ttl_s", "seconds, at least 10 and at most 3600")),
    };
    let camera = find_camera(&rpc, &p.device)?;
    let (token, exp) = rpc.app.media_token(camera.id.as_str(), std::time::Duration::from_secs(ttl_s))?;
    let expires_at = iso(std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp));
    Ok(MediaToken { device: camera.id.to_string(), token, expires_at, ttl_s })
}
