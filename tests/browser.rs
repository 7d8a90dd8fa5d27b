//! The web page in a real browser: Debian's Chromium driven by playwright-core (`tests/browser/*.mjs`) against a real
//! camhub and real test cameras. `live_view.mjs`: sign-in, live WHEP video, status badges across a camera crash and
//! return, a snapshot, a recording download, a camera withdrawn from publishing and back, sign-out and a refused
//! credential; the screenshot and the WHEP POST-to-first-frame times go to `evidence/`. `detections.mjs`: with the real
//! ONNX Runtime and COCO model (`scripts/install-models.sh`), a box over a person in a real photo on the live video,
//! the event listed with its picture, detection turned off and on; its screenshot goes to `evidence/`. `sources.mjs`:
//! an operator makes a stream key in the page, FFmpeg publishes over RTMP with the URL read from its one-time box, the
//! pushed camera plays and its key says so; a scan of the test camera's host lists its stream, which the page adds with
//! the scan's credentials percent-encoded and which then plays; the key is revoked and its camera leaves; neither the
//! key nor the password is left in the page, its storage or its console; a viewer sees none of it; its screenshots go
//! to `evidence/`. `hls_fallback.mjs`: where WebRTC cannot connect (camhub offers an unreachable ICE candidate), the
//! page falls back to low-latency HLS with the hls.js camhub serves (`hls.player_js`, from npm through
//! `scripts/install-models.sh`) and its picture moves on. `timeline.mjs`: a recording camera's span on its timeline
//! strip, a click plays it through `/playback` (a media token in the URL) with the page's video advancing; its
//! screenshot goes to `evidence/`. Fails, never skips, when Chromium, Node.js, FFmpeg, hls.js or the models are
//! missing.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Camhub, TestCam, asset, camera_toml, inference_toml};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser run; generous, as the machine may be busy with other builds.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(240);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn evidence_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("evidence")
}

/// Chromium, Node.js and playwright-core (installed with `npm ci` from the lock file when absent), or a panic that
/// says what to install.
fn require_browser_tools() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (scripts/install-deps.sh --test); this test never skips"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing: install nodejs and npm (scripts/install-deps.sh --test); this test never skips"
    );
    if !browser_dir().join("node_modules/playwright-core/package.json").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(browser_dir())
            .status()
            .expect("run npm ci (install npm: scripts/install-deps.sh --test)");
        assert!(status.success(), "npm ci --prefix tests/browser failed");
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// Runs the node script `script` (under `tests/browser/`) with camhub's address, an operator token, a path for a
/// screenshot at a failure and `env` in its environment, answering its `@cmd` lines with `answer`; returns its
/// `@result`.
fn run_browser(hub: &Camhub, script: &str, env: &[(&str, &OsStr)], mut answer: impl FnMut(&str) -> String) -> Value {
    let token = hub.token("operator");
    let stem = script.trim_end_matches(".mjs");
    let mut child = Command::new("node")
        .arg(browser_dir().join(script))
        .env("CAMHUB_URL", format!("http://127.0.0.1:{}/", hub.port))
        .env("CAMHUB_TOKEN", &token)
        .env("FAILURE_SCREENSHOT", Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-failure-{stem}.png")))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn node");
    let pid = child.id();
    // A watchdog: a hung browser fails the test instead of hanging it.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + BROWSER_TIMEOUT;
            while std::time::Instant::now() < deadline {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            common::send_signal(pid, 9);
            true
        })
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut result = None;
    for line in stdout.lines() {
        let line = line.expect("read node's output");
        if let Some(command) = line.strip_prefix("@cmd ") {
            writeln!(stdin, "{}", answer(command)).expect("answer node");
        } else if let Some(json) = line.strip_prefix("@result ") {
            result = Some(serde_json::from_str(json).expect("@result is JSON"));
        } else {
            eprintln!("{line}");
        }
    }
    let status = child.wait().expect("wait for node");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let timed_out = watchdog.join().expect("watchdog");
    assert!(!timed_out, "the browser run took longer than {BROWSER_TIMEOUT:?}; camhub log:\n{}", hub.log());
    assert!(status.success(), "the browser run failed ({status}); see its output above; camhub log:\n{}", hub.log());
    result.expect("the browser run printed no @result")
}

#[test]
fn the_page_and_its_assets_are_served_with_their_type_caching_and_policy() {
    let hub = Camhub::start("");
    let (code, head, body) = common::http_request(hub.port, "/", &[]).expect("GET /");
    assert_eq!(code, 200, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/html; charset=utf-8"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self';"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("/assets/app.js"));

    let (code, head, _) = common::http_request(hub.port, "/assets/app.js", &[]).expect("GET app.js");
    assert_eq!(code, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/javascript"), "{head}");
    let etag = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().starts_with("etag:").then(|| l[5..].trim().to_owned()))
        .expect("an ETag");
    let (code, _, body) =
        common::http_request(hub.port, "/assets/app.js", &[("If-None-Match", &etag)]).expect("revalidate");
    assert_eq!((code, body.len()), (304, 0), "an unchanged asset is not sent again");
    let (code, head, _) = common::http_request(hub.port, "/assets/style.css", &[]).expect("GET style.css");
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/css"), "{head}");
    let (code, _, _) = common::http_request(hub.port, "/assets/../Cargo.toml", &[]).expect("GET outside");
    assert_eq!(code, 404);
    let (code, _, _) = common::http_request(hub.port, "/assets/nothing.js", &[]).expect("GET unknown");
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_webrtc_cannot_connect_the_page_plays_the_camera_over_hls() {
    require_browser_tools();
    let cam = TestCam::start_with(common::free_port(), 1, &["--width", "320", "--height", "240", "--fps", "15"]);
    let hls_js = asset("web/hls.light.min.js");
    // 192.0.2.1 is TEST-NET-1: nobody answers there, so ICE cannot connect, as behind a firewall without UDP.
    let config = format!(
        "{}[webrtc]\ncandidate_addresses = [\"192.0.2.1\"]\n[hls]\nplayer_js = {:?}\n",
        camera_toml("cam0", &cam.url(0)),
        hls_js.display().to_string()
    );
    let hub = Camhub::start(&config);
    let client = hub.client("operator").await;
    client
        .wait_status("cam0", Duration::from_secs(20), |s| s["status"] == "CONNECTED")
        .await
        .unwrap_or_else(|| panic!("cam0 never connected; log:\n{}", hub.log()));
    std::fs::create_dir_all(evidence_dir()).expect("evidence dir");
    let screenshot = evidence_dir().join("hls-fallback.png");
    let env = [("SCREENSHOT", screenshot.as_os_str())];
    let result =
        tokio::task::block_in_place(|| run_browser(&hub, "hls_fallback.mjs", &env, |_| "unknown command".into()));
    eprintln!("browser: hls fallback {result}");
    let (advanced, watched) =
        (result["advanced_s"].as_f64().unwrap_or(0.0), result["watched_s"].as_f64().unwrap_or(9.0));
    assert!(advanced >= 0.75 * watched, "{result}");
    let status = client.call("get_stream_status", json!({ "device": "cam0" })).await.expect("status");
    assert!(status["metrics"]["bytes_sent"].as_u64().unwrap_or(0) > 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_signs_in_plays_every_camera_and_follows_a_camera_crash() {
    require_browser_tools();
    let cam = TestCam::start(2);
    let port = cam.port;
    // camhub offers loopback as its ICE candidate, where Chromium (with --allow-loopback-in-peer-connection) can
    // reach it.
    let config = format!(
        "{}name = \"Front door\"\n{}name = \"Yard\"\n[webrtc]\ncandidate_addresses = [\"127.0.0.1\"]\n",
        camera_toml("cam0", &cam.url(0)),
        camera_toml("cam1", &cam.url(1))
    );
    let hub = Camhub::start(&config);
    let client = hub.client("operator").await;
    for device in ["cam0", "cam1"] {
        client
            .wait_status(device, Duration::from_secs(20), |s| s["status"] == "CONNECTED")
            .await
            .unwrap_or_else(|| panic!("{device} never connected; log:\n{}", hub.log()));
    }
    // Two short recordings, one after the other, so the page has an order to keep and a file to download.
    for device in ["cam0", "cam1"] {
        client.call("start_recording", json!({ "device": device, "duration": 1 })).await.expect("start recording");
        client
            .wait_notification("recording_status_update", Duration::from_secs(15), |p| {
                p["status"] == "STOPPED" && p["device"] == device
            })
            .await
            .unwrap_or_else(|| panic!("the recording of {device} never stopped; log:\n{}", hub.log()));
    }

    std::fs::create_dir_all(evidence_dir()).expect("evidence dir");
    let downloads = tempfile::tempdir().expect("download dir");
    let camera = Arc::new(Mutex::new(Some(cam)));
    let screenshot = evidence_dir().join("live-view.png");
    let env = [
        ("CAMERAS", OsStr::new("2")),
        ("SCREENSHOT", screenshot.as_os_str()),
        ("DOWNLOAD_DIR", downloads.path().as_os_str()),
    ];
    // live_view.mjs asks for the camera to die and come back, and for a camera's publishing to stop and start.
    let answer = |command: &str| match command {
        "kill-camera" => {
            if let Some(cam) = camera.lock().expect("camera lock").as_mut() {
                cam.kill();
            }
            "ok".to_owned()
        }
        "restart-camera" => {
            *camera.lock().expect("camera lock") = Some(TestCam::start_on(port, 2));
            "ok".to_owned()
        }
        streaming if streaming.starts_with("stop-streaming ") || streaming.starts_with("start-streaming ") => {
            let (method, device) = streaming.split_once(' ').expect("method and device");
            let method = method.replace('-', "_");
            let call = client.call(&method, json!({ "device": device }));
            match tokio::runtime::Handle::current().block_on(call) {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("{method} failed: {e}"),
            }
        }
        _ => "unknown command".to_owned(),
    };
    let result = tokio::task::block_in_place(|| run_browser(&hub, "live_view.mjs", &env, answer));

    // The downloaded file is the recording, byte for byte.
    let name = result["download"]["filename"].as_str().expect("download filename");
    let saved = std::fs::read(result["download"]["path"].as_str().expect("download path")).expect("downloaded file");
    let original = std::fs::read(hub.recordings_dir().join(name)).expect("the recording on disk");
    assert!(
        saved == original,
        "the download of {name} differs from the file ({} vs {} bytes)",
        saved.len(),
        original.len()
    );
    let listed = client.call("list_recordings", json!({})).await.expect("list recordings");
    let names: Vec<&Value> = listed["files"].as_array().expect("files").iter().map(|f| &f["filename"]).collect();
    assert_eq!(names.len(), 2, "{listed}");
    let starts: Vec<&str> =
        listed["files"].as_array().expect("files").iter().map(|f| f["created_time"].as_str().expect("time")).collect();
    assert!(starts[0] >= starts[1], "camhub lists the newest first: {listed}");
    assert_eq!(result["recordings"], json!(names), "the page lists the recordings as camhub does, newest first");

    let mut times: Vec<f64> = result["first_frame_ms"]
        .as_array()
        .expect("first frame times")
        .iter()
        .map(|v| v.as_f64().expect("a number of milliseconds"))
        .collect();
    assert_eq!(times.len(), 6, "two cameras x (first load, camera returned, reload): {result}");
    let max = times.iter().cloned().fold(0.0, f64::max);
    let med = median(&mut times);
    let mut table = String::new();
    for s in result["sessions"].as_array().expect("sessions") {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            s["label"].as_str().unwrap_or(""),
            s["device"].as_str().unwrap_or(""),
            s["answer_ms"],
            s["connected_ms"],
            s["first_frame_ms"]
        ));
    }
    let report = format!(
        "# WHEP: POST to first decoded frame\n\n\
         Measured by `cargo test --test browser` in Debian's Chromium (headless, software decoding) on this machine:\n\
         the page's `performance.now()` from just before the WHEP `POST` (ICE gathering already done, non-trickle)\n\
         to the first `requestVideoFrameCallback` of the `<video>`. Test camera: 2 cameras, H.264 320x240 at 15 fps,\n\
         1 s GOP; camhub and the test camera on loopback.\n\n\
         **median {med:.0} ms, max {max:.0} ms** over {} sessions (target: under 500 ms).\n\n\
         | when | camera | answer (201), ms | ICE+DTLS up, ms | first frame, ms |\n|---|---|---|---|---|\n{table}\n\
         Badges, as the test saw them (it looks every 50 ms): test camera killed to DISCONNECTED {} ms; test camera\n\
         listening again to CONNECTED {} ms.\n",
        result["sessions"].as_array().map_or(0, Vec::len),
        result["disconnected_after_ms"],
        result["connected_after_ms"],
    );
    std::fs::write(evidence_dir().join("whep.md"), &report).expect("write evidence/whep.md");
    eprintln!("{report}");
    drop(camera);
}

/// person.jpg (640x424) letterboxed into the test camera's 640x480 picture (a 28-pixel band above and below): the
/// person, measured by hand on the photo (x 190-274, y 98-380), as fractions of the frame.
const PERSON: [f64; 4] = [0.297, 0.2625, 0.428, 0.85];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_boxes_a_detected_person_on_the_live_video_and_lists_the_event() {
    require_browser_tools();
    let person = asset("photos/person.jpg");
    // 4:3, so the picture is pillarboxed in the page's 16:9 tile. The photo is hidden for 15 s from the stream's
    // start, then shown for 30, and so on: the page sees a `new` however long its start takes.
    let args = ["--width", "640", "--height", "480", "--fps", "15", "--bitrate", "1000", "--image-schedule", "15:30"];
    let mut args = args.to_vec();
    args.extend(["--image", person.to_str().expect("utf-8 path")]);
    let cam = TestCam::start_with(common::free_port(), 1, &args);
    let config = format!(
        "{}{}name = \"Front door\"\ndetect = {{ model = \"coco\", labels = [\"person\", \"dog\"], end_after_s = 2 }}\n\
         [webrtc]\ncandidate_addresses = [\"127.0.0.1\"]\n",
        inference_toml(),
        camera_toml("door", &cam.url(0)),
    );
    let hub = Camhub::start(&config);
    let client = hub.client("operator").await;
    client
        .wait_status("door", Duration::from_secs(20), |s| s["status"] == "CONNECTED")
        .await
        .unwrap_or_else(|| panic!("the camera never connected; log:\n{}", hub.log()));

    std::fs::create_dir_all(evidence_dir()).expect("evidence dir");
    let screenshot = evidence_dir().join("detection-live.png");
    let person_box = PERSON.map(|v| v.to_string()).join(",");
    let env = [
        ("DEVICE", OsStr::new("door")),
        ("CAMERA_NAME", OsStr::new("Front door")),
        ("PERSON", OsStr::new(&person_box)),
        ("SCREENSHOT", screenshot.as_os_str()),
    ];
    let result =
        tokio::task::block_in_place(|| run_browser(&hub, "detections.mjs", &env, |_| "unknown command".into()));

    // The row the page showed is camhub's event of the person, and its picture is the camera's frame.
    let listed = client.call("list_events", json!({ "device": "door", "label": "person" })).await.expect("list");
    let ids: Vec<&Value> = listed["events"].as_array().expect("events").iter().map(|e| &e["id"]).collect();
    assert!(ids.contains(&&result["event"]["id"]), "the page listed event {} of {listed}", result["event"]["id"]);
    assert_eq!(result["picture"], json!([640, 480]), "{result}");
    let status = client.call("get_inference_status", json!({})).await.expect("status");
    let door = status["cameras"].as_array().expect("cameras").iter().find(|c| c["device"] == "door");
    assert!(door.is_some_and(|d| d["enabled"] == true), "detection is on again after the page's toggle: {status}");
    eprintln!(
        "box {} (IoU {} with the person at {PERSON:?}), seen {} ms after the page looked, the video showing her {} ms \
         later; screenshot {}",
        result["box"],
        result["iou"],
        result["box_after_ms"],
        result["video_after_box_ms"],
        screenshot.display()
    );
}

/// A publisher process, killed on drop.
struct Publisher(Child);

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// FFmpeg pushing a live 320x240 test pattern (H.264 in FLV, 1 s GOP) to `url` at real-time pace.
fn ffmpeg_rtmp(url: &str) -> Publisher {
    let child = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=15"])
        // yuv420p: testsrc is RGB, and browsers decode 4:2:0 H.264 only.
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "15", "-pix_fmt", "yuv420p"])
        .args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Its errors name the URL, key included, and it fails anyway when the key is revoked: the test's own
        // assertions say what went wrong.
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg must be installed (scripts/install-deps.sh --test)");
    Publisher(child)
}

/// A scan password with every character a URL's userinfo must encode, and a `%` that must not be taken for an escape.
const SCAN_PASSWORD: &str = "p@ss:w/rd?#%41 x";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_makes_a_stream_key_plays_its_publisher_revokes_it_and_adds_a_found_camera() {
    require_browser_tools();
    // The test camera also serves its camera at /stream1, one of the paths discovery tries.
    let args = ["--width", "320", "--height", "240", "--fps", "15", "--bitrate", "300", "--also-at", "/stream1"];
    let cam = TestCam::start_with(common::free_port(), 1, &args);
    let hub = Camhub::start("[webrtc]\ncandidate_addresses = [\"127.0.0.1\"]\n");
    let client = hub.client("operator").await;

    std::fs::create_dir_all(evidence_dir()).expect("evidence dir");
    let screenshot = evidence_dir().join("sources.png");
    let narrow = evidence_dir().join("sources-narrow.png");
    let viewer = hub.token("viewer");
    let scan_host = format!("127.0.0.1:{}", cam.port);
    let env = [
        ("VIEWER_TOKEN", OsStr::new(&viewer)),
        ("SCAN_HOST", OsStr::new(&scan_host)),
        ("SCAN_USER", OsStr::new("admin")),
        ("SCAN_PASSWORD", OsStr::new(SCAN_PASSWORD)),
        ("SCREENSHOT", screenshot.as_os_str()),
        ("SCREENSHOT_NARROW", narrow.as_os_str()),
    ];
    // sources.mjs asks for a publisher with the RTMP URL it read from the page (never printed here: it holds the key).
    let mut publisher = None;
    let answer = |command: &str| match command.split_once(' ') {
        Some(("publish-rtmp", url)) if url.starts_with("rtmp://127.0.0.1:") => {
            publisher = Some(ffmpeg_rtmp(url));
            "ok".to_owned()
        }
        _ => "unknown command".to_owned(),
    };
    let result = tokio::task::block_in_place(|| run_browser(&hub, "sources.mjs", &env, answer));

    // The revoked key is gone with its camera, and its publisher was dropped.
    let keys = client.call("list_stream_keys", json!({})).await.expect("list stream keys");
    assert_eq!(keys["keys"], json!([]), "{keys}");
    let mut publisher = publisher.expect("the page asked for a publisher");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while publisher.0.try_wait().expect("poll ffmpeg").is_none() {
        assert!(std::time::Instant::now() < deadline, "ffmpeg still publishes after its key was revoked");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The found stream is a camera, stored without its credentials in what camhub shows, with them in what it uses:
    // the page percent-encoded them, so they come back exactly as typed.
    let found = format!("rtsp://{scan_host}/stream1");
    let list = client.call("get_camera_list", json!({})).await.expect("camera list");
    let cameras: Vec<(&Value, &Value)> =
        list["cameras"].as_array().expect("cameras").iter().map(|c| (&c["device"], &c["status"])).collect();
    assert_eq!(cameras, [(&json!("porch"), &json!("CONNECTED"))], "{list}");
    let external = client.call("get_external_streams", json!({})).await.expect("external streams");
    assert_eq!(external["external_streams"][0]["url"], json!(found), "{external}");
    let sent = url::Url::parse(result["added_url"].as_str().expect("the URL the page sent")).expect("a URL");
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().expect("utf-8").into_owned();
    assert_eq!(decode(sent.username()), "admin");
    assert_eq!(decode(sent.password().expect("a password")), SCAN_PASSWORD);
    let mut bare = sent.clone();
    bare.set_username("").and_then(|()| bare.set_password(None)).expect("an RTSP URL has credentials");
    assert_eq!(bare.as_str(), found);

    eprintln!(
        "pushed camera playing {} ms after FFmpeg started, its key shown publishing after {} ms; scan {} ms ({}); \
         found camera playing {} ms after Add; revoked camera gone in {} ms; whole run {} ms; screenshots {} and {}",
        result["push_playing_ms"],
        result["publishing_shown_ms"],
        result["scan_ms"],
        result["scan_state"],
        result["added_playing_ms"],
        result["revoked_gone_ms"],
        result["total_ms"],
        screenshot.display(),
        narrow.display()
    );
    drop(cam);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_shows_a_recorded_span_and_a_click_plays_it() {
    require_browser_tools();
    let cam = TestCam::start(1);
    let config = format!(
        "[recording]\nsegment_seconds = 2\n{}name = \"Porch\"\nrecord = \"always\"\n",
        camera_toml("cam0", &cam.url(0))
    );
    let hub = Camhub::start(&config);
    let client = hub.client("operator").await;
    // A few segments indexed before the page loads (the open one joins when it closes).
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let spans = client.call("list_recording_spans", json!({ "device": "cam0" })).await.expect("spans");
        if spans["recorded"].as_f64().unwrap_or(0.0) >= 4.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nothing recorded: {spans}; log:\n{}", hub.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    std::fs::create_dir_all(evidence_dir()).expect("evidence dir");
    let screenshot = evidence_dir().join("timeline.png");
    let env = [("DEVICE", OsStr::new("cam0")), ("SCREENSHOT", screenshot.as_os_str())];
    let result = run_browser(&hub, "timeline.mjs", &env, |command| format!("unknown command {command}"));
    eprintln!("timeline: {result}");
    let times = result["current_time"].as_array().expect("current_time");
    let (t1, t2) = (times[0].as_f64().expect("t1"), times[1].as_f64().expect("t2"));
    assert!(t2 > t1 + 0.5, "the video did not advance: {result}");
    assert_eq!(result["video"], json!({ "width": 320, "height": 240 }), "{result}");
    eprintln!(
        "click to a playing video: {} ms (first frame after {} ms)",
        result["click_to_playing_ms"], result["first_frame_ms"]
    );
}
