//! Hot reload of the config file: what starts one (SIGHUP, the file watcher, `reload_config`), what a reload reports,
//! and the watcher itself. The three triggers end in the same `App::reload`, which reads the file again, computes the
//! difference with the running config (`Config::diff`) and applies it; this module knows nothing of cameras.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tracing::{debug, warn};

/// Editors write a file in several steps (a temporary file, a rename, a chmod), all within a few milliseconds; one
/// reload follows the last of them. A change is seen between one and two of these after the save (see `watch`).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// The config file changed on disk.
    Watcher,
    /// `reload_config`.
    Api,
    /// `check-config` asking what a reload would do (nothing is applied).
    DryRun,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::Watcher => "watcher",
            Trigger::Api => "api",
            Trigger::DryRun => "dry_run",
        }
    }
}

/// Changes the log filter of the running process (the logging set-up's reload handle); the error says why a filter
/// was refused.
pub type LogFilter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the command line hands the service besides its config: where the config came from (read again on reload,
/// and watched) and how to change the log filter.
#[derive(Clone, Default)]
pub struct Reloading {
    /// The config file; `None` when camhub runs on defaults and the environment, and there is nothing to reload.
    pub path: Option<PathBuf>,
    pub log: Option<LogFilter>,
    /// `RUST_LOG` is set: it wins over `[log] level`, at start and at every reload.
    pub log_from_env: bool,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading").field("path", &self.path).field("log_from_env", &self.log_from_env).finish()
    }
}

/// What a reload found and did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Whether the changes were applied (false for a dry run or when nothing changed).
    pub applied: bool,
    pub cameras_added: Vec<String>,
    pub cameras_removed: Vec<String>,
    /// Changed cameras; those restarted are also in `cameras_restarted`.
    pub cameras_changed: Vec<String>,
    pub cameras_restarted: Vec<String>,
    /// Keys that changed and now apply.
    pub live: Vec<&'static str>,
    /// Keys that changed and need a restart; the service runs on with their old values.
    pub restart_required: Vec<&'static str>,
    /// Changes that could not be applied, each naming its camera or key.
    pub problems: Vec<String>,
}

impl Report {
    pub fn changed(&self) -> bool {
        !(self.cameras_added.is_empty()
            && self.cameras_removed.is_empty()
            && self.cameras_changed.is_empty()
            && self.live.is_empty()
            && self.restart_required.is_empty())
    }
}

/// Watches the config file and calls `changed` (from the watcher's thread) after each change, debounced. The parent
/// directory is watched, not the file: editors and deploy tools replace a file by renaming another over it, and a
/// symlink is swapped the same way, which a watch on the file itself would miss (it follows the old inode). When the
/// path is a symlink, the directory of its target is watched too, so an edit of the target in place is seen. The
/// returned value stops watching when dropped.
pub fn watch(path: &Path, changed: impl Fn() + Send + 'static) -> notify::Result<impl Drop> {
    let path = std::path::absolute(path)?;
    let target = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    let mut dirs: Vec<PathBuf> = vec![parent(&path)];
    if !dirs.contains(&parent(&target)) {
        dirs.push(parent(&target));
    }
    let watched = [path.clone(), target];
    // Its thread wakes every tick, whether anything happened or not: a tick of the debounce time (7 a second) rather
    // than its default quarter (27 a second). A change is reported once it is DEBOUNCE old, at the next tick: 150 to
    // 300 ms after the save (with 300 ms for both, 550 ms measured: evidence/reload.md).
    let mut debouncer = new_debouncer(DEBOUNCE, Some(DEBOUNCE), move |result: DebounceEventResult| match result {
        Ok(events) => {
            // The link may have been swapped to a target elsewhere: compare with where it points now, too.
            let now = std::fs::canonicalize(&path).ok();
            // Only what changes the file: opening and reading it (a reload reads it) must not count, or each reload
            // would start the next.
            let ours = events
                .iter()
                .filter(|e| !matches!(e.kind, notify::EventKind::Access(_)))
                .flat_map(|e| e.paths.iter())
                .any(|p| watched.contains(p) || now.as_ref() == Some(p));
            if ours {
                debug!("config file changed on disk");
                changed();
            }
        }
        Err(errors) => {
            for e in errors {
                warn!(err = %e, "config file watcher");
            }
        }
    })?;
    for dir in dirs {
        debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(debouncer)
}

fn parent(path: &Path) -> PathBuf {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("/")).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    #[test]
    fn the_watcher_wakes_for_a_write_and_never_for_a_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("camhub.toml");
        std::fs::write(&file, "[log]\nlevel = \"info\"\n").expect("write");
        let count = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let seen = count.clone();
        let _watcher = watch(&file, move || {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(());
        })
        .expect("watch");
        // A reload reads the file: reading it, again and again, is no change (it was a loop: each reload's read woke
        // the watcher for the next reload, a debounce apart, for ever).
        for _ in 0..5 {
            std::fs::read_to_string(&file).expect("read");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(rx.recv_timeout(DEBOUNCE * 3).is_err(), "a read woke the watcher");
        // A log file written beside it is no change either.
        std::fs::write(dir.path().join("camhub.log"), "a line\n").expect("write log");
        assert!(rx.recv_timeout(DEBOUNCE * 3).is_err(), "another file woke the watcher");
        std::fs::write(&file, "[log]\nlevel = \"debug\"\n").expect("write");
        rx.recv_timeout(Duration::from_secs(5)).expect("a write wakes the watcher");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
