//! What to keep: the retention policy (age, total size, or manual) and the free-space floor, applied by deleting the
//! oldest recording segments first (through `index::delete`, the one way a recording is deleted). The floor is
//! defended only when deleting recordings can reach it. Knows segments, not recordings in progress.

use std::time::Duration;

use tracing::info;

use super::index;
use crate::base::time::now_ms;
use crate::config::{RetentionConfig, RetentionKind};
use crate::error::{Dependency, Error, Result};
use crate::storage::files::Files;
use crate::storage::{Db, disk_usage};

/// What an enforcement pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleanup {
    pub files_deleted: u64,
    pub space_freed: u64,
    /// Free space is still below the floor with nothing left to delete.
    pub still_low: bool,
    /// Free space was below the floor when the pass started.
    pub was_low: bool,
    pub available: u64,
}

const BATCH: i64 = 64;

/// Deletes one segment. One a concurrent delete already took frees nothing; a file that cannot be removed (its row
/// is gone, so it is no longer listed) is logged and the pass goes on.
async fn delete(db: &Db, files: &Files, filename: &str) -> Result<u64> {
    match index::delete(db, files, filename).await {
        Err(Error::NotFound { .. }) | Err(Error::Dependency { dependency: Dependency::Storage, .. }) => Ok(0),
        other => other,
    }
}

/// Applies `policy` (unless disabled or manual), then defends `floor` bytes of free space.
pub async fn enforce(db: &Db, files: &Files, policy: &RetentionConfig, floor: u64) -> Result<Cleanup> {
    let mut done = Cleanup::default();
    if policy.enabled {
        match policy.policy_type {
            RetentionKind::Age => {
                if let Some(days) = policy.max_age_days {
                    let cutoff = now_ms() - Duration::from_secs_f64(days * 86_400.0).as_millis() as i64;
                    'age: loop {
                        let batch = db.oldest_segments(BATCH).await?;
                        let old: Vec<_> = batch.iter().filter(|s| s.ended_at < cutoff).collect();
                        if old.is_empty() {
                            break 'age;
                        }
                        for s in old {
                            done.space_freed += delete(db, files, &s.filename).await?;
                            done.files_deleted += 1;
                        }
                    }
                }
            }
            RetentionKind::Size => {
                if let Some(gb) = policy.max_size_gb {
                    let limit = (gb * 1024.0 * 1024.0 * 1024.0) as i64;
                    let mut total = db.segments_total_size().await?;
                    while total > limit {
                        let batch = db.oldest_segments(1).await?;
                        let Some(s) = batch.first() else { break };
                        let freed = delete(db, files, &s.filename).await?;
                        total -= s.size_bytes.max(freed as i64);
                        done.space_freed += freed;
                        done.files_deleted += 1;
                    }
                }
            }
            RetentionKind::Manual => {}
        }
    }
    let available = || disk_usage(files.root()).map(|(_, a)| a).unwrap_or(u64::MAX);
    done.available = available();
    done.was_low = done.available < floor;
    // When deleting every recording would still not reach the floor, deleting any of them only destroys footage.
    if done.was_low {
        let deletable = db.segments_total_size().await?.max(0) as u64;
        if done.available + deletable < floor {
            done.still_low = true;
            return Ok(done);
        }
    }
    while done.available < floor {
        let batch = db.oldest_segments(1).await?;
        let Some(s) = batch.first() else {
            done.still_low = true;
            break;
        };
        done.space_freed += delete(db, files, &s.filename).await?;
        done.files_deleted += 1;
        done.available = available();
    }
    if done.files_deleted > 0 {
        info!(files = done.files_deleted, bytes = done.space_freed, "retention deleted recordings");
    }
    Ok(done)
}
