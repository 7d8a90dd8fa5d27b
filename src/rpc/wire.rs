//! Wire types several methods and notifications share: a camera's summary (`get_camera_list`,
//! `camera_status_update`), its detail (`get_camera_status`), streams, modes and capabilities, built from application
//! state here so the application never shapes JSON. Nothing here carries a credential or a device path.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::base::CameraStatus;
use crate::camera::Camera;
use crate::devices::v4l2::{Handling, fps};
use crate::media::hub::StreamStats;
use crate::publish::Publisher;

/// Where a camera can be watched. Empty when it is not published (`stop_streaming`) or the protocol is disabled.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Streams {
    pub rtsp: String,
    pub webrtc: String,
    pub hls: String,
}

impl Streams {
    pub fn of(camera: &Camera, publish: &Publisher) -> Streams {
        if !publish.is_published(&camera.id) {
            return Streams::default();
        }
        let urls = publish.urls(&camera.id);
        Streams { rtsp: urls.rtsp, webrtc: urls.webrtc, hls: urls.hls }
    }
}

/// The camera summary of `get_camera_list` and `camera_status_update`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CameraSummary {
    pub device: String,
    pub status: CameraStatus,
    pub name: String,
    pub resolution: String,
    /// Frames per second, rounded: the contract's clients read an integer.
    pub fps: u32,
    pub streams: Streams,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CameraMetrics {
    /// RTP bytes sent to RTSP readers and WebRTC peers (each packet once per reader).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Viewers now: RTSP sessions plus WebRTC sessions.
    pub readers: usize,
    /// Consumers of the camera's stream inside camhub (recording, snapshots, publishing pipelines).
    pub consumers: usize,
    /// Seconds since the current connection delivered its first frame; 0 when disconnected.
    pub uptime: u64,
    pub frames: u64,
    pub bitrate: u64,
    pub reconnects: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Capabilities {
    pub formats: Vec<String>,
    pub resolutions: Vec<String>,
}

/// One pixel format at one size, with its frame rates (`get_camera_capabilities.modes`), exact to 0.01.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModeOption {
    pub format: String,
    pub resolution: String,
    pub fps: Vec<f64>,
}

/// How a local device's frames reach the hub.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The device sends H.264, carried as it is.
    Passthrough,
    /// camhub encodes the device's raw or MJPEG frames.
    Encoded,
}

/// What a local device is streaming (`get_camera_status.mode`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModeInUse {
    /// The device's pixel format (V4L2 FourCC).
    pub format: String,
    pub resolution: String,
    pub fps: f64,
    pub encoding: Encoding,
}

/// `get_camera_status`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CameraDetail {
    #[serde(flatten)]
    pub summary: CameraSummary,
    pub metrics: CameraMetrics,
    pub capabilities: Capabilities,
    /// A local device's mode in use; `null` for network cameras and devices not streaming.
    pub mode: Option<ModeInUse>,
    /// `rtsp` or `v4l2`.
    pub source_type: String,
    pub last_error: Option<String>,
}

fn resolution(stats: &StreamStats) -> String {
    if stats.width > 0 && stats.height > 0 { format!("{}x{}", stats.width, stats.height) } else { String::new() }
}

/// The summary, with `status` as given (a notification reports the status of its event, not of now).
pub fn summary_with(camera: &Camera, status: CameraStatus, stats: &StreamStats, publish: &Publisher) -> CameraSummary {
    let connected = status == CameraStatus::Connected;
    CameraSummary {
        device: camera.id.to_string(),
        status,
        name: camera.name.clone(),
        resolution: resolution(stats),
        fps: if connected { stats.fps.round() as u32 } else { 0 },
        streams: Streams::of(camera, publish),
    }
}

pub fn summary(camera: &Camera, publish: &Publisher) -> CameraSummary {
    summary_with(camera, camera.state().status, &camera.hub.stats(), publish)
}

pub fn detail(camera: &Camera, publish: &Publisher) -> CameraDetail {
    let state = camera.state();
    let stats = camera.hub.stats();
    let capabilities = capabilities(&modes(camera, &stats));
    let mode = camera.source.device().and_then(|d| d.in_use()).map(|m| ModeInUse {
        resolution: format!("{}x{}", m.width, m.height),
        fps: round2(fps(m.rate)),
        encoding: if m.handling == Handling::H264 { Encoding::Passthrough } else { Encoding::Encoded },
        format: m.format,
    });
    let counters = publish.counters(&camera.id);
    CameraDetail {
        mode,
        metrics: CameraMetrics {
            bytes_sent: counters.bytes_sent.load(std::sync::atomic::Ordering::Relaxed),
            bytes_received: stats.bytes,
            readers: counters.readers(),
            consumers: stats.consumers,
            uptime: state.connected_since.map(|t| t.elapsed().as_secs()).unwrap_or(0),
            frames: stats.frames,
            bitrate: if state.status == CameraStatus::Connected { stats.bitrate_bps } else { 0 },
            reconnects: state.reconnects,
        },
        summary: summary_with(camera, state.status, &stats, publish),
        capabilities,
        source_type: camera.source.kind().to_owned(),
        last_error: state.last_error,
    }
}

/// The formats and sizes of a camera's modes (see [`modes`]), in order of first appearance and smallest first.
pub fn capabilities(modes: &[ModeOption]) -> Capabilities {
    let mut formats: Vec<String> = Vec::new();
    let mut sizes: Vec<(u32, u32)> = Vec::new();
    for m in modes {
        if !formats.contains(&m.format) {
            formats.push(m.format.clone());
        }
        let size = parse_resolution(&m.resolution);
        if !sizes.contains(&size) {
            sizes.push(size);
        }
    }
    sizes.sort_by_key(|&(w, h)| (w as u64 * h as u64, w));
    Capabilities { formats, resolutions: sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect() }
}

/// Every mode the camera offers (a local device: what it offers, known while unplugged too) or shows (a network
/// camera: the one it has been seen to send).
pub fn modes(camera: &Camera, stats: &StreamStats) -> Vec<ModeOption> {
    if let Some(device) = camera.source.device() {
        return device
            .last_probe()
            .map(|p| p.modes)
            .unwrap_or_default()
            .into_iter()
            .map(|m| ModeOption {
                resolution: m.resolution(),
                fps: m.rates.iter().map(|r| round2(fps(*r))).collect(),
                format: m.format,
            })
            .collect();
    }
    match (stats.codec, resolution(stats)) {
        (Some(codec), res) if !res.is_empty() => vec![ModeOption {
            format: codec.as_str().to_owned(),
            resolution: res,
            fps: if stats.fps > 0.0 { vec![stats.fps.round()] } else { vec![] },
        }],
        _ => vec![],
    }
}

fn parse_resolution(r: &str) -> (u32, u32) {
    r.split_once('x').map(|(w, h)| (w.parse().unwrap_or(0), h.parse().unwrap_or(0))).unwrap_or((0, 0))
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
