//! WHEP signalling (WebRTC playback): `POST /whep/{id}` with an SDP offer (`application/sdp`) answers `201 Created`
//! with the SDP answer and the session's `Location`; `DELETE /whep/{id}/{session}` ends it. Same credentials as
//! downloads. The sessions themselves are `publish::whep`'s.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};

use super::{Server, authorize};
use crate::base::CameraId;

pub fn routes() -> Router<Server> {
    Router::new().route("/whep/{id}", post(offer)).route("/whep/{id}/{session}", delete(end))
}

/// 401 without credentials, 404 for an unknown or withdrawn camera, 415 for a body that is not SDP or a camera WebRTC
/// cannot carry (H.265), 400 for an offer without H.264, 503 when the camera has no video yet or the session cap is
/// reached.
async fn offer(
    State(server): State<Server>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let app = &server.app;
    if let Err(resp) = authorize(app, &headers).await {
        return resp;
    }
    let streams = app.streams();
    if !streams.webrtc_enabled() {
        return (StatusCode::NOT_FOUND, "webrtc is disabled").into_response();
    }
    let Some(camera) = app.cameras().get_str(&id) else {
        return (StatusCode::NOT_FOUND, "no such camera").into_response();
    };
    if !streams.is_published(&camera.id) {
        return (StatusCode::NOT_FOUND, "camera is not published (stop_streaming)").into_response();
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/sdp") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the offer as Content-Type: application/sdp").into_response();
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "the offer is not UTF-8").into_response();
    };
    match streams.whep.offer(&camera, streams.counters(&camera.id), offer).await {
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
            tracing::debug!(camera_id = %camera.id, err = %e, "whep offer refused");
            (crate::rpc::errors::http_status(&e), e.to_string()).into_response()
        }
    }
}

/// Ends the session (200), or 404.
async fn end(
    State(server): State<Server>,
    Path((id, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = authorize(&server.app, &headers).await {
        return resp;
    }
    let Ok(camera) = CameraId::parse(&id) else {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    };
    if server.app.streams().whep.end(&camera, &session) {
        StatusCode::OK.into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such session").into_response()
    }
}
