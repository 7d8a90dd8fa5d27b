//! V4L2 ingest: builds `v4l2src ! caps ! ... ! appsink` that feeds one camera's [`StreamHub`] with H.264 access
//! units in the form the rest of camhub expects (`avc`, parameter sets in `codec_data` and before each keyframe).
//! Devices that send H.264 pass through a parser; MJPEG is decoded and encoded; raw frames are converted to 4:2:0 and
//! encoded with x264 tuned for latency (no B-frames, one-second GOP, constrained baseline so browsers play it).
//! Building is separate from running: the camera supervisor owns the pipeline and its bus.

use std::path::Path;
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::ingest::{hub_sink, make, pipeline_error};
use crate::config::EncoderConfig;
use crate::devices::v4l2::{Chosen, Handling};
use crate::error::Result;
use crate::media::hub::StreamHub;

/// The bitrate for a picture when the config leaves it free: about 0.1 bit per pixel, within 200 kbit/s..8 Mbit/s.
pub fn auto_bitrate_kbps(width: u32, height: u32, fps: f64) -> u32 {
    let pixels_per_second = width as f64 * height as f64 * fps.max(1.0);
    ((pixels_per_second * 0.1 / 1000.0) as u32).clamp(200, 8000)
}

/// Builds (but does not start) the ingest of `node` in `mode`.
pub fn build_v4l2_ingest(
    node: &Path,
    mode: &Chosen,
    encoder: &EncoderConfig,
    hub: Arc<StreamHub>,
) -> Result<gst::Pipeline> {
    let pipeline = gst::Pipeline::with_name(&format!("ingest-{}", hub.camera_id()));
    let src = make("v4l2src")?;
    src.set_property("device", node.to_string_lossy().as_ref());
    let media_type = match mode.handling {
        Handling::H264 => "video/x-h264",
        Handling::Jpeg => "image/jpeg",
        Handling::Raw(_) => "video/x-raw",
    };
    let mut caps = gst::Caps::builder(media_type).field("width", mode.width as i32).field("height", mode.height as i32);
    if let Handling::Raw(format) = mode.handling {
        caps = caps.field("format", format);
    }
    let (num, den) = mode.rate;
    if num > 0 {
        caps = caps.field("framerate", gst::Fraction::new(num as i32, den.max(1) as i32));
    }
    let source_caps = make("capsfilter")?;
    source_caps.set_property("caps", caps.build());

    let mut chain: Vec<gst::Element> = vec![src, source_caps];
    if mode.handling != Handling::H264 {
        // Capture keeps going while the encoder is busy; if it falls behind, old frames are dropped, not queued.
        let queue = make("queue")?;
        queue.set_property("max-size-buffers", 2u32);
        queue.set_property("max-size-bytes", 0u32);
        queue.set_property("max-size-time", 0u64);
        queue.set_property_from_str("leaky", "downstream");
        chain.push(queue);
        if mode.handling == Handling::Jpeg {
            chain.push(make("jpegdec")?);
        }
        chain.push(make("videoconvert")?);
        let raw = make("capsfilter")?;
        raw.set_property("caps", gst::Caps::builder("video/x-raw").field("format", "I420").build());
        chain.push(raw);
        chain.push(x264(mode, encoder)?);
        let profile = make("capsfilter")?;
        profile
            .set_property("caps", gst::Caps::builder("video/x-h264").field("profile", "constrained-baseline").build());
        chain.push(profile);
    }
    let parse = make("h264parse")?;
    parse.set_property("config-interval", -1i32);
    chain.push(parse);
    let au = make("capsfilter")?;
    au.set_property(
        "caps",
        gst::Caps::builder("video/x-h264").field("stream-format", "avc").field("alignment", "au").build(),
    );
    chain.push(au);
    let sink = hub_sink(hub);
    chain.push(sink.upcast());
    pipeline.add_many(&chain).map_err(pipeline_error)?;
    gst::Element::link_many(&chain).map_err(pipeline_error)?;
    Ok(pipeline)
}

fn x264(mode: &Chosen, encoder: &EncoderConfig) -> Result<gst::Element> {
    let fps = crate::devices::v4l2::fps(mode.rate);
    let x264 = make("x264enc")?;
    x264.set_property_from_str("tune", "zerolatency");
    x264.set_property_from_str("speed-preset", &encoder.preset);
    let bitrate = encoder.bitrate_kbps.unwrap_or_else(|| auto_bitrate_kbps(mode.width, mode.height, fps));
    x264.set_property("bitrate", bitrate);
    // A keyframe every second: recordings split and snapshots and new viewers start within a second.
    let gop = if fps >= 1.0 { fps.round() as u32 } else { 30 };
    x264.set_property("key-int-max", gop);
    Ok(x264)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_bitrate_scales_with_the_picture_and_stays_bounded() {
        assert_eq!(auto_bitrate_kbps(640, 480, 30.0), 921);
        assert_eq!(auto_bitrate_kbps(160, 120, 5.0), 200);
        assert_eq!(auto_bitrate_kbps(3840, 2160, 60.0), 8000);
    }
}
