//! V4L2 ingest: captures one device in the chosen mode with the `v4l` crate (memory-mapped buffers, on a thread of
//! its own, because the ioctls block) and feeds the frames through `appsrc ! ... ! appsink` to one camera's
//! [`StreamHub`] as H.264 access units in the form the rest of camhub expects (`avc`, parameter sets in `codec_data`
//! and before each keyframe). Devices that send H.264 pass through a parser; MJPEG is decoded and encoded; raw frames
//! are repacked to GStreamer's layout when the driver pads its lines, converted to 4:2:0 and encoded with x264 tuned
//! for latency (no B-frames, one-second GOP, constrained baseline so browsers play it).
//! Building is separate from running: the camera supervisor owns the pipeline and its bus, and the [`Capture`]
//! handle that stops the capture thread (which closes the device) at teardown. GStreamer's `v4l2src` is not used: in
//! 1.22 it is never finalised after a teardown and keeps a descriptor and its buffer pool per attempt.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use parking_lot::Mutex;
use tracing::{debug, info};
use v4l::io::traits::CaptureStream;
use v4l::video::Capture as _;

use super::ingest::hub_sink;
use super::{make, pipeline_error};
use crate::config::EncoderConfig;
use crate::devices::v4l2::{Chosen, Handling};
use crate::error::Result;
use crate::media::hub::StreamHub;

/// Buffers mapped from the driver: one being copied, the rest being filled.
const DEVICE_BUFFERS: u32 = 4;

/// How long the capture thread waits for a frame before it looks at its stop flag again.
const POLL: Duration = Duration::from_millis(200);

/// The bitrate for a picture when the config leaves it free: about 0.1 bit per pixel, within 200 kbit/s..8 Mbit/s.
pub fn auto_bitrate_kbps(width: u32, height: u32, fps: f64) -> u32 {
    let pixels_per_second = width as f64 * height as f64 * fps.max(1.0);
    ((pixels_per_second * 0.1 / 1000.0) as u32).clamp(200, 8000)
}

/// A built (not started) V4L2 ingest: the pipeline to run, and the capture that feeds it.
pub struct V4l2Ingest {
    pub pipeline: gst::Pipeline,
    pub capture: Capture,
}

/// The capture thread of one ingest. It starts at the pipeline's first need-data (the pipeline is playing) and runs
/// until [`Capture::stop`] (or drop) or until the device fails, which it reports on the pipeline's bus. Stopping
/// blocks until the thread has closed the device (up to [`POLL`]): call it off the async runtime.
pub struct Capture {
    shared: Arc<Shared>,
}

/// What the need-data callback and the handle share.
struct Shared {
    job: Job,
    /// Set once to end the thread; it checks it after every frame and every [`POLL`] without one.
    stop: Arc<AtomicBool>,
    /// The thread's state; locked only to start it or to take its handle, never while calling into GStreamer.
    thread: Mutex<Thread>,
}

enum Thread {
    NotStarted,
    Running(std::thread::JoinHandle<()>),
    Stopped,
}

/// What the capture thread needs to open and configure the device.
#[derive(Clone)]
struct Job {
    node: PathBuf,
    mode: Chosen,
    /// `v4l2-<camera id>`.
    thread_name: String,
    /// The camera's span, so the thread's log lines carry its id.
    span: tracing::Span,
}

impl Capture {
    /// Stops the capture thread and waits until it has released the device.
    pub fn stop(self) {
        // Drop does it.
    }
}

impl Shared {
    /// Starts the thread unless it ran already or the capture was stopped. Called from the appsrc's need-data.
    fn start(&self, src: &gst_app::AppSrc) {
        let mut thread = self.thread.lock();
        if !matches!(*thread, Thread::NotStarted) || self.stop.load(Ordering::SeqCst) {
            return;
        }
        let (job, stop, appsrc) = (self.job.clone(), self.stop.clone(), src.clone());
        match std::thread::Builder::new().name(job.thread_name.clone()).spawn(move || capture(&job, &appsrc, &stop)) {
            Ok(handle) => *thread = Thread::Running(handle),
            Err(e) => {
                *thread = Thread::Stopped;
                drop(thread);
                gst::element_error!(src, gst::ResourceError::Failed, ("cannot start the capture thread: {}", e));
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let thread = std::mem::replace(&mut *self.shared.thread.lock(), Thread::Stopped);
        if let Thread::Running(handle) = thread
            && handle.join().is_err()
        {
            tracing::warn!("capture thread panicked");
        }
    }
}

/// Builds (but does not start) the ingest of `node` in `mode`.
pub fn build_v4l2_ingest(
    node: &Path,
    mode: &Chosen,
    encoder: &EncoderConfig,
    hub: Arc<StreamHub>,
) -> Result<V4l2Ingest> {
    let pipeline = gst::Pipeline::with_name(&format!("ingest-{}", hub.camera_id()));
    let media_type = match mode.handling {
        Handling::H264 => "video/x-h264",
        Handling::Jpeg => "image/jpeg",
        Handling::Raw(_) => "video/x-raw",
    };
    let mut caps = gst::Caps::builder(media_type).field("width", mode.width as i32).field("height", mode.height as i32);
    match mode.handling {
        Handling::Raw(format) => caps = caps.field("format", format),
        Handling::H264 => caps = caps.field("stream-format", "byte-stream").field("alignment", "au"),
        Handling::Jpeg => {}
    }
    let (num, den) = mode.rate;
    if num > 0 {
        caps = caps.field("framerate", gst::Fraction::new(num as i32, den.max(1) as i32));
    }
    // Capture never waits for the pipeline: when it falls behind (the encoder is busy), the oldest frames are dropped
    // here. H.264 passes through and a lost frame breaks decoding until the next keyframe, so it gets more room.
    let max_buffers = if mode.handling == Handling::H264 { 30 } else { 2 };
    let src = gst_app::AppSrc::builder()
        .name("capture")
        .caps(&caps.build())
        .format(gst::Format::Time)
        .is_live(true)
        .do_timestamp(true)
        .stream_type(gst_app::AppStreamType::Stream)
        .max_buffers(max_buffers)
        .max_bytes(0)
        .block(false)
        .leaky_type(gst_app::AppLeakyType::Downstream)
        .build();
    let shared = Arc::new(Shared {
        job: Job {
            node: node.to_owned(),
            mode: mode.clone(),
            thread_name: format!("v4l2-{}", hub.camera_id()),
            span: tracing::Span::current(),
        },
        stop: Arc::new(AtomicBool::new(false)),
        thread: Mutex::new(Thread::NotStarted),
    });
    // The callback holds the shared state, not a `Capture`: only the supervisor's handle stops the thread.
    let starter = shared.clone();
    src.set_callbacks(gst_app::AppSrcCallbacks::builder().need_data(move |src, _| starter.start(src)).build());
    let capture = Capture { shared };

    let mut chain: Vec<gst::Element> = vec![src.upcast()];
    if mode.handling != Handling::H264 {
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
    Ok(V4l2Ingest { pipeline, capture })
}
/// Why the capture ended other than by being stopped; posted on the bus as the element's error.
enum Failure {
    /// The device cannot be opened or its buffers mapped (gone, busy).
    Open(io::Error),
    /// The device refuses the chosen mode.
    Settings(String),
    /// Capturing failed: unplugged, or the driver gave up.
    Read(io::Error),
}

/// The capture thread's body: stream until stopped or failed, then report a failure on the bus. The device and its
/// mapped buffers are released before this returns.
fn capture(job: &Job, src: &gst_app::AppSrc, stop: &AtomicBool) {
    let _span = job.span.enter();
    let node = job.node.display();
    match stream(job, src, stop) {
        Ok(()) => debug!("capture stopped"),
        Err(Failure::Open(e)) => {
            gst::element_error!(src, gst::ResourceError::OpenRead, ("cannot open the device: {}", e), ["{}", node]);
        }
        Err(Failure::Settings(e)) => {
            gst::element_error!(
                src,
                gst::ResourceError::Settings,
                ("the device refuses the mode: {}", e),
                ["{}", node]
            );
        }
        Err(Failure::Read(e)) => {
            gst::element_error!(src, gst::ResourceError::Read, ("cannot read from the device: {}", e), ["{}", node]);
        }
    }
}

/// Opens the device, sets the mode and pushes every frame into `src` until `stop` is set or the device fails.
fn stream(job: &Job, src: &gst_app::AppSrc, stop: &AtomicBool) -> std::result::Result<(), Failure> {
    let mode = &job.mode;
    let device = v4l::Device::with_path(&job.node).map_err(Failure::Open)?;
    let fourcc = crate::devices::v4l2::fourcc_code(&mode.format)
        .ok_or_else(|| Failure::Settings(format!("no FourCC for {}", mode.format)))?;
    let wanted = v4l::Format::new(mode.width, mode.height, v4l::FourCC::new(&fourcc));
    let format = device.set_format(&wanted).map_err(|e| Failure::Settings(e.to_string()))?;
    if format.fourcc != wanted.fourcc || (format.width, format.height) != (mode.width, mode.height) {
        return Err(Failure::Settings(format!(
            "asked for {} {}x{}, the driver set {} {}x{}",
            mode.format, mode.width, mode.height, format.fourcc, format.width, format.height
        )));
    }
    let (num, den) = mode.rate;
    if num > 0 {
        // An interval of d/n seconds is n/d frames per second. Drivers without S_PARM stream at their own rate.
        let parameters = v4l::video::capture::Parameters::new(v4l::Fraction::new(den.max(1), num));
        if let Err(e) = device.set_params(&parameters) {
            debug!(err = %e, "the device does not take a frame rate");
        }
    }
    let layout = match mode.handling {
        Handling::Raw(gst_format) => Some(
            Layout::new(gst_format, format.width, format.height, format.stride)
                .ok_or_else(|| Failure::Settings(format!("no GStreamer layout for {gst_format}")))?,
        ),
        Handling::H264 | Handling::Jpeg => None,
    };
    info!(
        format = mode.format,
        width = format.width,
        height = format.height,
        bytesperline = format.stride,
        repacked = layout.as_ref().is_some_and(|l| !l.tight),
        "capturing"
    );
    let mut stream = v4l::io::mmap::Stream::with_buffers(&device, v4l::buffer::Type::VideoCapture, DEVICE_BUFFERS)
        .map_err(Failure::Open)?;
    stream.set_timeout(POLL);
    let result = pump(&mut stream, layout.as_ref(), src, stop);
    // The crate panics when it cannot stop streaming or free the buffers for any reason but ENODEV; the buffers are
    // unmapped and the descriptor closed on the way out either way, and the attempt has ended already.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(stream))).is_err() {
        debug!("the driver refused to stop streaming");
    }
    drop(device);
    result
}

/// Where the stream stands between frames. `v4l`'s `next()` gives the previous buffer back to the driver before it
/// waits for the next one, so a wait that times out inside it leaves every buffer queued, and the next call must
/// dequeue without queueing again.
#[derive(PartialEq)]
enum Position {
    /// Not streaming yet: `next()` queues every buffer and starts.
    NotStarted,
    /// We hold the last frame's buffer; the others are being filled.
    Holding,
    /// Every buffer is queued (a wait timed out inside `next()`).
    AllQueued,
}

fn pump(
    stream: &mut v4l::io::mmap::Stream<'_>,
    layout: Option<&Layout>,
    src: &gst_app::AppSrc,
    stop: &AtomicBool,
) -> std::result::Result<(), Failure> {
    let handle = stream.handle();
    let poll_ms = POLL.as_millis() as i32;
    let mut position = Position::NotStarted;
    let again = |e: &io::Error| matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::Interrupted);
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        match position {
            Position::NotStarted => {}
            // Wait here rather than in `next()`, which would give our buffer back before a wait that may time out.
            Position::Holding => match handle.poll(libc::POLLIN, poll_ms) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(e) if again(&e) => continue,
                Err(e) => return Err(Failure::Read(e)),
            },
            // The frame in the buffer we dequeue here is lost: the crate does not show it. It happens once, when a
            // wait timed out before the first frame or the device paused.
            Position::AllQueued => {
                match stream.dequeue() {
                    Ok(_) => position = Position::Holding,
                    Err(e) if again(&e) => {}
                    Err(e) => return Err(Failure::Read(e)),
                }
                continue;
            }
        }
        let (data, meta) = match stream.next() {
            Ok(frame) => frame,
            Err(e) if again(&e) => {
                position = Position::AllQueued;
                continue;
            }
            Err(e) => return Err(Failure::Read(e)),
        };
        position = Position::Holding;
        let used = (meta.bytesused as usize).min(data.len());
        let buffer = match layout {
            Some(layout) => layout.pack(&data[..used]),
            None if used > 0 => Some(gst::Buffer::from_slice(data[..used].to_vec())),
            None => None,
        };
        let Some(buffer) = buffer else {
            debug!(bytes = used, sequence = meta.sequence, "short frame dropped");
            continue;
        };
        if src.push_buffer(buffer).is_err() {
            // Flushing or at its end: the pipeline is being torn down.
            return Ok(());
        }
    }
}

/// One plane of a raw frame: where it starts, its line length in bytes, and its number of lines.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Plane {
    offset: usize,
    stride: usize,
    rows: usize,
}

/// How a raw frame lies in the driver's buffer, and the layout GStreamer assumes for its caps (no video meta).
struct Layout {
    info: gst_video::VideoInfo,
    /// The driver's planes, in memory order; V4L2 single-buffer formats put the planes one after the other, the
    /// chroma lines of planar 4:2:x formats half as long as `bytesperline`.
    planes: Vec<Plane>,
    /// The driver's layout is GStreamer's: frames are copied as they are.
    tight: bool,
}

impl Layout {
    fn new(gst_format: &str, width: u32, height: u32, bytesperline: u32) -> Option<Layout> {
        let format = gst_video::VideoFormat::from_string(gst_format);
        let info = gst_video::VideoInfo::builder(format, width, height).build().ok()?;
        // A driver that reports no line length packs its lines.
        let s = if bytesperline == 0 { info.stride()[0] as usize } else { bytesperline as usize };
        let h = height as usize;
        let half = h.div_ceil(2);
        let plane = |offset, stride, rows| Plane { offset, stride, rows };
        let planes = match gst_format {
            "NV12" | "NV21" => vec![plane(0, s, h), plane(s * h, s, half)],
            "NV16" => vec![plane(0, s, h), plane(s * h, s, h)],
            "I420" | "YV12" => {
                vec![plane(0, s, h), plane(s * h, s / 2, half), plane(s * h + s / 2 * half, s / 2, half)]
            }
            "Y42B" => vec![plane(0, s, h), plane(s * h, s / 2, h), plane(s * h + s / 2 * h, s / 2, h)],
            _ => vec![plane(0, s, h)],
        };
        if planes.len() != info.n_planes() as usize {
            return None;
        }
        let tight = planes
            .iter()
            .enumerate()
            .all(|(p, plane)| plane.offset == info.offset()[p] && plane.stride == info.stride()[p] as usize);
        Some(Layout { info, planes, tight })
    }

    /// Bytes a whole frame takes in the driver's buffer.
    fn source_size(&self) -> usize {
        self.planes.last().map_or(0, |p| p.offset + p.stride * p.rows)
    }

    /// The frame as a buffer in GStreamer's layout; `None` for a short frame.
    fn pack(&self, frame: &[u8]) -> Option<gst::Buffer> {
        let size = self.info.size();
        if self.tight {
            return frame.get(..size).map(|whole| gst::Buffer::from_slice(whole.to_vec()));
        }
        if frame.len() < self.source_size() {
            return None;
        }
        let mut packed = vec![0u8; size];
        for (p, plane) in self.planes.iter().enumerate() {
            let (offset, stride) = (self.info.offset()[p], self.info.stride()[p] as usize);
            let length = plane.stride.min(stride);
            for row in 0..plane.rows {
                let from = frame.get(plane.offset + row * plane.stride..)?.get(..length)?;
                packed.get_mut(offset + row * stride..)?.get_mut(..length)?.copy_from_slice(from);
            }
        }
        Some(gst::Buffer::from_slice(packed))
    }
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

    fn layout(format: &str, width: u32, height: u32, bytesperline: u32) -> Layout {
        gst::init().expect("gstreamer initialises");
        Layout::new(format, width, height, bytesperline).expect("a layout")
    }

    fn bytes(buffer: &gst::Buffer) -> Vec<u8> {
        buffer.map_readable().expect("readable").to_vec()
    }

    #[test]
    fn tightly_packed_frames_are_copied_as_they_are() {
        for (format, bytesperline) in [("YUY2", 1280), ("NV12", 640), ("I420", 640), ("YV12", 640), ("RGB", 1920)] {
            let l = layout(format, 640, 480, bytesperline);
            assert!(l.tight, "{format}");
            assert_eq!(l.source_size(), l.info.size(), "{format}");
        }
        let l = layout("YUY2", 4, 2, 8);
        let frame: Vec<u8> = (0..16).collect();
        assert_eq!(bytes(&l.pack(&frame).expect("a whole frame")), frame);
        assert!(l.pack(&frame[..15]).is_none(), "a short frame is dropped");
    }

    #[test]
    fn padded_lines_are_repacked_plane_by_plane() {
        // YUYV 4x2 with lines padded to 12 bytes (8 used).
        let l = layout("YUY2", 4, 2, 12);
        assert!(!l.tight);
        let frame: Vec<u8> = (0..24).collect();
        let expected: Vec<u8> = (0..8).chain(12..20).collect();
        assert_eq!(bytes(&l.pack(&frame).expect("a whole frame")), expected);

        // I420 8x2 with 16-byte luma lines (8-byte chroma lines): GStreamer wants 8 + 4 + 4 per line pair.
        let l = layout("I420", 8, 2, 16);
        assert!(!l.tight);
        assert_eq!(
            l.planes,
            vec![
                Plane { offset: 0, stride: 16, rows: 2 },
                Plane { offset: 32, stride: 8, rows: 1 },
                Plane { offset: 40, stride: 8, rows: 1 }
            ]
        );
        let frame: Vec<u8> = (0..48).collect();
        let packed = bytes(&l.pack(&frame).expect("a whole frame"));
        let expected: Vec<u8> = (0..8).chain(16..24).chain(32..36).chain(40..44).collect();
        assert_eq!(packed, expected);

        // NV12 8x2 with 16-byte lines: the interleaved chroma plane keeps the luma line length.
        let l = layout("NV12", 8, 2, 16);
        let packed = bytes(&l.pack(&(0..48).collect::<Vec<u8>>()).expect("a whole frame"));
        let expected: Vec<u8> = (0..8).chain(16..24).chain(32..40).collect();
        assert_eq!(packed, expected);
    }

    #[test]
    fn automatic_bitrate_scales_with_the_picture_and_stays_bounded() {
        assert_eq!(auto_bitrate_kbps(640, 480, 30.0), 921);
        assert_eq!(auto_bitrate_kbps(160, 120, 5.0), 200);
        assert_eq!(auto_bitrate_kbps(3840, 2160, 60.0), 8000);
    }
}
