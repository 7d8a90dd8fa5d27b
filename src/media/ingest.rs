//! RTSP ingest: builds the pipeline `rtspsrc ! depay ! parse ! appsink` that feeds one camera's [`StreamHub`] with
//! whole access units in the form MP4 stores them (`avc`/`hvc1`: length-prefixed NAL units, parameter sets in the
//! caps' `codec_data` and repeated before every keyframe), so muxers take them without a parser and any keyframe is
//! a clean entry point for a decoder.
//! Building is separate from running: the camera supervisor owns the pipeline's lifecycle and bus.

use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{make, pipeline_error};
use crate::base::Codec;
use crate::base::url::{credentials, redact_url};
use crate::error::Result;
use crate::media::hub::StreamHub;

/// How to pull from an RTSP camera.
#[derive(Debug, Clone)]
pub struct RtspSettings {
    pub latency: Duration,
    /// Interleave RTP in the RTSP TCP connection (robust through NAT and lossy links) rather than UDP.
    pub tcp: bool,
}

/// Builds (but does not start) an ingest pipeline for `url`. Credentials go to rtspsrc's properties, never into its
/// `location`, so GStreamer's own messages cannot leak them.
pub fn build_rtsp_ingest(url: &url::Url, settings: &RtspSettings, hub: Arc<StreamHub>) -> Result<gst::Pipeline> {
    let pipeline = gst::Pipeline::with_name(&format!("ingest-{}", hub.camera_id()));
    let location = redact_url(url);
    let src = make("rtspsrc")?;
    src.set_property("location", &location);
    if let Some((user, password)) = credentials(url) {
        src.set_property("user-id", user.as_str());
        src.set_property("user-pw", password.as_str());
    }
    src.set_property("latency", settings.latency.as_millis() as u32);
    src.set_property_from_str("protocols", if settings.tcp { "tcp" } else { "udp+tcp" });
    // A camera that stops answering must fail the attempt quickly; the supervisor reconnects.
    src.set_property("tcp-timeout", 5_000_000u64);
    src.set_property("timeout", 5_000_000u64);

    let sink = hub_sink(hub.clone());
    pipeline.add_many([&src, sink.upcast_ref()]).map_err(pipeline_error)?;

    // Only video reaches the hub: audio and metadata streams are not even set up.
    src.connect("select-stream", false, |args| {
        let caps = args[2].get::<gst::Caps>().ok()?;
        let is_video = caps.structure(0).and_then(|s| s.get::<&str>("media").ok()) == Some("video");
        Some(is_video.to_value())
    });

    let pipeline_weak = pipeline.downgrade();
    let sink_weak = sink.downgrade();
    src.connect_pad_added(move |_, pad| {
        let (Some(pipeline), Some(sink)) = (pipeline_weak.upgrade(), sink_weak.upgrade()) else { return };
        if let Err(e) = link_depayloader(&pipeline, pad, sink.upcast_ref()) {
            // Surface the failure on the bus, where the supervisor sees it.
            gst::element_error!(pipeline, gst::StreamError::CodecNotFound, ("{}", e));
        }
    });

    Ok(pipeline)
}

/// The appsink that ends every ingest pipeline: each sample's caps (when they change) and buffer go to the hub, on
/// the streaming thread, without blocking.
pub(crate) fn hub_sink(hub: Arc<StreamHub>) -> gst_app::AppSink {
    video_sink(hub, false, |_, _| {})
}

/// [`hub_sink`], synchronised to the pipeline clock when `sync` (a clip played at its own pace), with `retime` mapping
/// each buffer's timestamps before the hub gets it.
pub(crate) fn video_sink(
    hub: Arc<StreamHub>,
    sync: bool,
    mut retime: impl FnMut(&gst::Sample, &mut gst::BufferRef) + Send + 'static,
) -> gst_app::AppSink {
    let sink = gst_app::AppSink::builder().name("hub").sync(sync).enable_last_sample(false).build();
    let mut last_caps: Option<gst::Caps> = None;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(caps) = sample.caps()
                    && last_caps.as_ref().is_none_or(|c| c.as_ptr() != caps.as_ptr() && c != caps)
                {
                    last_caps = Some(caps.to_owned());
                    hub.push_caps(caps.to_owned());
                }
                if let Some(mut buffer) = sample.buffer_owned() {
                    retime(&sample, buffer.make_mut());
                    hub.push(buffer);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    sink
}

/// `parser ! capsfilter` turning `codec`'s stream into what the hub carries: whole access units, `avc`/`hvc1`, parameter
/// sets before every keyframe.
pub(crate) fn parser_to_hub(codec: Codec) -> Result<(gst::Element, gst::Element), String> {
    let parse = make(codec.parser()).map_err(|e| e.to_string())?;
    parse.set_property("config-interval", -1i32);
    let filter = make("capsfilter").map_err(|e| e.to_string())?;
    filter.set_property(
        "caps",
        gst::Caps::builder(codec.media_type())
            .field("stream-format", codec.stream_format())
            .field("alignment", "au")
            .build(),
    );
    Ok((parse, filter))
}

/// Links a demuxed video pad (a clip's, a pushed MPEG-TS's) through its codec's parser to the hub's appsink, in the
/// `avc`/`hvc1` access units the hub carries; the first video stream only, later ones are left unlinked.
pub(crate) fn link_parsed_video(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    media_type: &str,
    sink: &gst::Element,
) -> Result<(), String> {
    let Some(codec) = Codec::from_media_type(media_type) else {
        return Err(format!("the video is {media_type}: camhub ingests H.264 and H.265"));
    };
    if sink.static_pad("sink").is_some_and(|p| p.is_linked()) {
        return Ok(());
    }
    let (parse, filter) = parser_to_hub(codec)?;
    pipeline.add_many([&parse, &filter]).map_err(|e| e.to_string())?;
    gst::Element::link_many([&parse, &filter, sink]).map_err(|e| e.to_string())?;
    for element in [&parse, &filter] {
        element.sync_state_with_parent().map_err(|e| e.to_string())?;
    }
    let parse_sink = parse.static_pad("sink").ok_or("parser without sink pad")?;
    pad.link(&parse_sink).map_err(|e| format!("linking the video: {e:?}"))?;
    Ok(())
}

/// Links a demuxed (or depayloaded) audio pad to `sink` (an [`audio_sink`]) as the hub carries it: AAC through
/// `aacparse` to raw frames with their AudioSpecificConfig, Opus through `opusparse` (framed packets), G.711 as it is.
/// Other codecs (MP3, ...) are left unlinked: their sound is not kept (`Ok(false)`). The first audio stream only.
pub(crate) fn link_parsed_audio(pipeline: &gst::Pipeline, pad: &gst::Pad, sink: &gst::Element) -> Result<bool, String> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let Some(s) = caps.structure(0) else { return Ok(false) };
    if sink.static_pad("sink").is_some_and(|p| p.is_linked()) {
        return Ok(false);
    }
    let chain: Vec<gst::Element> = match s.name().as_str() {
        "audio/mpeg" if matches!(s.get::<i32>("mpegversion"), Ok(2 | 4)) => {
            let parse = make("aacparse").map_err(|e| e.to_string())?;
            let filter = make("capsfilter").map_err(|e| e.to_string())?;
            filter.set_property(
                "caps",
                gst::Caps::builder("audio/mpeg").field("mpegversion", 4i32).field("stream-format", "raw").build(),
            );
            vec![parse, filter]
        }
        "audio/x-opus" => vec![make("opusparse").map_err(|e| e.to_string())?],
        "audio/x-mulaw" | "audio/x-alaw" => vec![make("identity").map_err(|e| e.to_string())?],
        _ => return Ok(false),
    };
    pipeline.add_many(&chain).map_err(|e| e.to_string())?;
    let mut linked: Vec<&gst::Element> = chain.iter().collect();
    linked.push(sink);
    gst::Element::link_many(linked).map_err(|e| e.to_string())?;
    for element in &chain {
        element.sync_state_with_parent().map_err(|e| e.to_string())?;
    }
    let first = chain[0].static_pad("sink").ok_or("audio chain without sink pad")?;
    pad.link(&first).map_err(|e| format!("linking the audio: {e:?}"))?;
    Ok(true)
}

/// Adds the sound's branch for a demuxed audio pad: `[aacparse ! capsfilter] ! queue ! appsink` to the hub's audio
/// track (see [`link_parsed_audio`] and [`audio_sink`]). Made only when a stream has sound (an unlinked sink would
/// hold the pipeline), with a queue (the demuxer's one thread must not be held by one sink while another waits for
/// its first buffer); a codec the hub does not carry, or a second sound track, is left unlinked.
pub(crate) fn add_audio_branch(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    hub: Arc<StreamHub>,
    sync: bool,
    retime: impl FnMut(&gst::Sample, &mut gst::BufferRef) + Send + 'static,
) -> Result<(), String> {
    add_audio_branch_to(pipeline, pad, move || Some(hub.clone()), sync, retime).map(|_| ())
}

/// [`add_audio_branch`] for an ingest whose hub may come later (a WHIP publisher's sound flows before the camera's
/// feed runs): `hub` is asked at each frame, and frames while it answers `None` are dropped, never held, so sound
/// cannot block the source. The caps go to each hub with its first frame. True if the branch was made and linked.
pub(crate) fn add_audio_branch_to(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    hub: impl FnMut() -> Option<Arc<StreamHub>> + Send + 'static,
    sync: bool,
    retime: impl FnMut(&gst::Sample, &mut gst::BufferRef) + Send + 'static,
) -> Result<bool, String> {
    if pipeline.by_name("hub-audio").is_some() {
        return Ok(false);
    }
    let sink = audio_sink(hub, sync, retime);
    if pipeline.current_state() == gst::State::Playing {
        // Added to a playing pipeline: it must not make the pipeline wait for its preroll.
        sink.set_property("async", false);
    }
    let queue = make("queue").map_err(|e| e.to_string())?;
    pipeline.add_many([&queue, sink.upcast_ref()]).map_err(|e| e.to_string())?;
    queue.link(&sink).map_err(|e| e.to_string())?;
    for element in [sink.upcast_ref(), &queue] {
        element.sync_state_with_parent().map_err(|e| e.to_string())?;
    }
    if !link_parsed_audio(pipeline, pad, &queue)? {
        for element in [sink.upcast_ref(), &queue] {
            let _ = element.set_state(gst::State::Null);
            let _ = pipeline.remove(element);
        }
        return Ok(false);
    }
    Ok(true)
}

/// The appsink of an ingest's sound: caps (when they change) and frames to the hub's audio track, `retime` mapping
/// each buffer's timestamps onto the video's timeline first (a clip's running time across loops).
fn audio_sink(
    mut hub: impl FnMut() -> Option<Arc<StreamHub>> + Send + 'static,
    sync: bool,
    mut retime: impl FnMut(&gst::Sample, &mut gst::BufferRef) + Send + 'static,
) -> gst_app::AppSink {
    let sink = gst_app::AppSink::builder().name("hub-audio").sync(sync).enable_last_sample(false).build();
    // The caps last given, and to which hub (another hub must get them too).
    let mut last_caps: Option<(gst::Caps, std::sync::Weak<StreamHub>)> = None;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(hub) = hub() else { return Ok(gst::FlowSuccess::Ok) };
                if let Some(caps) = sample.caps()
                    && last_caps.as_ref().is_none_or(|(c, h)| c != caps || h.as_ptr() != Arc::as_ptr(&hub))
                {
                    last_caps = Some((caps.to_owned(), Arc::downgrade(&hub)));
                    hub.push_audio_caps(caps.to_owned());
                }
                if let Some(mut buffer) = sample.buffer_owned() {
                    retime(&sample, buffer.make_mut());
                    hub.push_audio(buffer);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    sink
}

/// Links a new RTP pad from rtspsrc through the depayloader and parser its codec needs.
fn link_depayloader(pipeline: &gst::Pipeline, pad: &gst::Pad, sink: &gst::Element) -> Result<(), String> {
    let caps = pad.current_caps().ok_or("rtp pad without caps")?;
    let s = caps.structure(0).ok_or("empty rtp caps")?;
    let encoding = s.get::<&str>("encoding-name").unwrap_or("unknown");
    let Some(codec) = Codec::from_encoding_name(encoding) else {
        return Err(format!("unsupported video codec {encoding}: camhub ingests H.264 and H.265"));
    };
    if sink.static_pad("sink").is_some_and(|p| p.is_linked()) {
        return Err("camera offers more than one video stream; using the first".into());
    }
    let depay = make(codec.depayloader()).map_err(|e| e.to_string())?;
    let (parse, filter) = parser_to_hub(codec)?;
    let chain = [&depay, &parse, &filter];
    pipeline.add_many(chain).map_err(|e| e.to_string())?;
    gst::Element::link_many([&depay, &parse, &filter, sink]).map_err(|e| e.to_string())?;
    for element in chain {
        element.sync_state_with_parent().map_err(|e| e.to_string())?;
    }
    let depay_sink = depay.static_pad("sink").ok_or("depayloader without sink pad")?;
    pad.link(&depay_sink).map_err(|e| format!("linking rtp pad: {e:?}"))?;
    Ok(())
}
