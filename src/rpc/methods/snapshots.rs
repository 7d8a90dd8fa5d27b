//! Snapshot methods: `take_snapshot`, `list_snapshots`, `get_snapshot_info`, `delete_snapshot`.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Deleted, FileParams, PageParams, find_camera, page};
use crate::base::time::iso;
use crate::error::Result;
use crate::rpc::Rpc;
use crate::rpc::session::Session;
use crate::storage::files::{Area, download_url, validate_name};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {
    pub device: String,
    pub filename: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Snapshot {
    pub device: String,
    pub filename: String,
    /// `SUCCESS`.
    pub status: String,
    pub timestamp: String,
    pub file_size: u64,
    /// Where to download it (the contract's name; the same as `download_url`).
    pub file_path: String,
    pub download_url: String,
    pub width: u32,
    pub height: u32,
    /// When the frame shown arrived from the camera.
    pub frame_time: String,
    pub frames_decoded: usize,
    /// `decoder` (decoded for the snapshot) or `detection` (detection's decoder had decoded it).
    pub frame_source: String,
}

pub async fn take(rpc: Arc<Rpc>, _: Arc<Session>, p: SnapshotParams) -> Result<Snapshot> {
    // Every parameter is checked before anything is looked up.
    if let Some(name) = &p.filename {
        validate_name("filename", name)?;
    }
    let camera = find_camera(&rpc, &p.device)?;
    let s = rpc.app.snapshots().take(&camera, p.filename.as_deref()).await?;
    let url = download_url(Area::Snapshots, &s.filename);
    Ok(Snapshot {
        device: camera.id.to_string(),
        filename: s.filename,
        status: "SUCCESS".to_owned(),
        timestamp: iso(s.taken_at),
        file_size: s.file_size,
        file_path: url.clone(),
        download_url: url,
        width: s.width,
        height: s.height,
        frame_time: iso(s.frame_time),
        frames_decoded: s.frames_decoded,
        frame_source: s.source.as_str().to_owned(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotFile {
    pub filename: String,
    pub file_size: u64,
    pub modified_time: String,
    pub created_time: String,
    pub download_url: String,
}

impl From<&crate::snapshot::SnapshotFile> for SnapshotFile {
    fn from(f: &crate::snapshot::SnapshotFile) -> SnapshotFile {
        SnapshotFile {
            filename: f.filename.clone(),
            file_size: f.size,
            modified_time: iso(f.modified),
            created_time: iso(f.modified),
            download_url: download_url(Area::Snapshots, &f.filename),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotList {
    pub files: Vec<SnapshotFile>,
    pub total: usize,
    pub limit: i64,
    pub offset: i64,
}

pub async fn list(rpc: Arc<Rpc>, _: Arc<Session>, p: PageParams) -> Result<SnapshotList> {
    let (limit, offset) = page(&p)?;
    let (files, total) = rpc.app.snapshots().list(limit as usize, offset as usize).await?;
    Ok(SnapshotList { files: files.iter().map(SnapshotFile::from).collect(), total, limit, offset })
}

pub async fn info(rpc: Arc<Rpc>, _: Arc<Session>, p: FileParams) -> Result<SnapshotFile> {
    Ok(SnapshotFile::from(&rpc.app.snapshots().info(&p.filename).await?))
}

pub async fn delete(rpc: Arc<Rpc>, _: Arc<Session>, p: FileParams) -> Result<Deleted> {
    rpc.app.snapshots().delete(&p.filename).await?;
    Ok(Deleted { filename: p.filename, deleted: true, message: "snapshot deleted".to_owned() })
}
