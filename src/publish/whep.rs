//! WebRTC playback over WHEP: one `appsrc ! rtph264pay ! webrtcbin` pipeline per session, fed from the camera's hub
//! (H.264 passed through; browsers do not decode H.265 over WebRTC, so H.265 cameras are refused). Non-trickle: the
//! answer is returned once ICE gathering completed. The payload type and H.264 parameters are the offer's own.
//! A viewer whose offer receives audio, of a camera with sound, gets it on a second `appsrc`: Opus, and G.711 the
//! offer lists, as they are; AAC, and G.711 the offer does not list, transcoded to Opus (`decoder ! audioconvert !
//! audioresample ! opusenc`) in that session's pipeline only, the one place camhub encodes sound: browsers play
//! neither AAC nor, always, G.711 over WebRTC. The audio payload type is the offer's too.
//! A session ends on DELETE, when its ICE connection has been failed or disconnected for `disconnect_timeout`
//! (or never connected within `CONNECT_TIMEOUT`), when the camera is removed or withdrawn, on a pipeline error, and on
//! shutdown. Negotiation runs on the blocking pool (it waits on webrtcbin's promises); sessions run on the media
//! runtime; teardown (`set_state(Null)`) goes to the blocking pool. The session registry's lock is never held while
//! calling into GStreamer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use parking_lot::Mutex;
use rand::RngCore;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Counters;
use super::feed::{self, Feed};
use crate::base::CameraId;
use crate::base::{AudioCodec, Codec};
use crate::camera::Camera;
use crate::config::WebrtcConfig;
use crate::error::{Dependency, Error, Result, State};
use crate::media::make;
use crate::media::{audio_codec_of, codec_of};

/// A peer that has not connected by then is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The session registry.
pub struct Whep {
    config: WebrtcConfig,
    runtime: tokio::runtime::Handle,
    /// Live sessions by id; shared with each session's task, which unregisters itself. Short critical sections only.
    sessions: Arc<Mutex<HashMap<String, SessionHandle>>>,
    /// The thread making the DTLS certificate ahead of the first session; joined on shutdown.
    prewarm: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct SessionHandle {
    camera: CameraId,
    stop: CancellationToken,
}

/// A negotiated session: its id (for the `Location` header) and the SDP answer.
#[derive(Debug)]
pub struct Answer {
    pub session: String,
    pub sdp: String,
}

impl Whep {
    pub fn new(config: WebrtcConfig, runtime: tokio::runtime::Handle) -> Whep {
        Whep { config, runtime, sessions: Arc::default(), prewarm: Mutex::new(None) }
    }

    /// Makes the process's DTLS certificate now, off the request path. GStreamer's DTLS elements share one generated
    /// certificate per process, made when the first of them is created: without this, the first WHEP session of a
    /// process waited about 200 ms for it. `shutdown` waits for it: OpenSSL's exit handlers must not run under it
    /// (a stop within a second of start-up ended in SIGSEGV in `RAND_priv_bytes_ex`).
    pub fn prewarm(&self) {
        *self.prewarm.lock() = Some(std::thread::spawn(|| {
            let made = std::time::Instant::now();
            match gst::ElementFactory::make("dtlsdec").build() {
                Ok(_) => debug!(ms = made.elapsed().as_millis() as u64, "DTLS certificate ready"),
                Err(e) => warn!(err = %e, "cannot make the DTLS certificate ahead of WHEP sessions"),
            }
        }));
    }

    pub fn count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Answers a WHEP offer for `camera` and starts the session.
    pub async fn offer(&self, camera: &Arc<Camera>, counters: Arc<Counters>, offer: &str) -> Result<Answer> {
        if self.count() >= self.config.max_sessions {
            return Err(Error::invalid_state(State::SessionLimit, &[]));
        }
        let sdp = gst_sdp::SDPMessage::parse_buffer(offer.as_bytes())
            .map_err(|_| Error::invalid_param("body", "not an SDP offer"))?;
        let caps = camera.hub.caps().ok_or_else(|| Error::invalid_state(State::NoVideoYet, &[State::Connected]))?;
        match codec_of(&caps) {
            Some(Codec::H264) => {}
            Some(Codec::H265) => {
                return Err(Error::CapabilityNotSupported(
                    "H.265 over WebRTC (browsers decode H.264 only); use the RTSP URL".into(),
                ));
            }
            None => return Err(Error::CapabilityNotSupported("this camera's codec over WebRTC".into())),
        }
        let choice = choose_h264(&sdp, profile_idc(&caps))
            .ok_or_else(|| Error::invalid_param("body", "the offer has no H.264 (packetization-mode 1) video"))?;
        let sound = camera.hub.audio_caps().and_then(|caps| {
            let codec = audio_codec_of(&caps)?;
            let choice = choose_audio(&sdp, codec)?;
            debug!(
                sound = codec.as_str(),
                sent = choice.sent.as_str(),
                transcoded = choice.transcode,
                "viewer takes sound"
            );
            Some((caps, choice))
        });
        let config = self.config.clone();
        let negotiated = tokio::task::spawn_blocking(move || negotiate(&config, &caps, sdp, choice, sound))
            .await
            .map_err(Error::internal)??;
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let session = hex::encode(id);
        let stop = CancellationToken::new();
        {
            let mut sessions = self.sessions.lock();
            sessions.insert(session.clone(), SessionHandle { camera: camera.id.clone(), stop: stop.clone() });
        }
        counters.webrtc_sessions.fetch_add(1, Ordering::Relaxed);
        let answer = negotiated.answer.clone();
        // Not the child of the signalling request, which it outlives.
        let span = info_span!(parent: None, "whep", camera_id = %camera.id, session = &session[..8]);
        info!(parent: &span, "webrtc session started");
        let hub = Arc::downgrade(&camera.hub);
        let timeout = self.config.disconnect_timeout;
        let sessions = self.sessions.clone();
        let id = session.clone();
        self.runtime.spawn(
            async move {
                let why = run(negotiated, hub, counters.clone(), stop, timeout).await;
                info!(reason = why, "webrtc session ended");
                sessions.lock().remove(&id);
                counters.webrtc_sessions.fetch_sub(1, Ordering::Relaxed);
            }
            .instrument(span),
        );
        Ok(Answer { session, sdp: answer })
    }

    /// Ends one session of `camera`; false if there is none.
    pub fn end(&self, camera: &CameraId, session: &str) -> bool {
        let sessions = self.sessions.lock();
        match sessions.get(session) {
            Some(h) if &h.camera == camera => {
                h.stop.cancel();
                true
            }
            _ => false,
        }
    }

    /// Ends every session of `camera` and waits (briefly) until they are gone.
    pub async fn end_camera(&self, camera: &CameraId) {
        self.end_where(|c| c == camera).await;
    }

    /// Ends the sessions of cameras that no longer exist.
    pub async fn end_missing(&self, exists: impl Fn(&CameraId) -> bool) {
        self.end_where(|c| !exists(c)).await;
    }

    /// Ends every session and waits until they are torn down (bounded).
    pub async fn shutdown(&self) {
        self.end_where(|_| true).await;
        let prewarm = self.prewarm.lock().take();
        if let Some(thread) = prewarm {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    async fn end_where(&self, which: impl Fn(&CameraId) -> bool) {
        let ids: Vec<String> = {
            let sessions = self.sessions.lock();
            sessions
                .iter()
                .filter(|(_, h)| which(&h.camera))
                .map(|(id, h)| {
                    h.stop.cancel();
                    id.clone()
                })
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && ids.iter().any(|id| self.sessions.lock().contains_key(id)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The offer's H.264 format camhub sends: its m-line, payload type, and the codec preferences for the answer.
#[derive(Debug, Clone)]
struct Choice {
    mline: u32,
    pt: u32,
    preferences: gst::Caps,
}

/// The H.264 profile (first byte of `profile-level-id`) of hub caps, from the avcC `codec_data`.
fn profile_idc(caps: &gst::Caps) -> Option<u8> {
    let data = caps.structure(0)?.get::<gst::Buffer>("codec_data").ok()?;
    let map = data.map_readable().ok()?;
    map.get(1).copied()
}

/// Picks the first video m-line offering H.264 with packetization-mode 1, preferring the camera's profile.
fn choose_h264(sdp: &gst_sdp::SDPMessageRef, profile: Option<u8>) -> Option<Choice> {
    let (mline, media) = sdp.medias().enumerate().find(|(_, m)| m.media() == Some("video"))?;
    let mut best: Option<(bool, Choice)> = None;
    for format in media.formats() {
        let Ok(pt) = format.parse::<i32>() else { continue };
        let Some(caps) = media.caps_from_media(pt) else { continue };
        let Some(s) = caps.structure(0) else { continue };
        if !s.get::<&str>("encoding-name").is_ok_and(|e| e.eq_ignore_ascii_case("H264")) {
            continue;
        }
        // The fmtp parameters as the offer wrote them (the caps rename profile-level-id to a profile name).
        let fmtp = crate::media::webrtc::fmtp_of(media, pt);
        if fmtp.get("packetization-mode").map(String::as_str) != Some("1") {
            continue;
        }
        let offered =
            fmtp.get("profile-level-id").and_then(|p| p.get(..2)).and_then(|p| u8::from_str_radix(p, 16).ok());
        let same_profile = profile.is_some() && offered == profile;
        // The payloader writes its own profile-level-id (the camera's); the offer's would make the caps disjoint.
        let mut preferences = gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("encoding-name", "H264")
            .field("clock-rate", 90000i32)
            .field("payload", pt)
            .field("packetization-mode", "1")
            .build();
        {
            let p = preferences.make_mut().structure_mut(0).expect("one structure");
            for field in
                ["rtcp-fb-nack", "rtcp-fb-nack-pli", "rtcp-fb-ccm-fir", "rtcp-fb-goog-remb", "rtcp-fb-transport-cc"]
            {
                if let Ok(v) = s.value(field) {
                    p.set_value(field, v.clone());
                }
            }
            if let Some(v) = fmtp.get("level-asymmetry-allowed") {
                p.set("level-asymmetry-allowed", v.as_str());
            }
        }
        let choice = Choice { mline: mline as u32, pt: pt as u32, preferences };
        match &best {
            Some((true, _)) => {}
            Some((false, _)) if !same_profile => {}
            _ => best = Some((same_profile, choice)),
        }
    }
    best.map(|(_, c)| c)
}

/// The offer's audio format camhub sends the camera's sound in: its m-line, payload type, what is sent (the camera's
/// codec, or Opus made from it) and the codec preferences for the answer.
#[derive(Debug, Clone)]
struct AudioChoice {
    mline: u32,
    pt: u32,
    sent: AudioCodec,
    transcode: bool,
    preferences: gst::Caps,
}

/// How the camera's sound (`camera`) reaches the viewer, if its offer receives audio (the first audio m-line,
/// `recvonly` or `sendrecv`): Opus as it is; G.711 as it is if the offer lists it, else as Opus; AAC as Opus. `None`
/// when the offer receives no audio, or not in a codec camhub can send.
fn choose_audio(sdp: &gst_sdp::SDPMessageRef, camera: AudioCodec) -> Option<AudioChoice> {
    let (mline, media) = sdp.medias().enumerate().find(|(_, m)| m.media() == Some("audio"))?;
    // Port 0 is no refusal here: a max-bundle offer gives it to every m-line but the first (`a=bundle-only`).
    if ["sendonly", "inactive"].iter().any(|d| media.attribute_val(d).is_some()) {
        return None;
    }
    let offered = |codec: AudioCodec| {
        media.formats().find_map(|format| {
            let pt = format.parse::<i32>().ok()?;
            let caps = media.caps_from_media(pt)?;
            let name = caps.structure(0)?.get::<&str>("encoding-name").ok()?.to_owned();
            let rate = caps.structure(0)?.get::<i32>("clock-rate").ok()?;
            name.eq_ignore_ascii_case(codec.encoding_name()).then_some((pt, rate))
        })
    };
    let (sent, transcode) = match camera {
        AudioCodec::Opus => (AudioCodec::Opus, false),
        AudioCodec::Pcmu | AudioCodec::Pcma if offered(camera).is_some() => (camera, false),
        AudioCodec::Pcmu | AudioCodec::Pcma | AudioCodec::Aac => (AudioCodec::Opus, true),
    };
    let (pt, rate) = offered(sent)?;
    let mut preferences = gst::Caps::builder("application/x-rtp")
        .field("media", "audio")
        .field("encoding-name", sent.encoding_name())
        .field("clock-rate", rate)
        .field("payload", pt);
    if sent == AudioCodec::Opus {
        // RFC 7587: always `opus/48000/2`, whatever the channels sent.
        preferences = preferences.field("encoding-params", "2");
    }
    Some(AudioChoice { mline: mline as u32, pt: pt as u32, sent, transcode, preferences: preferences.build() })
}

/// A negotiated session's pipeline and what its task watches.
struct Negotiated {
    pipeline: gst::Pipeline,
    appsrc: gstreamer_app::AppSrc,
    pay: gst::Element,
    /// The sound's `appsrc` (caps: the camera's), when the viewer takes it.
    audio: Option<gstreamer_app::AppSrc>,
    /// Notified by the appsrc's need-data (set before the pipeline starts, so the first one is not missed).
    started: Arc<Notify>,
    ice_states: mpsc::UnboundedReceiver<gst_webrtc::WebRTCICEConnectionState>,
    answer: String,
}

/// Builds the session's pipeline, applies the offer, and returns the answer once ICE gathering completed. Blocking.
fn negotiate(
    config: &WebrtcConfig,
    caps: &gst::Caps,
    offer: gst_sdp::SDPMessage,
    choice: Choice,
    sound: Option<(gst::Caps, AudioChoice)>,
) -> Result<Negotiated> {
    let fail = |detail: String| Error::dependency(Dependency::Webrtc, detail);
    let pipeline = gst::Pipeline::with_name("whep");
    let appsrc = feed::appsrc("src", caps);
    let started = Arc::new(Notify::new());
    feed::on_need_data(&appsrc, started.clone());
    let pay = gst::ElementFactory::make("rtph264pay")
        .property("pt", choice.pt)
        .property("config-interval", -1i32)
        .property_from_str("aggregate-mode", "zero-latency")
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let filter = make("capsfilter")?;
    filter.set_property(
        "caps",
        gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("encoding-name", "H264")
            .field("clock-rate", 90000i32)
            .field("payload", choice.pt as i32)
            .build(),
    );
    let webrtc = crate::media::webrtc::webrtcbin(config)?;
    let (ice_tx, ice_states) = mpsc::unbounded_channel();
    webrtc.connect_notify(Some("ice-connection-state"), move |w, _| {
        let _ = ice_tx.send(w.property::<gst_webrtc::WebRTCICEConnectionState>("ice-connection-state"));
    });
    let gathering = crate::media::webrtc::Gathering::watch(&webrtc, config.ice_servers.is_empty());
    pipeline.add_many([appsrc.upcast_ref(), &pay, &filter, &webrtc]).map_err(|e| fail(e.to_string()))?;
    gst::Element::link_many([appsrc.upcast_ref(), &pay, &filter]).map_err(|e| fail(e.to_string()))?;
    let teardown = |e: Error| {
        let _ = pipeline.set_state(gst::State::Null);
        e
    };
    pipeline.set_state(gst::State::Playing).map_err(|e| teardown(fail(format!("cannot start: {e}"))))?;
    let offer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, offer);
    crate::media::webrtc::promise(&webrtc, "set-remote-description", &[&offer]).map_err(teardown)?;
    let sink = webrtc
        .request_pad_simple(&format!("sink_{}", choice.mline))
        .ok_or_else(|| teardown(fail("webrtcbin gave no sink pad for the video m-line".into())))?;
    let src = filter.static_pad("src").ok_or_else(|| teardown(fail("capsfilter without src".into())))?;
    src.link(&sink).map_err(|e| teardown(fail(format!("{e:?}"))))?;
    let transceiver = sink.property::<gst_webrtc::WebRTCRTPTransceiver>("transceiver");
    transceiver.set_property("direction", gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly);
    transceiver.set_property("codec-preferences", &choice.preferences);
    let audio = match sound {
        Some((caps, choice)) => Some(add_audio(&pipeline, &webrtc, &caps, &choice).map_err(teardown)?),
        None => None,
    };
    let text = gathering.answer(&webrtc).map_err(teardown)?;
    Ok(Negotiated { pipeline, appsrc, pay, audio, started, ice_states, answer: text })
}

/// The sound's branch of a session (`appsrc ! [decoder ! audioconvert ! audioresample ! opusenc !] payloader !
/// capsfilter`) on its m-line's sendonly transceiver, in a playing pipeline after the remote offer. Blocking.
fn add_audio(
    pipeline: &gst::Pipeline,
    webrtc: &gst::Element,
    caps: &gst::Caps,
    choice: &AudioChoice,
) -> Result<gstreamer_app::AppSrc> {
    let fail = |detail: String| Error::dependency(Dependency::Webrtc, detail);
    let camera = audio_codec_of(caps).ok_or_else(|| fail("the camera's sound has no codec".into()))?;
    let appsrc = feed::appsrc("audio", caps);
    let mut chain: Vec<gst::Element> = vec![appsrc.clone().upcast()];
    if choice.transcode {
        for factory in [camera.decoder(), "audioconvert", "audioresample", "opusenc"] {
            chain.push(make(factory)?);
        }
    }
    chain.push(
        gst::ElementFactory::make(choice.sent.payloader())
            .property("pt", choice.pt)
            .build()
            .map_err(|e| fail(e.to_string()))?,
    );
    let filter = make("capsfilter")?;
    filter.set_property("caps", &choice.preferences);
    chain.push(filter.clone());
    pipeline.add_many(&chain).map_err(|e| fail(e.to_string()))?;
    gst::Element::link_many(&chain).map_err(|e| fail(e.to_string()))?;
    for element in &chain {
        element.sync_state_with_parent().map_err(|e| fail(e.to_string()))?;
    }
    let sink = webrtc
        .request_pad_simple(&format!("sink_{}", choice.mline))
        .ok_or_else(|| fail("webrtcbin gave no sink pad for the audio m-line".into()))?;
    let src = filter.static_pad("src").ok_or_else(|| fail("capsfilter without src".into()))?;
    src.link(&sink).map_err(|e| fail(format!("{e:?}")))?;
    let transceiver = sink.property::<gst_webrtc::WebRTCRTPTransceiver>("transceiver");
    transceiver.set_property("direction", gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly);
    transceiver.set_property("codec-preferences", &choice.preferences);
    Ok(appsrc)
}

/// Runs a negotiated session until it ends; returns why. Tears the pipeline down off the runtime.
async fn run(
    session: Negotiated,
    hub: std::sync::Weak<crate::media::hub::StreamHub>,
    counters: Arc<Counters>,
    stop: CancellationToken,
    disconnect_timeout: Duration,
) -> &'static str {
    let Negotiated { pipeline, appsrc, pay, audio, started, mut ice_states, .. } = session;
    if let Some(pad) = pay.static_pad("src") {
        feed::count_bytes(&pad, counters.clone(), |_| 1);
    }
    let restart = Arc::new(Notify::new());
    let feed_stop = stop.child_token();
    let mut feeding = tokio::spawn(feed::run(Feed {
        appsrc,
        audio,
        hub,
        codec: Codec::H264,
        counters,
        started,
        restart: Some(restart.clone()),
        stop: feed_stop.clone(),
    }));
    let mut bus = pipeline.bus().map(|b| b.stream());
    let opened = Instant::now();
    let mut connected = false;
    let mut unhealthy_since: Option<Instant> = None;
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let why = loop {
        tokio::select! {
            _ = stop.cancelled() => break "ended",
            end = &mut feeding => break match end {
                Ok(feed::FeedEnd::CameraGone) => "camera removed",
                Ok(feed::FeedEnd::CodecChanged) => "camera codec changed",
                _ => "pipeline stopped taking data",
            },
            Some(message) = async { match bus.as_mut() { Some(b) => b.next().await, None => None } } => {
                if let gst::MessageView::Error(e) = message.view() {
                    warn!(err = %e.error(), "webrtc pipeline error");
                    break "pipeline error";
                }
            }
            Some(state) = ice_states.recv() => {
                use gst_webrtc::WebRTCICEConnectionState as S;
                debug!(?state, "ice connection state");
                match state {
                    S::Connected | S::Completed => {
                        unhealthy_since = None;
                        if !connected {
                            connected = true;
                            info!(after_ms = opened.elapsed().as_millis() as u64, "webrtc peer connected");
                            // Start the peer on the current GOP's keyframe rather than at the camera's next one.
                            restart.notify_one();
                        }
                    }
                    S::Failed | S::Disconnected | S::Closed => {
                        unhealthy_since.get_or_insert_with(Instant::now);
                    }
                    _ => {}
                }
            }
            _ = check.tick() => {
                if unhealthy_since.is_some_and(|t| t.elapsed() >= disconnect_timeout) {
                    break "peer gone (ICE failed or disconnected)";
                }
                if !connected && opened.elapsed() >= CONNECT_TIMEOUT {
                    break "peer never connected";
                }
            }
        }
    };
    feed_stop.cancel();
    if !feeding.is_finished() {
        let _ = feeding.await;
    }
    let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 102 106 108\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n\
        a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=rtpmap:108 H264/90000\r\na=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640032\r\n";

    #[test]
    fn the_offer_decides_the_payload_type_preferring_the_cameras_profile() {
        gst::init().expect("gstreamer initialises");
        let sdp = gst_sdp::SDPMessage::parse_buffer(OFFER.as_bytes()).expect("parses");
        let baseline = choose_h264(&sdp, Some(0x42)).expect("h264 offered");
        assert_eq!((baseline.mline, baseline.pt), (1, 106), "packetization-mode 0 is skipped");
        let high = choose_h264(&sdp, Some(0x64)).expect("h264 offered");
        assert_eq!(high.pt, 108);
        assert_eq!(choose_h264(&sdp, Some(0x4d)).expect("some h264").pt, 106, "else the first usable one");
        let vp8_only = OFFER.replace("H264", "H263");
        let sdp = gst_sdp::SDPMessage::parse_buffer(vp8_only.as_bytes()).expect("parses");
        assert!(choose_h264(&sdp, Some(0x42)).is_none());
    }

    #[test]
    fn the_sound_is_sent_as_it_is_where_the_offer_takes_it_else_as_opus() {
        gst::init().expect("gstreamer initialises");
        let sdp = |text: &str| gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).expect("parses");
        let offer = sdp(OFFER);
        let sent = |codec| choose_audio(&offer, codec).map(|c| (c.mline, c.pt, c.sent, c.transcode));
        assert_eq!(sent(AudioCodec::Opus), Some((0, 111, AudioCodec::Opus, false)));
        assert_eq!(sent(AudioCodec::Aac), Some((0, 111, AudioCodec::Opus, true)));
        assert_eq!(sent(AudioCodec::Pcmu), Some((0, 111, AudioCodec::Opus, true)), "PCMU not offered");
        let with_pcmu = sdp(&OFFER
            .replace("111\r\n", "111 0\r\n")
            .replace("a=recvonly\r\na=rtpmap:111", "a=recvonly\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:111"));
        let c = choose_audio(&with_pcmu, AudioCodec::Pcmu).expect("sound");
        assert_eq!((c.pt, c.sent, c.transcode), (0, AudioCodec::Pcmu, false));
        let sending = sdp(&OFFER.replace("a=mid:0\r\na=recvonly", "a=mid:0\r\na=sendonly"));
        assert!(choose_audio(&sending, AudioCodec::Opus).is_none(), "a viewer that does not receive audio");
    }
}
