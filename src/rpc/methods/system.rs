//! Methods about the service as a whole: `ping`, `authenticate`, `get_system_status`, `get_server_info`,
//! `get_status`, `get_metrics` and `reload_config`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NoParams;
use crate::app::Phase;
use crate::base::time::iso;
use crate::base::{CameraStatus, Role};
use crate::error::{Error, Result};
use crate::rpc::Rpc;
use crate::rpc::session::Session;

/// Longest config text `reload_config` compares.
const MAX_CONFIG_CHARS: usize = 100_000;

/// Longest credential `authenticate` reads.
const MAX_TOKEN_CHARS: usize = 4096;

pub async fn ping(_: Arc<Rpc>, _: Arc<Session>, _: NoParams) -> Result<String> {
    Ok("pong".to_owned())
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthenticateParams {
    pub auth_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Authenticated {
    pub authenticated: bool,
    pub role: Role,
    pub permissions: Vec<String>,
    /// ISO 8601; `null` for API keys, which are valid until revoked.
    pub expires_at: Option<String>,
    pub session_id: String,
    pub user_id: String,
}

pub async fn authenticate(rpc: Arc<Rpc>, session: Arc<Session>, p: AuthenticateParams) -> Result<Authenticated> {
    let principal = verify(&rpc, &p.auth_token).await?;
    let result = Authenticated {
        authenticated: true,
        role: principal.role,
        permissions: principal.role.permissions().iter().map(|p| (*p).to_owned()).collect(),
        expires_at: principal.expires_at.map(iso),
        session_id: session.session_id.clone(),
        user_id: principal.user_id.clone(),
    };
    session.set_principal(principal, &p.auth_token);
    Ok(result)
}

/// Verifies a credential a client presented (`authenticate`, or `auth_token` in any request's params).
pub(crate) async fn verify(rpc: &Rpc, credential: &str) -> Result<crate::auth::Principal> {
    if credential.len() > MAX_TOKEN_CHARS {
        return Err(Error::invalid_param("auth_token", "at most 4096 characters"));
    }
    rpc.app.authenticate(credential).await
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    Starting,
    Partial,
    Ready,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SystemStatus {
    pub status: Readiness,
    pub message: String,
    pub available_cameras: Vec<String>,
    pub discovery_active: bool,
}

pub async fn system_status(rpc: Arc<Rpc>, _: Arc<Session>, _: NoParams) -> Result<SystemStatus> {
    let app = &rpc.app;
    let cameras = app.cameras().list();
    let available: Vec<String> =
        cameras.iter().filter(|c| c.state().status == CameraStatus::Connected).map(|c| c.id.to_string()).collect();
    let counted = format!("{} of {} cameras connected", available.len(), cameras.len());
    let (status, message) = match app.phase() {
        Phase::Starting => (Readiness::Starting, "camhub is starting".to_owned()),
        _ if available.len() == cameras.len() => (Readiness::Ready, counted),
        _ => (Readiness::Partial, counted),
    };
    Ok(SystemStatus { status, message, available_cameras: available, discovery_active: app.discovery_active() })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ServerInfo {
    pub name: String,
    pub version: String,
    pub build_date: String,
    pub architecture: String,
    pub capabilities: Vec<String>,
    pub supported_formats: Vec<String>,
    pub supported_codecs: Vec<String>,
    pub max_cameras: usize,
    /// The compiler camhub was built with. The field is named for the contract's clients, which read the Go edition's
    /// toolchain here; camhub is Rust, and says so.
    pub go_version: String,
    pub rust_version: String,
}

/// What camhub can do, as `get_server_info.capabilities` names it.
const CAPABILITIES: &[&str] = &[
    "rtsp_ingest",
    "camera_monitor",
    "auto_reconnect",
    "notifications",
    "api_keys",
    "jwt",
    "recording",
    "pre_roll",
    "snapshots",
    "retention",
    "rtsp_server",
    "webrtc_whep",
    "v4l2_cameras",
    "usb_hotplug",
    "file_sources",
    "stream_keys",
    "whip_ingest",
    "network_discovery",
];

pub async fn server_info(rpc: Arc<Rpc>, _: Arc<Session>, _: NoParams) -> Result<ServerInfo> {
    let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
    let formats: Vec<&str> = crate::config::RecordingFormat::ALL.iter().map(|f| f.as_str()).collect();
    let codecs: Vec<&str> = crate::base::Codec::ALL.iter().map(|c| c.as_str()).collect();
    Ok(ServerInfo {
        name: crate::base::NAME.to_owned(),
        version: crate::base::VERSION.to_owned(),
        build_date: env!("CAMHUB_BUILD_DATE").to_owned(),
        architecture: std::env::consts::ARCH.to_owned(),
        capabilities: {
            let mut c: Vec<String> = owned(CAPABILITIES);
            if rpc.app.detections().available() {
                c.push("detection".to_owned());
            }
            let config = rpc.app.config();
            for (enabled, name) in [(config.rtmp.enabled, "rtmp_ingest"), (config.srt.enabled, "srt_ingest")] {
                if enabled {
                    c.push(name.to_owned());
                }
            }
            c
        },
        supported_formats: owned(&formats),
        supported_codecs: owned(&codecs),
        max_cameras: crate::camera::manager::MAX_CAMERAS,
        go_version: env!("CAMHUB_RUSTC_VERSION").to_owned(),
        rust_version: env!("CAMHUB_RUSTC_VERSION").to_owned(),
    })
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ComponentState {
    Running,
    Stopped,
    Error,
    Starting,
    Stopping,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Components {
    pub websocket_server: ComponentState,
    pub camera_monitor: ComponentState,
    pub media_engine: ComponentState,
    /// The media engine under the name the contract's clients read (the Go edition ran MediaMTX).
    pub mediamtx: ComponentState,
    pub database: ComponentState,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    /// `HEALTHY`, `DEGRADED`, `UNHEALTHY`.
    pub status: String,
    pub uptime: u64,
    pub version: String,
    pub components: Components,
}

pub async fn status(rpc: Arc<Rpc>, _: Arc<Session>, _: NoParams) -> Result<Status> {
    let app = &rpc.app;
    let running = match app.phase() {
        Phase::Starting => ComponentState::Starting,
        Phase::Running => ComponentState::Running,
        Phase::Stopping => ComponentState::Stopping,
    };
    Ok(Status {
        status: app.health().as_str().to_owned(),
        uptime: app.uptime_secs(),
        version: crate::base::VERSION.to_owned(),
        components: Components {
            websocket_server: running,
            camera_monitor: running,
            media_engine: running,
            mediamtx: running,
            database: running,
        },
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SystemMetrics {
    /// CPU of the process, in percent of one core.
    pub cpu_usage: f64,
    /// Resident memory of the process, in percent of the machine's.
    pub memory_usage: f64,
    /// Resident memory of the process, in bytes.
    pub memory_bytes: u64,
    /// Used space of the disk holding the data dir, in percent.
    pub disk_usage: f64,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CameraFigures {
    pub frames: u64,
    pub bytes: u64,
    pub fps: f64,
    pub bitrate: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CameraMetrics {
    pub total: usize,
    pub connected: usize,
    /// The same as `connected`, under the contract's name.
    pub connected_cameras: usize,
    pub cameras: BTreeMap<String, CameraFigures>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RecordingMetrics {
    pub active: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StreamMetrics {
    pub active_streams: usize,
    pub total_streams: usize,
    pub total_viewers: usize,
    pub webrtc_sessions: usize,
    pub bytes_sent: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionMetrics {
    pub active_connections: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Metrics {
    /// ISO 8601.
    pub timestamp: String,
    pub system_metrics: SystemMetrics,
    pub camera_metrics: CameraMetrics,
    pub recording_metrics: RecordingMetrics,
    pub stream_metrics: StreamMetrics,
    pub connection_metrics: ConnectionMetrics,
}

pub async fn metrics(rpc: Arc<Rpc>, _: Arc<Session>, _: NoParams) -> Result<Metrics> {
    let app = &rpc.app;
    let process = app.process_metrics().await?;
    let (connected, total) = app.camera_counts();
    let cameras = app.cameras().list();
    let figures = cameras
        .iter()
        .map(|c| {
            let s = c.hub.stats();
            (c.id.to_string(), CameraFigures { frames: s.frames, bytes: s.bytes, fps: s.fps, bitrate: s.bitrate_bps })
        })
        .collect();
    Ok(Metrics {
        timestamp: iso(SystemTime::now()),
        system_metrics: SystemMetrics {
            cpu_usage: f64::from(process.cpu_percent),
            memory_usage: (process.memory_percent * 100.0).round() / 100.0,
            memory_bytes: process.rss_bytes,
            disk_usage: process.disk_usage_percent,
            threads: process.threads,
        },
        camera_metrics: CameraMetrics { total, connected, connected_cameras: connected, cameras: figures },
        recording_metrics: RecordingMetrics { active: app.recordings().active_count() },
        stream_metrics: super::streams::metrics(&rpc),
        connection_metrics: ConnectionMetrics { active_connections: rpc.sessions.len() },
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadParams {
    /// Say what a reload would do, and apply nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// A config's TOML text to compare with the config in force instead of the file camhub reads, never applied (a
    /// dry run; what `camhub check-config` sends before a new file is put in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_toml: Option<String>,
}

/// What a reload of the config file did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Reloaded {
    /// Whether changes were applied: false for a dry run, or when the file holds no change.
    pub applied: bool,
    /// Whether the file differs from the config in force.
    pub changed: bool,
    pub cameras_added: Vec<String>,
    pub cameras_removed: Vec<String>,
    /// Cameras whose entry changed; those in `cameras_restarted` were started again (source, name or sound), the
    /// others changed record mode or detection while running.
    pub cameras_changed: Vec<String>,
    pub cameras_restarted: Vec<String>,
    /// Keys that changed and apply now.
    pub applied_live: Vec<String>,
    /// Keys that changed and need a restart; camhub runs on with their old values.
    pub restart_required: Vec<String>,
    /// Changes that could not be applied, each naming its camera or key.
    pub problems: Vec<String>,
}

pub async fn reload_config(rpc: Arc<Rpc>, _: Arc<Session>, p: ReloadParams) -> Result<Reloaded> {
    if p.config_toml.as_ref().is_some_and(|t| t.len() > MAX_CONFIG_CHARS) {
        return Err(Error::invalid_param("config_toml", "at most 100000 characters"));
    }
    // A config's text is only ever compared, never applied.
    let dry_run = p.dry_run || p.config_toml.is_some();
    let trigger = if dry_run { crate::reload::Trigger::DryRun } else { crate::reload::Trigger::Api };
    let r = rpc.app.reload(trigger, p.config_toml).await?;
    let strings = |keys: &[&str]| keys.iter().map(|k| (*k).to_owned()).collect();
    Ok(Reloaded {
        applied: r.applied,
        changed: r.changed(),
        applied_live: strings(&r.live),
        restart_required: strings(&r.restart_required),
        cameras_added: r.cameras_added,
        cameras_removed: r.cameras_removed,
        cameras_changed: r.cameras_changed,
        cameras_restarted: r.cameras_restarted,
        problems: r.problems,
    })
}
