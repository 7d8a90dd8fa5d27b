//! What to keep: the retention policy (age, total size, or manual) and each storage root's free-space floor, applied
//! by deleting the oldest recording segments first (through `index::delete`, the one way a recording is deleted). The
//! floor of a root is defended on that root, and only when deleting its recordings can reach it; files on a root
//! that is away are left alone. Knows segments, not recordings in progress.

use std::time::Duration;

use tracing::info;

use super::index;
use crate::base::time::now_ms;
use crate::config::{RetentionConfig, RetentionKind};
use crate::error::{Dependency, Error, Result};
use crate::storage::roots::{RootState, Roots};
use crate::storage::{Db, disk_usage};

/// What an enforcement pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleanup {
    pub files_deleted: u64,
    pub space_freed: u64,
    /// No writable root is above its floor, with nothing left to delete.
    pub still_low: bool,
    /// Some root was below its floor when the pass started.
    pub was_low: bool,
    /// Free space of the root that was low (or, when none was, the most any root has), and that root's floor.
    pub available: u64,
    pub floor: u64,
}

const BATCH: i64 = 64;

/// Deletes one segment. One a concurrent delete already took frees nothing; a file that cannot be removed (its row
/// is gone, so it is no longer listed) is logged and the pass goes on.
async fn delete(db: &Db, roots: &Roots, filename: &str) -> Result<u64> {
    match index::delete(db, roots, filename).await {
        Err(Error::NotFound { .. }) | Err(Error::Dependency { dependency: Dependency::Storage, .. }) => Ok(0),
        other => other,
    }
}

/// Applies `policy` (unless disabled or manual) to the recordings on present roots, then defends each writable
/// root's floor on that root.
pub async fn enforce(db: &Db, roots: &Roots, policy: &RetentionConfig) -> Result<Cleanup> {
    let mut done = Cleanup::default();
    let present = roots.present();
    let ids: Vec<String> = present.iter().map(|p| p.id.clone()).collect();
    if policy.enabled {
        match policy.policy_type {
            RetentionKind::Age => {
                if let Some(days) = policy.max_age_days {
                    let cutoff = now_ms() - Duration::from_secs_f64(days * 86_400.0).as_millis() as i64;
                    'age: loop {
                        let batch = db.oldest_segments_on(&ids, BATCH).await?;
                        let old: Vec<_> = batch.iter().filter(|s| s.ended_at < cutoff).collect();
                        if old.is_empty() {
                            break 'age;
                        }
                        for s in old {
                            done.space_freed += delete(db, roots, &s.filename).await?;
                            done.files_deleted += 1;
                        }
                    }
                }
            }
            RetentionKind::Size => {
                if let Some(gb) = policy.max_size_gb {
                    let limit = (gb * 1024.0 * 1024.0 * 1024.0) as i64;
                    let mut total = 0;
                    for id in &ids {
                        total += db.segments_size_on(id).await?;
                    }
                    while total > limit {
                        let batch = db.oldest_segments_on(&ids, 1).await?;
                        let Some(s) = batch.first() else { break };
                        let freed = delete(db, roots, &s.filename).await?;
                        total -= s.size_bytes.max(freed as i64);
                        done.space_freed += freed;
                        done.files_deleted += 1;
                    }
                }
            }
            RetentionKind::Manual => {}
        }
    }
    let mut room = false;
    let mut most = 0;
    for root in present.iter().filter(|p| matches!(p.state, RootState::Ok | RootState::Full)) {
        let (low, still_low, available) = defend(db, roots, &root.id, &root.dir, root.min_free, &mut done).await?;
        if low && !done.was_low {
            done.was_low = true;
            (done.available, done.floor) = (available, root.min_free);
        }
        room |= !still_low;
        most = most.max(available);
    }
    done.still_low = !room;
    if !done.was_low {
        done.available = most;
        done.floor = present.first().map(|p| p.min_free).unwrap_or(0);
    }
    if done.files_deleted > 0 {
        info!(files = done.files_deleted, bytes = done.space_freed, "retention deleted recordings");
    }
    Ok(done)
}

/// Defends one root's floor by deleting its oldest recordings: (was low, still low, free space after).
async fn defend(
    db: &Db,
    roots: &Roots,
    id: &str,
    dir: &std::path::Path,
    floor: u64,
    done: &mut Cleanup,
) -> Result<(bool, bool, u64)> {
    let measure = |dir: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || disk_usage(&dir).map(|(_, a)| a).unwrap_or(0)).await.unwrap_or(0)
    };
    let mut available = measure(dir.to_path_buf()).await;
    let was_low = available < floor;
    if !was_low {
        return Ok((false, false, available));
    }
    // When deleting every recording on the root would still not reach the floor, deleting any only destroys footage.
    let deletable = db.segments_size_on(id).await?.max(0) as u64;
    if available + deletable < floor {
        return Ok((true, true, available));
    }
    let only = [id.to_owned()];
    while available < floor {
        let batch = db.oldest_segments_on(&only, 1).await?;
        let Some(s) = batch.first() else { return Ok((true, true, available)) };
        done.space_freed += delete(db, roots, &s.filename).await?;
        done.files_deleted += 1;
        available = measure(dir.to_path_buf()).await;
    }
    Ok((true, false, available))
}
