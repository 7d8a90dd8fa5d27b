//! One recording session as a hub consumer: `appsrc ! splitmuxsink(muxer)` fed from the camera's hub, writing
//! segment files that each start on a keyframe. A segment is indexed only once splitmuxsink has closed it and it is
//! fsynced (file, then directory). A camera reconnect (hub gap) starts a new segment in the same session, with the
//! gap kept in the timeline. Stopping sends EOS and waits for it, so the last file is finalised before NULL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{RecordingConfig, RecordingFormat};
use crate::error::{Error, Result};
use crate::media::hub::{Consumer, HubItem};
use crate::storage::Db;
use crate::storage::db::SegmentRow;
use crate::storage::files::sync_file_and_dir;

/// What a session is, fixed at its start.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    pub camera: crate::camera::CameraId,
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

/// The file name of segment `seq` of a session: `CAMERA_START_SEQ.EXT`, with START the first frame's UTC time.
pub fn segment_name(camera: &str, started_at: SystemTime, seq: u32, format: RecordingFormat) -> String {
    format!("{camera}_{}_{seq:04}.{}", stamp(started_at), format.extension())
}

/// `2026-11-22T00-25-00.123Z`: RFC 3339 with `-` for `:` so names are portable.
pub fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string().replace(':', "-")
}

/// Reads (camera, session start, sequence) back from a segment name.
pub fn parse_segment_name(name: &str) -> Option<(String, SystemTime, u32)> {
    let stem = name.rsplit_once('.')?.0;
    let (rest, seq) = stem.rsplit_once('_')?;
    let (camera, stamp) = rest.rsplit_once('_')?;
    let (date, time) = stamp.split_once('T')?;
    let when = humantime::parse_rfc3339(&format!("{date}T{}", time.replace('-', ":"))).ok()?;
    Some((camera.to_owned(), when, seq.parse().ok()?))
}

pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The pipeline of one session.
struct Pipeline {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    splitmux: gst::Element,
}

fn make(factory: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(factory).build().map_err(|_| Error::Dependency {
        dependency: "gstreamer",
        detail: format!("element {factory} is missing"),
    })
}

fn build(info: &SessionInfo, config: &RecordingConfig, dir: &Path) -> Result<Pipeline> {
    let fail = |e: gst::glib::BoolError| Error::Dependency { dependency: "recording pipeline", detail: e.to_string() };
    let pipeline = gst::Pipeline::with_name(&format!("record-{}", info.camera));
    let appsrc = gst_app::AppSrc::builder()
        .name("hub")
        .format(gst::Format::Time)
        .is_live(true)
        .do_timestamp(false)
        .stream_type(gst_app::AppStreamType::Stream)
        // The hub already bounds what reaches us; this only absorbs a slow disk for a moment.
        .max_bytes(64 * 1024 * 1024)
        .block(false)
        .build();
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
    let splitmux = make("splitmuxsink")?;
    splitmux.set_property("muxer", &muxer);
    splitmux.set_property("max-size-time", config.segment.as_nanos() as u64);
    splitmux.set_property("async-finalize", false);
    let (camera, started, format, dir) = (info.camera.to_string(), info.started_at, info.format, dir.to_path_buf());
    splitmux.connect("format-location-full", false, move |args| {
        let seq = args[1].get::<u32>().unwrap_or(0);
        let path = dir.join(segment_name(&camera, started, seq, format));
        Some(path.to_string_lossy().into_owned().to_value())
    });
    pipeline.add_many([appsrc.upcast_ref(), &splitmux]).map_err(fail)?;
    appsrc.link(&splitmux).map_err(|e| fail(gst::glib::bool_error!("{e}")))?;
    Ok(Pipeline { pipeline, appsrc, splitmux })
}

/// Maps hub timestamps (one timeline per camera connection) onto the session's timeline, which starts at 0 and
/// advances by wall-clock time across reconnects, so a gap stays a gap.
#[derive(Debug, Default)]
struct Timeline {
    /// Added to a frame's timestamp; `None` until the first frame of a connection.
    offset: Option<i128>,
    last_out: Option<(gst::ClockTime, Instant)>,
}

impl Timeline {
    fn gap(&mut self) {
        self.offset = None;
    }

    /// The session timestamps (pts, dts) of a frame.
    fn map(&mut self, pts: Option<gst::ClockTime>, dts: Option<gst::ClockTime>, arrived: Instant) -> gst::ClockTime {
        let anchor = dts.or(pts).map(|t| t.nseconds() as i128).unwrap_or(0);
        let offset = *self.offset.get_or_insert_with(|| {
            let target = match self.last_out {
                None => 0,
                Some((last, at)) => {
                    last.nseconds() as i128 + arrived.saturating_duration_since(at).as_nanos().max(1) as i128
                }
            };
            target - anchor
        });
        let out = gst::ClockTime::from_nseconds((anchor + offset).max(0) as u64);
        let out = match self.last_out {
            // Never go backwards: a muxer refuses non-monotonic DTS.
            Some((last, _)) if out <= last => last + gst::ClockTime::from_nseconds(1),
            _ => out,
        };
        self.last_out = Some((out, arrived));
        out
    }
}

/// Runs a session until `stop` fires, `deadline` passes, the hub goes away or the pipeline fails. Indexes every
/// segment it closes. Returns how it ended.
pub async fn run(
    info: SessionInfo,
    config: RecordingConfig,
    dir: PathBuf,
    db: Db,
    mut consumer: Consumer,
    stop: CancellationToken,
    deadline: Option<tokio::time::Instant>,
) -> Ending {
    let p = match build(&info, &config, &dir) {
        Ok(p) => p,
        Err(e) => return Ending::Failed(e.to_string()),
    };
    let Some(bus) = p.pipeline.bus() else { return Ending::Failed("pipeline without bus".into()) };
    let mut messages = bus.stream();
    if let Err(e) = p.pipeline.set_state(gst::State::Playing) {
        return Ending::Failed(format!("cannot start recording pipeline: {e}"));
    }
    let mut segments = Segments::new(&info, &db);
    let mut timeline = Timeline::default();
    let mut split_pending = false;
    let mut have_caps = false;
    let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let ending = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ending::Stopped,
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => break Ending::Stopped,
            item = consumer.rx.recv() => match item {
                None => break Ending::Failed("camera removed".into()),
                Some(HubItem::Caps(caps)) => {
                    p.appsrc.set_caps(Some(&caps));
                    have_caps = true;
                }
                Some(HubItem::Gap) => {
                    timeline.gap();
                    split_pending = true;
                }
                Some(HubItem::Frame(frame)) => {
                    if !have_caps {
                        continue;
                    }
                    if split_pending && frame.keyframe {
                        split_pending = false;
                        p.splitmux.emit_by_name::<()>("split-now", &[]);
                    }
                    let mut buffer = frame.buffer.copy();
                    {
                        let b = buffer.make_mut();
                        let (pts, dts) = (b.pts(), b.dts());
                        let out = timeline.map(pts, dts, frame.arrived);
                        // Shift pts by the same amount as dts, keeping any reordering delay.
                        let delay = match (pts, dts) {
                            (Some(p), Some(d)) if p > d => p - d,
                            _ => gst::ClockTime::ZERO,
                        };
                        b.set_dts(out);
                        b.set_pts(out + delay);
                    }
                    if let Err(e) = p.appsrc.push_buffer(buffer) {
                        break Ending::Failed(format!("recording pipeline refused data: {e:?}"));
                    }
                }
            },
            message = messages.next() => {
                let Some(message) = message else { break Ending::Failed("bus closed".into()) };
                match message.view() {
                    gst::MessageView::Error(e) => break Ending::Failed(e.error().to_string()),
                    gst::MessageView::Element(e) => segments.on_element(e.structure()).await,
                    _ => {}
                }
            }
        }
    };
    drop(consumer);
    let ending = finish(&p, &mut messages, &mut segments, ending).await;
    let pipeline = p.pipeline.clone();
    let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
    // A file left open by a failure is made playable and indexed like one recovered after a crash.
    if let Some(open) = segments.open_path()
        && open.exists()
    {
        match super::recovery::recover_file(&db, &open).await {
            Ok(_) => info!(file = %open.display(), "indexed the segment open at failure"),
            Err(e) => warn!(err = %e, file = %open.display(), "cannot recover the segment open at failure"),
        }
    }
    ending
}

/// Sends EOS and waits for it, indexing the last segment on the way.
async fn finish(p: &Pipeline, messages: &mut gst::bus::BusStream, segments: &mut Segments<'_>, ending: Ending) -> Ending {
    if matches!(ending, Ending::Failed(_)) && segments.open.is_empty() {
        return ending;
    }
    let _ = p.appsrc.end_of_stream();
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = messages.next().await {
            match message.view() {
                gst::MessageView::Eos(_) => return Ok(()),
                gst::MessageView::Error(e) => return Err(e.error().to_string()),
                gst::MessageView::Element(e) => segments.on_element(e.structure()).await,
                _ => {}
            }
        }
        Err("bus closed".to_owned())
    })
    .await;
    match (ending, waited) {
        (Ending::Stopped, Ok(Ok(()))) => Ending::Stopped,
        (Ending::Failed(reason), _) => Ending::Failed(reason),
        (Ending::Stopped, Ok(Err(e))) => Ending::Failed(format!("finalising: {e}")),
        (Ending::Stopped, Err(_)) => Ending::Failed("finalising timed out".into()),
    }
}

/// Segment bookkeeping from splitmuxsink's messages.
struct Segments<'a> {
    info: &'a SessionInfo,
    db: &'a Db,
    /// Open segments by location, with the running time they opened at.
    open: HashMap<String, gst::ClockTime>,
}

impl<'a> Segments<'a> {
    fn new(info: &'a SessionInfo, db: &'a Db) -> Self {
        Segments { info, db, open: HashMap::new() }
    }

    fn open_path(&self) -> Option<PathBuf> {
        self.open.keys().next().map(PathBuf::from)
    }

    async fn on_element(&mut self, s: Option<&gst::StructureRef>) {
        let Some(s) = s else { return };
        let Ok(location) = s.get::<String>("location") else { return };
        let running = s.get::<gst::ClockTime>("running-time").unwrap_or(gst::ClockTime::ZERO);
        match s.name().as_str() {
            "splitmuxsink-fragment-opened" => {
                debug!(location, %running, "segment opened");
                self.open.insert(location, running);
            }
            "splitmuxsink-fragment-closed" => {
                let opened = self.open.remove(&location).unwrap_or(gst::ClockTime::ZERO);
                // 1.22 reports where the fragment starts and how long it is; older versions only the end.
                let start = s.get::<gst::ClockTime>("fragment-offset").unwrap_or(opened);
                let duration = s
                    .get::<gst::ClockTime>("fragment-duration")
                    .unwrap_or_else(|_| running.saturating_sub(opened));
                if let Err(e) = self.index(&location, start, duration).await {
                    warn!(err = %e, location, "cannot index segment");
                }
            }
            _ => {}
        }
    }

    async fn index(&self, location: &str, start: gst::ClockTime, duration: gst::ClockTime) -> Result<()> {
        let path = PathBuf::from(location);
        let filename = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::internal("segment without a file name"))?
            .to_owned();
        let synced = path.clone();
        let size = tokio::task::spawn_blocking(move || {
            sync_file_and_dir(&synced)?;
            std::fs::metadata(&synced).map(|m| m.len())
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| Error::Dependency { dependency: "storage", detail: format!("syncing {filename}: {e}") })?;
        let base = millis(self.info.started_at);
        let started_at = base + (start.mseconds() as i64);
        let row = SegmentRow {
            session_id: self.info.id.clone(),
            camera: self.info.camera.to_string(),
            filename,
            format: self.info.format.as_str().into(),
            started_at,
            ended_at: started_at + duration.mseconds() as i64,
            duration_ms: duration.mseconds() as i64,
            size_bytes: size as i64,
            recovered: false,
        };
        self.db.insert_segment(&row).await?;
        info!(file = row.filename, duration_ms = row.duration_ms, size, "segment indexed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_306_757_123);
        let name = segment_name("front_door", t, 3, RecordingFormat::Fmp4);
        assert_eq!(name, "front_door_2026-11-22T00-19-17.123Z_0003.mp4");
        assert!(crate::storage::files::validate_name("f", &name).is_ok());
        assert_eq!(parse_segment_name(&name), Some(("front_door".into(), t, 3)));
        assert_eq!(parse_segment_name("garbage.mp4"), None);
    }

    #[test]
    fn the_timeline_starts_at_zero_and_keeps_gaps() {
        let mut t = Timeline::default();
        let start = Instant::now();
        let s = gst::ClockTime::SECOND;
        assert_eq!(t.map(Some(s * 10), None, start), gst::ClockTime::ZERO);
        assert_eq!(t.map(Some(s * 11), None, start + Duration::from_secs(1)), s);
        // The camera comes back 3 s later with a timeline of its own.
        t.gap();
        let after = t.map(Some(s / 2), None, start + Duration::from_secs(4));
        assert_eq!(after, s * 4);
        assert_eq!(t.map(Some(s / 2 + s), None, start + Duration::from_secs(5)), s * 5);
    }
}
