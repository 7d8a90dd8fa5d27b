//! Health endpoints, without authentication, for load balancers and systemd checks: `/health/system`,
//! `/health/cameras` (the camera list) and `/health/ready` (200 while running, 503 while starting or stopping).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Serialize;

use super::Server;
use crate::app::Phase;
use crate::rpc::methods::cameras::CameraList;

pub fn routes() -> Router<Server> {
    Router::new()
        .route("/health/system", get(system))
        .route("/health/cameras", get(cameras))
        .route("/health/ready", get(ready))
}

#[derive(Serialize)]
struct CameraCounts {
    connected: usize,
    total: usize,
}

#[derive(Serialize)]
struct SystemHealth {
    status: &'static str,
    version: &'static str,
    uptime: u64,
    cameras: CameraCounts,
    connections: usize,
}

async fn system(State(server): State<Server>) -> Json<SystemHealth> {
    let app = &server.app;
    let (connected, total) = app.camera_counts();
    Json(SystemHealth {
        status: app.health().as_str(),
        version: crate::base::VERSION,
        uptime: app.uptime_secs(),
        cameras: CameraCounts { connected, total },
        connections: server.rpc.sessions.len(),
    })
}

async fn cameras(State(server): State<Server>) -> Json<CameraList> {
    Json(CameraList::of(&server.rpc))
}

#[derive(Serialize)]
struct Ready {
    ready: bool,
}

/// 200 once start-up is done and until shutdown begins; 503 otherwise.
async fn ready(State(server): State<Server>) -> Response {
    let ready = server.app.phase() == Phase::Running;
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(Ready { ready })).into_response()
}
