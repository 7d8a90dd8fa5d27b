//! Hot reload end to end: real camhub and the real test camera, the config file rewritten as editors do (a new file
//! renamed over the old, a symlink swapped), reloads started by the file watcher, SIGHUP and `reload_config`. A camera
//! that no change touches records and is watched over RTSP (FFmpeg) and WebRTC (a webrtcbin peer) throughout, and
//! must not notice.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{BIN, Camhub, Client, TestCam, camera_toml, http, packets, peer, rtsp_reader, send_signal};
use serde_json::{Value, json};

const CONNECT: Duration = Duration::from_secs(30);
const EVENT: Duration = Duration::from_secs(15);

async fn connected(client: &Client, hub: &Camhub, device: &str) -> Value {
    let s = client.wait_status(device, CONNECT, |s| s["status"] == "CONNECTED").await;
    s.unwrap_or_else(|| panic!("{device} did not connect; log:\n{}", hub.log()))
}

async fn subscribed(hub: &Camhub, topics: &[&str]) -> Client {
    let client = hub.client("admin").await;
    client.call("subscribe_events", json!({ "topics": topics })).await.expect("subscribe");
    client
}

/// The next `event` notification on `topic`.
async fn event(client: &Client, topic: &str, hub: &Camhub) -> Value {
    let found = client.wait_notification("event", EVENT, |p| p["topic"] == topic).await;
    found.unwrap_or_else(|| panic!("no {topic} event; log:\n{}", hub.log()))["data"].clone()
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        list["cameras"].as_array().expect("cameras").iter().map(|c| c["device"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

fn with_name(id: &str, url: &str, name: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nname = \"{name}\"\nurl = \"{url}\"\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_adds_changes_and_removes_cameras_while_an_untouched_one_records_and_is_watched() {
    let cam = TestCam::start(4);
    let keep = format!("{}record = \"always\"\n", camera_toml("cam0", &cam.url(0)));
    let before = format!(
        "{keep}{}{}[webrtc]\ncandidate_addresses = [\"127.0.0.1\"]\n",
        with_name("cam1", &cam.url(1), "Yard"),
        camera_toml("cam2", &cam.url(2))
    );
    let hub = Camhub::start(&before);
    let client = hub.client("admin").await;
    for id in ["cam0", "cam1", "cam2"] {
        connected(&client, &hub, id).await;
    }
    let watcher =
        subscribed(&hub, &["config.reloaded", "config.reload_failed", "camera.added", "camera.removed"]).await;
    let statuses = subscribed(&hub, &["camera.status_change"]).await;

    // cam0 is watched: an RTSP reader for the whole test, and a WebRTC peer.
    let reader = rtsp_reader(&hub.rtsp_url("cam0"), 14);
    let peer = tokio::task::spawn_blocking(|| peer::Peer::new(false)).await.expect("peer");
    let offer = peer.offer();
    let bearer = format!("Bearer {}", hub.token("viewer"));
    let sdp = [("Content-Type", "application/sdp"), ("Authorization", bearer.as_str())];
    let (code, _, answer) = http(hub.port, "POST", "/whep/cam0", &sdp, &offer);
    assert_eq!(code, 201, "WHEP offer refused: {answer}\nlog:\n{}", hub.log());
    peer.answer(&answer);
    let deadline = Instant::now() + Duration::from_secs(20);
    while peer.decoded.load(Ordering::Relaxed) < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(peer.decoded.load(Ordering::Relaxed) >= 10, "the WebRTC peer decodes cam0; log:\n{}", hub.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cam0_before = connected(&client, &hub, "cam0").await;
    let decoded_before = peer.decoded.load(Ordering::Relaxed);

    // The file changes: cam3 added, cam1 renamed (restarted), cam2 removed, a live setting and one needing a restart.
    let after = format!(
        "{keep}{}{}[snapshots]\nquality = 70\n[webrtc]\ncandidate_addresses = [\"127.0.0.1\"]\nmax_sessions = 8\n",
        with_name("cam1", &cam.url(1), "Back yard"),
        camera_toml("cam3", &cam.url(3))
    );
    let started = Instant::now();
    hub.rewrite_config(&after);
    let reloaded = event(&watcher, "config.reloaded", &hub).await;
    eprintln!("watcher reload applied {:?} after the rename: {reloaded}", started.elapsed());
    assert_eq!(reloaded["trigger"], "watcher", "{reloaded}");
    assert_eq!(reloaded["added"], json!(["cam3"]), "{reloaded}");
    assert_eq!(reloaded["removed"], json!(["cam2"]), "{reloaded}");
    assert_eq!(reloaded["changed"], json!(["cam1"]), "{reloaded}");
    assert_eq!(reloaded["restart_required"], json!(["webrtc"]), "{reloaded}");
    connected(&client, &hub, "cam3").await;
    let cam1 = connected(&client, &hub, "cam1").await;
    assert_eq!(cam1["name"], "Back yard", "{cam1}");
    let list = client.call("get_camera_list", json!({})).await.expect("list");
    assert_eq!(ids(&list), ["cam0", "cam1", "cam3"], "{list}");

    // The same file again, by RPC: nothing changes.
    let again = client.call("reload_config", json!({})).await.expect("reload_config");
    for key in ["cameras_added", "cameras_removed", "cameras_changed", "applied_live"] {
        assert_eq!(again[key], json!([]), "{again}");
    }
    assert_eq!(again["restart_required"], json!(["webrtc"]), "still needs a restart: {again}");

    // An invalid file is refused by the watcher and by the RPC, naming the key; everything runs on.
    hub.rewrite_config(&format!("{after}[recording]\nsegment_seconds = \"ten\"\n"));
    let failed = event(&watcher, "config.reload_failed", &hub).await;
    assert_eq!(failed["key"], "recording.segment_seconds", "{failed}");
    let refused = client.call("reload_config", json!({})).await.expect_err("an invalid file is refused");
    assert!(refused["data"]["detail"].as_str().unwrap_or("").contains("recording.segment_seconds"), "{refused}");
    let list = client.call("get_camera_list", json!({})).await.expect("list");
    assert_eq!(ids(&list), ["cam0", "cam1", "cam3"], "the running config is kept: {list}");

    // cam0 never noticed: no status change, frames counted on, the same connection, its viewers still there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cam0_after = connected(&client, &hub, "cam0").await;
    let (f0, f1) =
        (cam0_before["metrics"]["frames"].as_u64().unwrap(), cam0_after["metrics"]["frames"].as_u64().unwrap());
    assert!(f1 > f0 + 30, "cam0's frame counter went on ({f0} -> {f1})");
    assert_eq!(cam0_after["metrics"]["reconnects"], cam0_before["metrics"]["reconnects"], "{cam0_after}");
    assert!(
        cam0_after["metrics"]["uptime"].as_u64() > cam0_before["metrics"]["uptime"].as_u64(),
        "the same connection: {cam0_before} -> {cam0_after}"
    );
    assert_eq!(cam0_after["metrics"]["readers"], 2, "RTSP reader and WebRTC peer: {cam0_after}");
    let decoded_after = peer.decoded.load(Ordering::Relaxed);
    assert!(decoded_after > decoded_before + 30, "the WebRTC peer kept decoding ({decoded_before} -> {decoded_after})");
    while let Some(n) = statuses.next_notification(Duration::from_millis(10)).await {
        assert_ne!(n["params"]["device"], "cam0", "cam0 changed status: {n}");
    }

    // The RTSP reader read through it all: 14 s of 15 fps video without a break.
    let packets = tokio::task::spawn_blocking(move || packets(reader)).await.expect("join");
    assert!(packets >= 13 * 15, "the RTSP reader got {packets} packets in 14 s; log:\n{}", hub.log());

    // One recording session the whole time, its file whole.
    let stopped = client.call("stop_recording", json!({ "device": "cam0" })).await.expect("stop_recording");
    let duration = stopped["duration"].as_f64().unwrap_or(0.0);
    let elapsed = started.elapsed().as_secs_f64();
    assert!(duration > elapsed, "the recording spans the reloads ({duration} s, reloads began {elapsed} s ago)");
    let files = client.call("list_recordings", json!({})).await.expect("list_recordings");
    let files: Vec<&Value> =
        files["files"].as_array().expect("files").iter().filter(|f| f["device"] == "cam0").collect();
    assert_eq!(files.len(), 1, "one segment, no gap: {files:?}");
    let path = hub.recordings_dir().join(files[0]["filename"].as_str().unwrap());
    let (probed, ..) = common::ffprobe(&path).expect("the recording plays");
    assert!((probed - duration).abs() < 1.5, "file {probed} s, session {duration} s");
    drop(peer);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_the_watcher_and_the_rpc_apply_the_same_change() {
    let cam = TestCam::start(2);
    let base = camera_toml("cam0", &cam.url(0));
    let added = format!("{base}{}", camera_toml("extra", &cam.url(1)));
    let mut reports = Vec::new();

    // SIGHUP and the RPC, with the watcher off so only they reload.
    let hub = Camhub::start_with_server_keys("watch_config = false", &base);
    let client = hub.client("admin").await;
    let events = subscribed(&hub, &["config.reloaded"]).await;
    connected(&client, &hub, "cam0").await;
    hub.rewrite_config(&added);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ids(&client.call("get_camera_list", json!({})).await.unwrap()), ["cam0"], "no watcher, no reload");
    send_signal(hub.pid(), 1); // SIGHUP
    reports.push(event(&events, "config.reloaded", &hub).await);
    connected(&client, &hub, "extra").await;
    hub.rewrite_config(&base);
    let r = client.call("reload_config", json!({})).await.expect("reload_config");
    assert_eq!(r["cameras_removed"], json!(["extra"]), "{r}");
    reports.push(event(&events, "config.reloaded", &hub).await);
    hub.rewrite_config(&added);
    client.call("reload_config", json!({})).await.expect("reload_config");
    reports.push(event(&events, "config.reloaded", &hub).await);
    drop(hub);

    // The watcher, with the config a symlink swapped to a new target (as deploy tools do).
    let hub = Camhub::start(&base);
    let client = hub.client("admin").await;
    let events = subscribed(&hub, &["config.reloaded"]).await;
    connected(&client, &hub, "cam0").await;
    let text = std::fs::read_to_string(hub.config_path()).unwrap().replace(&base, &added);
    let target = hub.dir.join("release-2.toml");
    std::fs::write(&target, text).unwrap();
    let link = hub.dir.join(".camhub.toml.link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::rename(&link, hub.config_path()).unwrap();
    reports.push(event(&events, "config.reloaded", &hub).await);
    connected(&client, &hub, "extra").await;

    let triggers: Vec<&str> = reports.iter().map(|r| r["trigger"].as_str().unwrap()).collect();
    assert_eq!(triggers, ["signal", "api", "api", "watcher"], "{reports:?}");
    for r in [&reports[0], &reports[2], &reports[3]] {
        assert_eq!(r["added"], json!(["extra"]), "{r}");
        assert_eq!(r["removed"], json!([]), "{r}");
        assert_eq!(r["restart_required"], json!([]), "{r}");
    }
    assert_eq!(reports[1]["removed"], json!(["extra"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_shows_what_a_reload_would_change_and_refuses_a_bad_file_with_one_line() {
    let cam = TestCam::start(2);
    let base = camera_toml("cam0", &cam.url(0));
    let hub = Camhub::start_with_server_keys("watch_config = false", &base);
    let client = hub.client("admin").await;
    connected(&client, &hub, "cam0").await;

    // A candidate beside the running file: its difference, and nothing applied.
    let candidate = hub.dir.join("candidate.toml");
    let running = std::fs::read_to_string(hub.config_path()).unwrap();
    let text = running.replace(&base, &camera_toml("cam9", &cam.url(1))) + "[log]\nlevel = \"debug\"\n";
    std::fs::write(&candidate, &text).unwrap();
    let out = Command::new(BIN).args(["check-config", "--config"]).arg(&candidate).output().expect("check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("add camera cam9"), "{stdout}");
    assert!(stdout.contains("remove camera cam0"), "{stdout}");
    assert!(stdout.contains("apply log.level at once"), "{stdout}");
    assert_eq!(ids(&client.call("get_camera_list", json!({})).await.unwrap()), ["cam0"], "nothing applied");

    // The running file itself: no change.
    let out = Command::new(BIN).args(["check-config", "--config"]).arg(hub.config_path()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("would change nothing"), "{out:?}");

    // A bad file: exit 64 and one line naming the key.
    std::fs::write(&candidate, format!("{running}[snapshots]\nquality = 500\n")).unwrap();
    let out = Command::new(BIN).args(["check-config", "--config"]).arg(&candidate).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("snapshots.quality"), "{stderr}");
}
