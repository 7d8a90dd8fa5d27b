//! Recordings by time range: a camera's recorded time as continuous spans and the gaps between them, and one file
//! spanning any number of segments (`/playback`, `export_recording`), made without re-encoding.
//!
//! A range is built by demuxing each segment it touches (`filesrc ! qtdemux|matroskademux ! appsink`, no parser, no
//! decoder) and handing the frames, re-timed onto the wall clock from the first kept keyframe, to one
//! `appsrc [+ appsrc] ! mp4mux ! filesink`. The file starts at the keyframe at or before the range's start (so it
//! decodes from its first frame), ends at the range's end (within one GOP of it: the frames before the end are kept,
//! and the first GOP may start before the range), and keeps a camera gap as time (the last frame before it is held):
//! a player's `currentTime` plus the file's start is the wall-clock time. Where segments overlap (a recording started
//! within the pre-roll of the last one, a segment moved to another root), frames already written are skipped up to the
//! next keyframe after them. The tracks are the first segment's; sound of another codec, and a picture whose caps
//! change (another codec or size), end what the file can hold (the latter cuts the file there).
//!
//! Built files are cached under `DATA/cache/playback/`, named by a digest of what they hold (camera, range, format and
//! the segment files used), so a player's many Range requests cost one build, concurrent requests for one range wait
//! for one build, and a range whose recording grew since is built again. Entries unused for `CACHE_IDLE` are removed
//! every second (the storage guard's tick) and whenever a build starts, which also trims the cache to
//! `CACHE_MAX_BYTES`, least recently used first; the directory is emptied at start-up. A file is deleted when its last user lets it go, never under a response being served (an
//! open file stays readable once unlinked).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tracing::{debug, info, warn};

use crate::base::time::{from_millis, millis};
use crate::error::{Dependency, Error, Resource, Result};
use crate::media::make;
use crate::storage::Db;
use crate::storage::db::SegmentRow;
use crate::storage::files::blocking;
use crate::storage::roots::Roots;

/// Two segments whose wall-clock times are this close are one span. Within a session a segment starts where the last
/// one ended (the index rounds both to the millisecond, and a frame's length is estimated from the one before: a
/// 1 fps camera's segment end may be off by up to a frame), and back-to-back sessions overlap by their pre-roll; a
/// camera that went away is gone for at least the stall timeout (2 s) plus a reconnect. One second is above the first
/// and below the second, and a shorter hole is within what a player buffers anyway.
pub const SPAN_TOLERANCE: Duration = Duration::from_secs(1);
/// The longest range `/playback` builds: a file is built whole before its first byte is sent, so this bounds the wait
/// and the cache (longer stretches: several requests, or `export_recording`).
pub const MAX_PLAYBACK: Duration = Duration::from_secs(3600);
/// The longest range `export_recording` writes.
pub const MAX_EXPORT: Duration = Duration::from_secs(24 * 3600);
/// A cached file unused this long is removed.
const CACHE_IDLE: Duration = Duration::from_secs(120);
/// What the cache may hold; beyond it the least recently used files go first.
const CACHE_MAX_BYTES: u64 = 1 << 30;
/// A range that starts more than this into a segment file seeks to `SEEK_MARGIN` before its start rather than demuxing
/// all that comes before. Not to the start itself: qtdemux lands in a fragmented file where asked, not on the keyframe
/// before (measured), so the margin must hold one; a GOP longer than it is found by reading the file whole again.
const SEEK_AFTER: Duration = Duration::from_secs(8);
const SEEK_MARGIN: Duration = Duration::from_secs(5);
/// Ranges built at once (playback and export together).
const BUILDS: usize = 2;
/// A segment's demuxer that hands over nothing for this long has failed.
const STALL: Duration = Duration::from_secs(20);

/// The container a range is delivered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    /// MP4 with its index first (`faststart`): every player, seekable through Range requests.
    Mp4,
    /// Fragmented MP4 (1 s fragments), as the recorder writes it.
    Fmp4,
}

impl Container {
    pub fn parse(s: &str) -> Option<Container> {
        match s {
            "mp4" => Some(Container::Mp4),
            "fmp4" => Some(Container::Fmp4),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Fmp4 => "fmp4",
        }
    }
}

/// A stretch of wall-clock time, in Unix milliseconds, end excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start: i64,
    pub end: i64,
}

impl Interval {
    pub fn started_at(&self) -> SystemTime {
        from_millis(self.start)
    }

    pub fn ended_at(&self) -> SystemTime {
        from_millis(self.end)
    }

    pub fn seconds(&self) -> f64 {
        (self.end - self.start) as f64 / 1000.0
    }
}

/// The continuous spans of segments (start, end in Unix ms, sorted by start): those that touch within
/// `SPAN_TOLERANCE`, or overlap, are one.
pub fn spans(segments: impl IntoIterator<Item = (i64, i64)>) -> Vec<Interval> {
    let tolerance = SPAN_TOLERANCE.as_millis() as i64;
    let mut out: Vec<Interval> = Vec::new();
    for (start, end) in segments {
        match out.last_mut() {
            Some(last) if start <= last.end + tolerance => last.end = last.end.max(end),
            _ => out.push(Interval { start, end }),
        }
    }
    out
}

/// The parts of `[from, to)` that `spans` leave uncovered; those shorter than `SPAN_TOLERANCE` at either edge are
/// not gaps (between spans every hole is longer, or they would be one span).
pub fn gaps(spans: &[Interval], from: i64, to: i64) -> Vec<Interval> {
    let tolerance = SPAN_TOLERANCE.as_millis() as i64;
    let mut out = Vec::new();
    let mut at = from;
    for s in spans.iter().filter(|s| s.end > from && s.start < to) {
        if s.start > at {
            out.push(Interval { start: at, end: s.start.min(to) });
        }
        at = at.max(s.end);
    }
    if at < to {
        out.push(Interval { start: at, end: to });
    }
    out.retain(|g| g.end - g.start > tolerance || (g.start != from && g.end != to));
    out
}

/// A built file of a range.
#[derive(Debug)]
pub struct Built {
    pub path: PathBuf,
    pub size: u64,
    /// The wall-clock time of its first frame (a keyframe at or before the range's start) and of the end of its last.
    pub first: SystemTime,
    pub end: SystemTime,
    /// What the requested range holds that was not recorded, within and at the edges of the file.
    pub gaps: Vec<Interval>,
    /// How many segment files it was made from.
    pub segments: usize,
    /// Whether it holds sound.
    pub audio: bool,
    /// Frames demuxed to make it, and whether the first file was sought into (figures for the log).
    pub frames_read: usize,
    pub sought: bool,
    /// Deleted when the last user lets it go (cached files only; an export's file is the recording).
    temporary: bool,
}

impl Built {
    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.first).unwrap_or_default()
    }
}

impl Drop for Built {
    fn drop(&mut self) {
        if !self.temporary {
            return;
        }
        let path = std::mem::take(&mut self.path);
        let remove = move || {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(err = %e, file = %path.display(), "cannot remove a cached playback file");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

#[derive(Debug)]
struct CacheEntry {
    cell: Arc<OnceCell<Arc<Built>>>,
    used: Instant,
}

/// Ranges of recordings, built and cached.
#[derive(Debug)]
pub struct Playback {
    db: Db,
    roots: Arc<Roots>,
    dir: PathBuf,
    /// Cached builds by digest; a short lock, never held across `.await`.
    cache: Mutex<HashMap<String, CacheEntry>>,
    /// Builds at a time (each takes a core while it runs): more requests for new ranges wait their turn.
    builds: tokio::sync::Semaphore,
}

/// One segment file to read, where it is.
#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    mkv: bool,
    /// Wall-clock time (Unix ns) of the file's time zero.
    zero_ns: u64,
}

impl Playback {
    /// The cache at `dir`, emptied (what a previous process left is unknown to this one).
    pub async fn new(db: Db, roots: Arc<Roots>, dir: PathBuf) -> Result<Playback> {
        let d = dir.clone();
        blocking(move || {
            if d.exists() {
                std::fs::remove_dir_all(&d).map_err(|e| Error::dependency(Dependency::Storage, e))?;
            }
            std::fs::create_dir_all(&d).map_err(|e| Error::dependency(Dependency::Storage, e))
        })
        .await?;
        Ok(Playback { db, roots, dir, cache: Mutex::new(HashMap::new()), builds: tokio::sync::Semaphore::new(BUILDS) })
    }

    /// The continuous spans of `camera`'s recordings that overlap `[from, to)`, clipped to it.
    pub async fn spans(&self, camera: &str, from: i64, to: i64) -> Result<Vec<Interval>> {
        let rows = self.db.segments_between(camera, from, to).await?;
        Ok(spans(rows.iter().map(|r| (r.started_at, r.ended_at)))
            .into_iter()
            .map(|s| Interval { start: s.start.max(from), end: s.end.min(to) })
            .collect())
    }

    /// Whether `camera` has recordings at all (a removed camera's stay playable).
    pub async fn has_recordings(&self, camera: &str) -> Result<bool> {
        self.db.camera_has_segments(camera).await
    }

    /// The file of `camera`'s recordings over `[start, end)` in `container`, built or from the cache. Not found when
    /// nothing is recorded there.
    pub async fn range(
        &self,
        camera: &str,
        start: SystemTime,
        end: SystemTime,
        container: Container,
    ) -> Result<Arc<Built>> {
        let (from, to) = (millis(start), millis(end));
        let (rows, sources) = self.recorded(camera, from, to).await?;
        let key = digest(camera, from, to, container, &rows);
        let cell = {
            let mut cache = self.cache.lock();
            let entry =
                cache.entry(key.clone()).or_insert_with(|| CacheEntry { cell: Arc::default(), used: Instant::now() });
            entry.used = Instant::now();
            entry.cell.clone()
        };
        let spans = spans(rows.iter().map(|r| (r.started_at, r.ended_at)));
        let built = cell
            .get_or_try_init(|| async {
                let _turn = self.builds.acquire().await.map_err(Error::internal)?;
                self.sweep(&key);
                let started = Instant::now();
                let path = self.dir.join(format!("{key}.mp4"));
                let built = build(sources, (start, end), container, path, true, spans).await?;
                info!(
                    camera_id = camera,
                    segments = built.segments,
                    frames_read = built.frames_read,
                    sought = built.sought,
                    size = built.size,
                    duration_ms = built.duration().as_millis() as u64,
                    build_ms = started.elapsed().as_millis() as u64,
                    "playback range built"
                );
                Ok::<_, Error>(Arc::new(built))
            })
            .await;
        match built {
            Ok(b) => Ok(b.clone()),
            Err(e) => {
                // A failed build is not cached: the next request tries again.
                self.cache.lock().remove(&key);
                Err(e)
            }
        }
    }

    /// Writes `camera`'s recordings over `[start, end)` as one MP4 at `path` (a new file, which the caller indexes).
    pub async fn export(&self, camera: &str, start: SystemTime, end: SystemTime, path: PathBuf) -> Result<Built> {
        let (from, to) = (millis(start), millis(end));
        let (rows, sources) = self.recorded(camera, from, to).await?;
        let spans = spans(rows.iter().map(|r| (r.started_at, r.ended_at)));
        let _turn = self.builds.acquire().await.map_err(Error::internal)?;
        build(sources, (start, end), Container::Mp4, path, false, spans).await
    }

    /// `camera`'s segments over `[from, to)` (Unix ms) and the files of those on roots that are there: not found when
    /// nothing is recorded there, the first unavailable root's error when nothing there is on a root that is there.
    async fn recorded(&self, camera: &str, from: i64, to: i64) -> Result<(Vec<SegmentRow>, Vec<Source>)> {
        let rows = self.db.segments_between(camera, from, to).await?;
        let (sources, unavailable) = self.sources(&rows);
        if sources.is_empty() {
            return Err(match unavailable {
                Some(e) => e,
                None => Error::not_found(Resource::Recording, format!("{camera} between the times asked")),
            });
        }
        Ok((rows, sources))
    }

    /// The files of `rows` on roots that are there; the error of the first that is not (its root is away).
    fn sources(&self, rows: &[SegmentRow]) -> (Vec<Source>, Option<Error>) {
        let mut unavailable = None;
        let sources = rows
            .iter()
            .filter_map(|r| match self.roots.dir_of(&r.root) {
                Some(dir) => Some(Source {
                    path: dir.join(&r.filename),
                    mkv: r.format == "mkv",
                    zero_ns: r.started_at.max(0) as u64 * 1_000_000,
                }),
                None => {
                    unavailable.get_or_insert_with(|| crate::storage::roots::unavailable(&r.filename, &r.root));
                    None
                }
            })
            .collect();
        (sources, unavailable)
    }

    /// Forgets cached files unused for `CACHE_IDLE`, then the least recently used while the cache holds more than
    /// `CACHE_MAX_BYTES`; `keep` (the one being built) stays. Files go when their last user lets them go.
    fn sweep(&self, keep: &str) {
        let mut cache = self.cache.lock();
        cache.retain(|k, e| k == keep || e.used.elapsed() < CACHE_IDLE);
        let size = |e: &CacheEntry| e.cell.get().map_or(0, |b| b.size);
        let mut total: u64 = cache.values().map(size).sum();
        while total > CACHE_MAX_BYTES {
            let Some(oldest) = cache
                .iter()
                .filter(|(k, e)| k.as_str() != keep && e.cell.initialized())
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = cache.remove(&oldest) {
                total -= size(&e);
            }
        }
    }

    /// Forgets cached files unused for `CACHE_IDLE` (the storage guard calls it every second): their files go when
    /// the last response serving them ends.
    pub fn forget_idle(&self) {
        self.sweep("");
    }
}

/// The cache name of a range: what it asks for and the files (and their sizes) it is made of, so a range whose
/// segments changed (a new one indexed, one deleted, one measured again) is another file. A digest: nothing a client
/// wrote becomes a path.
fn digest(camera: &str, from: i64, to: i64, container: Container, rows: &[SegmentRow]) -> String {
    let mut h = Sha256::new();
    h.update(format!("{camera}\n{from}\n{to}\n{}\n", container.as_str()));
    for r in rows {
        h.update(format!("{}\n{}\n{}\n", r.filename, r.size_bytes, r.root));
    }
    hex::encode(&h.finalize()[..16])
}

/// Builds the file on the blocking pool: temp name, then renamed, so a file under its name is whole.
async fn build(
    sources: Vec<Source>,
    (start, end): (SystemTime, SystemTime),
    container: Container,
    path: PathBuf,
    temporary: bool,
    spans: Vec<Interval>,
) -> Result<Built> {
    blocking(move || {
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| Error::internal("no file name"))?;
        let part = path.with_file_name(format!(".{name}.part"));
        let range = (nanos(start), nanos(end));
        let made = match write(&sources, range, container, &part) {
            Ok(made) => made,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                let _ = std::fs::remove_file(part.with_extension("moov"));
                return Err(e);
            }
        };
        std::fs::rename(&part, &path).map_err(|e| Error::dependency(Dependency::Storage, e))?;
        let size = std::fs::metadata(&path).map_err(|e| Error::dependency(Dependency::Storage, e))?.len();
        let first_ms = (made.first / 1_000_000) as i64;
        let from = first_ms.min(millis(start));
        Ok(Built {
            path,
            size,
            first: from_millis(first_ms),
            end: from_millis((made.end / 1_000_000) as i64),
            // What the future holds is not a gap yet.
            gaps: gaps(&spans, from, millis(end).min(crate::base::time::now_ms())),
            segments: made.segments,
            audio: made.audio,
            frames_read: made.read,
            sought: made.sought,
            temporary,
        })
    })
    .await
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// What a written file holds: wall-clock ns of its first frame and the end of its last, segments read, sound.
struct Made {
    /// Frames demuxed (read, kept or not), and whether the first file was sought into.
    read: usize,
    sought: bool,
    first: u64,
    end: u64,
    segments: usize,
    audio: bool,
}

/// A frame on its way from a segment to the file: wall-clock time (ns), keyframe or not, presentation delay.
#[derive(Debug, Clone)]
pub(crate) struct Frame<T> {
    pub video: bool,
    pub key: bool,
    pub wall: u64,
    /// PTS minus DTS (B-frames).
    pub delay: u64,
    pub length: u64,
    pub payload: T,
}

/// Decides which frames of a range's segments go into the file, and when: the GOP holding the range's start is held
/// back until the first frame at or after the start shows it is the one; frames at or after the end stop the
/// picture; frames at or before the last one written (overlapping segments) are skipped up to the next keyframe.
#[derive(Debug)]
pub(crate) struct Cutter<T> {
    start: u64,
    end: u64,
    /// The wall-clock time of the file's first frame, once known.
    pub origin: Option<u64>,
    /// From a keyframe before the start: the GOP the file may start with.
    pending: Vec<Frame<T>>,
    last_video: Option<u64>,
    last_audio: Option<u64>,
    need_key: bool,
    pub done: bool,
    /// The end of the last video frame written.
    pub last_end: u64,
}

impl<T> Cutter<T> {
    pub fn new(start: u64, end: u64) -> Cutter<T> {
        Cutter {
            start,
            end,
            origin: None,
            pending: Vec::new(),
            last_video: None,
            last_audio: None,
            need_key: false,
            done: false,
            last_end: 0,
        }
    }

    /// Takes one frame; what is to be written now goes to `out`, in order.
    pub fn push(&mut self, f: Frame<T>, out: &mut Vec<Frame<T>>) {
        if self.done {
            return;
        }
        if !f.video {
            match self.origin {
                None if !self.pending.is_empty() => self.pending.push(f),
                Some(_) if f.wall < self.end && self.last_audio.is_none_or(|l| f.wall > l) => self.emit(f, out),
                _ => {}
            }
            return;
        }
        if f.wall >= self.end {
            self.done = true;
            return;
        }
        if self.last_video.is_some_and(|l| f.wall <= l) {
            self.need_key = true;
            return;
        }
        if self.need_key {
            if !f.key {
                return;
            }
            self.need_key = false;
        }
        if self.origin.is_some() {
            self.emit(f, out);
            return;
        }
        if f.wall < self.start {
            if f.key {
                self.pending.clear();
                self.pending.push(f);
            } else if !self.pending.is_empty() {
                self.pending.push(f);
            }
            return;
        }
        // The first frame at or after the start: the held GOP starts the file, unless a camera gap lies between them
        // (the file then starts after the gap, at this frame, which must be a keyframe).
        let tolerance = SPAN_TOLERANCE.as_nanos() as u64;
        let held_end = self.pending.iter().filter(|p| p.video).map(|p| p.wall + p.length).max();
        if held_end.is_some_and(|e| f.wall > e + tolerance) {
            self.pending.clear();
        }
        if self.pending.is_empty() {
            if !f.key {
                return;
            }
            self.origin = Some(f.wall);
            self.emit(f, out);
            return;
        }
        let origin = self.pending[0].wall;
        self.origin = Some(origin);
        for p in std::mem::take(&mut self.pending) {
            if p.video || p.wall >= origin {
                self.emit(p, out);
            }
        }
        self.emit(f, out);
    }

    fn emit(&mut self, f: Frame<T>, out: &mut Vec<Frame<T>>) {
        if f.video {
            self.last_video = Some(f.wall);
            self.last_end = self.last_end.max(f.wall + f.length);
        } else {
            self.last_audio = Some(f.wall);
        }
        out.push(f);
    }
}

/// What a segment's demuxer hands over.
enum Item {
    /// A stream's caps, when its pad appears (before its first sample).
    Pad {
        video: bool,
        caps: gst::Caps,
    },
    Sample {
        video: bool,
        sample: gst::Sample,
    },
    Eos,
    Failed(String),
}

/// The file being written: `appsrc [+ appsrc] ! mp4mux ! filesink`.
struct Writer {
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    video_caps: gst::Caps,
    audio: Option<(gst_app::AppSrc, gst::Caps)>,
}

fn fail(detail: impl std::fmt::Display) -> Error {
    Error::dependency(Dependency::MediaPipeline, detail)
}

impl Writer {
    fn open(
        container: Container,
        path: &Path,
        video_caps: &gst::Caps,
        audio_caps: Option<&gst::Caps>,
    ) -> Result<Writer> {
        let pipeline = gst::Pipeline::with_name("playback");
        let muxer = make("mp4mux")?;
        match container {
            Container::Fmp4 => muxer.set_property("fragment-duration", 1000u32),
            Container::Mp4 => {
                muxer.set_property("faststart", true);
                muxer.set_property("faststart-file", path.with_extension("moov").to_string_lossy().as_ref());
            }
        }
        let sink = make("filesink")?;
        sink.set_property("location", path.to_string_lossy().as_ref());
        sink.set_property("sync", false);
        sink.set_property("async", false);
        pipeline.add_many([&muxer, &sink]).map_err(fail)?;
        muxer.link(&sink).map_err(fail)?;
        let input = |caps: &gst::Caps, template: &str| -> Result<gst_app::AppSrc> {
            let src = gst_app::AppSrc::builder().caps(caps).format(gst::Format::Time).max_bytes(0).build();
            pipeline.add(&src).map_err(fail)?;
            let pad =
                muxer.request_pad_simple(template).ok_or_else(|| fail(format!("mp4mux has no {template} pad")))?;
            src.static_pad("src").ok_or_else(|| fail("appsrc without a pad"))?.link(&pad).map_err(fail)?;
            Ok(src)
        };
        let video = input(video_caps, "video_%u")?;
        // Sound mp4mux cannot hold (G.711 from an MKV segment) is left out.
        let audio = match audio_caps {
            Some(caps) if mp4_takes(caps) => Some((input(caps, "audio_%u")?, caps.clone())),
            _ => None,
        };
        pipeline.set_state(gst::State::Playing).map_err(|e| fail(format!("cannot start the muxer: {e}")))?;
        Ok(Writer { pipeline, video, video_caps: video_caps.clone(), audio })
    }

    /// Hands one frame over with file timestamps (`origin` is the file's time zero, wall-clock ns).
    fn push(&self, f: Frame<gst::Buffer>, origin: u64) -> Result<()> {
        let t = gst::ClockTime::from_nseconds(f.wall.saturating_sub(origin));
        let mut buffer = f.payload;
        {
            let b = buffer.make_mut();
            b.set_dts(t);
            b.set_pts(t + gst::ClockTime::from_nseconds(f.delay));
        }
        let src = if f.video {
            &self.video
        } else {
            match &self.audio {
                Some((src, _)) => src,
                None => return Ok(()),
            }
        };
        src.push_buffer(buffer).map(drop).map_err(|e| fail(format!("muxer refused a frame: {e:?}")))
    }

    /// Ends the file and waits for the muxer to finalise it.
    fn finish(self) -> Result<()> {
        let _ = self.video.end_of_stream();
        if let Some((audio, _)) = &self.audio {
            let _ = audio.end_of_stream();
        }
        let bus = self.pipeline.bus().ok_or_else(|| fail("muxer without a bus"))?;
        let end =
            bus.timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos, gst::MessageType::Error]);
        let _ = self.pipeline.set_state(gst::State::Null);
        match end.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => Ok(()),
            Some(gst::MessageView::Error(e)) => Err(fail(format!("muxing: {}", e.error()))),
            _ => Err(fail("the muxer did not finish in 60 s")),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Whether two caps describe the same stream for a muxer: codec, its setup (`codec_data`, parameter sets included),
/// picture size, sound rate and channels. A demuxer's caps differ in what it learns as it reads (a framerate).
fn same_stream(a: &gst::CapsRef, b: &gst::CapsRef) -> bool {
    let (Some(a), Some(b)) = (a.structure(0), b.structure(0)) else { return false };
    let field =
        |s: &gst::StructureRef, f: &str| s.value(f).ok().and_then(|v| v.serialize().ok()).map(|v| v.to_string());
    a.name() == b.name()
        && ["stream-format", "codec_data", "width", "height", "rate", "channels", "mpegversion"]
            .iter()
            .all(|f| field(a, f) == field(b, f))
}

/// Whether MP4 holds this sound as it is (AAC, Opus; not G.711).
fn mp4_takes(caps: &gst::Caps) -> bool {
    caps.structure(0).is_some_and(|s| matches!(s.name().as_str(), "audio/mpeg" | "audio/x-opus"))
}

/// Reads `sources` in order and writes the range `[start, end)` (wall-clock ns) to `path`: seeking into the first
/// file, and again from its beginning if the seek missed the keyframe at or before the start (a GOP longer than
/// `SEEK_MARGIN`).
fn write(sources: &[Source], range: (u64, u64), container: Container, path: &Path) -> Result<Made> {
    let would_seek = sources.first().is_some_and(|s| range.0.saturating_sub(s.zero_ns) > SEEK_AFTER.as_nanos() as u64);
    if !would_seek {
        return write_from(sources, range, container, path, false);
    }
    match write_from(sources, range, container, path, true) {
        Ok(made) if made.first <= range.0 => Ok(made),
        Ok(_) | Err(Error::NotFound { .. }) => {
            debug!("the keyframe before the start was before the seek: reading the file whole");
            write_from(sources, range, container, path, false)
        }
        Err(e) => Err(e),
    }
}

fn write_from(
    sources: &[Source],
    (start, end): (u64, u64),
    container: Container,
    path: &Path,
    seek: bool,
) -> Result<Made> {
    let mut cutter = Cutter::new(start, end);
    let mut writer: Option<Writer> = None;
    let mut segments = 0;
    let mut read = 0;
    let mut sought = false;
    let mut out = Vec::new();
    for source in sources {
        if cutter.done {
            break;
        }
        segments += 1;
        let (tx, rx) = sync_channel(64);
        // Only the file holding the start, when the start is well into it.
        let into = start.saturating_sub(source.zero_ns);
        let seek = (seek && cutter.origin.is_none() && into > SEEK_AFTER.as_nanos() as u64)
            .then(|| gst::ClockTime::from_nseconds(into - SEEK_MARGIN.as_nanos() as u64));
        sought |= seek.is_some();
        let pipeline = open_segment(source, tx, seek)?;
        let done = read_segment(source, &rx, &mut cutter, &mut writer, (container, path), &mut out);
        // Unblocks a streaming thread waiting to hand over a frame, so the pipeline stops at once.
        drop(rx);
        let _ = pipeline.set_state(gst::State::Null);
        read += done?;
    }
    let (Some(writer), Some(first)) = (writer, cutter.origin) else {
        return Err(Error::not_found(Resource::Recording, "no frame between the times asked"));
    };
    let audio = writer.audio.is_some();
    writer.finish()?;
    Ok(Made { read, sought, first, end: cutter.last_end, segments, audio })
}

/// `filesrc ! demuxer`, each of its streams (the first video and audio ones) into an appsink whose samples go to
/// `tx` in the demuxer's order (one streaming thread: pull mode, no queues).
fn open_segment(source: &Source, tx: SyncSender<Item>, seek: Option<gst::ClockTime>) -> Result<gst::Pipeline> {
    let pipeline = gst::Pipeline::with_name("playback-segment");
    let filesrc = make("filesrc")?;
    filesrc.set_property("location", source.path.to_string_lossy().as_ref());
    let demux = make(if source.mkv { "matroskademux" } else { "qtdemux" })?;
    pipeline.add_many([&filesrc, &demux]).map_err(fail)?;
    filesrc.link(&demux).map_err(fail)?;
    let weak = pipeline.downgrade();
    let taken = Arc::new(Mutex::new((false, false)));
    // The streams are linked when the demuxer says there are no more: then a seek reaches it through every sink.
    let (exposed_tx, exposed) = sync_channel::<()>(1);
    demux.connect_no_more_pads(move |_| {
        let _ = exposed_tx.try_send(());
    });
    let pads_tx = tx.clone();
    demux.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else { return };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let name = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
        let video = name.starts_with("video/");
        let wanted = {
            let mut taken = taken.lock();
            let slot = if video { &mut taken.0 } else { &mut taken.1 };
            let wanted = (video || name.starts_with("audio/")) && !*slot;
            *slot |= wanted;
            wanted
        };
        let link = |sink: &gst::Element| {
            if pipeline.add(sink).is_ok() {
                let _ = sink.sync_state_with_parent();
                if let Some(sink_pad) = sink.static_pad("sink") {
                    let _ = pad.link(&sink_pad);
                }
            }
        };
        if !wanted {
            if let Ok(sink) = make("fakesink") {
                sink.set_property("async", false);
                link(&sink);
            }
            return;
        }
        let _ = pads_tx.send(Item::Pad { video, caps });
        let (samples, eos) = (pads_tx.clone(), pads_tx.clone());
        let sink = gst_app::AppSink::builder()
            .sync(false)
            // Paused without waiting for every stream's first sample (one streaming thread feeds them in turn).
            .async_(false)
            .callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        samples.send(Item::Sample { video, sample }).map_err(|_| gst::FlowError::Eos)?;
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .eos(move |_| {
                        let _ = eos.send(Item::Eos);
                    })
                    .build(),
            )
            .build();
        link(sink.upcast_ref());
    });
    let bus = pipeline.bus().ok_or_else(|| fail("pipeline without a bus"))?;
    bus.set_sync_handler(move |_, message| {
        if let gst::MessageView::Error(e) = message.view() {
            let _ = tx.try_send(Item::Failed(e.error().to_string()));
        }
        gst::BusSyncReply::Drop
    });
    let cannot = |e: gst::StateChangeError| fail(format!("cannot read {}: {e}", source.path.display()));
    if let Some(position) = seek {
        // Straight to the keyframe at or before the range's start, instead of demuxing the file from its beginning
        // (a 10-minute segment). A demuxer that cannot seek there reads from the start: the cutter finds the GOP.
        pipeline.set_state(gst::State::Paused).map_err(cannot)?;
        let flags = gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT | gst::SeekFlags::SNAP_BEFORE;
        let sought = exposed.recv_timeout(Duration::from_secs(5)).is_ok() && demux.seek_simple(flags, position).is_ok();
        debug!(file = %source.path.display(), sought, position = %position, "seeking into a segment");
    }
    pipeline.set_state(gst::State::Playing).map_err(cannot)?;
    Ok(pipeline)
}

/// Takes one segment's frames through the cutter into the file (opened at the first frame kept).
fn read_segment(
    source: &Source,
    rx: &Receiver<Item>,
    cutter: &mut Cutter<gst::Buffer>,
    writer: &mut Option<Writer>,
    (container, path): (Container, &Path),
    out: &mut Vec<Frame<gst::Buffer>>,
) -> Result<usize> {
    let (mut streams, mut ended, mut read) = (0, 0, 0);
    let (mut video_caps, mut audio_caps) = (None::<gst::Caps>, None::<gst::Caps>);
    loop {
        let item = match rx.recv_timeout(STALL) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => return Err(fail(format!("{} stalled", source.path.display()))),
            Err(RecvTimeoutError::Disconnected) => return Ok(read),
        };
        match item {
            Item::Pad { video, caps } => {
                streams += 1;
                if video {
                    video_caps = Some(caps);
                } else {
                    audio_caps = Some(caps);
                }
            }
            Item::Eos => {
                ended += 1;
                if ended >= streams {
                    return Ok(read);
                }
            }
            Item::Failed(e) => {
                return Err(Error::dependency(Dependency::Demuxer, format!("{}: {e}", source.path.display())));
            }
            Item::Sample { video, sample } => {
                let Some(buffer) = sample.buffer_owned() else { continue };
                read += 1;
                if video
                    && let Some(w) = writer.as_ref()
                    && let Some(caps) = sample.caps().or(video_caps.as_ref().map(|c| c.as_ref()))
                    && !same_stream(caps, &w.video_caps)
                {
                    // The picture changed (codec, size, parameter sets): the file ends where it did.
                    debug!(file = %source.path.display(), "the picture changes here: the range ends before it");
                    cutter.done = true;
                    return Ok(read);
                }
                if !video
                    && let Some(w) = writer.as_ref()
                    && w.audio.as_ref().is_none_or(|(_, c)| sample.caps().is_some_and(|s| !same_stream(s, c)))
                {
                    continue;
                }
                let (Some(dts), pts) = (buffer.dts().or(buffer.pts()), buffer.pts()) else { continue };
                let frame = Frame {
                    video,
                    key: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                    wall: source.zero_ns + dts.nseconds(),
                    delay: pts.map_or(0, |p| p.nseconds().saturating_sub(dts.nseconds())),
                    length: buffer.duration().map_or(0, |d| d.nseconds()),
                    payload: buffer,
                };
                cutter.push(frame, out);
                for f in out.drain(..) {
                    if writer.is_none() {
                        let caps = video_caps.as_ref().ok_or_else(|| fail("a frame before its stream's caps"))?;
                        *writer = Some(Writer::open(container, path, caps, audio_caps.as_ref())?);
                    }
                    let origin = cutter.origin.unwrap_or(0);
                    if let Some(w) = writer.as_ref() {
                        w.push(f, origin)?;
                    }
                }
                if cutter.done {
                    return Ok(read);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn frame(video: bool, key: bool, wall: u64) -> Frame<u64> {
        Frame { video, key, wall, delay: 0, length: S / 10, payload: wall }
    }

    fn run(start: u64, end: u64, frames: &[Frame<u64>]) -> (Vec<u64>, Option<u64>) {
        let mut cutter = Cutter::new(start, end);
        let mut out = Vec::new();
        for f in frames {
            cutter.push(f.clone(), &mut out);
        }
        (out.iter().map(|f| f.payload).collect(), cutter.origin)
    }

    /// Video at 10 fps with a keyframe every second from `from` to `to` (seconds), audio every 0.5 s.
    fn stream(from: u64, to: u64) -> Vec<Frame<u64>> {
        let mut v = Vec::new();
        for i in from * 10..to * 10 {
            v.push(frame(true, i % 10 == 0, i * S / 10));
            if i % 5 == 0 {
                v.push(frame(false, true, i * S / 10));
            }
        }
        v
    }

    #[test]
    fn a_range_starts_at_the_keyframe_before_it_and_ends_at_its_end() {
        let (out, origin) = run(12 * S + S / 2, 15 * S, &stream(10, 20));
        assert_eq!(origin, Some(12 * S));
        assert_eq!(out.first(), Some(&(12 * S)));
        // Every frame from 12 s to before 15 s: 30 video frames and the 6 audio frames from 12 s on.
        assert_eq!(out.len(), 36);
        assert!(out.iter().all(|&t| (12 * S..15 * S).contains(&t)));
    }

    #[test]
    fn a_start_in_a_gap_starts_after_it_and_overlaps_are_skipped_to_a_keyframe() {
        let mut frames = stream(10, 12);
        frames.extend(stream(15, 17));
        let (out, origin) = run(13 * S, 17 * S, &frames);
        assert_eq!(origin, Some(15 * S), "the GOP before the gap does not start the file");
        assert_eq!(out.first(), Some(&(15 * S)));
        // A segment overlapping what was written (from 16 s again): skipped up to its first keyframe after 16.9 s.
        let mut frames = stream(10, 17);
        frames.extend(stream(16, 19));
        let (out, _) = run(10 * S, 19 * S, &frames);
        let video: Vec<u64> = out.clone();
        assert!(video.windows(2).all(|w| w[0] <= w[1]), "the file's time never goes back");
        assert!(out.contains(&(17 * S)) && out.contains(&(18 * S + 5 * S / 10)));
    }

    #[test]
    fn nothing_in_range_writes_nothing() {
        let (out, origin) = run(30 * S, 40 * S, &stream(10, 20));
        assert!(out.is_empty());
        assert_eq!(origin, None);
    }

    /// A real 20 s fragmented MP4 as the recorder writes them (mp4mux, 15 fps, a keyframe a second), a range from
    /// 12.5 s to 15 s of it: the file starts on the keyframe at 12 s, lasts 3 s, and the seek spared reading the
    /// first 7.5 s.
    /// A 20 s fragmented MP4 of 15 fps with a keyframe every `gop` frames, as mp4mux writes them for the recorder.
    fn segment(dir: &Path, gop: u32) -> PathBuf {
        let path = dir.join(format!("cam_2026-12-01T00-00-00.000Z_0123456{}_0000.mp4", gop % 10));
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc num-buffers=300 ! video/x-raw,width=64,height=48,framerate=15/1 ! \
             x264enc key-int-max={gop} bframes=0 ! h264parse ! mp4mux fragment-duration=500 ! \
             filesink location=\"{}\"",
            path.display()
        ))
        .expect("pipeline");
        pipeline.set_state(gst::State::Playing).expect("play");
        let bus = pipeline.bus().expect("bus");
        let end =
            bus.timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos, gst::MessageType::Error]);
        pipeline.set_state(gst::State::Null).expect("stop");
        assert!(matches!(end.as_ref().map(|m| m.view()), Some(gst::MessageView::Eos(_))), "{end:?}");
        path
    }

    #[test]
    fn a_range_of_a_real_segment_seeks_to_its_keyframe_and_lasts_as_asked() {
        crate::media::init().expect("GStreamer");
        let dir = tempfile::tempdir().expect("temp dir");
        let file = segment(dir.path(), 15);
        let zero = 1_795_000_000_000u64 * 1_000_000;
        let sources = [Source { path: file, mkv: false, zero_ns: zero }];
        let out = dir.path().join("range.mp4");
        let made = write(&sources, (zero + 12 * S + S / 2, zero + 15 * S), Container::Mp4, &out).expect("written");
        assert_eq!(made.first, zero + 12 * S, "the keyframe at or before the start");
        assert!(made.end.abs_diff(zero + 15 * S) < 1_000_000, "ends at {}", made.end - zero);
        // From 7.5 s (the seek, 5 s before the start) to 15 s: about 113 frames of the 226 up to 15 s.
        assert!(made.sought && made.read <= 150, "{} frames read: the seek did not happen", made.read);
        let measured = super::super::recovery::probe_duration(&out).expect("the range demuxes");
        assert!(measured.abs_diff(Duration::from_secs(3)) < Duration::from_millis(2), "{measured:?}");

        // One keyframe in 20 s: the seek finds none before the start, so the file is read whole.
        let long_gop = [Source { path: segment(dir.path(), 300), mkv: false, zero_ns: zero }];
        let made = write(&long_gop, (zero + 12 * S + S / 2, zero + 15 * S), Container::Mp4, &out).expect("written");
        assert_eq!(made.first, zero, "the only keyframe");
        assert!(!made.sought && made.read > 200, "{} frames read", made.read);
    }

    #[test]
    fn spans_join_segments_that_touch_and_gaps_are_what_is_left() {
        let s = spans([(0, 2000), (2000, 4000), (4500, 6000), (9000, 11000), (10000, 12000)]);
        assert_eq!(s, vec![Interval { start: 0, end: 6000 }, Interval { start: 9000, end: 12000 }]);
        assert_eq!(gaps(&s, 1000, 11000), vec![Interval { start: 6000, end: 9000 }]);
        assert_eq!(
            gaps(&s, -3000, 15000),
            vec![
                Interval { start: -3000, end: 0 },
                Interval { start: 6000, end: 9000 },
                Interval { start: 12000, end: 15000 }
            ]
        );
        // A sliver at an edge is not a gap.
        assert_eq!(gaps(&s, -500, 12500), vec![Interval { start: 6000, end: 9000 }]);
    }
}
