//! File downloads: `GET /files/recordings/{name}`, `/files/snapshots/{name}` and `/files/events/{name}` (detection
//! events' pictures), with Bearer or X-API-Key and HTTP
//! Range. The name is validated before any path is built; only indexed (complete, synced) recordings are served.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceExt;

use super::{Server, authorize};
use crate::storage::files::{Area, Files};

pub fn routes() -> Router<Server> {
    Router::new().route("/files/{area}/{name}", get(file))
}

async fn file(
    State(server): State<Server>,
    Path((area, name)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    let area = match area.as_str() {
        "recordings" => Area::Recordings,
        "snapshots" => Area::Snapshots,
        "events" => Area::Events,
        _ => return (StatusCode::NOT_FOUND, "no such file area").into_response(),
    };
    if let Err(resp) = authorize(&server.app, req.headers()).await {
        return resp;
    }
    let app = &server.app;
    let path = match Files::new(&app.config().storage.root).path(area, "name", &name) {
        Ok(p) => p,
        Err(e) => return (crate::rpc::errors::http_status(&e), e.to_string()).into_response(),
    };
    // A recording is served from the root its row names; one on a root that is away is unavailable, said plainly.
    let path = match area {
        Area::Recordings => match app.recordings().locate(&name).await {
            Ok(p) => p,
            Err(crate::error::Error::NotFound { .. }) => {
                return (StatusCode::NOT_FOUND, "no such recording").into_response();
            }
            Err(e) => return (StatusCode::NOT_FOUND, e.to_string()).into_response(),
        },
        _ => path,
    };
    let content_type = match area {
        Area::Snapshots | Area::Events => "image/jpeg",
        Area::Recordings if name.ends_with(".mkv") => "video/x-matroska",
        Area::Recordings => "video/mp4",
    };
    match tower_http::services::ServeFile::new_with_mime(&path, &content_type.parse().expect("literal mime"))
        .oneshot(req)
        .await
    {
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
