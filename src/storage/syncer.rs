//! Durability of the segments being recorded: one thread makes what every open segment holds durable with one
//! `syncfs` per filesystem for all the requests that arrive together, instead of an `fdatasync` (and a journal
//! commit, and a thread of the blocking pool) per segment each second.
//!
//! Recorders ask on the media runtime's shared grid, so their requests of one second arrive within a turn: the thread
//! wakes at the first, gathers the rest for `GATHER`, groups them by filesystem and syncs each filesystem once. A
//! `syncfs` writes back everything dirty on the filesystem and commits its journal, so a new segment's directory
//! entry is made durable with its data. Linux reports a writeback error of the filesystem to `syncfs` (5.8 on),
//! so a failing disk fails every request on it. The price: a `syncfs` also writes what other programs left dirty on
//! the filesystem, so on a disk others write heavily to it takes longer, and the recorders hold what is not durable
//! yet meanwhile (up to 30 s, `recording::recorder`'s `CARRY_MAX`, to carry it to another root if this one fails).

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long the thread waits, after a request woke it, for the requests made in the same turn.
const GATHER: Duration = Duration::from_millis(3);

/// What a request gets back: whether everything written to its file before it was made is durable.
pub type Synced = oneshot::Receiver<std::io::Result<()>>;

struct Request {
    path: PathBuf,
    done: oneshot::Sender<std::io::Result<()>>,
}

/// The sync thread, started by the first request.
#[derive(Debug, Default)]
pub struct Syncer {
    requests: OnceLock<Option<mpsc::Sender<Request>>>,
}

impl Syncer {
    /// Makes what was written to `path` so far durable, with everything else dirty on its filesystem. Called on a
    /// tokio runtime.
    pub fn sync(&self, path: PathBuf) -> Synced {
        let (done, synced) = oneshot::channel();
        let requests = self.requests.get_or_init(|| match start() {
            Ok(requests) => Some(requests),
            Err(e) => {
                tracing::error!(err = %e, "cannot start the sync thread: segments are synced where they are written");
                None
            }
        });
        let request = Request { path, done };
        match requests {
            Some(requests) => {
                if let Err(mpsc::SendError(request)) = requests.send(request) {
                    let _ = request.done.send(Err(std::io::Error::other("the sync thread is gone")));
                }
            }
            // No thread: the blocking pool, a file at a time (its data, and its directory entry), as before.
            None => {
                tokio::task::spawn_blocking(move || {
                    let _ = request.done.send(crate::storage::files::sync_file_and_dir(&request.path));
                });
            }
        }
        synced
    }
}

fn start() -> std::io::Result<mpsc::Sender<Request>> {
    let (requests, arrived) = mpsc::channel::<Request>();
    std::thread::Builder::new().name("camhub-sync".into()).spawn(move || {
        crate::base::thread::run_as_batch();
        while let Ok(first) = arrived.recv() {
            let mut batch = vec![first];
            let until = Instant::now() + GATHER;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match arrived.recv_timeout(left) {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            sync_batch(batch);
        }
    })?;
    Ok(requests)
}

/// Groups `batch` by filesystem and syncs each once, answering every request with its filesystem's result.
fn sync_batch(batch: Vec<Request>) {
    let mut by_fs: HashMap<u64, Vec<Request>> = HashMap::new();
    for request in batch {
        match std::fs::metadata(&request.path) {
            Ok(m) => by_fs.entry(m.dev()).or_default().push(request),
            Err(e) => {
                let _ = request.done.send(Err(e));
            }
        }
    }
    for (_, requests) in by_fs {
        let result = syncfs(&requests[0].path);
        for request in requests {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            let _ = request.done.send(answer);
        }
    }
}

/// `syncfs(2)` on the filesystem holding `path`.
fn syncfs(path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests on one filesystem are answered; a file that is not there gets its own error, not the others'.
    #[tokio::test]
    async fn requests_together_are_answered_each() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (dir.path().join("a.mp4"), dir.path().join("b.mp4"));
        std::fs::write(&a, b"a").expect("a");
        std::fs::write(&b, b"b").expect("b");
        let syncer = Syncer::default();
        let waits = [syncer.sync(a), syncer.sync(b), syncer.sync(dir.path().join("gone.mp4"))];
        let mut results = Vec::new();
        for wait in waits {
            results.push(wait.await.expect("answered"));
        }
        assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
        assert_eq!(results[2].as_ref().map_err(|e| e.kind()), Err(std::io::ErrorKind::NotFound));
    }
}
