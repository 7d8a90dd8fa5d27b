//! Authentication, roles and the transport rules over a real WebSocket: every method refuses missing, expired,
//! foreign and `alg: none` credentials and too-low roles, and accepts the right role; malformed frames, unknown
//! methods, wrong params, batches and oversized messages get their codes while the connection lives on; a client's
//! close is answered.

mod common;

use std::time::Duration;

use base64::Engine;
use camhub::auth::Role;
use camhub::rpc::methods::{ACCESS, Access};
use common::{Camhub, Client};
use serde_json::{Value, json};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn signed(claims: Value, secret: &str) -> String {
    common::sign(&claims, secret)
}

/// Params that pass validation for each method, so an auth failure is the only possible refusal.
fn valid_params(method: &str) -> Value {
    match method {
        "get_camera_status" | "get_camera_capabilities" => json!({ "device": "nope" }),
        "authenticate" => json!({ "auth_token": "x" }),
        "subscribe_events" => json!({ "topics": ["camera.connected"] }),
        "add_external_stream" => json!({ "stream_url": "rtsp://127.0.0.1:1/x", "stream_name": "probe" }),
        "remove_external_stream" => json!({ "device": "nope" }),
        _ => json!({}),
    }
}

async fn assert_code(client: &Client, method: &str, code: i64, what: &str) {
    let e = client.call(method, valid_params(method)).await.expect_err(&format!("{method} with {what}"));
    assert_eq!(e["code"], code, "{method} with {what}: {e}");
}

#[tokio::test]
async fn every_method_checks_credentials_and_role() {
    let hub = Camhub::start("");
    let bad_tokens = [
        (
            "an expired token",
            signed(json!({ "user_id": "u", "role": "admin", "iat": now() - 100, "exp": now() - 10 }), common::SECRET),
        ),
        (
            "another secret",
            signed(
                json!({ "user_id": "u", "role": "admin", "iat": now(), "exp": now() + 600 }),
                "some-other-secret-0123456789",
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                b64(&json!({ "user_id": "u", "role": "admin", "iat": now(), "exp": now() + 600 }).to_string())
            ),
        ),
        ("no exp", signed(json!({ "user_id": "u", "role": "admin", "iat": now() }), common::SECRET)),
        (
            "an unknown role",
            signed(json!({ "user_id": "u", "role": "root", "iat": now(), "exp": now() + 600 }), common::SECRET),
        ),
    ];
    for (what, token) in &bad_tokens {
        let c = Client::connect(&hub.ws_url()).await;
        let e = c.call("authenticate", json!({ "auth_token": token })).await.expect_err(what);
        assert_eq!(e["code"], -32001, "{what}: {e}");
        assert!(e["data"]["reason"].is_string(), "{what}: {e}");
    }

    let anonymous = Client::connect(&hub.ws_url()).await;
    assert_eq!(anonymous.call("ping", json!({})).await.expect("ping needs no auth"), "pong");
    let clients = [
        (Role::Viewer, hub.client("viewer").await),
        (Role::Operator, hub.client("operator").await),
        (Role::Admin, hub.client("admin").await),
    ];
    for (method, access) in ACCESS {
        let Access::AtLeast(required) = access else { continue };
        assert_code(&anonymous, method, -32001, "no authentication").await;
        for (role, client) in &clients {
            let r = client.call(method, valid_params(method)).await;
            if role < required {
                let e = r.expect_err(&format!("{method} as {role:?}"));
                assert_eq!(e["code"], -32002, "{method} as {role:?}: {e}");
                assert_eq!(e["data"]["required_role"], required.as_str());
                assert_eq!(e["data"]["have_role"], role.as_str());
            } else if let Err(e) = r {
                assert!(e["code"] != -32001 && e["code"] != -32002, "{method} as {role:?} refused: {e}");
            }
        }
    }
}

#[tokio::test]
async fn a_token_that_expires_stops_working() {
    let hub = Camhub::start("");
    let c = Client::connect(&hub.ws_url()).await;
    let token = common::token("admin", 2);
    let r = c.call("authenticate", json!({ "auth_token": token })).await.expect("fresh token");
    assert_eq!(r["role"], "admin");
    assert_eq!(r["permissions"], json!(["view", "control", "admin"]));
    assert!(r["session_id"].as_str().is_some_and(|s| s.len() >= 16));
    c.call("get_status", json!({})).await.expect("works while valid");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let e = c.call("get_status", json!({})).await.expect_err("expired");
    assert_eq!(e["code"], -32001);
}

#[tokio::test]
async fn api_keys_from_the_cli_authenticate_with_their_role() {
    let hub = Camhub::start("");
    let key = hub.api_key("operator");
    assert!(key.starts_with("chk_"), "{key}");
    let c = Client::connect(&hub.ws_url()).await;
    let r = c.call("authenticate", json!({ "auth_token": key })).await.expect("api key");
    assert_eq!(r["role"], "operator");
    let e = c.call("get_status", json!({})).await.expect_err("operator is not admin");
    assert_eq!(e["code"], -32002);
    let db = std::fs::read(hub.dir.join("camhub.db")).expect("db");
    assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()), "the key itself is stored");
    let wrong = Client::connect(&hub.ws_url()).await;
    let e = wrong.call("authenticate", json!({ "auth_token": format!("{key}0") })).await.expect_err("wrong key");
    assert_eq!(e["code"], -32001);
}

#[tokio::test]
async fn a_bearer_header_on_the_upgrade_authenticates_the_connection() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let hub = Camhub::start("");
    let mut req = hub.ws_url().into_client_request().expect("request");
    req.headers_mut().insert("Authorization", format!("Bearer {}", hub.token("admin")).parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("upgrade with bearer");
    use futures::{SinkExt, StreamExt};
    ws.send(r#"{"jsonrpc":"2.0","id":1,"method":"get_status"}"#.into()).await.expect("send");
    let reply = ws.next().await.expect("reply").expect("frame");
    let v: Value = serde_json::from_str(reply.to_text().expect("text")).expect("json");
    assert!(v["result"]["status"].is_string(), "{v}");
    let mut bad = hub.ws_url().into_client_request().expect("request");
    bad.headers_mut().insert("Authorization", "Bearer nonsense".parse().expect("header"));
    assert!(tokio_tungstenite::connect_async(bad).await.is_err(), "a bad bearer token is refused at upgrade");
}

/// A client that closes gets the closing handshake back (code 1000), not a dropped connection (1006).
#[tokio::test]
async fn a_client_close_is_answered_with_a_close() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let hub = Camhub::start("");
    let (mut ws, _) = tokio_tungstenite::connect_async(hub.ws_url()).await.expect("upgrade");
    let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    ws.send(Message::Close(Some(bye))).await.expect("send close");
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an answer in time");
    match reply {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the closing handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn protocol_errors_get_their_codes_and_the_connection_survives() {
    let hub = Camhub::start("");
    let c = hub.client("admin").await;
    let short = Duration::from_secs(5);
    let cases: Vec<(String, i64)> = vec![
        ("{not json".into(), -32700),
        (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.into(), -32600),
        (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.into(), -32600),
        (r#"{"jsonrpc":"2.0","id":1}"#.into(), -32600),
        (r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#.into(), -32600),
        (r#"{"jsonrpc":"2.0","id":"abc","method":"no_such_method"}"#.into(), -32601),
        (format!(r#"{{"jsonrpc":"2.0","id":7,"method":"ping","params":{{"pad":"{}"}}}}"#, "x".repeat(300_000)), -32600),
    ];
    for (frame, code) in cases {
        c.send_raw(&frame);
        let reply = c.next_other(short).await.unwrap_or_else(|| panic!("no reply to {:.60}", frame));
        assert_eq!(reply["error"]["code"], code, "{:.80} -> {reply}", frame);
        assert_eq!(c.call("ping", json!({})).await.expect("still alive"), "pong");
    }
    c.send_raw(r#"{"jsonrpc":"2.0","id":"abc","method":"no_such_method"}"#);
    assert_eq!(c.next_other(short).await.expect("reply")["id"], "abc", "string ids are echoed");
    // A notification (no id) gets no response.
    c.send_raw(r#"{"jsonrpc":"2.0","method":"ping"}"#);
    assert!(c.next_other(Duration::from_millis(500)).await.is_none());

    let wrong_type = c.call("get_camera_status", json!({ "device": 5 })).await.expect_err("wrong type");
    assert_eq!((wrong_type["code"].as_i64(), wrong_type["data"]["param"].as_str()), (Some(-32602), Some("device")));
    let missing = c.call("get_camera_status", json!({})).await.expect_err("missing");
    assert_eq!(missing["data"]["param"], "device");
    assert_eq!(missing["data"]["rule"], "is required");
    let bad_id = c.call("get_camera_status", json!({ "device": "../etc" })).await.expect_err("bad id");
    assert_eq!((bad_id["code"].as_i64(), bad_id["data"]["param"].as_str()), (Some(-32602), Some("device")));
    let extra = c.call("get_camera_list", json!({ "bogus": 1 })).await.expect_err("unknown param");
    assert_eq!(extra["data"]["param"], "bogus");
    let positional = c.call("get_camera_status", json!(["cam0"])).await.expect_err("positional");
    assert_eq!(positional["code"], -32602);
    let url = c.call("add_external_stream", json!({ "stream_url": "file:///etc/passwd", "stream_name": "x" })).await;
    assert_eq!(url.expect_err("bad scheme")["data"]["param"], "stream_url");
}

#[tokio::test]
async fn a_client_over_its_rate_gets_told_when_to_retry() {
    let hub = Camhub::start_with_server_keys("rate_limit_per_sec = 5\nrate_limit_burst = 5", "");
    let c = hub.client("viewer").await;
    let mut limited = None;
    for _ in 0..20 {
        if let Err(e) = c.call("ping", json!({})).await {
            limited = Some(e);
            break;
        }
    }
    let e = limited.expect("rate limit reached");
    assert_eq!(e["code"], -32040);
    let wait = e["data"]["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=1000).contains(&wait), "{wait}");
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    assert_eq!(c.call("ping", json!({})).await.expect("allowed again"), "pong");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let hub = Camhub::start_with_server_keys("max_connections = 3", "");
    let url = hub.ws_url();
    let _held: Vec<Client> = futures::future::join_all((0..3).map(|_| Client::connect(&url))).await;
    let refused = tokio_tungstenite::connect_async(hub.ws_url()).await;
    assert!(refused.is_err(), "a fourth connection was accepted");
}
