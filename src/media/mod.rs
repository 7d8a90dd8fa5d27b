//! The media engine: GStreamer pipelines and the per-camera stream hub. Media knows frames, caps and pipelines; it
//! does not know cameras' lifecycle (that is `camera::supervisor`) or anything about clients.

pub mod clock;
pub mod file_ingest;
pub mod hub;
pub mod ingest;
pub mod picture;
pub mod push;
pub mod rtmp;
pub mod rtsp_client;
pub mod runtime;
pub mod srt;
pub mod testcam;
pub mod v4l2_ingest;
pub mod webrtc;
pub mod whip_ingest;

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::error::{Dependency, Error, Result};

/// Initialises GStreamer once; later calls are cheap.
pub fn init() -> Result<()> {
    gst::init().map_err(|e| Error::dependency(Dependency::Gstreamer, e))
}

/// `pipeline`'s bus as a stream of its messages (as `gst::Bus::stream`), with every streaming thread of the pipeline
/// made a batch thread ([`run_as_batch`](crate::base::thread::run_as_batch)) as it starts: the thread posts a
/// stream-status message on entering its loop, and the bus's sync handler runs in that thread.
pub fn batch_pipeline_bus(pipeline: &gst::Pipeline) -> Result<futures::channel::mpsc::UnboundedReceiver<gst::Message>> {
    let bus = pipeline.bus().ok_or_else(|| pipeline_error("pipeline without bus"))?;
    let (sender, receiver) = futures::channel::mpsc::unbounded();
    while let Some(message) = bus.pop() {
        let _ = sender.unbounded_send(message);
    }
    bus.set_sync_handler(move |_, message| {
        match message.view() {
            gst::MessageView::StreamStatus(status) if status.get().0 == gst::StreamStatusType::Enter => {
                crate::base::thread::run_as_batch()
            }
            _ => {
                let _ = sender.unbounded_send(message.to_owned());
            }
        }
        gst::BusSyncReply::Drop
    });
    Ok(receiver)
}

/// An element of `factory`, or a failure naming the plugin that is missing.
pub fn make(factory: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        Error::dependency(
            Dependency::Gstreamer,
            format!("element {factory} is missing (install the GStreamer plugin that provides it)"),
        )
    })
}

/// The codec of hub caps, if camhub carries it.
pub fn codec_of(caps: &gst::Caps) -> Option<crate::base::Codec> {
    crate::base::Codec::from_media_type(caps.structure(0)?.name().as_str())
}

/// The audio codec of hub audio caps, if camhub carries it (AAC only as `mpegversion=4`, raw access units).
pub fn audio_codec_of(caps: &gst::Caps) -> Option<crate::base::AudioCodec> {
    use crate::base::AudioCodec;
    let s = caps.structure(0)?;
    let codec = AudioCodec::ALL.into_iter().find(|c| c.media_type() == s.name().as_str())?;
    match codec {
        AudioCodec::Aac if s.get::<i32>("mpegversion").ok() != Some(4) => None,
        AudioCodec::Aac if s.get::<&str>("stream-format").is_ok_and(|f| f != "raw") => None,
        c => Some(c),
    }
}

/// A pipeline that could not be built or changed state.
pub fn pipeline_error(e: impl std::fmt::Display) -> Error {
    Error::dependency(Dependency::MediaPipeline, e)
}

/// Elements camhub cannot run without; checked at start so a missing plugin is one clear line, not a camera error.
pub const REQUIRED_ELEMENTS: &[&str] =
    &["rtspsrc", "rtph264depay", "rtph265depay", "h264parse", "h265parse", "appsink", "capsfilter"];

pub fn missing_elements() -> Vec<&'static str> {
    REQUIRED_ELEMENTS.iter().copied().filter(|name| gst::ElementFactory::find(name).is_none()).collect()
}

/// Waits for an RTSP server thread (gst-rtsp-server on its own main context) to report the port it bound, or why it
/// could not bind.
pub(crate) fn bound_port(
    ready: &std::sync::mpsc::Receiver<Result<i32, String>>,
    listen: std::net::SocketAddr,
) -> Result<u16> {
    match ready.recv_timeout(std::time::Duration::from_secs(10)) {
        Ok(Ok(port)) => Ok(port as u16),
        Ok(Err(e)) => Err(Error::dependency(Dependency::RtspServer, format!("cannot listen on {listen}: {e}"))),
        Err(_) => Err(Error::internal("rtsp server did not start")),
    }
}

/// The origin of the process-wide grid `pace` and `pace_slot` count on.
static PACE_EPOCH: std::sync::LazyLock<tokio::time::Instant> = std::sync::LazyLock::new(tokio::time::Instant::now);

/// Sleeps until the next multiple of `period` on a process-wide grid. Tasks that pace themselves this way wake in
/// the same timer turn, so the process wakes `1/period` times a second however many cameras it serves: on a small
/// box, wake-ups (context switches), not bytes, are what ingest and recording cost.
pub async fn pace(period: std::time::Duration) {
    let epoch = *PACE_EPOCH;
    let since = tokio::time::Instant::now().saturating_duration_since(epoch).as_nanos();
    let step = period.as_nanos().max(1);
    let next = epoch + std::time::Duration::from_nanos(((since / step + 1) * step) as u64);
    tokio::time::sleep_until(next).await;
}

/// Which multiple of `period` on `pace`'s grid it is now: tasks paced by a shorter period that do something once
/// per `period` when this changes do it in the same turn (the recorders' syncs, gathered into one).
pub fn pace_slot(period: std::time::Duration) -> u128 {
    tokio::time::Instant::now().saturating_duration_since(*PACE_EPOCH).as_nanos() / period.as_nanos().max(1)
}
