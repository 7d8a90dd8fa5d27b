//! Snapshots: a JPEG of a camera's current frame, decoded on demand from the hub's current GOP (no decoder runs
//! between snapshots). The frame used is the first one to arrive after the call, so it is never older than the
//! request. Files are written beside their final name, fsynced, then renamed, so a snapshot is whole or absent.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tracing::Instrument;
use tracing::field::Empty;

use crate::camera::Camera;
use crate::config::SnapshotConfig;
use crate::error::{Dependency, Error, Resource, Result, State};
use crate::events::{EventBus, EventKind};
use crate::media::hub::{HubItem, Start};
use crate::storage::files::{Area, Files, blocking, sync_file_and_dir, sync_parent, validate_name};

/// How long to wait for the next frame before giving up.
const FRAME_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub filename: String,
    pub path: PathBuf,
    pub file_size: u64,
    pub width: u32,
    pub height: u32,
    /// When the frame shown arrived from the camera.
    pub frame_time: SystemTime,
    pub taken_at: SystemTime,
    /// Frames decoded to reach it (from the GOP's keyframe).
    pub frames_decoded: usize,
}

#[derive(Debug)]
pub struct Snapshots {
    files: Files,
    /// Quality and size; a config reload changes them for the next snapshot.
    config: parking_lot::Mutex<SnapshotConfig>,
    events: EventBus,
    /// Makes temporary names unique within the process.
    counter: AtomicU64,
}

impl Snapshots {
    pub fn new(files: Files, config: SnapshotConfig, events: EventBus) -> Snapshots {
        Snapshots { files, config: parking_lot::Mutex::new(config), events, counter: AtomicU64::new(0) }
    }

    /// Quality and size for the snapshots taken from now on.
    pub fn set_config(&self, config: SnapshotConfig) {
        *self.config.lock() = config;
    }

    /// Takes a snapshot of `camera`, named `filename` (validated; `.jpg` added when it has no JPEG extension), in a
    /// `snapshot` span that says how it went.
    pub async fn take(&self, camera: &Arc<Camera>, filename: Option<&str>) -> Result<Snapshot> {
        let span = tracing::info_span!(
            "snapshot",
            camera_id = %camera.id,
            file = Empty,
            outcome = Empty,
            reason = Empty,
            size_bytes = Empty,
            frames_decoded = Empty,
            otel.status_code = Empty,
        );
        let result = self.shoot(camera, filename).instrument(span.clone()).await;
        match &result {
            Ok(s) => {
                span.record("outcome", "ok");
                span.record("file", s.filename.as_str());
                span.record("size_bytes", s.file_size);
                span.record("frames_decoded", s.frames_decoded);
            }
            Err(e) => {
                span.record("outcome", "error");
                span.record("reason", e.to_string());
                span.record("otel.status_code", "ERROR");
            }
        }
        result
    }

    async fn shoot(&self, camera: &Arc<Camera>, filename: Option<&str>) -> Result<Snapshot> {
        let requested = Instant::now();
        let taken_at = SystemTime::now();
        let filename = match filename {
            Some(name) => {
                validate_name("filename", name)?;
                let lower = name.to_ascii_lowercase();
                let name = if lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
                    name.to_owned()
                } else {
                    format!("{name}.jpg")
                };
                // The extension may push it past the length limit.
                validate_name("filename", &name)?;
                name
            }
            None => format!("{}_{}.jpg", camera.id, crate::base::time::file_stamp(taken_at)),
        };
        let path = self.files.path(Area::Snapshots, "filename", &filename)?;
        let taken = path.clone();
        if blocking(move || Ok(taken.exists())).await? {
            return Err(Error::invalid_state(State::FileExists, &[State::NewFileName]));
        }
        camera.require_connected()?;
        let (caps, frames, frame_arrived) = fresh_gop(camera, requested).await?;
        let frames_decoded = frames.len();
        let (quality, size) = {
            let c = self.config.lock();
            (c.quality, c.size)
        };
        let jpeg = tokio::task::spawn_blocking(move || decode_to_jpeg(&caps, frames, quality, size))
            .await
            .map_err(Error::internal)??;
        let tmp = self.files.dir(Area::Snapshots).join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        let (final_path, bytes) = (path.clone(), jpeg.data);
        let file_size = bytes.len() as u64;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::write(&tmp, &bytes)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &final_path)?;
            sync_file_and_dir(&final_path)
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| Error::dependency(Dependency::Storage, format!("writing snapshot: {e}")))?;
        self.events.publish(EventKind::SnapshotTaken {
            camera: camera.id.clone(),
            filename: filename.clone(),
            file_size,
        });
        Ok(Snapshot {
            filename,
            path,
            file_size,
            width: jpeg.width,
            height: jpeg.height,
            // The frame arrived after the call, by this much.
            frame_time: taken_at + frame_arrived.saturating_duration_since(requested),
            taken_at,
            frames_decoded,
        })
    }
}

/// A snapshot file, as listed.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub filename: String,
    pub size: u64,
    pub modified: SystemTime,
}

impl Snapshots {
    /// Snapshot files, newest first, and how many there are: the directory is the index (a snapshot is one whole
    /// file or none). Read off the async runtime.
    pub async fn list(&self, limit: usize, offset: usize) -> Result<(Vec<SnapshotFile>, usize)> {
        let dir = self.files.dir(Area::Snapshots);
        let mut entries = blocking(move || {
            let entries = std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            let filename = e.file_name().into_string().ok()?;
                            let meta = e.metadata().ok()?;
                            (meta.is_file() && validate_name("filename", &filename).is_ok()).then(|| SnapshotFile {
                                filename,
                                size: meta.len(),
                                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            Ok(entries)
        })
        .await?;
        entries.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| b.filename.cmp(&a.filename)));
        let total = entries.len();
        Ok((entries.into_iter().skip(offset).take(limit).collect(), total))
    }

    /// One snapshot file by name.
    pub async fn info(&self, filename: &str) -> Result<SnapshotFile> {
        let path = self.files.path(Area::Snapshots, "filename", filename)?;
        let name = filename.to_owned();
        blocking(move || {
            let meta = std::fs::metadata(&path)
                .ok()
                .filter(|m| m.is_file())
                .ok_or_else(|| Error::not_found(Resource::Snapshot, name.clone()))?;
            Ok(SnapshotFile {
                filename: name,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            })
        })
        .await
    }

    /// Deletes one snapshot file, then syncs its directory.
    pub async fn delete(&self, filename: &str) -> Result<()> {
        let path = self.files.path(Area::Snapshots, "filename", filename)?;
        let name = filename.to_owned();
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => {
                // The snapshot is gone either way; a failed sync only risks it reappearing after a power cut.
                let _ = sync_parent(&path);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::not_found(Resource::Snapshot, name)),
            Err(e) => Err(Error::dependency(Dependency::Storage, format!("deleting: {e}"))),
        })
        .await
    }
}

/// The caps and the frames from the current GOP's keyframe up to the first frame that arrived after `after`.
async fn fresh_gop(camera: &Camera, after: Instant) -> Result<(gst::Caps, Vec<gst::Buffer>, Instant)> {
    let mut consumer = camera.hub.subscribe("snapshot", 512, Start::LatestKeyframe);
    let mut caps = None;
    let mut frames: Vec<gst::Buffer> = Vec::new();
    let deadline = tokio::time::Instant::now() + FRAME_WAIT;
    loop {
        let item = tokio::time::timeout_at(deadline, consumer.rx.recv())
            .await
            .map_err(|_| Error::dependency(Dependency::Camera, "no frame within 3 s"))?
            .ok_or_else(|| Error::dependency(Dependency::Camera, "camera removed"))?;
        match item {
            HubItem::Caps(c) => caps = Some(c),
            HubItem::Gap => frames.clear(),
            HubItem::Frame(f) => {
                if f.keyframe {
                    frames.clear();
                }
                frames.push(f.buffer);
                if f.arrived >= after && caps.is_some() {
                    let caps = caps.ok_or_else(|| Error::internal("no caps"))?;
                    return Ok((caps, frames, f.arrived));
                }
            }
            // Subscribed without audio: never sent.
            HubItem::AudioCaps(_) | HubItem::Audio(_) => {}
        }
    }
}

struct Jpeg {
    data: Vec<u8>,
    width: u32,
    height: u32,
}

/// Decodes `frames` (a keyframe first) and encodes only the last one as JPEG.
fn decode_to_jpeg(caps: &gst::Caps, frames: Vec<gst::Buffer>, quality: u8, size: Option<(u32, u32)>) -> Result<Jpeg> {
    let fail = |detail: String| Error::dependency(Dependency::SnapshotPipeline, detail);
    let decoder = crate::media::codec_of(caps).unwrap_or(crate::base::Codec::H264).decoder();
    let scale = match size {
        Some((w, h)) => format!(" ! videoscale ! video/x-raw,width={w},height={h}"),
        None => String::new(),
    };
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time ! {decoder} name=dec ! videoconvert{scale} ! jpegenc quality={quality} ! appsink name=out sync=false"
    ))
    .map_err(|e| fail(e.to_string()))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| fail("not a pipeline".into()))?;
    let by_name = |name: &str| pipeline.by_name(name).ok_or_else(|| fail(format!("no {name}")));
    let src = by_name("src")?.downcast::<gst_app::AppSrc>().map_err(|_| fail("src is not an appsrc".into()))?;
    let sink = by_name("out")?.downcast::<gst_app::AppSink>().map_err(|_| fail("out is not an appsink".into()))?;
    src.set_caps(Some(caps));
    // Only the last frame is wanted: drop every decoded frame before it, so only one is converted and encoded.
    let last = gst::ClockTime::from_mseconds(frames.len().saturating_sub(1) as u64);
    if let Some(pad) = by_name("dec")?.static_pad("src") {
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| match info.buffer() {
            Some(b) if b.pts().is_some_and(|pts| pts < last) => gst::PadProbeReturn::Drop,
            _ => gst::PadProbeReturn::Ok,
        });
    }
    pipeline.set_state(gst::State::Playing).map_err(|e| fail(e.to_string()))?;
    for (i, frame) in frames.into_iter().enumerate() {
        let mut b = frame.copy();
        {
            let b = b.make_mut();
            let t = gst::ClockTime::from_mseconds(i as u64);
            b.set_pts(t);
            b.set_dts(t);
            b.set_duration(gst::ClockTime::from_mseconds(1));
        }
        src.push_buffer(b).map_err(|e| fail(format!("{e:?}")))?;
    }
    let _ = src.end_of_stream();
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(5));
    let error = pipeline.bus().and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]));
    let _ = pipeline.set_state(gst::State::Null);
    let sample = match (sample, error) {
        (Some(s), _) => s,
        (None, Some(msg)) => {
            return Err(fail(match msg.view() {
                gst::MessageView::Error(e) => e.error().to_string(),
                _ => "decode failed".into(),
            }));
        }
        (None, None) => return Err(fail("the decoder produced no frame".into())),
    };
    let (width, height) = sample
        .caps()
        .and_then(|c| c.structure(0).map(|s| (s.get::<i32>("width").unwrap_or(0), s.get::<i32>("height").unwrap_or(0))))
        .map(|(w, h)| (w.max(0) as u32, h.max(0) as u32))
        .unwrap_or((0, 0));
    let data = sample
        .buffer()
        .and_then(|b| b.map_readable().ok().map(|m| m.as_slice().to_vec()))
        .ok_or_else(|| fail("empty JPEG".into()))?;
    Ok(Jpeg { data, width, height })
}
