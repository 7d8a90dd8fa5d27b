//! Detection end to end, with the real ONNX Runtime and the real COCO model (`scripts/install-models.sh`): a test
//! camera shows a real photo of a person on a schedule; camhub detects it, tracks it, tells subscribers `new` then
//! `end` with a box over the person, saves the best frame, and records the event with its pre-capture. A camera
//! showing only the test pattern gives no event and is decoded keyframes-only. Bad models and bad parameters get
//! clear errors. Without the assets these tests fail and say how to install them.

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::{Camhub, TestCam, asset, camera_toml, inference_toml};
use serde_json::{Value, json};

fn iou(a: &[f64], b: &[f64]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f64]| (r[2] - r[0]) * (r[3] - r[1]);
    w * h / (area(a) + area(b) - w * h)
}

/// person.jpg (640x424) letterboxed into a 16:9 picture: the person, measured by hand on the photo (x 190-274,
/// y 98-380), as fractions of the camera's frame.
const PERSON: [f64; 4] = [0.327, 0.231, 0.4385, 0.896];
/// The photo is hidden for this long from the stream's start, then shown for `SHOWN`, then hidden again (and back at
/// 2 x ABSENT + SHOWN, after the test has looked).
const ABSENT: u64 = 12;
const SHOWN: u64 = 6;

#[test]
fn a_person_appearing_is_detected_tracked_pictured_and_recorded_and_the_pattern_gives_nothing() {
    let person = asset("photos/person.jpg");
    let schedule = format!("{ABSENT}:{SHOWN}");
    let picture = ["--width", "640", "--height", "360", "--fps", "15", "--bitrate", "800"];
    let mut args: Vec<&str> = picture.to_vec();
    args.extend(["--image", person.to_str().expect("utf-8 path"), "--image-schedule", &schedule]);
    let photo_cam = TestCam::start_with(common::free_port(), 1, &args);
    // A still scene: colour bars, with only the burnt-in clock and frame counter changing (the ball pattern moves).
    let mut still: Vec<&str> = picture.to_vec();
    still.extend(["--pattern", "smpte"]);
    let pattern_cam = TestCam::start_with(common::free_port(), 1, &still);
    let config = format!(
        "[recording]\npre_roll_seconds = 3\n{}{}record = \"events\"\ndetect = {{ model = \"coco\", labels = [\"person\", \"dog\"], end_after_s = 2, post_capture_s = 2 }}\n{}detect = {{ model = \"coco\" }}\n",
        inference_toml(),
        camera_toml("door", &photo_cam.url(0)),
        camera_toml("yard", &pattern_cam.url(0)),
    );
    let hub = Camhub::start(&config);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = hub.client("operator").await;
        client.call("subscribe_events", json!({ "topics": ["detection"] })).await.expect("subscribe");
        let info = client.call("get_server_info", json!({})).await.expect("server info");
        assert!(info["capabilities"].as_array().expect("list").contains(&json!("detection")), "{info}");
        // The photo camera's stream starts when camhub connects: the photo appears ABSENT seconds later.
        client.wait_status("door", Duration::from_secs(20), |s| s["status"] == "CONNECTED").await.expect("door up");
        let connected = Instant::now();
        let mut notes: Vec<(Value, Instant)> = Vec::new();
        // Until just before the photo's second appearance: the pattern camera is watched for about 30 s.
        let deadline = connected + Duration::from_secs(2 * ABSENT + SHOWN) - Duration::from_millis(700);
        // The same moment on the wall clock: what follows the loop takes a while (seconds on a busy machine), and the
        // photo's second appearance, a second person event, may come before the listing.
        let looked_until = SystemTime::now() + deadline.saturating_duration_since(Instant::now());
        while Instant::now() < deadline {
            if let Some(n) = client.next_notification(Duration::from_millis(200)).await {
                notes.push((n, Instant::now()));
            }
        }
        let events = |device: &str, kind: &str| -> Vec<(Value, Instant)> {
            notes
                .iter()
                .filter(|(n, _)| {
                    let data = &n["params"]["data"];
                    n["method"] == "event"
                        && n["params"]["device"] == device
                        && data["type"] == kind
                        && (device == "yard" || data["label"] == "person")
                })
                .map(|(n, at)| (n["params"]["data"].clone(), *at))
                .collect()
        };
        assert!(events("yard", "new").is_empty(), "an event on the plain pattern: {:?}", events("yard", "new"));
        let new = events("door", "new");
        assert_eq!(new.len(), 1, "one person, one event: {new:?}");
        let (first, seen_at) = &new[0];
        assert_eq!(first["label"], "person");
        assert!(first["score"].as_f64().expect("score") >= 0.5, "{first}");
        let rect: Vec<f64> = first["box"].as_array().expect("box").iter().map(|v| v.as_f64().expect("num")).collect();
        assert!(iou(&rect, &PERSON) >= 0.5, "box {rect:?} against the person at {PERSON:?}");
        // The photo appeared at most ABSENT seconds after the connection was reported.
        let after = seen_at.duration_since(connected).as_secs_f64() - ABSENT as f64;
        assert!(after <= 2.0, "new {after:.2} s after the photo appeared");
        let end = events("door", "end");
        assert_eq!(end.len(), 1, "{end:?}");
        assert_eq!(end[0].0["event_id"], first["event_id"]);
        let gone = end[0].1.duration_since(connected).as_secs_f64() - (ABSENT + SHOWN) as f64;
        assert!(gone <= 4.5, "end {gone:.2} s after the photo went (end_after 2 s)");

        // The event as stored, its picture, and its recording.
        let event = client.call("get_event", json!({ "id": first["event_id"] })).await.expect("get_event");
        assert_eq!(event["device"], "door");
        assert!(event["ended_at"].is_string(), "{event}");
        let url = event["snapshot_url"].as_str().expect("a picture");
        let token = hub.token("viewer");
        let (code, _, jpeg) =
            common::http_request(hub.port, url, &[("Authorization", &format!("Bearer {token}"))]).expect("GET");
        assert_eq!(code, 200);
        let file = hub.dir.join("event.jpg");
        std::fs::write(&file, &jpeg).expect("write");
        let (_, width, height, codec) = common::ffprobe(&file).expect("a JPEG a demuxer reads");
        assert_eq!((width, height, codec.as_str()), (640, 360, "mjpeg"));
        let until = humantime::format_rfc3339_millis(looked_until).to_string();
        let listed = client
            .call("list_events", json!({ "device": "door", "label": "person", "until": until }))
            .await
            .expect("list");
        // The dog beside her is an event of its own.
        assert_eq!(listed["total"], 1, "{listed}");

        let started = notes
            .iter()
            .find(|(n, _)| n["method"] == "recording_status_update" && n["params"]["status"] == "STARTED")
            .expect("a recording started by the event");
        assert_eq!(started.0["params"]["device"], "door");
        assert_eq!(event["recording"], started.0["params"]["filename"]);
        let stopped = notes
            .iter()
            .find(|(n, _)| n["method"] == "recording_status_update" && n["params"]["status"] == "STOPPED")
            .expect("the recording stopped after post-capture");
        let duration = stopped.0["params"]["duration"].as_f64().expect("duration");
        // Pre-capture (3 s), the event (about SHOWN), post-capture (2 s); a GOP (1 s) either way.
        assert!(duration >= 3.0 + SHOWN as f64 - 1.0, "recorded {duration:.1} s");
        let file = hub.recordings_dir().join(started.0["params"]["filename"].as_str().expect("name"));
        common::decodes_cleanly(&file).expect("the event's recording plays");
        // It starts at least the pre-roll (3 s) before the object was confirmed.
        let info = client.call("get_recording_info", json!({ "filename": event["recording"] })).await.expect("info");
        let time = |v: &Value| humantime::parse_rfc3339_weak(v.as_str().expect("a time")).expect("RFC 3339");
        let lead = time(&event["started_at"]).duration_since(time(&info["start_time"])).unwrap_or_default();
        assert!(lead >= Duration::from_millis(2900), "the recording starts {lead:?} before the event: {info}");

        let status = client.call("get_inference_status", json!({})).await.expect("status");
        let yard = status["cameras"].as_array().expect("cameras").iter().find(|c| c["device"] == "yard").cloned();
        let yard = yard.expect("yard listed");
        assert_eq!(yard["decode_mode"], "keyframes", "a still pattern decodes keyframes only: {yard}");
        // 15 fps with a GOP of 15: about one decoded frame a second, not fifteen.
        let decoded = yard["frames_decoded"].as_u64().expect("count") as f64;
        let elapsed = connected.elapsed().as_secs_f64();
        assert!(decoded <= elapsed * 2.0 + 3.0, "{decoded} frames decoded in {elapsed:.0} s: {yard}");
        assert!(status["models"][0]["runs"].as_u64().expect("runs") > 0, "{status}");
        let (_, metrics) = common::http_get(hub.port, "/metrics").expect("metrics");
        assert!(metrics.contains("camhub_inference_seconds_bucket{model=\"coco\",le=\"+Inf\"}"), "{metrics}");
        let objects = metrics.lines().find(|l| l.starts_with("camhub_detection_objects_total{camera=\"door\"}"));
        assert!(objects.is_some_and(|l| !l.ends_with(" 0")), "{metrics}");
    });
}

#[test]
fn bad_models_and_bad_parameters_get_clear_errors_and_streaming_goes_on() {
    // A model that is not there: exit 64 naming the key.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("c.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\n[storage]\nroot = \"{}\"\n[inference]\nruntime = \"{}\"\n\
         [[inference.models]]\nname = \"coco\"\npath = \"/nonexistent/coco.onnx\"\nkind = \"boxes\"\n",
        common::free_port(),
        dir.path().display(),
        asset("onnxruntime/libonnxruntime.so").display()
    );
    std::fs::write(&config, text).expect("write config");
    let out = Command::new(common::BIN).args(["run", "--config"]).arg(&config).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("inference.models[0].path"), "{stderr}");

    // A camera naming a model that is not declared, or a label the model lacks: exit 64 naming the key.
    for (detect, key) in [
        ("{ model = \"other\" }", "cameras[0].detect.model"),
        ("{ model = \"coco\", labels = [\"unicorn\"] }", "cameras[0].detect.labels"),
    ] {
        let text =
            format!("{}[[cameras]]\nid = \"c\"\nurl = \"rtsp://127.0.0.1:1/x\"\ndetect = {detect}\n", inference_toml());
        std::fs::write(&config, text).expect("write config");
        let out = Command::new(common::BIN).args(["check-config", "--config"]).arg(&config).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }

    // Without [inference], detection is unavailable: -32050 naming inference, and the camera streams on.
    let cam = TestCam::start(1);
    let hub = Camhub::start(&camera_toml("c", &cam.url(0)));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = hub.client("operator").await;
        client.wait_status("c", Duration::from_secs(20), |s| s["status"] == "CONNECTED").await.expect("up");
        let err = client.call("set_detection", json!({ "device": "c", "enabled": true })).await.expect_err("off");
        assert_eq!(err["code"], -32050, "{err}");
        assert_eq!(err["data"]["dependency"], "inference", "{err}");
        let status = client.call("get_inference_status", json!({})).await.expect("status");
        assert_eq!(status["available"], false);
        assert!(status["reason"].as_str().is_some_and(|r| r.contains("[inference]")), "{status}");
        for (params, param) in [
            (json!({ "device": "c", "enabled": true, "fps": 100 }), "fps"),
            (json!({ "device": "../c", "enabled": true }), "device"),
            (json!({ "device": "c" }), "enabled"),
        ] {
            let err = client.call("set_detection", params).await.expect_err("refused");
            assert_eq!(err["code"], -32602, "{err}");
            assert_eq!(err["data"]["param"], param, "{err}");
        }
        for (params, param) in [
            (json!({ "since": "yesterday" }), "since"),
            (json!({ "since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z" }), "until"),
            (json!({ "limit": 0 }), "limit"),
        ] {
            let err = client.call("list_events", params).await.expect_err("refused");
            assert_eq!(err["data"]["param"], param, "{err}");
        }
        let err = client.call("get_event", json!({ "id": 12345 })).await.expect_err("none");
        assert_eq!(err["code"], -32010, "{err}");
        client.wait_status("c", Duration::from_secs(5), |s| s["status"] == "CONNECTED").await.expect("still up");
    });
}

/// More detection than the CPU can do: six cameras showing a person coming and going, each asking for ten inferences a
/// second from one inference thread (about fifteen a second fit). Frames are dropped and counted; ingest keeps the
/// cameras' rate, a recording made meanwhile is whole, and the API answers at once.
#[test]
fn overload_drops_and_counts_frames_and_never_delays_ingest_recording_or_the_api() {
    let person = asset("photos/person.jpg");
    let args = ["--width", "640", "--height", "360", "--fps", "15", "--bitrate", "600", "--image"];
    let mut args: Vec<&str> = args.to_vec();
    args.push(person.to_str().expect("utf-8 path"));
    // The person comes and goes every 3 s: each coming is motion, so every frame is decoded and offered to the model
    // while the person is in view. (A person in view from the first frame on, with only the clock text changing,
    // may never count as motion: then only keyframes are looked at and nothing overloads, which failed CI once.)
    args.extend(["--image-schedule", "3:3"]);
    let cam = TestCam::start_with(common::free_port(), 6, &args);
    let mut config = inference_toml();
    for i in 0..6 {
        config.push_str(&camera_toml(&format!("c{i}"), &cam.url(i)));
        config.push_str("detect = { model = \"coco\", fps = 10 }\n");
    }
    let hub = Camhub::start(&config);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = hub.client("operator").await;
        for i in 0..6 {
            let id = format!("c{i}");
            client.wait_status(&id, Duration::from_secs(30), |s| s["status"] == "CONNECTED").await.expect("up");
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let started = client.call("start_recording", json!({ "device": "c0", "duration": 6 })).await.expect("rec");
        let mut api = Vec::new();
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            let t = Instant::now();
            client.call("get_camera_list", json!({})).await.expect("list");
            api.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        api.sort();
        let p99 = api[api.len() * 99 / 100];
        assert!(p99 < Duration::from_millis(250), "get_camera_list p99 {p99:?} under detection overload");
        let status = client.call("get_inference_status", json!({})).await.expect("status");
        let engine_drops = status["dropped_frames"].as_u64().expect("drops");
        let camera_drops: u64 = status["cameras"]
            .as_array()
            .expect("cameras")
            .iter()
            .map(|c| c["dropped_frames"].as_u64().unwrap_or(0))
            .sum();
        assert!(engine_drops > 0 && camera_drops >= engine_drops, "overload counted: {status}");
        for i in 0..6 {
            let s = client.call("get_camera_status", json!({ "device": format!("c{i}") })).await.expect("status");
            assert_eq!(s["status"], "CONNECTED", "{s}");
            assert!(s["fps"].as_u64().is_some_and(|f| f >= 13), "ingest kept its rate: {s}");
        }
        let stopped = client
            .wait_notification("recording_status_update", Duration::from_secs(15), |p| p["status"] == "STOPPED")
            .await
            .expect("the recording ended on its own");
        let duration = stopped["duration"].as_f64().expect("duration");
        assert!(duration >= 5.0, "a 6 s recording under overload holds {duration:.1} s");
        let file = hub.recordings_dir().join(started["filename"].as_str().expect("filename"));
        common::decodes_cleanly(&file).expect("the recording plays");
    });
}

/// `set_detection` outlives a restart: turned off on a camera whose config turns it on, it stays off; turned on, with
/// its labels and rate, on a camera added through the API, it comes back on.
#[test]
fn set_detection_is_kept_across_restarts() {
    let cam = TestCam::start(2);
    let config = format!("{}{}detect = {{ model = \"coco\" }}\n", inference_toml(), camera_toml("a", &cam.url(0)));
    let mut hub = Camhub::start(&config);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let enabled = |status: &Value, device: &str| {
        status["cameras"].as_array().expect("cameras").iter().find(|c| c["device"] == device).cloned()
    };
    rt.block_on(async {
        let client = hub.client("operator").await;
        let status = client.call("get_inference_status", json!({})).await.expect("status");
        assert!(enabled(&status, "a").is_some(), "configured on: {status}");
        let off = client.call("set_detection", json!({ "device": "a", "enabled": false })).await.expect("off");
        assert_eq!(off["enabled"], false);
        let params = json!({ "stream_url": cam.url(1), "stream_name": "b" });
        client.call("add_external_stream", params).await.expect("add b");
        let on = json!({ "device": "b", "enabled": true, "labels": ["person"], "fps": 2 });
        client.call("set_detection", on).await.expect("on");
    });
    hub.restart(&config);
    rt.block_on(async {
        let client = hub.client("viewer").await;
        let status = client.call("get_inference_status", json!({})).await.expect("status");
        assert!(enabled(&status, "a").is_none(), "still off after a restart: {status}");
        let b = enabled(&status, "b").expect("b still on after a restart");
        assert_eq!((&b["labels"], &b["fps"]), (&json!(["person"]), &json!(2.0)), "{b}");
    });
}
