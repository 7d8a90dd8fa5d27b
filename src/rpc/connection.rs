//! One WebSocket connection: reads JSON-RPC frames, enforces the transport rules (size, batches refused, rate
//! limit, authentication and role before any method runs), dispatches to the jsonrpsee methods, and writes responses
//! and notifications (written by a task of its own on the notification runtime, several at a time when they wait
//! together). A slow client loses its oldest notifications (counted), never slows the server; a bad frame gets an
//! error and the connection lives on.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use jsonrpsee::types::ErrorObjectOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tracing::{Instrument, Span, debug, info_span, warn};

use crate::telemetry::{self, Parent};

use super::methods::{self, Access, Answer, Method, MethodInfo};
use super::session::Session;
use super::{Rpc, errors, notify};
use crate::error::Error;

/// Requests one connection may have in flight; more wait (back-pressure on the socket).
const MAX_IN_FLIGHT: usize = 32;
/// The hard frame limit, above the configurable one, past which the socket itself is closed.
const HARD_FRAME_LIMIT: usize = 16 * 1024 * 1024;
/// The socket's read buffer. tungstenite's default (128 KiB, allocated when the connection opens) made each idle
/// connection cost about 140 KiB of RSS, 280 MiB at 2,000 connections, kept by the allocator after they closed;
/// requests are small, and a larger frame still arrives whole (the message buffer grows as it needs).
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// How much of an over-long frame is read to find the request's id, so the error can name it.
const ID_SCAN_BYTES: usize = 64 * 1024;

/// `GET /ws`: checks the connection limit and an optional Bearer token, then upgrades.
pub async fn upgrade(
    State(rpc): State<Arc<Rpc>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // A client's trace context on the upgrade is the parent of each of its requests that names none of its own.
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let parent = text("traceparent").and_then(|tp| telemetry::remote_parent(tp, text("tracestate")));
    let Ok(slot) = rpc.connection_slots.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let mut principal = None;
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value.to_str().ok().and_then(crate::auth::bearer).unwrap_or_default().to_owned();
        match rpc.app.authenticate(&token).await {
            Ok(p) => principal = Some((p, token)),
            Err(e) => return (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
        }
    }
    ws.max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            let session = rpc.sessions.open();
            if let Some((p, token)) = principal {
                session.set_principal(p, &token);
            }
            let span = info_span!("ws", conn_id = session.conn_id, %peer);
            Connection::new(rpc.clone(), session.clone(), parent).run(socket).instrument(span).await;
            rpc.sessions.close(session.conn_id);
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
    rpc: Arc<Rpc>,
    session: Arc<Session>,
    limiter: RateLimiter,
    /// Bounds requests in flight; each spawned request holds a permit until its response is queued.
    in_flight: Arc<Semaphore>,
    /// Responses from spawned requests, written by the connection loop. Its capacity exceeds `MAX_IN_FLIGHT`, so
    /// a request never waits to queue its response.
    responses_tx: mpsc::Sender<String>,
    responses_rx: mpsc::Receiver<String>,
    /// The trace context the client sent on the upgrade (`traceparent` header), if any.
    parent: Option<Parent>,
}

/// The envelope of a request; params and id stay raw for jsonrpsee.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

/// Distinguishes `"id": null` (a request) from no id (a notification).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A request's id as it came, to be echoed unchanged: a string, null, or any JSON number, kept as its text (a
/// negative, fractional or huge number is a valid id, which a parsed integer would lose or refuse).
type ReplyId = Box<RawValue>;

fn null_id() -> ReplyId {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

/// The id to reply with, when `raw` is of a type JSON-RPC allows (string, number, null).
fn reply_id(raw: &RawValue) -> Option<ReplyId> {
    match raw.get().as_bytes().first()? {
        b'"' | b'-' | b'0'..=b'9' | b'n' => Some(raw.to_owned()),
        _ => None,
    }
}

/// Notifications waiting when a connection's writer wakes that it writes together (one flush, one write to the
/// socket for all of them).
const NOTIFY_BATCH: usize = 64;

/// A connection's notification writer, on the notification runtime (`Notifier`): renders each event for the
/// session and writes what it gets, with the events already waiting when it wakes, in one flush. A lagging client
/// loses its oldest notifications (counted). Ends when the socket refuses a write or the bus closes; the connection
/// aborts it when it ends.
async fn notify_loop(
    rpc: Arc<Rpc>,
    session: Arc<Session>,
    mut events: broadcast::Receiver<Arc<crate::events::Event>>,
    sink: Arc<tokio::sync::Mutex<SplitSink<WebSocket, Message>>>,
) {
    use broadcast::error::{RecvError, TryRecvError};
    let mut frames = Vec::new();
    loop {
        let mut event = events.recv().await;
        for taken in 1.. {
            match event {
                Ok(event) => frames.extend(notify::render(&rpc, &session, &event)),
                Err(RecvError::Lagged(n)) => {
                    warn!(dropped = n, "slow client lost notifications");
                    session.count_dropped(n);
                }
                Err(RecvError::Closed) => return,
            }
            if taken == NOTIFY_BATCH {
                break;
            }
            event = match events.try_recv() {
                Ok(event) => Ok(event),
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
                Err(TryRecvError::Empty) => break,
            };
        }
        if frames.is_empty() {
            continue;
        }
        let mut sink = sink.lock().await;
        for text in frames.drain(..) {
            if sink.feed(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

impl Connection {
    fn new(rpc: Arc<Rpc>, session: Arc<Session>, parent: Option<Parent>) -> Connection {
        let cfg = &rpc.app.config().server;
        let limiter = RateLimiter::new(cfg.rate_limit_per_sec, cfg.rate_limit_burst);
        let (responses_tx, responses_rx) = mpsc::channel(MAX_IN_FLIGHT * 2);
        Connection {
            rpc,
            session,
            limiter,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            responses_tx,
            responses_rx,
            parent,
        }
    }

    async fn run(mut self, socket: WebSocket) {
        debug!("connection open");
        let (sink, mut stream) = socket.split();
        let sink = Arc::new(tokio::sync::Mutex::new(sink));
        // Subscribed before the first request is read, so nothing published after it is missed.
        let events = self.rpc.app.subscribe();
        let notifications = self.rpc.notifier.handle.spawn(
            notify_loop(self.rpc.clone(), self.session.clone(), events, sink.clone()).instrument(Span::current()),
        );
        let shutdown = self.rpc.shutdown.clone();
        let send = |text: String| {
            let sink = sink.clone();
            async move { sink.lock().await.send(Message::Text(text.into())).await.is_ok() }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    notifications.abort();
                    let _ = sink.lock().await.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1001,
                        reason: "server shutting down".into(),
                    }))).await;
                    break;
                }
                Some(response) = self.responses_rx.recv() => {
                    if !send(response).await {
                        break;
                    }
                }
                message = stream.next() => {
                    let Some(Ok(message)) = message else { break };
                    match message {
                        Message::Text(text) => {
                            if let Some(response) = self.on_text(text.as_str()).await
                                && !send(response).await
                            {
                                break;
                            }
                        }
                        Message::Binary(_) => {
                            let error = error_json(
                                null_id(),
                                errors::protocol(errors::INVALID_REQUEST, "send JSON-RPC as text frames"),
                            );
                            if !send(error).await {
                                break;
                            }
                        }
                        Message::Close(_) => {
                            // The WebSocket layer queued the closing handshake's reply; send it, so the client sees
                            // a clean close (1000), not an abnormal one (1006).
                            let _ = sink.lock().await.flush().await;
                            break;
                        }
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
            }
        }
        notifications.abort();
        debug!("connection closed");
    }

    /// Handles one request frame. Returns the response when it was answered in place; otherwise the response (if
    /// any) arrives later through the response queue.
    async fn on_text(&mut self, text: &str) -> Option<String> {
        let max = self.rpc.app.config().server.max_message_bytes;
        if text.len() > max {
            // The frame is not parsed, but a client waits on its id: answer with it when the frame's start names it.
            return Some(error_json(
                leading_id(text).unwrap_or_else(null_id),
                errors::protocol(
                    errors::INVALID_REQUEST,
                    format!("message of {} bytes exceeds the {max} byte limit", text.len()),
                ),
            ));
        }
        if text.trim_start().starts_with('[') {
            return Some(error_json(
                null_id(),
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
                return Some(error_json(null_id(), errors::protocol(code, hint)));
            }
        };
        let id = match envelope.id.map(reply_id) {
            None => None,
            Some(Some(id)) => Some(id),
            Some(None) => {
                let e = errors::protocol(errors::INVALID_REQUEST, "id must be a string, a number or null");
                return Some(error_json(null_id(), e));
            }
        };
        let reply_id = id.clone().unwrap_or_else(null_id);
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
        let Some(info) = methods::info(&method) else {
            let e = errors::protocol(errors::METHOD_NOT_FOUND, format!("no method {method:?}"));
            return id.is_some().then(|| error_json(reply_id, e));
        };
        let (params, own_parent) = take_trace_context(envelope.params.map(|p| p.get().to_owned()));
        let span = info_span!(
            "rpc",
            method = info.name,
            conn_id = self.session.conn_id,
            otel.kind = "server",
            outcome = tracing::field::Empty,
            error_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        telemetry::adopt(&span, own_parent.as_ref().or(self.parent.as_ref()));
        if info.answer == Answer::InPlace {
            // Cheap enough to answer in place: no task, no queue, one write.
            let response = dispatch(&self.rpc, &self.session, info, params.as_deref(), reply_id).instrument(span).await;
            return id.is_some().then_some(response);
        }
        let permit = match self.in_flight.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return None,
        };
        let rpc = self.rpc.clone();
        let session = self.session.clone();
        let tx = self.responses_tx.clone();
        tokio::spawn(
            async move {
                let started = Instant::now();
                let response = dispatch(&rpc, &session, info, params.as_deref(), reply_id).await;
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
}

/// Answers one request (in its `rpc` span, which it marks with the outcome).
async fn dispatch(
    rpc: &Arc<Rpc>,
    session: &Arc<Session>,
    info: &'static MethodInfo,
    params: Option<&str>,
    id: ReplyId,
) -> String {
    let span = tracing::Span::current();
    match answer(rpc, session, info, params).await {
        Ok(result) => {
            span.record("outcome", "ok");
            success_json(&id, &result)
        }
        Err(e) => {
            span.record("outcome", "error");
            span.record("error_code", e.code());
            if errors::is_server_fault(e.code()) {
                span.record("otel.status_code", "ERROR");
            }
            error_json(id, e)
        }
    }
}

/// Authenticates by a request's own `auth_token` when it has one, checks access, then runs the method: its result
/// as JSON text, or the error object.
async fn answer(
    rpc: &Arc<Rpc>,
    session: &Arc<Session>,
    info: &'static MethodInfo,
    params: Option<&str>,
) -> Result<String, ErrorObjectOwned> {
    let method = info.name;
    // Clients of the Python edition send `auth_token` inside every request's params. It authenticates an
    // unauthenticated connection as `authenticate` would, and must be valid on an authenticated one; it is never
    // logged, and the method never sees it. `authenticate` takes it as its own parameter.
    let stripped;
    let mut params = params;
    if method != methods::Authenticate::NAME
        && let Some(raw) = params
        && raw.contains("\"auth_token\"")
        && let Some((rest, token)) = take_auth_token(raw)
    {
        authenticate_request(rpc, session, &token).await?;
        stripped = rest;
        params = Some(&stripped);
    }
    if let Access::AtLeast(role) = info.access {
        session.authorize(role)?;
    }
    match methods::call(rpc, session, method, params).await {
        Some(result) => result.map_err(Into::into),
        None => Err(errors::protocol(errors::METHOD_NOT_FOUND, format!("no method {method:?}"))),
    }
}

/// The params without `traceparent` and `tracestate`, and the remote parent they name: W3C trace context, which any
/// request may carry among its params (by-name params only, like `auth_token`). The method never sees them; one that
/// is not a valid traceparent is dropped and ignored, as W3C asks of an invalid header.
fn take_trace_context(params: Option<String>) -> (Option<String>, Option<Parent>) {
    let Some(raw) = params.as_deref().filter(|raw| raw.contains("\"traceparent\"")) else { return (params, None) };
    let Ok(mut object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw) else {
        return (params, None);
    };
    let (traceparent, tracestate) = (object.remove("traceparent"), object.remove("tracestate"));
    if traceparent.is_none() {
        // The text was a value, not the member's name: the params stay as they came.
        return (params, None);
    }
    let parent = traceparent
        .as_ref()
        .and_then(|v| v.as_str())
        .and_then(|tp| telemetry::remote_parent(tp, tracestate.as_ref().and_then(|v| v.as_str())));
    (Some(serde_json::Value::Object(object).to_string()), parent)
}

/// The params without `auth_token`, and its value, when they are an object holding it as a string.
fn take_auth_token(raw: &str) -> Option<(String, String)> {
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw).ok()?;
    match object.remove("auth_token")? {
        serde_json::Value::String(token) => Some((serde_json::Value::Object(object).to_string(), token)),
        // Not a string: left in place, so the method refuses it as it refuses any parameter it does not take.
        _ => None,
    }
}

/// Checks a token a request carries: the connection's own is accepted at once; any other is verified and, valid,
/// becomes the connection's.
async fn authenticate_request(rpc: &Rpc, session: &Session, token: &str) -> crate::error::Result<()> {
    if session.holds(token) {
        return Ok(());
    }
    let principal = methods::system::verify(rpc, token).await?;
    session.set_principal(principal, token);
    Ok(())
}

/// The `id` of a request from the start of its frame, without parsing the rest: the value of a top-level `"id"`
/// key met before `ID_SCAN_BYTES`, skipping other keys' values.
fn leading_id(text: &str) -> Option<ReplyId> {
    let bytes = &text.as_bytes()[..text.len().min(ID_SCAN_BYTES)];
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(bytes, i);
        let key_start = i;
        i = skip_string(bytes, i)?;
        let key = &bytes[key_start..i];
        i = skip_ws(bytes, i);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(bytes, i + 1);
        let value_start = i;
        i = skip_value(bytes, i)?;
        if key == b"\"id\"" {
            let value = std::str::from_utf8(&bytes[value_start..i]).ok()?;
            return serde_json::from_str::<&RawValue>(value).ok().and_then(reply_id);
        }
        i = skip_ws(bytes, i);
        match bytes.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// The index after the JSON string starting at `i`.
fn skip_string(bytes: &[u8], mut i: usize) -> Option<usize> {
    if bytes.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    loop {
        match bytes.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The index after the JSON value starting at `i` (strings, and nesting counted; scalars up to a delimiter).
fn skip_value(bytes: &[u8], mut i: usize) -> Option<usize> {
    match bytes.get(i)? {
        b'"' => skip_string(bytes, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = skip_string(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            while bytes.get(i).is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace()) {
                i += 1;
            }
            Some(i)
        }
    }
}

/// A success response around an already serialised result (written by `serde_json`, so valid JSON as it is).
fn success_json(id: &RawValue, result: &str) -> String {
    let id = id.get();
    let mut out = String::with_capacity(result.len() + id.len() + 36);
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(id);
    out.push_str(r#","result":"#);
    out.push_str(result);
    out.push('}');
    out
}

fn error_json(id: ReplyId, error: ErrorObjectOwned) -> String {
    #[derive(Serialize)]
    struct Failure<'a> {
        jsonrpc: &'static str,
        id: &'a RawValue,
        error: ErrorObjectOwned,
    }
    serde_json::to_string(&Failure { jsonrpc: "2.0", id: &id, error })
        .expect("an error object of plain data always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_leaves_the_params_before_the_method_sees_them() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let raw = format!(r#"{{"device":"cam0","traceparent":"{tp}","tracestate":"k=v"}}"#);
        let (params, parent) = take_trace_context(Some(raw));
        assert_eq!(params.as_deref(), Some(r#"{"device":"cam0"}"#));
        assert!(parent.is_some());
        // Invalid: dropped all the same, and no parent.
        let (params, parent) = take_trace_context(Some(r#"{"traceparent":"nonsense"}"#.to_owned()));
        assert_eq!((params.as_deref(), parent.is_none()), (Some("{}"), true));
        // The word as a value, positional params, no params: untouched.
        for raw in [Some(r#"{"filename":"traceparent","b":1}"#), Some(r#"["traceparent"]"#), None] {
            let (params, parent) = take_trace_context(raw.map(str::to_owned));
            assert_eq!((params.as_deref(), parent.is_none()), (raw, true));
        }
    }

    #[test]
    fn an_over_long_frame_is_answered_with_its_id() {
        let big = "x".repeat(100);
        let id = |text: &str| leading_id(text).map(|id| id.get().to_owned());
        let found = id(&format!(r#"{{"jsonrpc":"2.0","id":7,"method":"ping","params":{{"a":"{big}"}}}}"#));
        assert_eq!(found.as_deref(), Some("7"));
        let found = id(&format!(r#"{{ "params": {{"a": ["{big}", {{"b": "}}"}}]}}, "id" : "abc", "method": "x" }}"#));
        assert_eq!(found.as_deref(), Some(r#""abc""#));
        assert_eq!(id(&format!(r#"{{"id":-2.5e3,"params":"{big}"}}"#)).as_deref(), Some("-2.5e3"));
        assert_eq!(id(&format!(r#"{{"id":{{"a":1}},"params":"{big}"}}"#)), None);
        assert_eq!(id(&format!(r#"{{"method":"x","params":"{big}"}}"#)), None);
        assert_eq!(id("not json"), None);
        assert_eq!(id(r#"{"a":"\"id\":3"}"#), None);
    }

    #[test]
    fn any_number_string_or_null_is_an_id_and_echoed_as_it_came() {
        for text in ["3", "-3", "1.5", "18446744073709551616", "1e400", r#""a\"b""#, r#""\ud800""#, "null"] {
            let raw: &RawValue = serde_json::from_str(text).expect("raw");
            let id = reply_id(raw).expect("a valid id");
            let out = success_json(&id, r#"{"x":[1,2]}"#);
            assert_eq!(out, format!(r#"{{"jsonrpc":"2.0","id":{text},"result":{{"x":[1,2]}}}}"#));
            let out = error_json(id, errors::protocol(errors::INVALID_REQUEST, "x"));
            assert!(out.contains(&format!(r#""id":{text}"#)), "{out}");
        }
        for text in ["true", "[1]", "{}"] {
            assert!(reply_id(serde_json::from_str(text).expect("raw")).is_none(), "{text}");
        }
    }

    #[test]
    fn an_auth_token_is_taken_out_of_params() {
        let (rest, token) = take_auth_token(r#"{"device":"cam0","auth_token":"t0k"}"#).expect("has a token");
        assert_eq!((rest.as_str(), token.as_str()), (r#"{"device":"cam0"}"#, "t0k"));
        assert!(take_auth_token(r#"{"auth_token":5}"#).is_none());
        assert!(take_auth_token(r#"[1]"#).is_none());
    }

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
