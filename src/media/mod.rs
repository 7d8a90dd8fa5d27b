//! The media engine: GStreamer pipelines and the per-camera stream hub. Media knows frames, caps and pipelines; it
//! does not know cameras' lifecycle (that is `camera::supervisor`) or anything about clients.

pub mod hub;
pub mod ingest;
pub mod rtsp_client;
pub mod testcam;

use gstreamer as gst;

/// Initialises GStreamer once; later calls are cheap.
pub fn init() -> Result<(), crate::error::Error> {
    gst::init().map_err(|e| crate::error::Error::Dependency { dependency: "gstreamer", detail: e.to_string() })
}

/// Elements camhub cannot run without; checked at start so a missing plugin is one clear line, not a camera error.
pub const REQUIRED_ELEMENTS: &[&str] =
    &["rtspsrc", "rtph264depay", "rtph265depay", "h264parse", "h265parse", "appsink", "capsfilter"];

pub fn missing_elements() -> Vec<&'static str> {
    REQUIRED_ELEMENTS.iter().copied().filter(|name| gst::ElementFactory::find(name).is_none()).collect()
}
