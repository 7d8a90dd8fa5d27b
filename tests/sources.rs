//! Every way a camera reaches camhub besides RTSP pulls, end to end with real publishers: FFmpeg and GStreamer's
//! `rtmp2sink` pushing RTMP with stream keys made through the API, keys refused when wrong or revoked, five publishers
//! at once while one is killed and others send garbage, and a clip that loops without a disconnect. Every stream is
//! recorded (files read back by ffprobe) and read from camhub's RTSP republish.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Camhub, Client};
use serde_json::{Value, json};

const CONNECT: Duration = Duration::from_secs(30);

/// A publisher process, killed on drop.
struct Publisher(Child);

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// FFmpeg pushing a live test pattern with a tone (H.264 + AAC in FLV) to `url` at real-time pace.
fn ffmpeg_rtmp(url: &str, size: &str) -> Publisher {
    let child = Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i", &format!("testsrc=size={size}:rate=25")])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg must be installed (scripts/install-deps.sh --test)");
    Publisher(child)
}

/// FFmpeg pushing a live test pattern (H.264 + AAC in MPEG-TS) over SRT to `url` (`srt://...?streamid=KEY`).
fn ffmpeg_srt(url: &str) -> Publisher {
    let child = Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=480x270:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-f", "mpegts", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg must be installed (scripts/install-deps.sh --test)");
    Publisher(child)
}

/// GStreamer's own RTMP client (`rtmp2sink`) pushing a live pattern.
fn gst_rtmp(url: &str) -> Publisher {
    let child = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "is-live=true",
            "pattern=ball",
            "!",
            "video/x-raw,width=320,height=240,framerate=15/1",
        ])
        .args(["!", "x264enc", "tune=zerolatency", "key-int-max=15", "speed-preset=ultrafast", "!", "h264parse"])
        .args(["!", "flvmux", "streamable=true", "!", "rtmp2sink", &format!("location={url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gst-launch-1.0 must be installed (scripts/install-deps.sh --test)");
    Publisher(child)
}

/// The ports camhub's RTMP and SRT listeners bound (the tests' configs let the system pick them).
async fn push_ports(client: &Client) -> (u16, u16) {
    let listed = client.call("list_stream_keys", json!({})).await.expect("list_stream_keys");
    let port = |url: &Value| -> u16 {
        let url = url.as_str().unwrap_or_else(|| panic!("a push listener is off: {listed}"));
        let after_host = url.rsplit_once(':').expect("a port").1;
        after_host.split(['/', '?']).next().and_then(|p| p.parse().ok()).expect("a port number")
    };
    (port(&listed["rtmp_url"]), port(&listed["srt_url"]))
}

async fn create_key(client: &Client, name: &str) -> (String, String, String) {
    let created = client.call("create_stream_key", json!({ "name": name })).await.expect("create_stream_key");
    let device = created["device"].as_str().expect("device").to_owned();
    let key = created["stream_key"].as_str().expect("stream_key").to_owned();
    let url = created["rtmp_url"].as_str().expect("rtmp_url").to_owned();
    assert!(url.ends_with(&key), "the RTMP URL ends with the key: {created}");
    (device, key, url)
}

async fn connected(client: &Client, hub: &Camhub, device: &str) -> Value {
    let s = client.wait_status(device, CONNECT, |s| s["status"] == "CONNECTED").await;
    s.unwrap_or_else(|| panic!("{device} did not connect; log:\n{}", hub.log()))
}

/// Records `device` for `seconds` and returns the recording's path once it is indexed.
async fn record(client: &Client, hub: &Camhub, device: &str, seconds: u64) -> std::path::PathBuf {
    let started =
        client.call("start_recording", json!({ "device": device, "duration": seconds })).await.expect("start");
    let name = started["filename"].as_str().expect("filename").to_owned();
    let deadline = Instant::now() + Duration::from_secs(seconds + 20);
    while Instant::now() < deadline {
        if let Ok(info) = client.call("get_recording_info", json!({ "filename": name })).await
            && info["duration"].as_f64().unwrap_or(0.0) > 0.0
        {
            return hub.recordings_dir().join(&name);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("recording {name} was not indexed; log:\n{}", hub.log());
}

/// A recording has the publisher's picture and sound: one H.264 and one AAC stream, of lengths within 0.5 s of each
/// other, starting within 100 ms of each other.
fn assert_picture_and_sound(path: &Path) {
    let streams = common::ffprobe_streams(path).expect("ffprobe the recording");
    let video = streams.iter().find(|s| s.kind == "video").unwrap_or_else(|| panic!("no video: {streams:?}"));
    let audio = streams.iter().find(|s| s.kind == "audio").unwrap_or_else(|| panic!("no sound: {streams:?}"));
    assert_eq!((video.codec.as_str(), audio.codec.as_str()), ("h264", "aac"), "{streams:?}");
    assert!((video.duration - audio.duration).abs() < 0.5, "{}: lengths {streams:?}", path.display());
    assert!((video.start - audio.start).abs() < 0.1, "{}: starts {streams:?}", path.display());
}

/// The streams ffprobe finds at camhub's RTSP republish of `device`: (codec, width, height) of each.
fn rtsp_streams(hub: &Camhub, device: &str) -> Vec<(String, u64, u64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name,width,height"])
        .args(["-of", "json", &hub.rtsp_url(device)])
        .output()
        .expect("run ffprobe");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let codec = s["codec_name"].as_str().unwrap_or("").to_owned();
                    (codec, s["width"].as_u64().unwrap_or(0), s["height"].as_u64().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn rtmp_publishers_from_ffmpeg_and_gstreamer_are_recorded_and_republished() {
    let hub = Camhub::start("");
    let client = hub.client("operator").await;
    let (drone, _, drone_url) = create_key(&client, "Drone 1").await;
    let (obs, _, obs_url) = create_key(&client, "OBS").await;
    assert_eq!(drone, "drone-1");
    let before = client.call("get_camera_status", json!({ "device": drone })).await.expect("status");
    assert_eq!(before["status"], "DISCONNECTED", "no publisher yet: {before}");
    assert_eq!(before["source_type"], "push");

    let _ffmpeg = ffmpeg_rtmp(&drone_url, "640x360");
    let _gst = gst_rtmp(&obs_url);
    for (device, size) in [(&drone, "640x360"), (&obs, "320x240")] {
        let s = connected(&client, &hub, device).await;
        assert_eq!(s["source_type"], "rtmp", "{s}");
        assert_eq!(s["resolution"], size, "{s}");
    }
    let keys = client.call("list_stream_keys", json!({})).await.expect("list_stream_keys");
    let listed = keys["keys"].as_array().expect("keys");
    assert_eq!(listed.len(), 2, "{keys}");
    assert!(listed.iter().all(|k| k["publishing"] == true && k["protocol"] == "rtmp"), "{keys}");
    assert!(listed.iter().all(|k| k["key_prefix"].as_str().is_some_and(|p| p.len() < 12)), "prefixes only: {keys}");

    for (device, width, height) in [(&drone, 640, 360), (&obs, 320, 240)] {
        let path = record(&client, &hub, device, 3).await;
        if device == &drone {
            assert_picture_and_sound(&path); // FFmpeg pushes AAC beside the picture; rtmp2sink here pushes none
        }
        let (duration, w, h, codec) = common::ffprobe(&path).expect("ffprobe the recording");
        assert_eq!((w, h, codec.as_str()), (width, height, "h264"), "{}", path.display());
        assert!(duration >= 2.5, "{}: {duration} s", path.display());
        common::decodes_cleanly(&path).expect("the recording decodes");
        let streams = rtsp_streams(&hub, device);
        assert!(
            streams.iter().any(|s| s == &("h264".to_owned(), width as u64, height as u64)),
            "camhub's RTSP republish of {device}: {streams:?}"
        );
        assert_eq!(streams.iter().any(|s| s.0 == "aac"), device == &drone, "sound republished: {streams:?}");
    }
    let log = hub.log();
    assert!(!log.contains("sk_"), "a stream key reached the log");
}

#[tokio::test]
async fn nginx_rtmp_relays_a_publisher_to_camhub() {
    let hub = Camhub::start("");
    let client = hub.client("operator").await;
    let (device, key, _) = create_key(&client, "relayed").await;
    let module = Path::new("/usr/lib/nginx/modules/ngx_rtmp_module.so");
    assert!(
        module.exists(),
        "nginx-rtmp is missing: scripts/install-deps.sh --test installs nginx and libnginx-mod-rtmp"
    );
    let port = common::free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "load_module {};\ndaemon off;\nmaster_process off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log info;\n\
             events {{}}\nrtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; record off; \
             push rtmp://127.0.0.1:{}/live/{key}; }} }} }}\n",
            module.display(),
            push_ports(&client).await.0,
            dir = dir.path().display(),
        ),
    )
    .expect("write nginx.conf");
    let _nginx = Publisher(
        Command::new("nginx")
            .args(["-c"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx must be installed (scripts/install-deps.sh --test)"),
    );
    assert!(common::wait_for_port(port, Duration::from_secs(10)), "nginx did not listen");
    let _ffmpeg = ffmpeg_rtmp(&format!("rtmp://127.0.0.1:{port}/live/cam"), "320x240");
    let s = connected(&client, &hub, &device).await;
    assert_eq!((s["source_type"].as_str(), s["resolution"].as_str()), (Some("rtmp"), Some("320x240")), "{s}");
    let path = record(&client, &hub, &device, 2).await;
    common::decodes_cleanly(&path).expect("the relayed stream's recording decodes");
}

#[tokio::test]
async fn an_srt_publisher_is_recorded_and_republished_and_a_wrong_key_is_refused() {
    let hub = Camhub::start("");
    let client = hub.client("operator").await;
    let (device, key, _) = create_key(&client, "field unit").await;
    let (_, srt_port) = push_ports(&client).await;
    let mut wrong = ffmpeg_srt(&format!("srt://127.0.0.1:{srt_port}?streamid=sk_{}", "1".repeat(64)));
    let _srt = ffmpeg_srt(&format!("srt://127.0.0.1:{srt_port}?streamid={key}"));
    let s = connected(&client, &hub, &device).await;
    assert_eq!((s["source_type"].as_str(), s["resolution"].as_str()), (Some("srt"), Some("480x270")), "{s}");
    assert!(!wait_exit(&mut wrong.0, Duration::from_secs(15)).expect("refused").success(), "a wrong key is refused");
    let path = record(&client, &hub, &device, 3).await;
    let (duration, w, h, codec) = common::ffprobe(&path).expect("ffprobe");
    assert_eq!((w, h, codec.as_str()), (480, 270, "h264"));
    assert!(duration >= 2.5, "{duration}");
    common::decodes_cleanly(&path).expect("the recording decodes");
    assert_picture_and_sound(&path);
    let streams = rtsp_streams(&hub, &device);
    assert!(streams.iter().any(|s| s.0 == "h264" && s.1 == 480), "{streams:?}");
    assert!(!hub.log().contains(&key), "the stream key reached the log");
}

#[tokio::test]
async fn wrong_and_revoked_keys_are_refused_and_keys_survive_a_restart() {
    let mut hub = Camhub::start("");
    let client = hub.client("operator").await;
    let cameras_before = client.call("get_camera_list", json!({})).await.expect("list")["total"].clone();

    // A key nobody created: FFmpeg is refused at its publish request and exits with an error.
    let (rtmp_port, _) = push_ports(&client).await;
    let wrong = format!("rtmp://127.0.0.1:{rtmp_port}/live/sk_{}", "0".repeat(64));
    let mut refused = ffmpeg_rtmp(&wrong, "320x240");
    let status = wait_exit(&mut refused.0, Duration::from_secs(15)).expect("FFmpeg gives up on a refused key");
    assert!(!status.success());
    let cameras = client.call("get_camera_list", json!({})).await.expect("list")["total"].clone();
    assert_eq!(cameras, cameras_before, "a refused publisher made no camera");

    // A revoked key: refused the same way, its camera gone.
    let (device, _, url) = create_key(&client, "revoked").await;
    let revoked = client.call("revoke_stream_key", json!({ "device": device })).await.expect("revoke");
    assert_eq!(revoked["revoked"], true);
    let mut late = ffmpeg_rtmp(&url, "320x240");
    assert!(!wait_exit(&mut late.0, Duration::from_secs(15)).expect("refused").success());
    assert!(client.call("get_camera_status", json!({ "device": device })).await.is_err(), "the camera is gone");

    // Parameters and roles.
    let e = client.call("create_stream_key", json!({ "name": "" })).await.expect_err("empty name");
    assert_eq!(e["code"], -32602, "{e}");
    assert!(e["data"].to_string().contains("name"), "{e}");
    let e = client.call("revoke_stream_key", json!({ "device": "nope" })).await.expect_err("unknown");
    assert_eq!(e["code"], -32010, "{e}");
    let viewer = hub.client("viewer").await;
    let e = viewer.call("create_stream_key", json!({ "name": "v" })).await.expect_err("viewer");
    assert_eq!(e["code"], -32002, "{e}");

    // A key made before a restart still opens its camera after it.
    let (kept, key, _) = create_key(&client, "kept").await;
    drop(client);
    hub.restart("");
    let client = hub.client("operator").await;
    let (rtmp_port, _) = push_ports(&client).await;
    let _publisher = ffmpeg_rtmp(&format!("rtmp://127.0.0.1:{rtmp_port}/live/{key}"), "320x240");
    connected(&client, &hub, &kept).await;
}

#[tokio::test]
async fn five_publishers_go_on_while_one_is_killed_and_others_send_garbage() {
    let hub = Camhub::start("");
    let client = hub.client("operator").await;
    let mut publishers = Vec::new();
    let mut devices = Vec::new();
    for i in 0..5 {
        let (device, _, url) = create_key(&client, &format!("pub{i}")).await;
        publishers.push(Some(ffmpeg_rtmp(&url, "320x240")));
        devices.push(device);
    }
    for device in &devices {
        connected(&client, &hub, device).await;
    }

    // One publisher dies; a truncated and a corrupted FLV are pushed with a sixth and seventh key; raw garbage and a
    // huge chunk size hit the port.
    publishers[0] = None;
    let (bad, _, bad_url) = create_key(&client, "corrupt").await;
    let (cut, _, cut_url) = create_key(&client, "truncated").await;
    let corrupt = corrupted_flv(&hub.dir);
    // The same FLV cut at 40%, in the middle of a tag: its publisher stops mid-message.
    let truncated = hub.dir.join("truncated.flv");
    let whole = std::fs::read(&corrupt).expect("read flv");
    std::fs::write(&truncated, &whole[..whole.len() * 2 / 5]).expect("write truncated flv");
    let push_file = |file: &Path, url: &str| {
        Publisher(
            Command::new("ffmpeg")
                .args(["-v", "quiet", "-re", "-i"])
                .arg(file)
                .args(["-c", "copy", "-f", "flv", url])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("ffmpeg"),
        )
    };
    let mut corrupt_pub = push_file(&corrupt, &bad_url);
    let mut truncated_pub = push_file(&truncated, &cut_url);
    let (rtmp_port, _) = push_ports(&client).await;
    garbage(rtmp_port);
    huge_chunk(rtmp_port);
    let _ = wait_exit(&mut corrupt_pub.0, Duration::from_secs(20));
    let _ = wait_exit(&mut truncated_pub.0, Duration::from_secs(20));
    let cut_status = client.wait_status(&cut, CONNECT, |s| s["status"] != "CONNECTED").await;
    assert!(cut_status.is_some(), "the truncated publisher's camera is let go");

    let gone = client.wait_status(&devices[0], CONNECT, |s| s["status"] == "DISCONNECTED").await;
    assert!(gone.is_some(), "the killed publisher's camera is DISCONNECTED");
    let bad_status = client.call("get_camera_status", json!({ "device": bad })).await.expect("status");
    assert_ne!(bad_status["status"], "CONNECTED", "the corrupt publisher is dropped: {bad_status}");
    // The others went on all along: frames keep coming and none reconnected.
    for device in &devices[1..] {
        let first = client.call("get_camera_status", json!({ "device": device })).await.expect("status");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let later = client.call("get_camera_status", json!({ "device": device })).await.expect("status");
        assert_eq!(later["status"], "CONNECTED", "{later}");
        assert_eq!(later["metrics"]["reconnects"], 0, "{later}");
        assert!(
            later["metrics"]["frames"].as_u64() > first["metrics"]["frames"].as_u64(),
            "{device} kept receiving frames"
        );
    }
    assert!(common::http_get(hub.port, "/health/ready").is_some_and(|(c, _)| c == 200), "camhub is up");
}

#[tokio::test]
async fn a_file_camera_loops_three_times_without_a_disconnect_and_records_across_the_loops() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let clip = tmp.path().join("clip.mp4");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "2"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2"])
        .args(["-c:v", "libx264", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p", "-c:a", "aac"])
        .arg(&clip)
        .status()
        .expect("ffmpeg");
    assert!(made.success());
    let url = format!("file://{}", clip.display());
    let muted = format!("[[cameras]]\nid = \"muted\"\nurl = \"{url}\"\naudio = false\n");
    let hub = Camhub::start(&(common::camera_toml("clip", &url) + &muted));
    let client = hub.client("operator").await;
    client.call("subscribe_events", json!({ "topics": ["camera.status_change"] })).await.expect("subscribe");
    let s = connected(&client, &hub, "clip").await;
    assert_eq!(s["source_type"], "file");
    // Seven seconds of recording span three loop points of the two-second clip.
    let path = record(&client, &hub, "clip", 7).await;
    let (duration, w, h, _) = common::ffprobe(&path).expect("ffprobe");
    assert_eq!((w, h), (320, 240));
    // Seven seconds, plus the pre-roll the hub kept (up to the default five seconds).
    assert!((6.5..13.0).contains(&duration), "{}: {duration} s across the loops", path.display());
    common::decodes_cleanly(&path).expect("the recording decodes across the loop points");
    assert_picture_and_sound(&path);
    assert!(monotonic_pts(&path), "timestamps rise across the loop points");
    let disconnected = client
        .wait_notification("camera_status_update", Duration::from_millis(200), |p| p["status"] == "DISCONNECTED")
        .await;
    assert!(disconnected.is_none(), "no DISCONNECTED at the loop points: {disconnected:?}");
    let status = client.call("get_camera_status", json!({ "device": "clip" })).await.expect("status");
    assert_eq!(status["metrics"]["reconnects"], 0, "{status}");
    let streams = rtsp_streams(&hub, "clip");
    assert!(streams.iter().any(|s| s.0 == "h264") && streams.iter().any(|s| s.0 == "aac"), "{streams:?}");
    // The same clip with `audio = false`: its sound is dropped on arrival, neither recorded nor republished.
    connected(&client, &hub, "muted").await;
    let path = record(&client, &hub, "muted", 2).await;
    let kinds: Vec<String> = common::ffprobe_streams(&path).expect("ffprobe").into_iter().map(|s| s.kind).collect();
    assert_eq!(kinds, ["video"], "{}", path.display());
    let streams = rtsp_streams(&hub, "muted");
    assert!(streams.iter().all(|s| s.0 != "aac") && !streams.is_empty(), "{streams:?}");
}

/// Whether every video packet's timestamp is above the one before (ffprobe, in file order for a file without
/// B-frames).
fn monotonic_pts(path: &Path) -> bool {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    times.len() > 100 && times.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] < 0.2)
}

/// A 6-second FLV whose middle is overwritten with random bytes.
fn corrupted_flv(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("corrupt.flv");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "6"])
        .args(["-c:v", "libx264", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p", "-f", "flv"])
        .arg(&path)
        .status()
        .expect("ffmpeg");
    assert!(made.success());
    let mut bytes = std::fs::read(&path).expect("read flv");
    let mid = bytes.len() / 3;
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut bytes[mid..mid + 4096] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(&path, bytes).expect("write flv");
    path
}

/// Random bytes instead of a handshake.
fn garbage(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let junk: Vec<u8> = (0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let _ = s.write_all(&junk);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.read(&mut [0u8; 4096]);
}

/// A valid handshake, then a chunk size of 2^31-1 and a message that claims 16 MB and never comes.
fn huge_chunk(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0u8, 1536));
    s.write_all(&c0c1).expect("C0C1");
    let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
    if s.read_exact(&mut s0s1s2).is_err() {
        return;
    }
    s.write_all(&s0s1s2[1..1537]).expect("C2");
    // Set Chunk Size (type 1) on chunk stream 2, then a video message header claiming 0xFFFFFF bytes.
    let mut msg = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff];
    msg.extend([0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0]);
    msg.extend(std::iter::repeat_n(0x17u8, 64 * 1024));
    let _ = s.write_all(&msg);
    std::thread::sleep(Duration::from_millis(500));
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
