//! Snapshots, fast and honest: a snapshot of a camera detection decodes is detection's picture of the current frame
//! (no second decoding), and of a camera with a still picture (detection decoding keyframes only) it is decoded as
//! usual, never an old keyframe's picture; calls close together decode only the frames since the last one, and the
//! decoder kept for that is fed nothing between calls and goes 3 s after the last one; concurrent calls for one file
//! name make one file. Real test cameras, the real ONNX model (`scripts/install-models.sh`), real JPEGs read by
//! ffprobe. About 15-30 s in all (two tests run at once).

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::{Camhub, Client, TestCam, asset, camera_toml, inference_toml};
use serde_json::{Value, json};

/// One frame at the test cameras' 15 fps, the most a snapshot's frame may be older than the call.
const FRAME: Duration = Duration::from_millis(67);

fn parse_time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().expect("time string")).expect("RFC 3339 time")
}

async fn connected(hub: &Camhub, devices: &[&str]) -> Client {
    let client = hub.client("operator").await;
    for device in devices {
        client
            .wait_status(device, Duration::from_secs(30), |s| s["status"] == "CONNECTED")
            .await
            .unwrap_or_else(|| panic!("{device} never connected; log:\n{}", hub.log()));
    }
    client
}

/// Takes a snapshot named `name` of `device` and checks it shows the camera's picture at the call (a frame at most
/// one frame interval older than the call); returns the result, with the call's duration as `took_ms`.
async fn snapshot(client: &Client, device: &str, name: &str) -> Value {
    let before = SystemTime::now();
    let called = Instant::now();
    let mut snap = client.call("take_snapshot", json!({ "device": device, "filename": name })).await.expect("snapshot");
    let took = called.elapsed();
    assert_eq!(snap["status"], "SUCCESS", "{snap}");
    let frame_time = parse_time(&snap["frame_time"]);
    assert!(frame_time + FRAME + Duration::from_millis(5) >= before, "a frame older than the call: {snap}");
    snap["took_ms"] = json!(took.as_secs_f64() * 1000.0);
    snap
}

/// Checks that the snapshot `snap` names is a JPEG of `size` (read by ffprobe) of the size the result says.
fn is_jpeg_of(hub: &Camhub, snap: &Value, size: (u32, u32)) {
    let path = hub.dir.join("snapshots").join(snap["filename"].as_str().expect("filename"));
    let (_, w, h, codec) = common::ffprobe(&path).expect("ffprobe reads the snapshot");
    assert_eq!((w, h, codec.as_str()), (size.0, size.1, "mjpeg"), "{snap}");
    assert_eq!((snap["width"].as_u64(), snap["height"].as_u64()), (Some(size.0 as u64), Some(size.1 as u64)));
    assert_eq!(std::fs::metadata(&path).expect("the file").len(), snap["file_size"].as_u64().expect("size"));
}

fn decode_mode(status: &Value, device: &str) -> String {
    status["cameras"]
        .as_array()
        .expect("cameras")
        .iter()
        .find(|c| c["device"] == device)
        .map(|c| c["decode_mode"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

#[test]
fn a_snapshot_of_a_camera_detection_decodes_is_detection_s_picture_of_the_current_frame() {
    // A person in view from 2 s on: detection decodes every frame while it tracks her.
    let person = asset("photos/person.jpg");
    let picture = ["--width", "640", "--height", "360", "--fps", "15", "--bitrate", "800"];
    let mut args: Vec<&str> = picture.to_vec();
    args.extend(["--image", person.to_str().expect("utf-8 path"), "--image-schedule", "2:60"]);
    let moving = TestCam::start_with(common::free_port(), 1, &args);
    // Colour bars with only the clock changing: detection decodes keyframes only.
    let mut still: Vec<&str> = picture.to_vec();
    still.extend(["--pattern", "smpte"]);
    let still = TestCam::start_with(common::free_port(), 1, &still);
    let config = format!(
        "{}{}detect = {{ model = \"coco\" }}\n{}detect = {{ model = \"coco\" }}\n",
        inference_toml(),
        camera_toml("door", &moving.url(0)),
        camera_toml("bars", &still.url(0)),
    );
    let hub = Camhub::start(&config);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = connected(&hub, &["door", "bars"]).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = client.call("get_inference_status", json!({})).await.expect("status");
            if decode_mode(&status, "door") == "all" {
                break;
            }
            assert!(Instant::now() < deadline, "detection never decoded every frame of door: {status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut door = Vec::new();
        for i in 0..10 {
            door.push(snapshot(&client, "door", &format!("door-{i}")).await);
        }
        let status = client.call("get_inference_status", json!({})).await.expect("status");
        assert_eq!(decode_mode(&status, "door"), "all", "{status}");
        assert_eq!(decode_mode(&status, "bars"), "keyframes", "{status}");
        let mut bars = Vec::new();
        for i in 0..10 {
            bars.push(snapshot(&client, "bars", &format!("bars-{i}")).await);
        }
        let figures = |snaps: &[Value]| -> Vec<String> {
            snaps
                .iter()
                .map(|s| {
                    format!(
                        "{} {} {:.1} ms",
                        s["frame_source"].as_str().unwrap_or("-"),
                        s["frames_decoded"],
                        s["took_ms"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect()
        };
        for s in door.iter().chain(&bars) {
            is_jpeg_of(&hub, s, (640, 360));
        }
        eprintln!("door (detection decodes every frame): {:?}", figures(&door));
        eprintln!("bars (detection decodes keyframes): {:?}", figures(&bars));
        // While detection decodes every frame, each snapshot is its picture: nothing decoded again.
        for s in &door {
            assert_eq!((s["frame_source"].as_str(), s["frames_decoded"].as_u64()), (Some("detection"), Some(0)), "{s}");
        }
        // While it decodes keyframes only, its picture is a keyframe's, older than the current frame (unless a keyframe
        // has just arrived and been decoded): the snapshot decodes the current frame itself.
        let decoded = bars.iter().filter(|s| s["frame_source"] == "decoder").count();
        assert!(decoded >= 8, "a still camera's snapshots should be decoded for the call: {:?}", figures(&bars));
        for s in bars.iter().filter(|s| s["frame_source"] == "detection") {
            assert_eq!(s["frames_decoded"], 0, "{s}");
        }
    });
}

/// The threads of `pid` named `name`, with their CPU time (clock ticks).
fn threads_named(pid: u32, name: &str) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the command (which ends with ')'): utime and stime are the 12th and 13th.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        let tid = dir.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).unwrap_or(0);
        out.push((tid, ticks(11) + ticks(12)));
    }
    out.sort();
    out
}

#[tokio::test]
async fn snapshots_close_together_decode_only_the_frames_since_and_the_kept_decoder_idles_then_goes() {
    let cam = TestCam::start(1);
    let hub = Camhub::start_with_env(&[("RUST_LOG", "info,camhub::snapshot=debug")], &camera_toml("cam", &cam.url(0)));
    let client = connected(&hub, &["cam"]).await;
    // Nothing else in this camhub runs an appsrc (no recording, reader or detection): these are the snapshot's.
    assert!(threads_named(hub.pid(), "src:src").is_empty(), "appsrc threads before any snapshot");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut snaps = Vec::new();
    for i in 0..12 {
        snaps.push(snapshot(&client, "cam", &format!("s{i}")).await);
    }
    let decoded: Vec<u64> = snaps.iter().map(|s| s["frames_decoded"].as_u64().expect("frames_decoded")).collect();
    let took: Vec<f64> = snaps.iter().map(|s| s["took_ms"].as_f64().unwrap_or(0.0)).collect();
    eprintln!("frames decoded per call: {decoded:?}; ms per call: {took:.1?}");
    assert!(snaps.iter().all(|s| s["frame_source"] == "decoder"), "no detection here: {snaps:?}");
    // The first call decodes from the keyframe (1 to 15 frames at a GOP of 15); the later ones only the frames that
    // arrived since the frame the call before showed (or from a newer keyframe when that is fewer), so together no
    // more than the frames that arrived from the first call's frame to the last's (by the frames' times at 15 fps,
    // with 3 frames of slack for arrival jitter). Decoding from the keyframe each time would be about 7 a call.
    assert!((1..=15).contains(&decoded[0]), "{decoded:?}");
    let first = parse_time(&snaps[0]["frame_time"]);
    let last = parse_time(&snaps[snaps.len() - 1]["frame_time"]);
    let arrived = last.duration_since(first).unwrap_or_default().as_secs_f64() * 15.0;
    let later: u64 = decoded[1..].iter().sum();
    assert!(
        later as f64 <= arrived.round() + 3.0,
        "calls 2 to 12 decoded {later} frames, {arrived:.1} frames arrived meanwhile: {decoded:?}; log:\n{}",
        hub.log().lines().filter(|l| l.contains("snapshot")).collect::<Vec<_>>().join("\n")
    );

    // Kept after the calls, the snapshot's pipelines are fed nothing: their threads use no CPU.
    let kept = threads_named(hub.pid(), "src:src");
    assert!(!kept.is_empty(), "no snapshot pipeline kept after the calls");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let later_ticks = threads_named(hub.pid(), "src:src");
    eprintln!("kept pipeline threads (tid, CPU ticks): after the calls {kept:?}, 2 s later {later_ticks:?}");
    for (tid, ticks) in &kept {
        let now = later_ticks.iter().find(|(t, _)| t == tid).map(|(_, n)| *n);
        // One tick (10 ms) of slack: a thread may be charged a tick it had nearly used when the calls ended.
        assert!(now.is_none_or(|n| n <= ticks + 1), "thread {tid} used CPU between calls: {kept:?} -> {later_ticks:?}");
    }
    // And 3 s after the last call they go.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let left = threads_named(hub.pid(), "src:src");
    assert!(left.is_empty(), "snapshot pipeline threads left 4.5 s after the last call: {left:?}");

    // A call after that builds them again, from the keyframe.
    let again = snapshot(&client, "cam", "again").await;
    for s in snaps.iter().chain([&again]) {
        is_jpeg_of(&hub, s, (320, 240));
    }
    assert!((1..=15).contains(&again["frames_decoded"].as_u64().expect("frames")), "{again}");
}

#[tokio::test]
async fn concurrent_snapshots_under_one_name_make_one_whole_file_and_the_others_are_refused() {
    let cam = TestCam::start(1);
    let hub = Camhub::start(&camera_toml("cam", &cam.url(0)));
    let client = connected(&hub, &["cam"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = (0..6).map(|_| client.call("take_snapshot", json!({ "device": "cam", "filename": "same" })));
    let results = futures::future::join_all(calls).await;
    let ok: Vec<&Value> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let refused: Vec<&Value> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!("{} made it, {} refused: {refused:?}", ok.len(), refused.len());
    assert_eq!(ok.len(), 1, "files are never replaced: one call makes the file, the others are refused: {results:?}");
    for e in &refused {
        assert_eq!(e["code"], -32020, "{e}");
    }
    let dir = hub.dir.join("snapshots");
    let (_, w, h, codec) = common::ffprobe(&dir.join("same.jpg")).expect("ffprobe reads it");
    assert_eq!((w, h, codec.as_str()), (320, 240, "mjpeg"));
    assert_eq!(
        std::fs::metadata(dir.join("same.jpg")).expect("file").len(),
        ok[0]["file_size"].as_u64().expect("size")
    );
    let names: Vec<String> =
        std::fs::read_dir(&dir).expect("dir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["same.jpg"], "no temporary file is left behind");
    assert!(Path::new(&dir).join("same.jpg").is_file());
}
