//! Configuration: a TOML file plus `CAMHUB_*` environment overrides, read into raw serde structs, then validated into
//! the typed [`Config`] the rest of camhub uses. Nothing here starts anything; a bad value is a [`ConfigError`] that
//! names the key, and the binary turns it into exit code 64.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::base::CameraId;

/// A configuration problem: the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { key: key.into(), problem: problem.into() }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub monitor: MonitorConfig,
    pub recording: RecordingConfig,
    pub snapshots: SnapshotConfig,
    pub rtsp_server: RtspServerConfig,
    pub webrtc: WebrtcConfig,
    pub hls: HlsConfig,
    pub rtmp: PushListener,
    pub srt: PushListener,
    pub cameras: Vec<CameraConfig>,
    pub v4l2: V4l2Config,
    /// `None` when no `[inference]` section is given: detection is off.
    pub inference: Option<InferenceConfig>,
    pub discovery: DiscoveryConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
}

/// `[telemetry]`: trace export over OTLP/HTTP. No `otlp_endpoint`, no exporter: spans stay in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// The collector's base URL (`http://HOST:4318`); traces go to `/v1/traces` under it.
    pub otlp_endpoint: Option<url::Url>,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// The share of new traces kept (0.0..=1.0); a trace whose parent came from a client follows the client's choice.
    pub sampling_ratio: f64,
}

/// What the service logs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `camhub=debug,warn`); `RUST_LOG`, when set, wins over it.
    pub level: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// WebSocket at `ws://LISTEN/ws`; the HTTP endpoints share the listener.
    pub listen: SocketAddr,
    /// Concurrent WebSocket connections; further upgrades get HTTP 503.
    pub max_connections: usize,
    /// Largest request frame; a larger one gets -32600 and the connection lives on.
    pub max_message_bytes: usize,
    /// Sustained requests per second per connection (token bucket refill rate).
    pub rate_limit_per_sec: u32,
    /// Requests a connection may burst above the sustained rate.
    pub rate_limit_burst: u32,
    /// Notifications a slow client may have queued before the oldest are dropped.
    pub notification_queue: usize,
    /// How long shutdown waits for cameras and connections to finish.
    pub shutdown_grace: Duration,
    /// Reload when the config file changes on disk (SIGHUP and `reload_config` reload either way).
    pub watch_config: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// HS256 secret; `None` means a random secret kept in the data dir.
    pub jwt_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// Data dir: the SQLite file, `recordings/` and `snapshots/`.
    pub root: PathBuf,
    /// Free space camhub defends by deleting the oldest recordings; below it recording stops.
    pub min_free_bytes: u64,
    /// The retention policy in force until one is set through the API.
    pub retention: RetentionConfig,
    /// How often the retention task runs.
    pub retention_interval: Duration,
    /// Where recordings go (`[[storage.roots]]`), in order of preference; with none given, `<root>/recordings` with
    /// `min_free_bytes` is the one root, as it always was.
    pub roots: Vec<RootConfig>,
}

/// One storage root for recordings (a disk, usually): its directory and the free space kept on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootConfig {
    pub path: PathBuf,
    pub min_free_bytes: u64,
}

impl StorageConfig {
    /// The recordings roots in force: the configured ones, or `<root>/recordings` alone.
    pub fn recording_roots(&self) -> Vec<RootConfig> {
        if self.roots.is_empty() {
            vec![RootConfig { path: self.root.join("recordings"), min_free_bytes: self.min_free_bytes }]
        } else {
            self.roots.clone()
        }
    }
}

/// What to keep. `None` limits are off.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct RetentionConfig {
    pub policy_type: RetentionKind,
    pub max_age_days: Option<f64>,
    pub max_size_gb: Option<f64>,
    pub enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetentionKind {
    Age,
    Size,
    Manual,
}

/// Container of recordings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingFormat {
    /// Fragmented MP4: a crash loses at most one fragment.
    Fmp4,
    /// Plain MP4 with a reserved moov updated every second, so a crash leaves a playable file.
    Mp4,
    Mkv,
}

impl RecordingFormat {
    pub const ALL: [RecordingFormat; 3] = [RecordingFormat::Fmp4, RecordingFormat::Mp4, RecordingFormat::Mkv];

    pub fn parse(s: &str) -> Option<RecordingFormat> {
        match s {
            "fmp4" => Some(RecordingFormat::Fmp4),
            "mp4" => Some(RecordingFormat::Mp4),
            "mkv" => Some(RecordingFormat::Mkv),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RecordingFormat::Fmp4 => "fmp4",
            RecordingFormat::Mp4 => "mp4",
            RecordingFormat::Mkv => "mkv",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            RecordingFormat::Fmp4 | RecordingFormat::Mp4 => "mp4",
            RecordingFormat::Mkv => "mkv",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordingConfig {
    pub format: RecordingFormat,
    /// Length of each segment file; each starts on a keyframe.
    pub segment: Duration,
    /// How much of what came before `start_recording` the recording begins with.
    pub pre_roll: Duration,
    /// fMP4 fragment length: the most a crash can lose.
    pub fragment: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotConfig {
    /// JPEG quality, 1..=100.
    pub quality: u8,
    /// Scale to this size; `None` keeps the camera's.
    pub size: Option<(u32, u32)>,
}

/// camhub's own RTSP server, which republishes every camera at `rtsp://PUBLIC_HOST:PORT/<id>`.
#[derive(Debug, Clone, PartialEq)]
pub struct RtspServerConfig {
    pub enabled: bool,
    /// `IP:PORT` the server binds; loopback by default.
    pub listen: SocketAddr,
    /// Host in the published `rtsp://` and WHEP URLs; `None` means the listen address (the RTSP server's for RTSP URLs,
    /// the HTTP listener's for WHEP URLs).
    pub public_host: Option<String>,
    /// Readers must authenticate (RTSP Basic): a configured user, or any user name with a valid API key or JWT as the
    /// password.
    pub require_auth: bool,
    pub users: Vec<RtspUser>,
}

/// A listener publishers push to: RTMP (`rtmp://HOST:PORT/live/<stream key>`, TCP) or SRT
/// (`srt://HOST:PORT?streamid=<stream key>`, UDP).
#[derive(Debug, Clone, PartialEq)]
pub struct PushListener {
    pub enabled: bool,
    /// `IP:PORT`; loopback by default.
    pub listen: SocketAddr,
}

/// A user of the RTSP server. `Debug` never shows the password.
#[derive(Clone, PartialEq)]
pub struct RtspUser {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for RtspUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RtspUser {{ user: {:?}, password: \"..\" }}", self.user)
    }
}

/// Low-latency HLS (`/hls/<id>/index.m3u8` on the HTTP listener): a camera's muxer starts on its first request and
/// stops `close_after` after its last.
#[derive(Debug, Clone, PartialEq)]
pub struct HlsConfig {
    pub enabled: bool,
    /// The longest part (LL-HLS partial segment); a segment is one GOP.
    pub part: Duration,
    /// Complete segments a playlist lists.
    pub segments: usize,
    /// How long a camera's muxer runs after its last request.
    pub close_after: Duration,
    /// Cameras muxed at once; a request for another gets HTTP 503.
    pub max_streams: usize,
    /// hls.js (its `dist/hls.light.min.js`, installed by scripts/install-models.sh), served to the web page at
    /// `/assets/hls.js` for browsers without native HLS; `None`: the page plays HLS only where the browser can.
    pub player_js: Option<std::path::PathBuf>,
}

/// WebRTC playback over WHEP (`POST /whep/<id>` on the HTTP listener).
#[derive(Clone, PartialEq)]
pub struct WebrtcConfig {
    pub enabled: bool,
    /// STUN and TURN servers as webrtcbin takes them: `stun://host:port`, `turn://user:pass@host:port`,
    /// `turns://user:pass@host:port`.
    pub ice_servers: Vec<url::Url>,
    /// Local addresses offered as host candidates; empty lets libnice use every non-loopback interface.
    pub candidate_addresses: Vec<std::net::IpAddr>,
    /// Concurrent WHEP sessions, all cameras together; more get HTTP 503.
    pub max_sessions: usize,
    /// How long a session whose ICE connection failed or dropped may take to recover before it is ended.
    pub disconnect_timeout: Duration,
}

impl std::fmt::Debug for WebrtcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // TURN URLs carry credentials: only their schemes and hosts are shown.
        let servers: Vec<String> =
            self.ice_servers.iter().map(|u| format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""))).collect();
        f.debug_struct("WebrtcConfig")
            .field("enabled", &self.enabled)
            .field("ice_servers", &servers)
            .field("candidate_addresses", &self.candidate_addresses)
            .field("max_sessions", &self.max_sessions)
            .field("disconnect_timeout", &self.disconnect_timeout)
            .finish()
    }
}

/// Network camera discovery: `discover_external_streams` and periodic scans. camhub sends nothing to the network for
/// it beyond what is named here or by a client: WS-Discovery probes go to the multicast group on the `interfaces`
/// listed (none by default), and RTSP probes only to hosts given by name or address.
#[derive(Clone, PartialEq)]
pub struct DiscoveryConfig {
    /// Interfaces, by name, on which WS-Discovery probes are multicast. Empty (the default): no multicast probe is
    /// ever sent, and only hosts named explicitly are probed.
    pub interfaces: Vec<String>,
    /// Hosts periodic scans probe for RTSP streams (clients name their own in `discover_external_streams`).
    pub hosts: Vec<crate::base::url::HostPort>,
    /// Seconds between periodic scans; 0 is off. `set_discovery_interval` changes it, and its choice is kept.
    pub scan_interval: u64,
    /// Periodic scans add a camera for each device they find that is not one yet (its largest stream).
    pub auto_add: bool,
    /// The user name and password periodic scans give devices (ONVIF and RTSP), and put in auto-added cameras' URLs.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl DiscoveryConfig {
    /// The shortest periodic scan interval, in seconds (0 is off).
    pub const MIN_INTERVAL: u64 = 10;
    /// The longest, a day.
    pub const MAX_INTERVAL: u64 = 86_400;

    /// Whether `seconds` is a valid scan interval: 0 (off) or `MIN_INTERVAL..=MAX_INTERVAL`.
    pub fn valid_interval(seconds: u64) -> bool {
        seconds == 0 || (Self::MIN_INTERVAL..=Self::MAX_INTERVAL).contains(&seconds)
    }
}

impl std::fmt::Debug for DiscoveryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<String> = self.hosts.iter().map(ToString::to_string).collect();
        f.debug_struct("DiscoveryConfig")
            .field("interfaces", &self.interfaces)
            .field("hosts", &hosts)
            .field("scan_interval", &self.scan_interval)
            .field("auto_add", &self.auto_add)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .finish()
    }
}

/// When a camera records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordMode {
    /// Only between `start_recording` and `stop_recording`.
    OnDemand,
    /// From start-up, continuously.
    Always,
    /// While detection sees an object of the chosen labels, with pre- and post-capture.
    Events,
}

/// How cameras are watched and reconnected.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    /// No frame for this long means the camera is disconnected.
    pub stall_timeout: Duration,
    /// First reconnect delay; doubles on each failure up to `reconnect_max`.
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// Each delay is varied by up to this fraction either way, so cameras behind one switch do not retry in step.
    pub reconnect_jitter: f64,
    /// RTSP jitterbuffer latency.
    pub rtsp_latency: Duration,
    /// How long to wait for the first frame of a new connection before giving up on the attempt.
    pub connect_timeout: Duration,
    /// Which RTSP client ingests network cameras.
    pub rtsp_client: RtspClient,
}

/// The RTSP client of network cameras.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtspClient {
    /// The `retina` crate feeding the hub directly: no pipeline per camera, the cheapest ingest.
    Retina,
    /// GStreamer's rtspsrc: for cameras retina cannot talk to.
    Gstreamer,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CameraConfig {
    pub id: CameraId,
    pub name: String,
    pub source: SourceConfig,
    /// Keep the camera's sound (record and republish it); `false` drops it on arrival.
    pub audio: bool,
    pub record: RecordMode,
    pub detect: Option<DetectConfig>,
}

/// Where a configured camera's frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// `url = "rtsp://..."`.
    Rtsp(url::Url),
    /// `url = "file:///path/clip.mp4"`: played in a loop.
    File(PathBuf),
    /// `stream_key_sha256 = "<hex>"`: pushed (RTMP, SRT, WHIP) with the key whose SHA-256 this is.
    Push { key_hash: String },
}

/// Object detection: the ONNX Runtime library, where inference runs, and the models cameras may use.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceConfig {
    /// ONNX Runtime's shared library (`libonnxruntime.so`), loaded at start.
    pub runtime: PathBuf,
    pub provider: Provider,
    /// Inference threads; each runs one frame at a time with one intra-op thread (faster than two on 2 vCPUs).
    pub threads: usize,
    /// Frames waiting for inference; a frame arriving when it is full is dropped and counted.
    pub queue: usize,
    pub models: Vec<ModelConfig>,
}

/// Where ONNX Runtime runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    Cuda,
    TensorRt,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
        }
    }
}

/// A detection model file and how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    pub path: PathBuf,
    pub kind: ModelKind,
    /// Class names by class index.
    pub labels: Vec<String>,
    /// Boxes scoring less are ignored.
    pub min_score: f32,
    /// An object is confirmed when the median of its recent scores reaches this.
    pub threshold: f32,
    /// The value range the model expects its RGB input in.
    pub input: InputRange,
}

/// The output layouts camhub decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// `[1, N, 6]`: x1, y1, x2, y2, score, class (CenterNet, SSD and NMS-included exports).
    Boxes,
    /// YOLO v8/v11: `[1, 4+C, N]`.
    YoloV8,
    /// YOLO v5/v7: `[1, N, 5+C]`.
    YoloV5,
    /// MediaPipe BlazeFace (front, 128x128).
    BlazeFace,
}

impl ModelKind {
    pub const ALL: [ModelKind; 4] = [ModelKind::Boxes, ModelKind::YoloV8, ModelKind::YoloV5, ModelKind::BlazeFace];

    /// The name `kind` takes in the config and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Boxes => "boxes",
            ModelKind::YoloV8 => "yolov8",
            ModelKind::YoloV5 => "yolov5",
            ModelKind::BlazeFace => "blazeface",
        }
    }
}

/// What one input channel value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRange {
    /// 0..255 (TF exports such as CenterNet).
    Byte,
    /// 0..1 (YOLO exports).
    Unit,
    /// -1..1 (MediaPipe).
    Signed,
}

/// A camera's detection.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectConfig {
    pub model: String,
    /// Whether it runs from start-up (`set_detection` turns it on and off at run time).
    pub enabled: bool,
    /// Frames per second given to the model while something moves.
    pub fps: f64,
    /// Labels reported; empty means all of the model's.
    pub labels: Vec<String>,
    /// Override the model's `min_score` and `threshold`.
    pub min_score: Option<f32>,
    pub threshold: Option<f32>,
    /// An object unseen for this long has ended.
    pub end_after: Duration,
    /// With `record = "events"`: the labels that start a recording (empty: every reported label).
    pub record_labels: Vec<String>,
    /// With `record = "events"`: how long recording goes on after the last object ended.
    pub post_capture: Duration,
}

/// Local V4L2 (USB) cameras, found through udev.
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Config {
    /// Whether to look for V4L2 devices at all.
    pub enabled: bool,
    /// Without a camera entry picking a mode, the best mode the device offers within this size and rate is used.
    pub max_width: u32,
    pub max_height: u32,
    pub max_fps: u32,
    /// How raw and MJPEG devices are encoded to H.264.
    pub encoder: EncoderConfig,
    /// Per-camera choices, by public id (`camera0`, ...).
    pub cameras: Vec<V4l2CameraConfig>,
}

/// H.264 encoding of devices that do not send it themselves (x264, low latency, one-second GOP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Target bitrate; `None` derives it from the picture size and rate.
    pub bitrate_kbps: Option<u32>,
    /// x264 speed preset (`ultrafast` .. `medium`): slower presets spend CPU for quality per bit.
    pub preset: String,
}

/// A V4L2 camera's mode and settings, chosen in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2CameraConfig {
    pub id: CameraId,
    pub name: Option<String>,
    /// V4L2 pixel format (FourCC such as `YUYV`, `MJPG`, `H264`).
    pub format: Option<String>,
    pub size: Option<(u32, u32)>,
    pub fps: Option<u32>,
    pub encoder: EncoderConfig,
    pub record: RecordMode,
    pub detect: Option<DetectConfig>,
}

impl Config {
    /// Every configured camera with a `detect` table (network and local), with its record mode.
    pub fn detecting(&self) -> Vec<(CameraId, DetectConfig, RecordMode)> {
        let network = self.cameras.iter().filter_map(|c| Some((c.id.clone(), c.detect.clone()?, c.record)));
        let local = self.v4l2.cameras.iter().filter_map(|c| Some((c.id.clone(), c.detect.clone()?, c.record)));
        network.chain(local).collect()
    }

    /// Reads `path` (if given) and `CAMHUB_*` environment overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::new("--config", format!("file {} does not exist", path.display())));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        Self::from_builder(builder)
    }

    /// Parses a TOML document (plus environment overrides); used by tests and the embedded demo.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_builder(config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml)))
    }

    fn from_builder(builder: config::ConfigBuilder<config::builder::DefaultState>) -> Result<Config, ConfigError> {
        // Only `CAMHUB_SECTION__KEY` variables override the file; others such as `CAMHUB_CONFIG` (the path) are not
        // config keys.
        let overrides: config::Map<String, String> =
            std::env::vars().filter(|(k, _)| k.starts_with("CAMHUB_") && k.contains("__")).collect();
        let raw: RawConfig = builder
            .add_source(
                config::Environment::with_prefix("CAMHUB")
                    .prefix_separator("_")
                    .separator("__")
                    .source(Some(overrides)),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(from_config_error)?;
        raw.validate()
    }
}

/// Splits the `config` crate's message into key and problem where it names a key.
fn from_config_error(e: config::ConfigError) -> ConfigError {
    let text = e.to_string().replace('\n', " ");
    // Messages look like `invalid type: string "x", expected u16 for key `server.max_connections` in ...`.
    let Some((problem, rest)) = text.split_once(" for key `") else { return ConfigError::new("config", text) };
    let Some((key, _)) = rest.split_once('`') else { return ConfigError::new("config", text) };
    // For an unknown key the message names its section; the key is the section plus the field.
    if let Some(field) = problem.strip_prefix("unknown field `").and_then(|p| p.split_once('`')).map(|(f, _)| f) {
        return ConfigError::new(format!("{key}.{field}"), "unknown key");
    }
    ConfigError::new(key, problem.trim())
}

/// `[[storage.roots]]`: absolute, distinct directories, none of them the data dir or inside another.
fn validate_roots(data_dir: &Path, default_min_free_mb: u64, raw: &[RawRoot]) -> Result<Vec<RootConfig>, ConfigError> {
    let mut roots: Vec<RootConfig> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let key = || format!("storage.roots[{i}].path");
        if r.path.as_os_str().is_empty() {
            return Err(ConfigError::new(key(), "missing: the directory recordings go to"));
        }
        if !r.path.is_absolute() {
            return Err(ConfigError::new(key(), format!("{} is not an absolute path", r.path.display())));
        }
        if r.path == data_dir {
            return Err(ConfigError::new(key(), "must not be storage.root itself (use a directory on the disk)"));
        }
        if let Some(other) = roots.iter().position(|o| r.path.starts_with(&o.path) || o.path.starts_with(&r.path)) {
            return Err(ConfigError::new(key(), format!("overlaps storage.roots[{other}].path")));
        }
        let mb = r.min_free_mb.unwrap_or(default_min_free_mb);
        roots.push(RootConfig { path: r.path.clone(), min_free_bytes: mb * 1024 * 1024 });
    }
    Ok(roots)
}

// ---- raw, as written ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    auth: RawAuth,
    storage: RawStorage,
    monitor: RawMonitor,
    recording: RawRecording,
    snapshots: RawSnapshots,
    rtsp_server: RawRtspServer,
    webrtc: RawWebrtc,
    hls: RawHls,
    rtmp: RawRtmp,
    srt: RawSrt,
    cameras: Vec<RawCamera>,
    v4l2: RawV4l2,
    inference: Option<RawInference>,
    discovery: RawDiscovery,
    log: RawLog,
    telemetry: RawTelemetry,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { level: "info".into() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTelemetry {
    otlp_endpoint: Option<String>,
    service_name: String,
    sampling_ratio: f64,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        RawTelemetry { otlp_endpoint: None, service_name: "camhub".into(), sampling_ratio: 1.0 }
    }
}

impl RawTelemetry {
    fn validate(self) -> Result<TelemetryConfig, ConfigError> {
        let otlp_endpoint = match self.otlp_endpoint.filter(|e| !e.is_empty()) {
            None => None,
            Some(text) => {
                let url = url::Url::parse(&text).map_err(|e| {
                    ConfigError::new("telemetry.otlp_endpoint", format!("not a URL ({e}); e.g. http://127.0.0.1:4318"))
                })?;
                if url.scheme() != "http" || url.host().is_none() {
                    // The exporter's client is built without TLS, like every other client of camhub's.
                    return Err(ConfigError::new("telemetry.otlp_endpoint", "must be http://HOST:PORT"));
                }
                if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
                    return Err(ConfigError::new("telemetry.otlp_endpoint", "no credentials or query in the URL"));
                }
                Some(url)
            }
        };
        let name_ok = (1..=64).contains(&self.service_name.len())
            && self.service_name.bytes().all(|b| b.is_ascii_graphic() && b != b',' && b != b'=');
        if !name_ok {
            return Err(ConfigError::new("telemetry.service_name", "1..64 printable characters, no ',' or '='"));
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(ConfigError::new("telemetry.sampling_ratio", "must be between 0.0 and 1.0"));
        }
        Ok(TelemetryConfig { otlp_endpoint, service_name: self.service_name, sampling_ratio: self.sampling_ratio })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDiscovery {
    interfaces: Vec<String>,
    hosts: Vec<String>,
    scan_interval: u64,
    auto_add: bool,
    username: Option<String>,
    password: Option<String>,
}

impl RawDiscovery {
    fn validate(self) -> Result<DiscoveryConfig, ConfigError> {
        let mut interfaces: Vec<String> = Vec::with_capacity(self.interfaces.len());
        for (i, name) in self.interfaces.into_iter().enumerate() {
            // IFNAMSIZ is 16 with the NUL.
            let ok = (1..=15).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
            if !ok {
                return Err(ConfigError::new(
                    format!("discovery.interfaces[{i}]"),
                    "an interface name (1..15 characters)",
                ));
            }
            if !interfaces.contains(&name) {
                interfaces.push(name);
            }
        }
        let mut hosts = Vec::with_capacity(self.hosts.len());
        for (i, h) in self.hosts.iter().enumerate() {
            let host = crate::base::url::HostPort::parse(h)
                .map_err(|rule| ConfigError::new(format!("discovery.hosts[{i}]"), rule))?;
            hosts.push(host);
        }
        if !DiscoveryConfig::valid_interval(self.scan_interval) {
            return Err(ConfigError::new(
                "discovery.scan_interval",
                format!(
                    "must be 0 (off) or {}..{} seconds",
                    DiscoveryConfig::MIN_INTERVAL,
                    DiscoveryConfig::MAX_INTERVAL
                ),
            ));
        }
        let username = self.username.filter(|u| !u.is_empty());
        if username.as_ref().is_some_and(|u| u.len() > 128 || u.contains(':')) {
            return Err(ConfigError::new("discovery.username", "at most 128 characters, no ':'"));
        }
        if self.password.is_some() && username.is_none() {
            return Err(ConfigError::new("discovery.password", "needs discovery.username"));
        }
        if self.password.as_ref().is_some_and(|p| p.len() > 128) {
            // Never echo the value.
            return Err(ConfigError::new("discovery.password", "at most 128 characters"));
        }
        Ok(DiscoveryConfig {
            interfaces,
            hosts,
            scan_interval: self.scan_interval,
            auto_add: self.auto_add,
            username,
            password: self.password,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawInference {
    runtime: PathBuf,
    provider: String,
    threads: usize,
    queue: usize,
    models: Vec<RawModel>,
}

impl Default for RawInference {
    fn default() -> Self {
        RawInference {
            runtime: "assets/onnxruntime/libonnxruntime.so".into(),
            provider: "cpu".into(),
            threads: 1,
            queue: 4,
            models: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    path: PathBuf,
    kind: String,
    labels: Option<RawLabels>,
    min_score: Option<f32>,
    threshold: Option<f32>,
    input_range: Option<String>,
}

/// A model's labels: a list, or the name of a built-in list (`"coco80"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawLabels {
    List(Vec<String>),
    Named(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetect {
    model: String,
    enabled: Option<bool>,
    fps: Option<f64>,
    labels: Option<Vec<String>>,
    min_score: Option<f32>,
    threshold: Option<f32>,
    end_after_s: Option<f64>,
    record_labels: Option<Vec<String>>,
    post_capture_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRtspServer {
    enabled: bool,
    listen: String,
    public_host: String,
    require_auth: bool,
    users: Vec<RawRtspUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRtmp {
    enabled: bool,
    listen: String,
}

impl Default for RawRtmp {
    fn default() -> Self {
        RawRtmp { enabled: true, listen: "127.0.0.1:1935".into() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSrt {
    enabled: bool,
    listen: String,
}

impl Default for RawSrt {
    fn default() -> Self {
        RawSrt { enabled: true, listen: "127.0.0.1:8890".into() }
    }
}

/// A push listener's section: `listen` must be `IP:PORT`.
fn push_listener(section: &str, enabled: bool, listen: &str) -> Result<PushListener, ConfigError> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| ConfigError::new(format!("{section}.listen"), format!("{listen:?} is not an IP:PORT address")))?;
    Ok(PushListener { enabled, listen: addr })
}

impl Default for RawRtspServer {
    fn default() -> Self {
        RawRtspServer {
            enabled: true,
            listen: "127.0.0.1:8554".into(),
            public_host: String::new(),
            require_auth: false,
            users: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRtspUser {
    user: String,
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWebrtc {
    enabled: bool,
    ice_servers: Vec<String>,
    candidate_addresses: Vec<String>,
    max_sessions: usize,
    disconnect_timeout_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHls {
    enabled: bool,
    part_ms: u64,
    segments: usize,
    close_after_s: u64,
    max_streams: usize,
    player_js: String,
}

impl Default for RawHls {
    fn default() -> Self {
        RawHls {
            enabled: true,
            part_ms: 200,
            segments: 7,
            close_after_s: 30,
            max_streams: 32,
            player_js: String::new(),
        }
    }
}

impl RawHls {
    fn validate(self) -> Result<HlsConfig, ConfigError> {
        if !(100..=2000).contains(&self.part_ms) {
            return Err(ConfigError::new("hls.part_ms", "must be between 100 and 2000"));
        }
        if !(3..=60).contains(&self.segments) {
            return Err(ConfigError::new("hls.segments", "must be between 3 and 60"));
        }
        if !(1..=3600).contains(&self.close_after_s) {
            return Err(ConfigError::new("hls.close_after_s", "must be between 1 and 3600"));
        }
        if !(1..=1000).contains(&self.max_streams) {
            return Err(ConfigError::new("hls.max_streams", "must be between 1 and 1000"));
        }
        Ok(HlsConfig {
            enabled: self.enabled,
            part: Duration::from_millis(self.part_ms),
            segments: self.segments,
            close_after: Duration::from_secs(self.close_after_s),
            max_streams: self.max_streams,
            player_js: (!self.player_js.is_empty()).then(|| std::path::PathBuf::from(self.player_js)),
        })
    }
}

impl Default for RawWebrtc {
    fn default() -> Self {
        RawWebrtc {
            enabled: true,
            ice_servers: Vec::new(),
            candidate_addresses: Vec::new(),
            max_sessions: 32,
            disconnect_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    max_connections: usize,
    max_message_bytes: usize,
    rate_limit_per_sec: u32,
    rate_limit_burst: u32,
    notification_queue: usize,
    shutdown_grace_ms: u64,
    watch_config: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8002".into(),
            max_connections: 2000,
            max_message_bytes: 256 * 1024,
            rate_limit_per_sec: 200,
            rate_limit_burst: 400,
            notification_queue: 1024,
            shutdown_grace_ms: 10_000,
            watch_config: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    jwt_secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    root: PathBuf,
    min_free_mb: u64,
    retention_policy: String,
    max_age_days: Option<f64>,
    max_size_gb: Option<f64>,
    retention_interval_s: u64,
    roots: Vec<RawRoot>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRoot {
    path: PathBuf,
    /// Defaults to `storage.min_free_mb`.
    min_free_mb: Option<u64>,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            root: "/var/lib/camhub".into(),
            min_free_mb: 1024,
            retention_policy: "age".into(),
            max_age_days: Some(30.0),
            max_size_gb: None,
            retention_interval_s: 60,
            roots: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRecording {
    format: String,
    segment_seconds: u64,
    pre_roll_seconds: f64,
    fragment_ms: u64,
}

impl Default for RawRecording {
    fn default() -> Self {
        RawRecording { format: "fmp4".into(), segment_seconds: 600, pre_roll_seconds: 5.0, fragment_ms: 500 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSnapshots {
    quality: u8,
    width: u32,
    height: u32,
}

impl Default for RawSnapshots {
    fn default() -> Self {
        RawSnapshots { quality: 85, width: 0, height: 0 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMonitor {
    stall_timeout_ms: u64,
    reconnect_initial_ms: u64,
    reconnect_max_ms: u64,
    reconnect_jitter: f64,
    rtsp_latency_ms: u64,
    connect_timeout_ms: u64,
    rtsp_client: String,
}

impl Default for RawMonitor {
    fn default() -> Self {
        RawMonitor {
            stall_timeout_ms: 2000,
            reconnect_initial_ms: 250,
            reconnect_max_ms: 1000,
            reconnect_jitter: 0.2,
            rtsp_latency_ms: 200,
            connect_timeout_ms: 5000,
            rtsp_client: "retina".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCamera {
    id: String,
    name: Option<String>,
    url: Option<String>,
    stream_key_sha256: Option<String>,
    audio: Option<bool>,
    record: Option<String>,
    detect: Option<RawDetect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawV4l2 {
    enabled: bool,
    max_width: u32,
    max_height: u32,
    max_fps: u32,
    bitrate_kbps: u32,
    preset: String,
    cameras: Vec<RawV4l2Camera>,
}

impl Default for RawV4l2 {
    fn default() -> Self {
        RawV4l2 {
            enabled: true,
            max_width: 1920,
            max_height: 1080,
            max_fps: 30,
            bitrate_kbps: 0,
            preset: "ultrafast".into(),
            cameras: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawV4l2Camera {
    id: String,
    name: Option<String>,
    format: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<u32>,
    bitrate_kbps: Option<u32>,
    preset: Option<String>,
    record: Option<String>,
    detect: Option<RawDetect>,
}

/// x264's speed presets, fastest first.
const X264_PRESETS: &[&str] =
    &["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"];

fn record_mode(key: &str, value: Option<&str>) -> Result<RecordMode, ConfigError> {
    match value {
        None | Some("on_demand") => Ok(RecordMode::OnDemand),
        Some("always") => Ok(RecordMode::Always),
        Some("events") => Ok(RecordMode::Events),
        Some(other) => Err(ConfigError::new(key, format!("{other:?} is not \"always\", \"events\" or \"on_demand\""))),
    }
}

fn encoder(key: &str, bitrate_kbps: u32, preset: String) -> Result<EncoderConfig, ConfigError> {
    if bitrate_kbps != 0 && !(100..=50_000).contains(&bitrate_kbps) {
        return Err(ConfigError::new(format!("{key}bitrate_kbps"), "must be 0 (automatic) or 100..50000"));
    }
    if !X264_PRESETS.contains(&preset.as_str()) {
        return Err(ConfigError::new(format!("{key}preset"), format!("{preset:?} is not one of {X264_PRESETS:?}")));
    }
    Ok(EncoderConfig { bitrate_kbps: (bitrate_kbps != 0).then_some(bitrate_kbps), preset })
}

impl RawV4l2 {
    fn validate(self, inference: Option<&InferenceConfig>) -> Result<V4l2Config, ConfigError> {
        if !(16..=7680).contains(&self.max_width) || !(16..=4320).contains(&self.max_height) {
            return Err(ConfigError::new("v4l2.max_width", "width and height must be 16..7680 x 16..4320"));
        }
        if !(1..=240).contains(&self.max_fps) {
            return Err(ConfigError::new("v4l2.max_fps", "must be between 1 and 240"));
        }
        let defaults = encoder("v4l2.", self.bitrate_kbps, self.preset)?;
        let mut cameras: Vec<V4l2CameraConfig> = Vec::with_capacity(self.cameras.len());
        for (i, c) in self.cameras.into_iter().enumerate() {
            let key = |field: &str| format!("v4l2.cameras[{i}].{field}");
            let id = CameraId::parse(&c.id).map_err(|rule| ConfigError::new(key("id"), rule))?;
            if !c.id.strip_prefix("camera").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
                return Err(ConfigError::new(key("id"), "V4L2 cameras are camera0, camera1, ..."));
            }
            if cameras.iter().any(|other| other.id == id) {
                return Err(ConfigError::new(key("id"), format!("duplicate camera id {id:?}")));
            }
            let format = match c.format {
                Some(f) if (1..=4).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_graphic()) => Some(f),
                Some(f) => return Err(ConfigError::new(key("format"), format!("{f:?} is not a V4L2 FourCC"))),
                None => None,
            };
            let size = match (c.width, c.height) {
                (None, None) => None,
                (Some(w), Some(h)) if (16..=7680).contains(&w) && (16..=4320).contains(&h) => Some((w, h)),
                _ => return Err(ConfigError::new(key("width"), "width and height go together, 16..7680 x 16..4320")),
            };
            if c.fps.is_some_and(|f| !(1..=240).contains(&f)) {
                return Err(ConfigError::new(key("fps"), "must be between 1 and 240"));
            }
            let encoder = encoder(
                &key(""),
                c.bitrate_kbps.or(defaults.bitrate_kbps).unwrap_or(0),
                c.preset.unwrap_or_else(|| defaults.preset.clone()),
            )?;
            let record = record_mode(&key("record"), c.record.as_deref())?;
            let detect = c.detect.map(|d| d.validate(&key("detect."), inference)).transpose()?;
            if record == RecordMode::Events && detect.is_none() {
                return Err(ConfigError::new(key("record"), "\"events\" needs a detect table on the camera"));
            }
            cameras.push(V4l2CameraConfig { id, name: c.name, format, size, fps: c.fps, encoder, record, detect });
        }
        Ok(V4l2Config {
            enabled: self.enabled,
            max_width: self.max_width,
            max_height: self.max_height,
            max_fps: self.max_fps,
            encoder: defaults,
            cameras,
        })
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let s = self.server;
        let listen: SocketAddr = s
            .listen
            .parse()
            .map_err(|_| ConfigError::new("server.listen", format!("{:?} is not an IP:PORT address", s.listen)))?;
        positive("server.max_connections", s.max_connections)?;
        if s.max_message_bytes < 1024 {
            return Err(ConfigError::new("server.max_message_bytes", "must be at least 1024"));
        }
        positive("server.rate_limit_per_sec", s.rate_limit_per_sec as usize)?;
        positive("server.rate_limit_burst", s.rate_limit_burst as usize)?;
        positive("server.notification_queue", s.notification_queue)?;

        if let Some(secret) = &self.auth.jwt_secret
            && secret.len() < 16
        {
            return Err(ConfigError::new("auth.jwt_secret", "must be at least 16 characters"));
        }
        let st = self.storage;
        if st.root.as_os_str().is_empty() {
            return Err(ConfigError::new("storage.root", "must not be empty"));
        }
        let retention = RetentionConfig {
            policy_type: match st.retention_policy.as_str() {
                "age" => RetentionKind::Age,
                "size" => RetentionKind::Size,
                "manual" => RetentionKind::Manual,
                other => {
                    return Err(ConfigError::new(
                        "storage.retention_policy",
                        format!("{other:?} is not \"age\", \"size\" or \"manual\""),
                    ));
                }
            },
            max_age_days: st.max_age_days,
            max_size_gb: st.max_size_gb,
            enabled: true,
        };
        if retention.max_age_days.is_some_and(|d| d.is_nan() || d <= 0.0) {
            return Err(ConfigError::new("storage.max_age_days", "must be greater than 0"));
        }
        if retention.max_size_gb.is_some_and(|g| g.is_nan() || g <= 0.0) {
            return Err(ConfigError::new("storage.max_size_gb", "must be greater than 0"));
        }
        positive("storage.retention_interval_s", st.retention_interval_s as usize)?;
        let roots = validate_roots(&st.root, st.min_free_mb, &st.roots)?;

        let r = self.recording;
        let format = RecordingFormat::parse(&r.format)
            .ok_or_else(|| ConfigError::new("recording.format", format!("{:?} is not fmp4, mp4 or mkv", r.format)))?;
        if r.segment_seconds < 2 {
            return Err(ConfigError::new("recording.segment_seconds", "must be at least 2"));
        }
        if !(0.0..=60.0).contains(&r.pre_roll_seconds) {
            return Err(ConfigError::new("recording.pre_roll_seconds", "must be between 0 and 60"));
        }
        if !(100..=1000).contains(&r.fragment_ms) {
            return Err(ConfigError::new("recording.fragment_ms", "must be between 100 and 1000"));
        }
        let sn = self.snapshots;
        if !(1..=100).contains(&sn.quality) {
            return Err(ConfigError::new("snapshots.quality", "must be between 1 and 100"));
        }
        let size = match (sn.width, sn.height) {
            (0, 0) => None,
            (w, h) if (16..=7680).contains(&w) && (16..=4320).contains(&h) => Some((w, h)),
            _ => {
                return Err(ConfigError::new(
                    "snapshots.width",
                    "width and height must both be 0 or 16..7680 x 16..4320",
                ));
            }
        };

        let m = self.monitor;
        positive("monitor.stall_timeout_ms", m.stall_timeout_ms as usize)?;
        positive("monitor.reconnect_initial_ms", m.reconnect_initial_ms as usize)?;
        if m.reconnect_max_ms < m.reconnect_initial_ms {
            return Err(ConfigError::new("monitor.reconnect_max_ms", "must be at least reconnect_initial_ms"));
        }
        if !(0.0..=1.0).contains(&m.reconnect_jitter) {
            return Err(ConfigError::new("monitor.reconnect_jitter", "must be between 0 and 1"));
        }
        positive("monitor.connect_timeout_ms", m.connect_timeout_ms as usize)?;
        let rtsp_client = match m.rtsp_client.as_str() {
            "retina" => RtspClient::Retina,
            "gstreamer" => RtspClient::Gstreamer,
            other => {
                return Err(ConfigError::new(
                    "monitor.rtsp_client",
                    format!("{other:?} is not \"retina\" or \"gstreamer\""),
                ));
            }
        };

        let inference = self.inference.map(RawInference::validate).transpose()?;
        let v4l2 = self.v4l2.validate(inference.as_ref())?;
        let rtsp_server = self.rtsp_server.validate(&listen)?;
        let rtmp = push_listener("rtmp", self.rtmp.enabled, &self.rtmp.listen)?;
        let srt = push_listener("srt", self.srt.enabled, &self.srt.listen)?;
        let webrtc = self.webrtc.validate()?;
        let hls = self.hls.validate()?;
        let discovery = self.discovery.validate()?;
        let telemetry = self.telemetry.validate()?;

        let mut cameras = Vec::with_capacity(self.cameras.len());
        for (i, c) in self.cameras.into_iter().enumerate() {
            let key = |field: &str| format!("cameras[{i}].{field}");
            let id = CameraId::parse(&c.id).map_err(|rule| ConfigError::new(key("id"), rule))?;
            if cameras.iter().any(|other: &CameraConfig| other.id == id) {
                return Err(ConfigError::new(key("id"), format!("duplicate camera id {id:?}")));
            }
            let source = match (c.url, c.stream_key_sha256) {
                (Some(url), None) => match crate::base::url::parse_source_url(&url) {
                    Ok(crate::base::url::SourceUrl::Stream(url)) => SourceConfig::Rtsp(url),
                    Ok(crate::base::url::SourceUrl::File(path)) => SourceConfig::File(path),
                    Err(rule) => return Err(ConfigError::new(key("url"), rule)),
                },
                (None, Some(hash)) => {
                    let hash = hash.trim().to_ascii_lowercase();
                    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(ConfigError::new(
                            key("stream_key_sha256"),
                            "the SHA-256 of the stream key, 64 hex digits (echo -n KEY | sha256sum)",
                        ));
                    }
                    SourceConfig::Push { key_hash: hash }
                }
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(key("url"), "a camera has a url or a stream_key_sha256, not both"));
                }
                (None, None) => return Err(ConfigError::new(key("url"), "missing: a url or a stream_key_sha256")),
            };
            let record = record_mode(&key("record"), c.record.as_deref())?;
            let detect = match c.detect {
                Some(d) => Some(d.validate(&key("detect."), inference.as_ref())?),
                None => None,
            };
            if record == RecordMode::Events && detect.is_none() {
                return Err(ConfigError::new(key("record"), "\"events\" needs a detect table on the camera"));
            }
            cameras.push(CameraConfig {
                name: c.name.unwrap_or_else(|| id.to_string()),
                id,
                source,
                audio: c.audio.unwrap_or(true),
                record,
                detect,
            });
        }

        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::new(
                "log.level",
                format!("{:?} is not a log filter (info, debug, camhub=debug,warn)", self.log.level),
            ));
        }
        Ok(Config {
            log: LogConfig { level: self.log.level },
            server: ServerConfig {
                listen,
                max_connections: s.max_connections,
                max_message_bytes: s.max_message_bytes,
                rate_limit_per_sec: s.rate_limit_per_sec,
                rate_limit_burst: s.rate_limit_burst,
                notification_queue: s.notification_queue,
                shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
                watch_config: s.watch_config,
            },
            auth: AuthConfig { jwt_secret: self.auth.jwt_secret },
            storage: StorageConfig {
                root: st.root,
                min_free_bytes: st.min_free_mb * 1024 * 1024,
                retention,
                retention_interval: Duration::from_secs(st.retention_interval_s),
                roots,
            },
            recording: RecordingConfig {
                format,
                segment: Duration::from_secs(r.segment_seconds),
                pre_roll: Duration::from_secs_f64(r.pre_roll_seconds),
                fragment: Duration::from_millis(r.fragment_ms),
            },
            snapshots: SnapshotConfig { quality: sn.quality, size },
            rtsp_server,
            rtmp,
            srt,
            webrtc,
            hls,
            monitor: MonitorConfig {
                stall_timeout: Duration::from_millis(m.stall_timeout_ms),
                reconnect_initial: Duration::from_millis(m.reconnect_initial_ms),
                reconnect_max: Duration::from_millis(m.reconnect_max_ms),
                reconnect_jitter: m.reconnect_jitter,
                rtsp_latency: Duration::from_millis(m.rtsp_latency_ms),
                connect_timeout: Duration::from_millis(m.connect_timeout_ms),
                rtsp_client,
            },
            cameras,
            v4l2,
            inference,
            discovery,
            telemetry,
        })
    }
}

/// The 80 COCO class names, by 0-based class index (the order of COCO-trained detectors' outputs).
pub const COCO80: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

impl RawInference {
    fn validate(self) -> Result<InferenceConfig, ConfigError> {
        if self.runtime.as_os_str().is_empty() {
            return Err(ConfigError::new("inference.runtime", "must name ONNX Runtime's shared library"));
        }
        let provider = match self.provider.as_str() {
            "cpu" => Provider::Cpu,
            "cuda" => Provider::Cuda,
            "tensorrt" => Provider::TensorRt,
            other => {
                return Err(ConfigError::new(
                    "inference.provider",
                    format!("{other:?} is not \"cpu\", \"cuda\" or \"tensorrt\""),
                ));
            }
        };
        if !(1..=16).contains(&self.threads) {
            return Err(ConfigError::new("inference.threads", "must be between 1 and 16"));
        }
        if !(1..=256).contains(&self.queue) {
            return Err(ConfigError::new("inference.queue", "must be between 1 and 256"));
        }
        let mut models: Vec<ModelConfig> = Vec::with_capacity(self.models.len());
        for (i, m) in self.models.into_iter().enumerate() {
            let key = |field: &str| format!("inference.models[{i}].{field}");
            if m.name.is_empty() || !m.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(ConfigError::new(key("name"), "letters, digits, '-' and '_' only"));
            }
            if models.iter().any(|other| other.name == m.name) {
                return Err(ConfigError::new(key("name"), format!("duplicate model name {:?}", m.name)));
            }
            if m.path.as_os_str().is_empty() {
                return Err(ConfigError::new(key("path"), "must name an .onnx file"));
            }
            let kind = ModelKind::ALL.iter().copied().find(|k| k.as_str() == m.kind).ok_or_else(|| {
                let names: Vec<&str> = ModelKind::ALL.iter().map(|k| k.as_str()).collect();
                ConfigError::new(key("kind"), format!("{:?} is not one of {names:?}", m.kind))
            })?;
            // Thresholds measured on real photos (evidence/inference-thresholds.md): CenterNet scores obvious objects
            // 0.55-0.8, so Frigate's 0.7 median would miss many; BlazeFace scores a clear face above 0.9 and a
            // face-free photo 0.44.
            let (min_score, threshold, input) = match kind {
                ModelKind::Boxes => (0.4, 0.5, InputRange::Byte),
                ModelKind::YoloV8 | ModelKind::YoloV5 => (0.4, 0.6, InputRange::Unit),
                ModelKind::BlazeFace => (0.6, 0.75, InputRange::Signed),
            };
            let labels = match m.labels {
                Some(RawLabels::List(list)) if !list.is_empty() => list,
                Some(RawLabels::Named(name)) if name == "coco80" => COCO80.iter().map(|l| l.to_string()).collect(),
                None if kind == ModelKind::BlazeFace => vec!["face".to_owned()],
                None => COCO80.iter().map(|l| l.to_string()).collect(),
                _ => return Err(ConfigError::new(key("labels"), "a list of class names, or \"coco80\"")),
            };
            let min_score = m.min_score.unwrap_or(min_score);
            let threshold = m.threshold.unwrap_or(threshold);
            score(&key("min_score"), min_score)?;
            score(&key("threshold"), threshold)?;
            let input = match m.input_range.as_deref() {
                None => input,
                Some("0..255") => InputRange::Byte,
                Some("0..1") => InputRange::Unit,
                Some("-1..1") => InputRange::Signed,
                Some(other) => {
                    return Err(ConfigError::new(
                        key("input_range"),
                        format!("{other:?} is not \"0..255\", \"0..1\" or \"-1..1\""),
                    ));
                }
            };
            models.push(ModelConfig { name: m.name, path: m.path, kind, labels, min_score, threshold, input });
        }
        Ok(InferenceConfig { runtime: self.runtime, provider, threads: self.threads, queue: self.queue, models })
    }
}

fn score(key: &str, value: f32) -> Result<(), ConfigError> {
    if value.is_nan() || !(0.0..=1.0).contains(&value) {
        return Err(ConfigError::new(key, "must be between 0 and 1"));
    }
    Ok(())
}

impl RawDetect {
    /// `key` is the table's key with a trailing dot (`cameras[0].detect.`).
    fn validate(self, key: &str, inference: Option<&InferenceConfig>) -> Result<DetectConfig, ConfigError> {
        let k = |field: &str| format!("{key}{field}");
        let Some(inference) = inference else {
            return Err(ConfigError::new(k("model"), "detection needs an [inference] section with models"));
        };
        let model = inference.models.iter().find(|m| m.name == self.model).ok_or_else(|| {
            ConfigError::new(k("model"), format!("no model named {:?} in inference.models", self.model))
        })?;
        let fps = self.fps.unwrap_or(5.0);
        if fps.is_nan() || !(0.1..=30.0).contains(&fps) {
            return Err(ConfigError::new(k("fps"), "must be between 0.1 and 30"));
        }
        let known = |field: &str, labels: &[String]| -> Result<(), ConfigError> {
            match labels.iter().find(|l| !model.labels.contains(l)) {
                Some(l) => Err(ConfigError::new(k(field), format!("{l:?} is not a label of model {:?}", model.name))),
                None => Ok(()),
            }
        };
        let labels = self.labels.unwrap_or_default();
        known("labels", &labels)?;
        let record_labels = self.record_labels.unwrap_or_default();
        known("record_labels", &record_labels)?;
        if let Some(v) = self.min_score {
            score(&k("min_score"), v)?;
        }
        if let Some(v) = self.threshold {
            score(&k("threshold"), v)?;
        }
        let seconds = |field: &str, value: Option<f64>, default: f64| -> Result<Duration, ConfigError> {
            let v = value.unwrap_or(default);
            if v.is_nan() || !(0.5..=600.0).contains(&v) {
                return Err(ConfigError::new(k(field), "must be between 0.5 and 600 seconds"));
            }
            Ok(Duration::from_secs_f64(v))
        };
        Ok(DetectConfig {
            model: self.model,
            enabled: self.enabled.unwrap_or(true),
            fps,
            labels,
            min_score: self.min_score,
            threshold: self.threshold,
            end_after: seconds("end_after_s", self.end_after_s, 3.0)?,
            record_labels,
            post_capture: seconds("post_capture_s", self.post_capture_s, 5.0)?,
        })
    }
}

impl RawRtspServer {
    fn validate(self, http_listen: &SocketAddr) -> Result<RtspServerConfig, ConfigError> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            ConfigError::new("rtsp_server.listen", format!("{:?} is not an IP:PORT address", self.listen))
        })?;
        let public_host = Some(self.public_host.trim().to_owned()).filter(|h| !h.is_empty());
        if let Some(h) = &public_host
            && (h.contains(['/', '@', ' ', '?', '#']) || url::Url::parse(&format!("rtsp://{h}/")).is_err())
        {
            return Err(ConfigError::new("rtsp_server.public_host", format!("{h:?} is not a host name or address")));
        }
        if public_host.is_none() && self.enabled && (listen.ip().is_unspecified() || http_listen.ip().is_unspecified())
        {
            return Err(ConfigError::new(
                "rtsp_server.public_host",
                "must be set when the RTSP server or the HTTP listener listens on all interfaces (it is the host in published URLs)",
            ));
        }
        let mut users: Vec<RtspUser> = Vec::with_capacity(self.users.len());
        for (i, u) in self.users.into_iter().enumerate() {
            if u.user.is_empty() || u.user.contains(':') || u.user.len() > 128 {
                return Err(ConfigError::new(format!("rtsp_server.users[{i}].user"), "1..128 characters, no ':'"));
            }
            if u.password.len() < 8 {
                return Err(ConfigError::new(format!("rtsp_server.users[{i}].password"), "at least 8 characters"));
            }
            if users.iter().any(|o| o.user == u.user) {
                return Err(ConfigError::new(format!("rtsp_server.users[{i}].user"), "duplicate user"));
            }
            users.push(RtspUser { user: u.user, password: u.password });
        }
        Ok(RtspServerConfig { enabled: self.enabled, listen, public_host, require_auth: self.require_auth, users })
    }
}

impl RawWebrtc {
    fn validate(self) -> Result<WebrtcConfig, ConfigError> {
        let mut ice_servers = Vec::with_capacity(self.ice_servers.len());
        for (i, s) in self.ice_servers.iter().enumerate() {
            let key = format!("webrtc.ice_servers[{i}]");
            // Never echo the value: a TURN URL carries a password.
            let url = url::Url::parse(s).map_err(|_| ConfigError::new(&key, "not a URL"))?;
            let ok = match url.scheme() {
                "stun" => url.username().is_empty(),
                "turn" | "turns" => !url.username().is_empty() && url.password().is_some(),
                _ => false,
            };
            if !ok || url.host_str().is_none_or(str::is_empty) {
                return Err(ConfigError::new(&key, "must be stun://HOST:PORT or turn[s]://USER:PASS@HOST:PORT"));
            }
            ice_servers.push(url);
        }
        if ice_servers.iter().filter(|u| u.scheme() == "stun").count() > 1 {
            return Err(ConfigError::new("webrtc.ice_servers", "at most one STUN server (webrtcbin takes one)"));
        }
        let mut candidate_addresses = Vec::with_capacity(self.candidate_addresses.len());
        for (i, a) in self.candidate_addresses.iter().enumerate() {
            let ip = a.parse().map_err(|_| {
                ConfigError::new(format!("webrtc.candidate_addresses[{i}]"), format!("{a:?} is not an IP address"))
            })?;
            candidate_addresses.push(ip);
        }
        if !(1..=1000).contains(&self.max_sessions) {
            return Err(ConfigError::new("webrtc.max_sessions", "must be between 1 and 1000"));
        }
        if !(500..=60_000).contains(&self.disconnect_timeout_ms) {
            return Err(ConfigError::new("webrtc.disconnect_timeout_ms", "must be between 500 and 60000"));
        }
        Ok(WebrtcConfig {
            enabled: self.enabled,
            ice_servers,
            candidate_addresses,
            max_sessions: self.max_sessions,
            disconnect_timeout: Duration::from_millis(self.disconnect_timeout_ms),
        })
    }
}

fn positive(key: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 { Err(ConfigError::new(key, "must be greater than 0")) } else { Ok(()) }
}

// ---- what a reload changes ----

/// What differs between the running configuration and a new one, and how each difference is applied: configured
/// cameras one by one, a few settings live, the rest only by a restart.
#[derive(Debug, Default, Clone)]
pub struct ConfigDiff {
    /// `[[cameras]]` entries new in the file.
    pub cameras_added: Vec<CameraConfig>,
    /// Configured cameras no longer in the file.
    pub cameras_removed: Vec<CameraId>,
    /// Configured cameras whose entry changed, with what changed.
    pub cameras_changed: Vec<CameraChange>,
    /// Keys that changed and apply without a restart.
    pub live: Vec<&'static str>,
    /// Keys that changed and only a restart applies; the running service keeps their old values.
    pub restart: Vec<&'static str>,
}

/// A configured camera's entry before and after.
#[derive(Debug, Clone)]
pub struct CameraChange {
    pub old: CameraConfig,
    pub new: CameraConfig,
}

impl CameraChange {
    /// Whether the camera must be started again: where its frames come from, its name or its sound changed. Its
    /// record mode and detection change on the running camera.
    pub fn restarts(&self) -> bool {
        self.old.source != self.new.source || self.old.name != self.new.name || self.old.audio != self.new.audio
    }
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        self.cameras_added.is_empty()
            && self.cameras_removed.is_empty()
            && self.cameras_changed.is_empty()
            && self.live.is_empty()
            && self.restart.is_empty()
    }
}

impl Config {
    /// The differences from `self` (running) to `new`.
    pub fn diff(&self, new: &Config) -> ConfigDiff {
        let mut d = ConfigDiff::default();
        for c in &new.cameras {
            match self.cameras.iter().find(|o| o.id == c.id) {
                None => d.cameras_added.push(c.clone()),
                Some(o) if o != c => d.cameras_changed.push(CameraChange { old: o.clone(), new: c.clone() }),
                Some(_) => {}
            }
        }
        d.cameras_removed =
            self.cameras.iter().filter(|o| !new.cameras.iter().any(|c| c.id == o.id)).map(|o| o.id.clone()).collect();

        fn note(keys: &mut Vec<&'static str>, changed: bool, key: &'static str) {
            if changed {
                keys.push(key);
            }
        }
        let (a, b) = (&self.server, &new.server);
        let mut live = |changed, key| note(&mut d.live, changed, key);
        live(a.max_message_bytes != b.max_message_bytes, "server.max_message_bytes");
        live(a.rate_limit_per_sec != b.rate_limit_per_sec, "server.rate_limit_per_sec");
        live(a.rate_limit_burst != b.rate_limit_burst, "server.rate_limit_burst");
        live(a.shutdown_grace != b.shutdown_grace, "server.shutdown_grace_ms");
        live(self.storage.retention != new.storage.retention, "storage.retention_policy");
        live(self.snapshots != new.snapshots, "snapshots");
        live(self.log != new.log, "log.level");
        let mut restart = |changed, key| note(&mut d.restart, changed, key);
        restart(a.listen != b.listen, "server.listen");
        restart(a.max_connections != b.max_connections, "server.max_connections");
        restart(a.notification_queue != b.notification_queue, "server.notification_queue");
        restart(a.watch_config != b.watch_config, "server.watch_config");
        restart(self.auth != new.auth, "auth");
        restart(self.storage.root != new.storage.root, "storage.root");
        restart(self.storage.min_free_bytes != new.storage.min_free_bytes, "storage.min_free_mb");
        restart(self.storage.roots != new.storage.roots, "storage.roots");
        restart(self.storage.retention_interval != new.storage.retention_interval, "storage.retention_interval_s");
        restart(self.monitor != new.monitor, "monitor");
        restart(self.recording != new.recording, "recording");
        restart(self.rtsp_server != new.rtsp_server, "rtsp_server");
        restart(self.webrtc != new.webrtc, "webrtc");
        restart(self.hls != new.hls, "hls");
        restart(self.rtmp != new.rtmp, "rtmp");
        restart(self.srt != new.srt, "srt");
        restart(self.v4l2 != new.v4l2, "v4l2");
        restart(self.inference != new.inference, "inference");
        restart(self.discovery != new.discovery, "discovery");
        restart(self.telemetry != new.telemetry, "telemetry");
        d
    }

    /// The configuration the service runs with after applying `diff` of `new`: cameras and live settings from `new`,
    /// the settings that need a restart as they were.
    pub fn applying(&self, new: &Config) -> Config {
        let mut next = self.clone();
        next.cameras = new.cameras.clone();
        next.server.max_message_bytes = new.server.max_message_bytes;
        next.server.rate_limit_per_sec = new.server.rate_limit_per_sec;
        next.server.rate_limit_burst = new.server.rate_limit_burst;
        next.server.shutdown_grace = new.server.shutdown_grace;
        next.storage.retention = new.storage.retention.clone();
        next.snapshots = new.snapshots.clone();
        next.log = new.log.clone();
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::from_toml("").expect("empty config is valid");
        assert!(c.server.listen.ip().is_loopback());
        assert_eq!(c.monitor.stall_timeout, Duration::from_secs(2));
        assert!(c.monitor.reconnect_initial <= Duration::from_millis(500));
        assert_eq!(c.telemetry.otlp_endpoint, None, "no export unless asked for");
    }

    #[test]
    fn telemetry_takes_an_http_collector() {
        let c = Config::from_toml("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsampling_ratio = 0.25")
            .expect("valid telemetry");
        assert_eq!(c.telemetry.otlp_endpoint.as_ref().map(|u| u.as_str()), Some("http://127.0.0.1:4318/"));
        assert_eq!((c.telemetry.service_name.as_str(), c.telemetry.sampling_ratio), ("camhub", 0.25));
    }

    #[test]
    fn a_reload_applies_cameras_and_live_keys_and_keeps_the_rest_until_a_restart() {
        let old = Config::from_toml(
            "[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/a\"\n[[cameras]]\nid = \"b\"\nurl = \"rtsp://h/b\"\n\
             [[cameras]]\nid = \"c\"\nurl = \"rtsp://h/c\"\n",
        )
        .unwrap();
        let new = Config::from_toml(
            "[server]\nlisten = \"127.0.0.1:9000\"\nrate_limit_per_sec = 50\n[log]\nlevel = \"debug\"\n\
             [snapshots]\nquality = 50\n[storage]\nmax_age_days = 3\n\
             [[cameras]]\nid = \"a\"\nurl = \"rtsp://h/a\"\n[[cameras]]\nid = \"b\"\nurl = \"rtsp://h/b2\"\n\
             [[cameras]]\nid = \"c\"\nurl = \"rtsp://h/c\"\nrecord = \"always\"\n[[cameras]]\nid = \"d\"\nurl = \"rtsp://h/d\"\n",
        )
        .unwrap();
        let d = old.diff(&new);
        assert_eq!(d.cameras_added.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["d"]);
        assert!(d.cameras_removed.is_empty());
        let changed: Vec<(&str, bool)> = d.cameras_changed.iter().map(|c| (c.new.id.as_str(), c.restarts())).collect();
        assert_eq!(changed, [("b", true), ("c", false)], "a new url restarts, a new record mode does not");
        assert_eq!(
            d.live,
            ["server.rate_limit_per_sec", "storage.retention_policy", "snapshots", "log.level"],
            "{d:?}"
        );
        assert_eq!(d.restart, ["server.listen"]);
        // What runs after the reload differs from the file only by what needs a restart.
        let running = old.applying(&new);
        let after = running.diff(&new);
        assert!(
            after.cameras_added.is_empty() && after.cameras_changed.is_empty() && after.live.is_empty(),
            "{after:?}"
        );
        assert_eq!(after.restart, ["server.listen"]);
        assert_eq!(running.server.listen, old.server.listen);
        assert!(old.diff(&old).is_empty());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[server]\nbogus = 1", "server.bogus"),
            ("[auth]\njwt_secret = \"short\"", "auth.jwt_secret"),
            ("[[cameras]]\nid = \"Bad Id\"\nurl = \"rtsp://h/x\"", "cameras[0].id"),
            ("[[cameras]]\nid = \"a\"\nurl = \"http://h/x\"", "cameras[0].url"),
            (
                "[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/y\"",
                "cameras[1].id",
            ),
            ("[monitor]\nreconnect_jitter = 3.0", "monitor.reconnect_jitter"),
            ("[v4l2]\nmax_fps = 0", "v4l2.max_fps"),
            ("[v4l2]\npreset = \"warp\"", "v4l2.preset"),
            ("[telemetry]\notlp_endpoint = \"127.0.0.1:4318\"", "telemetry.otlp_endpoint"),
            ("[telemetry]\notlp_endpoint = \"https://collector:4318\"", "telemetry.otlp_endpoint"),
            ("[telemetry]\notlp_endpoint = \"http://u:p@collector:4318\"", "telemetry.otlp_endpoint"),
            ("[telemetry]\nsampling_ratio = 1.5", "telemetry.sampling_ratio"),
            ("[telemetry]\nservice_name = \"\"", "telemetry.service_name"),
            ("[telemetry]\nendpoint = \"http://h:4318\"", "telemetry.endpoint"),
            ("[[v4l2.cameras]]\nid = \"door\"", "v4l2.cameras[0].id"),
            ("[[v4l2.cameras]]\nid = \"camera0\"\nwidth = 640", "v4l2.cameras[0].width"),
            ("[[v4l2.cameras]]\nid = \"camera0\"\nformat = \"TOOLONG\"", "v4l2.cameras[0].format"),
            ("[[v4l2.cameras]]\nid = \"camera0\"\nbitrate_kbps = 5", "v4l2.cameras[0].bitrate_kbps"),
            ("[rtsp_server]\nlisten = \"0.0.0.0:8554\"", "rtsp_server.public_host"),
            ("[rtsp_server]\nusers = [{ user = \"a\", password = \"short\" }]", "rtsp_server.users[0].password"),
            ("[webrtc]\nice_servers = [\"http://x\"]", "webrtc.ice_servers[0]"),
            ("[webrtc]\nice_servers = [\"turn://h:3478\"]", "webrtc.ice_servers[0]"),
            ("[webrtc]\ncandidate_addresses = [\"nope\"]", "webrtc.candidate_addresses[0]"),
            ("[hls]\npart_ms = 50", "hls.part_ms"),
            ("[hls]\nsegments = 1", "hls.segments"),
            ("[discovery]\nscan_interval = 5", "discovery.scan_interval"),
            ("[discovery]\nscan_interval = 90000", "discovery.scan_interval"),
            ("[discovery]\ninterfaces = [\"\"]", "discovery.interfaces[0]"),
            ("[discovery]\ninterfaces = [\"a-name-far-too-long\"]", "discovery.interfaces[0]"),
            ("[discovery]\nhosts = [\"10.0.0.0/24\"]", "discovery.hosts[0]"),
            ("[discovery]\npassword = \"secret\"", "discovery.password"),
            ("[discovery]\nauto_add = \"maybe\"", "discovery.auto_add"),
            ("[[storage.roots]]\npath = \"relative/dir\"", "storage.roots[0].path"),
            ("[[storage.roots]]\nmin_free_mb = 5", "storage.roots[0].path"),
            ("[[storage.roots]]\npath = \"/mnt/a\"\n[[storage.roots]]\npath = \"/mnt/a/b\"", "storage.roots[1].path"),
            ("[[storage.roots]]\npath = \"/mnt/a\"\nsize = 5", "storage.roots[0].size"),
        ];
        for (text, key) in cases {
            let e = Config::from_toml(text).expect_err(text);
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }

    #[test]
    fn the_shipped_configs_are_valid_and_the_example_shows_the_defaults() {
        let example = Config::from_toml(include_str!("../config/camhub.example.toml")).expect("example is valid");
        let defaults = Config::from_toml("").expect("defaults");
        assert_eq!(format!("{:?}", example.server), format!("{:?}", defaults.server));
        assert_eq!(format!("{:?}", example.monitor), format!("{:?}", defaults.monitor));
        assert_eq!(format!("{:?}", example.recording), format!("{:?}", defaults.recording));
        assert_eq!(format!("{:?}", example.storage), format!("{:?}", defaults.storage));
        assert_eq!(format!("{:?}", example.v4l2), format!("{:?}", defaults.v4l2));
        assert_eq!(format!("{:?}", example.rtsp_server), format!("{:?}", defaults.rtsp_server));
        assert_eq!(format!("{:?}", example.webrtc), format!("{:?}", defaults.webrtc));
        assert_eq!(example.hls, defaults.hls);
        assert_eq!(format!("{:?}", example.discovery), format!("{:?}", defaults.discovery));
        Config::from_toml(include_str!("../config/demo.toml")).expect("demo is valid");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = Config::from_toml("[server]\nmax_connections = \"many\"").expect_err("wrong type");
        assert!(e.to_string().contains("max_connections"), "{e}");
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let c = Config::from_toml(
            "[rtsp_server]\nusers = [{ user = \"vlc\", password = \"hunter2hunter2\" }]\n\
             [webrtc]\nice_servers = [\"turn://u:turnsecret@turn.example:3478\"]\n\
             [discovery]\nusername = \"onvif\"\npassword = \"discoverysecret\"",
        )
        .expect("valid");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("turnsecret"), "{shown}");
        assert!(!shown.contains("discoverysecret"), "{shown}");
        let e = Config::from_toml("[webrtc]\nice_servers = [\"turn://u:turnsecret@\"]").expect_err("no host");
        assert!(!e.to_string().contains("turnsecret"), "{e}");
    }

    const MODELS: &str = "[inference]\nruntime = \"/opt/ort/libonnxruntime.so\"\n\
        [[inference.models]]\nname = \"coco\"\npath = \"/m/coco.onnx\"\nkind = \"boxes\"\n\
        [[inference.models]]\nname = \"faces\"\npath = \"/m/face.onnx\"\nkind = \"blazeface\"\n";

    #[test]
    fn inference_and_detection_read_with_their_defaults() {
        let text = format!(
            "{MODELS}[[cameras]]\nid = \"door\"\nurl = \"rtsp://h/x\"\nrecord = \"events\"\n\
             detect = {{ model = \"coco\", labels = [\"person\"], fps = 2 }}\n"
        );
        let c = Config::from_toml(&text).expect("valid");
        let i = c.inference.expect("inference");
        assert_eq!((i.provider, i.threads, i.queue), (Provider::Cpu, 1, 4));
        assert_eq!(i.models[0].labels.len(), 80);
        assert_eq!(i.models[0].labels[0], "person");
        assert_eq!((i.models[0].input, i.models[0].min_score), (InputRange::Byte, 0.4));
        assert_eq!((i.models[1].kind, i.models[1].labels.clone()), (ModelKind::BlazeFace, vec!["face".to_owned()]));
        let d = c.cameras[0].detect.clone().expect("detect");
        assert_eq!(
            (d.fps, d.enabled, d.end_after, d.post_capture),
            (2.0, true, Duration::from_secs(3), Duration::from_secs(5))
        );
        assert_eq!(c.cameras[0].record, RecordMode::Events);
        assert!(Config::from_toml("").expect("valid").inference.is_none());
        let local = format!("{MODELS}[[v4l2.cameras]]\nid = \"camera0\"\ndetect = {{ model = \"faces\" }}\n");
        let c = Config::from_toml(&local).expect("valid");
        assert_eq!(
            c.detecting().iter().map(|(id, d, _)| (id.as_str(), d.model.as_str())).collect::<Vec<_>>(),
            [("camera0", "faces")]
        );
    }

    #[test]
    fn bad_detection_settings_name_their_key() {
        let camera = |detect: &str| format!("{MODELS}[[cameras]]\nid = \"c\"\nurl = \"rtsp://h/x\"\n{detect}\n");
        let cases = [
            (camera("detect = { model = \"nope\" }"), "cameras[0].detect.model"),
            (camera("detect = { model = \"coco\", labels = [\"unicorn\"] }"), "cameras[0].detect.labels"),
            (camera("detect = { model = \"faces\", record_labels = [\"person\"] }"), "cameras[0].detect.record_labels"),
            (camera("detect = { model = \"coco\", fps = 0 }"), "cameras[0].detect.fps"),
            (camera("detect = { model = \"coco\", min_score = 1.5 }"), "cameras[0].detect.min_score"),
            (camera("record = \"events\""), "cameras[0].record"),
            (format!("{MODELS}[[v4l2.cameras]]\nid = \"camera0\"\nrecord = \"events\"\n"), "v4l2.cameras[0].record"),
            (
                format!("{MODELS}[[v4l2.cameras]]\nid = \"camera0\"\ndetect = {{ model = \"x\" }}\n"),
                "v4l2.cameras[0].detect.model",
            ),
            ("[inference]\nprovider = \"tpu\"\n".to_owned(), "inference.provider"),
            (
                "[[inference.models]]\nname = \"a b\"\npath = \"/m\"\nkind = \"boxes\"\n".to_owned(),
                "inference.models[0].name",
            ),
            (
                "[[inference.models]]\nname = \"a\"\npath = \"/m\"\nkind = \"rcnn\"\n".to_owned(),
                "inference.models[0].kind",
            ),
            (
                "[[cameras]]\nid = \"c\"\nurl = \"rtsp://h/x\"\ndetect = { model = \"coco\" }\n".to_owned(),
                "cameras[0].detect.model",
            ),
        ];
        for (text, key) in cases {
            let e = Config::from_toml(&text).expect_err(key);
            assert!(e.key.starts_with(key), "{key}: {e}");
        }
    }
}
