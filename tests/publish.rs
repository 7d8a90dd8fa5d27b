//! Publishing end to end: the real test camera, real camhub, FFmpeg reading camhub's RTSP server, raw RTSP requests
//! for status codes, and a real GStreamer webrtcbin peer speaking WHEP to camhub over loopback. Readers, bytes sent,
//! cameras coming and going, `stop_streaming`/`start_streaming`, RTSP authentication and the WHEP contract.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Camhub, Client, TestCam, camera_toml, http, packets, peer, rtsp_reader as reader};
use serde_json::{Value, json};

const CONNECT: Duration = Duration::from_secs(30);

async fn connected(client: &Client, hub: &Camhub, device: &str) {
    let ok = client.wait_status(device, CONNECT, |s| s["status"] == "CONNECTED").await;
    assert!(ok.is_some(), "{device} did not connect; log:\n{}", hub.log());
}

/// One raw RTSP DESCRIBE: (status code, response head).
fn describe(port: u16, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to camhub's rtsp server");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut req = format!("DESCRIBE rtsp://127.0.0.1:{port}{path} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n");
    if let Some(a) = authorization {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send DESCRIBE");
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&got).to_string();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head)
}

/// Polls DESCRIBE until it answers `want` (cameras are mounted within a tick, media need the camera's first frame).
fn describe_until(port: u16, path: &str, auth: Option<&str>, want: u16) -> (u16, String) {
    let deadline = Instant::now() + CONNECT;
    loop {
        let r = describe(port, path, auth);
        if r.0 == want || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// ffprobe's view of an RTSP URL: (codec, width, height).
fn probe(url: &str) -> Result<(String, u64, u64), String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=codec_name,width,height", "-of", "json", url])
        .output()
        .map_err(|e| format!("ffprobe cannot run: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let s = &v["streams"][0];
    Ok((
        s["codec_name"].as_str().unwrap_or("").to_owned(),
        s["width"].as_u64().unwrap_or(0),
        s["height"].as_u64().unwrap_or(0),
    ))
}

#[tokio::test]
async fn every_camera_is_served_over_rtsp_and_shared_by_its_readers() {
    let cam = TestCam::start(2);
    let hub = Camhub::start(&format!("{}{}", camera_toml("cam0", &cam.url(0)), camera_toml("cam1", &cam.url(1))));
    let client = hub.client("admin").await;
    connected(&client, &hub, "cam0").await;
    connected(&client, &hub, "cam1").await;

    // Every camera, at its own size, H.264 as the camera sent it.
    for id in ["cam0", "cam1"] {
        let status = client.call("get_camera_status", json!({ "device": id })).await.expect("status");
        assert_eq!(status["streams"]["rtsp"], hub.rtsp_url(id), "{status}");
        assert_eq!(status["streams"]["webrtc"], format!("http://127.0.0.1:{}/whep/{id}", hub.port), "{status}");
        assert_eq!(status["streams"]["hls"], format!("http://127.0.0.1:{}/hls/{id}/index.m3u8", hub.port), "{status}");
        let (codec, w, h) = probe(&hub.rtsp_url(id)).unwrap_or_else(|e| panic!("{id}: {e}; log:\n{}", hub.log()));
        assert_eq!((codec.as_str(), w, h), ("h264", 320, 240), "{id}");
    }
    let before = client.call("get_camera_status", json!({ "device": "cam0" })).await.expect("status");
    assert_eq!(before["metrics"]["readers"], 0, "{before}");

    // Two readers at once: both get frames, the camera counts two readers, bytes sent grow.
    let a = reader(&hub.rtsp_url("cam0"), 8);
    let b = reader(&hub.rtsp_url("cam0"), 8);
    let two = client
        .wait_status("cam0", Duration::from_secs(6), |s| s["metrics"]["readers"] == 2)
        .await
        .unwrap_or_else(|| panic!("readers never showed 2; log:\n{}", hub.log()));
    let sent = two["metrics"]["bytes_sent"].as_u64().expect("bytes_sent");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = client.call("get_camera_status", json!({ "device": "cam0" })).await.expect("status");
    assert!(later["metrics"]["bytes_sent"].as_u64().expect("bytes_sent") > sent, "{two} then {later}");
    let status = client.call("get_stream_status", json!({ "device": "cam0" })).await.expect("stream status");
    assert_eq!((&status["status"], &status["ready"]), (&json!("ACTIVE"), &json!(true)), "{status}");
    assert_eq!(status["metrics"]["rtsp_readers"], 2, "{status}");
    assert!(status["metrics"]["frames_sent"].as_u64().unwrap_or(0) > 0, "{status}");
    let streams = client.call("get_streams", json!({})).await.expect("streams");
    let cam0 = streams.as_array().expect("array").iter().find(|s| s["name"] == "cam0").expect("cam0 listed").clone();
    assert_eq!((&cam0["readers"], &cam0["ready"]), (&json!(2), &json!(true)), "{streams}");
    let metrics = client.call("get_metrics", json!({})).await.expect("metrics");
    assert_eq!(metrics["stream_metrics"]["total_viewers"], 2, "{metrics}");
    assert_eq!(metrics["stream_metrics"]["total_streams"], 2, "{metrics}");
    let (code, text) = common::http_get(hub.port, "/metrics").expect("prometheus");
    assert_eq!(code, 200);
    assert!(text.contains("camhub_stream_readers{camera=\"cam0\",protocol=\"rtsp\"} 2"), "{text}");

    let (na, nb) = (packets(a), packets(b));
    // 15 fps for about 8 s; generous bounds for a loaded machine.
    assert!(na >= 40 && nb >= 40, "packets read: {na} and {nb}; log:\n{}", hub.log());
    let idle = client.wait_status("cam0", Duration::from_secs(10), |s| s["metrics"]["readers"] == 0).await;
    assert!(idle.is_some(), "readers did not return to 0 after the readers left");
    let url = client.call("get_stream_url", json!({ "device": "cam0" })).await.expect("url");
    assert_eq!((&url["stream_url"], &url["available"]), (&json!(hub.rtsp_url("cam0")), &json!(true)), "{url}");
    assert_eq!(url["stream_status"], "READY", "{url}");

    assert_eq!(describe(hub.rtsp_port, "/nope", None).0, 404);
}

#[tokio::test]
async fn cameras_added_and_removed_at_run_time_are_mounted_and_withdrawn() {
    let cam = TestCam::start(1);
    let hub = Camhub::start("");
    let operator = hub.client("operator").await;
    assert_eq!(describe(hub.rtsp_port, "/late", None).0, 404);
    for round in 0..2 {
        let added = operator
            .call("add_external_stream", json!({ "stream_url": cam.url(0), "stream_name": "late" }))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(added["streams"]["rtsp"], hub.rtsp_url("late"), "{added}");
        connected(&operator, &hub, "late").await;
        let (code, head) = describe_until(hub.rtsp_port, "/late", None, 200);
        assert_eq!(code, 200, "round {round}: {head}; log:\n{}", hub.log());
        let (codec, w, h) = probe(&hub.rtsp_url("late")).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!((codec.as_str(), w, h), ("h264", 320, 240));

        // A reader in progress is disconnected when its camera goes.
        let watching = reader(&hub.rtsp_url("late"), 60);
        operator.wait_status("late", Duration::from_secs(6), |s| s["metrics"]["readers"] == 1).await.expect("reading");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let removed = operator.call("remove_external_stream", json!({ "device": "late" })).await;
        assert!(removed.is_ok(), "{removed:?}");
        let (code, head) = describe_until(hub.rtsp_port, "/late", None, 404);
        assert_eq!(code, 404, "round {round}: removed camera still served: {head}");
        let started = Instant::now();
        let n = tokio::task::spawn_blocking(move || packets(watching)).await.expect("join");
        assert!(started.elapsed() < Duration::from_secs(20), "the reader was not disconnected");
        assert!(n > 0, "the reader got nothing before the camera went");
    }
}

#[tokio::test]
async fn stop_streaming_withdraws_a_camera_and_start_streaming_publishes_it_again() {
    let cam = TestCam::start(1);
    let hub = Camhub::start(&camera_toml("cam0", &cam.url(0)));
    let operator = hub.client("operator").await;
    connected(&operator, &hub, "cam0").await;
    let (code, _) = describe_until(hub.rtsp_port, "/cam0", None, 200);
    assert_eq!(code, 200);
    let watching = reader(&hub.rtsp_url("cam0"), 60);
    operator.wait_status("cam0", Duration::from_secs(6), |s| s["metrics"]["readers"] == 1).await.expect("reading");

    let stopped = operator.call("stop_streaming", json!({ "device": "cam0" })).await.expect("stop");
    assert_eq!((&stopped["status"], &stopped["device"]), (&json!("STOPPED"), &json!("cam0")), "{stopped}");
    assert!(stopped["duration"].as_f64().expect("duration") > 0.0, "{stopped}");
    let n = tokio::task::spawn_blocking(move || packets(watching)).await.expect("join");
    assert!(n > 0);
    let (code, _) = describe_until(hub.rtsp_port, "/cam0", None, 404);
    assert_eq!(code, 404, "a withdrawn camera is not served");
    let url = operator.call("get_stream_url", json!({ "device": "cam0" })).await.expect("url");
    assert_eq!((&url["available"], &url["stream_status"]), (&json!(false), &json!("NOT_READY")), "{url}");
    let list = operator.call("get_camera_list", json!({})).await.expect("list");
    assert_eq!(list["cameras"][0]["streams"]["rtsp"], "", "{list}");
    let again = operator.call("stop_streaming", json!({ "device": "cam0" })).await.expect_err("not streaming");
    assert_eq!(again["code"], -32020, "{again}");
    let missing = operator.call("start_streaming", json!({ "device": "nope" })).await.expect_err("no camera");
    assert_eq!(missing["code"], -32010, "{missing}");
    let bad = operator.call("start_streaming", json!({ "device": "Not An Id" })).await.expect_err("bad id");
    assert_eq!((&bad["code"], &bad["data"]["param"]), (&json!(-32602), &json!("device")), "{bad}");
    let viewer = hub.client("viewer").await;
    let denied = viewer.call("start_streaming", json!({ "device": "cam0" })).await.expect_err("viewer");
    assert_eq!(denied["code"], -32002, "{denied}");

    let started = operator.call("start_streaming", json!({ "device": "cam0" })).await.expect("start");
    assert_eq!((&started["status"], &started["stream_url"]), (&json!("STARTED"), &json!(hub.rtsp_url("cam0"))));
    let (code, _) = describe_until(hub.rtsp_port, "/cam0", None, 200);
    assert_eq!(code, 200, "published again");
    let (codec, ..) = probe(&hub.rtsp_url("cam0")).expect("served again");
    assert_eq!(codec, "h264");
}

#[tokio::test]
async fn rtsp_readers_authenticate_with_a_configured_user_or_an_api_key_and_credentials_stay_out_of_logs() {
    let cam = TestCam::start(1);
    let hub = Camhub::start_with_rtsp_keys(
        "require_auth = true\nusers = [{ user = \"vlc\", password = \"vlc-password-1\" }]",
        &camera_toml("cam0", &cam.url(0)),
    );
    let client = hub.client("viewer").await;
    connected(&client, &hub, "cam0").await;
    let key = hub.api_key("viewer");

    let (code, head) = describe(hub.rtsp_port, "/cam0", None);
    assert_eq!(code, 401, "{head}");
    assert!(head.contains("WWW-Authenticate: Basic"), "{head}");
    assert_eq!(describe(hub.rtsp_port, "/cam0", Some(&basic("vlc", "wrong-password"))).0, 401);
    assert_eq!(describe(hub.rtsp_port, "/cam0", Some(&basic("anyone", "chk_0000"))).0, 401);
    let (code, head) = describe_until(hub.rtsp_port, "/cam0", Some(&basic("vlc", "vlc-password-1")), 200);
    assert_eq!(code, 200, "configured user: {head}");
    assert_eq!(describe(hub.rtsp_port, "/cam0", Some(&basic("anyone", &key))).0, 200, "API key as password");
    let jwt = hub.token("viewer");
    assert_eq!(describe(hub.rtsp_port, "/cam0", Some(&basic("me", &jwt))).0, 200, "JWT as password");
    let url = format!("rtsp://reader:{key}@127.0.0.1:{}/cam0", hub.rtsp_port);
    let (codec, ..) = probe(&url).unwrap_or_else(|e| panic!("ffprobe with an API key: {e}"));
    assert_eq!(codec, "h264");
    assert!(probe(&hub.rtsp_url("cam0")).is_err(), "read without credentials");

    let log = hub.log();
    for secret in [key.as_str(), "vlc-password-1", "wrong-password", &basic("anyone", &key)[6..]] {
        assert!(!log.contains(secret), "a credential reached the log");
    }
}

/// FFmpeg copying about `seconds` of an RTSP stream into an MP4 file, as people record a camera: its stderr.
#[tokio::test]
async fn a_camera_with_sound_is_republished_with_it_in_sync_and_a_video_only_reader_still_plays() {
    let cam = TestCam::start_with_audio(1, "aac");
    let hub = Camhub::start(&camera_toml("cam", &cam.url(0)));
    let client = hub.client("viewer").await;
    connected(&client, &hub, "cam").await;
    let (code, _) = describe_until(hub.rtsp_port, "/cam", None, 200);
    assert_eq!(code, 200, "log:\n{}", hub.log());
    let url = hub.rtsp_url("cam");
    let streams = common::ffprobe_streams(&url).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<(&str, &str)> = streams.iter().map(|s| (s.kind.as_str(), s.codec.as_str())).collect();
    assert_eq!(kinds, [("video", "h264"), ("audio", "aac")], "{streams:?}");
    assert_eq!(streams[1].sample_rate, 48000);

    // As a player meets them: the bursts with the squares, on the camera and on its republish alike.
    let mut offsets = Vec::new();
    for uri in [cam.url(0), url.clone()] {
        let (squares, bursts) = common::av_marks(&uri, Duration::from_secs(6)).unwrap_or_else(|e| panic!("{e}"));
        let offset = common::av_offset(&squares, &bursts);
        eprintln!("{uri}: {} squares, {} bursts, sound behind picture by {offset:?} s", squares.len(), bursts.len());
        offsets.push(offset.unwrap_or_else(|| panic!("{uri}: no burst near a square: {squares:?} {bursts:?}")));
    }
    assert!((offsets[1] - offsets[0]).abs() <= 0.1, "republishing moved the sound: {offsets:?}");

    // A reader that sets up the video alone.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("video.mp4");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-allowed_media_types", "video", "-i", &url])
        .args(["-t", "3", "-c", "copy", "-y"])
        .arg(&file)
        .output()
        .expect("run ffmpeg");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let copied = common::ffprobe_streams(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(copied.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>(), ["video"], "{copied:?}");
    assert!(decoded_frames(&file) >= 30, "{} frames", decoded_frames(&file));
}

fn copy_to_mp4(url: &str, seconds: u32, file: &std::path::Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-rtsp_transport", "tcp", "-timeout", "10000000", "-i", url])
        .args(["-t", &seconds.to_string(), "-c", "copy", "-f", "mp4", "-y"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The video frames ffprobe decodes from a file.
fn decoded_frames(file: &std::path::Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// FFmpeg's complaints about decode timestamps that repeat or go back ("non monotonically increasing dts" from the
/// muxer, "Non-monotonous DTS" from ffmpeg itself), less one about the first frame that is FFmpeg's own: its parser
/// matches frames to their packets by byte position, which RTP packets lack, so the first frame it reads has no
/// timestamps ("Timestamps are unset in a packet"); when that frame is a keyframe it is kept, stamped 0 like the next
/// one ("previous: 0, current: 0"). A reader whose stream starts at a keyframe gets that from any RTSP server.
fn dts_complaints(stderr: &str) -> Vec<&str> {
    let mut first_frame_unstamped = stderr.contains("Timestamps are unset in a packet");
    stderr
        .lines()
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            if !(lower.contains("non monotonically increasing dts") || lower.contains("non-monotonous dts")) {
                return false;
            }
            let about_the_first_frame = l.contains("previous: 0, current: 0;") || l.ends_with(": 0 >= 0");
            if first_frame_unstamped && about_the_first_frame {
                first_frame_unstamped = false;
                return false;
            }
            true
        })
        .collect()
}

#[tokio::test]
async fn ffmpeg_copies_the_test_camera_and_its_republish_without_dts_complaints() {
    let cam = TestCam::start(1);
    let hub = Camhub::start(&camera_toml("cam0", &cam.url(0)));
    let client = hub.client("viewer").await;
    connected(&client, &hub, "cam0").await;
    let (code, head) = describe_until(hub.rtsp_port, "/cam0", None, 200);
    assert_eq!(code, 200, "{head}; log:\n{}", hub.log());

    // The test camera and the republish are copied for 6 s each (six one-second GOPs: the parameter sets before each
    // keyframe are what the payloaders got wrong). Two seconds in, another reader joins the test camera: its PLAY
    // must leave the camera's clock alone, or the frames of the readers already there (the first copy, and camhub,
    // so the republish) go back in time.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = |url: String, seconds: u32, name: &str| {
        let file = dir.path().join(name);
        let out = file.clone();
        (tokio::task::spawn_blocking(move || copy_to_mp4(&url, seconds, &out)), file)
    };
    let (direct, direct_file) = copy(cam.url(0), 6, "test-camera.mp4");
    let (republish, republish_file) = copy(hub.rtsp_url("cam0"), 6, "republish.mp4");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (joining, joining_file) = copy(cam.url(0), 2, "joining.mp4");

    // 15 fps; generous lower bounds for a loaded machine. Every copy is judged before failing, to show which broke.
    let mut failures = Vec::new();
    for (what, task, file, least) in [
        ("test camera", direct, direct_file, 40),
        ("republish", republish, republish_file, 40),
        ("test camera, joining", joining, joining_file, 10),
    ] {
        let stderr = task.await.expect("join");
        let complaints = dts_complaints(&stderr);
        let frames = decoded_frames(&file);
        if !complaints.is_empty() || frames < least {
            let shown = &complaints[..complaints.len().min(4)];
            failures.push(format!(
                "{what}: {} DTS complaints, {frames} decodable frames (want {least}); first ones: {shown:#?}",
                complaints.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}\nlog:\n{}", failures.join("\n"), hub.log());
}

// ---- WHEP ----

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn whep_answers_an_offer_and_the_peer_decodes_the_camera() {
    let cam = TestCam::start(1);
    let hub = Camhub::start(&format!(
        "{}\n[webrtc]\ncandidate_addresses = [\"127.0.0.1\"]\n",
        camera_toml("cam0", &cam.url(0))
    ));
    let client = hub.client("admin").await;
    connected(&client, &hub, "cam0").await;
    let token = hub.token("viewer");
    let bearer = format!("Bearer {token}");
    let sdp_type = ("Content-Type", "application/sdp");
    let auth = ("Authorization", bearer.as_str());

    let peer = tokio::task::spawn_blocking(|| peer::Peer::new(false)).await.expect("peer");
    let offer = peer.offer();
    assert!(offer.contains("m=video") && offer.contains("H264"), "{offer}");

    // The contract's refusals.
    let port = hub.port;
    assert_eq!(http(port, "POST", "/whep/cam0", &[sdp_type], &offer).0, 401, "no credentials");
    assert_eq!(http(port, "POST", "/whep/cam0", &[sdp_type, ("Authorization", "Bearer nope")], &offer).0, 401);
    assert_eq!(http(port, "POST", "/whep/nope", &[sdp_type, auth], &offer).0, 404, "unknown camera");
    assert_eq!(http(port, "POST", "/whep/cam0", &[("Content-Type", "text/plain"), auth], &offer).0, 415);
    assert_eq!(http(port, "POST", "/whep/cam0", &[sdp_type, auth], "not an offer at all").0, 400);
    let no_h264 = offer.replace("H264", "H263");
    assert_eq!(http(port, "POST", "/whep/cam0", &[sdp_type, auth], &no_h264).0, 400, "offer without H.264");
    assert_eq!(http(port, "DELETE", "/whep/cam0/0123", &[auth], "").0, 404, "unknown session");

    // A real offer: 201, the answer, its Location.
    let started = Instant::now();
    let (code, head, answer) = http(port, "POST", "/whep/cam0", &[sdp_type, auth], &offer);
    assert_eq!(code, 201, "{head}\n{answer}\nlog:\n{}", hub.log());
    eprintln!("WHEP answer after {:?}", started.elapsed());
    assert!(header(&head, "content-type").is_some_and(|t| t.starts_with("application/sdp")), "{head}");
    let location = header(&head, "location").expect("Location header").to_owned();
    assert!(location.starts_with("/whep/cam0/"), "{location}");
    assert!(answer.contains("m=video") && answer.contains("H264/90000"), "{answer}");
    assert!(answer.contains("a=candidate") && answer.contains("127.0.0.1"), "{answer}");
    assert!(answer.contains("a=sendonly"), "{answer}");

    peer.answer(&answer);
    let deadline = Instant::now() + Duration::from_secs(20);
    while peer.decoded.load(std::sync::atomic::Ordering::Relaxed) < 15 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let decoded = peer.decoded.load(std::sync::atomic::Ordering::Relaxed);
    if decoded < 15 {
        let status = client.call("get_stream_status", json!({ "device": "cam0" })).await;
        panic!("the WebRTC peer decoded {decoded} frames; {status:?}; log:\n{}", hub.log());
    }
    eprintln!("{decoded} frames decoded {:?} after the offer", started.elapsed());

    let status = client.call("get_stream_status", json!({ "device": "cam0" })).await.expect("status");
    assert_eq!(status["metrics"]["webrtc_sessions"], 1, "{status}");
    assert!(status["metrics"]["bytes_sent"].as_u64().unwrap_or(0) > 0, "{status}");
    let metrics = client.call("get_metrics", json!({})).await.expect("metrics");
    assert_eq!(metrics["stream_metrics"]["webrtc_sessions"], 1, "{metrics}");

    assert_eq!(http(port, "DELETE", &location, &[], "").0, 401, "DELETE needs credentials too");
    assert_eq!(http(port, "DELETE", &location, &[auth], "").0, 200);
    let gone = client.wait_status("cam0", Duration::from_secs(10), |s| s["metrics"]["readers"] == 0).await;
    assert!(gone.is_some(), "the session was not torn down");
    assert_eq!(http(port, "DELETE", &location, &[auth], "").0, 404, "session gone");
    drop(peer);
}

#[tokio::test]
async fn a_whep_viewer_offering_audio_gets_the_aac_camera_s_sound_as_opus_and_one_without_gets_the_picture() {
    let cam = TestCam::start_with_audio(1, "aac");
    let hub = Camhub::start(&format!(
        "{}\n[webrtc]\ncandidate_addresses = [\"127.0.0.1\"]\n",
        camera_toml("cam0", &cam.url(0))
    ));
    let client = hub.client("admin").await;
    connected(&client, &hub, "cam0").await;
    let bearer = format!("Bearer {}", hub.token("viewer"));
    let headers = [("Content-Type", "application/sdp"), ("Authorization", bearer.as_str())];

    let started = Instant::now();
    let mut peers = Vec::new();
    for audio in [true, false] {
        let peer = tokio::task::spawn_blocking(move || peer::Peer::new(audio)).await.expect("peer");
        let offer = peer.offer();
        assert_eq!(offer.contains("m=audio"), audio, "{offer}");
        let (code, head, answer) = http(hub.port, "POST", "/whep/cam0", &headers, &offer);
        assert_eq!(code, 201, "{head}\n{answer}\nlog:\n{}", hub.log());
        let sound = answer.split("\r\nm=").find(|m| m.starts_with("audio ")).map(str::to_owned);
        match (audio, sound) {
            (true, Some(sound)) => {
                assert!(
                    sound.starts_with("audio 9 UDP/TLS/RTP/SAVPF 111") && sound.contains("a=sendonly"),
                    "{answer}\n{}",
                    hub.log()
                );
                assert!(sound.to_ascii_uppercase().contains("OPUS/48000/2"), "{answer}");
            }
            (false, None) => {}
            (_, sound) => panic!("audio offered: {audio}; the answer's audio: {sound:?}\n{answer}\n{}", hub.log()),
        }
        peer.answer(&answer);
        peers.push(peer);
    }
    let load = |c: &std::sync::Arc<std::sync::atomic::AtomicU64>| c.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && (peers.iter().any(|p| load(&p.decoded) < 15) || load(&peers[0].audio_decoded) < 25)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let figures: Vec<(u64, u64, Vec<String>)> = peers
        .iter()
        .map(|p| (load(&p.decoded), load(&p.audio_decoded), p.audio_streams.lock().expect("not poisoned").clone()))
        .collect();
    eprintln!("after {:?}: (video frames, audio buffers, audio streams) {figures:?}", started.elapsed());
    let with_sound = &figures[0];
    assert!(with_sound.0 >= 15 && with_sound.1 >= 25, "{figures:?}; log:\n{}", hub.log());
    assert_eq!(with_sound.2, ["OPUS"], "one Opus stream");
    let picture_only = &figures[1];
    assert!(picture_only.0 >= 15 && picture_only.1 == 0 && picture_only.2.is_empty(), "{figures:?}");
    drop(peers);
}
