//! `camhub backup` and `camhub restore`. A backup is a directory: a consistent copy of the database made with SQLite's
//! `VACUUM INTO` while the service may be running (it goes on recording), the config file and the key material of the
//! data dir (the JWT secret file), each with its permissions, and `manifest.json` (camhub version, time, schema
//! version, each file's size and SHA-256), written last so a backup without one is not a backup. Restore checks the
//! manifest before touching anything, refuses while a camhub holds the data dir's lock, moves the database it replaces
//! aside, and puts files back with their permissions. Recordings stay where they are: the next start's reconcile (or
//! `check --rebuild`) indexes the files recorded after the backup and drops rows of files deleted since.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::base::time::{file_stamp, iso};
use crate::storage::Db;
use crate::storage::db::latest_schema_version;
use crate::storage::files::sync_parent;
use crate::storage::lock::{DataDirLock, LockError};

/// The manifest's name in a backup directory.
pub const MANIFEST: &str = "manifest.json";
/// The layout of backups this camhub writes and reads.
const FORMAT: u32 = 1;
/// The database's name, in the data dir and in a backup.
const DB_FILE: &str = "camhub.db";
/// The config file's name in a backup.
const CONFIG_FILE: &str = "camhub.toml";
/// Files of the data dir that hold key material and travel with a backup.
const SECRET_FILES: &[&str] = &[crate::auth::SECRET_FILE];

/// Why a backup or restore did not happen; each kind has its own exit code in the CLI.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target directory already holds a backup.
    #[error("{} already holds a backup ({MANIFEST}); choose another directory or pass --overwrite", .0.display())]
    Exists(PathBuf),
    /// The target directory is where the files backed up live: the copies would replace them.
    #[error("{} holds the files to back up (the data dir or the config's directory); choose another directory", .0.display())]
    Target(PathBuf),
    /// A camhub runs on the data dir.
    #[error("{0}; stop it first")]
    Running(LockError),
    /// The backup is not one this camhub can restore: no manifest, a file changed, a newer schema.
    #[error("backup {}: {why}", .dir.display())]
    Invalid { dir: PathBuf, why: String },
    /// Reading, writing or the database failed.
    #[error("{0}")]
    Failed(String),
}

type Result<T, E = BackupError> = std::result::Result<T, E>;

fn failed(what: impl std::fmt::Display, e: impl std::fmt::Display) -> BackupError {
    BackupError::Failed(format!("{what}: {e}"))
}

/// What a backup holds, as `manifest.json` says it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub camhub_version: String,
    /// When the database was copied (ISO 8601, UTC).
    pub created_at: String,
    /// The data dir it was taken from.
    pub data_dir: PathBuf,
    /// The newest database migration in the copy.
    pub schema_version: i64,
    /// Recordings the copied index holds, and their total duration.
    pub segments: i64,
    pub segments_duration_ms: i64,
    pub files: Vec<Entry>,
}

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Its name in the backup directory (and, for the database and secrets, in the data dir).
    pub name: String,
    pub kind: Kind,
    /// Where it was taken from.
    pub source: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// Permission bits, octal (`0600`).
    pub mode: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Database,
    Config,
    Secret,
}

impl Manifest {
    fn entries(&self, kind: Kind) -> impl Iterator<Item = &Entry> {
        self.files.iter().filter(move |e| e.kind == kind)
    }
}

/// What `backup` takes a copy of, and where it puts it.
#[derive(Debug)]
pub struct BackupPlan<'a> {
    pub data_dir: &'a Path,
    /// The config file the service was started with, if any.
    pub config: Option<&'a Path>,
    pub to: &'a Path,
    /// Replace a backup already in `to`.
    pub overwrite: bool,
}

/// Takes a backup; safe while camhub runs (it only reads the data dir, and the database through one read
/// transaction).
pub async fn backup(plan: BackupPlan<'_>) -> Result<Manifest> {
    let to = plan.to;
    // Copies are renamed over their names in `to`: there, they would replace the very files they copy.
    let sources = [Some(plan.data_dir), plan.config.and_then(Path::parent)];
    if sources.into_iter().flatten().any(|dir| same_dir(dir, to)) {
        return Err(BackupError::Target(to.to_path_buf()));
    }
    if to.join(MANIFEST).exists() {
        if !plan.overwrite {
            return Err(BackupError::Exists(to.to_path_buf()));
        }
        remove_backup(to)?;
    }
    // The directory holds key material: only its owner may enter it.
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(to).map_err(|e| failed(to.display(), e))?;

    let source = plan.data_dir.join(DB_FILE);
    let partial = to.join(format!("{DB_FILE}.partial"));
    remove_if_present(&partial)?;
    let live = Db::open_existing(&source).await.map_err(|e| failed("opening the database", e))?;
    let copied = live.vacuum_into(&partial).await;
    live.close().await;
    copied.map_err(|e| failed("copying the database (VACUUM INTO)", e))?;
    let copy = Db::open_existing(&partial).await.map_err(|e| failed("opening the copy", e))?;
    let checked = async {
        copy.integrity_check().await.map_err(|why| failed("the copy fails SQLite's integrity check", why))?;
        let version = copy.schema_version().await.map_err(|e| failed("reading the schema version", e))?;
        let summary = copy.segments_summary().await.map_err(|e| failed("reading the index", e))?;
        Ok::<_, BackupError>((version, summary))
    }
    .await;
    copy.close().await;
    let (schema_version, (segments, segments_duration_ms)) = checked?;
    let created_at = iso(SystemTime::now());
    let mode = mode_of(&source)?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode))
        .map_err(|e| failed(partial.display(), e))?;
    File::open(&partial).and_then(|f| f.sync_all()).map_err(|e| failed(partial.display(), e))?;
    std::fs::rename(&partial, to.join(DB_FILE)).map_err(|e| failed(to.display(), e))?;
    let mut files = vec![entry_for(to, DB_FILE, Kind::Database, &source)?];

    if let Some(config) = plan.config {
        copy_keeping_mode(config, &to.join(CONFIG_FILE))?;
        files.push(entry_for(to, CONFIG_FILE, Kind::Config, config)?);
    }
    for name in SECRET_FILES {
        let secret = plan.data_dir.join(name);
        if secret.is_file() {
            copy_keeping_mode(&secret, &to.join(name))?;
            files.push(entry_for(to, name, Kind::Secret, &secret)?);
        }
    }
    let manifest = Manifest {
        format: FORMAT,
        camhub_version: crate::base::VERSION.to_owned(),
        created_at,
        data_dir: plan.data_dir.to_path_buf(),
        schema_version,
        segments,
        segments_duration_ms,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| failed("manifest", e))?;
    write_new(&to.join(MANIFEST), &text, 0o600)?;
    Ok(manifest)
}

/// Reads a backup's manifest and checks every file it lists (size and SHA-256) and that this camhub can run its
/// database; nothing is changed.
pub fn verify(from: &Path) -> Result<Manifest> {
    let invalid = |why: String| BackupError::Invalid { dir: from.to_path_buf(), why };
    let text = match std::fs::read(from.join(MANIFEST)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(invalid(format!("no {MANIFEST}: not a camhub backup, or an unfinished one")));
        }
        Err(e) => return Err(failed(from.join(MANIFEST).display(), e)),
    };
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| invalid(format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT {
        return Err(invalid(format!("layout {} (this camhub reads layout {FORMAT})", manifest.format)));
    }
    let latest = latest_schema_version();
    if manifest.schema_version > latest {
        return Err(invalid(format!(
            "made by camhub {} with database schema {}; this camhub ({}) knows schemas up to {latest}",
            manifest.camhub_version,
            manifest.schema_version,
            crate::base::VERSION
        )));
    }
    if manifest.entries(Kind::Database).count() != 1 {
        return Err(invalid("the manifest lists no database".into()));
    }
    for entry in &manifest.files {
        // Names come from the manifest, which anyone may have edited: plain names only.
        if crate::storage::files::validate_name("name", &entry.name).is_err() {
            return Err(invalid(format!("{:?} is not a plain file name", entry.name)));
        }
        let path = from.join(&entry.name);
        let (size, sha256) = match digest(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(invalid(format!("{} is missing", entry.name)));
            }
            Err(e) => return Err(failed(path.display(), e)),
        };
        if size != entry.size || sha256 != entry.sha256 {
            return Err(invalid(format!(
                "{} does not match the manifest ({size} bytes, SHA-256 {}..., expected {} bytes, {}...): \
                 changed or damaged since the backup",
                entry.name,
                &sha256[..12],
                entry.size,
                entry.sha256.get(..12).unwrap_or(&entry.sha256)
            )));
        }
        parse_mode(&entry.mode)
            .ok_or_else(|| invalid(format!("{}: mode {:?} is not octal", entry.name, entry.mode)))?;
    }
    Ok(manifest)
}

/// Writes the backup's config file to `path` if nothing is there (a restore onto a new machine), so the config can
/// then be loaded. Returns whether it did.
pub fn restore_missing_config(from: &Path, manifest: &Manifest, path: &Path) -> Result<bool> {
    let Some(entry) = manifest.entries(Kind::Config).next() else { return Ok(false) };
    if path.exists() {
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| failed(dir.display(), e))?;
    }
    put_back(&from.join(&entry.name), path, entry)?;
    Ok(true)
}

/// Puts a verified backup back into `data_dir`: the database (the one it replaces moved aside, with its WAL) and the
/// secret files, each with its permissions. Refuses while a camhub runs there. Returns what it did, one line each.
pub async fn restore(from: &Path, manifest: &Manifest, data_dir: &Path, config: Option<&Path>) -> Result<Vec<String>> {
    std::fs::create_dir_all(data_dir).map_err(|e| failed(data_dir.display(), e))?;
    // Held to the end, so camhub cannot start on a half-restored data dir.
    let _lock = DataDirLock::acquire(data_dir).map_err(|e| match e {
        e @ LockError::Held { .. } => BackupError::Running(e),
        e => failed("locking the data dir", e),
    })?;
    let mut done = Vec::new();
    let entry = manifest.entries(Kind::Database).next().ok_or_else(|| failed("manifest", "no database"))?;
    let incoming = data_dir.join(format!("{DB_FILE}.restoring"));
    remove_if_present(&incoming)?;
    put_back(&from.join(&entry.name), &incoming, entry)?;
    // The copy that landed is checked again (the backup may sit on a failing disk), then by SQLite itself.
    match digest(&incoming) {
        Ok((size, sha)) if size == entry.size && sha == entry.sha256 => {}
        Ok(_) => return Err(failed(incoming.display(), "copied database does not match the manifest")),
        Err(e) => return Err(failed(incoming.display(), e)),
    }
    let check = Db::open_existing(&incoming).await.map_err(|e| failed("opening the restored database", e))?;
    let sound = check.integrity_check().await;
    check.close().await;
    sound.map_err(|why| BackupError::Invalid { dir: from.to_path_buf(), why: format!("database: {why}") })?;

    let target = data_dir.join(DB_FILE);
    if target.exists() {
        let aside = data_dir.join(format!("{DB_FILE}.before-restore-{}", file_stamp(SystemTime::now())));
        // The WAL and its index belong to the database they were written for: they move with it, or SQLite would
        // replay the old database's pages into the restored one.
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", target.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                std::fs::rename(&from, &to).map_err(|e| failed(from.display(), e))?;
            }
        }
        done.push(format!("moved the database it replaces aside to {}", aside.display()));
    } else {
        for suffix in ["-wal", "-shm"] {
            remove_if_present(Path::new(&format!("{}{suffix}", target.display())))?;
        }
    }
    std::fs::rename(&incoming, &target).map_err(|e| failed(target.display(), e))?;
    sync_parent(&target).map_err(|e| failed(data_dir.display(), e))?;
    done.push(format!(
        "restored the database to {} (schema {}, {} recordings, {:.1} s, taken {} by camhub {})",
        target.display(),
        manifest.schema_version,
        manifest.segments,
        manifest.segments_duration_ms as f64 / 1000.0,
        manifest.created_at,
        manifest.camhub_version
    ));

    for entry in manifest.entries(Kind::Secret) {
        let target = data_dir.join(&entry.name);
        let same = digest(&target).is_ok_and(|(_, sha)| sha == entry.sha256);
        if !same {
            let incoming = data_dir.join(format!(".{}.restoring", entry.name));
            remove_if_present(&incoming)?;
            put_back(&from.join(&entry.name), &incoming, entry)?;
            std::fs::rename(&incoming, &target).map_err(|e| failed(target.display(), e))?;
            sync_parent(&target).map_err(|e| failed(data_dir.display(), e))?;
        }
        done.push(format!(
            "{} {} (mode {})",
            if same { "kept the identical" } else { "restored" },
            target.display(),
            entry.mode
        ));
    }

    if let (Some(entry), Some(path)) = (manifest.entries(Kind::Config).next(), config) {
        let same = digest(path).is_ok_and(|(_, sha)| sha == entry.sha256);
        done.push(if same {
            format!("config {} is the backup's", path.display())
        } else {
            format!(
                "config {} differs from the backup's and was left as it is (the backup's: {})",
                path.display(),
                from.join(&entry.name).display()
            )
        });
    }
    done.push(
        "recordings on disk were not touched: files recorded after the backup are indexed, and rows of files deleted \
         since are dropped, when camhub next starts (or now with `camhub check --rebuild`)"
            .into(),
    );
    Ok(done)
}

/// Removes a previous backup from `dir`, its manifest first (a backup is only whole while its manifest is there).
fn remove_backup(dir: &Path) -> Result<()> {
    let old = std::fs::read(dir.join(MANIFEST)).ok().and_then(|t| serde_json::from_slice::<Manifest>(&t).ok());
    remove_if_present(&dir.join(MANIFEST))?;
    let mut names: Vec<String> = old.map(|m| m.files.into_iter().map(|e| e.name).collect()).unwrap_or_default();
    names.extend([DB_FILE, CONFIG_FILE].map(String::from));
    names.extend(SECRET_FILES.iter().map(|s| s.to_string()));
    for name in names {
        if crate::storage::files::validate_name("name", &name).is_ok() {
            remove_if_present(&dir.join(name))?;
        }
    }
    Ok(())
}

/// Whether two paths name the same existing directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    let a = if a.as_os_str().is_empty() { Path::new(".") } else { a };
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed(path.display(), e)),
    }
}

fn mode_of(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path).map_err(|e| failed(path.display(), e))?.permissions().mode() & 0o7777)
}

fn parse_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o7777)
}

/// The manifest entry of `name` in the backup `dir`, taken from `source`.
fn entry_for(dir: &Path, name: &str, kind: Kind, source: &Path) -> Result<Entry> {
    let path = dir.join(name);
    let (size, sha256) = digest(&path).map_err(|e| failed(path.display(), e))?;
    Ok(Entry {
        name: name.to_owned(),
        kind,
        source: source.to_path_buf(),
        size,
        sha256,
        mode: format!("{:04o}", mode_of(&path)?),
    })
}

/// Size and SHA-256 (hex) of a file.
fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Copies `from` to the new file `to` with `from`'s permissions.
fn copy_keeping_mode(from: &Path, to: &Path) -> Result<()> {
    remove_if_present(to)?;
    copy_with_mode(from, to, mode_of(from)?)
}

/// Copies a backup file to the new file `to` with the mode its manifest entry records.
fn put_back(from: &Path, to: &Path, entry: &Entry) -> Result<()> {
    copy_with_mode(from, to, parse_mode(&entry.mode).ok_or_else(|| failed(&entry.name, "mode is not octal"))?)
}

/// Copies `from` to the new file `to`, whose permissions are `mode` from its creation on (a secret is never readable
/// by others, not even for a moment), then syncs it and its directory.
fn copy_with_mode(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let mut out =
        OpenOptions::new().write(true).create_new(true).mode(mode).open(to).map_err(|e| failed(to.display(), e))?;
    std::io::copy(&mut File::open(from).map_err(|e| failed(from.display(), e))?, &mut out)
        .map_err(|e| failed(to.display(), e))?;
    // The umask may have taken bits away at creation.
    out.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| failed(to.display(), e))?;
    out.sync_all().map_err(|e| failed(to.display(), e))?;
    sync_parent(to).map_err(|e| failed(to.display(), e))
}

/// Writes a new file whole: a temporary name, synced, then renamed.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    remove_if_present(&partial)?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&partial)
        .map_err(|e| failed(partial.display(), e))?;
    out.write_all(bytes).and_then(|()| out.sync_all()).map_err(|e| failed(partial.display(), e))?;
    std::fs::rename(&partial, path).map_err(|e| failed(path.display(), e))?;
    sync_parent(path).map_err(|e| failed(path.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_naming(name: &str) -> Manifest {
        Manifest {
            format: FORMAT,
            camhub_version: "0.1.0".into(),
            created_at: "2026-12-01T00:00:00.000Z".into(),
            data_dir: "/var/lib/camhub".into(),
            schema_version: 1,
            segments: 0,
            segments_duration_ms: 0,
            files: vec![Entry {
                name: name.into(),
                kind: Kind::Database,
                source: "/var/lib/camhub/camhub.db".into(),
                size: 0,
                sha256: hex::encode(Sha256::digest(b"")),
                mode: "0600".into(),
            }],
        }
    }

    fn verify_with(manifest: &Manifest) -> Result<Manifest> {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(MANIFEST), serde_json::to_vec(manifest).expect("json")).expect("manifest");
        std::fs::write(dir.path().join(DB_FILE), b"").expect("db");
        verify(dir.path())
    }

    #[test]
    fn a_manifest_cannot_point_outside_its_backup_or_ask_for_a_newer_schema() {
        assert!(verify_with(&manifest_naming(DB_FILE)).is_ok());
        for name in ["../camhub.db", "/etc/passwd", "a/b"] {
            let e = verify_with(&manifest_naming(name)).expect_err(name);
            assert!(matches!(e, BackupError::Invalid { .. }), "{name}: {e}");
        }
        let mut newer = manifest_naming(DB_FILE);
        newer.schema_version = latest_schema_version() + 1;
        let e = verify_with(&newer).expect_err("newer schema");
        assert!(e.to_string().contains("knows schemas up to"), "{e}");
        let dir = tempfile::tempdir().expect("temp dir");
        let e = verify(dir.path()).expect_err("no manifest");
        assert!(e.to_string().contains("not a camhub backup"), "{e}");
    }

    #[tokio::test]
    async fn a_backup_never_lands_on_the_files_it_copies() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let config = dir.path().join("etc/camhub.toml");
        std::fs::create_dir_all(config.parent().expect("parent")).expect("etc");
        std::fs::write(&config, "").expect("config");
        for to in [data.clone(), data.join("."), config.parent().expect("parent").to_path_buf()] {
            let plan = BackupPlan { data_dir: &data, config: Some(&config), to: &to, overwrite: true };
            let e = backup(plan).await.expect_err("refused");
            assert!(matches!(e, BackupError::Target(_)), "{}: {e}", to.display());
        }
        assert_eq!(std::fs::read_to_string(&config).expect("config kept"), "");
    }
}
