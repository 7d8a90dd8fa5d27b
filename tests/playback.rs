//! Playback by time range against real recordings of the real test camera, checked by real demuxers (ffprobe, FFmpeg):
//! a range over several segments and a real camera gap (the camera killed and started again on its port) plays for
//! the requested time within one GOP, starts on a keyframe, reports the gap, answers Range requests with the right
//! bytes; `list_recording_spans` shows the gap; an export is listed and plays; bad ranges and foreign tokens are
//! refused. Bounded: about a minute on a loaded 2-core box.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::{Camhub, TestCam, camera_toml, ffprobe, first_frame_is_key, http, http_request};
use serde_json::{Value, json};

const CONNECT: Duration = Duration::from_secs(20);
/// The test camera's GOP (15 fps, a keyframe every second).
const GOP: f64 = 1.0;

fn time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).expect("RFC 3339 time")
}

fn iso(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn secs(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// A response header's value (names are case-insensitive).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `START/PTnS` intervals of `X-Playback-Gaps`: (start, seconds).
fn gaps_of(head: &str) -> Vec<(SystemTime, f64)> {
    header(head, "x-playback-gaps")
        .map(|v| {
            v.split(',')
                .map(|g| {
                    let (start, d) = g.trim().split_once('/').unwrap_or_else(|| panic!("gap {g:?}"));
                    let d = d.strip_prefix("PT").and_then(|d| d.strip_suffix('S')).expect("PTnS");
                    (humantime::parse_rfc3339(start).expect("gap start"), d.parse().expect("seconds"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// FFmpeg decodes every frame of the file without a complaint, and its video's decode times only go forward. The
/// frames keep their own times and time base (`-fps_mode passthrough -enc_time_base -1`): a camera gap held as time
/// makes the file's frame rate variable, and FFmpeg's null output, timed at the average rate it guesses (10.4 fps for
/// a 15 fps file with a 3 s hold), puts two frames on one tick and complains (measured on such a file, whose decode
/// times ffprobe shows 1/15 s apart but at the gap).
fn plays_cleanly(path: &Path) -> Result<(), String> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-fps_mode", "passthrough", "-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .map_err(|e| format!("ffmpeg cannot run: {e}"))?;
    if !out.status.success() || !out.stderr.is_empty() {
        return Err(format!("{}: {}", path.display(), String::from_utf8_lossy(&out.stderr)));
    }
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=dts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .map_err(|e| format!("ffprobe cannot run: {e}"))?;
    let dts: Vec<f64> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    match dts.windows(2).find(|w| w[1] <= w[0]) {
        Some(w) => Err(format!("{}: decode time {} then {}", path.display(), w[0], w[1])),
        None if dts.len() < 2 => Err(format!("{}: {} video packets", path.display(), dts.len())),
        None => Ok(()),
    }
}

fn save(dir: &Path, name: &str, body: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write the body");
    path
}

#[tokio::test]
async fn a_range_across_a_camera_gap_plays_cut_at_keyframes_with_the_gap_reported() {
    let began = Instant::now();
    let mut cam = TestCam::start(1);
    let port = cam.port;
    let toml = format!("[recording]\nsegment_seconds = 2\n{}record = \"always\"\n", camera_toml("cam", &cam.url(0)));
    let hub = Camhub::start(&toml);
    let client = hub.connected_client("operator", "cam").await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    // The gap, for real: the camera dies and comes back on the same port.
    cam.kill();
    client
        .wait_status("cam", Duration::from_secs(10), |s| s["status"] != "CONNECTED")
        .await
        .unwrap_or_else(|| panic!("the camera's death was not seen; log:\n{}", hub.log()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _cam = TestCam::start_on(port, 1);
    client
        .wait_status("cam", CONNECT, |s| s["status"] == "CONNECTED")
        .await
        .unwrap_or_else(|| panic!("no reconnect; log:\n{}", hub.log()));
    tokio::time::sleep(Duration::from_secs(6)).await;

    // list_recording_spans: two spans (segments close every 2 s) and the gap between them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let s = client.call("list_recording_spans", json!({ "device": "cam" })).await.expect("spans");
        let n = s["spans"].as_array().map_or(0, Vec::len);
        if n == 2 && s["spans"][1]["duration"].as_f64().unwrap_or(0.0) >= 4.5 {
            break s;
        }
        assert!(Instant::now() < deadline, "spans never showed the gap: {s}; log:\n{}", hub.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("spans: {spans}");
    assert_eq!(spans["gaps"].as_array().map(Vec::len), Some(1), "{spans}");
    let (first, second, gap) = (&spans["spans"][0], &spans["spans"][1], &spans["gaps"][0]);
    assert_eq!(gap["start"], first["end"]);
    assert_eq!(gap["end"], second["start"]);
    let gap_s = gap["duration"].as_f64().expect("duration");
    assert!(gap_s >= 2.0, "the camera was away for more than 2 s: {spans}");
    assert!(first["duration"].as_f64().expect("duration") >= 5.0, "{spans}");
    // Within a window: clipped to it.
    let window = client
        .call(
            "list_recording_spans",
            json!({ "device": "cam", "since": second["start"], "until": iso(SystemTime::now()) }),
        )
        .await
        .expect("spans in a window");
    assert_eq!(window["spans"].as_array().map(Vec::len), Some(1), "{window}");

    // A range from 3.5 s before the gap to 3.5 s after it: two segments each side.
    let start = time(&first["end"]) - Duration::from_millis(3500);
    let end = time(&second["start"]) + Duration::from_millis(3500);
    let duration = secs(start, end);
    let bearer = format!("Bearer {}", hub.token("viewer"));
    let url = format!("/playback/cam?start={}&duration={duration:.3}", iso(start));
    let asked = Instant::now();
    let (code, head, body) = http_request(hub.port, &url, &[("Authorization", &bearer)]).expect("playback answers");
    let first_build = asked.elapsed();
    assert_eq!(code, 200, "{head}\n{}; log:\n{}", String::from_utf8_lossy(&body), hub.log());
    assert_eq!(header(&head, "content-type"), Some("video/mp4"));
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    let file_start = humantime::parse_rfc3339(header(&head, "x-playback-start").expect("start header")).expect("time");
    let lead = secs(file_start, start);
    assert!((0.0..=GOP + 0.1).contains(&lead), "the file starts {lead} s before the start asked");
    let gaps = gaps_of(&head);
    assert_eq!(gaps.len(), 1, "{head}");
    assert!(secs(time(&gap["start"]), gaps[0].0).abs() < 0.01, "{gaps:?} vs {gap}");
    assert!((gaps[0].1 - gap_s).abs() < 0.01, "{gaps:?} vs {gap}");
    let log = hub.log();
    let built = log.lines().rfind(|l| l.contains("playback range built")).unwrap_or("");
    let segments: usize = built
        .split_whitespace()
        .find_map(|w| w.strip_prefix("segments="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no build in the log: {built:?}"));
    assert!(segments >= 3, "the range spans {segments} segments: {built}; log:\n{log}");

    let dir = tempfile::tempdir().expect("temp dir");
    let path = save(dir.path(), "range.mp4", &body);
    let (probed, w, h, codec) = ffprobe(&path).expect("ffprobe reads the range");
    assert_eq!((w, h, codec.as_str()), (320, 240, "h264"));
    eprintln!("asked {duration:.3} s from {}; the file lasts {probed:.3} s from {lead:.3} s before", iso(start));
    assert!((probed - duration).abs() <= GOP + 0.1, "{probed} s for {duration} s asked");
    assert!((probed - (duration + lead)).abs() <= 0.3, "{probed} s, {duration} + {lead} expected");
    assert!(first_frame_is_key(&path), "the range does not start on a keyframe");
    plays_cleanly(&path).expect("every frame decodes");
    let header_duration: f64 = header(&head, "x-playback-duration").expect("duration header").parse().expect("seconds");
    assert!((header_duration - probed).abs() <= 0.3, "{header_duration} vs {probed}");

    // Range requests: the same bytes as the whole body, from the cache.
    let asked = Instant::now();
    let (code, head, part) =
        http_request(hub.port, &url, &[("Authorization", &bearer), ("Range", "bytes=100-1099")]).expect("range");
    let cached = asked.elapsed();
    assert_eq!(code, 206, "{head}");
    assert_eq!(part, body[100..1100], "bytes 100-1099");
    assert_eq!(header(&head, "content-range"), Some(format!("bytes 100-1099/{}", body.len()).as_str()));
    let (code, _, tail) =
        http_request(hub.port, &url, &[("Authorization", &bearer), ("Range", "bytes=-500")]).expect("suffix");
    assert_eq!((code, tail.as_slice()), (206, &body[body.len() - 500..]));
    let (code, head, rest) =
        http_request(hub.port, &url, &[("Authorization", &bearer), ("Range", &format!("bytes={}-", body.len() / 2))])
            .expect("open range");
    assert_eq!((code, rest.as_slice()), (206, &body[body.len() / 2..]), "{head}");
    let (code, head, none) = http(hub.port, "HEAD", &url, &[("Authorization", &bearer)], "");
    assert_eq!(code, 200, "{head}");
    assert_eq!(header(&head, "content-length"), Some(body.len().to_string().as_str()));
    assert!(none.is_empty());
    eprintln!(
        "time to the whole answer: first (built) {} ms, cached range {} ms ({} bytes)",
        first_build.as_millis(),
        cached.as_millis(),
        body.len()
    );

    // Fragmented MP4, and a media token in the URL (what a <video> element can send).
    let token = client.call("create_media_token", json!({ "device": "cam" })).await.expect("media token");
    let token = token["token"].as_str().expect("token");
    let (code, head, fmp4) =
        http_request(hub.port, &format!("{url}&format=fmp4&token={token}"), &[]).expect("fmp4 playback");
    assert_eq!(code, 200, "{head}");
    let path = save(dir.path(), "range-f.mp4", &fmp4);
    let (probed, ..) = ffprobe(&path).expect("ffprobe reads the fragmented range");
    assert!((probed - duration).abs() <= GOP + 0.1, "fmp4: {probed} s for {duration} s");
    assert!(first_frame_is_key(&path));
    plays_cleanly(&path).expect("every fmp4 frame decodes");

    // An export of the same range: a new recording, listed, downloadable, playing for as long.
    let exported = client
        .call("export_recording", json!({ "device": "cam", "start": iso(start), "end": iso(end) }))
        .await
        .unwrap_or_else(|e| panic!("export: {e}; log:\n{}", hub.log()));
    let name = exported["recording"]["filename"].as_str().expect("filename").to_owned();
    assert_eq!(exported["gaps"].as_array().map(Vec::len), Some(1), "{exported}");
    let list = client.call("list_recordings", json!({ "limit": 1000 })).await.expect("list");
    let listed = list["files"].as_array().expect("files").iter().find(|f| f["filename"] == name.as_str());
    let listed = listed.unwrap_or_else(|| panic!("{name} is not listed: {list}"));
    assert_eq!(listed["device"], "cam");
    assert_eq!(listed["format"], "mp4");
    let (code, head, file) =
        http_request(hub.port, &format!("/files/recordings/{name}"), &[("Authorization", &bearer)]).expect("download");
    assert_eq!(code, 200, "{head}");
    assert_eq!(file.len() as u64, listed["file_size"].as_u64().expect("size"));
    let path = save(dir.path(), &name, &file);
    let (probed, ..) = ffprobe(&path).expect("ffprobe reads the export");
    assert!((probed - duration).abs() <= GOP + 0.1, "export: {probed} s for {duration} s");
    assert!((probed - listed["duration"].as_f64().expect("duration")).abs() <= 0.3, "{listed}");
    assert!(first_frame_is_key(&path));
    plays_cleanly(&path).expect("every exported frame decodes");
    // It is a recording like the others: deletable.
    let admin = hub.client("admin").await;
    admin.call("delete_recording", json!({ "filename": name })).await.expect("delete the export");
    eprintln!("the playback test ran {} s", began.elapsed().as_secs());
}

#[tokio::test]
async fn bad_ranges_and_foreign_tokens_are_refused_clearly() {
    // Two cameras nobody serves: known to the registry, nothing recorded.
    let toml =
        format!("{}{}", camera_toml("cam", "rtsp://127.0.0.1:1/a"), camera_toml("other", "rtsp://127.0.0.1:1/b"));
    let hub = Camhub::start(&toml);
    let client = hub.client("operator").await;
    let bearer = format!("Bearer {}", hub.token("viewer"));
    let auth = [("Authorization", bearer.as_str())];
    let now = iso(SystemTime::now() - Duration::from_secs(60));
    for (url, want, why) in [
        (format!("/playback/cam?start={now}&duration=-5"), 400, "end before start"),
        (format!("/playback/cam?start={now}&duration=0"), 400, "no length"),
        (format!("/playback/cam?start={now}&duration=31536000"), 400, "a year"),
        (format!("/playback/cam?start={now}&duration=abc"), 400, "not a number"),
        ("/playback/cam?start=yesterday&duration=10".to_owned(), 400, "malformed time"),
        ("/playback/cam?start=2026-13-01T00:00:00Z&duration=10".to_owned(), 400, "no such month"),
        ("/playback/cam?duration=10".to_owned(), 400, "no start"),
        (format!("/playback/cam?start={now}&duration=10&format=avi"), 400, "unknown format"),
        (format!("/playback/nobody?start={now}&duration=10"), 404, "unknown camera"),
        (format!("/playback/cam?start={now}&duration=10"), 404, "nothing recorded"),
        ("/playback/cam?start=2001-01-01T00:00:00Z&duration=60".to_owned(), 404, "nothing recorded then"),
        (format!("/playback/..%2F..%2Fcamhub.db?start={now}&duration=10"), 404, "a path for a camera"),
        (format!("/playback/%2Fetc%2Fpasswd?start={now}&duration=10"), 404, "an absolute path for a camera"),
    ] {
        let (code, head, body) = http_request(hub.port, &url, &auth).expect("answer");
        let text = String::from_utf8_lossy(&body);
        eprintln!("{why}: {code} {text}");
        assert_eq!(code, want, "{why}: {url} -> {head}\n{text}");
        assert!(!text.is_empty() && !text.contains("root:"), "{why}: {text}");
    }
    // Without a credential, with a token of another camera, with an API key in the URL: 401.
    let url = format!("/playback/cam?start={now}&duration=10");
    let (code, ..) = http_request(hub.port, &url, &[]).expect("answer");
    assert_eq!(code, 401, "no credential");
    let other = client.call("create_media_token", json!({ "device": "other" })).await.expect("token for other");
    let other = other["token"].as_str().expect("token");
    let (code, _, body) = http_request(hub.port, &format!("{url}&token={other}"), &[]).expect("answer");
    assert_eq!(code, 401, "another camera's token: {}", String::from_utf8_lossy(&body));
    let key = hub.api_key("viewer");
    let (code, ..) = http_request(hub.port, &format!("{url}&token={key}"), &[]).expect("answer");
    assert_eq!(code, 401, "an API key in a URL");
    let mine = client.call("create_media_token", json!({ "device": "cam" })).await.expect("token for cam");
    let (code, ..) = http_request(hub.port, &format!("{url}&token={}", mine["token"].as_str().expect("token")), &[])
        .expect("answer");
    assert_eq!(code, 404, "its own camera's token passes auth and finds nothing recorded");

    // The methods: every param checked, unknown cameras -32010.
    let param = |e: &Value| (e["code"].as_i64(), e["data"]["param"].as_str().map(str::to_owned));
    let spans = |p: Value| client.call("list_recording_spans", p);
    let e = spans(json!({ "device": "cam", "since": "noon" })).await.expect_err("bad since");
    assert_eq!(param(&e), (Some(-32602), Some("since".into())), "{e}");
    let e = spans(json!({ "device": "cam", "since": now, "until": "2001-01-01T00:00:00Z" })).await.expect_err("order");
    assert_eq!(param(&e), (Some(-32602), Some("until".into())), "{e}");
    let e = spans(json!({ "device": "../x" })).await.expect_err("a path");
    assert_eq!(param(&e), (Some(-32602), Some("device".into())), "{e}");
    let e = spans(json!({ "device": "nobody" })).await.expect_err("unknown");
    assert_eq!(e["code"], -32010, "{e}");
    let none = spans(json!({ "device": "cam" })).await.expect("a camera with nothing recorded");
    assert_eq!(none["spans"], json!([]));
    let export = |p: Value| client.call("export_recording", p);
    let e = export(json!({ "device": "cam", "start": now, "end": "2001-01-01T00:00:00Z" })).await.expect_err("order");
    assert_eq!(param(&e), (Some(-32602), Some("end".into())), "{e}");
    let e = export(json!({ "device": "cam", "start": "2001-01-01T00:00:00Z", "end": "2002-01-01T00:00:00Z" }))
        .await
        .expect_err("a year");
    assert_eq!(param(&e), (Some(-32602), Some("end".into())), "{e}");
    let e = export(json!({ "device": "cam", "start": "then", "end": now })).await.expect_err("malformed");
    assert_eq!(param(&e), (Some(-32602), Some("start".into())), "{e}");
    let e = export(json!({ "device": "nobody", "start": "2001-01-01T00:00:00Z", "end": "2001-01-01T00:01:00Z" }))
        .await
        .expect_err("unknown camera");
    assert_eq!(e["code"], -32010, "{e}");
    let e = export(json!({ "device": "cam", "start": "2001-01-01T00:00:00Z", "end": "2001-01-01T00:01:00Z" }))
        .await
        .expect_err("nothing recorded");
    assert_eq!((e["code"].as_i64(), e["data"]["resource"].as_str()), (Some(-32010), Some("recording")), "{e}");
    let viewer = hub.client("viewer").await;
    let e = viewer
        .call("export_recording", json!({ "device": "cam", "start": "2001-01-01T00:00:00Z", "end": now }))
        .await
        .expect_err("viewers do not export");
    assert_eq!(e["code"], -32002, "{e}");
    // camhub is still there.
    assert!(client.call("ping", json!({})).await.is_ok());
}

#[tokio::test]
async fn sound_is_kept_in_sync_across_segments_and_a_removed_cameras_recordings_still_play() {
    let cam = TestCam::start_with_audio(2, "aac");
    let toml = format!("[recording]\nsegment_seconds = 2\n{}record = \"always\"\n", camera_toml("cam", &cam.url(0)));
    let hub = Camhub::start(&toml);
    let client = hub.connected_client("viewer", "cam").await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let span = loop {
        let s = client.call("list_recording_spans", json!({ "device": "cam" })).await.expect("spans");
        if s["spans"][0]["duration"].as_f64().unwrap_or(0.0) >= 9.0 {
            break s["spans"][0].clone();
        }
        assert!(Instant::now() < deadline, "not enough recorded: {s}; log:\n{}", hub.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // From 2.5 s in, for 5 s: three segments, the first entered mid-way.
    let start = time(&span["start"]) + Duration::from_millis(2500);
    let url = format!("/playback/cam?start={}&duration=5", iso(start));
    let bearer = format!("Bearer {}", hub.token("viewer"));
    let (code, head, body) = http_request(hub.port, &url, &[("Authorization", &bearer)]).expect("playback answers");
    assert_eq!(code, 200, "{head}; log:\n{}", hub.log());
    assert!(header(&head, "x-playback-gaps").is_none(), "{head}");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = save(dir.path(), "sound.mp4", &body);
    let streams = common::ffprobe_streams(&path).unwrap_or_else(|e| panic!("{e}"));
    let video = streams.iter().find(|s| s.kind == "video").unwrap_or_else(|| panic!("no video: {streams:?}"));
    let audio = streams.iter().find(|s| s.kind == "audio").unwrap_or_else(|| panic!("no sound: {streams:?}"));
    assert_eq!((video.codec.as_str(), audio.codec.as_str()), ("h264", "aac"), "{streams:?}");
    assert!((audio.start - video.start).abs() <= 0.1, "{streams:?}");
    assert!((audio.duration - video.duration).abs() <= 0.3, "{streams:?}");
    assert!((video.duration - 5.0).abs() <= GOP + 0.1, "{streams:?}");
    plays_cleanly(&path).expect("every frame decodes");
    let uri = format!("file://{}", path.display());
    let (squares, bursts) = common::av_marks(&uri, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let offset = common::av_offset(&squares, &bursts);
    eprintln!(
        "sound behind the picture by {offset:?} s; {} squares, {} bursts; {streams:?}",
        squares.len(),
        bursts.len()
    );
    assert!(squares.len() >= 4, "a square a second: {squares:?}");
    let offset = offset.unwrap_or_else(|| panic!("no burst near a square: {squares:?} {bursts:?}"));
    assert!(offset.abs() <= 0.1, "the sound is {offset:.3} s behind the picture across segments");

    // A camera added, recorded and removed: its recordings outlive it, by time too.
    let operator = hub.client("operator").await;
    let added = operator
        .call("add_external_stream", json!({ "stream_url": cam.url(1), "stream_name": "Gone" }))
        .await
        .expect("add a camera");
    let gone = added["device"].as_str().expect("device").to_owned();
    operator
        .wait_status(&gone, CONNECT, |s| s["status"] == "CONNECTED")
        .await
        .unwrap_or_else(|| panic!("{gone} never connected; log:\n{}", hub.log()));
    operator.call("start_recording", json!({ "device": gone })).await.expect("record it");
    tokio::time::sleep(Duration::from_secs(3)).await;
    operator.call("stop_recording", json!({ "device": gone })).await.expect("stop");
    operator.call("remove_external_stream", json!({ "device": gone })).await.expect("remove it");
    let spans = client.call("list_recording_spans", json!({ "device": gone })).await.expect("a removed camera's spans");
    assert_eq!(spans["spans"].as_array().map(Vec::len), Some(1), "{spans}");
    let url = format!("/playback/{gone}?start={}&duration=2", spans["spans"][0]["start"].as_str().expect("start"));
    let (code, head, _) = http_request(hub.port, &url, &[("Authorization", &bearer)]).expect("playback answers");
    assert_eq!(code, 200, "a removed camera's recording plays: {head}");
    let e = client.call("list_recording_spans", json!({ "device": "never-was" })).await.expect_err("unknown");
    assert_eq!(e["code"], -32010, "{e}");
}
