//! Traces over OTLP: camhub with `[telemetry] otlp_endpoint` sends its spans to a real OpenTelemetry collector
//! (rotel, the Rust collector shipped on PyPI, installed by `scripts/install-test-peers.sh`), which prints every span
//! it receives in the collector's debug format. The test reads that print-out and checks span names, attributes and
//! parent/child links: an RPC that carries a client's `traceparent` (in its params, or on the WebSocket upgrade)
//! joins the client's trace, a snapshot and a
//! recording are children of the RPCs that asked for them, each segment a child of its recording, camera connect
//! attempts and file downloads (with a `traceparent` header) have spans of their own, and the spans that ended just
//! before a graceful stop still arrive (the exporter flushes on shutdown).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Camhub, TestCam};
use serde_json::json;

/// A span as the collector printed it.
#[derive(Debug, Clone, Default)]
struct Span {
    trace_id: String,
    parent_id: String,
    id: String,
    name: String,
    attributes: HashMap<String, String>,
    /// The resource attributes of the batch it came in.
    resource: HashMap<String, String>,
}

impl Span {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or("")
    }

    /// An HTTP request's span, named by its method and route (`GET /files/{area}/{name}`).
    fn is_http(&self) -> bool {
        !self.attr("http.route").is_empty()
            && self.name == format!("{} {}", self.attr("http.request.method"), self.attr("http.route"))
    }
}

/// Parses the collector's debug print-out (`--debug-log traces --debug-log-verbosity detailed`, the same layout as the
/// OpenTelemetry Collector's debug exporter): `Span #n` blocks with `Trace ID : ..` lines and `-> key: Type(value)`
/// attribute lines.
fn parse(text: &str) -> Vec<Span> {
    #[derive(PartialEq)]
    enum Section {
        Resource,
        Span,
        Attributes,
        Other,
    }
    let mut spans: Vec<Span> = Vec::new();
    let mut resource = HashMap::new();
    let mut section = Section::Other;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("ResourceSpans #") {
            resource = HashMap::new();
            section = Section::Other;
        } else if trimmed == "Resource attributes:" {
            section = Section::Resource;
        } else if trimmed.starts_with("Span #") {
            spans.push(Span { resource: resource.clone(), ..Span::default() });
            section = Section::Span;
        } else if trimmed == "Attributes:" && section != Section::Other && section != Section::Resource {
            section = Section::Attributes;
        } else if trimmed.starts_with("Events:") || trimmed.starts_with("Links:") || trimmed.starts_with("SpanEvent") {
            section = Section::Other;
        } else if let Some(kv) = trimmed.strip_prefix("-> ") {
            let Some((key, value)) = kv.split_once(": ") else { continue };
            // `Str(camera)`, `Int(3)`: the value inside the type's parentheses.
            let value = value.split_once('(').map_or(value, |(_, v)| v.strip_suffix(')').unwrap_or(v)).to_owned();
            match section {
                Section::Resource => {
                    resource.insert(key.to_owned(), value);
                }
                Section::Attributes => {
                    if let Some(span) = spans.last_mut() {
                        span.attributes.insert(key.to_owned(), value);
                    }
                }
                _ => {}
            }
        } else if section == Section::Span
            && let Some((key, value)) = trimmed.split_once(':')
            && let Some(span) = spans.last_mut()
        {
            let value = value.trim().to_owned();
            match key.trim() {
                "Trace ID" => span.trace_id = value,
                "Parent ID" => span.parent_id = value,
                "ID" => span.id = value,
                "Name" => span.name = value,
                _ => {}
            }
        }
    }
    spans
}

/// The collector, listening for OTLP/HTTP on a free loopback port, its print-out in a file.
struct Collector {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Collector {
    fn start(dir: &Path) -> Collector {
        let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/.venv-otlp/bin/rotel-agent");
        assert!(
            agent.exists(),
            "{} is missing: run scripts/install-test-peers.sh (or scripts/install-deps.sh --test); this test never skips",
            agent.display()
        );
        let (port, grpc) = (common::free_port(), common::free_port());
        let out = dir.join("collector.out");
        let child = Command::new(&agent)
            .arg("start")
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{port}")])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--exporter", "blackhole", "--debug-log", "traces", "--debug-log-verbosity", "detailed"])
            .args(["--batch-timeout", "100ms"])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log"))
            .stdout(std::fs::File::create(&out).expect("collector output file"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", agent.display()));
        assert!(common::wait_for_port(port, Duration::from_secs(10)), "the collector did not listen on {port}");
        Collector { child, port, out }
    }

    fn spans(&self) -> Vec<Span> {
        parse(&std::fs::read_to_string(&self.out).unwrap_or_default())
    }

    /// The spans received, once `done` says they are all there (or the time is up).
    fn wait_for(&self, timeout: Duration, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const UPGRADE_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
const UPGRADE_SPAN: &str = "10f067aa0ba902b8";
const OWN_TRACE: &str = "6bf92f3577b34da6a3ce929d0e0e4738";
const DOWNLOAD_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const DOWNLOAD_SPAN: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_at_a_real_collector_with_their_names_attributes_and_links() {
    let started = Instant::now();
    let cam = TestCam::start(1);
    let work = tempfile::tempdir().expect("temp dir");
    let collector = Collector::start(work.path());
    let config = format!(
        "{}\n[recording]\nsegment_seconds = 2\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{}\"\n\
         service_name = \"camhub-under-test\"\n",
        common::camera_toml("cam0", &cam.url(0)),
        collector.port
    );
    // Nothing leaves on the batch processor's timer (an hour): what arrives, arrives by the flush at shutdown.
    let mut hub = Camhub::start_with_env(&[("OTEL_BSP_SCHEDULE_DELAY", "3600000")], &config);
    let client = hub.client("operator").await;
    let connected = client.wait_status("cam0", Duration::from_secs(20), |s| s["status"] == "CONNECTED").await;
    assert!(connected.is_some(), "cam0 did not connect; log:\n{}", hub.log());

    // A client's W3C trace context among the params: the strict params check does not see it, the span joins it.
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let list = client.call("get_camera_list", json!({ "traceparent": traceparent, "tracestate": "vendor=1" })).await;
    assert!(list.is_ok(), "traceparent must not fail the strict params check: {list:?}");
    let bad = client.call("get_camera_list", json!({ "traceparent": "not-a-traceparent" })).await;
    assert!(bad.is_ok(), "an invalid traceparent is ignored: {bad:?}");
    let unknown = client.call("get_camera_list", json!({ "bogus": 1 })).await;
    assert!(unknown.is_err(), "other unknown params are still refused: {unknown:?}");

    let snap = client.call("take_snapshot", json!({ "device": "cam0" })).await.expect("snapshot");
    client.call("start_recording", json!({ "device": "cam0" })).await.expect("start recording");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stopped = client.call("stop_recording", json!({ "device": "cam0" })).await.expect("stop recording");

    // A traceparent header on the WebSocket upgrade: the parent of the connection's requests that name none; a
    // request's own wins.
    {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = hub.ws_url().into_client_request().expect("a request");
        let header = format!("00-{UPGRADE_TRACE}-{UPGRADE_SPAN}-01");
        request.headers_mut().insert("traceparent", header.parse().expect("a header value"));
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade with traceparent");
        let own = format!("00-{OWN_TRACE}-{CLIENT_SPAN}-01");
        for (id, params) in [(1, json!({})), (2, json!({ "traceparent": own }))] {
            let call = json!({ "jsonrpc": "2.0", "id": id, "method": "ping", "params": params });
            ws.send(Message::Text(call.to_string().into())).await.expect("send");
            let reply = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a reply in time");
            let Some(Ok(Message::Text(text))) = reply else { panic!("no reply to ping: {reply:?}") };
            assert!(text.contains("pong"), "{text}");
        }
    }

    // A download with a traceparent header.
    let files = client.call("list_recordings", json!({})).await.expect("list");
    let name = files["files"][0]["filename"].as_str().expect("a recording").to_owned();
    let token = hub.token("viewer");
    let download_parent = format!("00-{DOWNLOAD_TRACE}-{DOWNLOAD_SPAN}-01");
    let (code, _, _) = common::http_request(
        hub.port,
        &format!("/files/recordings/{name}"),
        &[("Authorization", &format!("Bearer {token}")), ("traceparent", &download_parent)],
    )
    .expect("download");
    assert_eq!(code, 200);

    // Stop: the spans go out only if shutdown flushes.
    std::thread::sleep(Duration::from_millis(500));
    let before = collector.spans().len();
    drop(client);
    hub.stop();
    let stopped_at = Instant::now();
    let spans = collector.wait_for(Duration::from_secs(10), |spans| {
        spans.iter().any(|s| s.name == "rpc" && s.attr("method") == "stop_recording") && spans.iter().any(Span::is_http)
    });
    let arrived = stopped_at.elapsed();
    let names: Vec<_> = spans.iter().map(|s| format!("{} {:?}", s.name, s.attributes)).collect();
    let dump = names.join("\n");

    // Only camhub's spans, each named as exported (the exporter's own HTTP requests are never traced).
    assert!(!spans.is_empty(), "no span arrived; camhub log:\n{}", hub.log());
    assert_eq!(before, 0, "with an hour's batch delay nothing is sent before the shutdown's flush");
    let exported = ["rpc", "camera.connect", "recording", "recording.segment", "snapshot", "detection.event"];
    for s in &spans {
        assert!(exported.contains(&s.name.as_str()) || s.is_http(), "unexpected span {:?} {:?}", s.name, s.attributes);
        assert_eq!(s.resource.get("service.name").map(String::as_str), Some("camhub-under-test"), "{s:?}");
    }
    let rpc = |method: &str| -> &Span {
        spans
            .iter()
            .find(|s| s.name == "rpc" && s.attr("method") == method)
            .unwrap_or_else(|| panic!("no rpc span for {method}; spans:\n{dump}"))
    };

    // The RPC that carried a traceparent is a child of the client's span, in the client's trace.
    let listed = spans
        .iter()
        .find(|s| s.name == "rpc" && s.attr("method") == "get_camera_list" && s.trace_id == CLIENT_TRACE)
        .unwrap_or_else(|| panic!("no get_camera_list span in the client's trace; spans:\n{dump}"));
    assert_eq!(listed.parent_id, CLIENT_SPAN, "{listed:?}");
    assert_eq!(listed.attr("outcome"), "ok", "{listed:?}");
    assert!(!listed.attr("conn_id").is_empty(), "{listed:?}");
    // The invalid one started a trace of its own.
    let own = spans.iter().filter(|s| s.attr("method") == "get_camera_list" && s.trace_id != CLIENT_TRACE).count();
    assert!(own >= 2, "get_camera_list without a valid traceparent starts its own trace; spans:\n{dump}");
    let refused = spans.iter().find(|s| s.attr("method") == "get_camera_list" && s.attr("outcome") == "error");
    assert!(refused.is_some_and(|s| s.attr("error_code") == "-32602"), "the refused call's span; spans:\n{dump}");
    assert_eq!(rpc("authenticate").attr("outcome"), "ok");

    // The upgrade's traceparent, and a request's own over it.
    let pings: Vec<_> = spans.iter().filter(|s| s.name == "rpc" && s.attr("method") == "ping").collect();
    assert!(
        pings.iter().any(|s| (s.trace_id.as_str(), s.parent_id.as_str()) == (UPGRADE_TRACE, UPGRADE_SPAN)),
        "a ping in the upgrade's trace; spans:\n{dump}"
    );
    assert!(pings.iter().any(|s| s.trace_id == OWN_TRACE), "a ping in its own trace; spans:\n{dump}");

    // The camera's connect attempt.
    let connect = spans
        .iter()
        .find(|s| s.name == "camera.connect" && s.attr("camera_id") == "cam0" && s.attr("outcome") == "connected")
        .unwrap_or_else(|| panic!("no successful camera.connect span for cam0; spans:\n{dump}"));
    assert_eq!((connect.attr("source"), connect.attr("attempt")), ("rtsp", "1"), "{connect:?}");
    assert!(connect.parent_id.is_empty(), "a connect attempt is a root span: {connect:?}");

    // The snapshot, a child of the RPC that asked for it.
    let asked = rpc("take_snapshot");
    let snapshot = spans.iter().find(|s| s.name == "snapshot").unwrap_or_else(|| panic!("no snapshot span:\n{dump}"));
    assert_eq!((snapshot.trace_id.as_str(), snapshot.parent_id.as_str()), (asked.trace_id.as_str(), asked.id.as_str()));
    assert_eq!((snapshot.attr("camera_id"), snapshot.attr("outcome")), ("cam0", "ok"), "{snapshot:?}");
    assert_eq!(snapshot.attr("file"), snap["filename"].as_str().expect("filename"), "{snapshot:?}");

    // The recording session, a child of start_recording; its segments, children of the session.
    let asked = rpc("start_recording");
    let recording =
        spans.iter().find(|s| s.name == "recording").unwrap_or_else(|| panic!("no recording span:\n{dump}"));
    assert_eq!(
        (recording.trace_id.as_str(), recording.parent_id.as_str()),
        (asked.trace_id.as_str(), asked.id.as_str())
    );
    assert_eq!((recording.attr("camera_id"), recording.attr("outcome")), ("cam0", "stopped"), "{recording:?}");
    assert_eq!(recording.attr("trigger"), "api", "{recording:?}");
    let segments: Vec<_> = spans.iter().filter(|s| s.name == "recording.segment").collect();
    assert!(segments.len() >= 2, "5 s of 2 s segments; spans:\n{dump}");
    for segment in &segments {
        assert_eq!(
            (segment.trace_id.as_str(), segment.parent_id.as_str()),
            (recording.trace_id.as_str(), recording.id.as_str())
        );
        assert_eq!((segment.attr("camera_id"), segment.attr("outcome")), ("cam0", "indexed"), "{segment:?}");
        assert!(segment.attr("size_bytes").parse::<u64>().is_ok_and(|n| n > 0), "{segment:?}");
    }
    assert!(segments.iter().any(|s| s.attr("file") == stopped["filename"]), "the first file; spans:\n{dump}");

    // The download joined the trace its header named.
    let http = spans.iter().find(|s| s.is_http()).unwrap_or_else(|| panic!("no http span:\n{dump}"));
    assert_eq!((http.trace_id.as_str(), http.parent_id.as_str()), (DOWNLOAD_TRACE, DOWNLOAD_SPAN), "{http:?}");
    assert_eq!((http.name.as_str(), http.attr("http.route")), ("GET /files/{area}/{name}", "/files/{area}/{name}"));
    assert_eq!(http.attr("http.response.status_code"), "200", "{http:?}");
    eprintln!(
        "{} spans; flushed within {:.1} s of the stop; test took {:.1} s",
        spans.len(),
        arrived.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_bad_endpoint_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("camhub.toml");
    std::fs::write(&path, "[telemetry]\notlp_endpoint = \"grpc://collector:4317\"\n").expect("config");
    let out = Command::new(common::BIN).args(["run", "--config"]).arg(&path).output().expect("run camhub");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("telemetry.otlp_endpoint"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detection_event_is_a_span_and_the_recording_it_starts_its_child() {
    let started = Instant::now();
    let person = common::asset("photos/person.jpg");
    let args = ["--width", "640", "--height", "360", "--fps", "15", "--bitrate", "800", "--image"];
    let mut args: Vec<&str> = args.to_vec();
    args.extend([person.to_str().expect("utf-8 path"), "--image-schedule", "2:30"]);
    let cam = TestCam::start_with(common::free_port(), 1, &args);
    let work = tempfile::tempdir().expect("temp dir");
    let collector = Collector::start(work.path());
    let config = format!(
        "{}{}record = \"events\"\ndetect = {{ model = \"coco\", labels = [\"person\"], end_after_s = 2, post_capture_s = 1 }}\n\
         [telemetry]\notlp_endpoint = \"http://127.0.0.1:{}\"\n",
        common::inference_toml(),
        common::camera_toml("door", &cam.url(0)),
        collector.port
    );
    let mut hub = Camhub::start(&config);
    let client = hub.client("operator").await;
    client.call("subscribe_events", json!({ "topics": ["detection"] })).await.expect("subscribe");
    let new = client
        .wait_notification("event", Duration::from_secs(40), |p| {
            p["data"]["type"] == "new" && p["data"]["label"] == "person"
        })
        .await;
    let new = new.unwrap_or_else(|| panic!("no person detected; log:\n{}", hub.log()));
    let event_id = new["data"]["event_id"].as_i64().expect("event id").to_string();
    drop(client);
    hub.stop();
    let spans = collector.wait_for(Duration::from_secs(10), |spans| {
        spans.iter().any(|s| s.name == "detection.event") && spans.iter().any(|s| s.name == "recording")
    });
    let dump = spans.iter().map(|s| format!("{} {:?}", s.name, s.attributes)).collect::<Vec<_>>().join("\n");
    let event = spans
        .iter()
        .find(|s| s.name == "detection.event" && s.attr("phase") == "new" && s.attr("event_id") == event_id)
        .unwrap_or_else(|| panic!("no detection.event span for event {event_id}; spans:\n{dump}"));
    assert_eq!((event.attr("camera_id"), event.attr("label")), ("door", "person"), "{event:?}");
    assert!(event.parent_id.is_empty(), "a detection event is a root span: {event:?}");
    let recording = spans.iter().find(|s| s.name == "recording").unwrap_or_else(|| panic!("no recording:\n{dump}"));
    assert_eq!(recording.attr("trigger"), "detection", "{recording:?}");
    assert_eq!(
        (recording.trace_id.as_str(), recording.parent_id.as_str()),
        (event.trace_id.as_str(), event.id.as_str())
    );
    assert_eq!(event.attr("recording"), recording.attr("file"), "the event names the recording it started");
    eprintln!("detection trace checked; test took {:.1} s", started.elapsed().as_secs_f64());
}
