//! Recording end to end against the real test camera, checked by real demuxers (ffprobe, gst-discoverer-1.0):
//! duration with pre-roll, keyframe start, every format, reconnects within one session, and recovery after kill -9.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::{Camhub, TestCam, camera_toml, decodes_cleanly, ffprobe, first_frame_is_key};
use serde_json::{Value, json};

const CONNECT: Duration = Duration::from_secs(20);

fn parse_time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().expect("time string")).expect("RFC 3339 time")
}

#[tokio::test]
async fn a_recording_with_pre_roll_and_a_duration_plays_for_that_long() {
    let cam = TestCam::start(1);
    let hub = Camhub::start(&camera_toml("cam", &cam.url(0)));
    let client = hub.connected_client("operator", "cam").await;
    // Let the hub gather more than the pre-roll.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let started = client.call("start_recording", json!({ "device": "cam", "duration": 6 })).await.expect("start");
    assert_eq!(started["status"], "RECORDING");
    assert_eq!(started["format"], "fmp4");
    let pre_roll = started["pre_roll"].as_f64().expect("pre_roll");
    assert!((5.0..=6.5).contains(&pre_roll), "pre-roll {pre_roll}");
    let again = client.call("start_recording", json!({ "device": "cam" })).await.expect_err("twice");
    assert_eq!(again["code"], -32020);

    let note = client
        .wait_notification("recording_status_update", Duration::from_secs(15), |p| p["status"] == "STOPPED")
        .await
        .unwrap_or_else(|| panic!("the duration did not stop the recording; log:\n{}", hub.log()));
    assert_eq!(note["device"], "cam");
    let filename = started["filename"].as_str().expect("filename");
    assert_eq!(note["filename"], filename);
    let path = hub.recordings_dir().join(filename);
    let (duration, w, h, codec) = ffprobe(&path).expect("ffprobe reads the recording");
    assert_eq!((w, h, codec.as_str()), (320, 240, "h264"));
    assert!((duration - (6.0 + pre_roll)).abs() <= 0.5, "duration {duration} vs 6 + {pre_roll}");
    let discovered = common::discoverer_duration(&path).expect("gst-discoverer reads it");
    assert!((discovered - duration).abs() < 0.2, "{discovered} vs {duration}");
    assert!(first_frame_is_key(&path), "first frame is not a keyframe");
    decodes_cleanly(&path).expect("every frame decodes");

    let info = client.call("get_recording_info", json!({ "filename": filename })).await.expect("info");
    assert_eq!(info["device"], "cam");
    assert!((info["duration"].as_f64().expect("duration") - duration).abs() < 0.3, "{info}");
    assert_eq!(info["file_size"].as_u64(), Some(std::fs::metadata(&path).expect("meta").len()));
    let stop = client.call("stop_recording", json!({ "device": "cam" })).await.expect_err("not recording");
    assert_eq!(stop["code"], -32020);
}

#[tokio::test]
async fn mkv_and_mp4_record_and_stop_on_request() {
    let cam = TestCam::start(2);
    let hub = Camhub::start(&format!("{}{}", camera_toml("a", &cam.url(0)), camera_toml("b", &cam.url(1))));
    let client = hub.connected_client("operator", "a").await;
    client.wait_status("b", CONNECT, |s| s["status"] == "CONNECTED").await.expect("b connected");
    let mkv = client.call("start_recording", json!({ "device": "a", "format": "mkv" })).await.expect("mkv");
    let mp4 = client.call("start_recording", json!({ "device": "b", "format": "mp4" })).await.expect("mp4");
    assert!(mkv["filename"].as_str().expect("name").ends_with(".mkv"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (device, started) in [("a", &mkv), ("b", &mp4)] {
        let stopped = client.call("stop_recording", json!({ "device": device })).await.expect("stop");
        assert_eq!(stopped["status"], "STOPPED");
        assert_eq!(stopped["filename"], started["filename"]);
        let path = hub.recordings_dir().join(stopped["filename"].as_str().expect("name"));
        let (duration, _, _, codec) = ffprobe(&path).unwrap_or_else(|e| panic!("{device}: {e}"));
        assert_eq!(codec, "h264");
        let reported = stopped["duration"].as_f64().expect("duration");
        assert!((duration - reported).abs() < 0.5, "{device}: file {duration} s, reported {reported} s");
        assert!(duration > 3.0, "{device}: {duration}");
        assert!(first_frame_is_key(&path), "{device}");
        decodes_cleanly(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stopped["file_size"].as_u64(), Some(std::fs::metadata(&path).expect("meta").len()));
    }
    let bad = client.call("start_recording", json!({ "device": "a", "format": "avi" })).await.expect_err("avi");
    assert_eq!((bad["code"].as_i64(), bad["data"]["param"].as_str()), (Some(-32602), Some("format")));
    let bad = client.call("start_recording", json!({ "device": "a", "duration": -1 })).await.expect_err("negative");
    assert_eq!(bad["data"]["param"], "duration");
}

#[tokio::test]
async fn a_camera_reconnect_gives_one_session_with_two_playable_segments() {
    let mut cam = TestCam::start(1);
    let port = cam.port;
    let hub = Camhub::start(&camera_toml("cam", &cam.url(0)));
    let client = hub.connected_client("operator", "cam").await;
    let started = client.call("start_recording", json!({ "device": "cam" })).await.expect("start");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cam.kill();
    client
        .wait_notification("camera_status_update", Duration::from_secs(5), |p| p["status"] == "DISCONNECTED")
        .await
        .expect("disconnected");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _cam = TestCam::start_on(port, 1);
    client
        .wait_notification("camera_status_update", Duration::from_secs(10), |p| p["status"] == "CONNECTED")
        .await
        .expect("reconnected");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopped = client.call("stop_recording", json!({ "device": "cam" })).await.expect("stop");
    assert_eq!(stopped["session_id"], started["session_id"]);
    assert_eq!(stopped["segments"], 2, "{stopped}");
    let list = client.call("list_recordings", json!({})).await.expect("list");
    let files: Vec<&Value> = list["files"].as_array().expect("files").iter().collect();
    assert_eq!(files.len(), 2, "{list}");
    assert!(files.iter().all(|f| f["session_id"] == started["session_id"]));
    // Newest first, and the second segment starts after the gap.
    let (newer, older) = (files[0], files[1]);
    let gap = parse_time(&newer["start_time"]).duration_since(parse_time(&older["end_time"])).expect("ordered");
    assert!(gap >= Duration::from_millis(500), "the gap was not kept: {gap:?}");
    for f in files {
        let path = hub.recordings_dir().join(f["filename"].as_str().expect("name"));
        ffprobe(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(first_frame_is_key(&path));
        decodes_cleanly(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A recording's streams as ffprobe and a player see them: a video and an audio stream of `audio_codec`, of one
/// length and starting together, and the sound in sync with the picture (the test camera's per-second marks). Returns
/// how far the sound is behind the picture (seconds).
fn assert_sound_in_sync(path: &std::path::Path, audio_codec: &str) -> f64 {
    let streams = common::ffprobe_streams(path).unwrap_or_else(|e| panic!("{e}"));
    let video = streams.iter().find(|s| s.kind == "video").unwrap_or_else(|| panic!("no video: {streams:?}"));
    let audio = streams.iter().find(|s| s.kind == "audio").unwrap_or_else(|| panic!("no audio: {streams:?}"));
    assert_eq!((streams.len(), video.codec.as_str(), audio.codec.as_str()), (2, "h264", audio_codec), "{streams:?}");
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let (starts, lengths) = (audio.start - video.start, audio.duration - video.duration);
    let uri = format!("file://{}", path.display());
    let (squares, bursts) = common::av_marks(&uri, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let offset = common::av_offset(&squares, &bursts);
    eprintln!(
        "{name}: video {:.3}+{:.3} s, audio {:.3}+{:.3} s; {} squares, {} bursts, sound behind picture by {offset:?} s",
        video.start,
        video.duration,
        audio.start,
        audio.duration,
        squares.len(),
        bursts.len()
    );
    assert!(starts.abs() <= 0.1, "{name}: audio starts {starts:.3} s after the video: {streams:?}");
    assert!(lengths.abs() <= 0.5, "{name}: audio is {lengths:.3} s longer than the video: {streams:?}");
    // One square a second, bar the last.
    assert!(squares.len() + 1 >= video.duration as usize && squares.len() >= 2, "{name}: {squares:?}");
    let offset = offset.unwrap_or_else(|| panic!("{name}: no burst near a square: {squares:?} {bursts:?}"));
    assert!(offset.abs() <= 0.1, "{name}: the sound is {offset:.3} s behind the picture: {squares:?} {bursts:?}");
    offset
}

#[tokio::test]
async fn a_camera_with_sound_is_recorded_with_it_in_sync_in_every_format() {
    // A camera per format, each the first reader of its test camera stream: its RTP-Info aligns the sound at once
    // (a later reader of a shared gst-rtsp-server media gets one off by up to a frame, which the sender reports mend
    // a few seconds later).
    let cam = TestCam::start_with_audio(3, "aac");
    let formats = [("a", "mp4"), ("b", "fmp4"), ("c", "mkv")];
    let toml: String = formats.iter().enumerate().map(|(i, (id, _))| camera_toml(id, &cam.url(i))).collect();
    let hub = Camhub::start(&toml);
    let client = hub.connected_client("operator", "a").await;
    for (id, _) in &formats[1..] {
        client.wait_status(id, CONNECT, |s| s["status"] == "CONNECTED").await.expect("connected");
    }
    // Some pre-roll, which must carry its sound too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (id, format) in formats {
        client.call("start_recording", json!({ "device": id, "format": format })).await.expect("start");
    }
    // Meanwhile, each camera's own offset as a player of its stream meets it (the test camera's encoder has one,
    // different at each start).
    let own: Vec<_> = (0..formats.len())
        .map(|i| {
            let url = cam.url(i);
            // A reader that got nothing at all (its connection to the test camera failed on a loaded machine, seen
            // once in CI) is a failed measurement of the camera, not of camhub: it is taken once more.
            tokio::task::spawn_blocking(move || match common::av_marks(&url, Duration::from_secs(5)) {
                Ok((squares, bursts)) if squares.is_empty() && bursts.is_empty() => {
                    eprintln!("{url}: the reader of the camera's own stream got nothing; reading again");
                    common::av_marks(&url, Duration::from_secs(5))
                }
                other => other,
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    for ((id, _), own) in formats.into_iter().zip(own) {
        let (squares, bursts) = own.await.expect("joined").unwrap_or_else(|e| panic!("{e}"));
        let camera = common::av_offset(&squares, &bursts).unwrap_or_else(|| panic!("{id}: {squares:?} {bursts:?}"));
        eprintln!("{id}: the camera's own stream: sound behind picture by {camera:.4} s");
        let stopped = client.call("stop_recording", json!({ "device": id })).await.expect("stop");
        let path = hub.recordings_dir().join(stopped["filename"].as_str().expect("name"));
        let offset = assert_sound_in_sync(&path, "aac");
        assert!(
            (offset - camera).abs() <= 0.02,
            "{path:?}: sound behind by {offset:.4} s, the camera's by {camera:.4}"
        );
        assert!(first_frame_is_key(&path));
        decodes_cleanly(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test]
async fn sound_follows_segment_splits_and_a_file_cut_by_kill_9_is_recovered_with_it() {
    let cam = TestCam::start_with_audio(1, "aac");
    let toml = format!("[recording]\nsegment_seconds = 2\n{}", camera_toml("cam", &cam.url(0)));
    let mut hub = Camhub::start(&toml);
    let client = hub.connected_client("operator", "cam").await;
    client.call("start_recording", json!({ "device": "cam", "format": "fmp4" })).await.expect("start");
    tokio::time::sleep(Duration::from_secs(7)).await;
    hub.kill9();
    hub.start_again(&toml);
    let client = hub.client("viewer").await;
    let list = client.call("list_recordings", json!({})).await.expect("list");
    let files = list["files"].as_array().expect("files");
    assert!(files.len() >= 3, "{list}");
    assert!(files.iter().any(|f| f["recovered"] == true), "the cut segment was not recovered: {list}");
    for f in files {
        let path = hub.recordings_dir().join(f["filename"].as_str().expect("name"));
        let streams = common::ffprobe_streams(&path).unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<&str> = streams.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["video", "audio"], "{f}: {streams:?}");
        let starts = streams[1].start - streams[0].start;
        assert!(starts.abs() <= 0.1, "{f}: audio starts {starts:.3} s after the video: {streams:?}");
        let indexed = f["duration"].as_f64().expect("duration");
        assert!((streams[0].duration - indexed).abs() <= 0.5, "{f}: {streams:?}");
        decodes_cleanly(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test]
async fn a_camera_with_sound_that_reconnects_keeps_its_sound_in_the_next_segment() {
    let mut cam = TestCam::start_with_audio(1, "aac");
    let (port, url) = (cam.port, cam.url(0));
    let hub = Camhub::start(&camera_toml("cam", &url));
    let client = hub.connected_client("operator", "cam").await;
    client.call("start_recording", json!({ "device": "cam", "format": "mkv" })).await.expect("start");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cam.kill();
    client
        .wait_notification("camera_status_update", Duration::from_secs(5), |p| p["status"] == "DISCONNECTED")
        .await
        .expect("disconnected");
    let _cam = TestCam::start_with(port, 1, &["--width", "320", "--height", "240", "--fps", "15", "--audio", "aac"]);
    client
        .wait_notification("camera_status_update", Duration::from_secs(10), |p| p["status"] == "CONNECTED")
        .await
        .expect("reconnected");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stopped = client.call("stop_recording", json!({ "device": "cam" })).await.expect("stop");
    assert_eq!(stopped["segments"], 2, "{stopped}");
    let list = client.call("list_recordings", json!({})).await.expect("list");
    for f in list["files"].as_array().expect("files") {
        assert_sound_in_sync(&hub.recordings_dir().join(f["filename"].as_str().expect("name")), "aac");
    }
}

#[tokio::test]
async fn g711_sound_is_recorded_in_mkv_and_mp4_keeps_the_picture_only() {
    let cam = TestCam::start_with_audio(2, "pcmu");
    let hub = Camhub::start(&format!("{}{}", camera_toml("a", &cam.url(0)), camera_toml("b", &cam.url(1))));
    let client = hub.connected_client("operator", "a").await;
    client.wait_status("b", CONNECT, |s| s["status"] == "CONNECTED").await.expect("b connected");
    let mkv = client.call("start_recording", json!({ "device": "a", "format": "mkv" })).await.expect("mkv");
    let mp4 = client.call("start_recording", json!({ "device": "b", "format": "mp4" })).await.expect("mp4");
    tokio::time::sleep(Duration::from_secs(5)).await;
    for device in ["a", "b"] {
        client.call("stop_recording", json!({ "device": device })).await.expect("stop");
    }
    let mkv = hub.recordings_dir().join(mkv["filename"].as_str().expect("name"));
    assert_sound_in_sync(&mkv, "pcm_mulaw");
    decodes_cleanly(&mkv).unwrap_or_else(|e| panic!("{e}"));
    let mp4 = hub.recordings_dir().join(mp4["filename"].as_str().expect("name"));
    let streams = common::ffprobe_streams(&mp4).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(streams.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>(), ["video"], "{streams:?}");
    assert!(hub.log().contains("does not fit this container"), "not said; log:\n{}", hub.log());
}

#[tokio::test]
async fn kill_9_mid_recording_loses_at_most_a_second_and_the_index_matches_the_disk() {
    let cam = TestCam::start(1);
    let toml = camera_toml("cam", &cam.url(0));
    let mut hub = Camhub::start(&toml);
    let client = hub.connected_client("operator", "cam").await;
    let started = client.call("start_recording", json!({ "device": "cam" })).await.expect("start");
    let filename = started["filename"].as_str().expect("name").to_owned();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let killed_at = SystemTime::now();
    hub.kill9();
    let path: PathBuf = hub.recordings_dir().join(&filename);
    assert!(path.exists(), "no file was being written");

    hub.start_again(&toml);
    let client = hub.client("admin").await;
    let info = client.call("get_recording_info", json!({ "filename": filename })).await.expect("recovered and indexed");
    assert_eq!(info["recovered"], true);
    let (duration, ..) = ffprobe(&path).expect("the recovered file plays");
    decodes_cleanly(&path).unwrap_or_else(|e| panic!("{e}"));
    // The file begins with the session's first frame; what it holds must reach to within a second of the kill.
    let first_frame = parse_time(&started["start_time"]);
    assert_eq!(info["start_time"], started["start_time"]);
    let end = first_frame + Duration::from_secs_f64(duration);
    let lost = killed_at.duration_since(end).unwrap_or_default();
    assert!(
        lost <= Duration::from_millis(1000),
        "{lost:?} before the kill is missing ({duration} s recorded); log:\n{}",
        hub.log()
    );

    // The index matches the disk, as `camhub check` sees it.
    hub.stop();
    let out = std::process::Command::new(common::BIN)
        .args(["check", "--config"])
        .arg(hub.dir.join("camhub.toml"))
        .output()
        .expect("run check");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn a_snapshot_is_a_fresh_jpeg_of_the_camera_size() {
    let cam = TestCam::start(1);
    let hub = Camhub::start(&camera_toml("cam", &cam.url(0)));
    let client = hub.connected_client("operator", "cam").await;
    let before = SystemTime::now();
    let snap = client.call("take_snapshot", json!({ "device": "cam", "filename": "door" })).await.expect("snapshot");
    assert_eq!(snap["status"], "SUCCESS");
    assert_eq!(snap["filename"], "door.jpg");
    assert_eq!((snap["width"].as_u64(), snap["height"].as_u64()), (Some(320), Some(240)));
    let frame_time = parse_time(&snap["frame_time"]);
    // The camera's picture at the call: its latest frame, at most one frame interval (67 ms at 15 fps) old.
    assert!(frame_time >= before - Duration::from_millis(67 + 5), "the frame is older than one frame before the call");
    let path = hub.dir.join("snapshots/door.jpg");
    let bytes = std::fs::read(&path).expect("snapshot file");
    assert_eq!(&bytes[..2], &[0xFF, 0xD8], "not a JPEG");
    let (_, w, h, codec) = ffprobe(&path).expect("ffprobe reads the JPEG");
    assert_eq!((w, h, codec.as_str()), (320, 240, "mjpeg"));
    let exists = client.call("take_snapshot", json!({ "device": "cam", "filename": "door.jpg" })).await;
    assert_eq!(exists.expect_err("no overwrite")["code"], -32020);

    let list = client.call("list_snapshots", json!({ "limit": 10 })).await.expect("list");
    assert_eq!(list["total"], 1);
    assert_eq!(list["files"][0]["filename"], "door.jpg");
    let info = client.call("get_snapshot_info", json!({ "filename": "door.jpg" })).await.expect("info");
    assert_eq!(info["file_size"].as_u64(), Some(bytes.len() as u64));
}

#[tokio::test]
async fn a_camera_configured_to_record_always_records_from_start_up_in_segments() {
    let cam = TestCam::start(1);
    let toml = format!("[recording]\nsegment_seconds = 2\n{}record = \"always\"\n", camera_toml("cam", &cam.url(0)));
    let hub = Camhub::start(&toml);
    let client = hub.client("operator").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut list = json!(null);
    while std::time::Instant::now() < deadline {
        list = client.call("list_recordings", json!({})).await.expect("list");
        if list["total"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let files = list["files"].as_array().expect("files");
    assert!(files.len() >= 2, "continuous recording made no segments: {list}; log:\n{}", hub.log());
    assert!(files.iter().all(|f| f["session_id"] == files[0]["session_id"]), "one session: {list}");
    for f in files {
        let d = f["duration"].as_f64().expect("duration");
        assert!((1.5..=3.5).contains(&d), "segment of {d} s for a 2 s segment length");
        let path = hub.recordings_dir().join(f["filename"].as_str().expect("name"));
        assert!(first_frame_is_key(&path));
        decodes_cleanly(&path).unwrap_or_else(|e| panic!("{e}"));
    }
    let stopped = client.call("stop_recording", json!({ "device": "cam" })).await.expect("continuous can be stopped");
    assert_eq!(stopped["status"], "STOPPED");
}

#[tokio::test]
async fn back_to_back_recordings_within_the_pre_roll_never_share_a_file() {
    let cam = TestCam::start(1);
    let hub = Camhub::start(&camera_toml("cam", &cam.url(0)));
    let client = hub.connected_client("operator", "cam").await;
    let mut stopped = Vec::new();
    for _ in 0..2 {
        client.call("start_recording", json!({ "device": "cam" })).await.expect("start");
        tokio::time::sleep(Duration::from_secs(2)).await;
        stopped.push(client.call("stop_recording", json!({ "device": "cam" })).await.expect("stop"));
    }
    assert_ne!(stopped[0]["filename"], stopped[1]["filename"]);
    for s in &stopped {
        assert_eq!(s["status"], "STOPPED", "{s}");
        let path = hub.recordings_dir().join(s["filename"].as_str().expect("name"));
        assert_eq!(std::fs::metadata(&path).expect("file").len(), s["file_size"].as_u64().expect("size"), "{s}");
        decodes_cleanly(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test]
async fn check_reports_every_mismatch_and_repair_fixes_them() {
    let cam = TestCam::start(1);
    let toml = camera_toml("cam", &cam.url(0));
    let mut hub = Camhub::start(&toml);
    let client = hub.connected_client("operator", "cam").await;
    let mut names = Vec::new();
    for _ in 0..2 {
        client.call("start_recording", json!({ "device": "cam" })).await.expect("start");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stopped = client.call("stop_recording", json!({ "device": "cam" })).await.expect("stop");
        names.push(stopped["filename"].as_str().expect("name").to_owned());
    }
    hub.stop();
    // A file that vanished behind the index's back, and a file the index never heard of.
    std::fs::remove_file(hub.recordings_dir().join(&names[0])).expect("remove");
    let stray = names[1].replace("_0000.", "_0007.");
    std::fs::copy(hub.recordings_dir().join(&names[1]), hub.recordings_dir().join(&stray)).expect("copy");
    let check = |repair: bool| {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(["check", "--config"]).arg(hub.dir.join("camhub.toml"));
        if repair {
            cmd.arg("--repair");
        }
        cmd.output().expect("run check")
    };
    let report = check(false);
    let text = String::from_utf8_lossy(&report.stdout).to_string();
    assert!(!report.status.success(), "{text}");
    assert!(text.contains(&format!("index row without file: {}", names[0])), "{text}");
    assert!(text.contains(&format!("unindexed file: {stray}")), "{text}");
    let repaired = check(true);
    assert!(repaired.status.success(), "{}", String::from_utf8_lossy(&repaired.stdout));
    let again = check(false);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stdout));
    hub.start_again(&toml);
    let client = hub.client("viewer").await;
    let info = client.call("get_recording_info", json!({ "filename": stray })).await.expect("stray now indexed");
    assert_eq!(info["recovered"], true);
    let gone = client.call("get_recording_info", json!({ "filename": names[0] })).await.expect_err("row removed");
    assert_eq!(gone["code"], -32010);
}
