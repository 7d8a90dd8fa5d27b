//! Playback by time range: `GET /playback/{id}?start=<ISO 8601>&duration=<s>[&format=mp4|fmp4][&token=...]` (and
//! HEAD) answers one file spanning the camera's segments over that range, made without re-encoding by
//! `recording::playback` (cached, so a player's Range requests cost one build). Auth as media: headers, or a media
//! token or JWT in `?token=`. The answer says where the file starts and what was not recorded:
//! `X-Playback-Start` (the first frame's time, ISO 8601), `X-Playback-Duration` (seconds) and `X-Playback-Gaps`
//! (ISO 8601 intervals, `START/PTnS`, comma-separated; absent when there is none). Nothing a client sends becomes a
//! path: the camera id is checked, the files are the index's.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tower::ServiceExt;

use super::{Server, authorize_media};
use crate::base::time::iso;
use crate::error::Error;
use crate::recording::playback::MAX_PLAYBACK;
use crate::recording::{Container, Interval};
use crate::rpc::methods::recordings::{recorded_camera, time_param};

pub fn routes() -> Router<Server> {
    Router::new().route("/playback/{id}", get(playback))
}

#[derive(Debug, Deserialize)]
struct Params {
    start: Option<String>,
    duration: Option<String>,
    format: Option<String>,
    token: Option<String>,
}

fn refuse(status: StatusCode, text: impl Into<String>) -> Response {
    (status, text.into()).into_response()
}

fn error(e: &Error) -> Response {
    let text = match e {
        Error::InvalidParams { param, rule } => format!("{param}: {rule}"),
        Error::NotFound { resource: crate::error::Resource::Camera, id } => format!("no camera {id}"),
        Error::NotFound { .. } => "nothing recorded between the times asked".to_owned(),
        e => e.to_string(),
    };
    refuse(crate::rpc::errors::http_status(e), text)
}

async fn playback(
    State(server): State<Server>,
    Path(id): Path<String>,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    req: axum::extract::Request,
) -> Response {
    let Ok(Query(p)) = params else {
        return refuse(StatusCode::BAD_REQUEST, "query: start=<ISO 8601>&duration=<seconds>[&format=mp4|fmp4]");
    };
    let app = &server.app;
    if let Err(resp) = authorize_media(app, req.headers(), p.token.as_deref(), &id).await {
        return resp;
    }
    let start = match p.start.as_deref().map(|s| time_param("start", s)) {
        Some(Ok(t)) => t,
        Some(Err(e)) => return error(&e),
        None => return refuse(StatusCode::BAD_REQUEST, "start: required, an ISO 8601 time"),
    };
    let duration = match p.duration.as_deref().map(str::parse::<f64>) {
        Some(Ok(d)) if d > 0.0 && d <= MAX_PLAYBACK.as_secs_f64() => Duration::from_secs_f64(d),
        Some(Ok(d)) if d > 0.0 => {
            return refuse(StatusCode::BAD_REQUEST, "duration: at most 3600 seconds (export_recording for more)");
        }
        Some(_) => return refuse(StatusCode::BAD_REQUEST, "duration: seconds, more than 0 (the end after the start)"),
        None => return refuse(StatusCode::BAD_REQUEST, "duration: required, seconds"),
    };
    let Some(container) = p.format.as_deref().map_or(Some(Container::Mp4), Container::parse) else {
        return refuse(StatusCode::BAD_REQUEST, "format: mp4 or fmp4");
    };
    let camera = match recorded_camera(app, &id).await {
        Ok(c) => c,
        Err(e @ Error::InvalidParams { .. }) => return refuse(StatusCode::NOT_FOUND, format!("no camera: {e}")),
        Err(e) => return error(&e),
    };
    let Some(end) = start.checked_add(duration) else {
        return refuse(StatusCode::BAD_REQUEST, "duration: the end is out of range");
    };
    let built = match app.recordings().playback().range(camera.as_str(), start, end, container).await {
        Ok(b) => b,
        Err(e) => return error(&e),
    };
    let mime = "video/mp4".parse().expect("literal mime");
    let mut resp = match tower_http::services::ServeFile::new_with_mime(&built.path, &mime).oneshot(req).await {
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let headers = resp.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("x-playback-start", iso(built.first));
    set("x-playback-duration", format!("{:.3}", built.duration().as_secs_f64()));
    if !built.gaps.is_empty() {
        set("x-playback-gaps", gaps_header(&built.gaps));
    }
    set("cache-control", "private, no-cache".to_owned());
    let stamp = crate::base::time::file_stamp(built.first);
    set("content-disposition", format!("inline; filename=\"{camera}_{stamp}.mp4\""));
    resp
}

/// `2026-12-02T03:40:01.200Z/PT3.400S, ...`: ISO 8601 intervals (start and duration).
pub fn gaps_header(gaps: &[Interval]) -> String {
    gaps.iter().map(|g| format!("{}/PT{:.3}S", iso(g.started_at()), g.seconds())).collect::<Vec<_>>().join(", ")
}
