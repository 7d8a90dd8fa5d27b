//! A WebSocket JSON-RPC client of camhub's own API, for `camhub call` and `camhub events`: connect, call a method,
//! read notifications, and turn `key=value` words into params. Transport only: it knows the wire, not the methods.

use std::collections::VecDeque;

use futures::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why a call did not give a result. The command line exits differently for the two: the server answered with an
/// error, or there was no usable answer at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server's JSON-RPC error object, as sent.
    #[error("the server answered with an error: {0}")]
    Rpc(Value),
    /// No connection, a closed one, or frames that are not JSON-RPC.
    #[error("{0}")]
    Connection(String),
}

/// One WebSocket connection to camhub. Calls are sequential: a call waits for its response, and the notifications that
/// arrive meanwhile are kept for `next_notification`, in order.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Notifications received while a call waited for its response; handed out before any newer frame is read.
    pending: VecDeque<Value>,
}

impl Client {
    /// Opens the WebSocket at `url` (`ws://HOST:PORT/ws`).
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        let (ws, _response) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| ClientError::Connection(format!("cannot connect to {url}: {e}")))?;
        Ok(Client { ws, next_id: 1, pending: VecDeque::new() })
    }

    /// Calls `method` with `params` (an object) and returns its `result`.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.ws
            .send(Message::Text(request.to_string().into()))
            .await
            .map_err(|e| ClientError::Connection(format!("cannot send {method}: {e}")))?;
        loop {
            let frame = self.read_frame().await?;
            if frame.get("id").and_then(Value::as_u64) == Some(id) {
                return match frame.get("error") {
                    Some(error) => Err(ClientError::Rpc(error.clone())),
                    None => Ok(frame.get("result").cloned().unwrap_or(Value::Null)),
                };
            }
            if is_notification(&frame) {
                self.pending.push_back(frame);
            }
            // Anything else answers no request of ours (this client sends one at a time): ignored.
        }
    }

    /// `authenticate` with a JWT or an API key; the server's error object if it refuses.
    pub async fn authenticate(&mut self, token: &str) -> Result<Value, ClientError> {
        self.call("authenticate", json!({ "auth_token": token })).await
    }

    /// The next server notification (`{"jsonrpc", "method", "params"}`), waiting for one if none is kept.
    pub async fn next_notification(&mut self) -> Result<Value, ClientError> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        loop {
            let frame = self.read_frame().await?;
            if is_notification(&frame) {
                return Ok(frame);
            }
        }
    }

    /// The next text frame as JSON; pings are answered by the WebSocket layer while it reads.
    async fn read_frame(&mut self) -> Result<Value, ClientError> {
        loop {
            let message = match self.ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(ClientError::Connection(format!("connection lost: {e}"))),
                None => return Err(ClientError::Connection("the server closed the connection".into())),
            };
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text).map_err(|e| {
                        ClientError::Connection(format!("the server sent a frame that is not JSON: {e}"))
                    });
                }
                Message::Close(frame) => {
                    let why = frame.map(|f| format!(" ({} {})", u16::from(f.code), f.reason)).unwrap_or_default();
                    return Err(ClientError::Connection(format!("the server closed the connection{why}")));
                }
                // Pings, pongs and binary frames carry no JSON-RPC.
                _ => {}
            }
        }
    }
}

fn is_notification(frame: &Value) -> bool {
    frame.get("method").is_some() && frame.get("id").is_none()
}

/// Turns `key=value` words into a params object: a value that parses as JSON is taken as JSON (`duration=10`,
/// `topics=["camera.connected"]`, `enabled=true`), anything else as a string (`device=cam0`).
pub fn parse_params<S: AsRef<str>>(words: &[S]) -> Result<Value, String> {
    let mut params = Map::new();
    for word in words {
        let word = word.as_ref();
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!("{word:?} is not key=value"));
        };
        if key.is_empty() {
            return Err(format!("{word:?} has no key before '='"));
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        params.insert(key.to_owned(), value);
    }
    Ok(Value::Object(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_when_they_parse_and_strings_otherwise() {
        let params = parse_params(&[
            "device=cam0",
            "duration=10",
            r#"topics=["camera.status_change"]"#,
            "enabled=true",
            "name=a=b",
            r#"quoted="10""#,
            "empty=",
        ])
        .expect("valid words");
        assert_eq!(
            params,
            json!({
                "device": "cam0",
                "duration": 10,
                "topics": ["camera.status_change"],
                "enabled": true,
                "name": "a=b",
                "quoted": "10",
                "empty": "",
            })
        );
    }

    #[test]
    fn words_without_a_key_are_refused() {
        assert!(parse_params(&["cam0"]).is_err());
        assert!(parse_params(&["=cam0"]).is_err());
        assert_eq!(parse_params::<&str>(&[]), Ok(json!({})));
    }
}
