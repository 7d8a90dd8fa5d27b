//! The RTMP server: publishers push FLV (H.264) to `rtmp://HOST:PORT/<app>/<stream key>`. The protocol (handshake,
//! chunk stream, AMF commands) is `rml_rtmp`'s, a sans-IO state machine; this module owns the sockets. A connection
//! is negotiated on its own task (handshake and commands within `NEGOTIATE_TIMEOUT`); its publish request is checked
//! against the [`Gate`] *before* it is accepted, so an unknown key is refused with `NetStream.Publish.BadName` and no
//! camera is touched. An accepted publisher is handed to its camera's [`PushSlot`] as an [`Arrival`], whose feed reads
//! the socket on the shared pacing grid and pushes each video tag into the camera's hub as an `avc` access unit (the
//! FLV payload is already length-prefixed; parameter sets are put before each keyframe, the configuration record
//! becomes the caps' `codec_data`). Anything malformed ends that publisher alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gstreamer as gst;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};

use crate::base::{Codec, Failure};
use crate::error::{Dependency, Error, Result};
use crate::media::hub::StreamHub;
use crate::media::push::{Arrival, Gate, Protocol, Refusal};

/// How long a new connection has to complete the handshake and ask to publish.
const NEGOTIATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections still negotiating at once; more wait for the accept loop (a flood cannot exhaust the process).
const MAX_NEGOTIATING: usize = 64;
/// Bytes read from a socket per wake-up, at most.
const READ_CHUNK: usize = 64 * 1024;
/// The longest a write to a publisher (acknowledgements, pings) may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `listen` and accepts publishers on `runtime` until `shutdown` fires; returns the bound address.
pub async fn start(
    listen: SocketAddr,
    gate: Gate,
    shutdown: CancellationToken,
    runtime: &tokio::runtime::Handle,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| Error::dependency(Dependency::IngestServer, format!("rtmp: cannot listen on {listen}: {e}")))?;
    let local_addr = listener.local_addr().map_err(Error::internal)?;
    info!(%local_addr, "rtmp server listening");
    let negotiating = Arc::new(Semaphore::new(MAX_NEGOTIATING));
    runtime.spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = negotiating.clone().acquire_owned() => p,
            };
            let Ok(permit) = permit else { break };
            let (socket, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        debug!(err = %e, "rtmp accept failed");
                        continue;
                    }
                },
            };
            let gate = gate.clone();
            let span = info_span!("rtmp", %peer);
            tokio::spawn(
                async move {
                    let negotiated = tokio::time::timeout(NEGOTIATE_TIMEOUT, negotiate(socket, &gate)).await;
                    drop(permit);
                    match negotiated {
                        Ok(Ok(())) => {}
                        Ok(Err(reason)) => info!(reason, "rtmp publisher refused"),
                        Err(_) => info!("rtmp publisher refused: too slow to ask to publish"),
                    }
                }
                .instrument(span),
            );
        }
        debug!("rtmp server stopped");
    });
    Ok(local_addr)
}

/// A connection between accept and hand-over.
struct Connection {
    socket: TcpStream,
    session: ServerSession,
    /// Events the session raised that the publisher's feed must see (media that came with the publish request).
    pending: Vec<ServerSessionEvent>,
}

/// Handshake, connect and publish request of one connection; hands an accepted publisher to its camera.
async fn negotiate(mut socket: TcpStream, gate: &Gate) -> Result<(), String> {
    let _ = socket.set_nodelay(true);
    let mut handshake = Handshake::new(PeerType::Server);
    let mut buf = vec![0u8; READ_CHUNK];
    let remaining = loop {
        let n = read(&mut socket, &mut buf).await?;
        match handshake.process_bytes(&buf[..n]).map_err(|e| format!("bad handshake: {e:?}"))? {
            HandshakeProcessResult::InProgress { response_bytes } => send(&mut socket, &response_bytes).await?,
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                send(&mut socket, &response_bytes).await?;
                break remaining_bytes;
            }
        }
    };
    let (session, initial) =
        ServerSession::new(ServerSessionConfig::new()).map_err(|e| format!("rtmp session: {e:?}"))?;
    let mut conn = Connection { socket, session, pending: Vec::new() };
    conn.answer(initial).await?;
    let mut input = remaining;
    loop {
        if !input.is_empty() {
            let results = conn.session.handle_input(&input).map_err(|e| format!("invalid rtmp: {e:?}"))?;
            let mut requests = Vec::new();
            for r in results {
                match r {
                    ServerSessionResult::OutboundResponse(p) => send(&mut conn.socket, &p.bytes).await?,
                    ServerSessionResult::RaisedEvent(e) => requests.push(e),
                    ServerSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
            let mut events = requests.into_iter();
            while let Some(event) = events.next() {
                match event {
                    ServerSessionEvent::ConnectionRequested { request_id, .. }
                    | ServerSessionEvent::ReleaseStreamRequested { request_id, .. } => {
                        let accepted = conn.session.accept_request(request_id).map_err(|e| format!("{e:?}"))?;
                        conn.answer(accepted).await?;
                    }
                    ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                        let refused = conn
                            .session
                            .reject_request(request_id, "NetStream.Play.Failed", "camhub takes RTMP publishers only")
                            .map_err(|e| format!("{e:?}"))?;
                        conn.answer(refused).await?;
                        return Err("asked to play; camhub serves RTMP publishers only".into());
                    }
                    ServerSessionEvent::PublishStreamRequested { request_id, stream_key, .. } => {
                        let Some(slot) = gate(&stream_key) else {
                            conn.refuse(request_id, "unknown stream key").await;
                            return Err("unknown or revoked stream key".into());
                        };
                        if slot.publishing() {
                            conn.refuse(request_id, "this stream key is already publishing").await;
                            return Err("stream key already publishing".into());
                        }
                        let accepted = conn.session.accept_request(request_id).map_err(|e| format!("{e:?}"))?;
                        conn.answer(accepted).await?;
                        conn.pending.extend(events);
                        let peer = conn.socket.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                        let feed = Box::new(move |hub: Arc<StreamHub>, stop: CancellationToken| {
                            Box::pin(conn.feed(hub, stop)) as futures::future::BoxFuture<'static, Failure>
                        });
                        return match slot.offer(Arrival::new(Protocol::Rtmp, feed)) {
                            Ok(()) => {
                                info!(peer, "rtmp publisher accepted");
                                Ok(())
                            }
                            Err(Refusal::Busy) => Err("stream key already publishing".into()),
                            Err(Refusal::Closed) => Err("the camera was removed".into()),
                        };
                    }
                    // Never logged whole: FFmpeg's FCPublish, for one, carries the stream key.
                    _ => {}
                }
            }
        }
        let n = read(&mut conn.socket, &mut buf).await?;
        input = buf[..n].to_vec();
    }
}

impl Connection {
    async fn answer(&mut self, results: Vec<ServerSessionResult>) -> Result<(), String> {
        for r in results {
            if let ServerSessionResult::OutboundResponse(p) = r {
                send(&mut self.socket, &p.bytes).await?;
            }
        }
        Ok(())
    }

    /// Refuses a publish request with `NetStream.Publish.BadName`, so the publisher says why.
    async fn refuse(&mut self, request_id: u32, why: &str) {
        if let Ok(results) = self.session.reject_request(request_id, "NetStream.Publish.BadName", why) {
            let _ = self.answer(results).await;
        }
        let _ = self.socket.shutdown().await;
    }

    /// Reads the publisher into `hub` until it stops publishing, fails, or `stop` fires.
    async fn feed(mut self, hub: Arc<StreamHub>, stop: CancellationToken) -> Failure {
        let mut media = FlvMedia::default();
        for event in std::mem::take(&mut self.pending) {
            if let Some(end) = media.on_event(event, &hub) {
                return end;
            }
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if stop.is_cancelled() {
                return Failure::retry("stopped");
            }
            // Read what has arrived; when nothing has, wait for the socket, which the media runtime polls once per
            // turn (`media::runtime`): a publisher costs tens of wake-ups a second, not one per TCP segment.
            let n = match self.socket.try_read(&mut buf) {
                Ok(0) => return Failure::retry("the publisher disconnected"),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tokio::select! {
                        ready = self.socket.readable() => {
                            if let Err(e) = ready {
                                return Failure::retry(format!("the publisher's connection failed: {e}"));
                            }
                        }
                        _ = stop.cancelled() => return Failure::retry("stopped"),
                    }
                    continue;
                }
                Err(e) => return Failure::retry(format!("the publisher's connection failed: {e}")),
            };
            let results = match self.session.handle_input(&buf[..n]) {
                Ok(r) => r,
                Err(e) => return Failure::retry(format!("the publisher sent invalid RTMP: {e:?}")),
            };
            for r in results {
                match r {
                    ServerSessionResult::OutboundResponse(p) => {
                        if let Err(e) = timed_send(&mut self.socket, &p.bytes).await {
                            return Failure::retry(e);
                        }
                    }
                    ServerSessionResult::RaisedEvent(event) => {
                        if let Some(end) = media.on_event(event, &hub) {
                            return end;
                        }
                    }
                    ServerSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
        }
    }
}

/// A publisher's video and sound as they become hub frames.
#[derive(Default)]
struct FlvMedia {
    config: Option<AvcConfig>,
    metadata_fps: Option<f32>,
    /// The AAC sample rate, once the sequence header told it (frames before it are dropped).
    audio_rate: Option<u32>,
    /// A codec other than AAC was seen and said so in the log, once.
    audio_ignored: bool,
}

impl FlvMedia {
    /// Handles one session event; `Some` when the publisher is done.
    fn on_event(&mut self, event: ServerSessionEvent, hub: &StreamHub) -> Option<Failure> {
        match event {
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                self.on_video(&data, timestamp.value, hub).err()
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                self.on_audio(&data, timestamp.value, hub);
                None
            }
            ServerSessionEvent::StreamMetadataChanged { metadata: StreamMetadata { video_frame_rate, .. }, .. } => {
                self.metadata_fps = video_frame_rate.filter(|f| f.is_finite() && *f > 0.0);
                None
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                Some(Failure::retry("the publisher stopped publishing"))
            }
            _ => None,
        }
    }

    /// One FLV video tag body: `frame type << 4 | codec id`, AVC packet type, composition time, payload.
    fn on_video(&mut self, tag: &Bytes, dts_ms: u32, hub: &StreamHub) -> Result<(), Failure> {
        if tag.len() < 5 {
            return Ok(()); // an empty tag (some encoders send one as a keep-alive)
        }
        if tag[0] & 0x80 != 0 || tag[0] & 0x0f != 7 {
            return Err(Failure::unsupported("the publisher sends a video codec other than H.264 (FLV codec 7)"));
        }
        let keyframe = tag[0] >> 4 == 1;
        let cts = (((tag[2] as i32) << 16 | (tag[3] as i32) << 8 | tag[4] as i32) << 8) >> 8;
        let payload = &tag[5..];
        match tag[1] {
            0 => {
                let config = AvcConfig::parse(payload)?;
                hub.push_caps(config.caps(self.metadata_fps));
                self.config = Some(config);
            }
            1 => {
                let Some(config) = &self.config else { return Ok(()) };
                check_nal_lengths(payload)?;
                let mut data = Vec::with_capacity(payload.len() + if keyframe { config.prefix.len() } else { 0 });
                if keyframe {
                    data.extend_from_slice(&config.prefix);
                }
                data.extend_from_slice(payload);
                let mut buffer = gst::Buffer::from_mut_slice(data);
                let b = buffer.get_mut().expect("a new buffer is writable");
                let dts = gst::ClockTime::from_mseconds(u64::from(dts_ms));
                b.set_dts(dts);
                b.set_pts(gst::ClockTime::from_mseconds((i64::from(dts_ms) + i64::from(cts)).max(0) as u64));
                if !keyframe {
                    b.set_flags(gst::BufferFlags::DELTA_UNIT);
                }
                hub.push(buffer);
            }
            _ => {} // end of sequence
        }
        Ok(())
    }
}

impl FlvMedia {
    /// One FLV audio tag body: `format << 4 | rate, size, type`, then for AAC (format 10) the packet type and the
    /// AudioSpecificConfig (0) or a raw frame (1), timestamped on the video's clock (RTMP timestamps, ms). Other
    /// codecs (MP3, Speex, G.711 in FLV) are not kept: the sound is dropped, the video goes on.
    fn on_audio(&mut self, tag: &Bytes, ms: u32, hub: &StreamHub) {
        if tag.len() < 2 {
            return;
        }
        if tag[0] >> 4 != 10 {
            if !self.audio_ignored {
                self.audio_ignored = true;
                info!(format = tag[0] >> 4, "the publisher's sound is not AAC: it is not kept");
            }
            return;
        }
        let payload = &tag[2..];
        match tag[1] {
            0 => {
                let rate = gstreamer_pbutils::functions::codec_utils_aac_get_sample_rate(payload);
                let channels = gstreamer_pbutils::functions::codec_utils_aac_get_channels(payload);
                if rate == 0 || channels == 0 {
                    debug!("unreadable AAC configuration: the sound is not kept");
                    self.audio_rate = None;
                    return;
                }
                self.audio_rate = Some(rate);
                hub.push_audio_caps(
                    gst::Caps::builder("audio/mpeg")
                        .field("mpegversion", 4i32)
                        .field("stream-format", "raw")
                        .field("codec_data", gst::Buffer::from_slice(payload.to_vec()))
                        .field("rate", rate as i32)
                        .field("channels", channels as i32)
                        .build(),
                );
            }
            1 if !payload.is_empty() => {
                let Some(rate) = self.audio_rate else { return };
                let mut buffer = gst::Buffer::from_slice(payload.to_vec());
                let b = buffer.get_mut().expect("a new buffer is writable");
                b.set_pts(gst::ClockTime::from_mseconds(u64::from(ms)));
                // An AAC frame is 1024 samples.
                b.set_duration(gst::ClockTime::from_nseconds(1024 * 1_000_000_000 / u64::from(rate)));
                hub.push_audio(buffer);
            }
            _ => {}
        }
    }
}

/// Checks that an access unit is a whole sequence of 4-byte-length-prefixed NAL units.
fn check_nal_lengths(mut au: &[u8]) -> Result<(), Failure> {
    while !au.is_empty() {
        if au.len() < 4 {
            return Err(Failure::retry("the publisher sent a truncated NAL unit"));
        }
        let len = u32::from_be_bytes([au[0], au[1], au[2], au[3]]) as usize;
        if len == 0 || len > au.len() - 4 {
            return Err(Failure::retry("the publisher sent a NAL unit longer than its tag"));
        }
        au = &au[4 + len..];
    }
    Ok(())
}

/// An `AVCDecoderConfigurationRecord` (the FLV sequence header): the caps' `codec_data`, and the parameter sets as
/// the 4-byte-length-prefixed NAL units put before each keyframe.
#[derive(Debug)]
struct AvcConfig {
    record: Vec<u8>,
    prefix: Vec<u8>,
    width: u32,
    height: u32,
    fps: Option<f64>,
}

impl AvcConfig {
    fn parse(record: &[u8]) -> Result<AvcConfig, Failure> {
        let bad = |why: &str| Failure::retry(format!("the publisher sent a bad H.264 configuration record: {why}"));
        if record.len() < 7 || record[0] != 1 {
            return Err(bad("too short or not version 1"));
        }
        if record[4] & 0x03 != 3 {
            return Err(Failure::unsupported("the publisher's H.264 NAL length size is not 4 bytes"));
        }
        let mut at = 5;
        let mut prefix = Vec::new();
        let mut sps = None;
        for count_mask in [0x1f, 0xff] {
            let count = *record.get(at).ok_or_else(|| bad("truncated"))? & count_mask;
            at += 1;
            for _ in 0..count {
                let len = record.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize);
                let nal = len.and_then(|len| record.get(at + 2..at + 2 + len)).ok_or_else(|| bad("truncated"))?;
                if nal.is_empty() {
                    return Err(bad("an empty parameter set"));
                }
                if count_mask == 0x1f && sps.is_none() {
                    sps = Some(nal.to_vec());
                }
                prefix.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                prefix.extend_from_slice(nal);
                at += 2 + nal.len();
            }
        }
        let sps = sps.ok_or_else(|| bad("no sequence parameter set"))?;
        let parsed = h264_reader::rbsp::decode_nal(&sps)
            .ok()
            .and_then(|rbsp| {
                h264_reader::nal::sps::SeqParameterSet::from_bits(h264_reader::rbsp::BitReader::new(&*rbsp)).ok()
            })
            .ok_or_else(|| bad("unreadable sequence parameter set"))?;
        let (width, height) = parsed.pixel_dimensions().map_err(|_| bad("no picture size"))?;
        Ok(AvcConfig { record: record.to_vec(), prefix, width, height, fps: parsed.fps() })
    }

    fn caps(&self, metadata_fps: Option<f32>) -> gst::Caps {
        let codec = Codec::H264;
        let mut builder = gst::Caps::builder(codec.media_type())
            .field("stream-format", codec.stream_format())
            .field("alignment", "au")
            .field("codec_data", gst::Buffer::from_slice(self.record.clone()))
            .field("width", self.width as i32)
            .field("height", self.height as i32);
        if let Some(fps) = self.fps.or(metadata_fps.map(f64::from)).filter(|f| *f > 0.0 && *f < 1000.0) {
            let fraction = gst::Fraction::approximate_f64(fps).unwrap_or_else(|| gst::Fraction::new(fps as i32, 1));
            builder = builder.field("framerate", fraction);
        }
        builder.build()
    }
}

/// Waits for bytes from a connection being negotiated.
async fn read(socket: &mut TcpStream, buf: &mut [u8]) -> Result<usize, String> {
    use tokio::io::AsyncReadExt;
    match socket.read(buf).await {
        Ok(0) => Err("the client closed the connection".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("read failed: {e}")),
    }
}

async fn send(socket: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    socket.write_all(bytes).await.map_err(|e| format!("write failed: {e}"))
}

async fn timed_send(socket: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, send(socket, bytes)).await {
        Ok(r) => r,
        Err(_) => Err("the publisher stopped reading".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration record FFmpeg's libx264 writes for 320x240 at 25 fps (constrained baseline).
    const RECORD: &[u8] = &[
        0x01, 0x42, 0xc0, 0x0d, 0xff, 0xe1, 0x00, 0x18, 0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10,
        0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0xa4, 0x80, 0x01, 0x00, 0x05, 0x68,
        0xcb, 0x83, 0xcb, 0x20,
    ];

    #[test]
    fn configuration_records_give_parameter_sets_and_size() {
        let c = AvcConfig::parse(RECORD).expect("a valid record");
        assert_eq!((c.width, c.height), (320, 240));
        assert_eq!(&c.prefix[..4], &[0, 0, 0, 0x18]);
        assert_eq!(c.prefix.len(), 4 + 0x18 + 4 + 5);
        assert_eq!(c.fps, Some(25.0));
        assert!(AvcConfig::parse(&RECORD[..20]).is_err(), "truncated");
        assert!(AvcConfig::parse(&[0x01, 0x42, 0xc0, 0x0d, 0xfd, 0xe1]).is_err(), "2-byte lengths");
    }

    #[test]
    fn access_units_must_be_whole_nal_units() {
        assert!(check_nal_lengths(&[0, 0, 0, 2, 0x65, 0x88]).is_ok());
        assert!(check_nal_lengths(&[0, 0, 0, 9, 0x65, 0x88]).is_err());
        assert!(check_nal_lengths(&[0, 0, 0]).is_err());
        assert!(check_nal_lengths(&[0, 0, 0, 0]).is_err());
    }
}
