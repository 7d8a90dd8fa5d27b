//! Plain HTTP endpoints on the RPC listener: health (no auth, for load balancers and systemd checks) and Prometheus
//! metrics.

use std::fmt::Write;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

use tower::ServiceExt;

use super::{Server, wire};
use crate::app::{self, Phase};
use crate::camera::{CameraState, CameraStatus};
use crate::media::hub::StreamStats;
use crate::storage::files::Area;

pub fn routes() -> Router<Server> {
    Router::new()
        .route("/files/{area}/{name}", get(file))
        .route("/health/system", get(system))
        .route("/health/cameras", get(cameras))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
}

async fn system(State(server): State<Server>) -> Json<serde_json::Value> {
    let app = &server.ctx.app;
    let (connected, total) = app.camera_counts();
    Json(json!({
        "status": app.health().as_str(),
        "version": app::VERSION,
        "uptime": app.uptime_secs(),
        "cameras": { "connected": connected, "total": total },
        "connections": server.ctx.sessions.len(),
    }))
}

async fn cameras(State(server): State<Server>) -> Json<serde_json::Value> {
    Json(wire::camera_list(&server.ctx.app.cameras.list()))
}

/// 200 once start-up is done and until shutdown begins; 503 otherwise.
async fn ready(State(server): State<Server>) -> Response {
    let phase = server.ctx.app.phase();
    let ready = phase == Phase::Running;
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({ "ready": ready }))).into_response()
}

/// One camera's value of a metric.
type CameraSample = fn(&CameraState, &StreamStats) -> u64;

async fn metrics(State(server): State<Server>) -> Response {
    let ctx = &server.ctx;
    let mut out = String::new();
    let p = ctx.process_metrics();
    let _ = writeln!(out, "# TYPE camhub_uptime_seconds gauge\ncamhub_uptime_seconds {}", ctx.app.uptime_secs());
    let _ = writeln!(out, "# TYPE camhub_resident_memory_bytes gauge\ncamhub_resident_memory_bytes {}", p.rss_bytes);
    let _ =
        writeln!(out, "# TYPE camhub_websocket_connections gauge\ncamhub_websocket_connections {}", ctx.sessions.len());
    // One look at each camera; the text format then wants each metric's samples together.
    let cameras: Vec<_> = ctx.app.cameras.list().into_iter().map(|c| (c.state(), c.hub.stats(), c)).collect();
    let families: [(&str, &str, CameraSample); 4] = [
        ("camhub_camera_up", "gauge", |s, _| (s.status == CameraStatus::Connected) as u64),
        ("camhub_camera_frames_total", "counter", |_, st| st.frames),
        ("camhub_camera_received_bytes_total", "counter", |_, st| st.bytes),
        ("camhub_camera_reconnects_total", "counter", |s, _| s.reconnects),
    ];
    for (name, kind, value) in families {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (state, stats, camera) in &cameras {
            let _ = writeln!(out, "{name}{{camera=\"{}\"}} {}", camera.id, value(state, stats));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Verifies `Authorization: Bearer <jwt or key>` or `X-API-Key: <key>` for a viewer or above.
async fn authorize(server: &Server, headers: &axum::http::HeaderMap) -> Result<(), Response> {
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let Some(credential) = bearer.or(key) else {
        return Err((StatusCode::UNAUTHORIZED, "send Authorization: Bearer or X-API-Key").into_response());
    };
    match server.ctx.app.auth.verify(credential).await {
        Ok(_) => Ok(()),
        Err(e) => Err((StatusCode::UNAUTHORIZED, e.to_string()).into_response()),
    }
}

/// `GET /files/recordings/{name}` and `/files/snapshots/{name}`.
async fn file(
    State(server): State<Server>,
    Path((area, name)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    let area = match area.as_str() {
        "recordings" => Area::Recordings,
        "snapshots" => Area::Snapshots,
        _ => return (StatusCode::NOT_FOUND, "no such file area").into_response(),
    };
    serve(&server, area, &name, req).await
}

/// Serves one file of an area, with Range support; the name is validated before any path is built.
async fn serve(server: &Server, area: Area, name: &str, req: axum::extract::Request) -> Response {
    if let Err(resp) = authorize(server, req.headers()).await {
        return resp;
    }
    let app = &server.ctx.app;
    let path = match app.files.path(area, "name", name) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    // Only indexed (complete, synced) recordings are served.
    if area == Area::Recordings && !matches!(app.db.segment(name).await, Ok(Some(_))) {
        return (StatusCode::NOT_FOUND, "no such recording").into_response();
    }
    let content_type = if area == Area::Snapshots {
        "image/jpeg"
    } else if name.ends_with(".mkv") {
        "video/x-matroska"
    } else {
        "video/mp4"
    };
    match tower_http::services::ServeFile::new_with_mime(&path, &content_type.parse().expect("literal mime"))
        .oneshot(req)
        .await
    {
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
