//! Storage roots for recordings (`[[storage.roots]]`, or `<root>/recordings` alone): each root directory carries a
//! marker (`.camhub-root`: this database's id and the root's id) held under an exclusive `flock` while camhub uses it,
//! so a swapped or foreign disk is recognised and never mixed up, and two camhubs never share a root. Owns each root's
//! state (ok, full, read-only, missing, foreign, failed) as the last health check found it, which root a new segment
//! goes to (the first ok one, in config order), and which roots came back and must be listed again. Knows directories
//! and markers, never recordings' pipelines; the periodic check is driven by its caller (`check`).

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::Db;
use crate::config::{RootConfig, StorageConfig};
use crate::error::{Dependency, Error, Result};

/// The marker file in each root's directory (a dot file: listings of recordings skip it).
pub const MARKER: &str = ".camhub-root";
/// The id of `<storage.root>/recordings`, where recordings lived before several roots (and rows made then point).
pub const DEFAULT_ROOT: &str = "default";
const DATABASE_ID_SETTING: &str = "database_id";
/// How long a root a writer saw fail stays failed before it is checked again; doubled for each failure that follows
/// within `FAILURES_FORGOTTEN`, up to `FAILED_FOR_MAX`, so a disk that keeps failing is not tried every few seconds.
const FAILED_FOR: Duration = Duration::from_secs(3);
const FAILED_FOR_MAX: Duration = Duration::from_secs(300);
const FAILURES_FORGOTTEN: Duration = Duration::from_secs(600);

/// What a root is fit for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RootState {
    /// Marked as ours, locked, writable, above its free-space floor.
    Ok,
    /// Below its floor: used only when no root is ok (the storage guard then frees space or stops recordings).
    Full,
    ReadOnly,
    /// Not there (unmounted, the directory or marker gone, another filesystem in its place).
    Missing,
    /// Carries another database's marker, or data without a marker: never written to.
    Foreign,
    /// Writes failed, it does not answer, or another process holds its lock.
    Failed,
}

impl RootState {
    pub fn as_str(self) -> &'static str {
        match self {
            RootState::Ok => "ok",
            RootState::Full => "full",
            RootState::ReadOnly => "read_only",
            RootState::Missing => "missing",
            RootState::Foreign => "foreign",
            RootState::Failed => "failed",
        }
    }

    /// Whether files on it can be read (served, listed again).
    fn readable(self) -> bool {
        matches!(self, RootState::Ok | RootState::Full | RootState::ReadOnly | RootState::Failed)
    }
}

/// One root as `get_storage_info` reports it.
#[derive(Debug, Clone)]
pub struct RootStatus {
    /// From its marker; `None` while none was ever read.
    pub id: Option<String>,
    pub path: PathBuf,
    pub state: RootState,
    /// Why it is not ok, for people.
    pub detail: Option<String>,
    pub total: u64,
    pub available: u64,
    pub min_free: u64,
    /// The filesystem (`st_dev`), so roots sharing one are counted once.
    pub dev: Option<u64>,
}

/// A root that holds files now: its id and directory.
#[derive(Debug, Clone)]
pub struct Present {
    pub id: String,
    pub dir: PathBuf,
    pub min_free: u64,
    pub state: RootState,
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    database_id: String,
    root_id: String,
}

#[derive(Debug)]
struct Root {
    config: RootConfig,
    /// What the last check found; a short lock, never held across `.await` or file work.
    view: Mutex<View>,
}

#[derive(Debug)]
struct View {
    id: Option<String>,
    state: RootState,
    detail: Option<String>,
    total: u64,
    available: u64,
    /// The marker, open and flocked: held while the root is in use, dropped when it goes away (so a lazily unmounted
    /// filesystem can let go) and taken again when it returns.
    lock: Option<std::sync::Arc<File>>,
    /// The filesystem the root was on when locked: another one at the path is another disk (or the bare mountpoint).
    dev: Option<u64>,
    /// Set when a writer saw the root fail: failed until then, whatever the check finds.
    failed_until: Option<Instant>,
    /// Failures in a row (each within `FAILURES_FORGOTTEN` of the last) and when the last was.
    failures: (u32, Option<Instant>),
    /// Checked once already (the first check is start-up, whose reconciliation lists its files).
    checked: bool,
}

/// The recordings roots, in config order.
#[derive(Debug)]
pub struct Roots {
    db: Db,
    database_id: String,
    /// `<storage.root>/recordings`: the one directory that may be adopted with files and no marker (an install from
    /// before several roots), as the `default` root.
    legacy: PathBuf,
    roots: Vec<Root>,
    /// Roots that came back after being away (or were first seen after start-up): their files are to be listed again.
    returned: Mutex<Vec<String>>,
    /// Makes the open segments on the roots durable, a filesystem at a time.
    syncer: crate::storage::syncer::Syncer,
}

/// What a check of one root found (computed off the runtime).
struct Found {
    id: Option<String>,
    state: RootState,
    detail: Option<String>,
    total: u64,
    available: u64,
    lock: Option<std::sync::Arc<File>>,
    dev: Option<u64>,
    /// A marker was written now, or the root was found at another path than the database knew.
    record: bool,
}

impl Found {
    fn gone(state: RootState, detail: impl Into<String>) -> Found {
        Found {
            id: None,
            state,
            detail: Some(detail.into()),
            total: 0,
            available: 0,
            lock: None,
            dev: None,
            record: false,
        }
    }
}

impl Roots {
    /// The roots of `config`, each checked once (markers read or written, locks taken). A root that cannot be used
    /// is logged and reported, never fatal: recordings go to the others.
    pub async fn open(db: Db, config: &StorageConfig) -> Result<Roots> {
        let database_id = match db.setting(DATABASE_ID_SETTING).await? {
            Some(id) => id,
            None => {
                let id = random_id();
                db.set_setting(DATABASE_ID_SETTING, &id).await?;
                id
            }
        };
        let roots = config
            .recording_roots()
            .into_iter()
            .map(|config| Root {
                config,
                view: Mutex::new(View {
                    id: None,
                    state: RootState::Missing,
                    detail: Some("not checked yet".into()),
                    total: 0,
                    available: 0,
                    lock: None,
                    dev: None,
                    failed_until: None,
                    failures: (0, None),
                    checked: false,
                }),
            })
            .collect();
        let roots = Roots {
            db,
            database_id,
            legacy: config.root.join("recordings"),
            roots,
            returned: Mutex::new(Vec::new()),
            syncer: Default::default(),
        };
        for i in 0..roots.roots.len() {
            roots.check(i).await;
        }
        Ok(roots)
    }

    /// For `check --rebuild` on a database that knows no storage root (one lost and started afresh): the database
    /// takes the id the roots' markers name, so the disks it rebuilds from are its own again instead of foreign.
    /// Markers naming different databases: the id most of them name (the others stay foreign). Returns the id taken.
    pub async fn adopt(db: &Db, config: &StorageConfig) -> Result<Option<String>> {
        if !db.storage_roots().await?.is_empty() {
            return Ok(None);
        }
        let paths: Vec<PathBuf> = config.recording_roots().into_iter().map(|r| r.path).collect();
        let ids = crate::storage::files::blocking(move || {
            let mut ids: Vec<String> = Vec::new();
            for path in paths {
                if let Ok(bytes) = std::fs::read(path.join(MARKER))
                    && let Ok(marker) = serde_json::from_slice::<Marker>(&bytes)
                {
                    ids.push(marker.database_id);
                }
            }
            Ok(ids)
        })
        .await?;
        let most = ids.iter().max_by_key(|id| ids.iter().filter(|other| other == id).count()).cloned();
        if let Some(id) = &most {
            db.set_setting(DATABASE_ID_SETTING, id).await?;
            info!(database_id = id, "the database takes the id its storage roots carry");
        }
        Ok(most)
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Checks root `i` (marker, lock, filesystem, free space, read-only flag) and updates its state. File work runs
    /// on the blocking pool; a root that does not answer within two seconds is failed until it does.
    pub async fn check(&self, i: usize) {
        let Some(root) = self.roots.get(i) else { return };
        let (held, dev, id) = {
            let v = root.view.lock();
            (v.lock.clone(), v.dev, v.id.clone())
        };
        let known = if held.is_some() { Vec::new() } else { self.db.storage_roots().await.unwrap_or_default() };
        let (path, min_free) = (root.config.path.clone(), root.config.min_free_bytes);
        let database_id = self.database_id.clone();
        let legacy = path == self.legacy;
        let mut work = tokio::task::spawn_blocking(move || match (held, dev, id) {
            (Some(lock), Some(dev), Some(id)) => examine_held(&path, min_free, lock, dev, id),
            _ => attach(&path, min_free, &database_id, legacy, &known),
        });
        let found = match tokio::time::timeout(Duration::from_secs(2), &mut work).await {
            Ok(found) => found.unwrap_or_else(|e| Found::gone(RootState::Failed, format!("check panicked: {e}"))),
            Err(_) => {
                self.set_failed(i, "does not answer (a check took over 2 s)");
                work.await.unwrap_or_else(|e| Found::gone(RootState::Failed, format!("check panicked: {e}")))
            }
        };
        self.apply(i, found).await;
    }

    async fn apply(&self, i: usize, mut found: Found) {
        let root = &self.roots[i];
        // The same disk at two configured paths (a copy of a disk, a bind mount) is used at the first only.
        if let Some(id) = &found.id
            && self.roots.iter().enumerate().any(|(j, other)| {
                let v = other.view.lock();
                j != i && v.lock.is_some() && v.id.as_deref() == Some(id)
            })
        {
            found = Found::gone(RootState::Foreign, format!("root {id} is already in use at another configured path"));
        }
        if found.record
            && let Some(id) = &found.id
            && let Err(e) = self.db.upsert_storage_root(id, &root.config.path.to_string_lossy()).await
        {
            warn!(err = %e, "cannot record the storage root in the database");
        }
        let path = root.config.path.display().to_string();
        let (before, now, came_back, first) = {
            let mut v = root.view.lock();
            if let Some(until) = v.failed_until {
                if Instant::now() < until && found.lock.is_some() {
                    found.state = RootState::Failed;
                    found.detail = v.detail.clone();
                } else if Instant::now() >= until {
                    v.failed_until = None;
                }
            }
            let before = v.state;
            let first = !std::mem::replace(&mut v.checked, true);
            v.state = found.state;
            v.detail = found.detail.clone();
            v.total = found.total;
            v.available = found.available;
            if found.id.is_some() {
                v.id = found.id.clone();
            }
            v.lock = found.lock.take();
            v.dev = if v.lock.is_some() { found.dev } else { None };
            let writable = |s: RootState| matches!(s, RootState::Ok | RootState::Full);
            let came_back = !first && writable(found.state) && !writable(before);
            (before, found.state, came_back, first)
        };
        if before != now || first {
            let detail = found.detail.as_deref().unwrap_or("");
            match now {
                RootState::Ok => info!(root = path, id = found.id.as_deref().unwrap_or(""), "storage root ok"),
                RootState::Foreign => warn!(root = path, detail, "storage root refused: it is not this camhub's"),
                _ => warn!(root = path, state = now.as_str(), detail, "storage root not usable"),
            }
        }
        if came_back && let Some(id) = found.id.or_else(|| root.view.lock().id.clone()) {
            self.returned.lock().push(id);
        }
    }

    fn set_failed(&self, i: usize, why: &str) {
        let root = &self.roots[i];
        let mut v = root.view.lock();
        if v.state != RootState::Failed {
            warn!(root = %root.config.path.display(), why, "storage root failed");
        }
        v.state = RootState::Failed;
        v.detail = Some(why.to_owned());
        let now = Instant::now();
        let recent = v.failures.1.is_some_and(|last| now.duration_since(last) < FAILURES_FORGOTTEN);
        let n = if recent { v.failures.0.saturating_add(1) } else { 1 };
        v.failures = (n, Some(now));
        let hold = FAILED_FOR.saturating_mul(1 << (n - 1).min(8)).min(FAILED_FOR_MAX);
        v.failed_until = Some(now + hold);
    }

    /// Makes what was written to the segment at `path` so far durable (`storage::syncer`): the recorders' periodic
    /// syncs of one turn become one `syncfs` per filesystem.
    pub fn sync(&self, path: PathBuf) -> crate::storage::syncer::Synced {
        self.syncer.sync(path)
    }

    /// A writer found root `id` failing (an I/O error, a refused write): it is not used for a while.
    pub fn fail(&self, id: &str, why: &str) {
        if let Some(i) = self.index_of(id) {
            self.set_failed(i, why);
        }
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.roots.iter().position(|r| {
            let v = r.view.lock();
            v.lock.is_some() && v.id.as_deref() == Some(id)
        })
    }

    /// Where a new segment goes: the first ok root (config order) other than `except`; failing that, the first full
    /// one (the storage guard frees space there or stops recordings).
    pub fn pick(&self, except: Option<&str>) -> Option<(String, PathBuf)> {
        let candidates: Vec<(String, PathBuf, RootState)> = self
            .roots
            .iter()
            .filter_map(|r| {
                let v = r.view.lock();
                let id = v.id.clone().filter(|_| v.lock.is_some())?;
                (Some(id.as_str()) != except).then(|| (id, r.config.path.clone(), v.state))
            })
            .collect();
        let first = |state| candidates.iter().find(|c| c.2 == state).map(|(id, p, _)| (id.clone(), p.clone()));
        first(RootState::Ok).or_else(|| first(RootState::Full))
    }

    /// Why a segment on root `id` should move now, if it should: the root is no longer ok and another one is.
    pub fn trouble(&self, id: &str) -> Option<String> {
        let (state, detail) = match self.index_of(id) {
            Some(i) => {
                let v = self.roots[i].view.lock();
                (v.state, v.detail.clone())
            }
            None => (RootState::Missing, Some("gone".to_owned())),
        };
        if state == RootState::Ok {
            return None;
        }
        let elsewhere = self.pick(Some(id)).is_some_and(|(other, _)| self.state_of(&other) == Some(RootState::Ok));
        let must_move = !matches!(state, RootState::Full);
        (elsewhere || must_move).then(|| format!("root {id} {}: {}", state.as_str(), detail.unwrap_or_default()))
    }

    /// Whether root `id` is held and ok.
    pub fn is_ok(&self, id: &str) -> bool {
        self.state_of(id) == Some(RootState::Ok)
    }

    fn state_of(&self, id: &str) -> Option<RootState> {
        self.index_of(id).map(|i| self.roots[i].view.lock().state)
    }

    /// The directory of root `id` while its files can be read; `None` while it is away.
    pub fn dir_of(&self, id: &str) -> Option<PathBuf> {
        let i = self.index_of(id)?;
        let v = self.roots[i].view.lock();
        v.state.readable().then(|| self.roots[i].config.path.clone())
    }

    /// The roots whose files can be read now.
    pub fn present(&self) -> Vec<Present> {
        self.roots
            .iter()
            .filter_map(|r| {
                let v = r.view.lock();
                let id = v.id.clone().filter(|_| v.lock.is_some() && v.state.readable())?;
                Some(Present { id, dir: r.config.path.clone(), min_free: r.config.min_free_bytes, state: v.state })
            })
            .collect()
    }

    /// Whether any root is below its floor (the storage guard then defends it).
    pub fn any_full(&self) -> bool {
        self.roots.iter().any(|r| r.view.lock().state == RootState::Full)
    }

    /// Every root as the last check found it.
    pub fn statuses(&self) -> Vec<RootStatus> {
        self.roots
            .iter()
            .map(|r| {
                let v = r.view.lock();
                RootStatus {
                    id: v.id.clone(),
                    path: r.config.path.clone(),
                    state: v.state,
                    detail: v.detail.clone(),
                    total: v.total,
                    available: v.available,
                    min_free: r.config.min_free_bytes,
                    dev: v.dev,
                }
            })
            .collect()
    }

    /// Roots that came back since the last call: their files are to be listed again.
    pub fn take_returned(&self) -> Vec<String> {
        std::mem::take(&mut *self.returned.lock())
    }
}

/// A root camhub holds: still the same filesystem with our marker, writable, with room?
fn examine_held(path: &Path, min_free: u64, lock: std::sync::Arc<File>, dev: u64, id: String) -> Found {
    let marker = path.join(MARKER);
    let same = match (std::fs::metadata(path), std::fs::metadata(&marker), lock.metadata()) {
        (Ok(dir), Ok(m), Ok(held)) => dir.dev() == dev && m.dev() == held.dev() && m.ino() == held.ino(),
        _ => false,
    };
    if !same {
        // The lock is dropped with `found`: the filesystem that went away is let go.
        return Found::gone(RootState::Missing, "gone: unmounted, or another disk or directory in its place");
    }
    measure(path, &marker, min_free, lock, dev, id, false)
}

/// Free space and the read-only flag of a root whose marker is ours and locked.
fn measure(
    path: &Path,
    marker: &Path,
    min_free: u64,
    lock: std::sync::Arc<File>,
    dev: u64,
    id: String,
    record: bool,
) -> Found {
    let mut found = Found {
        id: Some(id),
        state: RootState::Ok,
        detail: None,
        total: 0,
        available: 0,
        lock: Some(lock),
        dev: Some(dev),
        record,
    };
    match super::disk_usage(path) {
        Ok((total, available)) => {
            found.total = total;
            found.available = available;
            if available < min_free {
                found.state = RootState::Full;
                found.detail = Some(format!("{available} bytes free, below its floor of {min_free}"));
            }
        }
        Err(e) => {
            found.state = RootState::Failed;
            found.detail = Some(format!("statvfs: {e}"));
            return found;
        }
    }
    // Opening for writing writes nothing, and fails at once on a read-only filesystem.
    match std::fs::OpenOptions::new().append(true).open(marker) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            found.state = RootState::ReadOnly;
            found.detail = Some("mounted read-only".into());
        }
        Err(e) => {
            found.state = RootState::Failed;
            found.detail = Some(format!("marker not writable: {e}"));
        }
    }
    found
}

/// A root camhub does not hold yet: reads (or, for a new empty root, writes) its marker and takes its lock.
fn attach(path: &Path, min_free: u64, database_id: &str, legacy: bool, known: &[(String, String)]) -> Found {
    let dir = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return Found::gone(RootState::Failed, "not a directory"),
        Err(e) if e.kind() == ErrorKind::NotFound && legacy => {
            if let Err(e) = std::fs::create_dir_all(path) {
                return Found::gone(RootState::Failed, format!("cannot create it: {e}"));
            }
            return attach(path, min_free, database_id, legacy, known);
        }
        Err(e) => return Found::gone(RootState::Missing, format!("not there: {e}")),
    };
    let marker_path = path.join(MARKER);
    let path_text = path.to_string_lossy();
    let (marker, record) = match std::fs::read(&marker_path) {
        Ok(bytes) => match serde_json::from_slice::<Marker>(&bytes) {
            Ok(m) => {
                let moved = !known.iter().any(|(id, p)| *id == m.root_id && *p == path_text);
                (m, moved)
            }
            Err(e) => return Found::gone(RootState::Foreign, format!("unreadable marker {MARKER}: {e}")),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // A known root without its marker is its disk's bare mountpoint (unmounted): never marked again. Only a
            // fresh, empty filesystem mounted there (a replaced disk) becomes a new root.
            let fresh_disk = is_empty(path) && is_mount_point(path, &dir);
            if known.iter().any(|(_, p)| *p == path_text) && !fresh_disk {
                return Found::gone(
                    RootState::Missing,
                    format!("no {MARKER}: not the disk camhub recorded to here (not mounted?)"),
                );
            }
            if !legacy && !is_empty(path) {
                return Found::gone(
                    RootState::Foreign,
                    format!("holds files but no {MARKER}: camhub takes only an empty directory as a new root"),
                );
            }
            let id = if legacy { DEFAULT_ROOT.to_owned() } else { random_id() };
            let m = Marker { database_id: database_id.to_owned(), root_id: id };
            if let Err(e) = write_marker(&marker_path, &m) {
                let state = if e.raw_os_error() == Some(libc::EROFS) { RootState::ReadOnly } else { RootState::Failed };
                return Found::gone(state, format!("cannot write {MARKER}: {e}"));
            }
            info!(root = %path.display(), id = m.root_id, "new storage root marked");
            (m, true)
        }
        Err(e) => return Found::gone(RootState::Failed, format!("cannot read {MARKER}: {e}")),
    };
    if marker.database_id != database_id {
        return Found::gone(
            RootState::Foreign,
            format!(
                "its {MARKER} names another camhub database ({}, this one is {database_id}): a disk from another \
                 camhub is never written to",
                marker.database_id
            ),
        );
    }
    let lock = match File::open(&marker_path) {
        Ok(f) => f,
        Err(e) => return Found::gone(RootState::Failed, format!("cannot open {MARKER}: {e}")),
    };
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Found::gone(RootState::Failed, "in use by another camhub process (its marker is locked)");
        }
        Err(std::fs::TryLockError::Error(e)) => return Found::gone(RootState::Failed, format!("cannot lock: {e}")),
    }
    measure(path, &marker_path, min_free, std::sync::Arc::new(lock), dir.dev(), marker.root_id, record)
}

/// Whether `path` is the root of a filesystem of its own (its parent is on another one).
fn is_mount_point(path: &Path, meta: &std::fs::Metadata) -> bool {
    path.parent().and_then(|p| std::fs::metadata(p).ok()).is_some_and(|parent| parent.dev() != meta.dev())
}

/// Nothing in it but what `mkfs` leaves (`lost+found`).
fn is_empty(path: &Path) -> bool {
    std::fs::read_dir(path).map(|entries| entries.flatten().all(|e| e.file_name() == "lost+found")).unwrap_or(false)
}

/// Writes the marker whole or not at all (temporary file, fsync, rename, directory fsync).
fn write_marker(path: &Path, marker: &Marker) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(marker).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    super::files::sync_parent(path)
}

fn random_id() -> String {
    let mut bytes = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}

/// Bytes of the recordings in a root directory (dot files, such as the marker, are not recordings).
pub fn recordings_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A recording on a root that is away, said the same way everywhere.
pub fn unavailable(filename: &str, root: &str) -> Error {
    Error::dependency(
        Dependency::Storage,
        format!("recording {filename} is on storage root {root}, which is not available now"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_root_is_marked_and_locked_and_a_foreign_one_refused() {
        let data = tempfile::tempdir().expect("temp dir");
        let disk = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&data.path().join("camhub.db")).await.expect("db");
        let raw = format!(
            "[storage]\nroot = {:?}\n[[storage.roots]]\npath = {:?}\nmin_free_mb = 0\n",
            data.path(),
            disk.path()
        );
        let config = crate::config::Config::from_toml(&raw).expect("config").storage;
        let roots = Roots::open(db.clone(), &config).await.expect("roots");
        let status = &roots.statuses()[0];
        assert_eq!(status.state, RootState::Ok, "{status:?}");
        let id = status.id.clone().expect("an id");
        assert!(disk.path().join(MARKER).exists());
        assert_eq!(roots.pick(None).map(|p| p.0), Some(id.clone()));
        // A second holder (another camhub on the same root) is refused by the lock.
        let again = Roots::open(db.clone(), &config).await.expect("roots");
        assert_eq!(again.statuses()[0].state, RootState::Failed);
        assert!(again.pick(None).is_none());
        drop(again);
        // Another database finds a marker that is not its own.
        let other = tempfile::tempdir().expect("temp dir");
        let other_db = Db::open(&other.path().join("camhub.db")).await.expect("db");
        drop(roots);
        let raw = format!("[storage]\nroot = {:?}\n[[storage.roots]]\npath = {:?}\n", other.path(), disk.path());
        let foreign = Roots::open(other_db, &crate::config::Config::from_toml(&raw).expect("config").storage)
            .await
            .expect("roots");
        let status = &foreign.statuses()[0];
        assert_eq!(status.state, RootState::Foreign);
        assert!(status.detail.as_deref().unwrap_or("").contains("another camhub database"), "{status:?}");
        // A known root whose marker went (an unmounted disk's bare mountpoint) is missing, and never re-marked.
        drop(foreign);
        std::fs::remove_file(disk.path().join(MARKER)).expect("remove marker");
        let roots = Roots::open(db, &config).await.expect("roots");
        assert_eq!(roots.statuses()[0].state, RootState::Missing);
        assert!(!disk.path().join(MARKER).exists());
    }
}
