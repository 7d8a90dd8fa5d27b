//! Network discovery end to end, with real peers in network namespaces of their own: each test makes a namespace
//! joined to this machine by a veth pair, and runs in it the real test camera (`camhub testcam`) and an ONVIF camera
//! whose WS-Discovery side is a third-party implementation (PyPI's WSDiscovery, `tests/peers/onvif_peer.py`) and whose
//! SOAP side checks WS-Security digests. camhub, outside, is configured with the host end of the pair. A second
//! namespace, whose interface camhub is not given, holds another ONVIF camera that must never hear from it, and
//! addresses nobody names are watched. Needs root (namespaces) and `scripts/install-deps.sh --test` (the peer's
//! Python); without them the tests fail and say why.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Camhub};
use serde_json::{Value, json};

const USER: &str = "onvif-operator";
const PASSWORD: &str = "digest-only-s3cret";
/// Where the test camera listens inside the namespace: not a port discovery tries by itself.
const CAM_PORT: u16 = 8654;
const ONVIF_PORT: u16 = 8080;
const SLOW: Duration = Duration::from_secs(30);

/// Runs `ip` (as root), or panics with what it said.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2: scripts/install-deps.sh --test)");
    assert!(
        out.status.success(),
        "ip {} failed: {} (the discovery tests need root for network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `ip` whose failure does not matter (removing what may not exist).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// A network namespace joined to this machine by a veth pair: `10.SUBNET.1/24` on the host end, `10.SUBNET.2/24`
/// (and any extra addresses) inside. Its processes are killed and the namespace deleted on drop, which removes the
/// pair too.
struct Netns {
    name: String,
    /// The host end's interface name (what camhub is configured with).
    host_if: String,
    /// `10.X.Y`: the /24 both ends share.
    subnet: String,
    children: Vec<Child>,
}

impl Netns {
    /// `tag` names it (each test its own, at most 6 characters); `subnet` is `10.X.Y`.
    fn new(tag: &str, subnet: &str, extra_addresses: &[&str]) -> Netns {
        let name = format!("chd-{tag}");
        let host_if = format!("chd{tag}h");
        let inner_if = format!("chd{tag}p");
        // What a run killed before its clean-up left behind.
        ip_quiet(&["netns", "del", &name]);
        ip_quiet(&["link", "del", &host_if]);
        ip(&["netns", "add", &name]);
        let ns =
            Netns { name: name.clone(), host_if: host_if.clone(), subnet: subnet.to_owned(), children: Vec::new() };
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &inner_if]);
        ip(&["link", "set", &inner_if, "netns", &name]);
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| ip(&[&["netns", "exec", &name, "ip"], args].concat());
        inside(&["addr", "add", &format!("{subnet}.2/24"), "dev", &inner_if]);
        for a in extra_addresses {
            inside(&["addr", "add", &format!("{a}/24"), "dev", &inner_if]);
        }
        inside(&["link", "set", &inner_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        // Multicast leaves the namespace by its veth. On the host side there is deliberately no such route: camhub
        // picks the interface of each probe itself.
        inside(&["route", "add", "224.0.0.0/4", "dev", &inner_if]);
        ns
    }

    /// The namespace's own address (`.2`), or another of its /24.
    fn addr(&self, last: u8) -> String {
        format!("{}.{last}", self.subnet)
    }

    /// Starts `program args` inside the namespace; killed on drop.
    fn spawn(&mut self, program: &str, args: &[String], log: &Path) {
        let out = std::fs::File::create(log).expect("a log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} in {}: {e}", self.name));
        self.children.push(child);
    }

    /// The test camera, two cameras at 320x240, cam0 also at `/stream1` (a path discovery tries).
    fn start_testcam(&mut self, dir: &Path) {
        let args: Vec<String> = [
            "testcam",
            "--listen",
            &format!("{}:{CAM_PORT}", self.addr(2)),
            "--cameras",
            "2",
            "--width",
            "320",
            "--height",
            "240",
            "--fps",
            "15",
            "--bitrate",
            "300",
            "--also-at",
            "/stream1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.spawn(BIN, &args, &dir.join(format!("testcam-{}.log", self.name)));
        let addr = format!("{}:{CAM_PORT}", self.addr(2));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr.parse().expect("address"), Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "the test camera did not listen on {addr} in {}", self.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ONVIF peer on `.2`, with a profile per stream URI, checking `USER`/`PASSWORD`, watching `watch`. Returns
    /// its log (JSON lines) once it is ready.
    fn start_onvif_peer(&mut self, dir: &Path, name: &str, streams: &[String], watch: &[String]) -> PathBuf {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/.venv-peers/bin/python");
        assert!(
            python.is_file(),
            "{} is missing: run scripts/install-deps.sh --test (it installs WSDiscovery for the ONVIF peer); this \
             test never skips",
            python.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/onvif_peer.py");
        let log = dir.join(format!("peer-{}.jsonl", self.name));
        let mut args: Vec<String> = vec![
            script.display().to_string(),
            "--address".into(),
            self.addr(2),
            "--http-port".into(),
            ONVIF_PORT.to_string(),
            "--name".into(),
            name.into(),
            "--username".into(),
            USER.into(),
            "--password".into(),
            PASSWORD.into(),
            "--log".into(),
            log.display().to_string(),
        ];
        for s in streams {
            args.extend(["--stream-uri".into(), s.clone()]);
        }
        for w in watch {
            args.extend(["--watch".into(), w.clone()]);
        }
        for port in [80, 554, 8554, CAM_PORT, ONVIF_PORT] {
            args.extend(["--watch-port".into(), port.to_string()]);
        }
        let python = python.display().to_string();
        self.spawn(&python, &args, &dir.join(format!("peer-{}.out", self.name)));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !peer_events(&log).iter().any(|e| e["event"] == "ready") {
            let out = std::fs::read_to_string(dir.join(format!("peer-{}.out", self.name))).unwrap_or_default();
            assert!(Instant::now() < deadline, "the ONVIF peer in {} did not get ready:\n{out}", self.name);
            std::thread::sleep(Duration::from_millis(100));
        }
        log
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        ip_quiet(&["netns", "del", &self.name]);
        ip_quiet(&["link", "del", &self.host_if]);
    }
}

/// The peer's log, one JSON value a line.
fn peer_events(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn streams_of(result: &Value) -> Vec<Value> {
    result["discovered_streams"].as_array().expect("discovered_streams is an array").clone()
}

fn stream<'a>(streams: &'a [Value], url: &str) -> &'a Value {
    streams.iter().find(|s| s["url"] == url).unwrap_or_else(|| panic!("no stream {url} among {streams:#?}"))
}

/// A config with discovery on the host end of `ns` and no local devices (their discovery would set
/// `discovery_active` on a machine with udev).
fn config(ns: &Netns, more: &str) -> String {
    format!("[v4l2]\nenabled = false\n[discovery]\ninterfaces = [\"{}\"]\n{more}\n", ns.host_if)
}

#[tokio::test]
async fn onvif_and_rtsp_cameras_are_found_where_camhub_is_told_and_nowhere_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut lab = Netns::new("a", "10.201.11", &["10.201.11.3"]);
    lab.start_testcam(dir.path());
    let cam = |path: &str| format!("rtsp://{}:{CAM_PORT}{path}", lab.addr(2));
    let (main, sub, probed) = (cam("/cam0"), cam("/cam1"), cam("/stream1"));
    let watched = lab.addr(3);
    let peer =
        lab.start_onvif_peer(dir.path(), "Gate Camera", &[main.clone(), sub.clone()], std::slice::from_ref(&watched));
    // Another ONVIF camera, on an interface camhub is not given: it must never hear a probe.
    let mut other = Netns::new("b", "10.202.11", &[]);
    let other_stream = format!("rtsp://{}:{CAM_PORT}/cam0", other.addr(2));
    let other_peer = other.start_onvif_peer(dir.path(), "Elsewhere", &[other_stream], &[]);

    let hub = Camhub::start(&config(&lab, ""));
    let operator = hub.client("operator").await;
    let hosts = json!([format!("{}:{CAM_PORT}", lab.addr(2)), lab.addr(2)]);
    let params = json!({ "hosts": hosts, "timeout_ms": 2500, "username": USER, "password": PASSWORD });

    let started = Instant::now();
    let found = operator.call("discover_external_streams", params.clone()).await.expect("discover");
    eprintln!("discovery took {:?}", started.elapsed());
    assert!(!found.to_string().contains(PASSWORD), "a credential in the result: {found}");
    let streams = streams_of(&found);
    assert_eq!(found["total_found"], streams.len(), "{found}");
    for (url, source) in [(&main, "onvif"), (&sub, "onvif"), (&probed, "rtsp_probe")] {
        let s = stream(&streams, url);
        assert_eq!(s["source"], source, "{s}");
        assert_eq!((&s["codec"], &s["width"], &s["height"]), (&json!("H264"), &json!(320), &json!(240)), "{s}");
        assert_eq!((&s["already_added"], &s["device"]), (&json!(false), &Value::Null), "{s}");
        assert_eq!(s["host"], lab.addr(2), "{s}");
    }
    assert_eq!(streams.len(), 3, "only the three streams there are: {found:#}");
    assert_eq!(stream(&streams, &main)["name"], "Gate Camera MainStream");
    assert_eq!(stream(&streams, &sub)["profile"], "profile1");
    let devices = found["devices"].as_array().expect("devices");
    let device = |address: String, source: &str| {
        devices
            .iter()
            .find(|d| d["address"] == address.as_str() && d["source"] == source)
            .unwrap_or_else(|| panic!("no {source} device {address}: {found:#}"))
            .clone()
    };
    let onvif = device(lab.addr(2), "onvif");
    assert_eq!((&onvif["status"], &onvif["streams"], &onvif["name"]), (&json!("OK"), &json!(2), &json!("Gate Camera")));
    assert_eq!(onvif["service"], format!("http://{}:{ONVIF_PORT}/onvif/device_service", lab.addr(2)));
    let probed_host = device(format!("{}:{CAM_PORT}", lab.addr(2)), "rtsp_probe");
    assert_eq!((&probed_host["status"], &probed_host["streams"]), (&json!("OK"), &json!(1)), "{probed_host}");
    // 554 and 8554 are closed there, and the host was named without a port.
    let closed = device(lab.addr(2), "rtsp_probe");
    assert_eq!((&closed["status"], &closed["streams"]), (&json!("UNREACHABLE"), &json!(0)), "{closed}");
    assert_eq!(found["scanned"]["interfaces"], json!([lab.host_if]), "{found}");
    assert!(
        found["errors"].as_array().expect("errors").iter().any(|e| e.as_str().is_some_and(|e| e.contains("port 554")))
    );

    // What was found is what add_external_stream takes; the camera connects.
    let added = operator
        .call("add_external_stream", json!({ "stream_url": main, "stream_name": "Gate Main" }))
        .await
        .expect("add the discovered stream");
    assert_eq!(added["device"], "gate-main");
    operator
        .wait_notification("camera_status_update", SLOW, |p| p["device"] == "gate-main" && p["status"] == "CONNECTED")
        .await
        .unwrap_or_else(|| panic!("the discovered camera never connected; log:\n{}", hub.log()));
    let again = operator.call("discover_external_streams", params.clone()).await.expect("discover again");
    let streams = streams_of(&again);
    assert_eq!(
        (&stream(&streams, &main)["already_added"], &stream(&streams, &main)["device"]),
        (&json!(true), &json!("gate-main"))
    );
    assert_eq!(stream(&streams, &sub)["already_added"], false);

    // A wrong password is the device's problem, not the call's.
    let wrong = json!({ "timeout_ms": 2500, "username": USER, "password": "not-the-password" });
    let refused = operator.call("discover_external_streams", wrong).await.expect("a wrong password fails no call");
    let devices = refused["devices"].as_array().expect("devices");
    let onvif = devices.iter().find(|d| d["source"] == "onvif").unwrap_or_else(|| panic!("{refused:#}"));
    assert_eq!((&onvif["status"], &onvif["streams"]), (&json!("AUTH_FAILED"), &json!(0)), "{refused:#}");
    assert_eq!(refused["total_found"], 0, "{refused:#}");
    assert!(refused["errors"].to_string().contains("credentials refused"), "{refused:#}");

    // Who heard what: the probes and SOAP calls came from camhub's end of the pair only; the watched address and
    // the camera on the other interface heard nothing.
    let events = peer_events(&peer);
    let probes: Vec<&Value> = events.iter().filter(|e| e["event"] == "probe").collect();
    assert!(!probes.is_empty(), "the peer saw no probe: {events:#?}");
    let camhub_side = lab.addr(1);
    for e in events.iter().filter(|e| e["event"] == "probe" || e["event"] == "http") {
        assert_eq!(e["client"], camhub_side.as_str(), "{e}");
    }
    let calls: Vec<&str> = events.iter().filter(|e| e["event"] == "http").filter_map(|e| e["op"].as_str()).collect();
    for op in ["GetCapabilities", "GetProfiles", "GetStreamUri"] {
        assert!(calls.contains(&op), "camhub never called {op}: {calls:?}");
    }
    assert!(events.iter().any(|e| e["event"] == "http" && e["auth"] == "refused"), "the wrong password reached it");
    let contacts: Vec<&Value> = events.iter().filter(|e| e["event"] == "contact").collect();
    assert!(contacts.is_empty(), "camhub contacted {watched}, which nobody named: {contacts:#?}");
    let elsewhere: Vec<Value> = peer_events(&other_peer).into_iter().filter(|e| e["event"] != "ready").collect();
    assert!(elsewhere.is_empty(), "the camera on an interface camhub was not given heard from it: {elsewhere:#?}");
    assert!(!hub.log().contains(PASSWORD), "the password is in camhub's log");
}

#[tokio::test]
async fn periodic_discovery_announces_new_streams_and_adds_new_cameras() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut lab = Netns::new("c", "10.201.12", &[]);
    lab.start_testcam(dir.path());
    let cam = |path: &str| format!("rtsp://{}:{CAM_PORT}{path}", lab.addr(2));
    let (main, sub) = (cam("/cam0"), cam("/cam1"));
    lab.start_onvif_peer(dir.path(), "Yard", &[main.clone(), sub.clone()], &[]);
    let keys = format!("auto_add = true\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"");
    let mut hub = Camhub::start(&config(&lab, &keys));
    let admin = hub.client("admin").await;
    let viewer = hub.client("viewer").await;

    // Refusals first: roles and parameters.
    let e = viewer.call("discover_external_streams", json!({})).await.expect_err("viewers cannot scan");
    assert_eq!((&e["code"], &e["data"]["required_role"]), (&json!(-32002), &json!("operator")), "{e}");
    let e = hub.client("operator").await.call("set_discovery_interval", json!({ "scan_interval": 60 })).await;
    assert_eq!(e.expect_err("operators cannot set the interval")["code"], -32002);
    for (method, params, param) in [
        ("discover_external_streams", json!({ "timeout_ms": 50 }), "timeout_ms"),
        ("discover_external_streams", json!({ "timeout_ms": 30001 }), "timeout_ms"),
        ("discover_external_streams", json!({ "hosts": ["10.201.12.0/24"] }), "hosts"),
        ("discover_external_streams", json!({ "hosts": "10.201.12.2" }), "hosts"),
        ("discover_external_streams", json!({ "password": "x" }), "username"),
        ("discover_external_streams", json!({ "subnet": "10.0.0.0/8" }), "subnet"),
        ("set_discovery_interval", json!({ "scan_interval": 5 }), "scan_interval"),
        ("set_discovery_interval", json!({ "scan_interval": -1 }), "scan_interval"),
        ("set_discovery_interval", json!({}), "scan_interval"),
    ] {
        let e = admin.call(method, params.clone()).await.expect_err("invalid params");
        assert_eq!((&e["code"], &e["data"]["param"]), (&json!(-32602), &json!(param)), "{method} {params}: {e}");
    }
    let status = admin.call("get_system_status", json!({})).await.expect("status");
    assert_eq!(status["discovery_active"], false, "{status}");

    // On: a scan at once, each new stream announced, the device added as a camera (its largest stream).
    let r = admin.call("subscribe_events", json!({ "topics": ["discovery.found", "camera.added"] })).await;
    assert!(r.is_ok(), "{r:?}");
    let set = admin.call("set_discovery_interval", json!({ "scan_interval": 10 })).await.expect("set the interval");
    assert_eq!(
        (&set["scan_interval"], &set["status"], &set["discovery_active"]),
        (&json!(10), &json!("UPDATED"), &json!(true))
    );
    let found = |url: String| move |p: &Value| p["topic"] == "discovery.found" && p["data"]["url"] == url.as_str();
    let added = admin
        .wait_notification("event", SLOW, found(main.clone()))
        .await
        .unwrap_or_else(|| panic!("no discovery.found for {main}; log:\n{}", hub.log()));
    assert_eq!(added["data"]["source"], "onvif", "{added}");
    assert_eq!((&added["data"]["codec"], &added["data"]["width"]), (&json!("H264"), &json!(320)), "{added}");
    assert_eq!((&added["data"]["auto_added"], &added["device"]), (&json!(true), &json!("yard-mainstream")), "{added}");
    assert!(!added.to_string().contains(PASSWORD), "{added}");
    let other = admin.wait_notification("event", SLOW, found(sub.clone())).await.expect("discovery.found for cam1");
    assert_eq!((&other["data"]["auto_added"], &other["device"]), (&json!(false), &Value::Null), "{other}");
    admin
        .wait_notification("camera_status_update", SLOW, |p| {
            p["device"] == "yard-mainstream" && p["status"] == "CONNECTED"
        })
        .await
        .unwrap_or_else(|| panic!("the added camera never connected; log:\n{}", hub.log()));
    let status = admin.call("get_system_status", json!({})).await.expect("status");
    assert_eq!(status["discovery_active"], true, "{status}");
    let listed = admin.call("get_external_streams", json!({})).await.expect("external streams");
    assert!(listed.to_string().contains(&main) && !listed.to_string().contains(PASSWORD), "{listed}");

    // The choice is kept across a restart, and so is the camera it added; off is off.
    hub.restart(&config(&lab, &keys));
    let admin = hub.client("admin").await;
    let status = admin.call("get_system_status", json!({})).await.expect("status");
    assert_eq!(status["discovery_active"], true, "the interval survives a restart: {status}");
    admin.wait_status("yard-mainstream", SLOW, |s| s["status"] == "CONNECTED").await.unwrap_or_else(|| {
        panic!(
            "the added camera did not come back; log:
{}",
            hub.log()
        )
    });
    let off = admin.call("set_discovery_interval", json!({ "scan_interval": 0 })).await.expect("off");
    assert_eq!((&off["scan_interval"], &off["discovery_active"]), (&json!(0), &json!(false)), "{off}");
    assert!(!hub.log().contains(PASSWORD), "the password is in camhub's log");
}
