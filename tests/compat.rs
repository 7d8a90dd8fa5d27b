//! Clients written for the existing service switch unchanged: the points where they broke camhub before, each
//! written from the contract and checked against a real camhub with the real test camera over a real WebSocket. JWTs
//! with NumericDates that have a fraction, `auth_token` in any request's params, ISO `expires_at`, integer `fps`, the
//! contract's stream states, metrics and component names, oversized frames answered with their id, and file names
//! that are safe anywhere.

mod common;

use std::time::Duration;

use camhub::rpc::methods::{
    Authenticate, GetCameraList, GetCameraStatus, GetMetrics, GetServerInfo, GetStatus, GetStreamStatus, NoParams,
};
use camhub::rpc::methods::{DeviceParams, system};
use common::{Camhub, Client, SECRET, TestCam, camera_toml};
use serde_json::{Value, json};

fn now_f64() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64()
}

/// A JWT as the Python clients mint it: `iat` and `exp` from `time.time()`.
fn python_token(role: &str, iat: Value, exp: Value) -> String {
    common::sign(&json!({ "user_id": "py-client", "role": role, "iat": iat, "exp": exp }), SECRET)
}

fn code(e: &Value) -> i64 {
    e["code"].as_i64().unwrap_or_else(|| panic!("not an error object: {e}"))
}

async fn camhub_with_a_camera() -> (TestCam, Camhub) {
    let cam = TestCam::start(1);
    let hub = Camhub::start(&camera_toml("cam0", &cam.url(0)));
    (cam, hub)
}

#[tokio::test]
async fn tokens_with_fractional_numeric_dates_authenticate_and_expiry_is_iso() {
    let (_cam, hub) = camhub_with_a_camera().await;
    let now = now_f64();
    let tokens = [
        python_token("viewer", json!(now), json!(now + 600.25)),
        python_token("viewer", json!((now.floor()) as i64 as f64), json!((now.floor() + 600.0) as i64 as f64)),
        python_token("viewer", json!(now as i64), json!(now as i64 + 600)),
    ];
    for token in tokens {
        let client = Client::connect(&hub.ws_url()).await;
        let r = client
            .call_typed::<Authenticate>(&system::AuthenticateParams { auth_token: token.clone() })
            .await
            .unwrap_or_else(|e| panic!("{token}: {e}"));
        let expires = r.expires_at.expect("a JWT expires");
        let at = humantime::parse_rfc3339(&expires).unwrap_or_else(|e| panic!("expires_at {expires}: {e}"));
        let secs = at.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs_f64();
        assert!((secs - (now + 600.0)).abs() < 2.0, "expires_at {expires} for exp about {}", now + 600.0);
    }
    let expired = python_token("viewer", json!(now - 10.5), json!(now - 0.5));
    let client = Client::connect(&hub.ws_url()).await;
    let e = client.call("authenticate", json!({ "auth_token": expired })).await.expect_err("expired");
    assert_eq!((code(&e), &e["data"]["reason"]), (-32001, &json!("token expired")), "{e}");
    // An API key has no expiry.
    let key = hub.api_key("viewer");
    let r = client.call("authenticate", json!({ "auth_token": key })).await.expect("api key");
    assert_eq!(r["expires_at"], Value::Null, "{r}");
}

#[tokio::test]
async fn an_auth_token_in_any_request_authenticates_it() {
    let (_cam, hub) = camhub_with_a_camera().await;
    let now = now_f64();
    let viewer = python_token("viewer", json!(now), json!(now + 600.5));
    let operator = hub.token("operator");

    // A fresh connection: the token in params authenticates it, on a method that needs a role...
    let client = Client::connect(&hub.ws_url()).await;
    let list = client.call("get_camera_list", json!({ "auth_token": viewer })).await.expect("authenticated by params");
    assert_eq!(list["total"], 1, "{list}");
    // ... and the connection stays authenticated, with or without the token.
    client.call("get_camera_list", json!({})).await.expect("still authenticated");
    client.call("get_camera_status", json!({ "device": "cam0", "auth_token": viewer })).await.expect("same token");
    // Even ping, which needs none, authenticates a fresh connection that sends one.
    let other = Client::connect(&hub.ws_url()).await;
    assert_eq!(other.call("ping", json!({ "auth_token": viewer })).await.expect("ping"), json!("pong"));
    other.call("get_server_info", json!({})).await.expect("authenticated by ping's auth_token");

    // The token must be valid on an authenticated connection too; a bad one is refused and changes nothing.
    let e = client.call("get_camera_list", json!({ "auth_token": "not-a-token" })).await.expect_err("bad token");
    assert_eq!(code(&e), -32001, "{e}");
    let e = client.call("ping", json!({ "auth_token": "chk_0000" })).await.expect_err("unknown key");
    assert_eq!(code(&e), -32001, "{e}");
    client.call("get_camera_list", json!({})).await.expect("the connection keeps its good token");

    // A fresh connection with a bad token gets -32001, not "not a parameter".
    let fresh = Client::connect(&hub.ws_url()).await;
    let e = fresh.call("get_camera_list", json!({ "auth_token": "garbage" })).await.expect_err("bad token");
    assert_eq!(code(&e), -32001, "{e}");

    // A valid token of a higher role lets the connection do what that role may.
    let e = client.call("start_streaming", json!({ "device": "cam0" })).await.expect_err("viewer");
    assert_eq!(code(&e), -32002, "{e}");
    client.call("start_streaming", json!({ "device": "cam0", "auth_token": operator })).await.expect("operator");

    // Other unknown parameters are still refused, and the token never reaches the method.
    let e = client.call("get_camera_list", json!({ "auth_token": viewer, "bogus": 1 })).await.expect_err("bogus");
    assert_eq!((code(&e), &e["data"]["param"]), (-32602, &json!("bogus")), "{e}");
    // An API key works the same way.
    let key = hub.api_key("viewer");
    let keyed = Client::connect(&hub.ws_url()).await;
    keyed.call("get_camera_list", json!({ "auth_token": key })).await.expect("api key in params");

    let log = hub.log();
    assert!(!log.contains(&viewer) && !log.contains(&key) && !log.contains(&operator), "a token was logged:\n{log}");
}

#[tokio::test]
async fn fields_have_the_types_the_contract_s_clients_decode() {
    let (_cam, hub) = camhub_with_a_camera().await;
    let admin = hub.client("admin").await;
    let connected = admin
        .wait_status("cam0", Duration::from_secs(30), |s| s["status"] == "CONNECTED" && s["fps"].as_u64() > Some(0))
        .await
        .unwrap_or_else(|| panic!("cam0 never connected with a frame rate; log:\n{}", hub.log()));

    // fps is an integer everywhere the contract has it (the typed results would not decode otherwise).
    assert!(connected["fps"].is_u64(), "{connected}");
    let list = admin.call_typed::<GetCameraList>(&NoParams {}).await.expect("list");
    assert!(list.cameras.iter().all(|c| c.fps <= 60), "{:?}", list.cameras);
    let raw = admin.call("get_camera_list", json!({})).await.expect("list");
    assert!(raw["cameras"][0]["fps"].is_u64(), "{raw}");
    let device = DeviceParams { device: "cam0".into() };
    let status = admin.call_typed::<GetCameraStatus>(&device).await.expect("status");
    assert!((10..=20).contains(&status.summary.fps), "{}", status.summary.fps);
    let caps = admin.call("get_camera_capabilities", json!({ "device": "cam0" })).await.expect("capabilities");
    assert!(caps["fps_options"].as_array().expect("array").iter().all(Value::is_u64), "{caps}");

    // The contract's stream states.
    let stream = admin.call_typed::<GetStreamStatus>(&device).await.expect("stream status");
    assert_eq!(serde_json::to_value(stream.status).expect("serializes"), json!("ACTIVE"));
    let raw = admin.call("get_stream_status", json!({ "device": "cam0" })).await.expect("stream status");
    assert!(raw["metrics"]["fps"].is_u64(), "{raw}");
    admin.call("stop_streaming", json!({ "device": "cam0" })).await.expect("stop");
    let raw = admin.call("get_stream_status", json!({ "device": "cam0" })).await.expect("stream status");
    assert_eq!((&raw["status"], &raw["start_time"]), (&json!("INACTIVE"), &Value::Null), "{raw}");
    admin.call("start_streaming", json!({ "device": "cam0" })).await.expect("start");

    // get_metrics: an ISO timestamp, memory in percent, connected_cameras.
    let metrics = admin.call_typed::<GetMetrics>(&NoParams {}).await.expect("metrics");
    humantime::parse_rfc3339(&metrics.timestamp).unwrap_or_else(|e| panic!("timestamp {}: {e}", metrics.timestamp));
    let memory = metrics.system_metrics.memory_usage;
    assert!(memory > 0.0 && memory < 100.0, "memory_usage {memory} is not a percentage");
    assert!(metrics.system_metrics.memory_bytes > 1_000_000, "{}", metrics.system_metrics.memory_bytes);
    assert_eq!(metrics.camera_metrics.connected_cameras, 1);

    // get_status names the media engine as the contract's clients expect; get_server_info names a toolchain.
    let raw = admin.call("get_status", json!({})).await.expect("status");
    assert_eq!(raw["components"]["mediamtx"], "RUNNING", "{raw}");
    admin.call_typed::<GetStatus>(&NoParams {}).await.expect("typed status");
    let info = admin.call_typed::<GetServerInfo>(&NoParams {}).await.expect("server info");
    assert!(info.go_version.starts_with("rustc "), "{}", info.go_version);
}

#[tokio::test]
async fn an_oversized_frame_is_answered_with_its_id() {
    let hub = Camhub::start_with_server_keys("max_message_bytes = 2048", "");
    let client = Client::connect(&hub.ws_url()).await;
    let big = "x".repeat(4096);
    for (id, frame) in [
        (json!(77), format!(r#"{{"jsonrpc":"2.0","id":77,"method":"ping","params":{{"pad":"{big}"}}}}"#)),
        (json!("req-9"), format!(r#"{{"params":{{"pad":"{big}"}},"jsonrpc":"2.0","method":"ping","id":"req-9"}}"#)),
        (Value::Null, format!(r#"{{"jsonrpc":"2.0","method":"ping","params":{{"pad":"{big}"}}}}"#)),
    ] {
        client.send_raw(&frame);
        let reply = client.next_other(Duration::from_secs(5)).await.expect("a reply");
        assert_eq!((&reply["id"], &reply["error"]["code"]), (&id, &json!(-32600)), "{reply}");
    }
    assert_eq!(client.call("ping", json!({})).await.expect("alive"), json!("pong"));
}

#[tokio::test]
async fn file_names_with_characters_unsafe_elsewhere_are_refused() {
    let (_cam, hub) = camhub_with_a_camera().await;
    let operator = hub.client("operator").await;
    for bad in ["javascript:alert(1)", "a<b>.jpg", "x|y.jpg", "what?.jpg", "star*.jpg", "q\"uote.jpg", "c:\\x.jpg"] {
        let e =
            operator.call("take_snapshot", json!({ "device": "cam0", "filename": bad })).await.expect_err("refused");
        assert_eq!((code(&e), &e["data"]["param"]), (-32602, &json!("filename")), "{bad}: {e}");
    }
    let e = operator.call("get_snapshot_info", json!({ "filename": "javascript:alert(1)" })).await.expect_err("bad");
    assert_eq!(code(&e), -32602, "{e}");
}
