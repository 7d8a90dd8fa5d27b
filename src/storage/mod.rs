//! Persistent state: the SQLite index (`db`) and the data dir's files. Storage knows rows and files, never cameras'
//! pipelines or the RPC wire.

pub mod db;
pub mod files;
pub mod lock;

pub use db::Db;

/// (total, available) bytes of the filesystem holding `path`.
pub fn disk_usage(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let stats = fs4::statvfs(path)?;
    Ok((stats.total_space(), stats.available_space()))
}
