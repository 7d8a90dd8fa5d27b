//! WHIP ingest end to end: Debian's Chromium publishes its fake camera and microphone to a real camhub
//! (`tests/browser/whip_publish.mjs`, driven by playwright-core) with a stream key made through the API; the camera
//! connects as `whip`, its recordings (fMP4, MKV, MP4) are read back by ffprobe at the fake camera's size with the
//! microphone's Opus beside the H.264 (same length, starting together), camhub's RTSP republish serves it as H.264
//! and Opus, DELETE ends it. Wrong keys, another camera's key, a camera that is not pushed, a body that is
//! not SDP, an offer without H.264 and a second publisher are refused with their statuses, no camera touched. Fails,
//! never skips, when Chromium or Node.js is missing.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Camhub, Client};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser run; generous, as the machine may be busy with other builds.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);
/// Chromium's fake camera (`--use-fake-device-for-media-stream`) with `getUserMedia({ video: true })`.
const FAKE_CAMERA: (u32, u32) = (640, 480);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Chromium, Node.js and playwright-core (installed with `npm ci` from the lock file when absent), or a panic that
/// says what to install.
fn require_browser_tools() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: install Debian's chromium; this test never skips");
    let node = Command::new("node").arg("--version").output();
    assert!(node.as_ref().is_ok_and(|o| o.status.success()), "node is missing; this test never skips");
    if !browser_dir().join("node_modules/playwright-core/package.json").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(browser_dir())
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci --prefix tests/browser failed");
    }
}

/// One HTTP/1.1 request over a real socket: (status, body).
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let (code, _, body) = common::http(port, method, path, headers, body);
    (code, body)
}

/// An offer in the shape of a browser's, with or without H.264 (no candidates: refused before ICE would matter).
fn offer(video_codec: &str) -> String {
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
     m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
     a=fingerprint:sha-256 47:11:1E:BA:BA:81:E6:49:33:96:1C:C1:92:2D:6A:A5:\
     03:F1:AD:E9:6F:00:BF:71:79:C2:6E:AE:BC:5A:F9:58\r\n\
     a=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:102 CODEC/90000\r\n\
     a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
        .replace("CODEC", video_codec)
}

fn post(hub: &Camhub, device: &str, key: Option<&str>, content_type: &str, body: &str) -> (u16, String) {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", content_type)];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b));
    }
    request(hub.port, "POST", &format!("/whip/{device}"), &headers, body)
}

async fn create_key(client: &Client, name: &str) -> (String, String) {
    let created = client.call("create_stream_key", json!({ "name": name })).await.expect("create_stream_key");
    (
        created["device"].as_str().expect("device").to_owned(),
        created["stream_key"].as_str().expect("stream_key").to_owned(),
    )
}

/// Records `device` for `seconds` (in `format`, else the default) and returns the recording's path once it is indexed.
async fn record(
    client: &Client,
    hub: &Camhub,
    device: &str,
    seconds: u64,
    format: Option<&str>,
) -> Result<PathBuf, String> {
    let mut params = json!({ "device": device, "duration": seconds });
    if let Some(format) = format {
        params["format"] = json!(format);
    }
    let started = client.call("start_recording", params).await.map_err(|e| format!("start_recording: {e}"))?;
    let name = started["filename"].as_str().ok_or("no filename")?.to_owned();
    let deadline = Instant::now() + Duration::from_secs(seconds + 20);
    while Instant::now() < deadline {
        if let Ok(info) = client.call("get_recording_info", json!({ "filename": name })).await
            && info["duration"].as_f64().unwrap_or(0.0) > 0.0
        {
            return Ok(hub.recordings_dir().join(&name));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("recording {name} was not indexed"))
}

/// Decodes a whole file with FFmpeg; Err with its complaints if any frame fails. WebRTC video has a variable frame
/// rate (frames are stamped when captured): decoded frames keep the file's timestamps, where FFmpeg's default would
/// retime them onto the guessed frame rate and report two close frames as non-monotonic.
fn decodes_cleanly(path: &Path) -> Result<(), String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-fps_mode", "passthrough", "-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .map_err(|e| format!("ffmpeg cannot run: {e}"))?;
    if out.status.success() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", path.display(), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Whether a recording holds the publisher's H.264 and Opus, the same length (within 0.5 s) and starting together
/// (within 100 ms); its figures, or what is wrong.
fn h264_with_opus(path: &Path) -> Result<String, String> {
    let streams = common::ffprobe_streams(path)?;
    let (video, audio): (Vec<_>, Vec<_>) = streams.iter().partition(|s| s.kind == "video");
    let (Some(v), Some(a), 1, 1) = (video.first(), audio.first(), video.len(), audio.len()) else {
        return Err(format!("{}: not one video and one audio stream: {streams:?}", path.display()));
    };
    let figures = format!(
        "{} {}: video {:.3}+{:.3} s, audio {:.3}+{:.3} s (start {:+.0} ms, length {:+.0} ms)",
        path.extension().and_then(|e| e.to_str()).unwrap_or("?"),
        a.codec,
        v.start,
        v.duration,
        a.start,
        a.duration,
        (a.start - v.start) * 1000.0,
        (a.duration - v.duration) * 1000.0
    );
    if (v.codec.as_str(), a.codec.as_str()) != ("h264", "opus")
        || (a.start - v.start).abs() > 0.1
        || (a.duration - v.duration).abs() > 0.5
    {
        return Err(format!("{}: {figures}", path.display()));
    }
    Ok(figures)
}

/// The video streams ffprobe finds at camhub's RTSP republish of `device`: (codec, width, height) of each.
fn rtsp_streams(hub: &Camhub, device: &str) -> Vec<(String, u32, u32)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v"])
        .args(["-show_entries", "stream=codec_name,width,height", "-of", "json", &hub.rtsp_url(device)])
        .output()
        .expect("run ffprobe");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    streams
        .iter()
        .map(|s| {
            let codec = s["codec_name"].as_str().unwrap_or("").to_owned();
            (codec, s["width"].as_u64().unwrap_or(0) as u32, s["height"].as_u64().unwrap_or(0) as u32)
        })
        .collect()
}

/// What the browser script asks of the test, checked against camhub; "ok" or what is wrong.
async fn check(command: &str, client: &Client, hub: &Camhub, device: &str) -> String {
    let result: Result<(), String> = match command {
        "publishing" => {
            async {
                let status = client.wait_status(device, Duration::from_secs(20), |s| s["status"] == "CONNECTED").await;
                let status = status.ok_or("the camera did not connect")?;
                if status["source_type"] != "whip" {
                    return Err(format!("source_type is not whip: {status}"));
                }
                // The default format (fMP4) first, then the others: the microphone's Opus is kept in each.
                for format in [None, Some("mkv"), Some("mp4")] {
                    let path = record(client, hub, device, 3, format).await?;
                    let (duration, w, h, codec) = common::ffprobe(&path)?;
                    if (w, h, codec.as_str()) != (FAKE_CAMERA.0, FAKE_CAMERA.1, "h264") || duration < 2.5 {
                        return Err(format!("{}: {codec} {w}x{h}, {duration} s", path.display()));
                    }
                    decodes_cleanly(&path)?;
                    let sound = h264_with_opus(&path)?;
                    eprintln!("recorded {} ({duration:.1} s, {w}x{h} {codec}); {sound}", path.display());
                }
                let streams = rtsp_streams(hub, device);
                if !streams.contains(&("h264".to_owned(), FAKE_CAMERA.0, FAKE_CAMERA.1)) {
                    return Err(format!("camhub's RTSP republish of {device}: {streams:?}"));
                }
                let all = common::ffprobe_streams(hub.rtsp_url(device))?;
                if !all.iter().any(|s| s.kind == "audio" && s.codec == "opus") {
                    return Err(format!("camhub's RTSP republish of {device} has no Opus: {all:?}"));
                }
                eprintln!("RTSP republish {streams:?} with Opus");
                Ok(())
            }
            .await
        }
        "deleted" => {
            let status = client.wait_status(device, Duration::from_secs(10), |s| s["status"] == "DISCONNECTED").await;
            status.map(|_| ()).ok_or_else(|| "the camera did not go DISCONNECTED after DELETE".to_owned())
        }
        other => Err(format!("unknown command {other}")),
    };
    match result {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("{e}; camhub log:\n{}", hub.log()).replace('\n', " | "),
    }
}

/// Runs `whip_publish.mjs` against `hub`, answering its `@cmd` lines; returns its `@result`.
fn run_browser(hub: &Camhub, client: &Client, device: &str, key: &str) -> Value {
    let mut child = Command::new("node")
        .arg(browser_dir().join("whip_publish.mjs"))
        .env("CAMHUB_URL", format!("http://127.0.0.1:{}/", hub.port))
        .env("DEVICE", device)
        .env("STREAM_KEY", key)
        .env("FAILURE_SCREENSHOT", Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-failure-whip_publish.png"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn node");
    let pid = child.id();
    // A watchdog: a hung browser fails the test instead of hanging it.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out = done_rx.recv_timeout(BROWSER_TIMEOUT).is_err();
        if timed_out {
            common::send_signal(pid, 9);
        }
        timed_out
    });
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let runtime = tokio::runtime::Handle::current();
    let mut result = None;
    for line in stdout.lines() {
        let line = line.expect("read node's output");
        if let Some(command) = line.strip_prefix("@cmd ") {
            let answer = runtime.block_on(check(command, client, hub, device));
            writeln!(stdin, "{answer}").expect("answer node");
        } else if let Some(json) = line.strip_prefix("@result ") {
            result = Some(serde_json::from_str(json).expect("@result is JSON"));
        } else {
            eprintln!("{line}");
        }
    }
    let status = child.wait().expect("wait for node");
    let _ = done_tx.send(());
    assert!(!watchdog.join().expect("watchdog"), "the browser run took longer than {BROWSER_TIMEOUT:?}");
    assert!(status.success(), "the browser run failed ({status}); see its output above; camhub log:\n{}", hub.log());
    result.expect("the browser run printed no @result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_over_whip_with_its_stream_key() {
    require_browser_tools();
    // camhub offers loopback as its ICE candidate, where Chromium (with --allow-loopback-in-peer-connection) can
    // reach it. A pulled camera (nothing listens at its URL) shows that only pushed cameras take publishers.
    let config = format!(
        "{}[webrtc]\ncandidate_addresses = [\"127.0.0.1\"]\n",
        common::camera_toml("pulled", "rtsp://127.0.0.1:9/none")
    );
    let hub = Camhub::start(&config);
    let client = hub.client("operator").await;
    let (device, key) = create_key(&client, "Browser").await;
    let (other, other_key) = create_key(&client, "Other").await;

    // Refusals, before anything is negotiated.
    let sdp = offer("H264");
    let refusals = [
        ("no key", post(&hub, &device, None, "application/sdp", &sdp), 401),
        ("an unknown key", post(&hub, &device, Some(&format!("sk_{}", "0".repeat(64))), "application/sdp", &sdp), 401),
        ("another camera's key", post(&hub, &device, Some(&other_key), "application/sdp", &sdp), 401),
        ("a camera that is not pushed", post(&hub, "pulled", Some(&key), "application/sdp", &sdp), 404),
        ("no such camera", post(&hub, "nowhere", Some(&key), "application/sdp", &sdp), 404),
        ("JSON", post(&hub, &device, Some(&key), "application/json", "{}"), 415),
        ("not SDP", post(&hub, &device, Some(&key), "application/sdp", "hello"), 400),
        ("an offer without H.264", post(&hub, &device, Some(&key), "application/sdp", &offer("VP8")), 400),
    ];
    for (what, (code, body), expected) in refusals {
        assert_eq!(code, expected, "{what}: {body}");
    }
    let (code, _) = request(
        hub.port,
        "DELETE",
        &format!("/whip/{device}/0123"),
        &[("Authorization", &format!("Bearer {key}"))],
        "",
    );
    assert_eq!(code, 404, "DELETE of no session");
    let (code, _) = request(hub.port, "PATCH", &format!("/whip/{device}/0123"), &[], "a=candidate:1");
    assert_eq!(code, 405, "no trickle ICE");
    for d in [&device, &other] {
        let s = client.call("get_camera_status", json!({ "device": d })).await.expect("status");
        assert_eq!((s["status"].as_str(), s["source_type"].as_str()), (Some("DISCONNECTED"), Some("push")), "{s}");
    }

    let started = Instant::now();
    let result = tokio::task::block_in_place(|| run_browser(&hub, &client, &device, &key));
    eprintln!(
        "browser run {:.1} s; answer {} ms, connected {} ms after it; fake camera {}",
        started.elapsed().as_secs_f64(),
        result["answer_ms"],
        result["connected_ms"],
        result["camera"]
    );
    assert_eq!(result["camera"], json!([FAKE_CAMERA.0, FAKE_CAMERA.1]), "Chromium's fake camera size changed");
    assert_eq!(result["delete_status"], 200);
    let other_status = client.call("get_camera_status", json!({ "device": other })).await.expect("status");
    assert_eq!(other_status["status"], "DISCONNECTED", "the other pushed camera was never touched: {other_status}");
    let log = hub.log();
    assert!(!log.contains(&key) && !log.contains(&other_key), "a stream key reached the log");
}
