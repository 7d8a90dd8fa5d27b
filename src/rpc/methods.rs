//! The JSON-RPC methods: who may call each one (one table, checked by the connection before any method runs), their
//! typed params (validated, -32602 naming the parameter and rule) and their results (shaped by `wire`).

use std::future::Future;
use std::sync::Arc;

use jsonrpsee::RpcModule;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::session::Session;
use super::{RpcContext, errors, wire};
use crate::app::{self, Phase};
use crate::auth::Role;
use crate::camera::{self, Camera, CameraId, CameraStatus};
use crate::error::{Error, Result};
use crate::events::TOPICS;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No authentication.
    Public,
    /// An authenticated connection with at least this role.
    AtLeast(Role),
}

use Access::{AtLeast, Public};
use Role::{Admin, Operator, Viewer};

/// Every method and its minimum role, per the contract. A method missing here cannot be called (fail closed).
pub const ACCESS: &[(&str, Access)] = &[
    ("ping", Public),
    ("authenticate", Public),
    ("get_camera_list", AtLeast(Viewer)),
    ("get_camera_status", AtLeast(Viewer)),
    ("get_camera_capabilities", AtLeast(Viewer)),
    ("get_system_status", AtLeast(Viewer)),
    ("get_server_info", AtLeast(Viewer)),
    ("subscribe_events", AtLeast(Viewer)),
    ("unsubscribe_events", AtLeast(Viewer)),
    ("get_subscription_stats", AtLeast(Viewer)),
    ("get_external_streams", AtLeast(Viewer)),
    ("add_external_stream", AtLeast(Operator)),
    ("remove_external_stream", AtLeast(Operator)),
    ("list_recordings", AtLeast(Viewer)),
    ("list_snapshots", AtLeast(Viewer)),
    ("get_recording_info", AtLeast(Viewer)),
    ("get_snapshot_info", AtLeast(Viewer)),
    ("take_snapshot", AtLeast(Operator)),
    ("start_recording", AtLeast(Operator)),
    ("stop_recording", AtLeast(Operator)),
    ("start_streaming", AtLeast(Operator)),
    ("stop_streaming", AtLeast(Operator)),
    ("get_stream_url", AtLeast(Viewer)),
    ("get_stream_status", AtLeast(Viewer)),
    ("get_streams", AtLeast(Viewer)),
    ("get_status", AtLeast(Admin)),
    ("get_metrics", AtLeast(Admin)),
    ("delete_recording", AtLeast(Admin)),
    ("delete_snapshot", AtLeast(Admin)),
    ("get_storage_info", AtLeast(Admin)),
    ("set_retention_policy", AtLeast(Admin)),
    ("cleanup_old_files", AtLeast(Admin)),
];

/// Methods answered from memory (no database, disk or pipeline): the connection answers them in place instead of in a
/// task of their own.
const FROM_MEMORY: &[&str] = &[
    "ping",
    "get_camera_list",
    "get_camera_status",
    "get_camera_capabilities",
    "get_system_status",
    "get_server_info",
    "get_status",
    "get_metrics",
    "subscribe_events",
    "unsubscribe_events",
    "get_subscription_stats",
    "get_external_streams",
    "start_streaming",
    "get_stream_url",
    "get_stream_status",
    "get_streams",
];

pub fn answered_from_memory(method: &str) -> bool {
    FROM_MEMORY.contains(&method)
}

pub fn access(method: &str) -> Option<Access> {
    ACCESS.iter().find(|(name, _)| *name == method).map(|(_, a)| *a)
}

/// Builds the module with every method registered.
pub fn module(ctx: Arc<RpcContext>) -> RpcModule<RpcContext> {
    let mut m = RpcModule::from_arc(ctx);
    register(&mut m, "ping", |_, _, _: NoParams| async { Ok("pong") });
    register(&mut m, "authenticate", authenticate);
    register(&mut m, "get_camera_list", |ctx, _, _: NoParams| async move {
        Ok(wire::camera_list(&ctx.app.cameras.list(), &ctx.app.publish))
    });
    register(&mut m, "get_camera_status", |ctx, _, p: DeviceParams| async move {
        Ok(wire::detail(&*find_camera(&ctx, &p.device)?, &ctx.app.publish))
    });
    register(&mut m, "get_camera_capabilities", |ctx, _, p: DeviceParams| async move {
        camera_capabilities(&*find_camera(&ctx, &p.device)?)
    });
    register(&mut m, "get_system_status", |ctx, _, _: NoParams| async move { Ok(system_status(&ctx)) });
    register(&mut m, "get_server_info", |_, _, _: NoParams| async { Ok(server_info()) });
    register(&mut m, "get_status", |ctx, _, _: NoParams| async move { Ok(status(&ctx)) });
    register(&mut m, "get_metrics", |ctx, _, _: NoParams| async move { Ok(metrics(&ctx)) });
    register(&mut m, "subscribe_events", subscribe_events);
    register(&mut m, "unsubscribe_events", unsubscribe_events);
    register(&mut m, "get_subscription_stats", |ctx, session, _: NoParams| async move {
        Ok(subscription_stats(&ctx, &session))
    });
    register(&mut m, "add_external_stream", add_external_stream);
    register(&mut m, "remove_external_stream", remove_external_stream);
    register(&mut m, "get_external_streams", |ctx, _, _: NoParams| async move { Ok(external_streams(&ctx)) });
    register(&mut m, "start_streaming", |ctx, _, p: DeviceParams| async move { start_streaming(&ctx, &p.device) });
    register(&mut m, "stop_streaming", stop_streaming);
    register(&mut m, "get_stream_url", |ctx, _, p: DeviceParams| async move { stream_url(&ctx, &p.device) });
    register(&mut m, "get_stream_status", |ctx, _, p: DeviceParams| async move { stream_status(&ctx, &p.device) });
    register(&mut m, "get_streams", |ctx, _, _: NoParams| async move { Ok(streams(&ctx)) });
    super::storage_methods::register_all(&mut m);
    m
}

/// Registers `handler` under `name`: params parsed and validated into `P`, errors mapped in `errors`.
pub(super) fn register<P, R, F, Fut>(m: &mut RpcModule<RpcContext>, name: &'static str, handler: F)
where
    P: DeserializeOwned + Send + 'static,
    R: Serialize + Clone + Send + 'static,
    F: Fn(Arc<RpcContext>, Arc<Session>, P) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    debug_assert!(access(name).is_some(), "method {name} has no access rule");
    m.register_async_method(name, move |params, ctx, ext| {
        let handler = handler.clone();
        async move {
            let session = ext
                .get::<Arc<Session>>()
                .cloned()
                .ok_or_else(|| ErrorObjectOwned::from(Error::internal("request without session")))?;
            let params = parse_params::<P>(&params)?;
            handler(ctx, session, params).await.map_err(ErrorObjectOwned::from)
        }
    })
    .expect("method names are unique");
}

/// Params are named (a JSON object); absent params are an empty object.
fn parse_params<P: DeserializeOwned>(params: &Params<'_>) -> Result<P> {
    let raw = params.as_str().unwrap_or("{}");
    if !raw.trim_start().starts_with('{') {
        return Err(Error::invalid_param("params", "must be an object of named parameters"));
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(&mut de).map_err(errors::from_params_error)
}

// ---- params ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoParams {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceParams {
    device: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthenticateParams {
    auth_token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeParams {
    topics: Vec<String>,
    filters: Option<Filters>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filters {
    device: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeParams {
    topics: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddExternalStreamParams {
    stream_url: String,
    stream_name: String,
    stream_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveExternalStreamParams {
    stream_url: Option<String>,
    device: Option<String>,
}

// ---- methods ----

pub(super) fn find_camera(ctx: &RpcContext, device: &str) -> Result<Arc<Camera>> {
    let id = CameraId::parse(device).map_err(|rule| Error::invalid_param("device", rule))?;
    ctx.app.cameras.get(&id).ok_or_else(|| Error::camera_not_found(device))
}

async fn authenticate(ctx: Arc<RpcContext>, session: Arc<Session>, p: AuthenticateParams) -> Result<Value> {
    if p.auth_token.len() > 4096 {
        return Err(Error::invalid_param("auth_token", "at most 4096 characters"));
    }
    let principal = ctx.app.auth.verify(&p.auth_token).await?;
    let result = json!({
        "authenticated": true,
        "role": principal.role.as_str(),
        "permissions": principal.role.permissions(),
        "expires_at": principal.expires_at,
        "session_id": session.session_id,
        "user_id": principal.user_id,
    });
    session.set_principal(principal);
    Ok(result)
}

fn camera_capabilities(camera: &Camera) -> Result<Value> {
    let stats = camera.hub.stats();
    let modes = wire::modes(camera, &stats);
    let caps = wire::capabilities(&modes);
    let status = camera.state().status;
    let validation = match (status, stats.frames) {
        (CameraStatus::Connected, _) => "CONFIRMED",
        (_, 0) => "NONE",
        _ => "DISCONNECTED",
    };
    let mut fps_options: Vec<f64> = modes.iter().flat_map(|m| m.fps.iter().copied()).collect();
    fps_options.sort_by(|a, b| b.total_cmp(a));
    fps_options.dedup();
    Ok(json!({
        "device": camera.id,
        "formats": caps.formats,
        "resolutions": caps.resolutions,
        "fps_options": fps_options,
        "modes": modes,
        "validation_status": validation,
    }))
}

fn system_status(ctx: &RpcContext) -> Value {
    let cameras = ctx.app.cameras.list();
    let available: Vec<&str> =
        cameras.iter().filter(|c| c.state().status == CameraStatus::Connected).map(|c| c.id.as_str()).collect();
    let (status, message) = match ctx.app.phase() {
        Phase::Starting => ("starting", "camhub is starting".to_owned()),
        _ if available.len() == cameras.len() => {
            ("ready", format!("{} of {} cameras connected", available.len(), cameras.len()))
        }
        _ => ("partial", format!("{} of {} cameras connected", available.len(), cameras.len())),
    };
    json!({ "status": status, "message": message, "available_cameras": available,
        "discovery_active": ctx.app.discovery_active.load(std::sync::atomic::Ordering::Relaxed),
    })
}

fn server_info() -> Value {
    json!({
        "name": app::NAME,
        "version": app::VERSION,
        "build_date": env!("CAMHUB_BUILD_DATE"),
        "architecture": std::env::consts::ARCH,
        "capabilities": [
            "rtsp_ingest", "camera_monitor", "auto_reconnect", "notifications", "api_keys", "jwt",
            "recording", "pre_roll", "snapshots", "retention", "rtsp_server", "webrtc_whep", "v4l2_cameras",
            "usb_hotplug",
        ],
        "supported_formats": ["fmp4", "mp4", "mkv"],
        "supported_codecs": ["H264", "H265"],
        "max_cameras": camera::manager::MAX_CAMERAS,
    })
}

fn status(ctx: &RpcContext) -> Value {
    let app = &ctx.app;
    let running = match app.phase() {
        Phase::Starting => "STARTING",
        Phase::Running => "RUNNING",
        Phase::Stopping => "STOPPING",
    };
    json!({
        "status": app.health().as_str(),
        "uptime": app.uptime_secs(),
        "version": app::VERSION,
        "components": {
            "websocket_server": running,
            "camera_monitor": running,
            "media_engine": running,
            "database": running,
        },
    })
}

fn metrics(ctx: &RpcContext) -> Value {
    let app = &ctx.app;
    let cameras = app.cameras.list();
    let (connected, total) = app.camera_counts();
    let per_camera: serde_json::Map<String, Value> = cameras
        .iter()
        .map(|c| {
            let s = c.hub.stats();
            (c.id.to_string(), json!({ "frames": s.frames, "bytes": s.bytes, "fps": s.fps, "bitrate": s.bitrate_bps }))
        })
        .collect();
    let process = ctx.process_metrics();
    json!({
        "timestamp": crate::storage::db::now_ms() as f64 / 1000.0,
        "system_metrics": {
            "cpu_usage": process.cpu_percent,
            "memory_usage": process.rss_bytes,
            "disk_usage": process.disk_usage_percent,
            "threads": process.threads,
        },
        "camera_metrics": { "total": total, "connected": connected, "cameras": per_camera },
        "recording_metrics": { "active": app.recordings.active_count() },
        "stream_metrics": stream_metrics(ctx),
        "connection_metrics": { "active_connections": ctx.sessions.len() },
    })
}

fn stream_metrics(ctx: &RpcContext) -> Value {
    let publish = &ctx.app.publish;
    let (mut total, mut active, mut viewers, mut bytes) = (0, 0, 0, 0);
    for camera in ctx.app.cameras.list() {
        if !publish.is_published(&camera.id) {
            continue;
        }
        total += 1;
        active += usize::from(camera.state().status == CameraStatus::Connected);
        let c = publish.counters(&camera.id);
        viewers += c.readers();
        bytes += c.bytes_sent.load(std::sync::atomic::Ordering::Relaxed);
    }
    json!({
        "active_streams": active,
        "total_streams": total,
        "total_viewers": viewers,
        "webrtc_sessions": publish.whep.count(),
        "bytes_sent": bytes,
    })
}

// ---- streaming ----
//
// Every camera is published (RTSP and WHEP) from the moment it exists. `stop_streaming` withdraws one: its readers are
// disconnected and new ones refused until `start_streaming` publishes it again (or camhub restarts).

/// What a stream is called and where it is, shared by the streaming results.
fn stream_identity(ctx: &RpcContext, camera: &Camera) -> serde_json::Map<String, Value> {
    let urls = ctx.app.publish.urls(&camera.id);
    let mut m = serde_json::Map::new();
    m.insert("device".into(), json!(camera.id));
    m.insert("stream_name".into(), json!(camera.id));
    m.insert("stream_url".into(), json!(urls.rtsp));
    m.insert("webrtc_url".into(), json!(urls.webrtc));
    m
}

/// Published, with a connected camera, over at least one protocol.
fn stream_ready(ctx: &RpcContext, camera: &Camera) -> bool {
    let publish = &ctx.app.publish;
    publish.is_published(&camera.id)
        && camera.state().status == CameraStatus::Connected
        && (publish.rtsp_enabled() || publish.webrtc_enabled())
}

fn start_streaming(ctx: &RpcContext, device: &str) -> Result<Value> {
    let camera = find_camera(ctx, device)?;
    let since = ctx.app.publish.start_streaming(&camera.id);
    let mut r = stream_identity(ctx, &camera);
    r.insert("status".into(), json!("STARTED"));
    r.insert("start_time".into(), json!(super::storage_methods::iso(since)));
    Ok(Value::Object(r))
}

async fn stop_streaming(ctx: Arc<RpcContext>, _: Arc<Session>, p: DeviceParams) -> Result<Value> {
    let camera = find_camera(&ctx, &p.device)?;
    let since = ctx.app.publish.stop_streaming(&camera.id).await?;
    let end = std::time::SystemTime::now();
    let mut r = stream_identity(&ctx, &camera);
    r.insert("status".into(), json!("STOPPED"));
    r.insert("start_time".into(), json!(super::storage_methods::iso(since)));
    r.insert("end_time".into(), json!(super::storage_methods::iso(end)));
    let duration = end.duration_since(since).unwrap_or_default().as_secs_f64();
    r.insert("duration".into(), json!((duration * 1000.0).round() / 1000.0));
    Ok(Value::Object(r))
}

fn stream_url(ctx: &RpcContext, device: &str) -> Result<Value> {
    let camera = find_camera(ctx, device)?;
    let ready = stream_ready(ctx, &camera);
    let status = match (ready, camera.state().status) {
        (true, _) => "READY",
        (false, CameraStatus::Error) => "ERROR",
        _ => "NOT_READY",
    };
    let mut r = stream_identity(ctx, &camera);
    r.insert("available".into(), json!(ready));
    r.insert("active_consumers".into(), json!(ctx.app.publish.counters(&camera.id).readers()));
    r.insert("stream_status".into(), json!(status));
    Ok(Value::Object(r))
}

fn stream_status(ctx: &RpcContext, device: &str) -> Result<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let camera = find_camera(ctx, device)?;
    let publish = &ctx.app.publish;
    let c = publish.counters(&camera.id);
    let stats = camera.hub.stats();
    let connected = camera.state().status == CameraStatus::Connected;
    let (status, start_time) = match publish.publication(&camera.id) {
        crate::publish::Publication::Started { since } => ("STARTED", json!(super::storage_methods::iso(since))),
        crate::publish::Publication::Stopped { .. } => ("STOPPED", Value::Null),
    };
    let mut r = stream_identity(ctx, &camera);
    r.insert("status".into(), json!(status));
    r.insert("ready".into(), json!(stream_ready(ctx, &camera)));
    r.insert(
        "metrics".into(),
        json!({
            "bytes_sent": c.bytes_sent.load(Relaxed),
            "frames_sent": c.frames_sent.load(Relaxed),
            "bitrate": if connected { stats.bitrate_bps } else { 0 },
            "fps": if connected { stats.fps } else { 0.0 },
            "readers": c.readers(),
            "rtsp_readers": c.rtsp_readers.load(Relaxed),
            "webrtc_sessions": c.webrtc_sessions.load(Relaxed),
        }),
    );
    r.insert("start_time".into(), start_time);
    Ok(Value::Object(r))
}

fn streams(ctx: &RpcContext) -> Value {
    let publish = &ctx.app.publish;
    let list: Vec<Value> = ctx
        .app
        .cameras
        .list()
        .iter()
        .map(|camera| {
            let urls = publish.urls(&camera.id);
            let c = publish.counters(&camera.id);
            json!({
                "name": camera.id,
                "device": camera.id,
                "source": camera.source.kind(),
                "status": if publish.is_published(&camera.id) { "STARTED" } else { "STOPPED" },
                "ready": stream_ready(ctx, camera),
                "readers": c.readers(),
                "bytes_sent": c.bytes_sent.load(std::sync::atomic::Ordering::Relaxed),
                "rtsp_url": urls.rtsp,
                "webrtc_url": urls.webrtc,
            })
        })
        .collect();
    Value::Array(list)
}

fn validate_topics(topics: &[String], param: &'static str) -> Result<()> {
    if topics.len() > TOPICS.len() {
        return Err(Error::invalid_param(param, format!("at most {} topics", TOPICS.len())));
    }
    if let Some(bad) = topics.iter().find(|t| !TOPICS.contains(&t.as_str())) {
        return Err(Error::invalid_param(param, format!("unknown topic {bad:?}; known: {}", TOPICS.join(", "))));
    }
    Ok(())
}

async fn subscribe_events(_ctx: Arc<RpcContext>, session: Arc<Session>, p: SubscribeParams) -> Result<Value> {
    if p.topics.is_empty() {
        return Err(Error::invalid_param("topics", "must name at least one topic"));
    }
    validate_topics(&p.topics, "topics")?;
    let device = p.filters.and_then(|f| f.device);
    if let Some(d) = &device {
        CameraId::parse(d).map_err(|rule| Error::invalid_param("filters.device", rule))?;
    }
    let mut subs = session.subscriptions.lock();
    subs.topics.extend(p.topics.iter().cloned());
    subs.device = device.clone();
    Ok(json!({ "subscribed": true, "topics": subs.topics, "filters": { "device": device } }))
}

async fn unsubscribe_events(_ctx: Arc<RpcContext>, session: Arc<Session>, p: UnsubscribeParams) -> Result<Value> {
    let mut subs = session.subscriptions.lock();
    let removed: Vec<String> = match p.topics {
        Some(topics) => {
            validate_topics(&topics, "topics")?;
            topics.into_iter().filter(|t| subs.topics.remove(t)).collect()
        }
        None => std::mem::take(&mut subs.topics).into_iter().collect(),
    };
    if subs.topics.is_empty() {
        subs.device = None;
    }
    Ok(json!({ "unsubscribed": true, "topics": removed }))
}

fn subscription_stats(ctx: &RpcContext, session: &Session) -> Value {
    let (total, clients, counts) = ctx.sessions.topic_stats();
    let mine: Vec<String> = session.subscriptions.lock().topics.iter().cloned().collect();
    json!({
        "global_stats": { "total_subscriptions": total, "active_clients": clients, "topic_counts": counts },
        "client_topics": mine,
        "client_id": session.session_id,
        "dropped_notifications": session.dropped_notifications.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// A camera id from a display name: lowercase, runs of other characters become `-`.
fn id_from_name(name: &str) -> Result<CameraId> {
    let mut slug = String::with_capacity(name.len());
    for ch in name.trim().chars() {
        let c = ch.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    // Long names keep their first 64 characters as the id.
    let slug: String = slug.trim_matches('-').chars().take(64).collect();
    CameraId::parse(slug.trim_end_matches('-'))
        .map_err(|_| Error::invalid_param("stream_name", "must contain a letter or digit; its id is [a-z0-9_-]{1,64}"))
}

async fn add_external_stream(ctx: Arc<RpcContext>, _: Arc<Session>, p: AddExternalStreamParams) -> Result<Value> {
    if let Some(t) = p.stream_type.as_deref()
        && !t.eq_ignore_ascii_case("rtsp")
    {
        return Err(Error::invalid_param("stream_type", "must be \"rtsp\""));
    }
    if p.stream_name.chars().count() > 128 {
        return Err(Error::invalid_param("stream_name", "at most 128 characters"));
    }
    if p.stream_url.len() > 2048 {
        return Err(Error::invalid_param("stream_url", "at most 2048 characters"));
    }
    let url = camera::parse_stream_url(&p.stream_url).map_err(|rule| Error::invalid_param("stream_url", rule))?;
    let id = id_from_name(&p.stream_name)?;
    let camera = ctx.app.cameras.add(id, p.stream_name.trim().to_owned(), url).await?;
    serde_json::to_value(wire::detail(&camera, &ctx.app.publish)).map_err(Error::internal)
}

async fn remove_external_stream(ctx: Arc<RpcContext>, _: Arc<Session>, p: RemoveExternalStreamParams) -> Result<Value> {
    let camera = match (p.device, p.stream_url) {
        (Some(device), None) => find_camera(&ctx, &device)?,
        (None, Some(url)) => {
            let url = camera::parse_stream_url(&url).map_err(|rule| Error::invalid_param("stream_url", rule))?;
            ctx.app
                .cameras
                .find_by_url(&url)
                .ok_or_else(|| Error::NotFound { resource: "stream", id: camera::redact_url(&url) })?
        }
        _ => return Err(Error::invalid_param("device", "give exactly one of device and stream_url")),
    };
    ctx.app.cameras.remove(&camera.id).await?;
    Ok(json!({ "removed": true, "device": camera.id }))
}

fn external_streams(ctx: &RpcContext) -> Value {
    let streams: Vec<Value> = ctx
        .app
        .cameras
        .list()
        .iter()
        .filter(|c| c.source.kind() == "rtsp")
        .map(|c| {
            json!({
                "device": c.id,
                "name": c.name,
                "url": c.public_url(),
                "type": c.source.kind(),
                "status": c.state().status,
                "origin": c.origin.as_str(),
            })
        })
        .collect();
    json!({ "total": streams.len(), "external_streams": streams })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_ids() {
        assert_eq!(id_from_name("Front Door").expect("valid").as_str(), "front-door");
        assert_eq!(id_from_name("  lobby_2 ").expect("valid").as_str(), "lobby_2");
        assert!(id_from_name("!!!").is_err());
        assert!(id_from_name("").is_err());
    }

    #[test]
    fn every_access_rule_is_unique() {
        let mut names: Vec<_> = ACCESS.iter().map(|(n, _)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ACCESS.len());
    }
}
