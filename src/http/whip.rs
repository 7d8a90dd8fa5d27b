//! WHIP signalling (WebRTC publishers, e.g. OBS): `POST /whip/{id}` with an SDP offer (`application/sdp`) and
//! `Authorization: Bearer <stream key>` answers `201 Created` with the SDP answer and the session's `Location`;
//! `DELETE /whip/{id}/{session}` with the same key ends it. Stream keys only (not API keys or JWTs): a publisher
//! holds the key of its camera and nothing else, as over RTMP. The key is checked through the camera manager's gate
//! before anything is negotiated; the sessions themselves are `media::whip_ingest`'s.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Extension, Router};

use super::Server;
use crate::app::App;
use crate::media::push::{PushSlot, Refusal};
use crate::media::whip_ingest::{Rejected, WhipSessions};

pub fn routes() -> Router<Server> {
    Router::new()
        .route("/whip/{id}", post(offer))
        .route("/whip/{id}/{session}", delete(end))
        .layer(Extension(Arc::new(WhipSessions::default())))
}

/// The slot of camera `id` if the request's Bearer key is that camera's stream key; else why not: 401 for a missing,
/// unknown or revoked key or the key of another camera, 404 for no such camera or one that is not pushed.
fn check_key(app: &App, headers: &HeaderMap, id: &str) -> Result<Arc<PushSlot>, (StatusCode, &'static str)> {
    let key = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(crate::auth::bearer);
    let key = key.ok_or((StatusCode::UNAUTHORIZED, "send Authorization: Bearer <stream key>"))?;
    let cameras = app.cameras();
    let opened = (cameras.gate())(key).ok_or((StatusCode::UNAUTHORIZED, "unknown or revoked stream key"))?;
    let camera = cameras.get_str(id).ok_or((StatusCode::NOT_FOUND, "no such camera"))?;
    let slot = camera.source.push_slot().ok_or((StatusCode::NOT_FOUND, "this camera is not a pushed camera"))?;
    if !Arc::ptr_eq(slot, &opened) {
        return Err((StatusCode::UNAUTHORIZED, "this stream key is not this camera's"));
    }
    Ok(opened)
}

/// 201 with the answer; 401/404 as [`check_key`]; 415 for a body that is not `application/sdp`; 400 for an offer
/// that is not SDP or has no H.264 video; 409 while the camera has a publisher; 503 at the session cap.
async fn offer(
    State(server): State<Server>,
    Extension(sessions): Extension<Arc<WhipSessions>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let app = &server.app;
    let slot = match check_key(app, &headers, &id) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/sdp") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the offer as Content-Type: application/sdp").into_response();
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "the offer is not UTF-8").into_response();
    };
    match sessions.publish(&app.config().webrtc, slot, offer).await {
        Ok(answer) => {
            tracing::info!(camera_id = id, session = &answer.session[..8], "whip publisher accepted");
            (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_owned()),
                    (header::LOCATION, format!("/whip/{id}/{}", answer.session)),
                ],
                answer.sdp,
            )
                .into_response()
        }
        Err(Rejected::Slot(Refusal::Busy)) => {
            (StatusCode::CONFLICT, "this camera already has a publisher").into_response()
        }
        Err(Rejected::Slot(Refusal::Closed)) => (StatusCode::NOT_FOUND, "no such camera").into_response(),
        Err(Rejected::Failed(e)) => {
            tracing::debug!(camera_id = id, err = %e, "whip offer refused");
            (crate::rpc::errors::http_status(&e), e.to_string()).into_response()
        }
    }
}

/// Ends the session (200); 401/404 as [`check_key`], or 404 for no such session of this camera.
async fn end(
    State(server): State<Server>,
    Extension(sessions): Extension<Arc<WhipSessions>>,
    Path((id, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let slot = match check_key(&server.app, &headers, &id) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    if sessions.end(&slot, &session) {
        StatusCode::OK.into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such session").into_response()
    }
}
