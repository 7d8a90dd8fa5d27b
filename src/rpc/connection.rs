//! One WebSocket connection: reads JSON-RPC frames, enforces the transport rules (size, batches refused, rate
//! limit, authentication and role before any method runs), dispatches to the jsonrpsee methods, and writes responses
//! and notifications. A slow client loses its oldest notifications (counted), never slows the server; a bad frame
//! gets an error and the connection lives on.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonrpsee::types::{ErrorObjectOwned, Id, Params};
use jsonrpsee::{ConnectionId, Extensions, MethodCallback, MethodResponse};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tracing::{Instrument, debug, info_span, warn};

use super::methods::{Access, access};
use super::session::Session;
use super::{Server, errors, wire};
use crate::error::Error;
use crate::events::{Event, EventKind};

/// Requests one connection may have in flight; more wait (back-pressure on the socket).
const MAX_IN_FLIGHT: usize = 32;
/// The hard frame limit, above the configurable one, past which the socket itself is closed.
const HARD_FRAME_LIMIT: usize = 16 * 1024 * 1024;
/// Largest response a method may produce.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// `GET /ws`: checks the connection limit and an optional Bearer token, then upgrades.
pub async fn upgrade(
    State(server): State<Server>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Ok(slot) = server.connection_slots.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let mut principal = None;
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
        match server.ctx.app.auth.verify(token).await {
            Ok(p) => principal = Some(p),
            Err(e) => return (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
        }
    }
    ws.max_message_size(HARD_FRAME_LIMIT).max_frame_size(HARD_FRAME_LIMIT).on_upgrade(move |socket| async move {
        let session = server.ctx.sessions.open();
        if let Some(p) = principal {
            session.set_principal(p);
        }
        let span = info_span!("ws", conn_id = session.conn_id, %peer);
        Connection::new(server.clone(), session.clone()).run(socket).instrument(span).await;
        server.ctx.sessions.close(session.conn_id);
        drop(slot);
    })
}

/// Token bucket: `rate` per second sustained, `burst` at once.
#[derive(Debug)]
struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter { rate: rate as f64, burst: burst as f64, tokens: burst as f64, last: Instant::now() }
    }

    /// Takes a token, or says how long until one is available.
    fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

struct Connection {
    server: Server,
    session: Arc<Session>,
    limiter: RateLimiter,
    /// Bounds requests in flight; each spawned request holds a permit until its response is queued.
    in_flight: Arc<Semaphore>,
    /// Responses from spawned requests, written by the connection loop. Its capacity exceeds `MAX_IN_FLIGHT`, so
    /// a request never waits to queue its response.
    responses_tx: mpsc::Sender<String>,
    responses_rx: mpsc::Receiver<String>,
}

/// The envelope of a request; params and id stay raw for jsonrpsee.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<Id<'a>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

/// Distinguishes `"id": null` (a request) from no id (a notification).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Id<'de>>, D::Error> {
    Id::deserialize(d).map(Some)
}

impl Connection {
    fn new(server: Server, session: Arc<Session>) -> Connection {
        let cfg = &server.ctx.app.config.server;
        let limiter = RateLimiter::new(cfg.rate_limit_per_sec, cfg.rate_limit_burst);
        let (responses_tx, responses_rx) = mpsc::channel(MAX_IN_FLIGHT * 2);
        Connection {
            server,
            session,
            limiter,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            responses_tx,
            responses_rx,
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        debug!("connection open");
        let mut events = self.server.ctx.app.events.subscribe();
        let shutdown = self.server.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = socket.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1001,
                        reason: "server shutting down".into(),
                    }))).await;
                    break;
                }
                Some(response) = self.responses_rx.recv() => {
                    if socket.send(Message::Text(response.into())).await.is_err() {
                        break;
                    }
                }
                event = events.recv() => match event {
                    Ok(event) => {
                        for text in self.render(&event) {
                            if socket.send(Message::Text(text.into())).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(dropped = n, "slow client lost notifications");
                        self.session.count_dropped(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                message = socket.recv() => {
                    let Some(Ok(message)) = message else { break };
                    match message {
                        Message::Text(text) => {
                            if let Some(response) = self.on_text(text.as_str()).await
                                && socket.send(Message::Text(response.into())).await.is_err()
                            {
                                break;
                            }
                        }
                        Message::Binary(_) => {
                            let error = error_json(
                                Id::Null,
                                errors::protocol(errors::INVALID_REQUEST, "send JSON-RPC as text frames"),
                            );
                            if socket.send(Message::Text(error.into())).await.is_err() {
                                break;
                            }
                        }
                        Message::Close(_) => break,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
            }
        }
        debug!("connection closed");
    }

    /// Handles one request frame. Returns the response when it was answered in place; otherwise the response (if
    /// any) arrives later through the response queue.
    async fn on_text(&mut self, text: &str) -> Option<String> {
        let max = self.server.ctx.app.config.server.max_message_bytes;
        if text.len() > max {
            return Some(error_json(
                Id::Null,
                errors::protocol(
                    errors::INVALID_REQUEST,
                    format!("message of {} bytes exceeds the {max} byte limit", text.len()),
                ),
            ));
        }
        if text.trim_start().starts_with('[') {
            return Some(error_json(
                Id::Null,
                errors::protocol(
                    errors::INVALID_REQUEST,
                    "batch requests are not supported; send one request per frame",
                ),
            ));
        }
        let envelope: Envelope<'_> = match serde_json::from_str(text) {
            Ok(e) => e,
            Err(e) => {
                let (code, hint) = if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
                    (errors::INVALID_REQUEST, format!("not a JSON-RPC request: {e}"))
                } else {
                    (errors::PARSE_ERROR, format!("invalid JSON: {e}"))
                };
                return Some(error_json(Id::Null, errors::protocol(code, hint)));
            }
        };
        let id = envelope.id.clone().map(Id::into_owned);
        let reply_id = id.clone().unwrap_or(Id::Null);
        if envelope.jsonrpc.as_deref() != Some("2.0") {
            return Some(error_json(reply_id, errors::protocol(errors::INVALID_REQUEST, "jsonrpc must be \"2.0\"")));
        }
        let Some(method) = envelope.method.as_deref().map(str::to_owned) else {
            return Some(error_json(reply_id, errors::protocol(errors::INVALID_REQUEST, "method is required")));
        };
        if let Err(wait) = self.limiter.take() {
            let e = Error::RateLimited { retry_after_ms: wait.as_millis().max(1) as u64 };
            // A notification gets no response, not even this one.
            return id.is_some().then(|| error_json(reply_id, e.into()));
        }
        let params = envelope.params.map(|p| p.get().to_owned());
        if super::methods::answered_from_memory(&method) {
            // Cheap enough to answer in place: no task, no queue, one write.
            let response = dispatch(&self.server, &self.session, &method, params.as_deref(), reply_id).await;
            return id.is_some().then_some(response);
        }
        let permit = match self.in_flight.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return None,
        };
        let server = self.server.clone();
        let session = self.session.clone();
        let tx = self.responses_tx.clone();
        let span = info_span!("rpc", method = method.as_str());
        tokio::spawn(
            async move {
                let started = Instant::now();
                let response = dispatch(&server, &session, &method, params.as_deref(), reply_id).await;
                debug!(elapsed_us = started.elapsed().as_micros() as u64, "handled");
                // A notification (no id) gets no response.
                if id.is_some() {
                    let _ = tx.send(response).await;
                }
                drop(permit);
            }
            .instrument(span),
        );
        None
    }

    /// The notifications this client should get for `event`: the status update every client gets, and the topic
    /// event if it subscribed.
    fn render(&self, event: &Event) -> Vec<String> {
        let mut out = Vec::new();
        if self.session.principal().is_none() {
            return out;
        }
        // Every authenticated client gets camera and recording status updates without subscribing.
        if let EventKind::CameraStatus { camera, status, .. } = &event.kind {
            let params = wire::summary_with(camera, *status, &camera.hub.stats(), &self.server.ctx.app.publish);
            out.push(notification("camera_status_update", &params));
        }
        if let Some(params) = super::storage_methods::recording_notification(&event.kind) {
            out.push(notification("recording_status_update", &params));
        }
        let subs = self.session.subscriptions.lock();
        let Some(topic) = event.topics().iter().find(|t| subs.topics.contains(**t)) else { return out };
        if let (Some(wanted), Some(device)) = (&subs.device, event.device())
            && wanted != device.as_str()
        {
            return out;
        }
        let at = event.at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        out.push(notification(
            "event",
            &serde_json::json!({ "topic": topic, "device": event.device(), "timestamp": at, "data": event.details() }),
        ));
        out
    }
}

/// Checks access, then runs the method.
async fn dispatch(
    server: &Server,
    session: &Arc<Session>,
    method: &str,
    params: Option<&str>,
    id: Id<'static>,
) -> String {
    let Some((name, callback)) = server.methods.method_with_name(method) else {
        return error_json(id, errors::protocol(errors::METHOD_NOT_FOUND, format!("no method {method:?}")));
    };
    match access(name) {
        Some(Access::Public) => {}
        Some(Access::AtLeast(role)) => {
            if let Err(e) = session.authorize(role) {
                return error_json(id, e.into());
            }
        }
        None => return error_json(id, errors::protocol(errors::METHOD_NOT_FOUND, format!("no method {method:?}"))),
    }
    let mut extensions = Extensions::new();
    extensions.insert(session.clone());
    let params = Params::new(params).into_owned();
    let conn = ConnectionId(session.conn_id as usize);
    let response = match callback {
        MethodCallback::Async(cb) => cb(id, params, conn, MAX_RESPONSE_BYTES, extensions).await,
        MethodCallback::Sync(cb) => cb(id, params, MAX_RESPONSE_BYTES, extensions),
        MethodCallback::Subscription(_) | MethodCallback::Unsubscription(_) => MethodResponse::error(
            id,
            errors::protocol(errors::METHOD_NOT_FOUND, "subscriptions are made with subscribe_events"),
        ),
    };
    response.into_json().get().to_owned()
}

fn error_json(id: Id<'_>, error: ErrorObjectOwned) -> String {
    MethodResponse::error(id, error).into_json().get().to_owned()
}

fn notification(method: &str, params: &impl serde::Serialize) -> String {
    serde_json::json!({ "jsonrpc": "2.0", "method": method, "params": params }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let mut r = RateLimiter::new(10, 3);
        assert!(r.take().is_ok() && r.take().is_ok() && r.take().is_ok());
        let wait = r.take().expect_err("bucket empty");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        std::thread::sleep(Duration::from_millis(120));
        assert!(r.take().is_ok());
    }
}
