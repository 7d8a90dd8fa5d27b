//! Persistent state: the SQLite index (`db`), the data dir's files and the recordings roots (`roots`). Storage knows
//! rows, files and disks, never cameras' pipelines or the RPC wire.

pub mod db;
pub mod files;
pub mod lock;
pub mod roots;
pub mod syncer;

pub use db::Db;

/// (total, available) bytes of the filesystem holding `path`.
pub fn disk_usage(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let stats = fs4::statvfs(path)?;
    Ok((stats.total_space(), stats.available_space()))
}
