//! Start-up reconciliation of recordings on disk with the index, the `camhub check` command and `check --rebuild`. A
//! segment file left open by a crash is made playable (a fragmented MP4 is trimmed to its last complete fragment, and
//! before a fragment with a page of zeros that a failing disk lost), measured with a real demuxer and indexed; an index
//! row whose file is gone from a present root is removed (rows of a root that is away stay: a missing disk is not a
//! lost recording). `rebuild` does the same for a lost or outdated index, over every root's recordings directory, and
//! measures again files whose size changed. Nothing outside the recordings roots is touched.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
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
    if repair && !report.unindexed.is_empty() {
        db.extend_sessions_to_segments().await?;
    }
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
        tokio::task::spawn_blocking(move || measure(&owned)).await.map_err(Error::internal)??;
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

/// Makes a segment file playable and measures it: (duration, size, last write, format). Blocks.
fn measure(path: &Path) -> Result<(Duration, u64, SystemTime, &'static str)> {
    // When it was last written, read before trimming (which writes).
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or_else(|_| SystemTime::now());
    trim_fragmented_mp4(path).map_err(|e| storage_error(path, e))?;
    if holds_no_media(path) {
        // Cut before its first whole fragment (a disk that failed under a new segment): it holds no video, and the
        // recording went on elsewhere with these frames. Removed, so it is not left as a stray.
        std::fs::remove_file(path).map_err(|e| storage_error(path, e))?;
        let _ = crate::storage::files::sync_parent(path);
        return Err(Error::dependency(
            Dependency::Storage,
            format!("{} held no whole fragment: removed", path.display()),
        ));
    }
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("mkv") => "mkv",
        _ if is_fragmented(path) => "fmp4",
        _ => "mp4",
    };
    // The demuxer proves the file plays; in fMP4 it stops at the header's duration, which mp4mux writes a frame short,
    // so the fragments' own timing says how long it is.
    let probed = probe_duration(path)?;
    let duration = match format {
        "fmp4" => fragments_duration(path).ok().flatten().unwrap_or(probed),
        _ => probed,
    };
    sync_file_and_dir(path).map_err(|e| storage_error(path, e))?;
    let meta = std::fs::metadata(path).map_err(|e| storage_error(path, e))?;
    Ok((duration, meta.len(), modified, format))
}

/// What `check --rebuild` found and did.
#[derive(Debug, Default)]
pub struct RebuildReport {
    /// Segment files found in the directories scanned.
    pub files: usize,
    /// Rows that matched their file and were kept as they are.
    pub kept: usize,
    /// Files without a row, now indexed (sessions recreated from their names where the index had none).
    pub indexed: Vec<String>,
    /// Rows whose file's size had changed, measured again.
    pub remeasured: Vec<String>,
    /// Rows whose file is in none of the directories, removed.
    pub removed: Vec<String>,
    /// Files that could not be made playable (left in place, not indexed).
    pub unrecoverable: Vec<String>,
    /// Files whose names are not segment names, or that another directory scanned already holds (left alone).
    pub skipped: Vec<String>,
    /// Sessions left running by a previous process, now interrupted.
    pub interrupted_sessions: usize,
}

/// Rebuilds the recordings index from the segment files on the present `roots`, for a database that was lost or is
/// older than the disks: files without a row are made playable, measured and indexed on their root (their sessions
/// found by the tag in their names, or recreated from them); rows whose file's size changed are measured again; rows
/// of a present root whose file is not on it are removed (rows of a root that is away stay). Run while camhub is
/// stopped.
pub async fn rebuild(db: &Db, roots: &[Present]) -> Result<RebuildReport> {
    let mut report =
        RebuildReport { interrupted_sessions: db.interrupt_open_sessions().await?.len(), ..Default::default() };
    let listed = {
        let dirs: Vec<(String, PathBuf)> = roots.iter().map(|r| (r.id.clone(), r.dir.clone())).collect();
        crate::storage::files::blocking(move || {
            let mut listed = Vec::new();
            for (root, dir) in dirs {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(&dir).map_err(|e| storage_error(&dir, e))?.flatten() {
                    let Ok(name) = entry.file_name().into_string() else { continue };
                    if entry.file_type().is_ok_and(|t| t.is_file()) && !name.starts_with('.') {
                        let size = entry.metadata().map(|m| m.len()).map_err(|e| storage_error(&entry.path(), e))?;
                        names.push((name, size));
                    }
                }
                // Name order is camera, session start, session, sequence: each session's first segment comes first.
                names.sort();
                listed.push((root, dir, names));
            }
            Ok(listed)
        })
        .await?
    };
    let mut seen = HashSet::new();
    for (root, dir, names) in &listed {
        for (name, size) in names.iter().cloned() {
            let path = dir.join(&name);
            if parse_segment_name(&name).is_none() || !seen.insert(name.clone()) {
                report.skipped.push(path.display().to_string());
                continue;
            }
            report.files += 1;
            match db.segment(&name).await? {
                Some(row) if row.size_bytes == size as i64 && row.duration_ms > 0 && row.root == *root => {
                    report.kept += 1
                }
                Some(_) => {
                    let owned = path.clone();
                    match tokio::task::spawn_blocking(move || measure(&owned)).await.map_err(Error::internal)? {
                        Ok((duration, size, _, _)) => {
                            db.update_segment_measure(&name, size as i64, duration.as_millis() as i64).await?;
                            report.remeasured.push(name);
                        }
                        Err(e) => {
                            warn!(err = %e, file = name, "cannot measure recording");
                            report.unrecoverable.push(name);
                        }
                    }
                }
                None => match recover_file(db, root, &path).await {
                    Ok(_) => report.indexed.push(name),
                    Err(e) => {
                        warn!(err = %e, file = name, "cannot recover recording");
                        report.unrecoverable.push(name);
                    }
                },
            }
        }
    }
    for (root, _, _) in &listed {
        for name in db.segment_filenames_on(root).await? {
            if !seen.contains(&name) {
                db.delete_segment(&name).await?;
                report.removed.push(name);
            }
        }
    }
    report.removed.sort();
    db.extend_sessions_to_segments().await?;
    info!(
        files = report.files,
        kept = report.kept,
        indexed = report.indexed.len(),
        remeasured = report.remeasured.len(),
        removed = report.removed.len(),
        unrecoverable = report.unrecoverable.len(),
        "recordings index rebuilt"
    );
    Ok(report)
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

/// The boxes inside a box's payload: (type, payload). Stops at the first that does not fit.
fn children(mut buf: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 8 {
        let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = [buf[4], buf[5], buf[6], buf[7]];
        let (header, size) = match size {
            0 => (8, buf.len()),
            1 if buf.len() >= 16 => (16, u64::from_be_bytes(buf[8..16].try_into().expect("eight bytes")) as usize),
            s => (8, s),
        };
        if size < header || size > buf.len() {
            break;
        }
        out.push((kind, &buf[header..size]));
        buf = &buf[size..];
    }
    out
}

fn child<'a>(buf: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(buf).into_iter().find(|(k, _)| k == kind).map(|(_, b)| b)
}

/// Big-endian fields read in order from a box payload.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes(b.try_into().expect("four bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_be_bytes(b.try_into().expect("eight bytes")))
    }
    /// A full box's version and flags.
    fn version_flags(&mut self) -> Option<(u8, u32)> {
        self.u32().map(|v| ((v >> 24) as u8, v & 0xff_ffff))
    }
}

/// The video track of a `moov` payload: (track id, timescale, default sample duration from `trex`).
fn video_track(moov: &[u8]) -> Option<(u32, u32, u32)> {
    let trak = children(moov).into_iter().filter(|(k, _)| k == b"trak").map(|(_, b)| b).find(|trak| {
        let hdlr = child(trak, b"mdia").and_then(|m| child(m, b"hdlr"));
        hdlr.and_then(|h| h.get(8..12)) == Some(b"vide")
    })?;
    let mut tkhd = Fields(child(trak, b"tkhd")?);
    let (version, _) = tkhd.version_flags()?;
    tkhd.take(if version == 1 { 16 } else { 8 })?;
    let id = tkhd.u32()?;
    let mut mdhd = Fields(child(child(trak, b"mdia")?, b"mdhd")?);
    let (version, _) = mdhd.version_flags()?;
    mdhd.take(if version == 1 { 16 } else { 8 })?;
    let timescale = mdhd.u32().filter(|t| *t > 0)?;
    let default_duration = child(moov, b"mvex")
        .map(children)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == b"trex")
        .find_map(|(_, trex)| {
            let mut f = Fields(trex);
            f.version_flags()?;
            (f.u32()? == id).then_some(())?;
            f.u32()?;
            f.u32()
        })
        .unwrap_or(0);
    Some((id, timescale, default_duration))
}

/// The video's length in a fragmented MP4 from its fragments' timing (`tfdt` and `trun` sample durations), every
/// sample counted, the last one (written without a duration) as long as the one before; `None` for a file without
/// fragments or a video track.
fn fragments_duration(path: &Path) -> std::io::Result<Option<Duration>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let read = |file: &mut std::fs::File, start: u64, end: u64| -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        Ok(buf)
    };
    let list = boxes(&mut file, len)?;
    let Some((_, start, end)) = list.iter().find(|(k, _, end)| k == b"moov" && *end <= len) else { return Ok(None) };
    let moov = read(&mut file, *start, *end)?;
    let Some((track, timescale, trex_duration)) = children(&moov).first().and_then(|(_, m)| video_track(m)) else {
        return Ok(None);
    };
    let (mut first, mut last, mut spacing) = (None::<u64>, 0u64, 0u64);
    for (_, start, end) in list.iter().filter(|(k, _, end)| k == b"moof" && *end <= len) {
        let moof = read(&mut file, *start, *end)?;
        let Some((_, moof)) = children(&moof).into_iter().next() else { continue };
        for (_, traf) in children(moof).into_iter().filter(|(k, _)| k == b"traf") {
            let Some(mut tfhd) = child(traf, b"tfhd").map(Fields) else { continue };
            let Some((_, flags)) = tfhd.version_flags() else { continue };
            if tfhd.u32() != Some(track) {
                continue;
            }
            let skip = if flags & 0x01 != 0 { 8 } else { 0 } + if flags & 0x02 != 0 { 4 } else { 0 };
            let default_duration = (flags & 0x08 != 0)
                .then(|| {
                    tfhd.take(skip)?;
                    tfhd.u32()
                })
                .flatten()
                .unwrap_or(trex_duration);
            let base = child(traf, b"tfdt").and_then(|b| {
                let mut f = Fields(b);
                let (version, _) = f.version_flags()?;
                if version == 1 { f.u64() } else { f.u32().map(u64::from) }
            });
            let mut time = base.unwrap_or(last);
            first = Some(first.map_or(time, |f| f.min(time)));
            for (_, trun) in children(traf).into_iter().filter(|(k, _)| k == b"trun") {
                let mut f = Fields(trun);
                let Some((_, flags)) = f.version_flags() else { continue };
                let Some(count) = f.u32() else { continue };
                let head = if flags & 0x01 != 0 { 4 } else { 0 } + if flags & 0x04 != 0 { 4 } else { 0 };
                if f.take(head).is_none() {
                    continue;
                }
                let per_sample = [0x100, 0x200, 0x400, 0x800].iter().filter(|bit| flags & **bit != 0).count() * 4;
                for _ in 0..count {
                    let Some(sample) = f.take(per_sample) else { break };
                    let duration = if flags & 0x100 != 0 {
                        u64::from(u32::from_be_bytes(sample[..4].try_into().expect("four bytes")))
                    } else {
                        u64::from(default_duration)
                    };
                    // mp4mux writes the last sample with no duration (it never learns when the next would have come);
                    // it is shown as long as the one before it.
                    if duration > 0 {
                        spacing = duration;
                    }
                    time += if duration > 0 { duration } else { spacing };
                }
            }
            last = last.max(time);
        }
    }
    Ok(first.map(|f| Duration::from_nanos(((last - f.min(last)) as u128 * 1_000_000_000 / timescale as u128) as u64)))
}

/// The size of the pages a filesystem loses when a disk fails before their writeback: a file's size on disk may
/// already cover a page whose data never reached it, which then reads as zeros.
const PAGE: u64 = 4096;

/// Whether a page of the file between `start` and `end` (a box's payload) reads as zeros only: a page lost to a
/// failing disk. Compressed media never holds one (H.264 and H.265 payloads cannot even hold three zero bytes in a
/// row), so such a fragment is damaged, though its boxes are whole.
fn holds_a_lost_page(file: &mut std::fs::File, start: u64, end: u64) -> std::io::Result<bool> {
    let mut page = start.div_ceil(PAGE) * PAGE;
    file.seek(SeekFrom::Start(page))?;
    // The pages follow each other: read 64 KiB at a time, not a page a call.
    let mut pages = std::io::BufReader::with_capacity(16 * PAGE as usize, file);
    let mut buf = [0u8; PAGE as usize];
    while page + PAGE <= end {
        pages.read_exact(&mut buf)?;
        if buf.iter().all(|b| *b == 0) {
            return Ok(true);
        }
        page += PAGE;
    }
    Ok(false)
}

/// Cuts a fragmented MP4 after its last complete `moof`+`mdat` pair, and before the first fragment whose media holds
/// a page of zeros (`holds_a_lost_page`). Other files are left alone.
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
    for (kind, start, end) in &list {
        if *end > len {
            break;
        }
        match kind {
            b"moof" => after_moof = true,
            b"mdat" if after_moof => {
                if holds_a_lost_page(&mut f, start + 8, *end)? {
                    break;
                }
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
        b.extend(std::iter::repeat_n(0x5au8, payload));
        b
    }

    /// A real fragmented MP4 from mp4mux, as the recorder writes them: 30 frames at 15 fps last two seconds, though
    /// mp4mux writes the last frame without a duration and the demuxer, trusting the header, drops it.
    #[test]
    fn a_fragmented_file_lasts_as_long_as_its_frames() {
        crate::media::init().expect("GStreamer");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cam_2026-12-01T00-00-00.000Z_01234567_0000.mp4");
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc num-buffers=30 ! video/x-raw,width=64,height=48,framerate=15/1 ! x264enc key-int-max=15 ! \
             h264parse ! mp4mux fragment-duration=500 ! filesink location=\"{}\"",
            path.display()
        ))
        .expect("pipeline");
        pipeline.set_state(gst::State::Playing).expect("play");
        let bus = pipeline.bus().expect("bus");
        let end =
            bus.timed_pop_filtered(gst::ClockTime::from_seconds(20), &[gst::MessageType::Eos, gst::MessageType::Error]);
        pipeline.set_state(gst::State::Null).expect("stop");
        assert!(matches!(end.as_ref().map(|m| m.view()), Some(gst::MessageView::Eos(_))), "{end:?}");
        assert!(is_fragmented(&path));
        assert_eq!(fragments_duration(&path).expect("read"), Some(Duration::from_secs(2)));
        let (duration, _, _, format) = measure(&path).expect("measure");
        assert_eq!((duration, format), (Duration::from_secs(2), "fmp4"));
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

    #[test]
    fn a_fragment_with_a_page_of_zeros_is_cut_with_everything_after_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.mp4");
        let mut whole = Vec::new();
        for (kind, n) in [(b"ftyp", 16), (b"moov", 100), (b"moof", 50), (b"mdat", 10_000)] {
            whole.extend(mp4_box(kind, n));
        }
        let good = whole.len();
        whole.extend(mp4_box(b"moof", 50));
        let mdat = whole.len();
        whole.extend(mp4_box(b"mdat", 10_000));
        whole.extend(mp4_box(b"moof", 50));
        whole.extend(mp4_box(b"mdat", 10_000));
        // A page inside the second fragment's media never reached the disk.
        let page = (mdat + 8).div_ceil(4096) * 4096;
        whole[page..page + 4096].fill(0);
        std::fs::File::create(&path).expect("create").write_all(&whole).expect("write");
        assert!(trim_fragmented_mp4(&path).expect("trim"));
        assert_eq!(std::fs::metadata(&path).expect("meta").len() as usize, good);
        // 2,000 zeros that fill no whole page (bytes 8,198 to 10,198 of the file) are left alone.
        let mut short = std::fs::read(&path).expect("read");
        short[good - 2000..good].fill(0);
        std::fs::write(&path, &short).expect("write");
        assert!(!trim_fragmented_mp4(&path).expect("trim again"));
    }
}
