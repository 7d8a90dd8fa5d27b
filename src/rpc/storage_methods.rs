//! JSON-RPC methods for recordings, snapshots, their files and the storage they live on. Registered by
//! `methods::module`; access rules are in `methods::ACCESS` with all the others.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonrpsee::RpcModule;
use serde::Deserialize;
use serde_json::{Value, json};

use super::RpcContext;
use super::methods::{find_camera, register};
use super::session::Session;
use crate::config::{RecordingFormat, RetentionConfig, RetentionKind};
use crate::error::{Error, Result};
use crate::recording::{Ending, Trigger};
use crate::storage::files::{Area, validate_name};

/// Longest recording one call may ask for (a week); continuous recording is configured, not requested.
const MAX_DURATION_S: f64 = 7.0 * 24.0 * 3600.0;

pub fn register_all(m: &mut RpcModule<RpcContext>) {
    register(m, "take_snapshot", take_snapshot);
    register(m, "start_recording", start_recording);
    register(m, "stop_recording", stop_recording);
    register(m, "list_recordings", list_recordings);
    register(m, "list_snapshots", list_snapshots);
    register(m, "get_recording_info", get_recording_info);
    register(m, "get_snapshot_info", get_snapshot_info);
    register(m, "delete_recording", delete_recording);
    register(m, "delete_snapshot", delete_snapshot);
    register(m, "get_storage_info", |ctx, _, _: super::methods::NoParams| async move { storage_info(&ctx).await });
    register(m, "set_retention_policy", set_retention_policy);
    register(m, "cleanup_old_files", |ctx, _, _: super::methods::NoParams| async move {
        let c = ctx.app.recordings.enforce().await?;
        Ok(json!({
            "cleanup_executed": true,
            "files_deleted": c.files_deleted,
            "space_freed": c.space_freed,
            "message": format!("deleted {} files, freed {} bytes", c.files_deleted, c.space_freed),
        }))
    });
}

pub fn iso(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn from_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Characters escaped in download URLs: everything but RFC 3986's unreserved ones.
const URL_ESCAPED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn download_url(area: Area, name: &str) -> String {
    format!("/files/{}/{}", area.dir_name(), percent_encoding::utf8_percent_encode(name, URL_ESCAPED))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotParams {
    device: String,
    filename: Option<String>,
}

async fn take_snapshot(ctx: Arc<RpcContext>, _: Arc<Session>, p: SnapshotParams) -> Result<Value> {
    // Every parameter is checked before anything is looked up.
    if let Some(name) = &p.filename {
        validate_name("filename", name)?;
    }
    let camera = find_camera(&ctx, &p.device)?;
    let s = ctx.app.snapshots.take(&camera, p.filename.as_deref()).await?;
    Ok(json!({
        "device": camera.id,
        "filename": s.filename,
        "status": "SUCCESS",
        "timestamp": iso(s.taken_at),
        "file_size": s.file_size,
        "file_path": download_url(Area::Snapshots, &s.filename),
        "download_url": download_url(Area::Snapshots, &s.filename),
        "width": s.width,
        "height": s.height,
        "frame_time": iso(s.frame_time),
        "frames_decoded": s.frames_decoded,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRecordingParams {
    device: String,
    duration: Option<f64>,
    format: Option<String>,
}

async fn start_recording(ctx: Arc<RpcContext>, _: Arc<Session>, p: StartRecordingParams) -> Result<Value> {
    let duration = match p.duration {
        None => None,
        Some(d) if d > 0.0 && d <= MAX_DURATION_S => Some(Duration::from_secs_f64(d)),
        Some(_) => return Err(Error::invalid_param("duration", "seconds, greater than 0 and at most 604800")),
    };
    let format = match p.format.as_deref() {
        None => None,
        Some(f) => {
            Some(RecordingFormat::parse(f).ok_or_else(|| Error::invalid_param("format", "one of fmp4, mp4, mkv"))?)
        }
    };
    let camera = find_camera(&ctx, &p.device)?;
    let info = ctx.app.recordings.start(&camera, duration, format, Trigger::Api).await?;
    Ok(json!({
        "device": camera.id,
        "session_id": info.id,
        "filename": info.first_filename,
        "status": "RECORDING",
        "start_time": iso(info.started_at),
        "requested_time": iso(info.requested_at),
        "pre_roll": info.requested_at.duration_since(info.started_at).unwrap_or_default().as_secs_f64(),
        "duration": p.duration,
        "format": info.format.as_str(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceParams {
    device: String,
}

async fn stop_recording(ctx: Arc<RpcContext>, _: Arc<Session>, p: DeviceParams) -> Result<Value> {
    let camera = find_camera(&ctx, &p.device)?;
    let s = ctx.app.recordings.stop(&camera.id).await?;
    let filename = ctx
        .app
        .db
        .segments_of_session(&s.info.id)
        .await?
        .first()
        .map(|seg| seg.filename.clone())
        .unwrap_or_else(|| s.info.first_filename.clone());
    Ok(json!({
        "device": camera.id,
        "session_id": s.info.id,
        "filename": filename,
        "status": match s.ending { Ending::Stopped => "STOPPED", Ending::Failed(_) => "ERROR" },
        "start_time": iso(s.info.started_at),
        "end_time": iso(s.ended_at),
        "duration": s.duration.as_secs_f64(),
        "file_size": s.file_size,
        "segments": s.segments,
        "format": s.info.format.as_str(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    limit: Option<i64>,
    offset: Option<i64>,
}

fn page(p: &PageParams) -> Result<(i64, i64)> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid_param("limit", "between 1 and 1000"));
    }
    let offset = p.offset.unwrap_or(0);
    if offset < 0 {
        return Err(Error::invalid_param("offset", "0 or more"));
    }
    Ok((limit, offset))
}

fn recording_json(s: &crate::storage::db::SegmentRow) -> Value {
    json!({
        "filename": s.filename,
        "file_size": s.size_bytes,
        "modified_time": iso(from_ms(s.ended_at)),
        "created_time": iso(from_ms(s.started_at)),
        "download_url": download_url(Area::Recordings, &s.filename),
        "device": s.camera,
        "duration": s.duration_ms as f64 / 1000.0,
        "format": s.format,
        "session_id": s.session_id,
        "start_time": iso(from_ms(s.started_at)),
        "end_time": iso(from_ms(s.ended_at)),
        "recovered": s.recovered,
    })
}

async fn list_recordings(ctx: Arc<RpcContext>, _: Arc<Session>, p: PageParams) -> Result<Value> {
    let (limit, offset) = page(&p)?;
    let (rows, total) = ctx.app.db.list_segments(limit, offset).await?;
    let files: Vec<Value> = rows.iter().map(recording_json).collect();
    Ok(json!({ "files": files, "total": total, "limit": limit, "offset": offset }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileParams {
    filename: String,
}

async fn get_recording_info(ctx: Arc<RpcContext>, _: Arc<Session>, p: FileParams) -> Result<Value> {
    validate_name("filename", &p.filename)?;
    let row = ctx
        .app
        .db
        .segment(&p.filename)
        .await?
        .ok_or_else(|| Error::NotFound { resource: "recording", id: p.filename.clone() })?;
    Ok(recording_json(&row))
}

async fn delete_recording(ctx: Arc<RpcContext>, _: Arc<Session>, p: FileParams) -> Result<Value> {
    let path = ctx.app.files.path(Area::Recordings, "filename", &p.filename)?;
    if !ctx.app.db.delete_segment(&p.filename).await? {
        return Err(Error::NotFound { resource: "recording", id: p.filename });
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Dependency { dependency: "storage", detail: format!("deleting: {e}") }),
    }
    Ok(json!({ "filename": p.filename, "deleted": true, "message": "recording deleted" }))
}

/// Snapshot files, newest first: the directory is the index (a snapshot is one whole file or none).
fn snapshot_entries(ctx: &RpcContext) -> Vec<(String, u64, SystemTime)> {
    let mut entries: Vec<_> = std::fs::read_dir(ctx.app.files.dir(Area::Snapshots))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let meta = e.metadata().ok()?;
                    (meta.is_file() && validate_name("filename", &name).is_ok())
                        .then(|| (name, meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
                })
                .collect()
        })
        .unwrap_or_default();
    entries.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| b.0.cmp(&a.0)));
    entries
}

fn snapshot_json(name: &str, size: u64, modified: SystemTime) -> Value {
    json!({
        "filename": name,
        "file_size": size,
        "modified_time": iso(modified),
        "created_time": iso(modified),
        "download_url": download_url(Area::Snapshots, name),
    })
}

async fn list_snapshots(ctx: Arc<RpcContext>, _: Arc<Session>, p: PageParams) -> Result<Value> {
    let (limit, offset) = page(&p)?;
    let entries = snapshot_entries(&ctx);
    let files: Vec<Value> = entries
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|(name, size, modified)| snapshot_json(name, *size, *modified))
        .collect();
    Ok(json!({ "files": files, "total": entries.len(), "limit": limit, "offset": offset }))
}

async fn get_snapshot_info(ctx: Arc<RpcContext>, _: Arc<Session>, p: FileParams) -> Result<Value> {
    let path = ctx.app.files.path(Area::Snapshots, "filename", &p.filename)?;
    let meta = std::fs::metadata(&path)
        .ok()
        .filter(|m| m.is_file())
        .ok_or_else(|| Error::NotFound { resource: "snapshot", id: p.filename.clone() })?;
    Ok(snapshot_json(&p.filename, meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
}

async fn delete_snapshot(ctx: Arc<RpcContext>, _: Arc<Session>, p: FileParams) -> Result<Value> {
    let path = ctx.app.files.path(Area::Snapshots, "filename", &p.filename)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(json!({ "filename": p.filename, "deleted": true, "message": "snapshot deleted" })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::NotFound { resource: "snapshot", id: p.filename })
        }
        Err(e) => Err(Error::Dependency { dependency: "storage", detail: format!("deleting: {e}") }),
    }
}

async fn storage_info(ctx: &RpcContext) -> Result<Value> {
    let app = &ctx.app;
    let (total, available) = crate::storage::disk_usage(app.files.root())
        .map_err(|e| Error::Dependency { dependency: "storage", detail: e.to_string() })?;
    let used = total.saturating_sub(available);
    let floor = app.config.storage.min_free_bytes;
    Ok(json!({
        "total_space": total,
        "used_space": used,
        "available_space": available,
        "usage_percentage": if total == 0 { 0.0 } else { (1000.0 * used as f64 / total as f64).round() / 10.0 },
        "recordings_size": app.files.area_size(Area::Recordings),
        "snapshots_size": app.files.area_size(Area::Snapshots),
        "low_space_warning": available < floor.saturating_mul(2),
        "min_free_space": floor,
        "retention_policy": app.recordings.policy(),
        "active_recordings": app.recordings.active_count(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionParams {
    policy_type: String,
    max_age_days: Option<f64>,
    max_size_gb: Option<f64>,
    enabled: Option<bool>,
}

async fn set_retention_policy(ctx: Arc<RpcContext>, _: Arc<Session>, p: RetentionParams) -> Result<Value> {
    let policy_type = match p.policy_type.as_str() {
        "age" => RetentionKind::Age,
        "size" => RetentionKind::Size,
        "manual" => RetentionKind::Manual,
        _ => return Err(Error::invalid_param("policy_type", "one of age, size, manual")),
    };
    if p.max_age_days.is_some_and(|d| !(d > 0.0 && d <= 36_500.0)) {
        return Err(Error::invalid_param("max_age_days", "greater than 0 and at most 36500"));
    }
    if p.max_size_gb.is_some_and(|g| !(g > 0.0 && g <= 1_000_000.0)) {
        return Err(Error::invalid_param("max_size_gb", "greater than 0 and at most 1000000"));
    }
    if policy_type == RetentionKind::Age && p.max_age_days.is_none() {
        return Err(Error::invalid_param("max_age_days", "required when policy_type is age"));
    }
    if policy_type == RetentionKind::Size && p.max_size_gb.is_none() {
        return Err(Error::invalid_param("max_size_gb", "required when policy_type is size"));
    }
    let policy = RetentionConfig {
        policy_type,
        max_age_days: p.max_age_days,
        max_size_gb: p.max_size_gb,
        enabled: p.enabled.unwrap_or(true),
    };
    ctx.app.recordings.set_policy(policy.clone()).await?;
    Ok(json!({
        "policy_type": p.policy_type,
        "max_age_days": policy.max_age_days,
        "max_size_gb": policy.max_size_gb,
        "enabled": policy.enabled,
        "message": "retention policy saved",
    }))
}

/// The notification for a recording event, if it is one.
pub fn recording_notification(kind: &crate::events::EventKind) -> Option<Value> {
    use crate::events::EventKind::*;
    Some(match kind {
        RecordingStarted { camera, session, filename, format } => json!({
            "device": camera, "status": "STARTED", "filename": filename, "duration": 0.0,
            "session_id": session, "format": format,
        }),
        RecordingStopped { camera, session, filename, duration_s, file_size } => json!({
            "device": camera, "status": "STOPPED", "filename": filename, "duration": duration_s,
            "session_id": session, "file_size": file_size,
        }),
        RecordingFailed { camera, session, filename, duration_s, reason } => json!({
            "device": camera, "status": "ERROR", "filename": filename, "duration": duration_s,
            "session_id": session, "reason": reason,
        }),
        _ => return None,
    })
}
