//! The HTTP listener (axum): the JSON-RPC WebSocket at `/ws` (handed to `rpc::connection`) and the plain HTTP
//! endpoints, each in a module with one job: `health` (no auth, for load balancers and systemd checks), `metrics`
//! (Prometheus), `files` (downloads), `hls` (low-latency HLS), `playback` (recordings by time range), `whep` (WebRTC
//! playback signalling), `whip` (WebRTC publishing
//! signalling, with stream keys) and `web` (the page). Errors become HTTP
//! statuses through `rpc::errors::http_status`, beside the JSON-RPC mapping.

pub mod files;
pub mod health;
pub mod hls;
pub mod metrics;
pub mod playback;
pub mod web;
pub mod whep;
pub mod whip;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::rpc::Rpc;

/// What every route shares.
#[derive(Debug, Clone)]
pub struct Server {
    app: Arc<App>,
    rpc: Arc<Rpc>,
    shutdown: CancellationToken,
}

impl FromRef<Server> for Arc<Rpc> {
    fn from_ref(server: &Server) -> Arc<Rpc> {
        server.rpc.clone()
    }
}

impl Server {
    pub fn new(app: Arc<App>, shutdown: CancellationToken) -> std::io::Result<Server> {
        let rpc = Rpc::new(app.clone(), shutdown.clone())?;
        Ok(Server { app, rpc, shutdown })
    }

    pub fn router(&self) -> Router {
        // The requests that do work for a client get a span each; health checks, scrapes and the page do not.
        let traced = Router::new()
            .merge(files::routes())
            .merge(playback::routes())
            .merge(whep::routes())
            .merge(whip::routes())
            .route_layer(axum::middleware::from_fn(traced));
        Router::new()
            .route("/ws", axum::routing::get(crate::rpc::connection::upgrade))
            .merge(health::routes())
            .merge(metrics::routes())
            // A player asks for a part every few hundred milliseconds: no span each.
            .merge(hls::routes())
            .merge(traced)
            .merge(web::routes())
            .with_state(self.clone())
    }

    /// Serves on `listener` until the shutdown token fires, then lets open requests finish.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let shutdown = self.shutdown.clone();
        // Notifications are small frames often sent back to back: without TCP_NODELAY, Nagle holds the second one for
        // the client's delayed ACK (measured: 40 ms from a camera change to its topic event).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(err = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, self.router().into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    }
}

/// Runs a request in an `http` span named by its route (`POST /whep/{id}`), a child of the client's trace when the
/// request carries a W3C `traceparent` header.
async fn traced(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let span = {
        let route = request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str()).unwrap_or("");
        let method = request.method().as_str();
        let span = tracing::info_span!(
            "http",
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = method,
            http.route = route,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let text = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let parent = text("traceparent").and_then(|tp| crate::telemetry::remote_parent(tp, text("tracestate")));
        crate::telemetry::adopt(&span, parent.as_ref());
        span
    };
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// How long a media token minted for a URL lives: a player reloading a live playlist gets a fresh one with each
/// reload, so only a URL copied out of a player expires.
pub const MEDIA_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Verifies a request for `camera`'s media: the headers as `authorize` reads them, or else `?token=`, a media token
/// for this camera or a JWT (never an API key: keys do not belong in URLs, which proxies log).
async fn authorize_media(app: &App, headers: &HeaderMap, token: Option<&str>, camera: &str) -> Result<(), Response> {
    let has_header = headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-key");
    match token {
        Some(token) if !has_header => {
            if app.verify_media_token(token, camera).is_ok() {
                return Ok(());
            }
            if token.starts_with("chk_") {
                return Err((StatusCode::UNAUTHORIZED, "an API key goes in a header, never in a URL").into_response());
            }
            match app.authenticate(token).await {
                Ok(_) => Ok(()),
                Err(e) => Err((StatusCode::UNAUTHORIZED, e.to_string()).into_response()),
            }
        }
        _ => authorize(app, headers).await,
    }
}

/// Verifies `Authorization: Bearer <jwt or key>` or `X-API-Key: <key>` for a viewer or above.
async fn authorize(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(crate::auth::bearer);
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let Some(credential) = bearer.or(key) else {
        return Err((StatusCode::UNAUTHORIZED, "send Authorization: Bearer or X-API-Key").into_response());
    };
    match app.authenticate(credential).await {
        Ok(_) => Ok(()),
        Err(e) => Err((StatusCode::UNAUTHORIZED, e.to_string()).into_response()),
    }
}
