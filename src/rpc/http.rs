//! Plain HTTP endpoints on the RPC listener: health (no auth, for load balancers and systemd checks), Prometheus
//! metrics, file downloads and WHEP (WebRTC playback: `POST /whep/{id}` with an SDP offer, `DELETE` on the session).

use std::fmt::Write;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post};
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
        .route("/whep/{id}", post(whep_offer))
        .route("/whep/{id}/{session}", delete(whep_end))
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
    Json(wire::camera_list(&server.ctx.app.cameras.list(), &server.ctx.app.publish))
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
    let publish = &ctx.app.publish;
    let counters: Vec<_> = cameras.iter().map(|(_, _, c)| (&c.id, publish.counters(&c.id))).collect();
    let _ = writeln!(out, "# TYPE camhub_stream_readers gauge");
    for (id, c) in &counters {
        let rtsp = c.rtsp_readers.load(std::sync::atomic::Ordering::Relaxed);
        let webrtc = c.webrtc_sessions.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "camhub_stream_readers{{camera=\"{id}\",protocol=\"rtsp\"}} {rtsp}");
        let _ = writeln!(out, "camhub_stream_readers{{camera=\"{id}\",protocol=\"webrtc\"}} {webrtc}");
    }
    let _ = writeln!(out, "# TYPE camhub_stream_sent_bytes_total counter");
    for (id, c) in &counters {
        let bytes = c.bytes_sent.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "camhub_stream_sent_bytes_total{{camera=\"{id}\"}} {bytes}");
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

/// `POST /whep/{id}`: an SDP offer (`application/sdp`) in, `201 Created` with the SDP answer and the session's
/// `Location` out. 401 without credentials, 404 for an unknown or withdrawn camera, 415 for a body that is not SDP or a
/// camera WebRTC cannot carry (H.265), 400 for an offer without H.264, 503 when the camera has no video yet or the
/// session cap is reached.
async fn whep_offer(
    State(server): State<Server>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(resp) = authorize(&server, &headers).await {
        return resp;
    }
    let app = &server.ctx.app;
    if !app.publish.webrtc_enabled() {
        return (StatusCode::NOT_FOUND, "webrtc is disabled").into_response();
    }
    let Some(camera) = app.cameras.get_str(&id) else {
        return (StatusCode::NOT_FOUND, "no such camera").into_response();
    };
    if !app.publish.is_published(&camera.id) {
        return (StatusCode::NOT_FOUND, "camera is not published (stop_streaming)").into_response();
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/sdp") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the offer as Content-Type: application/sdp").into_response();
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "the offer is not UTF-8").into_response();
    };
    let counters = app.publish.counters(&camera.id);
    match app.publish.whep.offer(&camera, counters, offer).await {
        Ok(answer) => (
            StatusCode::CREATED,
            [
                (header::CONTENT_TYPE, "application/sdp".to_owned()),
                (header::LOCATION, format!("/whep/{}/{}", camera.id, answer.session)),
            ],
            answer.sdp,
        )
            .into_response(),
        Err(e) => {
            use crate::error::Error;
            let code = match &e {
                Error::InvalidParams { .. } => StatusCode::BAD_REQUEST,
                Error::CapabilityNotSupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Error::InvalidState { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::debug!(camera_id = %camera.id, err = %e, "whep offer refused");
            (code, e.to_string()).into_response()
        }
    }
}

/// `DELETE /whep/{id}/{session}`: ends the session (200), or 404.
async fn whep_end(
    State(server): State<Server>,
    Path((id, session)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Err(resp) = authorize(&server, &headers).await {
        return resp;
    }
    let Ok(camera) = crate::camera::CameraId::parse(&id) else {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    };
    if server.ctx.app.publish.whep.end(&camera, &session) {
        StatusCode::OK.into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such session").into_response()
    }
}
