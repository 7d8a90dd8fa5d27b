//! The test camera: a real RTSP server (gst-rtsp-server) serving `rtsp://HOST:PORT/cam0` .. `camN-1`, each H.264 with
//! a wall clock and a frame counter burnt in and a GOP of about one second. It either encodes live (one encoder per
//! camera, shared by all its readers) or loops a clip held in memory (a file, or a few seconds encoded once at start),
//! which costs almost nothing per camera and so serves benchmarks of 50 streams. People test their setups with it;
//! our tests and benchmarks treat it as the camera. A live camera can show a photo over its pattern (`--image`),
//! always or on a schedule (absent for a while, then present), so detection has a real object to find and lose.
//! A live camera can send sound too (`--audio aac|pcmu|pcma`): a quiet tone with a loud burst at each whole second,
//! while the picture shows a white square at the same instants, so A/V sync can be measured from what is recorded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;
use tracing::{debug, info};

use crate::base::AudioCodec;
use crate::error::{Dependency, Error, Result};

#[derive(Debug, Clone)]
pub struct TestCamSettings {
    /// `IP:PORT`; port 0 picks a free port (see [`TestCam::port`]).
    pub listen: std::net::SocketAddr,
    pub cameras: usize,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Frames between keyframes; `None` means one second's worth.
    pub gop: Option<u32>,
    pub bitrate_kbps: u32,
    /// videotestsrc pattern: `ball` (default, cheap to encode) or e.g. `snow` (noise: every frame costs its bitrate).
    pub pattern: String,
    pub source: TestCamSource,
    /// A photo shown over the picture (letterboxed to it), live cameras only.
    pub image: Option<Image>,
    /// Another path `cam0` is served at (such as `/stream1`, one of the paths network discovery tries).
    pub also_at: Option<String>,
    /// A sound track in this codec (live cameras only), and the per-second marks in sound and picture.
    pub audio: Option<AudioCodec>,
    /// Live cameras only: the picture's size switches between full and half every this long, mid-stream (a camera
    /// whose resolution changes under its readers: new parameter sets in the stream, none in the SDP).
    pub resize_every: Option<Duration>,
    /// Live cameras only: each frame carries the wall-clock time it was made at, in blocks (`CLOCK_BLOCK`), for
    /// glass-to-glass latency measured by whoever decodes it (`scripts/bench/hls.sh`).
    pub clock_blocks: bool,
}

/// A photo over a live camera's picture.
#[derive(Debug, Clone)]
pub struct Image {
    pub path: PathBuf,
    /// `(absent, present)`: hidden for the first, then shown for the second, in turn from the media's start;
    /// `None` shows it all the time.
    pub schedule: Option<(Duration, Duration)>,
}

#[derive(Debug, Clone)]
pub enum TestCamSource {
    /// Encode live, per camera: the overlay shows real time.
    Live,
    /// Encode this many seconds once at start and loop them: cheap enough for dozens of cameras.
    Loop { seconds: u32 },
    /// Loop the H.264/H.265 video of an MP4 or MKV file.
    File(PathBuf),
}

impl Default for TestCamSettings {
    fn default() -> Self {
        TestCamSettings {
            listen: "127.0.0.1:8654".parse().expect("literal address"),
            cameras: 1,
            width: 1280,
            height: 720,
            fps: 30,
            gop: None,
            bitrate_kbps: 2000,
            pattern: "ball".into(),
            source: TestCamSource::Live,
            image: None,
            also_at: None,
            audio: None,
            resize_every: None,
            clock_blocks: false,
        }
    }
}

/// A running test camera; dropping it stops the server.
pub struct TestCam {
    main_loop: gst::glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
    port: u16,
}

impl TestCam {
    /// Starts the server on its own GLib main-context thread and returns once it listens.
    pub fn start(settings: TestCamSettings) -> Result<TestCam> {
        crate::media::init()?;
        if settings.cameras == 0 || settings.cameras > 1000 {
            return Err(Error::invalid_param("cameras", "must be between 1 and 1000"));
        }
        if !settings.pattern.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::invalid_param("pattern", "a videotestsrc pattern name"));
        }
        if settings.fps == 0 || settings.width < 16 || settings.height < 16 {
            return Err(Error::invalid_param("size/fps", "width and height at least 16, fps at least 1"));
        }
        if let Some(path) = &settings.also_at
            && (!path.starts_with('/') || path.len() < 2 || path.contains(char::is_whitespace))
        {
            return Err(Error::invalid_param("also_at", "a path such as /stream1"));
        }
        if let Some(image) = &settings.image {
            if !matches!(settings.source, TestCamSource::Live) {
                return Err(Error::invalid_param("image", "only a live test camera shows an image"));
            }
            if !image.path.is_file() {
                return Err(Error::invalid_param("image", format!("{} is not a readable file", image.path.display())));
            }
        }
        if settings.resize_every.is_some()
            && (!matches!(settings.source, TestCamSource::Live) || settings.image.is_some())
        {
            return Err(Error::invalid_param("resize_every", "only a live test camera without an image resizes"));
        }
        if settings.clock_blocks && !matches!(settings.source, TestCamSource::Live) {
            return Err(Error::invalid_param("clock_blocks", "only a live test camera draws the clock"));
        }
        if let Some(codec) = settings.audio {
            if !matches!(settings.source, TestCamSource::Live) {
                return Err(Error::invalid_param("audio", "only a live test camera sends sound"));
            }
            for element in [audio_encoder(codec).0, codec.payloader()] {
                if gst::ElementFactory::find(element).is_none() {
                    return Err(Error::invalid_param("audio", format!("element {element} is missing")));
                }
            }
        }
        let clip = match &settings.source {
            TestCamSource::Live => None,
            TestCamSource::Loop { seconds } => Some(Arc::new(encode_clip(&settings, *seconds)?)),
            TestCamSource::File(path) => Some(Arc::new(load_clip(path)?)),
        };
        let context = gst::glib::MainContext::new();
        let main_loop = gst::glib::MainLoop::new(Some(&context), false);
        let server = rtsp::RTSPServer::new();
        server.set_address(&settings.listen.ip().to_string());
        server.set_service(&settings.listen.port().to_string());
        let mounts = server.mount_points().ok_or_else(|| Error::internal("rtsp server has no mount points"))?;
        let factory_for = |i: usize| {
            let factory = rtsp::RTSPMediaFactory::new();
            factory.set_shared(true);
            match &clip {
                None => {
                    factory.set_launch(&live_launch(&settings, i));
                    let schedule = settings.image.as_ref().and_then(|i| i.schedule);
                    let marked = settings.audio.is_some();
                    let clock = settings.clock_blocks;
                    let resize = settings.resize_every.map(|every| (every, settings.width, settings.height));
                    factory.connect_media_configure(move |_, media| {
                        refuse_seeking(media);
                        if let Some(resize) = resize {
                            resize_on_schedule(media, resize);
                        }
                        if let Some(schedule) = schedule {
                            show_on_schedule(media, schedule);
                        }
                        if marked {
                            mark_seconds(media);
                        }
                        if clock {
                            draw_clock(media);
                        }
                    });
                }
                Some(clip) => {
                    factory.set_launch(&format!(
                        "( appsrc name=src is-live=true format=time ! {} ! {} name=pay0 pt=96 config-interval=0 )",
                        clip.parser, clip.payloader
                    ));
                    let clip = clip.clone();
                    factory.connect_media_configure(move |_, media| feed_clip(media, clip.clone()));
                }
            }
            factory
        };
        for i in 0..settings.cameras {
            mounts.add_factory(&format!("/cam{i}"), factory_for(i));
        }
        if let Some(path) = &settings.also_at {
            mounts.add_factory(path, factory_for(0));
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_loop = main_loop.clone();
        let thread = std::thread::Builder::new()
            .name("testcam".into())
            .spawn(move || {
                let guard = match context.acquire() {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                match server.attach(Some(&context)) {
                    Ok(_source) => {
                        let _ = ready_tx.send(Ok(server.bound_port()));
                        thread_loop.run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
                drop(guard);
            })
            .map_err(Error::internal)?;
        let port = crate::media::bound_port(&ready_rx, settings.listen)?;
        info!(port, cameras = settings.cameras, "test camera serving");
        Ok(TestCam { main_loop, thread: Some(thread), port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TestCam {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn gop(settings: &TestCamSettings) -> u32 {
    settings.gop.unwrap_or(settings.fps).max(1)
}

/// The raw picture: moving ball (with the photo over it, if any), camera name and frame counter (a time code
/// HH:MM:SS:FF from timecodestamper) top left, wall clock top right.
fn raw_source(settings: &TestCamSettings, index: usize, live: bool) -> String {
    // Marked seconds and the clock are painted on I420 (`mark_seconds`, `draw_clock`).
    let format = if settings.audio.is_some() || settings.clock_blocks { ",format=I420" } else { "" };
    let caps = format!(
        "video/x-raw,width={w},height={h},framerate={fps}/1{format}",
        w = settings.width,
        h = settings.height,
        fps = settings.fps
    );
    // A picture that changes size has its caps in a named capsfilter, which `resize_on_schedule` sets.
    let caps = if settings.resize_every.is_some() { format!("capsfilter name=size caps=\"{caps}\"") } else { caps };
    let pattern = format!(
        "videotestsrc name=pattern is-live={live} pattern={pattern} background-color=0xff204060 ! {caps}",
        pattern = settings.pattern,
    );
    // The photo is scaled into the picture with its aspect kept (black bands), frozen into a live stream, and laid
    // over the pattern; its pad's alpha hides and shows it.
    let picture = match &settings.image {
        None => pattern,
        Some(image) => format!(
            "compositor name=mix background=black \
             {pattern} ! mix.sink_0 \
             filesrc location=\"{path}\" ! decodebin ! videoconvert ! videoscale add-borders=true ! \
             video/x-raw,width={w},height={h},pixel-aspect-ratio=1/1 ! imagefreeze is-live=true ! \
             video/x-raw,framerate={fps}/1 ! mix.sink_1 \
             mix. ! video/x-raw,width={w},height={h},framerate={fps}/1",
            w = settings.width,
            h = settings.height,
            fps = settings.fps,
            path = image.path.display(),
        ),
    };
    format!(
        "{picture} ! \
         timecodestamper ! \
         timeoverlay time-mode=time-code halignment=left valignment=top font-desc=\"Sans 24\" text=\"cam{index} frame\" ! \
         clockoverlay halignment=right valignment=top time-format=\"%H:%M:%S\" font-desc=\"Sans 24\""
    )
}

/// Hides and shows the photo of a new shared media in turn, from a thread of its own, until the media goes away.
fn show_on_schedule(media: &rtsp::RTSPMedia, (absent, present): (Duration, Duration)) {
    let Some(pad) = media
        .element()
        .downcast::<gst::Bin>()
        .ok()
        .and_then(|bin| bin.by_name("mix"))
        .and_then(|mix| mix.static_pad("sink_1"))
    else {
        return;
    };
    pad.set_property("alpha", 0.0f64);
    let pad = pad.downgrade();
    let spawned = std::thread::Builder::new().name("testcam-image".into()).spawn(move || {
        loop {
            for (wait, alpha) in [(absent, 1.0f64), (present, 0.0)] {
                std::thread::sleep(wait);
                let Some(pad) = pad.upgrade() else { return };
                // A pad whose element has left its bin belongs to a media that has ended.
                if pad.parent_element().and_then(|e| e.parent()).is_none() {
                    return;
                }
                pad.set_property("alpha", alpha);
                debug!(shown = alpha > 0.0, "test camera image");
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(err = %e, "cannot start the image schedule");
    }
}

/// Switches a new shared media's picture between full and half size every `every`, from a thread of its own, until
/// the media goes away: the encoder starts again at the new size with new parameter sets and a keyframe.
fn resize_on_schedule(media: &rtsp::RTSPMedia, (every, width, height): (Duration, u32, u32)) {
    let Some(filter) = media.element().downcast::<gst::Bin>().ok().and_then(|bin| bin.by_name("size")) else {
        return;
    };
    let filter = filter.downgrade();
    let spawned = std::thread::Builder::new().name("testcam-resize".into()).spawn(move || {
        for half in [true, false].into_iter().cycle() {
            std::thread::sleep(every);
            let Some(filter) = filter.upgrade() else { return };
            if filter.parent().is_none() {
                return;
            }
            let (w, h) = if half { (width / 2, height / 2) } else { (width, height) };
            let mut caps = filter.property::<gst::Caps>("caps");
            if let Some(s) = caps.make_mut().structure_mut(0) {
                s.set("width", w as i32);
                s.set("height", h as i32);
            }
            filter.set_property("caps", caps);
            debug!(width = w, height = h, "test camera resized");
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(err = %e, "cannot start the resize schedule");
    }
}

fn encoder(settings: &TestCamSettings) -> String {
    format!(
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbps} ! video/x-h264,profile=constrained-baseline",
        gop = gop(settings),
        kbps = settings.bitrate_kbps,
    )
}

/// The payloader inserts no parameter sets of its own (`config-interval=0`), here and for clips: x264 writes them
/// before every keyframe (a clip's come from `h264parse config-interval=-1`), and rtph264pay's "-1" would repeat them
/// before each IDR slice (x264's sliced threads make two or more per keyframe), which FFmpeg reads as two frames with
/// one timestamp ("non monotonically increasing dts").
fn live_launch(settings: &TestCamSettings, index: usize) -> String {
    let sound = settings.audio.map(audio_launch).unwrap_or_default();
    format!(
        "( {} ! {} ! rtph264pay name=pay0 pt=96 config-interval=0 {sound} )",
        raw_source(settings, index, true),
        encoder(settings)
    )
}

/// The encoder of a test camera's sound, and the sample rate it is fed.
fn audio_encoder(codec: AudioCodec) -> (&'static str, u32) {
    match codec {
        AudioCodec::Aac => ("avenc_aac", 48000),
        AudioCodec::Pcmu => ("mulawenc", 8000),
        AudioCodec::Pcma => ("alawenc", 8000),
        AudioCodec::Opus => ("opusenc", 48000),
    }
}

/// The sound: a quiet 440 Hz tone in 20 ms buffers (the bursts are written into it by `mark_seconds`), encoded and
/// payloaded as the second stream.
fn audio_launch(codec: AudioCodec) -> String {
    let (encoder, rate) = audio_encoder(codec);
    format!(
        "audiotestsrc name=tone is-live=true freq=440 volume=0.1 samplesperbuffer={samples} ! \
         audio/x-raw,format=S16LE,layout=interleaved,rate={rate},channels=1 ! audioconvert ! {encoder} ! \
         {pay} name=pay1 pt=97",
        samples = rate / 50,
        pay = codec.payloader(),
    )
}

/// How long the burst at each second lasts.
const BURST: gst::ClockTime = gst::ClockTime::from_mseconds(50);

/// Marks each whole second of a new live media, from the buffers' own timestamps (one clock for both): the first
/// frame at or after it gets a white square at the bottom left, and the sound a loud 1 kHz burst for its first 50 ms.
fn mark_seconds(media: &rtsp::RTSPMedia) {
    let Ok(bin) = media.element().downcast::<gst::Bin>() else { return };
    if let Some(pad) = bin.by_name("pattern").and_then(|e| e.static_pad("src")) {
        pad.add_probe(gst::PadProbeType::BUFFER, |pad, info| {
            let info_of = pad.current_caps().and_then(|c| gstreamer_video::VideoInfo::from_caps(&c).ok());
            if let (Some(video), Some(buffer)) = (info_of, info.buffer_mut()) {
                paint_square(video, buffer.make_mut());
            }
            gst::PadProbeReturn::Ok
        });
    }
    if let Some(pad) = bin.by_name("tone").and_then(|e| e.static_pad("src")) {
        pad.add_probe(gst::PadProbeType::BUFFER, |pad, info| {
            let rate = pad.current_caps().and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("rate").ok()));
            if let (Some(rate), Some(buffer)) = (rate, info.buffer_mut()) {
                write_burst(rate.max(1) as u64, buffer.make_mut());
            }
            gst::PadProbeReturn::Ok
        });
    }
}

/// The side of a clock block, in pixels.
pub const CLOCK_BLOCK: usize = 16;

/// Draws the wall-clock time each frame is made at onto it (`draw_clock_blocks`).
fn draw_clock(media: &rtsp::RTSPMedia) {
    let Ok(bin) = media.element().downcast::<gst::Bin>() else { return };
    let Some(pad) = bin.by_name("pattern").and_then(|e| e.static_pad("src")) else { return };
    pad.add_probe(gst::PadProbeType::BUFFER, |pad, info| {
        let info_of = pad.current_caps().and_then(|c| gstreamer_video::VideoInfo::from_caps(&c).ok());
        if let (Some(video), Some(buffer)) = (info_of, info.buffer_mut()) {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            draw_clock_blocks(video, buffer.make_mut(), now.as_millis() as u32);
        }
        gst::PadProbeReturn::Ok
    });
}

/// 40 bits along the bottom of the picture, `CLOCK_BLOCK` pixels square, left to right then the next row up: the
/// low 32 bits of Unix milliseconds (most significant first), then their four bytes XORed (a check); black (luma
/// 16) for 0, white (235) for 1 (I420).
fn draw_clock_blocks(video: gstreamer_video::VideoInfo, buffer: &mut gst::BufferRef, millis: u32) {
    use gstreamer_video::prelude::*;
    let (width, height) = (video.width() as usize, video.height() as usize);
    let per_row = width / CLOCK_BLOCK;
    if per_row == 0 {
        return;
    }
    let check = millis.to_be_bytes().iter().fold(0u8, |a, b| a ^ b);
    let bits = (u64::from(millis) << 8) | u64::from(check);
    let Ok(mut frame) = gstreamer_video::VideoFrameRef::from_buffer_ref_writable(buffer, &video) else { return };
    let stride = frame.plane_stride()[0] as usize;
    let Ok(luma) = frame.plane_data_mut(0) else { return };
    for i in 0..40 {
        let (row, col) = (i / per_row, i % per_row);
        let Some(top) = height.checked_sub((row + 1) * CLOCK_BLOCK) else { return };
        let value = if (bits >> (39 - i)) & 1 == 1 { 235 } else { 16 };
        for y in top..top + CLOCK_BLOCK {
            let start = y * stride + col * CLOCK_BLOCK;
            luma[start..start + CLOCK_BLOCK].fill(value);
        }
    }
}

/// A white square (a quarter of the height) at the bottom left of the first frame of each second (I420).
fn paint_square(video: gstreamer_video::VideoInfo, buffer: &mut gst::BufferRef) {
    use gstreamer_video::prelude::*;
    let fps = video.fps();
    let Some(pts) = buffer.pts() else { return };
    let spacing = gst::ClockTime::SECOND.mul_div_floor(fps.denom() as u64, fps.numer().max(1) as u64);
    if spacing.is_none_or(|spacing| pts.nseconds() % gst::ClockTime::SECOND.nseconds() >= spacing.nseconds()) {
        return;
    }
    let (width, height) = (video.width() as usize, video.height() as usize);
    let Ok(mut frame) = gstreamer_video::VideoFrameRef::from_buffer_ref_writable(buffer, &video) else { return };
    let stride = frame.plane_stride()[0] as usize;
    let Ok(luma) = frame.plane_data_mut(0) else { return };
    let side = height / 4;
    for row in height - side..height {
        luma[row * stride..row * stride + side.min(width)].fill(235);
    }
}

/// A loud 1 kHz burst over the tone for `BURST` from each whole second (S16LE, mono).
fn write_burst(rate: u64, buffer: &mut gst::BufferRef) {
    let Some(pts) = buffer.pts() else { return };
    let Ok(mut map) = buffer.map_writable() else { return };
    for (i, sample) in map.chunks_exact_mut(2).enumerate() {
        let t = pts.nseconds() + i as u64 * 1_000_000_000 / rate;
        let into_second = t % 1_000_000_000;
        if into_second < BURST.nseconds() {
            let phase = 2.0 * std::f64::consts::PI * 1000.0 * into_second as f64 / 1e9;
            let value = (0.8 * f64::from(i16::MAX) * phase.sin()) as i16;
            sample.copy_from_slice(&value.to_le_bytes());
        }
    }
}

/// Makes a live camera's media answer that it cannot seek. gst-rtsp-server seeks a seekable media to the Range of each
/// PLAY (FFmpeg always sends `npt=0.000-`), and the live pipeline is shared: every new reader restarted the timestamps
/// of all readers already watching, so theirs went back in time, which a real camera's never do. A clip's `appsrc` is
/// not seekable anyway.
fn refuse_seeking(media: &rtsp::RTSPMedia) {
    let Some(pad) = media
        .element()
        .downcast::<gst::Bin>()
        .ok()
        .and_then(|bin| bin.by_name("pay0"))
        .and_then(|pay| pay.static_pad("src"))
    else {
        return;
    };
    pad.add_probe(gst::PadProbeType::QUERY_UPSTREAM, |_, info| {
        if let Some(query) = info.query_mut()
            && let gst::QueryViewMut::Seeking(q) = query.view_mut()
        {
            let format = q.format();
            q.set(
                false,
                gst::GenericFormattedValue::none_for_format(format),
                gst::GenericFormattedValue::none_for_format(format),
            );
            return gst::PadProbeReturn::Handled;
        }
        gst::PadProbeReturn::Ok
    });
}

/// Encoded access units held in memory and looped.
struct Clip {
    frames: Vec<gst::Buffer>,
    caps: gst::Caps,
    frame_duration: Duration,
    parser: &'static str,
    payloader: &'static str,
}

/// Encodes `seconds` of the test picture once.
fn encode_clip(settings: &TestCamSettings, seconds: u32) -> Result<Clip> {
    let frames = settings.fps * seconds.max(1);
    let launch = format!(
        "{} ! {} ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=out sync=false",
        raw_source(settings, 0, false).replacen("videotestsrc", &format!("videotestsrc num-buffers={frames}"), 1),
        encoder(settings)
    );
    collect_clip(&launch)
}

/// Reads the video of an MP4/MKV file into memory.
fn load_clip(path: &std::path::Path) -> Result<Clip> {
    if !path.is_file() {
        return Err(Error::invalid_param("file", format!("{} is not a readable file", path.display())));
    }
    let location = path.to_string_lossy().replace('"', "\\\"");
    let launch = format!(
        "filesrc location=\"{location}\" ! parsebin ! video/x-h264 ! h264parse config-interval=-1 ! \
         video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=out sync=false"
    );
    collect_clip(&launch)
}

fn collect_clip(launch: &str) -> Result<Clip> {
    let fail = |detail: String| Error::dependency(Dependency::MediaPipeline, format!("test camera clip: {detail}"));
    let pipeline = gst::parse::launch(launch).map_err(|e| fail(e.to_string()))?;
    let bin = pipeline.clone().downcast::<gst::Bin>().map_err(|_| fail("not a bin".into()))?;
    let sink = bin
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| fail("no appsink".into()))?;
    pipeline.set_state(gst::State::Playing).map_err(|e| fail(e.to_string()))?;
    let mut frames = Vec::new();
    let mut caps = None;
    let mut durations = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        if caps.is_none() {
            caps = sample.caps_owned();
        }
        if let Some(b) = sample.buffer_owned() {
            if let Some(d) = b.duration() {
                durations.push(d.nseconds());
            }
            frames.push(b);
        }
    }
    let error = pipeline.bus().and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]));
    let _ = pipeline.set_state(gst::State::Null);
    if let Some(msg) = error
        && let gst::MessageView::Error(e) = msg.view()
    {
        return Err(fail(e.error().to_string()));
    }
    let caps = caps.ok_or_else(|| fail("no H.264 video found".into()))?;
    let fps = caps
        .structure(0)
        .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
        .filter(|f| f.numer() > 0 && f.denom() > 0);
    let frame_duration = match (fps, durations.is_empty()) {
        (Some(f), _) => Duration::from_secs_f64(f.denom() as f64 / f.numer() as f64),
        (None, false) => Duration::from_nanos(durations.iter().sum::<u64>() / durations.len() as u64),
        (None, true) => Duration::from_millis(33),
    };
    if frames.is_empty() {
        return Err(fail("clip has no frames".into()));
    }
    debug!(frames = frames.len(), "clip loaded");
    Ok(Clip { frames, caps, frame_duration, parser: "h264parse", payloader: "rtph264pay" })
}

/// Feeds a clip into a new shared media's appsrc from a pacing thread, until the media goes away.
fn feed_clip(media: &rtsp::RTSPMedia, clip: Arc<Clip>) {
    let Some(src) = media
        .element()
        .downcast::<gst::Bin>()
        .ok()
        .and_then(|bin| bin.by_name("src"))
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
    else {
        return;
    };
    src.set_caps(Some(&clip.caps));
    src.set_max_bytes(4 * 1024 * 1024);
    let spawned = std::thread::Builder::new().name("testcam-feed".into()).spawn(move || {
        // Frames are stamped as a camera's clock would: the running time of the first, then exactly one frame
        // interval apart, however late a loaded machine wakes this thread (a player then sees an even frame rate,
        // and a recording's timestamps show a frame lost downstream as a hole).
        let waited = Instant::now();
        let base = loop {
            match src.current_running_time() {
                Some(t) => break t,
                None if waited.elapsed() < Duration::from_secs(5) => std::thread::sleep(Duration::from_millis(5)),
                None => break gst::ClockTime::ZERO,
            }
        };
        let start = Instant::now();
        // Start at a keyframe (the clip's first frame is one) and loop forever at the clip's frame rate.
        for (n, buffer) in clip.frames.iter().cycle().enumerate() {
            let offset = clip.frame_duration * n as u32;
            if let Some(wait) = (start + offset).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut b = buffer.copy();
            {
                let b = b.make_mut();
                let at = base + gst::ClockTime::from_nseconds(offset.as_nanos() as u64);
                b.set_pts(at);
                b.set_dts(at);
            }
            if src.push_buffer(b).is_err() {
                break;
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(err = %e, "cannot start clip feeder");
    }
}
