//! Files and storage over the real wire: names that are paths are refused everywhere (RPC and HTTP), downloads need
//! credentials and honour Range, listings page newest first, the retention policy persists, and a full disk (a real
//! small tmpfs) triggers retention, then a clean stop with an ERROR and -32007, never a corrupt file.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Camhub, TestCam, camera_toml, decodes_cleanly, ffprobe, http_request};
use serde_json::{Value, json};

const CONNECT: Duration = Duration::from_secs(20);
const BAD_NAMES: &[&str] = &["../camhub.db", "a/b.jpg", "/etc/passwd", ".hidden", "x\u{0}y", "..", "a\\b", ""];

#[tokio::test]
async fn names_that_are_paths_are_refused_by_every_method_and_route() {
    let cam = TestCam::start(1);
    let hub = Camhub::start(&camera_toml("cam", &cam.url(0)));
    let admin = hub.client("admin").await;
    admin.wait_status("cam", CONNECT, |s| s["status"] == "CONNECTED").await.expect("connected");
    for name in BAD_NAMES {
        for method in ["get_recording_info", "get_snapshot_info", "delete_recording", "delete_snapshot"] {
            let e = admin.call(method, json!({ "filename": name })).await.expect_err(method);
            assert_eq!(
                (e["code"].as_i64(), e["data"]["param"].as_str()),
                (Some(-32602), Some("filename")),
                "{method} {name:?}: {e}"
            );
        }
        let e = admin.call("take_snapshot", json!({ "device": "cam", "filename": name })).await.expect_err("snapshot");
        assert_eq!(e["code"], -32602, "take_snapshot {name:?}: {e}");
    }
    assert!(hub.dir.join("camhub.db").exists(), "nothing outside the areas was deleted");
    let token = hub.token("admin");
    let bearer = format!("Bearer {token}");
    for path in [
        "/files/recordings/..%2Fcamhub.db",
        "/files/snapshots/..%2F..%2Fcamhub.db",
        "/files/snapshots/%2Fetc%2Fpasswd",
        "/files/snapshots/.hidden",
        "/files/recordings/..",
        "/files/snapshots/a%5Cb",
        "/files/recordings/../camhub.db",
        "/files/../camhub.db",
    ] {
        let (code, _, body) = http_request(hub.port, path, &[("Authorization", &bearer)]).expect("http");
        assert!(matches!(code, 400 | 404), "{path}: {code}");
        assert!(!body.starts_with(b"SQLite format"), "{path} served the database");
    }
}

#[tokio::test]
async fn downloads_need_credentials_and_honour_range() {
    let cam = TestCam::start(1);
    let hub = Camhub::start(&camera_toml("cam", &cam.url(0)));
    let op = hub.client("operator").await;
    op.wait_status("cam", CONNECT, |s| s["status"] == "CONNECTED").await.expect("connected");
    let snap = op.call("take_snapshot", json!({ "device": "cam" })).await.expect("snapshot");
    let url = snap["download_url"].as_str().expect("url").to_owned();
    let file = std::fs::read(hub.dir.join("snapshots").join(snap["filename"].as_str().expect("name"))).expect("file");

    let (code, _, _) = http_request(hub.port, &url, &[]).expect("http");
    assert_eq!(code, 401, "no credentials");
    let (code, _, _) = http_request(hub.port, &url, &[("Authorization", "Bearer forged")]).expect("http");
    assert_eq!(code, 401, "bad token");
    let bearer = format!("Bearer {}", hub.token("viewer"));
    let (code, head, body) = http_request(hub.port, &url, &[("Authorization", &bearer)]).expect("http");
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: image/jpeg"), "{head}");
    assert_eq!(body, file);
    let (code, head, body) =
        http_request(hub.port, &url, &[("Authorization", &bearer), ("Range", "bytes=0-99")]).expect("http");
    assert_eq!(code, 206, "{head}");
    assert_eq!(body, file[..100]);
    assert!(head.to_ascii_lowercase().contains(&format!("content-range: bytes 0-99/{}", file.len())), "{head}");

    let key = hub.api_key("viewer");
    let (code, _, body) = http_request(hub.port, &url, &[("X-API-Key", &key)]).expect("http");
    assert_eq!((code, body.len()), (200, file.len()));

    // A recording is served once it is complete and indexed.
    op.call("start_recording", json!({ "device": "cam" })).await.expect("start");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = op.call("stop_recording", json!({ "device": "cam" })).await.expect("stop");
    let info = op.call("get_recording_info", json!({ "filename": stopped["filename"] })).await.expect("info");
    let (code, head, body) =
        http_request(hub.port, info["download_url"].as_str().expect("url"), &[("Authorization", &bearer)])
            .expect("http");
    assert_eq!(code, 200, "{head}");
    assert_eq!(body.len() as u64, info["file_size"].as_u64().expect("size"));
    let (code, ..) =
        http_request(hub.port, "/files/recordings/not-indexed.mp4", &[("Authorization", &bearer)]).expect("http");
    assert_eq!(code, 404);
}

#[tokio::test]
async fn listings_page_newest_first_and_deletes_are_for_admins() {
    let cam = TestCam::start(1);
    let hub = Camhub::start(&camera_toml("cam", &cam.url(0)));
    let admin = hub.client("admin").await;
    for method in ["list_recordings", "list_snapshots"] {
        let empty = admin.call(method, json!({})).await.expect("an empty set is not an error");
        assert_eq!(
            (empty["total"].as_u64(), empty["limit"].as_u64(), empty["offset"].as_u64()),
            (Some(0), Some(50), Some(0))
        );
        assert_eq!(empty["files"], json!([]));
        for (params, param) in
            [(json!({ "limit": 0 }), "limit"), (json!({ "limit": 1001 }), "limit"), (json!({ "offset": -1 }), "offset")]
        {
            let e = admin.call(method, params).await.expect_err("bad page");
            assert_eq!(e["data"]["param"], param);
        }
    }
    admin.wait_status("cam", CONNECT, |s| s["status"] == "CONNECTED").await.expect("connected");
    for name in ["one", "two", "three"] {
        admin.call("take_snapshot", json!({ "device": "cam", "filename": name })).await.expect("snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let page = admin.call("list_snapshots", json!({ "limit": 2, "offset": 0 })).await.expect("page");
    assert_eq!(page["total"], 3);
    let names: Vec<&str> =
        page["files"].as_array().expect("files").iter().map(|f| f["filename"].as_str().expect("name")).collect();
    assert_eq!(names, ["three.jpg", "two.jpg"]);
    let rest = admin.call("list_snapshots", json!({ "limit": 2, "offset": 2 })).await.expect("page 2");
    assert_eq!(rest["files"][0]["filename"], "one.jpg");

    let operator = hub.client("operator").await;
    let e = operator.call("delete_snapshot", json!({ "filename": "one.jpg" })).await.expect_err("operator");
    assert_eq!(e["code"], -32002);
    let d = admin.call("delete_snapshot", json!({ "filename": "one.jpg" })).await.expect("delete");
    assert_eq!(d["deleted"], true);
    assert!(!hub.dir.join("snapshots/one.jpg").exists());
    let e = admin.call("delete_snapshot", json!({ "filename": "one.jpg" })).await.expect_err("gone");
    assert_eq!(e["code"], -32010);
    let e = admin.call("delete_recording", json!({ "filename": "nothing.mp4" })).await.expect_err("unknown");
    assert_eq!(e["code"], -32010);
}

#[tokio::test]
async fn the_retention_policy_is_validated_persisted_and_applied() {
    let cam = TestCam::start(1);
    let toml = camera_toml("cam", &cam.url(0));
    let mut hub = Camhub::start(&toml);
    let admin = hub.client("admin").await;
    for (params, param) in [
        (json!({ "policy_type": "forever", "enabled": true }), "policy_type"),
        (json!({ "policy_type": "age", "enabled": true }), "max_age_days"),
        (json!({ "policy_type": "age", "max_age_days": -1, "enabled": true }), "max_age_days"),
        (json!({ "policy_type": "size", "max_size_gb": 0, "enabled": true }), "max_size_gb"),
    ] {
        let e = admin.call("set_retention_policy", params).await.expect_err("invalid policy");
        assert_eq!((e["code"].as_i64(), e["data"]["param"].as_str()), (Some(-32602), Some(param)), "{e}");
    }
    admin.wait_status("cam", CONNECT, |s| s["status"] == "CONNECTED").await.expect("connected");
    let mut names = Vec::new();
    for _ in 0..2 {
        admin.call("start_recording", json!({ "device": "cam" })).await.expect("start");
        tokio::time::sleep(Duration::from_secs(1)).await;
        names.push(admin.call("stop_recording", json!({ "device": "cam" })).await.expect("stop")["filename"].clone());
    }
    // A size limit smaller than both recordings keeps none of the older ones.
    let set = admin
        .call("set_retention_policy", json!({ "policy_type": "size", "max_size_gb": 0.0000001, "enabled": true }))
        .await
        .expect("set");
    assert_eq!(set["policy_type"], "size");
    hub.restart(&toml);
    let admin = hub.client("admin").await;
    let info = admin.call("get_storage_info", json!({})).await.expect("storage");
    assert_eq!(info["retention_policy"]["policy_type"], "size", "not persisted: {info}");
    for key in [
        "total_space",
        "used_space",
        "available_space",
        "usage_percentage",
        "recordings_size",
        "snapshots_size",
        "low_space_warning",
    ] {
        assert!(!info[key].is_null(), "{key} missing");
    }
    let cleanup = admin.call("cleanup_old_files", json!({})).await.expect("cleanup");
    assert_eq!(cleanup["cleanup_executed"], true);
    // The background pass may have applied it before the explicit one: either way nothing over the limit is left.
    let list = admin.call("list_recordings", json!({})).await.expect("list");
    assert_eq!(list["total"], 0, "{list}");
    for name in &names {
        let on_disk = hub.recordings_dir().join(name.as_str().expect("name")).exists();
        let indexed = admin.call("get_recording_info", json!({ "filename": name })).await.is_ok();
        assert_eq!(on_disk, indexed, "index and disk disagree about {name}");
    }
}

/// A real small filesystem, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "this test needs root to mount a small tmpfs as the storage root (mount failed)");
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn available(&self) -> u64 {
        let out =
            std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(self.path()).output().expect("df");
        String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df number")
    }

    /// Grows the filler file so that `free` bytes remain.
    fn leave_free(&self, free: u64) {
        let filler = self.path().join("filler.bin");
        let current = std::fs::metadata(&filler).map(|m| m.len()).unwrap_or(0);
        let target = (current + self.available()).saturating_sub(free);
        let f = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&filler).expect("filler");
        // Write real bytes (tmpfs does not reserve for sparse files).
        use std::io::{Seek, SeekFrom, Write};
        let mut f = f;
        f.seek(SeekFrom::Start(current)).expect("seek");
        let chunk = vec![0x5Au8; 1 << 20];
        let mut left = target.saturating_sub(current);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

#[tokio::test]
async fn a_full_disk_triggers_retention_then_a_clean_stop_and_32007() {
    const MIB: u64 = 1024 * 1024;
    let fs = Tmpfs::mount(64);
    let port = common::free_port();
    let _cam = TestCam::start_with(
        port,
        1,
        &["--width", "640", "--height", "360", "--fps", "30", "--bitrate", "4000", "--pattern", "snow"],
    );
    let storage = "min_free_mb = 12\nretention_policy = \"manual\"\nretention_interval_s = 1";
    let extra =
        format!("[recording]\nsegment_seconds = 2\n{}", camera_toml("cam", &format!("rtsp://127.0.0.1:{port}/cam0")));
    let hub = Camhub::start_at(fs.path(), storage, &extra);
    let admin = hub.client("admin").await;
    admin.wait_status("cam", CONNECT, |s| s["status"] == "CONNECTED").await.expect("connected");
    admin.call("subscribe_events", json!({ "topics": ["storage.low_space"] })).await.expect("subscribe");

    fs.leave_free(16 * MIB);
    let started = admin.call("start_recording", json!({ "device": "cam" })).await.expect("start with room");
    let low = admin
        .wait_notification("event", Duration::from_secs(40), |p| p["topic"] == "storage.low_space")
        .await
        .unwrap_or_else(|| panic!("no storage.low_space; log:\n{}", hub.log()));
    assert!(low["data"]["freed"].as_u64().is_some(), "{low}");
    // Retention keeps it going: still recording a few seconds later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = admin.call("start_recording", json!({ "device": "cam" })).await.expect_err("still recording");
    assert_eq!(again["code"], -32020, "the recording stopped although retention could free space: {again}");
    assert!(fs.available() + MIB >= 12 * MIB, "the floor was not defended: {} bytes free", fs.available());

    // Nothing left to delete: the recording stops cleanly with an error.
    fs.leave_free(6 * MIB);
    let stopped = admin
        .wait_notification("recording_status_update", Duration::from_secs(30), |p| p["status"] == "ERROR")
        .await
        .unwrap_or_else(|| panic!("no ERROR when space ran out; log:\n{}", hub.log()));
    assert_eq!(stopped["session_id"], started["session_id"]);
    // Make sure even deleting every recording could not make room, so the refusal does not depend on their size.
    let recordings = admin.call("get_storage_info", json!({})).await.expect("storage")["recordings_size"]
        .as_u64()
        .expect("recordings_size");
    fs.leave_free((12 * MIB).saturating_sub(recordings + 2 * MIB).max(MIB / 4));
    let refused = admin.call("start_recording", json!({ "device": "cam" })).await.expect_err("no space");
    assert_eq!(refused["code"], -32007, "{refused}");
    assert!(refused["data"]["available"].as_u64().is_some() && refused["data"]["required"].as_u64().is_some());

    // Every file left plays, and the index matches the disk.
    let list = admin.call("list_recordings", json!({ "limit": 1000 })).await.expect("list");
    let mut indexed: Vec<String> = list["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["filename"].as_str().expect("name").to_owned())
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(hub.recordings_dir())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().into_string().expect("utf8"))
        // The storage root's marker (`.camhub-root`) is not a recording.
        .filter(|name| !name.starts_with('.'))
        .collect();
    indexed.sort();
    on_disk.sort();
    assert_eq!(indexed, on_disk);
    assert!(!on_disk.is_empty(), "the last segment should remain");
    for name in on_disk {
        let path = hub.recordings_dir().join(&name);
        ffprobe(&path).unwrap_or_else(|e| panic!("{e}"));
        decodes_cleanly(&path).unwrap_or_else(|e| panic!("{e}"));
    }
    let _: Value = admin.call("get_storage_info", json!({})).await.expect("storage info");
}
