//! Local V4L2 cameras against real devices and real hot-plug: the kernel's vivid and v4l2loopback drivers and a real
//! udevd, inside the VM rig (`scripts/vm/test-v4l2.sh` boots Debian's kernel under qemu and runs this file there).
//! The device tests are ignored on a plain `cargo test` (a host has neither devices nor udevd) and fail with a clear
//! message when run without devices; they never pass without one. The host test checks camhub on such a machine.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Camhub, Client, TestCam, camera_toml, discoverer_duration};
use serde_json::{Value, json};

const NEEDS_DEVICES: &str = "needs real V4L2 devices and udevd: run scripts/vm/test-v4l2.sh";
/// Generous: the VM emulates its CPU (TCG), so starting a pipeline and encoding the first GOP takes seconds.
const CONNECT: Duration = Duration::from_secs(60);
/// The camera under test is told the size so snapshots and status can be checked against it.
/// The stall watchdog is relaxed too: under emulation a snapshot's decoding can hold the only CPU for seconds, and
/// unplugs are seen through udev, not through missing frames.
const V4L2_CONFIG: &str = "[v4l2]\nmax_width = 640\nmax_height = 480\nmax_fps = 15\n\
                           [monitor]\nconnect_timeout_ms = 30000\nstall_timeout_ms = 6000\n";
const LOOPBACK_NODE: &str = "/dev/video10";
const LOOPBACK_LABEL: &str = "camhub-loopback";

/// A V4L2 node as the kernel describes it, read with v4l2-ctl (the oracle camhub is compared with).
#[derive(Debug, Clone)]
struct Node {
    path: PathBuf,
    card: String,
    bus: String,
    device_caps: u32,
}

impl Node {
    fn is_video_capture(&self) -> bool {
        const CAPTURE: u32 = 0x1;
        const CAPTURE_MPLANE: u32 = 0x1000;
        const TOUCH: u32 = 0x1000_0000;
        self.device_caps & (CAPTURE | CAPTURE_MPLANE) != 0 && self.device_caps & TOUCH == 0
    }
}

fn v4l2_ctl(args: &[&str]) -> String {
    let out = Command::new("v4l2-ctl").args(args).output().expect("v4l2-ctl runs (package v4l-utils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `/dev/video*` node with what `v4l2-ctl --info` says of it.
fn nodes() -> Vec<Node> {
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir("/dev").map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    paths.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("video")));
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let info = v4l2_ctl(&["-d", path.to_str()?, "--info"]);
            let field = |name: &str| {
                info.lines().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim_start_matches([' ', ':']).trim()))
            };
            let device_caps = u32::from_str_radix(field("Device Caps")?.trim_start_matches("0x"), 16).ok()?;
            Some(Node { card: field("Card type")?.into(), bus: field("Bus info")?.into(), device_caps, path })
        })
        .collect()
}

fn require_devices() -> Vec<Node> {
    let nodes = nodes();
    assert!(
        nodes.iter().any(Node::is_video_capture),
        "no V4L2 capture device on this machine: this test {NEEDS_DEVICES} (nodes seen: {nodes:?})"
    );
    nodes
}

/// `v4l2-ctl --list-formats-ext` as (format, WxH) -> frame rates rounded to 0.01.
fn formats_ext(node: &Path) -> BTreeMap<(String, String), Vec<String>> {
    let text = v4l2_ctl(&["-d", node.to_str().expect("utf-8 path"), "--list-formats-ext"]);
    let mut modes = BTreeMap::new();
    let (mut format, mut size) = (None::<String>, None::<String>);
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.split_once("]: '").map(|(_, r)| r) {
            format = rest.split_once('\'').map(|(f, _)| f.trim_end().to_owned());
        } else if let Some(rest) = line.strip_prefix("Size: Discrete ") {
            size = Some(rest.trim().to_owned());
            modes.insert((format.clone().expect("a format before its sizes"), rest.trim().to_owned()), Vec::new());
        } else if let Some(fps) = line.split_once('(').and_then(|(_, r)| r.strip_suffix(" fps)")) {
            let key = (format.clone().expect("format"), size.clone().expect("size"));
            let fps: f64 = fps.parse().expect("fps number");
            modes.get_mut(&key).expect("size line first").push(format!("{:.2}", fps));
        }
    }
    for rates in modes.values_mut() {
        rates.sort_by(|a, b| b.parse::<f64>().unwrap_or(0.0).total_cmp(&a.parse::<f64>().unwrap_or(0.0)));
        rates.dedup();
    }
    modes
}

fn sysfs_write(path: &str, value: &str) -> SystemTime {
    let at = SystemTime::now();
    std::fs::write(path, value).unwrap_or_else(|e| panic!("write {value:?} to {path}: {e}"));
    at
}

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd).args(args).status().is_ok_and(|s| s.success())
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64()
}

/// Figures for the evidence report: printed, and appended to `$CAMHUB_EVIDENCE_DIR/v4l2-figures.txt` when the rig
/// provides a writable directory.
fn figure(name: &str, value: impl std::fmt::Display) {
    println!("FIGURE {name} = {value}");
    if let Some(dir) = std::env::var_os("CAMHUB_EVIDENCE_DIR") {
        use std::io::Write;
        let path = Path::new(&dir).join("v4l2-figures.txt");
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{name} = {value}");
        }
    }
}

/// camhub with a data dir on the guest's tmpfs (a small free-space floor, as the disk is small).
fn camhub(extra: &str) -> (tempfile::TempDir, Camhub) {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = Camhub::start_at(dir.path(), "min_free_mb = 16", &format!("{V4L2_CONFIG}{extra}"));
    (dir, hub)
}

async fn v4l2_cameras(client: &Client) -> Vec<Value> {
    let list = client.call("get_camera_list", json!({})).await.expect("get_camera_list");
    let mut out = Vec::new();
    for c in list["cameras"].as_array().expect("cameras").iter() {
        let status = client.call("get_camera_status", json!({ "device": c["device"] })).await.expect("status");
        if status["source_type"] == "v4l2" {
            out.push(status);
        }
    }
    out
}

/// The id of the V4L2 camera whose name (the card name, by default) is `card`, waiting for it to appear.
async fn camera_named(client: &Client, card: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(c) = v4l2_cameras(client).await.into_iter().find(|c| c["name"] == card) {
            return c["device"].as_str().expect("device id").to_owned();
        }
        assert!(Instant::now() < deadline, "no V4L2 camera named {card:?} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_connected(hub: &Camhub, client: &Client, id: &str) -> Value {
    client
        .wait_status(id, CONNECT, |s| s["status"] == "CONNECTED")
        .await
        .unwrap_or_else(|| panic!("{id} never connected; log:\n{}", hub.log()))
}

/// Feeds the loopback device with a live test picture (320x240 YUYV, 15 fps) through GStreamer's v4l2sink.
fn feed_loopback() -> Child {
    Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "is-live=true",
            "pattern=ball",
            "!",
            "video/x-raw,format=YUY2,width=320,height=240,framerate=15/1",
            "!",
            "v4l2sink",
            &format!("device={LOOPBACK_NODE}"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0 runs")
}

/// Pre-encoded frames written to the loopback device one by one, as a camera that sends MJPEG or H.264 would deliver
/// them (GStreamer's v4l2sink cannot negotiate compressed formats with v4l2loopback, so the frames are made by
/// GStreamer and written here through V4L2's write() I/O).
struct EncodedFeed {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EncodedFeed {
    fn start(fourcc: &str) -> EncodedFeed {
        use std::io::Write;
        use v4l::video::Output;
        let dir = tempfile::tempdir().expect("temp dir");
        let encoder = match fourcc {
            "MJPG" => "jpegenc",
            "H264" => {
                "x264enc tune=zerolatency key-int-max=15 ! \
                 video/x-h264,stream-format=byte-stream,alignment=au,profile=constrained-baseline"
            }
            other => panic!("no encoder for {other}"),
        };
        let pipeline = format!(
            "gst-launch-1.0 -q videotestsrc num-buffers=45 pattern=ball ! \
             video/x-raw,width=320,height=240,framerate=15/1 ! {encoder} ! multifilesink location={}/f%03d",
            dir.path().display()
        );
        assert!(run("sh", &["-c", &pipeline]), "encoding frames: {pipeline}");
        let mut names: Vec<PathBuf> =
            std::fs::read_dir(dir.path()).expect("frames").filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        let frames: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).expect("frame")).collect();
        assert!(frames.len() >= 30, "{} frames encoded", frames.len());
        let mut device = v4l::Device::with_path(LOOPBACK_NODE).expect("open the loopback device for writing");
        let mut format = v4l::Format::new(320, 240, v4l::FourCC::new(fourcc.as_bytes().try_into().expect("4 bytes")));
        format.size = frames.iter().map(Vec::len).max().unwrap_or(0) as u32;
        Output::set_format(&device, &format).expect("set the loopback device's output format");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for frame in &frames {
                    if device.write_all(frame).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(66));
                }
            }
        });
        EncodedFeed { stop, thread: Some(thread) }
    }
}

impl Drop for EncodedFeed {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Unloads and loads v4l2loopback (nothing may hold the device open), so its next writer can pick any format.
fn reload_loopback() {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(LOOPBACK_NODE).exists() && !run("rmmod", &["v4l2loopback"]) {
        assert!(Instant::now() < deadline, "rmmod v4l2loopback kept failing");
        std::thread::sleep(Duration::from_millis(100));
    }
    let label = format!("card_label={LOOPBACK_LABEL}");
    assert!(run("modprobe", &["v4l2loopback", "devices=1", "video_nr=10", &label]), "modprobe v4l2loopback");
    let _ = Command::new("udevadm").args(["settle", "--timeout=10"]).status();
}

/// The host's case (CI has no udevd and no device): camhub starts, lists no local camera and serves network cameras
/// as before. On a machine that does have capture devices (a developer's laptop) the same test expects exactly one
/// local camera per physical capture device next to the network camera, so it checks something real either way.
#[tokio::test]
async fn on_a_machine_without_udev_devices_camhub_serves_network_cameras_as_before() {
    let nodes = nodes();
    let devices: BTreeSet<(String, String)> =
        nodes.iter().filter(|n| n.is_video_capture()).map(|n| (n.bus.clone(), n.card.clone())).collect();
    let cam = TestCam::start(1);
    let hub = Camhub::start(&camera_toml("net", &cam.url(0)));
    let client = hub.client("viewer").await;
    client.wait_status("net", Duration::from_secs(20), |s| s["status"] == "CONNECTED").await.expect("net connects");
    let deadline = Instant::now() + Duration::from_secs(10);
    let local = loop {
        let local = v4l2_cameras(&client).await;
        if local.len() >= devices.len() || Instant::now() > deadline {
            break local;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(local.len(), devices.len(), "one local camera per capture device ({devices:?}): {local:?}");
    let list = client.call("get_camera_list", json!({})).await.expect("list");
    let ids: Vec<&str> =
        list["cameras"].as_array().expect("cameras").iter().filter_map(|c| c["device"].as_str()).collect();
    assert!(ids.contains(&"net") && ids.len() == devices.len() + 1, "the network camera and the local ones: {ids:?}");
    let log = hub.log();
    assert!(log.contains("V4L2 discovery"), "discovery reports itself once:\n{log}");
    if devices.is_empty() {
        assert!(!log.contains("ERROR"), "no errors on a machine without devices:\n{log}");
    }
}

#[tokio::test]
#[ignore = "needs real V4L2 devices and udevd: run scripts/vm/test-v4l2.sh"]
async fn discovery_lists_exactly_the_capture_devices_with_their_modes() {
    let nodes = require_devices();
    let captures: Vec<&Node> = nodes.iter().filter(|n| n.is_video_capture()).collect();
    let devices: BTreeSet<(&str, &str)> = captures.iter().map(|n| (n.bus.as_str(), n.card.as_str())).collect();
    println!("capture nodes: {captures:?}");
    let (_dir, hub) = camhub("");
    let client = hub.client("viewer").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let cameras = loop {
        let cameras = v4l2_cameras(&client).await;
        if cameras.len() >= devices.len() || Instant::now() > deadline {
            break cameras;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut names: Vec<&str> = cameras.iter().filter_map(|c| c["name"].as_str()).collect();
    names.sort();
    let mut expected: Vec<&str> = devices.iter().map(|(_, card)| *card).collect();
    expected.sort();
    assert_eq!(names, expected, "one camera per capture device, none for output/meta/vbi/radio/sdr/touch nodes");
    let mut ids: Vec<&str> = cameras.iter().filter_map(|c| c["device"].as_str()).collect();
    ids.sort();
    let want: Vec<String> = (0..ids.len()).map(|n| format!("camera{n}")).collect();
    assert_eq!(ids, want, "V4L2 cameras are camera0, camera1, ...");
    let system = client.call("get_system_status", json!({})).await.expect("system status");
    assert_eq!(system["discovery_active"], true, "{system}");
    let body = serde_json::to_string(&cameras).expect("json");
    assert!(!body.contains("/dev/"), "device paths never appear in responses: {body}");

    // vivid offers dozens of formats at several sizes: camhub reports exactly what v4l2-ctl lists.
    let vivid = captures.iter().find(|n| n.card == "vivid").expect("the vivid capture node");
    let id = camera_named(&client, "vivid", Duration::from_secs(5)).await;
    let caps = client.call("get_camera_capabilities", json!({ "device": id })).await.expect("capabilities");
    let mut reported = BTreeMap::new();
    for m in caps["modes"].as_array().expect("modes") {
        let rates: Vec<String> =
            m["fps"].as_array().expect("fps").iter().map(|f| format!("{:.2}", f.as_f64().expect("number"))).collect();
        reported.insert(
            (m["format"].as_str().expect("format").to_owned(), m["resolution"].as_str().expect("res").to_owned()),
            rates,
        );
    }
    let oracle = formats_ext(&vivid.path);
    assert!(oracle.len() > 20, "vivid lists many modes: {oracle:?}");
    assert_eq!(reported, oracle, "get_camera_capabilities.modes equals v4l2-ctl --list-formats-ext");
    let formats: BTreeSet<&str> =
        caps["formats"].as_array().expect("formats").iter().filter_map(Value::as_str).collect();
    let oracle_formats: BTreeSet<&str> = oracle.keys().map(|(f, _)| f.as_str()).collect();
    assert_eq!(formats, oracle_formats);
    figure("vivid_modes", oracle.len());
    figure("vivid_formats", oracle_formats.len());

    let status = wait_connected(&hub, &client, &id).await;
    assert_eq!(status["mode"]["resolution"], "640x480", "the best mode within the 640x480 ceiling: {status}");
    assert_eq!(status["mode"]["encoding"], "encoded");
    assert_eq!(status["resolution"], "640x480");
    let caps = client.call("get_camera_capabilities", json!({ "device": id })).await.expect("capabilities");
    assert_eq!(caps["validation_status"], "CONFIRMED");
}

#[tokio::test]
#[ignore = "needs real V4L2 devices and udevd: run scripts/vm/test-v4l2.sh"]
async fn a_vivid_camera_records_snapshots_and_survives_unbind_and_bind() {
    require_devices();
    let (dir, hub) = camhub("");
    let client = hub.client("operator").await;
    let id = camera_named(&client, "vivid", Duration::from_secs(20)).await;
    let status = wait_connected(&hub, &client, &id).await;
    let mode = status["mode"].clone();
    println!("streaming {mode}");

    assert_eq!(snapshot_size(&client, dir.path(), &id).await, "640,480", "a snapshot has the camera's size");

    // Published like any camera: FFmpeg reads it from camhub's RTSP server, H.264 at the camera's size.
    assert_eq!(status["streams"]["rtsp"], hub.rtsp_url(&id), "{status}");
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name,width,height"])
        .args(["-of", "csv=p=0", "-rw_timeout", "30000000"])
        .arg(hub.rtsp_url(&id))
        .output()
        .expect("ffprobe runs");
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        "h264,640,480",
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let started = client.call("start_recording", json!({ "device": id })).await.expect("start recording");
    assert_eq!(started["status"], "RECORDING");
    tokio::time::sleep(Duration::from_secs(8)).await;

    // Unplug: the kernel removes every vivid node; udev tells camhub.
    let unplugged_at = sysfs_write("/sys/bus/platform/drivers/vivid/unbind", "vivid.0");
    let seen = status_after(&hub, &client, &id, "DISCONNECTED", unplugged_at, Duration::from_secs(10)).await;
    let disconnect_ms = (seen - unix(unplugged_at)) * 1000.0;
    figure("unbind_to_disconnected_ms", format!("{disconnect_ms:.0}"));
    assert!(disconnect_ms < 1000.0, "DISCONNECTED {disconnect_ms:.0} ms after the unplug");
    let listed = client.call("get_camera_status", json!({ "device": id })).await.expect("still listed");
    assert_eq!(listed["status"], "DISCONNECTED", "an unplugged camera stays listed under its id; log:\n{}", hub.log());

    // The segment that was open when the camera went away is closed and playable.
    let closed = wait_segments(&client, 1, Duration::from_secs(15)).await;
    let first = dir.path().join("recordings").join(closed[0]["filename"].as_str().expect("filename"));
    let duration = discoverer_duration(&first).unwrap_or_else(|e| panic!("{} does not play: {e}", first.display()));
    assert!(duration > 3.0, "the closed segment holds the seconds before the unplug: {duration}");

    // Plug back: same id, CONNECTED, and the same recording goes on.
    let plugged_at = sysfs_write("/sys/bus/platform/drivers/vivid/bind", "vivid.0");
    let seen = status_after(&hub, &client, &id, "CONNECTED", plugged_at, CONNECT).await;
    figure("bind_to_connected_ms", format!("{:.0}", (seen - unix(plugged_at)) * 1000.0));
    assert_eq!(camera_named(&client, "vivid", Duration::from_secs(5)).await, id, "same id after replug");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stopped = client.call("stop_recording", json!({ "device": id })).await.expect("stop recording");
    assert_eq!(stopped["status"], "STOPPED");
    let segments = wait_segments(&client, 2, Duration::from_secs(15)).await;
    for s in &segments {
        let path = dir.path().join("recordings").join(s["filename"].as_str().expect("filename"));
        let d = discoverer_duration(&path).unwrap_or_else(|e| panic!("{} does not play: {e}", path.display()));
        assert!(d > 1.0, "{} plays for {d} s", path.display());
    }
}

/// Takes a snapshot and returns its size as ffprobe reads it from the file (`W,H`).
async fn snapshot_size(client: &Client, data_dir: &Path, id: &str) -> String {
    let snap = client.call("take_snapshot", json!({ "device": id })).await.expect("snapshot");
    assert_eq!(snap["status"], "SUCCESS");
    let jpeg = data_dir.join("snapshots").join(snap["filename"].as_str().expect("filename"));
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0"])
        .arg(&jpeg)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&probe.stdout).trim().to_owned()
}

/// Waits for the `camera_status_update` to `status` that reaches the client after `since`; returns when (Unix s).
async fn status_after(
    hub: &Camhub,
    client: &Client,
    id: &str,
    status: &str,
    since: SystemTime,
    timeout: Duration,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = client
            .wait_notification_timed("camera_status_update", left, |p| p["device"] == id && p["status"] == status)
            .await;
        match seen {
            Some((_, at)) if at >= unix(since) => return at,
            Some(_) => continue,
            None => panic!("no {status} notification for {id} within {timeout:?}; log:\n{}", hub.log()),
        }
    }
}

/// Waits until the index lists at least `n` recordings; returns them, oldest first.
async fn wait_segments(client: &Client, n: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = client.call("list_recordings", json!({})).await.expect("list_recordings");
        let mut files = list["files"].as_array().expect("files").clone();
        if files.len() >= n {
            files.reverse();
            return files;
        }
        assert!(Instant::now() < deadline, "fewer than {n} recordings indexed: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs real V4L2 devices and udevd: run scripts/vm/test-v4l2.sh"]
async fn a_loopback_device_fed_by_gstreamer_is_a_camera_that_survives_rmmod_and_modprobe() {
    let nodes = require_devices();
    assert!(
        nodes.iter().any(|n| n.path == Path::new(LOOPBACK_NODE)),
        "no v4l2loopback device at {LOOPBACK_NODE}: the rig loads v4l2loopback video_nr=10 card_label={LOOPBACK_LABEL}"
    );
    let (_dir, hub) = camhub("");
    let client = hub.client("viewer").await;
    let vivid = camera_named(&client, "vivid", Duration::from_secs(20)).await;
    let id = camera_named(&client, LOOPBACK_LABEL, Duration::from_secs(20)).await;
    assert_ne!(id, vivid, "the loopback device is a second camera");

    let mut writer = feed_loopback();
    let status = wait_connected(&hub, &client, &id).await;
    assert_eq!(status["resolution"], "320x240", "{status}");
    assert_eq!(status["mode"]["format"], "YUYV", "{status}");

    // The writer stops: no more frames, the camera is DISCONNECTED (stall) and camhub lets go between attempts, so
    // the module can be removed; its nodes go away through real uevents.
    let _ = writer.kill();
    let _ = writer.wait();
    client.wait_status(&id, Duration::from_secs(20), |s| s["status"] != "CONNECTED").await.expect("disconnects");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run("rmmod", &["v4l2loopback"]) {
        assert!(Instant::now() < deadline, "rmmod v4l2loopback kept failing; log:\n{}", hub.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!Path::new(LOOPBACK_NODE).exists(), "the node went away with the module");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let gone = client.call("get_camera_status", json!({ "device": id })).await.expect("still listed");
    assert_eq!(gone["status"], "DISCONNECTED", "{gone}");

    // modprobe brings the node back: the same camera, fed again, connects under its id.
    let label = format!("card_label={LOOPBACK_LABEL}");
    assert!(run("modprobe", &["v4l2loopback", "devices=1", "video_nr=10", &label]), "modprobe v4l2loopback");
    let _ = Command::new("udevadm").args(["settle", "--timeout=10"]).status();
    let mut writer = feed_loopback();
    let status = wait_connected(&hub, &client, &id).await;
    assert_eq!(status["device"], id.as_str());
    assert_eq!(camera_named(&client, LOOPBACK_LABEL, Duration::from_secs(5)).await, id, "same id after modprobe");
    let ids: Vec<String> =
        v4l2_cameras(&client).await.iter().filter_map(|c| c["device"].as_str().map(String::from)).collect();
    assert_eq!(ids.len(), 2, "still two V4L2 cameras, no new id: {ids:?}");
    let _ = writer.kill();
    let _ = writer.wait();
}

#[tokio::test]
#[ignore = "needs real V4L2 devices and udevd: run scripts/vm/test-v4l2.sh"]
async fn a_device_keeps_its_id_across_restarts() {
    require_devices();
    // The first life sees only the loopback device (vivid unbound), so it becomes camera0. In the second life both
    // are present and vivid is enumerated first: only the stored identity keeps the loopback device camera0.
    sysfs_write("/sys/bus/platform/drivers/vivid/unbind", "vivid.0");
    let _ = Command::new("udevadm").args(["settle", "--timeout=10"]).status();
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = V4L2_CONFIG;
    let mut hub = Camhub::start_at(dir.path(), "min_free_mb = 16", extra);
    let client = hub.client("viewer").await;
    let loopback = camera_named(&client, LOOPBACK_LABEL, Duration::from_secs(20)).await;
    assert_eq!(loopback, "camera0", "the only device of a fresh database");
    drop(client);
    hub.stop();
    sysfs_write("/sys/bus/platform/drivers/vivid/bind", "vivid.0");
    let _ = Command::new("udevadm").args(["settle", "--timeout=10"]).status();
    hub.start_again(extra);
    let client = hub.client("viewer").await;
    assert_eq!(camera_named(&client, LOOPBACK_LABEL, Duration::from_secs(20)).await, loopback, "same id after restart");
    assert_eq!(camera_named(&client, "vivid", Duration::from_secs(20)).await, "camera1", "the next free id");
}

#[tokio::test]
#[ignore = "needs real V4L2 devices and udevd: run scripts/vm/test-v4l2.sh"]
async fn an_h264_device_passes_through_and_an_mjpeg_device_is_encoded() {
    require_devices();
    for (fourcc, encoding) in [("H264", "passthrough"), ("MJPG", "encoded")] {
        reload_loopback();
        let feed = EncodedFeed::start(fourcc);
        let (dir, hub) = camhub("");
        let client = hub.client("operator").await;
        let id = camera_named(&client, LOOPBACK_LABEL, Duration::from_secs(20)).await;
        let status = wait_connected(&hub, &client, &id).await;
        assert_eq!(status["mode"]["format"], fourcc, "{status}");
        assert_eq!(status["mode"]["encoding"], encoding, "{status}");
        assert_eq!(status["resolution"], "320x240", "{status}");
        assert_eq!(snapshot_size(&client, dir.path(), &id).await, "320,240", "{fourcc} snapshot size");
        let log = hub.log();
        drop(client);
        drop(hub);
        drop(feed);
        assert!(!log.contains(" ERROR "), "{fourcc}: errors in the log:\n{log}");
    }
}

#[tokio::test]
#[ignore = "needs real V4L2 devices and udevd: run scripts/vm/test-v4l2.sh"]
async fn the_config_picks_a_cameras_name_mode_and_continuous_recording() {
    require_devices();
    // A fresh database gives the first device found (vivid, /dev/video0 before /dev/video10) camera0.
    let config = "[[v4l2.cameras]]\nid = \"camera0\"\nname = \"Desk\"\nformat = \"YUYV\"\nwidth = 320\nheight = 180\n\
                  fps = 10\nbitrate_kbps = 300\nrecord = \"always\"\n";
    let (_dir, hub) = camhub(config);
    let client = hub.client("operator").await;
    let id = camera_named(&client, "Desk", Duration::from_secs(20)).await;
    assert_eq!(id, "camera0");
    let status = wait_connected(&hub, &client, &id).await;
    assert_eq!(status["mode"]["format"], "YUYV", "{status}");
    assert_eq!(status["mode"]["resolution"], "320x180", "{status}");
    assert_eq!(status["mode"]["fps"], 10.0, "{status}");
    let again = client.call("start_recording", json!({ "device": id })).await.expect_err("already recording");
    assert_eq!(again["code"], -32020, "record = \"always\" started a recording: {again}");
}
