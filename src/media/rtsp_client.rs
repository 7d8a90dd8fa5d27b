//! RTSP ingest with the `retina` client (the default): DESCRIBE, SETUP the first H.264/H.265 video stream over TCP
//! (and the first audio stream, when it is AAC or G.711), PLAY, then each depacketized frame goes straight into the
//! camera's hub as a `gst::Buffer` (length-prefixed NAL units, parameter sets also in the caps' `codec_data`; raw AAC
//! access units with the AudioSpecificConfig in theirs; G.711 samples). No GStreamer pipeline runs per camera for
//! ingest: one async task per camera, which is what makes ingest cheap. The GStreamer path (`ingest`) remains as an
//! alternative (video only).
//!
//! Audio and video timestamps share one base: both are NPT times, aligned by the PLAY response's `RTP-Info` (with one
//! stream alone, NPT starts at its first packet), counted from the connection's first video frame. Once each stream has
//! sent an RTCP sender report, the audio is moved onto the video's timeline by the wall clock the reports share
//! (`AvSync`), which is what holds for cameras whose `RTP-Info` is missing or wrong.

use std::time::Duration;

use futures::StreamExt;
use gstreamer as gst;
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions,
    Transport,
};
use retina::codec::{AudioParameters, CodecItem, FrameFormat, ParameterSetInsertion, ParametersRef, VideoParameters};
use tracing::{debug, warn};

use crate::base::url::{credentials, strip_credentials};
use crate::base::{AudioCodec, Codec, Failure};
use crate::media::hub::StreamHub;

/// A failure of the RTSP session: a refusal of our credentials (401, 403) is not fixed by retrying soon.
fn from_retina(e: retina::Error) -> Failure {
    let reason = brief(&e.to_string());
    match e.status_code() {
        Some(401 | 403) => Failure::refused(reason),
        _ => Failure::retry(reason),
    }
}

/// The first line of a retina error, at most `REASON_MAX` bytes: the rest is its context (connection, packet), and
/// for a framing error a hex dump of up to kilobytes of whatever the camera sent, which has no place in a camera's
/// `last_error` or in every log line about it. The whole error is logged at debug level.
fn brief(text: &str) -> String {
    const REASON_MAX: usize = 200;
    let line = text.lines().next().unwrap_or("").trim_end_matches([';', ':', ' ']);
    if line.len() < text.len() {
        debug!(err = text, "rtsp client error");
    }
    if line.len() <= REASON_MAX {
        return line.to_owned();
    }
    let mut end = REASON_MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

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
        let audio = session.streams().iter().enumerate().find_map(|(i, s)| {
            // retina 0.4 has no Opus depacketizer: such a camera's sound is not set up.
            let codec = AudioCodec::from_encoding_name(s.encoding_name())
                .filter(|c| s.media() == "audio" && *c != AudioCodec::Opus)?;
            Some((i, codec))
        });
        let setup = || {
            SetupOptions::default().transport(Transport::Tcp(TcpTransportOptions::default())).frame_format(FRAME_FORMAT)
        };
        session.setup(index, setup()).await.map_err(from_retina)?;
        // Sound is a bonus: a camera that will not set its audio up is still recorded and published, without it.
        let audio = match audio {
            Some((i, codec)) => match session.setup(i, setup()).await {
                Ok(()) => Some((i, codec)),
                Err(e) => {
                    warn!(err = %e, "the camera's audio stream cannot be set up: going on without sound");
                    None
                }
            },
            None => None,
        };
        // With two streams retina requires `rtptime` in RTP-Info by default; permissive takes a camera without it
        // (each stream then starts at its first packet, and the sender reports align them).
        let play = PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive);
        let playing = session.play(play).await.map_err(from_retina)?;
        let demuxed = playing.demuxed().map_err(from_retina)?;
        Ok::<_, Failure>((demuxed, index, audio))
    };
    let (mut demuxed, index, audio) = match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(d)) => d,
        Ok(Err(f)) => return f,
        Err(_) => return Failure::retry(format!("no answer within {} ms", connect_timeout.as_millis())),
    };

    // The audio caps go to the hub before the first video frame, so a consumer that opens a file at that keyframe
    // knows there is sound (a stream whose parameters come only with its first frame is described then).
    let mut have_audio_caps = false;
    if let Some((i, codec)) = audio
        && let Some(ParametersRef::Audio(params)) = demuxed.streams()[i].parameters()
    {
        hub.push_audio_caps(audio_caps(codec, params));
        have_audio_caps = true;
    }
    let mut sync = AvSync::default();
    // Timestamps count from the connection's first video frame (in ns of NPT): a camera may send frames from before
    // the NPT start that `RTP-Info` gave (a GOP it held), which must keep their spacing rather than pile up at 0.
    let mut base: Option<i128> = None;
    let mut have_caps = false;
    loop {
        // The media runtime reads the socket once per turn (`media::runtime`): whatever arrived since comes at once.
        let item = match demuxed.next().await {
            None => return Failure::retry("end of stream"),
            Some(Err(e)) => return from_retina(e),
            Some(Ok(item)) => item,
        };
        let frame = match item {
            CodecItem::VideoFrame(frame) if frame.stream_id() == index => frame,
            CodecItem::AudioFrame(frame) => {
                let Some((i, codec)) = audio.filter(|(i, _)| *i == frame.stream_id()) else { continue };
                if !have_audio_caps {
                    let Some(ParametersRef::Audio(params)) = demuxed.streams()[i].parameters() else { continue };
                    hub.push_audio_caps(audio_caps(codec, params));
                    have_audio_caps = true;
                }
                // Before the first video frame there is no timeline yet (nor a keyframe the hub would keep it for).
                if let Some(base) = base {
                    hub.push_audio(audio_buffer(&frame, sync.audio_shift - base));
                }
                continue;
            }
            CodecItem::Rtcp(report) => {
                let stream = report.stream_id();
                if audio.is_some_and(|(i, _)| i == stream) || stream == index {
                    sync.report(&report, stream == index);
                }
                continue;
            }
            _ => continue,
        };
        if !have_caps || frame.has_new_parameters() {
            if let Some(ParametersRef::Video(params)) = demuxed.streams()[index].parameters() {
                hub.push_caps(caps(demuxed.streams()[index].encoding_name(), params));
                have_caps = true;
            } else {
                continue;
            }
        }
        let at = nanos(frame.timestamp());
        let base = *base.get_or_insert(at);
        let keyframe = frame.is_random_access_point();
        let mut buffer = gst::Buffer::from_mut_slice(frame.into_data());
        {
            let b = buffer.get_mut().expect("a new buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds((at - base).max(0) as u64));
            if !keyframe {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        hub.push(buffer);
    }
}

/// Moves audio onto the video's timeline by the RTCP sender reports of the two streams: each report pairs a stream's
/// RTP time with the sender's wall clock (NTP), and the difference between the two streams' pairings is how far the
/// audio's elapsed time is off the video's.
#[derive(Debug, Default)]
struct AvSync {
    /// Per stream, the latest (elapsed − wall clock) in ns.
    video: Option<i128>,
    audio: Option<i128>,
    /// Added to audio timestamps (ns).
    audio_shift: i128,
    /// Whether both streams have reported yet.
    measured: bool,
}

impl AvSync {
    /// The most a sender report may move the audio: beyond it the camera's reports are not believed.
    const MAX_SHIFT: i128 = 10 * 1_000_000_000;

    fn report(&mut self, report: &retina::rtcp::ReceivedCompoundPacket, video: bool) {
        let Some(rtp) = report.rtp_timestamp() else { return };
        let Some(Ok(Some(sr))) = report.pkts().next().map(|p| p.as_sender_report()) else { return };
        let ntp = sr.ntp_timestamp().0;
        if ntp == 0 {
            // Some cameras send no wall clock at all.
            return;
        }
        let wall = i128::from(ntp >> 32) * 1_000_000_000 + ((i128::from(ntp & 0xffff_ffff) * 1_000_000_000) >> 32);
        let elapsed = nanos(rtp);
        *(if video { &mut self.video } else { &mut self.audio }) = Some(elapsed - wall);
        let (Some(v), Some(a)) = (self.video, self.audio) else { return };
        let shift = v - a;
        if shift.abs() > Self::MAX_SHIFT {
            debug!(shift_ms = shift as f64 / 1e6, "sender reports disagree beyond belief: audio left as it is");
            return;
        }
        // Moves under a millisecond are rounding, not news.
        if !self.measured || (shift - self.audio_shift).abs() >= 1_000_000 {
            debug!(shift_ms = shift as f64 / 1e6, "audio aligned to video by sender reports");
            self.measured = true;
            self.audio_shift = shift;
        }
    }
}

/// A timestamp's time since the NPT start, in ns.
fn nanos(timestamp: retina::Timestamp) -> i128 {
    i128::from(timestamp.elapsed()) * 1_000_000_000 / i128::from(timestamp.clock_rate().get())
}

/// An audio frame as a buffer: PTS on the video's timeline (`shift`, in ns, added to its NPT time), duration from its
/// length.
fn audio_buffer(frame: &retina::codec::AudioFrame, shift: i128) -> gst::Buffer {
    let pts = nanos(frame.timestamp()) + shift;
    let clock = i128::from(frame.timestamp().clock_rate().get());
    let duration = i128::from(frame.frame_length().get()) * 1_000_000_000 / clock;
    let mut buffer = gst::Buffer::from_slice(frame.data().to_vec());
    {
        let b = buffer.get_mut().expect("a new buffer is writable");
        b.set_pts(gst::ClockTime::from_nseconds(pts.max(0) as u64));
        b.set_duration(gst::ClockTime::from_nseconds(duration as u64));
    }
    buffer
}

/// The caps of an audio stream, as GStreamer's muxers take it: raw AAC with its AudioSpecificConfig, or G.711.
fn audio_caps(codec: AudioCodec, params: &AudioParameters) -> gst::Caps {
    let builder = gst::Caps::builder(codec.media_type())
        .field("rate", params.clock_rate() as i32)
        .field("channels", i32::from(params.channels().get()));
    match codec {
        AudioCodec::Aac => builder
            .field("mpegversion", 4i32)
            .field("stream-format", "raw")
            .field("codec_data", gst::Buffer::from_slice(params.extra_data().to_vec()))
            .build(),
        AudioCodec::Pcmu | AudioCodec::Pcma | AudioCodec::Opus => builder.build(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_reason_is_the_errors_first_line_and_short() {
        let dump =
            format!("RTSP framing error: Invalid RTSP message: byte 4; buffered:\n{}", "0000: ff ee\n".repeat(500));
        assert_eq!(brief(&dump), "RTSP framing error: Invalid RTSP message: byte 4; buffered");
        let long = "é".repeat(300);
        let short = brief(&long);
        assert!(short.len() <= 203 && short.ends_with("..."), "{short}");
        assert_eq!(brief("refused"), "refused");
    }

    /// A compound RTCP packet that begins with a sender report of wall clock `ntp` (seconds, 32.32) at RTP time
    /// `elapsed` (in units of `clock`) since the stream's start.
    fn report(ntp: u64, elapsed: i64, clock: u32) -> retina::rtcp::ReceivedCompoundPacket {
        let mut sr = vec![0x80, 200, 0, 6, 0, 0, 0, 1];
        sr.extend_from_slice(&ntp.to_be_bytes());
        sr.extend_from_slice(&[0; 12]);
        let clock = std::num::NonZeroU32::new(clock).expect("non-zero clock");
        retina::rtcp::ReceivedCompoundPacket::dummy(retina::Timestamp::new(elapsed, clock, 0), &sr)
    }

    #[test]
    fn sender_reports_move_the_audio_onto_the_video_s_timeline() {
        let mut sync = AvSync::default();
        // At wall clock 1000 s the video is 5 s in; at 1000.5 s the audio is 5.45 s in, i.e. 50 ms behind the video's
        // 5.5 s: an audio frame belongs 50 ms later on the video's timeline.
        sync.report(&report(1000 << 32, 90_000 * 5, 90_000), true);
        assert_eq!(sync.audio_shift, 0, "one stream alone says nothing");
        sync.report(&report((1000 << 32) | 0x8000_0000, 48_000 * 545 / 100, 48_000), false);
        assert_eq!(sync.audio_shift, 50_000_000);
        // A camera without a wall clock is not believed.
        sync.report(&report(0, 0, 48_000), false);
        assert_eq!(sync.audio_shift, 50_000_000);
    }
}
