//! Backup, restore and index rebuild with the real camhub binary, the real test camera and real SQLite files: a backup
//! taken while a camera records (which goes on recording), then the database deleted; `restore` and, separately,
//! `check --rebuild` each give back every recording, those made after the backup included (count equal, total
//! duration within one fragment). Refusals: a backup over a backup (unless `--overwrite`), a tampered backup, a restore
//! or rebuild under a running camhub. Permissions of the config and of the key material are kept. A rebuild over an
//! index that knows more than the disk drops the rows of files gone.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{BIN, Camhub, TestCam, camera_toml};
use serde_json::{Value, json};

/// Segments of two seconds: several of them, before and after the backup, in a short test.
const RECORDING: &str = "[recording]\nsegment_seconds = 2\n";
/// The most two measurements of the same recordings may differ by: one fMP4 fragment (the default `fragment_ms`).
const ONE_FRAGMENT_S: f64 = 0.5;

fn camhub(args: &[&str], config: &Path) -> Output {
    let out = std::process::Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("run camhub");
    eprintln!(
        "camhub {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Every recording the running service lists: file name → duration in seconds.
async fn listed(hub: &Camhub) -> BTreeMap<String, f64> {
    let client = hub.client("viewer").await;
    let list = client.call("list_recordings", json!({ "limit": 1000 })).await.expect("list_recordings");
    list["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| (f["filename"].as_str().expect("name").to_owned(), f["duration"].as_f64().expect("duration")))
        .collect()
}

/// Every row of the index in the database file (read with the library's own database layer): name → seconds.
async fn indexed(db: &Path) -> BTreeMap<String, f64> {
    let db = camhub::storage::Db::open(db).await.expect("open the database");
    let (rows, _) = db.list_segments(10_000, 0).await.expect("segments");
    db.close().await;
    rows.into_iter().map(|r| (r.filename, r.duration_ms as f64 / 1000.0)).collect()
}

fn on_disk(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("recordings dir")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn total(recordings: &BTreeMap<String, f64>) -> f64 {
    recordings.values().sum()
}

/// The same recordings, with durations that add up to the same within one fragment.
fn assert_same_recordings(what: &str, before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) {
    let names = |m: &BTreeMap<String, f64>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(after), names(before), "{what}: not the same recordings");
    let (b, a) = (total(before), total(after));
    assert!((a - b).abs() <= ONE_FRAGMENT_S, "{what}: {a:.3} s of recordings, {b:.3} s before");
    eprintln!("{what}: {} recordings, {a:.3} s (before: {b:.3} s)", after.len());
}

fn delete_database(dir: &Path) {
    for name in ["camhub.db", "camhub.db-wal", "camhub.db-shm"] {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("delete {name}: {e}"),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read backup").flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy file");
    }
}

/// The time between each segment's end and the next one's start, in seconds, oldest first (one session).
async fn gaps_between_segments(hub: &Camhub) -> Vec<f64> {
    let client = hub.client("viewer").await;
    let list = client.call("list_recordings", json!({ "limit": 1000 })).await.expect("list_recordings");
    let time = |v: &Value| humantime::parse_rfc3339(v.as_str().expect("time string")).expect("RFC 3339 time");
    let mut spans: Vec<_> = list["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| (time(&f["start_time"]), time(&f["end_time"])))
        .collect();
    spans.sort();
    spans
        .windows(2)
        .map(|w| match w[1].0.duration_since(w[0].1) {
            Ok(gap) => gap.as_secs_f64(),
            Err(overlap) => -overlap.duration().as_secs_f64(),
        })
        .collect()
}

async fn wait_for_segments(hub: &Camhub, at_least: usize, newer_than: Option<&str>) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = listed(hub).await;
        // Names hold the session's start, not the segment's: the newest segment is the one with the highest sequence.
        let fresh = newer_than.is_none_or(|name| list.keys().any(|n| n.as_str() > name));
        if list.len() >= at_least && fresh {
            return list;
        }
        assert!(Instant::now() < deadline, "{} segments after 30 s: {list:?}; log:\n{}", list.len(), hub.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_backup_taken_while_recording_gives_back_every_recording_by_restore_and_by_rebuild() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    // Key material in the data dir (the service signs with the configured secret; the file must travel all the same).
    let secret = data.join("jwt_secret");
    std::fs::write(&secret, "f".repeat(64)).expect("write secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod secret");
    let cam = TestCam::start(1);
    let recording = format!("{RECORDING}{}record = \"always\"\n", camera_toml("cam", &cam.url(0)));
    let mut hub = Camhub::start_at(&data, "", &recording);
    let config = data.join("camhub.toml");
    // The config holds the JWT secret: only its owner may read it, and so it must stay.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod config");

    let before_backup = wait_for_segments(&hub, 2, None).await;
    let backup = tmp.path().join("backup");
    let out = camhub(&["backup", "--to", backup.to_str().expect("utf-8")], &config);
    assert!(out.status.success(), "backup failed");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).expect("manifest")).expect("JSON");
    let modes: BTreeMap<&str, &str> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| (f["name"].as_str().expect("name"), f["mode"].as_str().expect("mode")))
        .collect();
    assert_eq!(modes.get("jwt_secret"), Some(&"0600"), "{manifest}");
    assert_eq!(modes.get("camhub.toml"), Some(&"0600"), "{manifest}");
    assert!(modes.contains_key("camhub.db"), "{manifest}");
    assert_eq!((mode(&backup.join("jwt_secret")), mode(&backup.join("camhub.toml"))), (0o600, 0o600));
    assert_eq!(mode(&backup), 0o700, "the backup directory holds key material");
    assert_eq!(manifest["camhub_version"], env!("CARGO_PKG_VERSION"));
    assert!(manifest["schema_version"].as_i64().is_some_and(|v| v >= 5), "{manifest}");
    let in_backup = manifest["segments"].as_u64().expect("segments") as usize;
    assert!(
        in_backup >= before_backup.len(),
        "the copy holds {in_backup} recordings, {} were listed",
        before_backup.len()
    );

    // The service never noticed: the same session goes on adding segments after the copy.
    let newest = before_backup.keys().last().expect("a segment").clone();
    let after_backup = wait_for_segments(&hub, in_backup + 2, Some(&newest)).await;
    let session = |name: &str| name.rsplitn(3, '_').nth(2).map(str::to_owned);
    assert!(after_backup.keys().all(|n| session(n) == session(&newest)), "one session throughout: {after_backup:?}");
    let gaps = gaps_between_segments(&hub).await;
    assert!(gaps.iter().all(|g| *g < 0.2), "the recording has a hole (seconds between segments): {gaps:?}");
    assert!(!hub.log().contains("database is locked"), "log:\n{}", hub.log());

    // Refusals while it runs: another backup into the same directory, a restore, a rebuild.
    let manifest_bytes = std::fs::read(backup.join("manifest.json")).expect("manifest");
    let again = camhub(&["backup", "--to", backup.to_str().expect("utf-8")], &config);
    assert_eq!(again.status.code(), Some(73), "a backup over a backup");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a backup"));
    assert_eq!(std::fs::read(backup.join("manifest.json")).expect("manifest"), manifest_bytes, "left as it was");
    let running = camhub(&["restore", "--from", backup.to_str().expect("utf-8")], &config);
    assert_eq!(running.status.code(), Some(75), "a restore under a running camhub");
    assert!(String::from_utf8_lossy(&running.stderr).contains(&format!("(pid {})", hub.pid())), "names the holder");
    let running = camhub(&["check", "--rebuild"], &config);
    assert_eq!(running.status.code(), Some(75), "a rebuild under a running camhub");

    hub.stop();
    // What there is to give back: every file on disk, indexed (the segment open at the stop was closed and indexed).
    let before = indexed(&data.join("camhub.db")).await;
    assert_eq!(before.keys().cloned().collect::<Vec<_>>(), on_disk(&data.join("recordings")), "index matches disk");
    assert!(
        before.len() > in_backup,
        "recordings made after the backup: {} of {}",
        before.len() - in_backup,
        before.len()
    );

    // A tampered backup is refused before anything is touched.
    let tampered = tmp.path().join("tampered");
    copy_dir(&backup, &tampered);
    let mut bytes = std::fs::read(tampered.join("camhub.db")).expect("db copy");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(tampered.join("camhub.db"), bytes).expect("tamper");
    let live = std::fs::read(data.join("camhub.db")).expect("database");
    let refused = camhub(&["restore", "--from", tampered.to_str().expect("utf-8")], &config);
    assert_eq!(refused.status.code(), Some(65), "a tampered backup");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("camhub.db does not match the manifest"));
    assert_eq!(std::fs::read(data.join("camhub.db")).expect("database"), live, "the database was not touched");

    // (a) The database, the key material and the config lost; restore, then start: every recording is back.
    delete_database(&data);
    std::fs::remove_file(&secret).expect("remove secret");
    std::fs::remove_file(&config).expect("remove config");
    let out = camhub(&["restore", "--from", backup.to_str().expect("utf-8")], &config);
    assert!(out.status.success(), "restore failed");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("config restored to") && said.contains("restored the database"), "{said}");
    assert!(said.contains(&format!("restored {} (mode 0600)", secret.display())), "{said}");
    assert_eq!(std::fs::read_to_string(&secret).expect("secret back"), "f".repeat(64));
    assert_eq!((mode(&secret), mode(&config)), (0o600, 0o600), "permissions kept");
    hub.start_again(RECORDING);
    assert_same_recordings("restore", &before, &listed(&hub).await);
    hub.stop();

    // (b) The database lost, no backup: `check --rebuild` gives every recording back from the files alone.
    delete_database(&data);
    let out = camhub(&["check", "--rebuild"], &config);
    assert!(out.status.success(), "rebuild failed");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{} indexed", before.len())));
    assert_same_recordings("rebuild (index)", &before, &indexed(&data.join("camhub.db")).await);
    let check = camhub(&["check"], &config);
    assert!(check.status.success(), "the rebuilt index matches the disk");
    hub.start_again(RECORDING);
    assert_same_recordings("rebuild", &before, &listed(&hub).await);
    hub.stop();

    // An index that knows more than the disk: the row of a file gone is dropped, the others kept as they are.
    let gone = before.keys().next().expect("a recording");
    std::fs::remove_file(data.join("recordings").join(gone)).expect("remove a recording");
    let out = camhub(&["check", "--rebuild"], &config);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains(&format!("row removed (no file): {gone}")), "{said}");
    assert!(said.contains(&format!("{} kept, 0 indexed", before.len() - 1)), "{said}");

    // A backup of a stopped camhub, over the earlier one when asked to.
    let out = camhub(&["backup", "--overwrite", "--to", backup.to_str().expect("utf-8")], &config);
    assert!(out.status.success(), "backup --overwrite");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).expect("manifest")).expect("JSON");
    assert_eq!(manifest["segments"].as_u64(), Some(before.len() as u64 - 1), "{manifest}");
    eprintln!("test took {:.1} s", started.elapsed().as_secs_f64());
    drop(cam);
}
