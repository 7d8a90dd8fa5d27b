//! The data dir's lock: `camhub run` holds an exclusive `flock` on `DATA/camhub.lock` for as long as it runs, so
//! whatever must not happen under a running service (`restore`, `check --repair`, `check --rebuild`) can tell and
//! refuse. The kernel drops the lock when the process ends, however it ends, so a crash never leaves a stale one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data dir.
pub const LOCK_FILE: &str = "camhub.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it: a camhub runs on this data dir. `holder` is what that process wrote (its pid).
    #[error("a camhub process{} runs on data dir {}", holder_text(.holder), .dir.display())]
    Held { dir: PathBuf, holder: Option<String> },
    #[error("cannot lock data dir {}: {source}", .dir.display())]
    Io { dir: PathBuf, source: std::io::Error },
}

fn holder_text(holder: &Option<String>) -> String {
    holder.as_deref().map(|pid| format!(" (pid {pid})")).unwrap_or_default()
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    // The open file carries the flock; it is never read after it was taken.
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `dir` (which must exist) without waiting, and writes this process's id into the file.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let io = |source| LockError::Io { dir: dir.to_path_buf(), source };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder: (!pid.is_empty()).then(|| pid.to_owned()),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // The pid only helps a person find the holder; the lock itself is the flock.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = DataDirLock::acquire(dir.path()).expect("first");
        // flock locks belong to open file descriptions, so a second open in this process conflicts like another
        // process would.
        match DataDirLock::acquire(dir.path()) {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder, Some(std::process::id().to_string())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again");
    }
}
