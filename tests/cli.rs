//! The command line as an operator meets it: config validation (exit 64 with one line naming the key), environment
//! overrides, token issue, and an orderly stop on SIGTERM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

/// A config for a service with no camera, its data in `dir`, listening on a free port (returned); its RTSP server on
/// a free port too: the default, 8554, may be held by a demo running on the same machine; its push listeners on ports
/// the system picks.
fn service_config(dir: &std::path::Path) -> (std::path::PathBuf, u16) {
    let (port, rtsp_port) = (common::free_port(), common::free_port());
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[rtsp_server]\nlisten = \"127.0.0.1:{rtsp_port}\"\n\
         [rtmp]\nlisten = \"127.0.0.1:0\"\n[srt]\nlisten = \"127.0.0.1:0\"\n[storage]\nroot = \"{}\"\n",
        dir.display()
    );
    (write(dir, &text), port)
}

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("c.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn bad_configs_exit_64_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        ("[server]\nlisten = \"not-an-address\"\n", "server.listen"),
        ("[[cameras]]\nid = \"Front Door\"\nurl = \"rtsp://h/x\"\n", "cameras[0].id"),
        ("[[cameras]]\nid = \"a\"\nurl = \"http://h/x\"\n", "cameras[0].url"),
        ("[server]\nmax_connections = \"lots\"\n", "max_connections"),
        ("[nonsense]\nx = 1\n", "nonsense"),
        ("this is not toml", "TOML"),
    ];
    for (text, key) in cases {
        let path = write(dir.path(), text);
        for command in ["check-config", "run"] {
            let out = Command::new(common::BIN).args([command, "--config"]).arg(&path).output().expect("run camhub");
            assert_eq!(out.status.code(), Some(64), "{command} {text:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(stderr.trim_end().lines().count(), 1, "{command} {text:?}: {stderr}");
            assert!(stderr.contains(key), "{command} {text:?}: {stderr}");
        }
    }
    let out = Command::new(common::BIN).args(["run", "--config", "/nonexistent.toml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn check_config_accepts_a_good_file_and_environment_overrides_apply() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), "[[cameras]]\nid = \"front\"\nurl = \"rtsp://u:p@cam/x\"\n");
    let out = Command::new(common::BIN).args(["check-config", "--config"]).arg(&path).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 cameras") && stdout.contains("127.0.0.1:8002"), "{stdout}");
    let out = Command::new(common::BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env("CAMHUB_SERVER__LISTEN", "127.0.0.1:9100")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:9100"));
    let out = Command::new(common::BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env("CAMHUB_SERVER__LISTEN", "nowhere")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn token_prints_a_jwt_the_service_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), &format!("[storage]\nroot = \"{}\"\n", dir.path().display()));
    let out = Command::new(common::BIN)
        .args(["token", "--role", "viewer", "--ttl", "60", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3);
    let secret = std::fs::read(dir.path().join("jwt_secret")).expect("a secret was created in the data dir");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("jwt_secret")).expect("meta").permissions().mode();
    assert_eq!(mode & 0o077, 0, "secret readable by others");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(&secret),
        &validation,
    )
    .expect("token verifies with the stored secret");
    assert_eq!(data.claims["role"], "viewer");
    let bad = Command::new(common::BIN).args(["token", "--role", "root", "--config"]).arg(&path).output().expect("run");
    assert!(!bad.status.success());
}

#[test]
fn sigterm_stops_the_service_in_order() {
    let cam = common::TestCam::start(1);
    let mut hub = common::Camhub::start(&common::camera_toml("c", &cam.url(0)));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = hub.client("viewer").await;
        client.wait_status("c", Duration::from_secs(20), |s| s["status"] == "CONNECTED").await.expect("connected");
    });
    let started = Instant::now();
    common::send_signal(hub.pid(), 15);
    let status = hub.wait_exit(Duration::from_secs(10)).expect("camhub stopped within its grace time");
    assert_eq!(status.code(), Some(0), "an orderly stop exits 0");
    assert!(started.elapsed() < Duration::from_secs(10), "stop took {:?}", started.elapsed());
    let log = hub.log();
    assert!(log.contains("shutting down") && log.contains("stopped"), "{log}");
    assert!(!log.contains("grace time exceeded"), "{log}");
    assert!(!log.contains("cannot log event"), "events published during shutdown were lost: {log}");
}

#[test]
fn a_second_signal_exits_at_once() {
    let cam = common::TestCam::start(1);
    let mut hub = common::Camhub::start(&common::camera_toml("c", &cam.url(0)));
    let pid = hub.pid();
    common::send_signal(pid, 15);
    // Signals that arrive together are one signal to the kernel: the second comes a moment later, as a user's would.
    std::thread::sleep(Duration::from_millis(30));
    common::send_signal(pid, 15);
    let status = hub.wait_exit(Duration::from_secs(5)).expect("camhub exited");
    // 130 is the immediate exit; an orderly stop exits 0.
    assert_eq!(status.code(), Some(130), "{status:?}; log:\n{}", hub.log());
}

/// The systemd notify protocol, spoken to a real datagram socket as systemd would listen on it: READY once serving,
/// WATCHDOG pings at half the requested interval, STOPPING on SIGTERM.
#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let (config, port) = service_config(dir.path());
    // systemd names the watched process in WATCHDOG_PID: `exec` from a shell keeps `$$` as camhub's pid.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("WATCHDOG_PID=$$ exec {} run --config {}", common::BIN, config.display()))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(std::fs::File::create(dir.path().join("log")).expect("log file"))
        .spawn()
        .expect("spawn camhub");
    let mut buf = [0u8; 256];
    let mut heard = Vec::new();
    let started = Instant::now();
    while !(heard.iter().any(|m: &String| m.contains("READY=1"))
        && heard.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        assert!(started.elapsed() < Duration::from_secs(20), "heard only {heard:?}");
        let n = socket.recv(&mut buf).expect("a notification");
        heard.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(common::http_get(port, "/health/ready").is_some_and(|(code, _)| code == 200), "READY before serving");
    common::send_signal(child.id(), 15);
    loop {
        let n = socket.recv(&mut buf).expect("STOPPING before exit");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
    let status = child.wait().expect("exit");
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{status:?}; log:\n{log}");
}

/// A SIGTERM while camhub is still starting (its port bound, GStreamer, the database and the cameras not yet up) is
/// held until start-up ends and then stops it in order: the signal handlers are installed before start-up, not when
/// the service first waits for its shutdown (then the default action killed it, status "signal 15").
#[test]
fn a_signal_during_start_up_stops_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, port) = service_config(dir.path());
    let mut child = Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(dir.path().join("log")).expect("log file"))
        .spawn()
        .expect("spawn camhub run");
    // The listening port is bound first of all, before anything slow. Its LISTEN entry in /proc/net/tcp says so; a
    // connect would not (connecting in a loop to a port in the ephemeral range can connect the socket to itself).
    let listening = format!(":{port:04X} 00000000:0000 0A");
    let started = Instant::now();
    while !std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp").contains(&listening) {
        assert!(started.elapsed() < Duration::from_secs(30), "camhub did not bind its port");
        std::thread::sleep(Duration::from_millis(2));
    }
    common::send_signal(child.id(), 15);
    let status = child.wait().expect("exit");
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{status:?}; log:\n{log}");
    assert!(log.contains("stopped"), "{log}");
}

/// Logs to a file or the journal are plain text: no ANSI colour codes when stderr is not a terminal, even with
/// `NO_COLOR` unset (the terminal case is the unit test beside `init_logging`).
#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, port) = service_config(dir.path());
    let child = Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn camhub run");
    let started = Instant::now();
    while common::http_get(port, "/health/ready").is_none_or(|(code, _)| code != 200) {
        assert!(started.elapsed() < Duration::from_secs(30), "camhub did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    common::send_signal(child.id(), 15);
    let out = child.wait_with_output().expect("camhub exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("camhub listening"), "no log line to judge: {stderr}");
    assert!(!stderr.contains("\x1b["), "colour codes in a piped log: {stderr:?}");
}

/// `camhub demo` with one of its ports taken: one line naming the port on stderr and a quick non-zero exit, before any
/// URL or token is printed and before anything is started. The ports are the demo's own (8002, 8554, 8654); for the
/// later checks the earlier ports move to free ones through the environment (`CAMHUB_SERVER__LISTEN`, ...), so each
/// case meets exactly the port it takes. A port that something else on this machine holds already is the same scenario.
#[test]
fn demo_with_a_taken_port_names_it_and_prints_nothing_to_try() {
    let cases = [
        ("HTTP/WebSocket", 8002, None, None),
        ("RTSP server", 8554, Some(common::free_port()), None),
        ("test camera", 8654, Some(common::free_port()), Some(common::free_port())),
    ];
    for (what, taken, http, rtsp) in cases {
        let _holder = std::net::TcpListener::bind(("127.0.0.1", taken)).ok();
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("demo");
        let mut command = Command::new(common::BIN);
        command.args(["demo", "--data"]).arg(&data);
        command.env_remove("CAMHUB_SERVER__LISTEN").env_remove("CAMHUB_RTSP_SERVER__LISTEN");
        if let Some(port) = http {
            command.env("CAMHUB_SERVER__LISTEN", format!("127.0.0.1:{port}"));
        }
        if let Some(port) = rtsp {
            command.env("CAMHUB_RTSP_SERVER__LISTEN", format!("127.0.0.1:{port}"));
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn camhub demo");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "demo with port {taken} ({what}) taken still runs after 10 s; stdout:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().expect("output");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!status.success(), "{what}: {status:?}");
        assert!(stderr.contains(&format!("camhub: port {taken} ({what}) is taken")), "{what}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
        assert!(!stdout.contains("ws://") && !stdout.contains("token"), "{what}: printed what to try: {stdout}");
        assert!(stdout.trim().is_empty(), "{what}: {stdout}");
        assert!(!data.exists(), "{what}: the demo created its data dir before finding the port taken");
    }
}

/// Runs `camhub ARGS` (the built-in client) with no token in its environment; (exit code, stdout, stderr).
fn camhub_client(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(common::BIN)
        .args(args)
        .env_remove("CAMHUB_TOKEN")
        .env_remove("CAMHUB_CONFIG")
        .output()
        .expect("run camhub");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn call_prints_the_result_as_json_with_an_api_key() {
    let cam = common::TestCam::start(1);
    let hub = common::Camhub::start(&common::camera_toml("c", &cam.url(0)));
    let key = hub.api_key("viewer");
    let url = hub.ws_url();
    let (code, stdout, stderr) = camhub_client(&["call", "--url", &url, "--token", &key, "get_camera_list"]);
    assert_eq!(code, Some(0), "{stderr}");
    let result: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is the result as JSON");
    assert_eq!(result["cameras"][0]["device"], "c", "{stdout}");
    assert!(!stdout.contains(&key) && !stderr.contains(&key), "the key was printed");
    // Parameters: a JSON-looking value is JSON, anything else a string.
    let (code, stdout, stderr) =
        camhub_client(&["call", "--url", &url, "--token", &key, "get_camera_status", "device=c"]);
    assert_eq!(code, Some(0), "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(status["device"], "c", "{stdout}");
    // The token can come from the environment; the default URL from the config (`--config`).
    let out = Command::new(common::BIN)
        .args(["call", "get_camera_list", "--config"])
        .arg(hub.dir.join("camhub.toml"))
        .env("CAMHUB_TOKEN", &key)
        .output()
        .expect("run camhub");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"c\""));
}

#[test]
fn call_exits_1_with_the_error_object_and_2_without_a_server() {
    let hub = common::Camhub::start("");
    let url = hub.ws_url();
    let (code, stdout, stderr) = camhub_client(&["call", "--url", &url, "--token", "not-a-key", "get_camera_list"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("-32001"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(!stderr.contains("not-a-key"), "the token was printed: {stderr}");
    // Without a token the server asks for one, the same way.
    let (code, _, stderr) = camhub_client(&["call", "--url", &url, "get_camera_list"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("-32001"), "{stderr}");
    // A refused method is the server's error too.
    let (code, _, stderr) = camhub_client(&["call", "--url", &url, "no_such_method"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("-32601"), "{stderr}");
    // Nothing listening: a connection failure.
    let nowhere = format!("ws://127.0.0.1:{}/ws", common::free_port());
    let (code, _, stderr) = camhub_client(&["call", "--url", &nowhere, "ping"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    // Not key=value: a usage error before connecting.
    let (code, _, _) = camhub_client(&["call", "--url", &nowhere, "get_camera_status", "cam0"]);
    assert_eq!(code, Some(64));
}

#[test]
fn ping_needs_no_token_and_ignores_a_stale_one() {
    let hub = common::Camhub::start("");
    let url = hub.ws_url();
    let (code, stdout, stderr) = camhub_client(&["call", "--url", &url, "ping"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(serde_json::from_str::<serde_json::Value>(&stdout).is_ok(), "{stdout}");
    let (code, _, stderr) = camhub_client(&["call", "--url", &url, "--token", "expired-or-wrong", "ping"]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// `camhub events TOPIC --count 1` prints the topic's event as one JSON line when it happens, and exits.
#[test]
fn events_prints_a_status_change_when_the_camera_dies() {
    let mut cam = common::TestCam::start(1);
    let hub = common::Camhub::start(&common::camera_toml("c", &cam.url(0)));
    let key = hub.api_key("viewer");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let watcher = rt.block_on(async {
        let client = hub.client("viewer").await;
        client.wait_status("c", Duration::from_secs(20), |s| s["status"] == "CONNECTED").await.expect("connected");
        client
    });
    let events = Command::new(common::BIN)
        .args(["events", "--count", "1", "--url", &hub.ws_url(), "camera.status_change"])
        .env("CAMHUB_TOKEN", &key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn camhub events");
    // The camera dies only once the events client has subscribed, so the change cannot slip past it.
    rt.block_on(async {
        let started = Instant::now();
        loop {
            let stats = watcher.call("get_subscription_stats", serde_json::json!({})).await.expect("stats");
            if stats["global_stats"]["topic_counts"]["camera.status_change"].as_u64().unwrap_or(0) >= 1 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "camhub events did not subscribe: {stats}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    cam.kill();
    let started = Instant::now();
    let mut events = events;
    while events.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = events.kill();
            panic!("no status change printed within 20 s of the camera's death");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = events.wait_with_output().expect("output");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(line["method"], "event", "{line}");
    assert_eq!(line["params"]["topic"], "camera.status_change", "{line}");
    assert_eq!(line["params"]["device"], "c", "{line}");
}
