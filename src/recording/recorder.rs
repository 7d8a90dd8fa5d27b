//! One recording session as a hub consumer: a chain of segment files, each `appsrc ! muxer ! filesink` and each
//! starting on a keyframe, fed from the camera's hub. A segment is indexed only once its muxer has finalised it and
//! it is fsynced (file, then directory). A camera reconnect (hub gap) starts a new segment in the same session, with
//! the gap kept in the timeline. Stopping sends EOS and waits for it, so the last file is finalised before NULL.
//!
//! A camera's sound goes into the same files as it came (a second `appsrc` on the muxer's audio pad): AAC and Opus in
//! every format, G.711 in MKV only (ISO MP4 has no place for it; such a session records the picture and says so once).
//! Audio is placed on the session timeline with the video's offset, so the two stay in sync across gaps, and goes to
//! the segment whose time holds it.
//!
//! Segments go to the first healthy storage root with room (`storage::roots`). When the open segment's root fails (a
//! write error on the bus, or the root's health check finding it gone, read-only, failed or full while another root
//! is ok), the session moves to another root at once: a new segment there starts with the frames kept since the last
//! keyframe (and their sound), so the switch loses nothing the camera sent; the abandoned segment is finalised and
//! indexed where its root still allows, or left for the root's return, when its files are listed again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::base::time::millis;
use crate::base::{AudioCodec, CameraId};
use crate::config::{RecordingConfig, RecordingFormat};
use crate::error::{Dependency, Error, Result};
use crate::media::clock::Timeline;
use crate::media::hub::{Consumer, HubItem};
use crate::media::{audio_codec_of, batch_pipeline_bus, make};
use crate::storage::Db;
use crate::storage::db::SegmentRow;
use crate::storage::files::sync_file_and_dir;
use crate::storage::roots::Roots;

/// What a session is, fixed at its start.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    pub camera: CameraId,
    pub format: RecordingFormat,
    pub requested_at: SystemTime,
    /// Wall time of the first recorded frame (before `requested_at` by the pre-roll).
    pub started_at: SystemTime,
    /// Name of the first segment; later ones differ only in their sequence number.
    pub first_filename: String,
}

/// How a session ended.
#[derive(Debug, Clone)]
pub enum Ending {
    /// Stopped on request or when its duration ran out.
    Stopped,
    Failed(String),
}

impl SessionInfo {
    /// The file name of the session's segment `seq`.
    pub fn segment_name(&self, seq: u32) -> String {
        super::naming::segment_name(&self.camera, self.started_at, &self.id, self.format, seq)
    }
}

/// How often queued frames go to the muxer together (and its errors are checked). With 500 ms fMP4 fragments a
/// crash loses at most this plus a fragment.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// How often the open segment is made durable (`Roots::sync`: every recorder's request of one turn is one `syncfs`
/// per filesystem): a disk that dies takes at most what was written since (and that is still
/// held in memory, to be carried to another root). What is on disk after a sync reaches `held_back` before the last
/// frame handed over: mp4mux cuts fragments at keyframes, so it holds back up to a fragment and a GOP shorter than
/// it (a longer GOP makes each keyframe a fragment boundary), or a second (MP4's index update) plus `SYNC_MARGIN`
/// for the muxer's own thread.
const SYNC_EVERY: Duration = Duration::from_millis(1000);
const SYNC_MARGIN: gst::ClockTime = gst::ClockTime::from_mseconds(300);
/// The most video held to carry over while syncs do not complete.
const CARRY_MAX: gst::ClockTime = gst::ClockTime::from_seconds(30);

/// How far the picture may run ahead of the sound in a segment before its audio track is ended: the muxer waits for
/// data on every pad, so a camera that stops sending sound must not hold the picture back.
const AUDIO_STALL: gst::ClockTime = gst::ClockTime::from_seconds(2);

/// Whether a container takes an audio codec as it is: MP4 (ISO, as mp4mux writes it, fragmented or not) has AAC and
/// Opus (`Opus` sample entry, GStreamer 1.16 on) but no G.711.
fn container_takes(format: RecordingFormat, codec: AudioCodec) -> bool {
    match format {
        RecordingFormat::Mkv => true,
        RecordingFormat::Mp4 | RecordingFormat::Fmp4 => matches!(codec, AudioCodec::Aac | AudioCodec::Opus),
    }
}

/// One segment file being written: `appsrc ! muxer ! filesink` (and a second `appsrc` for the sound). Each segment
/// is its own small pipeline, so a segment is finalised (EOS through the muxer) while the next one is already being
/// written, and frames go to the muxer as they arrive (no GOP is held back to decide a split, as splitmuxsink would).
struct SegmentWriter {
    pipeline: gst::Pipeline,
    video: Input,
    /// The sound track, when the camera sends sound the container takes.
    audio: Option<AudioInput>,
    /// The pipeline's bus, its streaming threads batch threads (`media::batch_pipeline_bus`).
    messages: futures::channel::mpsc::UnboundedReceiver<gst::Message>,
    path: PathBuf,
    /// The storage root the file is on.
    root: String,
    seq: u32,
    /// Session time of the segment's first frame; the file's own timestamps start at 0.
    start: gst::ClockTime,
    /// Session time of the last frame and the interval before it (to give the last frame a duration).
    last: gst::ClockTime,
    last_interval: gst::ClockTime,
    /// From opening to indexing (or failing), a child of the session's span.
    span: Span,
}

/// One `appsrc` of a segment and what waits for its next flush: handing the muxer a few frames at a time, rather than
/// each as it comes, wakes its threads a few times a second instead of at the frame rate.
struct Input {
    appsrc: gst_app::AppSrc,
    pending: Vec<gst::Buffer>,
}

impl Input {
    fn new(caps: &gst::Caps) -> Input {
        let appsrc = gst_app::AppSrc::builder()
            .caps(caps)
            .format(gst::Format::Time)
            // Not live: the muxer takes every frame as it comes (pre-roll arrives in one burst) and never waits on
            // a clock or drops what it deems late.
            .is_live(false)
            .stream_type(gst_app::AppStreamType::Stream)
            // The hub already bounds what reaches us; this only absorbs a slow disk for a moment.
            .max_bytes(64 * 1024 * 1024)
            .block(false)
            .build();
        Input { appsrc, pending: Vec::new() }
    }

    /// Hands the queued buffers to the muxer in one list.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut list = gst::BufferList::new_sized(self.pending.len());
        {
            let list = list.get_mut().expect("a new list is writable");
            for buffer in self.pending.drain(..) {
                list.add(buffer);
            }
        }
        self.appsrc
            .push_buffer_list(list)
            .map(|_| ())
            .map_err(|e| Error::dependency(Dependency::RecordingPipeline, format!("refused data: {e:?}")))
    }
}

/// A segment's sound track.
struct AudioInput {
    input: Input,
    caps: gst::Caps,
    /// The first frame is stretched back to the segment's start: mp4mux's fragmented mode writes no edit list, so it
    /// would place the first audio frame at the start anyway, and every frame after it early by as much. Stretched,
    /// only that first frame is early; the rest keep their time.
    stretch_first: bool,
    /// Session time of the last audio frame written.
    last: Option<gst::ClockTime>,
    /// Ended (EOS on its pad) because the camera stopped sending sound: later audio is not this segment's.
    ended: bool,
}

impl SegmentWriter {
    fn open(
        info: &SessionInfo,
        config: &RecordingConfig,
        (root, dir): (&str, &Path),
        seq: u32,
        caps: &gst::Caps,
        audio_caps: Option<&gst::Caps>,
        (start, interval): (gst::ClockTime, gst::ClockTime),
    ) -> Result<SegmentWriter> {
        let fail = |detail: String| Error::dependency(Dependency::RecordingPipeline, detail);
        let path = dir.join(info.segment_name(seq));
        if path.exists() {
            // Never overwrite a recording.
            return Err(fail(format!("{} exists", path.display())));
        }
        let span = info_span!(
            "recording.segment",
            camera_id = %info.camera,
            session = info.id,
            file = info.segment_name(seq),
            seq,
            outcome = Empty,
            reason = Empty,
            duration_ms = Empty,
            size_bytes = Empty,
            otel.status_code = Empty,
        );
        let pipeline = gst::Pipeline::with_name(&format!("record-{}-{seq}", info.camera));
        let video = Input::new(caps);
        let muxer = match info.format {
            RecordingFormat::Fmp4 => {
                let m = make("mp4mux")?;
                m.set_property("fragment-duration", config.fragment.as_millis() as u32);
                m
            }
            RecordingFormat::Mp4 => {
                let m = make("mp4mux")?;
                // Robust muxing: the index lives in space reserved at the start and is rewritten every second, so a
                // file cut off by a crash still plays up to its last update.
                m.set_property("reserved-max-duration", (config.segment + Duration::from_secs(60)).as_nanos() as u64);
                m.set_property("reserved-moov-update-period", gst::ClockTime::SECOND.nseconds());
                m
            }
            RecordingFormat::Mkv => make("matroskamux")?,
        };
        if muxer.find_property("latency").is_some() {
            // mp4mux is an aggregator, whose pads hold one buffer at a time unless it has latency: each frame of a
            // flush would then be a hand-over between the appsrc's thread and the muxer's (two wake-ups a frame).
            // With room for a second's frames, a flush's list is queued at once and muxed in one wake-up. Not live,
            // so nothing waits for this latency.
            muxer.set_property("latency", gst::ClockTime::SECOND.nseconds());
        }
        let sink = make("filesink")?;
        sink.set_property("location", path.to_string_lossy().as_ref());
        sink.set_property("sync", false);
        // Every write goes straight to the kernel: a stdio buffer would hold seconds of a low-bitrate camera that a
        // crash of the process then loses. The muxer writes whole fragments, so this costs a few writes a second.
        sink.set_property_from_str("buffer-mode", "unbuffered");
        sink.set_property("async", false);
        pipeline.add_many([video.appsrc.upcast_ref(), &muxer, &sink]).map_err(|e| fail(e.to_string()))?;
        // Ask for each pad by name: left to `link`, an mp4mux may hand out an audio pad for the video.
        let link = |src: &gst_app::AppSrc, template: &str| -> Result<()> {
            let pad = muxer.request_pad_simple(template).ok_or_else(|| fail(format!("muxer has no {template} pad")))?;
            let src_pad = src.static_pad("src").ok_or_else(|| fail("appsrc has no src pad".into()))?;
            src_pad.link(&pad).map(|_| ()).map_err(|e| fail(format!("{template}: {e:?}")))
        };
        link(&video.appsrc, "video_%u")?;
        let audio = match audio_caps {
            Some(caps) => {
                let input = Input::new(caps);
                pipeline.add(&input.appsrc).map_err(|e| fail(e.to_string()))?;
                link(&input.appsrc, "audio_%u")?;
                let stretch_first = info.format == RecordingFormat::Fmp4;
                Some(AudioInput { input, caps: caps.clone(), stretch_first, last: None, ended: false })
            }
            None => None,
        };
        muxer.link(&sink).map_err(|e| fail(e.to_string()))?;
        let messages = batch_pipeline_bus(&pipeline)?;
        pipeline.set_state(gst::State::Playing).map_err(|e| fail(format!("cannot start: {e}")))?;
        span.in_scope(|| debug!(file = %path.display(), audio = audio.is_some(), "segment opened"));
        Ok(SegmentWriter {
            pipeline,
            video,
            audio,
            messages,
            path,
            root: root.to_owned(),
            seq,
            start,
            last: start,
            last_interval: interval,
            span,
        })
    }

    fn elapsed(&self) -> gst::ClockTime {
        self.last.saturating_sub(self.start)
    }

    /// How long the last frame lasts: the interval before it, or, for the one frame of a session that ended at its
    /// first frame (no interval seen yet), a nominal 25 fps frame.
    fn frame_length(&self) -> gst::ClockTime {
        if self.last_interval.is_zero() { gst::ClockTime::from_mseconds(40) } else { self.last_interval }
    }

    /// Queues a frame whose session time is `at` (`delay` between dts and pts) for the next `flush`.
    fn push(&mut self, frame: &gst::Buffer, at: gst::ClockTime, delay: gst::ClockTime) {
        if at > self.last {
            self.last_interval = at - self.last;
        }
        let mut buffer = frame.copy();
        {
            let b = buffer.make_mut();
            let t = at.saturating_sub(self.start);
            b.set_dts(t);
            b.set_pts(t + delay);
            // The muxer takes a frame's length from the next frame's time; the last frame of a segment has none, so
            // each carries the interval before it. Without it a segment cut one frame after its keyframe (a camera
            // that froze) is a file whose container says it lasts nothing.
            b.set_duration(self.frame_length());
        }
        self.last = at;
        self.video.pending.push(buffer);
    }

    /// Queues an audio frame whose session time is `at` for the next `flush`. Dropped when the segment has no sound
    /// track (or it ended), or when the frame is before the segment's start or not after the last one.
    fn push_audio(&mut self, frame: &gst::Buffer, at: gst::ClockTime) {
        let start = self.start;
        let Some(audio) = self.audio.as_mut().filter(|a| !a.ended) else { return };
        if at < start || audio.last.is_some_and(|last| at <= last) {
            return;
        }
        let stretched = audio.stretch_first && audio.last.is_none();
        let t = if stretched { gst::ClockTime::ZERO } else { at - start };
        let mut buffer = frame.copy();
        {
            let b = buffer.make_mut();
            b.set_pts(t);
            b.set_dts(t);
            if stretched {
                // The muxer takes a sample's length from the next one's time; its own says the same.
                b.set_duration(frame.duration().map(|d| d + (at - start)));
            }
        }
        audio.last = Some(at);
        audio.input.pending.push(buffer);
    }

    /// Hands the queued frames to the muxer. Ends the sound track if the camera stopped sending sound, so the muxer
    /// does not hold the picture back waiting for it.
    fn flush(&mut self) -> Result<()> {
        self.video.flush()?;
        let Some(audio) = self.audio.as_mut().filter(|a| !a.ended) else { return Ok(()) };
        audio.input.flush()?;
        if self.last.saturating_sub(audio.last.unwrap_or(self.start)) > AUDIO_STALL {
            warn!(file = %self.path.display(), "the camera's sound stopped: the segment goes on without it");
            audio.ended = true;
            let _ = audio.input.appsrc.end_of_stream();
        }
        Ok(())
    }

    /// The caps of the segment's sound track, if it has one.
    fn audio_caps(&self) -> Option<&gst::Caps> {
        self.audio.as_ref().map(|a| &a.caps)
    }

    /// The first error the pipeline posted, if any (non-blocking).
    fn poll_error(&mut self) -> Option<String> {
        use futures::FutureExt;
        while let Some(Some(message)) = self.messages.next().now_or_never() {
            if let gst::MessageView::Error(e) = message.view() {
                return Some(format!("{} ({})", e.error(), e.debug().unwrap_or_default()));
            }
        }
        None
    }

    /// Finalises the file (EOS through the muxer), stops the pipeline, syncs and indexes it. A file that cannot be
    /// finalised (or whose pipeline is `broken` already) is recovered (made playable) and indexed like one left by a
    /// crash. Ends the segment's span.
    async fn close(self, info: &SessionInfo, db: &Db, broken: bool) -> Result<()> {
        let span = self.span.clone();
        let result = self.finalise(info, db, broken).instrument(span.clone()).await;
        match &result {
            Ok(()) => {
                span.record("outcome", "indexed");
            }
            Err(e) => {
                span.record("outcome", "failed");
                span.record("reason", e.to_string());
                span.record("otel.status_code", "ERROR");
            }
        }
        result
    }

    async fn finalise(mut self, info: &SessionInfo, db: &Db, broken: bool) -> Result<()> {
        let flushed = if broken { Err(Error::internal("pipeline failed")) } else { self.flush() };
        let _ = self.video.appsrc.end_of_stream();
        if let Some(audio) = self.audio.as_ref().filter(|a| !a.ended) {
            let _ = audio.input.appsrc.end_of_stream();
        }
        let wait = if broken { Duration::ZERO } else { Duration::from_secs(10) };
        let finalised = tokio::time::timeout(wait, async {
            while let Some(message) = self.messages.next().await {
                match message.view() {
                    gst::MessageView::Eos(_) => return Ok(()),
                    gst::MessageView::Error(e) => return Err(e.error().to_string()),
                    _ => {}
                }
            }
            Err("bus closed".to_owned())
        })
        .await
        .unwrap_or_else(|_| Err("finalising timed out".into()));
        let pipeline = self.pipeline.clone();
        let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
        if let Err(e) = flushed.map_err(|e| e.to_string()).and(finalised) {
            warn!(err = e, file = %self.path.display(), "segment not finalised; recovering it");
            super::recovery::recover_file(db, &self.root, &self.path).await?;
            return Err(Error::dependency(Dependency::RecordingPipeline, e));
        }
        let duration = self.elapsed() + self.frame_length();
        let filename = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::internal("segment without a file name"))?
            .to_owned();
        let synced = self.path.clone();
        let size = tokio::task::spawn_blocking(move || {
            sync_file_and_dir(&synced)?;
            std::fs::metadata(&synced).map(|m| m.len())
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| Error::dependency(Dependency::Storage, format!("syncing {filename}: {e}")))?;
        let started_at = millis(info.started_at) + self.start.mseconds() as i64;
        let row = SegmentRow {
            session_id: info.id.clone(),
            camera: info.camera.to_string(),
            filename,
            format: info.format.as_str().into(),
            started_at,
            ended_at: started_at + duration.mseconds() as i64,
            duration_ms: duration.mseconds() as i64,
            size_bytes: size as i64,
            recovered: false,
            root: self.root.clone(),
        };
        db.insert_segment(&row).await?;
        self.span.record("duration_ms", row.duration_ms);
        self.span.record("size_bytes", size);
        info!(
            file = row.filename,
            root = row.root,
            seq = self.seq,
            duration_ms = row.duration_ms,
            size,
            "segment indexed"
        );
        Ok(())
    }
}

/// Turns hub items into segment files: timestamps onto the session timeline, a new file at the first keyframe
/// after the segment length, a camera gap or new caps.
struct Segmenter<'a> {
    info: &'a SessionInfo,
    config: &'a RecordingConfig,
    roots: &'a Roots,
    db: &'a Db,
    timeline: Timeline,
    caps: Option<gst::Caps>,
    /// The camera's sound on this connection, if any (forgotten at a gap).
    audio_caps: Option<gst::Caps>,
    /// The camera's sound was found not to fit the container (said once per session).
    audio_refused: bool,
    /// Audio (with its session time) since the last video frame: the next video frame says which segment it belongs
    /// to, since a keyframe that opens a segment takes the sound from its own time on, and a keyframe arrives after
    /// the sound sent with it.
    held_audio: Vec<(gst::Buffer, gst::ClockTime)>,
    writer: Option<SegmentWriter>,
    next_seq: u32,
    split_pending: bool,
    segment: gst::ClockTime,
    /// Segments to finalise (in the background, while the next one is written).
    closed: Vec<SegmentWriter>,
    /// The video not yet known to be on disk (of the open segment, and of the one before it while that is closing),
    /// from the keyframe before the open segment's last sync (buffer, session time, pts delay, keyframe), and the
    /// sound written with it: what a segment moved to another root starts with,
    /// so the move loses nothing the camera sent.
    carry: std::collections::VecDeque<(gst::Buffer, gst::ClockTime, gst::ClockTime, bool)>,
    carry_audio: std::collections::VecDeque<(gst::Buffer, gst::ClockTime)>,
    /// Segments left on a failed root (and whether their pipeline is broken), to close as far as their root allows.
    abandoned: Vec<(SegmentWriter, bool)>,
    /// The last interval between two frames: a new segment's first frame lasts as long (see `SegmentWriter::push`).
    interval: gst::ClockTime,
}

impl Segmenter<'_> {
    /// The sound a new segment records: the camera's, where the container takes its codec.
    fn recorded_audio(&mut self) -> Option<gst::Caps> {
        let caps = self.audio_caps.clone()?;
        let codec = audio_codec_of(&caps)?;
        if container_takes(self.info.format, codec) {
            return Some(caps);
        }
        if !std::mem::replace(&mut self.audio_refused, true) {
            info!(
                camera_id = %self.info.camera,
                codec = codec.as_str(),
                format = self.info.format.as_str(),
                "the camera's sound does not fit this container: recording the picture only"
            );
        }
        None
    }

    fn take(&mut self, item: HubItem) -> Result<()> {
        match item {
            HubItem::Caps(c) => {
                // New caps (a new connection, or the camera changed its stream): the next keyframe opens a new file.
                if self.caps.as_ref().is_some_and(|old| old != &c) {
                    self.split_pending = true;
                }
                self.caps = Some(c);
            }
            HubItem::Gap => {
                // The camera went away: the open segment is finished now (closed, synced and indexed), not when the
                // camera returns, so what was recorded up to the loss is playable at once. The next keyframe opens
                // the next segment of the same session.
                self.place_held_audio();
                self.timeline.gap();
                self.audio_caps = None;
                if let Some(mut old) = self.writer.take() {
                    old.flush()?;
                    self.closed.push(old);
                }
            }
            HubItem::Frame(frame) => {
                let Some(caps) = self.caps.clone() else { return Ok(()) };
                let buffer = &frame.buffer;
                let (pts, dts) = (buffer.pts(), buffer.dts());
                let at = self.timeline.map(pts, dts, frame.arrived);
                let delay = match (pts, dts) {
                    (Some(p), Some(d)) if p > d => p - d,
                    _ => gst::ClockTime::ZERO,
                };
                let mut due = self
                    .writer
                    .as_ref()
                    .is_some_and(|w| self.split_pending || at.saturating_sub(w.start) >= self.segment);
                // A segment due to end on a root found in trouble since the last check (`run` checks after each
                // flush): the session moves now, with what it carries (a new segment elsewhere that starts at the
                // keyframe before the last sync, as after a failed write), rather than closing this one as if its
                // root were sound and starting the next elsewhere without the frames that never reached the disk.
                if frame.keyframe
                    && due
                    && let Some(reason) = self.writer.as_ref().and_then(|w| self.roots.trouble(&w.root))
                {
                    self.switch_root(&reason, false)?;
                    self.split_pending = false;
                    due = false;
                }
                if frame.keyframe && (self.writer.is_none() || due) {
                    if let Some(mut old) = self.writer.take() {
                        old.flush()?;
                        self.closed.push(old);
                    }
                    self.split_pending = false;
                    // What is kept to carry over is not cleared: the segment just closed is on disk only once its
                    // close has synced it, and until then a root failure moves its tail too.
                    self.open_writer(&caps, at, None)?;
                }
                if let Some(w) = self.writer.as_mut() {
                    w.push(buffer, at, delay);
                    self.interval = w.last_interval;
                    self.carry.push_back((buffer.clone(), at, delay, frame.keyframe));
                    if at.saturating_sub(self.carry.front().map_or(at, |c| c.1)) > CARRY_MAX {
                        // Syncs have not completed for a long while (a hung disk): keep memory bounded.
                        self.forget_carry_before(at.saturating_sub(CARRY_MAX));
                    }
                }
                self.place_held_audio();
            }
            HubItem::AudioCaps(c) => {
                // Sound that starts or changes codec mid-segment: the next keyframe opens a file with it.
                self.audio_caps = Some(c);
                let wanted = self.recorded_audio();
                if self.writer.as_ref().is_some_and(|w| w.audio_caps() != wanted.as_ref()) {
                    self.split_pending = true;
                }
            }
            HubItem::Audio(frame) => {
                if let Some(at) = frame.buffer.pts().and_then(|pts| self.timeline.map_audio(pts)) {
                    self.held_audio.push((frame.buffer, at));
                }
            }
        }
        Ok(())
    }

    /// Opens the next segment, starting at session time `at`, on the first healthy root (other than `except`).
    fn open_writer(&mut self, caps: &gst::Caps, at: gst::ClockTime, except: Option<&str>) -> Result<()> {
        let (root, dir) = self.roots.pick(except).ok_or_else(|| {
            Error::dependency(Dependency::Storage, "no storage root is available (missing, read-only, failed or full)")
        })?;
        let audio = self.recorded_audio();
        let writer = SegmentWriter::open(
            self.info,
            self.config,
            (&root, &dir),
            self.next_seq,
            caps,
            audio.as_ref(),
            (at, self.interval),
        )?;
        // Its exact start, for a recovery of the file that a failure may make necessary.
        let (db, name) = (self.db.clone(), self.info.segment_name(self.next_seq));
        let started_at = millis(self.info.started_at) + at.mseconds() as i64;
        tokio::spawn(async move {
            if let Err(e) = db.note_open_segment(&name, started_at).await {
                debug!(err = %e, "cannot note the open segment");
            }
        });
        self.writer = Some(writer);
        self.next_seq += 1;
        Ok(())
    }

    /// Moves the session off the open segment's root (which failed for `reason`): a new segment on another root
    /// starts with the frames since the last keyframe, and the old one is left to close as far as its root allows.
    fn switch_root(&mut self, reason: &str, broken: bool) -> Result<()> {
        let Some(old) = self.writer.take() else { return Ok(()) };
        let from = old.root.clone();
        self.abandoned.push((old, broken));
        let carry = std::mem::take(&mut self.carry);
        let carry_audio = std::mem::take(&mut self.carry_audio);
        let (Some(caps), Some(&(_, first, _, true))) = (self.caps.clone(), carry.front()) else {
            // Nothing to carry over: the next keyframe opens the next segment.
            return Ok(());
        };
        self.open_writer(&caps, first, Some(&from))?;
        let w = self.writer.as_mut().expect("just opened");
        warn!(reason, from, to = w.root, file = %w.path.display(), carried_frames = carry.len(), "storage root failed: recording moved to another root");
        for (buffer, at, delay, _) in &carry {
            w.push(buffer, *at, *delay);
        }
        for (buffer, at) in &carry_audio {
            w.push_audio(buffer, *at);
        }
        // Not on disk on the new root either until its first sync.
        self.carry = carry;
        self.carry_audio = carry_audio;
        Ok(())
    }

    /// The open segment `seq` is on disk up to session time `durable`: what is kept to carry over starts at the last
    /// keyframe at or before it.
    fn synced(&mut self, seq: u32, durable: gst::ClockTime) {
        if self.writer.as_ref().is_some_and(|w| w.seq == seq) {
            self.forget_carry_before(durable);
        }
    }

    fn forget_carry_before(&mut self, t: gst::ClockTime) {
        let Some(keep) = self.carry.iter().rposition(|c| c.3 && c.1 <= t) else { return };
        self.carry.drain(..keep);
        let first = self.carry.front().map(|c| c.1).unwrap_or(t);
        while self.carry_audio.front().is_some_and(|a| a.1 < first) {
            self.carry_audio.pop_front();
        }
    }

    /// Writes the held audio to the segment whose time holds it: the open one, or the one before it while that is
    /// not finalised yet (later, a frame from before the open segment is dropped, never misplaced).
    fn place_held_audio(&mut self) {
        for (buffer, at) in std::mem::take(&mut self.held_audio) {
            match self.writer.as_mut() {
                Some(w) if at >= w.start => {
                    w.push_audio(&buffer, at);
                    if self.carry.front().is_some_and(|c| at >= c.1) {
                        self.carry_audio.push_back((buffer, at));
                    }
                }
                _ => {
                    if let Some(previous) = self.closed.last_mut() {
                        previous.push_audio(&buffer, at);
                    }
                }
            }
        }
    }
}

/// Runs a session until `stop` fires, `deadline` passes, the hub goes away or writing fails. Closes the open segment
/// when the camera is lost and opens a new one at the first keyframe after the segment length or after the camera
/// returns; every closed segment is indexed.
pub async fn run(
    info: SessionInfo,
    config: RecordingConfig,
    roots: Arc<Roots>,
    db: Db,
    mut consumer: Consumer,
    stop: CancellationToken,
    deadline: Option<tokio::time::Instant>,
) -> Ending {
    let mut session = Segmenter {
        info: &info,
        config: &config,
        roots: &roots,
        db: &db,
        timeline: Timeline::default(),
        caps: None,
        audio_caps: None,
        audio_refused: false,
        held_audio: Vec::new(),
        writer: None,
        next_seq: 0,
        split_pending: false,
        segment: gst::ClockTime::from_nseconds(config.segment.as_nanos() as u64),
        closed: Vec::new(),
        carry: Default::default(),
        carry_audio: Default::default(),
        abandoned: Vec::new(),
        interval: gst::ClockTime::ZERO,
    };
    // Segments being finalised while the next one is written.
    let mut closing: tokio::task::JoinSet<Result<()>> = tokio::task::JoinSet::new();
    // Segments left on a failed root: closed as far as their root allows; a failure there is the root's, not the
    // session's (what could not be indexed is listed again when the root returns).
    let mut abandoned: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    // The open segment's periodic sync in flight: (its answer, segment seq, session time it makes durable).
    let mut syncing: Option<(crate::storage::syncer::Synced, u32, gst::ClockTime)> = None;
    let mut last_sync = crate::media::pace_slot(SYNC_EVERY);
    let held_back =
        gst::ClockTime::from_nseconds(config.fragment.as_nanos() as u64 * 2).max(gst::ClockTime::SECOND) + SYNC_MARGIN;
    let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let ending = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ending::Stopped,
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => break Ending::Stopped,
            Some(closed) = closing.join_next() => {
                if let Ok(Err(e)) = closed {
                    break Ending::Failed(e.to_string());
                }
            }
            _ = crate::media::pace(FLUSH_EVERY) => {
                // Frames are taken from the hub's queue here rather than as each arrives: the task wakes a few
                // times a second instead of at the frame rate.
                let mut outcome = None;
                loop {
                    let item = match consumer.rx.try_recv() {
                        Ok(item) => item,
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                            outcome = Some(Ending::Failed("camera removed".into()));
                            break;
                        }
                    };
                    if let Err(e) = session.take(item) {
                        outcome = Some(Ending::Failed(e.to_string()));
                        break;
                    }
                }
                if let Some(ending) = outcome {
                    break ending;
                }
                let mut sync_failed = None;
                if let Some((answer, seq, durable)) = syncing.as_mut() {
                    match answer.try_recv() {
                        Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                        // Answered, or dropped unanswered (asked again next second): either way no longer in flight.
                        answered => {
                            match answered {
                                Ok(Ok(())) => session.synced(*seq, *durable),
                                Ok(Err(e)) if session.writer.as_ref().is_some_and(|w| w.seq == *seq) => {
                                    sync_failed = Some(format!("sync: {e}"));
                                }
                                _ => {}
                            }
                            syncing = None;
                        }
                    }
                }
                if let Some(w) = session.writer.as_mut() {
                    let failed = match w.flush() {
                        Err(e) => Some(e.to_string()),
                        Ok(()) => w.poll_error().or(sync_failed),
                    };
                    if let Some(e) = &failed {
                        roots.fail(&w.root, e);
                    }
                    let reason = failed.clone().or_else(|| roots.trouble(&w.root));
                    if let Some(reason) = reason
                        && let Err(e) = session.switch_root(&reason, failed.is_some())
                    {
                        break Ending::Failed(format!("{reason}; {e}"));
                    }
                }
                // A sync of a segment no longer open (its root failed under it) may never return: forgotten, so the
                // new segment gets its own.
                if syncing.as_ref().is_some_and(|s| session.writer.as_ref().is_none_or(|w| w.seq != s.1)) {
                    syncing = None;
                }
                // Once a second on the shared grid: every recorder asks in the same turn, and the syncer makes one
                // `syncfs` per filesystem of their requests.
                let slot = crate::media::pace_slot(SYNC_EVERY);
                if syncing.is_none()
                    && slot != last_sync
                    && let Some(w) = session.writer.as_mut()
                {
                    last_sync = slot;
                    let durable = w.last.saturating_sub(held_back);
                    syncing = Some((roots.sync(w.path.clone()), w.seq, durable));
                }
                for old in session.closed.drain(..) {
                    closing.spawn(close_segment(old, info.clone(), db.clone(), roots.clone()));
                }
                for (old, broken) in session.abandoned.drain(..) {
                    abandoned.spawn(close_abandoned(old, broken, info.clone(), db.clone()));
                }
            }
        }
    };
    // What arrived before the stop belongs in the recording.
    if matches!(ending, Ending::Stopped) {
        while let Ok(item) = consumer.rx.try_recv() {
            if session.take(item).is_err() {
                break;
            }
        }
        session.place_held_audio();
    }
    drop(consumer);
    let mut ending = ending;
    for old in session.closed.drain(..) {
        closing.spawn(close_segment(old, info.clone(), db.clone(), roots.clone()));
    }
    for (old, broken) in session.abandoned.drain(..) {
        abandoned.spawn(close_abandoned(old, broken, info.clone(), db.clone()));
    }
    if let Some(w) = session.writer.take()
        && let Err(e) = close_segment(w, info.clone(), db.clone(), roots.clone()).await
        && matches!(ending, Ending::Stopped)
    {
        ending = Ending::Failed(e.to_string());
    }
    while let Some(closed) = closing.join_next().await {
        if let Ok(Err(e)) = closed
            && matches!(ending, Ending::Stopped)
        {
            ending = Ending::Failed(e.to_string());
        }
    }
    while abandoned.join_next().await.is_some() {}
    ending
}

/// Closes a finished segment. A failure is the session's, unless the segment's root failed meanwhile (a disk that
/// went away as the segment ended): then the file is listed again when its root returns, and the session goes on.
async fn close_segment(old: SegmentWriter, info: SessionInfo, db: Db, roots: Arc<Roots>) -> Result<()> {
    let (root, file) = (old.root.clone(), old.path.display().to_string());
    match old.close(&info, &db, false).await {
        Err(e) if !roots.is_ok(&root) => {
            warn!(err = %e, file, "segment on a failed root not indexed now: listed when its root returns");
            Ok(())
        }
        other => other,
    }
}

/// Closes a segment left on a failed root: finalised, synced and indexed where the root still allows (a full root,
/// a lazily unmounted one still finishes the file it had open), recovered where it can be; otherwise left for the
/// root's return, whose files are listed again then.
async fn close_abandoned(old: SegmentWriter, broken: bool, info: SessionInfo, db: Db) {
    let file = old.path.display().to_string();
    match tokio::time::timeout(Duration::from_secs(15), old.close(&info, &db, broken)).await {
        Ok(Ok(())) => info!(file, "segment on the failed root closed and indexed"),
        Ok(Err(e)) => warn!(err = %e, file, "segment on the failed root not indexed now: listed when its root returns"),
        Err(_) => warn!(file, "segment on the failed root did not close in 15 s: listed when its root returns"),
    }
}
