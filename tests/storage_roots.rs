//! Several storage roots on real loop-mounted ext4 filesystems (needs root): a recording on root A moves to root B
//! within a second when A is lazily unmounted, turned read-only by a filesystem error, fails with I/O errors (ext4's
//! shutdown ioctl) or is filled; every indexed file plays (decoded by
//! FFmpeg) and the index matches the disks; A back is used again and its files are listed; a disk carrying another
//! camhub's marker is refused with a clear message. The gaps are measured from the index's start times and the
//! files' demuxed durations (ffprobe).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::{Camhub, Client, TestCam, camera_toml, decodes_cleanly, ffprobe};
use serde_json::{Value, json};

const CONNECT: Duration = Duration::from_secs(20);
/// The most video a root failure may cost.
const MAX_GAP: f64 = 1.0;

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A real 64 MiB ext4 filesystem in an image file, loop-mounted at `dir`; unmounted on drop.
struct Disk {
    image: PathBuf,
    dir: PathBuf,
}

impl Disk {
    fn make(base: &Path, name: &str) -> Disk {
        Disk::make_at(base, name, &base.join(name))
    }

    /// A new disk (image `name`) mounted at `dir`.
    fn make_at(base: &Path, name: &str, dir: &Path) -> Disk {
        let image = base.join(format!("{name}.img"));
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir).expect("mountpoint");
        run("truncate", &["-s", "64M", &image.to_string_lossy()]).expect("truncate");
        run("mkfs.ext4", &["-q", "-F", &image.to_string_lossy()]).expect("mkfs.ext4 (e2fsprogs)");
        let disk = Disk { image, dir };
        disk.mount().unwrap_or_else(|e| panic!("this test needs root to loop-mount ext4 images: {e}"));
        disk
    }

    fn path(&self) -> &str {
        self.dir.to_str().expect("utf-8 path")
    }

    /// Mounted as a server's data disk would be: an ext4 error turns it read-only.
    fn mount(&self) -> Result<(), String> {
        run("mount", &["-o", "loop,errors=remount-ro", &self.image.to_string_lossy(), self.path()])
    }

    fn umount_lazy(&self) {
        run("umount", &["-l", self.path()]).expect("umount -l");
    }

    /// A filesystem error, as a failing disk causes: ext4 (errors=remount-ro) turns the filesystem read-only under
    /// its open files. (`mount -o remount,ro` is refused while files are open for writing.)
    fn fail_to_read_only(&self) {
        let out = Command::new("findmnt").args(["-n", "-o", "SOURCE", self.path()]).output().expect("findmnt");
        let source = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let device = source.rsplit('/').next().unwrap_or_default().to_owned();
        std::fs::write(format!("/sys/fs/ext4/{device}/trigger_fs_error"), "1")
            .unwrap_or_else(|e| panic!("cannot trigger an ext4 error on {source}: {e}"));
    }

    /// The disk stops answering: ext4's shutdown ioctl (`EXT4_IOC_SHUTDOWN`, without flushing its journal) makes every
    /// read and write on it fail with EIO, as a dead disk or a pulled cable does.
    fn shut_down(&self) {
        use std::os::fd::AsRawFd;
        const EXT4_IOC_SHUTDOWN: u64 = 0x8004_587d; // _IOR('X', 125, __u32)
        const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;
        let dir = std::fs::File::open(&self.dir).expect("open the mountpoint");
        let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: the ioctl reads one u32 through the pointer, which outlives the call; the descriptor is open.
        let rc = unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_SHUTDOWN as _, &flags as *const u32) };
        assert_eq!(rc, 0, "EXT4_IOC_SHUTDOWN: {}", std::io::Error::last_os_error());
    }

    /// Brings back a disk that went read-only on an error, as an operator would: unmount, fsck, mount. Waits until
    /// camhub has let go of the old mount (its loop device goes away when the last file on it is closed).
    async fn repair_and_mount(&self) {
        self.umount_lazy();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("losetup").arg("-j").arg(&self.image).output().expect("losetup");
            if out.stdout.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "camhub never let go of the failed disk: {:?}", out.stdout);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = Command::new("e2fsck").args(["-f", "-y", "-q"]).arg(&self.image).output();
        self.mount().expect("mount the repaired disk");
    }

    fn available(&self) -> u64 {
        let out = Command::new("df").args(["--output=avail", "-B1"]).arg(&self.dir).output().expect("df");
        String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df number")
    }

    /// Fills the filesystem with a real file so that about `free` bytes remain.
    fn fill(&self, free: u64) -> PathBuf {
        let filler = self.dir.join("filler.bin");
        let size = self.available().saturating_sub(free);
        run("fallocate", &["-l", &size.to_string(), &filler.to_string_lossy()]).expect("fallocate");
        filler
    }

    /// Recording files on the disk now.
    fn recordings(&self) -> BTreeSet<String> {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".mp4") || n.ends_with(".mkv"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // Lazily, repeatedly: a lazily unmounted and remounted root is mounted once per mount.
        for _ in 0..3 {
            if run("umount", &["-l", self.path()]).is_err() {
                break;
            }
        }
    }
}

async fn storage_root(client: &Client, path: &Path) -> Value {
    let info = client.call("get_storage_info", json!({})).await.expect("get_storage_info");
    info["roots"]
        .as_array()
        .expect("roots array")
        .iter()
        .find(|r| r["path"] == path.to_string_lossy().as_ref())
        .cloned()
        .unwrap_or_else(|| panic!("{} not among the roots: {info}", path.display()))
}

/// Waits until the root on `disk` is in `state` (alternatives separated by `|`).
async fn wait_root_state(client: &Client, disk: &Disk, state: &str, within: Duration, hub: &Camhub) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let root = storage_root(client, &disk.dir).await;
        if state.split('|').any(|s| root["state"] == s) {
            return root;
        }
        assert!(Instant::now() < deadline, "{} never became {state}: {root}; log:\n{}", disk.path(), hub.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for a recording file on `disk` that is not in `before`; returns it and when it was seen.
async fn wait_new_file(disk: &Disk, before: &BTreeSet<String>, within: Duration, hub: &Camhub) -> (String, Instant) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(new) = disk.recordings().difference(before).next() {
            return (new.clone(), Instant::now());
        }
        assert!(Instant::now() < deadline, "no new file on {} in {within:?}; log:\n{}", disk.path(), hub.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn parse_time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().expect("time string")).expect("RFC 3339 time")
}

fn secs_since_epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_secs_f64()
}

#[tokio::test]
async fn a_failing_root_costs_under_a_second_and_a_returning_one_is_used_again() {
    let base = tempfile::tempdir().expect("temp dir");
    let (a, b, d) = (Disk::make(base.path(), "a"), Disk::make(base.path(), "b"), Disk::make(base.path(), "d"));
    let cam = TestCam::start(1);

    // D is another camhub's disk: that camhub marks it as its own, then stops.
    let other_data = base.path().join("other");
    std::fs::create_dir_all(&other_data).expect("data dir");
    let mut other = Camhub::start_at(&other_data, &format!("[[storage.roots]]\npath = \"{}\"\n", d.path()), "");
    other.stop();
    assert!(d.dir.join(".camhub-root").exists(), "the other camhub left no marker on its disk");

    let data = base.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let roots: String = [&a, &b, &d]
        .iter()
        .map(|disk| format!("[[storage.roots]]\npath = \"{}\"\nmin_free_mb = 16\n", disk.path()))
        .collect();
    let storage = format!("min_free_mb = 16\n{roots}");
    let extra = format!("[recording]\nsegment_seconds = 3\nfragment_ms = 500\n{}", camera_toml("cam", &cam.url(0)));
    let mut hub = Camhub::start_at(&data, &storage, &extra);
    let client = hub.client("admin").await;
    client
        .wait_status("cam", CONNECT, |s| s["status"] == "CONNECTED")
        .await
        .unwrap_or_else(|| panic!("cam never connected; log:\n{}", hub.log()));

    // The foreign disk is refused, said plainly, and never written to.
    let foreign = storage_root(&client, &d.dir).await;
    assert_eq!(foreign["state"], "foreign", "{foreign}");
    assert!(foreign["detail"].as_str().unwrap_or("").contains("another camhub database"), "{foreign}");
    assert!(hub.log().contains("storage root refused"), "no log line for the foreign disk:\n{}", hub.log());
    for disk in [&a, &b] {
        assert_eq!(storage_root(&client, &disk.dir).await["state"], "ok");
    }

    let started = client.call("start_recording", json!({ "device": "cam" })).await.expect("start");
    let first = started["filename"].as_str().expect("filename").to_owned();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(a.recordings().contains(&first), "the first root in order takes the recording; log:\n{}", hub.log());

    let mut faults: Vec<(&str, SystemTime)> = Vec::new();
    let mut detection_ms = Vec::new();
    let mut fillers = Vec::new();
    // The four kinds once each; `CAMHUB_ROOT_FAULTS=N` (scripts/bench/root-failures.sh) cycles them N times in all.
    let count = std::env::var("CAMHUB_ROOT_FAULTS").ok().and_then(|n| n.parse().ok()).unwrap_or(4);
    let kinds = ["lazy_unmount", "read_only", "io_error", "full"];
    for fault in kinds.iter().cycle().take(count).copied() {
        let on_a = a.recordings();
        let before_b = b.recordings();
        let at = SystemTime::now();
        let t = Instant::now();
        match fault {
            "lazy_unmount" => a.umount_lazy(),
            "read_only" => a.fail_to_read_only(),
            "io_error" => a.shut_down(),
            _ => fillers.push(a.fill(4 << 20)),
        }
        faults.push((fault, at));
        let (moved, seen) = wait_new_file(&b, &before_b, Duration::from_secs(5), &hub).await;
        detection_ms.push(seen.duration_since(t).as_millis());
        let state = match fault {
            "lazy_unmount" => "missing",
            // The health check finds it read-only, unless the recorder's write failed first: then it is held failed.
            "read_only" => "read_only|failed",
            "io_error" => "failed",
            _ => "full",
        };
        wait_root_state(&client, &a, state, Duration::from_secs(5), &hub).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // A comes back: checked, used again for the next segment, its files listed.
        match fault {
            "lazy_unmount" => a.mount().expect("mount A again"),
            "read_only" | "io_error" => a.repair_and_mount().await,
            _ => std::fs::remove_file(fillers.pop().expect("filler")).expect("remove filler"),
        }
        // A root that failed again soon after its last failure is held failed for longer each time (3 s, doubling):
        // with many faults in a row (CAMHUB_ROOT_FAULTS) its return takes that long.
        let back_within = if count > kinds.len() { Duration::from_secs(120) } else { Duration::from_secs(10) };
        wait_root_state(&client, &a, "ok", back_within, &hub).await;
        let (back, _) = wait_new_file(&a, &on_a, Duration::from_secs(10), &hub).await;
        eprintln!("{fault}: moved to B as {moved}, back on A as {back}");
        // Some of the segment on A is written before the next fault.
        tokio::time::sleep(Duration::from_millis(1800)).await;
    }

    let stopped = client.call("stop_recording", json!({ "device": "cam" })).await.expect("stop");
    assert_eq!(stopped["status"], "STOPPED", "{stopped}; log:\n{}", hub.log());
    // The returned root's files are listed by the storage guard (once a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The index matches the disks, and every indexed file plays.
    let list = client.call("list_recordings", json!({ "limit": 1000 })).await.expect("list");
    let files = list["files"].as_array().expect("files");
    let indexed: BTreeSet<String> = files.iter().map(|f| f["filename"].as_str().expect("name").to_owned()).collect();
    let on_disks: BTreeSet<String> = a.recordings().union(&b.recordings()).cloned().collect();
    assert_eq!(indexed, on_disks, "index and disks differ; log:\n{}", hub.log());
    assert!(d.recordings().is_empty(), "the foreign disk was written to");
    let key = hub.api_key("viewer");
    let mut spans = Vec::new();
    for f in files {
        let name = f["filename"].as_str().expect("name");
        let (disk, root) = if a.recordings().contains(name) { (&a, "A") } else { (&b, "B") };
        let path = disk.dir.join(name);
        assert_eq!(f["file_size"].as_u64(), Some(std::fs::metadata(&path).expect("meta").len()), "{name}");
        let (duration, ..) = ffprobe(&path).unwrap_or_else(|e| panic!("{name} does not demux: {e}"));
        decodes_cleanly(&path).unwrap_or_else(|e| panic!("{name} does not play: {e}"));
        let start = secs_since_epoch(parse_time(&f["start_time"]));
        spans.push((start, start + duration, root, name.to_owned()));
        // Served from its root.
        let (code, _, body) =
            common::http_request(hub.port, &format!("/files/recordings/{name}"), &[("X-API-Key", &key)])
                .expect("download");
        assert_eq!((code, body.len() as u64), (200, std::fs::metadata(&path).expect("meta").len()), "{name}");
    }
    spans.sort_by(|x, y| x.0.total_cmp(&y.0));

    // The session's timeline (the union of its files) has no hole longer than a second, at segment ends and root
    // failures alike. A file carried over to another root overlaps the one it replaces.
    let mut covered = spans[0].1;
    for pair in spans.windows(2) {
        let next = &pair[1];
        let gap = next.0 - covered;
        assert!(gap <= MAX_GAP, "{:.0} ms lost before {}; log:\n{}", gap * 1000.0, next.3, hub.log());
        covered = covered.max(next.1);
    }
    let t0 = spans[0].0;
    for (fault, at) in &faults {
        eprintln!("{fault} at {:.3}", secs_since_epoch(*at) - t0);
    }
    for s in &spans {
        eprintln!("{} {:8.3} - {:8.3} {}", s.2, s.0 - t0, s.1 - t0, s.3);
    }
    for (i, (fault, at)) in faults.iter().enumerate() {
        let at = secs_since_epoch(*at);
        // B's new file starts with the frames carried over, from before the fault: the latest B file starting before
        // it (the ones before are from earlier faults, each followed by A's return).
        let first_b = spans.iter().filter(|s| s.2 == "B" && s.0 <= at).max_by(|x, y| x.0.total_cmp(&y.0));
        let first_b = first_b.unwrap_or_else(|| panic!("no file on B for the {fault} fault"));
        // The last frame recorded before B's first, in whichever file holds it (A's open file, or when the disk lost
        // that file's unsynced start, the segment before it): the gap is what the switch lost; negative, an overlap.
        let before = spans.iter().filter(|s| s.3 != first_b.3 && s.0 <= first_b.0).max_by(|x, y| x.1.total_cmp(&y.1));
        let before = before.unwrap_or_else(|| panic!("nothing recorded before {}", first_b.3));
        let gap = (first_b.0 - before.1) * 1000.0;
        // A's file open at the fault, if the disk kept it.
        let open_a = spans
            .iter()
            .filter(|s| s.2 == "A" && s.0 <= at && s.0 >= first_b.0 - 3.0)
            .max_by(|x, y| x.0.total_cmp(&y.0));
        eprintln!(
            "{fault}: switch-over gap {gap:+.0} ms (negative: overlap, nothing lost) from {} to {}; A's open file {}; new \
             file on B seen {} ms after the fault",
            before.3,
            first_b.3,
            open_a
                .map(|s| format!("kept, ends {:+.0} ms from the fault", (s.1 - at) * 1000.0))
                .unwrap_or("lost with the disk's unsynced writes (its video is in B's file)".into()),
            detection_ms[i]
        );
        assert!(gap <= MAX_GAP * 1000.0, "{fault}: {gap:.0} ms lost");
    }

    // A goes away for good: its files stay listed (a missing disk is not a lost recording), are unavailable for
    // download and deletion, and a restart while it is away keeps their rows.
    let on_a: Vec<String> = a.recordings().into_iter().collect();
    assert!(!on_a.is_empty());
    a.umount_lazy();
    wait_root_state(&client, &a, "missing", Duration::from_secs(5), &hub).await;
    let (code, _, body) =
        common::http_request(hub.port, &format!("/files/recordings/{}", on_a[0]), &[("X-API-Key", &key)])
            .expect("download");
    let body = String::from_utf8_lossy(&body);
    assert!(code == 404 && body.contains("not available"), "{code} {body}");
    let info = client.call("get_recording_info", json!({ "filename": on_a[0] })).await.expect("still indexed");
    assert_eq!(info["available"], false, "{info}");
    let refused = client.call("delete_recording", json!({ "filename": on_a[0] })).await.expect_err("root away");
    assert!(refused.to_string().contains("not available"), "{refused}");
    drop(client);
    hub.restart(&extra);
    let client = hub.client("admin").await;
    let listed = client.call("list_recordings", json!({ "limit": 1000 })).await.expect("list");
    assert_eq!(listed["total"].as_u64(), Some(indexed.len() as u64), "rows of the absent root were dropped: {listed}");
    assert_eq!(storage_root(&client, &a.dir).await["state"], "missing");
    // A back after the restart: checked by its marker, and served again.
    a.mount().expect("mount A again");
    wait_root_state(&client, &a, "ok", Duration::from_secs(10), &hub).await;
    let (code, ..) = common::http_request(hub.port, &format!("/files/recordings/{}", on_a[0]), &[("X-API-Key", &key)])
        .expect("download");
    assert_eq!(code, 200);
    let info = client.call("get_recording_info", json!({ "filename": on_a[0] })).await.expect("indexed");
    assert_eq!(info["available"], true, "{info}");
    let old_id = storage_root(&client, &a.dir).await["id"].clone();

    // A replaced by a new, empty disk at its mountpoint: a new root (new id); A's files stay listed, unavailable.
    a.umount_lazy();
    wait_root_state(&client, &a, "missing", Duration::from_secs(5), &hub).await;
    let replacement = Disk::make_at(base.path(), "a2", &a.dir);
    let root = wait_root_state(&client, &replacement, "ok", Duration::from_secs(10), &hub).await;
    assert_ne!(root["id"], old_id, "a new disk took the old one's identity: {root}");
    let info = client.call("get_recording_info", json!({ "filename": on_a[0] })).await.expect("still indexed");
    assert_eq!(info["available"], false, "{info}");
    drop(client);
    // What camhub said about its roots, for the record.
    for line in hub.log().lines().filter(|l| l.contains("storage root") || l.contains("moved to another root")) {
        eprintln!("{line}");
    }
    drop(hub);
}
