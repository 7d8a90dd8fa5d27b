//! RTSP ingest with the `retina` client (the default): DESCRIBE, SETUP the first H.264/H.265 video stream over TCP,
//! PLAY, then each depacketized frame goes straight into the camera's hub as a `gst::Buffer` (length-prefixed NAL
//! units, parameter sets also in the caps' `codec_data`). No GStreamer pipeline runs per camera for ingest: one async
//! task per camera, which is what makes ingest cheap. The GStreamer path (`ingest`) remains as an alternative.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use gstreamer as gst;
use retina::client::{Credentials, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport};
use retina::codec::{CodecItem, FrameFormat, ParameterSetInsertion, ParametersRef, VideoParameters};

use crate::base::url::{credentials, strip_credentials};
use crate::base::{Codec, Failure};
use crate::media::hub::StreamHub;

/// A failure of the RTSP session: a refusal of our credentials (401, 403) is not fixed by retrying soon.
fn from_retina(e: retina::Error) -> Failure {
    match e.status_code() {
        Some(401 | 403) => Failure::refused(e.to_string()),
        _ => Failure::retry(e.to_string()),
    }
}

/// How often a camera's connection is read: the latency this adds is at most one interval.
const PACE: Duration = Duration::from_millis(20);

/// The frame layout the hub carries: what MP4 stores, plus parameter sets before each keyframe so any keyframe is a
/// clean entry point for a decoder.
const FRAME_FORMAT: FrameFormat = FrameFormat {
    h26x_framing: retina::codec::h26x::Framing::FourByteLength,
    parameter_set_insertion: ParameterSetInsertion::EachKeyFrame,
    aac_framing: retina::codec::aac::Framing::Raw,
};

/// Connects to `url` and feeds `hub` until the connection fails or the stream ends. Returns why it ended.
pub async fn run(url: &url::Url, hub: &StreamHub, connect_timeout: Duration) -> Failure {
    let clean = strip_credentials(url);
    let creds = credentials(url).map(|(username, password)| Credentials { username, password });
    let options =
        SessionOptions::default().creds(creds).user_agent(format!("{}/{}", crate::base::NAME, crate::base::VERSION));

    let connect = async {
        let mut session = Session::describe(clean, options).await.map_err(from_retina)?;
        let index = session
            .streams()
            .iter()
            .position(|s| s.media() == "video" && Codec::from_encoding_name(s.encoding_name()).is_some())
            .ok_or_else(|| Failure::unsupported("the camera offers no H.264 or H.265 video stream"))?;
        let setup = SetupOptions::default()
            .transport(Transport::Tcp(TcpTransportOptions::default()))
            .frame_format(FRAME_FORMAT);
        session.setup(index, setup).await.map_err(from_retina)?;
        let playing = session.play(PlayOptions::default()).await.map_err(from_retina)?;
        let demuxed = playing.demuxed().map_err(from_retina)?;
        Ok::<_, Failure>((demuxed, index))
    };
    let (mut demuxed, index) = match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(d)) => d,
        Ok(Err(f)) => return f,
        Err(_) => return Failure::retry(format!("no answer within {} ms", connect_timeout.as_millis())),
    };

    let mut have_caps = false;
    loop {
        // Read what has arrived; when nothing is ready, wait for the next pacing tick rather than for the socket, so
        // a camera costs tens of wake-ups a second instead of one per TCP segment. The socket buffers the interval.
        let item = match demuxed.next().now_or_never() {
            None => {
                crate::media::pace(PACE).await;
                continue;
            }
            Some(None) => return Failure::retry("end of stream"),
            Some(Some(Err(e))) => return from_retina(e),
            Some(Some(Ok(item))) => item,
        };
        let CodecItem::VideoFrame(frame) = item else { continue };
        if frame.stream_id() != index {
            continue;
        }
        if !have_caps || frame.has_new_parameters() {
            if let Some(ParametersRef::Video(params)) = demuxed.streams()[index].parameters() {
                hub.push_caps(caps(demuxed.streams()[index].encoding_name(), params));
                have_caps = true;
            } else {
                continue;
            }
        }
        let timestamp = frame.timestamp();
        let keyframe = frame.is_random_access_point();
        let mut buffer = gst::Buffer::from_mut_slice(frame.into_data());
        {
            let b = buffer.get_mut().expect("a new buffer is writable");
            let clock = i128::from(timestamp.clock_rate().get());
            let nanos = i128::from(timestamp.elapsed()).max(0) * 1_000_000_000 / clock;
            b.set_pts(gst::ClockTime::from_nseconds(nanos as u64));
            if !keyframe {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        hub.push(buffer);
    }
}

/// The caps of a stream, as the GStreamer parsers would describe it.
fn caps(encoding: &str, params: &VideoParameters) -> gst::Caps {
    // The stream was chosen for its codec, so the name is known.
    let codec = Codec::from_encoding_name(encoding).unwrap_or(Codec::H264);
    let (width, height) = params.pixel_dimensions();
    let mut builder = gst::Caps::builder(codec.media_type())
        .field("stream-format", codec.stream_format())
        .field("alignment", "au")
        .field("codec_data", gst::Buffer::from_slice(params.extra_data().to_vec()))
        .field("width", width as i32)
        .field("height", height as i32);
    if let Some((num, den)) = params.frame_rate()
        && num > 0
        && den > 0
    {
        // retina gives the frame duration as a fraction of a second: frames per second is its inverse.
        builder = builder.field("framerate", gst::Fraction::new(den as i32, num as i32));
    }
    builder.build()
}
