//! Recording and storage methods: `start_recording`, `stop_recording`, `list_recordings`, `get_recording_info`,
//! `delete_recording`, `get_storage_info`, `set_retention_policy`, `cleanup_old_files`, and by time range:
//! `list_recording_spans`, `export_recording`.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Deleted, DeviceParams, FileParams, NoParams, PageParams, find_camera, page};
use crate::base::CameraId;
use crate::base::time::{ISO_RULE, iso, millis, parse_iso};
use crate::config::{RecordingFormat, RetentionConfig, RetentionKind};
use crate::error::{Error, Result};
use crate::recording::playback::{MAX_EXPORT, SPAN_TOLERANCE};
use crate::recording::{Ending, Interval, Segment, Trigger};
use crate::rpc::Rpc;
use crate::rpc::session::Session;
use crate::storage::files::{Area, download_url};
use crate::storage::roots::RootState;

/// Longest recording one call may ask for (a week); continuous recording is configured, not requested.
const MAX_DURATION_S: f64 = 7.0 * 24.0 * 3600.0;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartParams {
    pub device: String,
    /// Seconds; absent records until `stop_recording`.
    pub duration: Option<f64>,
    pub format: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Started {
    pub device: String,
    pub session_id: String,
    pub filename: String,
    /// `RECORDING`.
    pub status: String,
    /// The first recorded frame's time: before `requested_time` by the pre-roll.
    pub start_time: String,
    pub requested_time: String,
    /// Seconds recorded from before the request.
    pub pre_roll: f64,
    pub duration: Option<f64>,
    pub format: RecordingFormat,
}

pub async fn start(rpc: Arc<Rpc>, _: Arc<Session>, p: StartParams) -> Result<Started> {
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
    let camera = find_camera(&rpc, &p.device)?;
    let info = rpc.app.recordings().start(&camera, duration, format, Trigger::Api).await?;
    Ok(Started {
        device: camera.id.to_string(),
        session_id: info.id.clone(),
        filename: info.first_filename.clone(),
        status: "RECORDING".to_owned(),
        start_time: iso(info.started_at),
        requested_time: iso(info.requested_at),
        pre_roll: info.requested_at.duration_since(info.started_at).unwrap_or_default().as_secs_f64(),
        duration: p.duration,
        format: info.format,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Stopped {
    pub device: String,
    pub session_id: String,
    pub filename: String,
    /// `STOPPED`, or `ERROR` when the session had failed.
    pub status: String,
    pub start_time: String,
    pub end_time: String,
    pub duration: f64,
    pub file_size: u64,
    pub segments: usize,
    pub format: RecordingFormat,
}

pub async fn stop(rpc: Arc<Rpc>, _: Arc<Session>, p: DeviceParams) -> Result<Stopped> {
    let camera = find_camera(&rpc, &p.device)?;
    let s = rpc.app.recordings().stop(&camera.id).await?;
    Ok(Stopped {
        device: camera.id.to_string(),
        session_id: s.info.id.clone(),
        filename: s.first_filename.clone(),
        status: match s.ending {
            Ending::Stopped => "STOPPED",
            Ending::Failed(_) => "ERROR",
        }
        .to_owned(),
        start_time: iso(s.info.started_at),
        end_time: iso(s.ended_at),
        duration: s.duration.as_secs_f64(),
        file_size: s.file_size,
        segments: s.segments,
        format: s.info.format,
    })
}

/// One recording file, as listed and described.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RecordingFile {
    pub filename: String,
    pub file_size: u64,
    pub modified_time: String,
    pub created_time: String,
    pub download_url: String,
    pub device: String,
    /// Seconds.
    pub duration: f64,
    pub format: String,
    pub session_id: String,
    pub start_time: String,
    pub end_time: String,
    /// Indexed by start-up recovery from a file a crash cut short.
    pub recovered: bool,
    /// The storage root holding the file.
    pub storage_root: String,
    /// False while that root is away: listed, not downloadable or deletable.
    pub available: bool,
}

impl From<&Segment> for RecordingFile {
    fn from(s: &Segment) -> RecordingFile {
        RecordingFile {
            filename: s.filename.clone(),
            file_size: s.size,
            modified_time: iso(s.ended_at),
            created_time: iso(s.started_at),
            download_url: download_url(Area::Recordings, &s.filename),
            device: s.camera.clone(),
            duration: s.duration.as_millis() as f64 / 1000.0,
            format: s.format.clone(),
            session_id: s.session_id.clone(),
            start_time: iso(s.started_at),
            end_time: iso(s.ended_at),
            recovered: s.recovered,
            storage_root: s.root.clone(),
            available: s.available,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RecordingList {
    pub files: Vec<RecordingFile>,
    pub total: u64,
    pub limit: i64,
    pub offset: i64,
}

pub async fn list(rpc: Arc<Rpc>, _: Arc<Session>, p: PageParams) -> Result<RecordingList> {
    let (limit, offset) = page(&p)?;
    let (segments, total) = rpc.app.recordings().list(limit, offset).await?;
    Ok(RecordingList { files: segments.iter().map(RecordingFile::from).collect(), total, limit, offset })
}

pub async fn info(rpc: Arc<Rpc>, _: Arc<Session>, p: FileParams) -> Result<RecordingFile> {
    Ok(RecordingFile::from(&rpc.app.recordings().info(&p.filename).await?))
}

pub async fn delete(rpc: Arc<Rpc>, _: Arc<Session>, p: FileParams) -> Result<Deleted> {
    rpc.app.recordings().delete(&p.filename).await?;
    Ok(Deleted { filename: p.filename, deleted: true, message: "recording deleted".to_owned() })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StorageInfo {
    pub total_space: u64,
    pub used_space: u64,
    pub available_space: u64,
    pub usage_percentage: f64,
    pub recordings_size: u64,
    pub snapshots_size: u64,
    pub low_space_warning: bool,
    /// The free-space floor recordings keep, in bytes.
    pub min_free_space: u64,
    pub retention_policy: RetentionConfig,
    pub active_recordings: usize,
    /// Each storage root recordings go to, in the order they are used.
    pub roots: Vec<StorageRoot>,
}

/// One storage root of `get_storage_info`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StorageRoot {
    /// The id in the root's marker; null while none was ever read (a root missing since start-up).
    pub id: Option<String>,
    pub path: String,
    pub state: RootState,
    /// Why it is not ok.
    pub detail: Option<String>,
    pub total_space: u64,
    pub available_space: u64,
    /// Bytes of recordings on it (0 while it is away).
    pub recordings_size: u64,
    /// The free-space floor kept on it, in bytes.
    pub min_free_space: u64,
}

pub async fn storage(rpc: Arc<Rpc>, _: Arc<Session>, _: NoParams) -> Result<StorageInfo> {
    let s = rpc.app.recordings().storage().await?;
    let used = s.total.saturating_sub(s.available);
    Ok(StorageInfo {
        total_space: s.total,
        used_space: used,
        available_space: s.available,
        usage_percentage: if s.total == 0 { 0.0 } else { (1000.0 * used as f64 / s.total as f64).round() / 10.0 },
        recordings_size: s.recordings,
        snapshots_size: s.snapshots,
        low_space_warning: s.available < s.floor.saturating_mul(2),
        min_free_space: s.floor,
        retention_policy: s.policy,
        active_recordings: s.active,
        roots: s
            .roots
            .into_iter()
            .map(|(r, recordings)| StorageRoot {
                id: r.id,
                path: r.path.display().to_string(),
                state: r.state,
                detail: r.detail,
                total_space: r.total,
                available_space: r.available,
                recordings_size: recordings,
                min_free_space: r.min_free,
            })
            .collect(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionParams {
    pub policy_type: String,
    pub max_age_days: Option<f64>,
    pub max_size_gb: Option<f64>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RetentionSet {
    pub policy_type: RetentionKind,
    pub max_age_days: Option<f64>,
    pub max_size_gb: Option<f64>,
    pub enabled: bool,
    pub message: String,
}

pub async fn set_retention(rpc: Arc<Rpc>, _: Arc<Session>, p: RetentionParams) -> Result<RetentionSet> {
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
    rpc.app.recordings().set_policy(policy.clone()).await?;
    Ok(RetentionSet {
        policy_type,
        max_age_days: policy.max_age_days,
        max_size_gb: policy.max_size_gb,
        enabled: policy.enabled,
        message: "retention policy saved".to_owned(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Cleanup {
    pub cleanup_executed: bool,
    pub files_deleted: u64,
    pub space_freed: u64,
    pub message: String,
}

pub async fn cleanup(rpc: Arc<Rpc>, _: Arc<Session>, _: NoParams) -> Result<Cleanup> {
    let c = rpc.app.recordings().enforce().await?;
    Ok(Cleanup {
        cleanup_executed: true,
        files_deleted: c.files_deleted,
        space_freed: c.space_freed,
        message: format!("deleted {} files, freed {} bytes", c.files_deleted, c.space_freed),
    })
}

/// The camera a `device` parameter names for recordings by time: one in the registry, or one removed whose recordings
/// are still there (they outlive it). -32602 for a malformed id, -32010 when neither.
pub(crate) async fn recorded_camera(app: &crate::app::App, device: &str) -> Result<CameraId> {
    let id = CameraId::parse(device).map_err(|rule| Error::invalid_param("device", rule))?;
    if app.cameras().get(&id).is_some() || app.recordings().playback().has_recordings(id.as_str()).await? {
        Ok(id)
    } else {
        Err(Error::camera_not_found(device))
    }
}

/// A time parameter (ISO 8601).
pub(crate) fn time_param(param: &'static str, value: &str) -> Result<std::time::SystemTime> {
    parse_iso(value).ok_or_else(|| Error::invalid_param(param, ISO_RULE))
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpansParams {
    pub device: String,
    /// ISO 8601; absent: from the first recording.
    pub since: Option<String>,
    /// ISO 8601, after `since`; absent: now.
    pub until: Option<String>,
}

/// A stretch of time: ISO 8601 start and end, and its length in seconds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TimeSpan {
    pub start: String,
    pub end: String,
    pub duration: f64,
}

impl From<&Interval> for TimeSpan {
    fn from(i: &Interval) -> TimeSpan {
        TimeSpan { start: iso(i.started_at()), end: iso(i.ended_at()), duration: i.seconds() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Spans {
    pub device: String,
    /// The window asked for (its start is the first recording's when `since` was absent).
    pub since: String,
    pub until: String,
    /// Continuous recorded time, oldest first, clipped to the window.
    pub spans: Vec<TimeSpan>,
    /// The holes between spans (not before the first or after the last).
    pub gaps: Vec<TimeSpan>,
    /// Seconds recorded in the window.
    pub recorded: f64,
    /// Segments closer than this (seconds) are one span.
    pub tolerance: f64,
}

pub async fn spans(rpc: Arc<Rpc>, _: Arc<Session>, p: SpansParams) -> Result<Spans> {
    let since = p.since.as_deref().map(|s| time_param("since", s)).transpose()?;
    let until = p.until.as_deref().map(|u| time_param("until", u)).transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && u <= s
    {
        return Err(Error::invalid_param("until", "after since"));
    }
    let camera = recorded_camera(&rpc.app, &p.device).await?;
    let until = millis(until.unwrap_or_else(std::time::SystemTime::now));
    let spans = rpc.app.recordings().playback().spans(camera.as_str(), since.map_or(0, millis), until).await?;
    let since = since.map_or_else(|| spans.first().map_or(until, |s| s.start), millis);
    let gaps: Vec<TimeSpan> =
        spans.windows(2).map(|w| TimeSpan::from(&Interval { start: w[0].end, end: w[1].start })).collect();
    Ok(Spans {
        device: camera.to_string(),
        since: iso(crate::base::time::from_millis(since)),
        until: iso(crate::base::time::from_millis(until)),
        recorded: spans.iter().map(Interval::seconds).sum::<f64>(),
        spans: spans.iter().map(TimeSpan::from).collect(),
        gaps,
        tolerance: SPAN_TOLERANCE.as_secs_f64(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    pub device: String,
    /// ISO 8601.
    pub start: String,
    /// ISO 8601, after `start`, at most 24 hours later.
    pub end: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Exported {
    /// The new recording, as `list_recordings` lists it.
    pub recording: RecordingFile,
    /// What the range holds that was not recorded.
    pub gaps: Vec<TimeSpan>,
}

pub async fn export(rpc: Arc<Rpc>, _: Arc<Session>, p: ExportParams) -> Result<Exported> {
    let start = time_param("start", &p.start)?;
    let end = time_param("end", &p.end)?;
    match end.duration_since(start) {
        Ok(d) if d > Duration::ZERO && d <= MAX_EXPORT => {}
        Ok(d) if d > MAX_EXPORT => return Err(Error::invalid_param("end", "at most 24 hours after start")),
        _ => return Err(Error::invalid_param("end", "after start")),
    }
    let camera = recorded_camera(&rpc.app, &p.device).await?;
    let (segment, gaps) = rpc.app.recordings().export(&camera, start, end).await?;
    Ok(Exported { recording: RecordingFile::from(&segment), gaps: gaps.iter().map(TimeSpan::from).collect() })
}
