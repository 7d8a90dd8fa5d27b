//! Start-up reconciliation of recordings on disk with the index, and the `camhub check` command. A segment file
//! left open by a crash is made playable (a fragmented MP4 is trimmed to its last complete fragment), measured with a
//! real demuxer and indexed; an index row whose file is gone from a present root is removed (rows of a root that is
//! away stay: a missing disk is not a lost recording). Nothing outside the recordings roots is touched.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tracing::{info, warn};

use super::naming::parse_segment_name;
use crate::base::time::millis;
use crate::error::{Dependency, Error, Result};
use crate::storage::Db;
use crate::storage::db::{SegmentRow, SessionRow};
use crate::storage::files::sync_file_and_dir;
use crate::storage::roots::Present;

/// What reconciliation found (and, when repairing, fixed).
#[derive(Debug, Default)]
pub struct Report {
    /// Files on disk without a row (recovered and indexed when repairing).
    pub unindexed: Vec<String>,
    /// Rows whose file is gone (removed when repairing).
    pub missing: Vec<String>,
    /// Files whose size differs from their row.
    pub size_mismatch: Vec<String>,
    /// Files that could not be made playable (left in place, not indexed).
    pub unrecoverable: Vec<String>,
    /// Sessions left running by a previous process.
    pub interrupted_sessions: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.unindexed.is_empty() && self.missing.is_empty() && self.size_mismatch.is_empty()
    }
}

/// Compares each present root with the index; with `repair`, makes them agree.
pub async fn reconcile(db: &Db, roots: &[Present], repair: bool) -> Result<Report> {
    let mut report = Report::default();
    if repair {
        report.interrupted_sessions = db.interrupt_open_sessions().await?.len();
    }
    for root in roots {
        reconcile_root(db, &root.id, &root.dir, repair, &mut report).await?;
    }
    report.unindexed.sort();
    report.missing.sort();
    if !report.is_clean() || report.interrupted_sessions > 0 {
        info!(
            unindexed = report.unindexed.len(),
            missing = report.missing.len(),
            size_mismatch = report.size_mismatch.len(),
            interrupted = report.interrupted_sessions,
            repair,
            "recordings reconciled"
        );
    }
    Ok(report)
}

/// Compares one root's directory (`root` its id) with its rows in the index; with `repair`, makes them agree.
pub async fn reconcile_root(db: &Db, root: &str, dir: &Path, repair: bool, report: &mut Report) -> Result<()> {
    let indexed: HashSet<String> = db.segment_filenames_on(root).await?.into_iter().collect();
    let elsewhere: HashSet<String> = db.segment_filenames().await?.into_iter().collect();
    let mut on_disk = HashSet::new();
    let entries: Vec<_> = std::fs::read_dir(dir).map_err(|e| storage_error(dir, e))?.flatten().collect();
    for entry in entries {
        let Ok(name) = entry.file_name().into_string() else { continue };
        if !entry.file_type().is_ok_and(|t| t.is_file()) || name.starts_with('.') {
            continue;
        }
        on_disk.insert(name.clone());
        if !indexed.contains(&name) {
            if elsewhere.contains(&name) {
                // The same name indexed on another root: a copy, never indexed twice.
                continue;
            }
            report.unindexed.push(name.clone());
            if repair && let Err(e) = recover_file(db, root, &entry.path()).await {
                if entry.path().exists() {
                    warn!(err = %e, file = name, "cannot recover recording");
                    report.unrecoverable.push(name);
                } else {
                    info!(err = %e, file = name, "empty recording removed");
                }
            }
        } else if let Some(row) = db.segment(&name).await?
            && entry.metadata().is_ok_and(|m| m.len() as i64 != row.size_bytes)
        {
            report.size_mismatch.push(name);
        }
    }
    for name in indexed.difference(&on_disk) {
        report.missing.push(name.clone());
        if repair {
            db.delete_segment(name).await?;
        }
    }
    Ok(())
}

/// Makes a segment file on root `root` playable, measures it with a demuxer, and indexes it.
pub async fn recover_file(db: &Db, root: &str, path: &Path) -> Result<SegmentRow> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| Error::internal("unnamed file"))?.to_owned();
    let parsed =
        parse_segment_name(&name).ok_or_else(|| Error::internal(format!("{name} is not a camhub segment name")))?;
    let owned = path.to_path_buf();
    // All file work (reading boxes, trimming, demuxing, fsync) stays off the async runtime.
    let (duration, size, modified, format) =
        tokio::task::spawn_blocking(move || -> Result<(Duration, u64, SystemTime, &'static str)> {
            // When it was last written, read before trimming (which writes).
            let modified = std::fs::metadata(&owned).and_then(|m| m.modified()).unwrap_or_else(|_| SystemTime::now());
            trim_fragmented_mp4(&owned).map_err(|e| storage_error(&owned, e))?;
            if holds_no_media(&owned) {
                // Cut before its first whole fragment (a disk that failed under a new segment): it holds no video,
                // and the recording went on elsewhere with these frames. Removed, so it is not left as a stray.
                std::fs::remove_file(&owned).map_err(|e| storage_error(&owned, e))?;
                let _ = crate::storage::files::sync_parent(&owned);
                return Err(Error::dependency(
                    Dependency::Storage,
                    format!("{} held no whole fragment: removed", owned.display()),
                ));
            }
            let format = match owned.extension().and_then(|e| e.to_str()) {
                Some("mkv") => "mkv",
                _ if is_fragmented(&owned) => "fmp4",
                _ => "mp4",
            };
            let duration = probe_duration(&owned)?;
            sync_file_and_dir(&owned).map_err(|e| storage_error(&owned, e))?;
            let meta = std::fs::metadata(&owned).map_err(|e| storage_error(&owned, e))?;
            Ok((duration, meta.len(), modified, format))
        })
        .await
        .map_err(Error::internal)??;
    let session_start = millis(parsed.started_at);
    let session_id = match db.session_by_tag(&parsed.camera, &parsed.session_tag).await? {
        Some(id) => id,
        None => {
            // A file whose session row is gone: give it a session of its own so it stays listed.
            let id = format!("{}-recovered", parsed.session_tag);
            let row = SessionRow {
                id: id.clone(),
                camera: parsed.camera.clone(),
                format: format.into(),
                requested_at: session_start,
                started_at: session_start,
                trigger: "recovered".into(),
            };
            db.insert_session(&row).await?;
            db.finish_session(&id, millis(modified), "interrupted", Some("recovered from disk")).await?;
            id
        }
    };
    // Where the recorder noted the segment's start, that; otherwise the first segment starts with the session's
    // first frame (its name says when), and a later one ends at the file's last write.
    let duration_ms = duration.as_millis() as i64;
    let started_at = match db.open_segment_start(&name).await? {
        Some(noted) => noted,
        None if parsed.seq == 0 => session_start,
        None => millis(modified) - duration_ms,
    };
    let row = SegmentRow {
        session_id,
        camera: parsed.camera,
        filename: name,
        format: format.into(),
        started_at,
        ended_at: started_at + duration_ms,
        duration_ms: duration.as_millis() as i64,
        size_bytes: size as i64,
        recovered: true,
        root: root.to_owned(),
    };
    db.insert_segment(&row).await?;
    info!(file = row.filename, duration_ms = row.duration_ms, "recovered recording");
    Ok(row)
}

fn storage_error(path: &Path, e: std::io::Error) -> Error {
    Error::dependency(Dependency::Storage, format!("{}: {e}", path.display()))
}

/// Top-level ISO BMFF boxes: (type, start, end).
fn boxes(file: &mut std::fs::File, len: u64) -> std::io::Result<Vec<([u8; 4], u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos + 8 <= len {
        file.seek(SeekFrom::Start(pos))?;
        let mut head = [0u8; 16];
        let n = file.read(&mut head)?;
        if n < 8 {
            break;
        }
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
        let kind = [head[4], head[5], head[6], head[7]];
        let size = match size32 {
            0 => len - pos,
            1 if n >= 16 => u64::from_be_bytes(head[8..16].try_into().expect("eight bytes")),
            1 => break,
            s => s,
        };
        if size < 8 || pos + size > len {
            // Incomplete: the crash cut it off.
            out.push((kind, pos, len + 1));
            break;
        }
        out.push((kind, pos, pos + size));
        pos += size;
    }
    Ok(out)
}

/// An MP4 with no media data at all (only its header boxes, or nothing), or an empty file.
fn holds_no_media(path: &Path) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return true;
    }
    if path.extension().and_then(|e| e.to_str()) != Some("mp4") {
        return false;
    }
    boxes(&mut f, len).is_ok_and(|b| !b.iter().any(|(k, _, _)| k == b"moof" || k == b"mdat"))
}

fn is_fragmented(path: &Path) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    boxes(&mut f, len).is_ok_and(|b| b.iter().any(|(k, _, _)| k == b"moof"))
}

/// Cuts a fragmented MP4 after its last complete `moof`+`mdat` pair. Other files are left alone.
pub fn trim_fragmented_mp4(path: &Path) -> std::io::Result<bool> {
    if path.extension().and_then(|e| e.to_str()) != Some("mp4") {
        return Ok(false);
    }
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let list = boxes(&mut f, len)?;
    if !list.iter().any(|(k, _, _)| k == b"moof") {
        return Ok(false);
    }
    let mut good = 0u64;
    let mut after_moof = false;
    for (kind, _start, end) in &list {
        if *end > len {
            break;
        }
        match kind {
            b"moof" => after_moof = true,
            b"mdat" if after_moof => {
                good = *end;
                after_moof = false;
            }
            b"ftyp" | b"moov" | b"mfra" | b"free" | b"styp" | b"sidx" if !after_moof => good = *end,
            _ => {}
        }
    }
    if good < len {
        f.set_len(good)?;
        f.sync_all()?;
        return Ok(true);
    }
    Ok(false)
}

/// Duration of a recording, measured by demuxing it whole (robust where headers were never finalised).
pub fn probe_duration(path: &Path) -> Result<Duration> {
    let fail = |detail: String| Error::dependency(Dependency::Demuxer, detail);
    let location = path.to_string_lossy().replace('\\', "\\\\").replace('"', "\\\"");
    let pipeline =
        gst::parse::launch(&format!("filesrc location=\"{location}\" ! parsebin ! appsink name=out sync=false"))
            .map_err(|e| fail(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| fail("not a pipeline".into()))?;
    let sink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| fail("no appsink".into()))?;
    pipeline.set_state(gst::State::Playing).map_err(|e| fail(e.to_string()))?;
    let (mut first, mut last) = (None::<gst::ClockTime>, None::<gst::ClockTime>);
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        if let Some(b) = sample.buffer()
            && let Some(pts) = b.pts()
        {
            let end = pts + b.duration().unwrap_or(gst::ClockTime::ZERO);
            first = Some(first.map_or(pts, |f| f.min(pts)));
            last = Some(last.map_or(end, |l| l.max(end)));
        }
    }
    let error = pipeline.bus().and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]));
    let _ = pipeline.set_state(gst::State::Null);
    match (first, last, error) {
        (Some(f), Some(l), _) => Ok(Duration::from_nanos(l.saturating_sub(f).nseconds())),
        (_, _, Some(msg)) => match msg.view() {
            gst::MessageView::Error(e) => Err(fail(e.error().to_string())),
            _ => Err(fail("unreadable".into())),
        },
        _ => Err(fail("no frames".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mp4_box(kind: &[u8; 4], payload: usize) -> Vec<u8> {
        let mut b = ((payload + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend(std::iter::repeat_n(0u8, payload));
        b
    }

    #[test]
    fn a_cut_fragmented_file_is_trimmed_to_its_last_whole_fragment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.mp4");
        let mut whole = Vec::new();
        for (kind, n) in [(b"ftyp", 16), (b"moov", 100), (b"moof", 50), (b"mdat", 1000), (b"moof", 50)] {
            whole.extend(mp4_box(kind, n));
        }
        let good = whole.len() - 58;
        whole.extend(&mp4_box(b"mdat", 1000)[..300]);
        std::fs::File::create(&path).expect("create").write_all(&whole).expect("write");
        assert!(trim_fragmented_mp4(&path).expect("trim"));
        assert_eq!(std::fs::metadata(&path).expect("meta").len() as usize, good);
        // A whole file is left as it is.
        assert!(!trim_fragmented_mp4(&path).expect("trim again"));
    }
}
