//! The recordings index as clients see it: segment files with their rows, listed, looked up and deleted together.
//! One function deletes a recording, for the API and for retention alike: the row first (so nothing lists a file that
//! is going), then the file, then its directory is synced so the deletion survives a power cut. File work runs off the
//! async runtimes. A file is found on the root its row names; while that root is away the file is unavailable (listed,
//! not served or deleted).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tracing::warn;

use crate::base::time::from_millis;
use crate::error::{Dependency, Error, Resource, Result};
use crate::storage::Db;
use crate::storage::db::SegmentRow;
use crate::storage::files::{blocking, sync_parent, validate_name};
use crate::storage::roots::{Roots, unavailable};

/// One recording file: a complete, synced segment of a session.
#[derive(Debug, Clone)]
pub struct Segment {
    pub filename: String,
    pub camera: String,
    pub session_id: String,
    pub format: String,
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
    pub duration: Duration,
    pub size: u64,
    /// Indexed by start-up recovery from a file a crash cut short.
    pub recovered: bool,
    /// The storage root holding it.
    pub root: String,
    /// Its root is there (set by `Recordings`, which knows the roots).
    pub available: bool,
}

impl From<&SegmentRow> for Segment {
    fn from(r: &SegmentRow) -> Segment {
        Segment {
            filename: r.filename.clone(),
            camera: r.camera.clone(),
            session_id: r.session_id.clone(),
            format: r.format.clone(),
            started_at: from_millis(r.started_at),
            ended_at: from_millis(r.ended_at),
            duration: Duration::from_millis(r.duration_ms.max(0) as u64),
            size: r.size_bytes.max(0) as u64,
            recovered: r.recovered,
            root: r.root.clone(),
            available: true,
        }
    }
}

/// Segments, newest first, and how many there are in all.
pub async fn list(db: &Db, limit: i64, offset: i64) -> Result<(Vec<Segment>, u64)> {
    let (rows, total) = db.list_segments(limit, offset).await?;
    Ok((rows.iter().map(Segment::from).collect(), total.max(0) as u64))
}

/// The segment named `filename` (a validated name), or not found.
pub async fn get(db: &Db, filename: &str) -> Result<Segment> {
    validate_name("filename", filename)?;
    let row = db.segment(filename).await?.ok_or_else(|| Error::not_found(Resource::Recording, filename))?;
    Ok(Segment::from(&row))
}

/// The path of the segment named `filename` on its root: not found when no row names it, unavailable (a storage
/// error) while its root is away.
pub async fn locate(db: &Db, roots: &Roots, filename: &str) -> Result<PathBuf> {
    let segment = get(db, filename).await?;
    let dir = roots.dir_of(&segment.root).ok_or_else(|| unavailable(filename, &segment.root))?;
    Ok(dir.join(filename))
}

/// Deletes the segment named `filename`: row, file, then the directory synced. Returns the bytes freed, or not
/// found when no row names it; refused while its root is away (the file would come back with the root).
pub async fn delete(db: &Db, roots: &Roots, filename: &str) -> Result<u64> {
    let path = locate(db, roots, filename).await?;
    if !db.delete_segment(filename).await? {
        return Err(Error::not_found(Resource::Recording, filename));
    }
    let name = filename.to_owned();
    blocking(move || remove_and_sync(path, &name)).await
}

fn remove_and_sync(path: PathBuf, filename: &str) -> Result<u64> {
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        // The row is gone either way; a file already gone is what we wanted.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            warn!(err = %e, filename, "cannot delete recording file");
            return Err(Error::dependency(Dependency::Storage, format!("deleting: {e}")));
        }
    }
    if let Err(e) = sync_parent(&path) {
        warn!(err = %e, "cannot sync the recordings directory");
    }
    Ok(size)
}
