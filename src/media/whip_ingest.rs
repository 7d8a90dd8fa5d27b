//! WHIP ingest: a WebRTC publisher (OBS, a browser) pushing to a camera. Its SDP offer becomes a receiving
//! `webrtcbin` (max-bundle, recvonly, non-trickle: the answer carries every candidate gathered) whose H.264 video
//! goes `rtph264depay ! h264parse ! capsfilter(avc, au) ! appsink` into the camera's hub, and the publisher an
//! [`Arrival`] for the camera's [`PushSlot`]. The answer keeps one H.264 format of the offer (packetization-mode 1),
//! so the publisher encodes H.264 even when it prefers another codec. Its sound (Opus) goes `rtpopusdepay !
//! opusparse ! queue ! appsink` to the hub's audio track as it came, on the video's timeline (both are the running time
//! of this pipeline, where the RTP session placed and lip-synced them); sound that flows before the feed brings the
//! hub is dropped, never held. The feed runs until the peer's connection fails or closes, the publisher ends its session
//! (DELETE), or the camera's supervisor stops the attempt; until the first keyframe it asks the publisher for one
//! every second (an upstream force-key-unit event, which the RTP session sends as a PLI). Negotiation (webrtcbin's
//! promises, ICE gathering) and teardown run on the blocking pool; the feed runs on the media runtime. This module
//! knows neither stream keys, cameras nor HTTP: whoever checked the key hands it the camera's slot.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use parking_lot::Mutex;
use rand::RngCore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::hub::StreamHub;
use super::ingest::{add_audio_branch_to, hub_sink};
use super::make;
use super::push::{Arrival, Feed, Protocol, PushSlot, Refusal};
use crate::base::{AudioCodec, Codec, Failure};
use crate::config::WebrtcConfig;
use crate::error::{Dependency, Error, Result, State};

/// Publishing sessions at once, all cameras together, those still negotiating included.
pub const MAX_SESSIONS: usize = 32;
/// How often a keyframe is asked for until the first one arrives.
const KEYFRAME_REQUEST_EVERY: Duration = Duration::from_secs(1);

/// The live WHIP sessions, so a publisher can end its own (DELETE).
#[derive(Default)]
pub struct WhipSessions {
    /// By session id; shared with each session's [`Hold`], which unregisters it. Short critical sections only,
    /// never across a call into GStreamer.
    sessions: Arc<Mutex<HashMap<String, Entry>>>,
}

struct Entry {
    /// The camera the session publishes to: a DELETE must name the same camera. Weak: a session whose arrival waits
    /// in the slot must not keep a removed camera's slot, and with it the arrival, alive.
    slot: Weak<PushSlot>,
    /// Fired by DELETE.
    end: CancellationToken,
}

/// A negotiated session: its id (for the `Location` header) and the SDP answer.
#[derive(Debug)]
pub struct Answer {
    pub session: String,
    pub sdp: String,
}

/// Why a publisher was not taken.
#[derive(Debug)]
pub enum Rejected {
    /// The camera's slot refused it: another publisher is on, or the camera is gone.
    Slot(Refusal),
    Failed(Error),
}

impl From<Error> for Rejected {
    fn from(e: Error) -> Self {
        Rejected::Failed(e)
    }
}

impl WhipSessions {
    /// Answers a WHIP offer and hands the publisher to `slot`, the camera its stream key opened.
    pub async fn publish(
        &self,
        config: &WebrtcConfig,
        slot: Arc<PushSlot>,
        offer: &str,
    ) -> std::result::Result<Answer, Rejected> {
        let sdp = gst_sdp::SDPMessage::parse_buffer(offer.as_bytes())
            .map_err(|_| Error::invalid_param("body", "not an SDP offer"))?;
        let plan = Plan::of(&sdp)
            .ok_or_else(|| Error::invalid_param("body", "the offer has no H.264 video (packetization-mode 1)"))?;
        if slot.publishing() {
            return Err(Rejected::Slot(Refusal::Busy));
        }
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let session = hex::encode(id);
        let end = CancellationToken::new();
        {
            let mut sessions = self.sessions.lock();
            if sessions.len() >= MAX_SESSIONS {
                return Err(Error::invalid_state(State::SessionLimit, &[]).into());
            }
            sessions.insert(session.clone(), Entry { slot: Arc::downgrade(&slot), end: end.clone() });
        }
        // From here on, whatever happens to the session (refused, never run, ended) unregisters it and stops its
        // pipeline when this is dropped.
        let mut hold = Hold { id: session.clone(), sessions: self.sessions.clone(), pipeline: None };
        let blocking_config = config.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            if let Err(Ok(unwanted)) = tx.send(negotiate(&blocking_config, sdp, &plan)) {
                // The request was given up (the publisher hung up) while negotiating: nobody will run this pipeline.
                let _ = unwanted.pipeline.set_state(gst::State::Null);
            }
        });
        let negotiated = rx.await.map_err(|_| Error::internal("whip negotiation panicked"))??;
        hold.pipeline = Some(negotiated.pipeline.clone());
        let answer = negotiated.answer.clone();
        let disconnect_timeout = config.disconnect_timeout;
        let short = session[..8].to_owned();
        let feed: Feed = Box::new(move |hub, stop| {
            Box::pin(async move {
                info!(session = short, "whip publisher started");
                let ended = run(negotiated, hold, hub, stop, end, disconnect_timeout).await;
                info!(session = short, reason = ended.reason, "whip publisher ended");
                ended
            })
        });
        slot.offer(Arrival::new(Protocol::Whip, feed)).map_err(Rejected::Slot)?;
        Ok(Answer { session, sdp: answer })
    }

    /// Ends `session` if it publishes to `slot`; false if there is no such session.
    pub fn end(&self, slot: &Arc<PushSlot>, session: &str) -> bool {
        let sessions = self.sessions.lock();
        match sessions.get(session) {
            Some(e) if std::ptr::eq(e.slot.as_ptr(), Arc::as_ptr(slot)) => {
                e.end.cancel();
                true
            }
            _ => false,
        }
    }
}

/// A session's registration and pipeline: dropped when its feed ends, or with its arrival when the camera refused
/// or never ran it, it unregisters the session and stops the pipeline.
struct Hold {
    id: String,
    sessions: Arc<Mutex<HashMap<String, Entry>>>,
    /// Taken by the feed, which stops it itself.
    pipeline: Option<gst::Pipeline>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
        if let Some(pipeline) = self.pipeline.take() {
            let stop = move || {
                let _ = pipeline.set_state(gst::State::Null);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(stop)),
                Err(_) => stop(),
            }
        }
    }
}

/// What the answer takes from the offer: the m-line and format of the video (H.264, packetization-mode 1), and of
/// the audio (Opus) if any, each as the caps of the one format the answer keeps.
#[derive(Debug)]
struct Plan {
    video: (u32, gst::Caps),
    audio: Option<(u32, gst::Caps)>,
}

impl Plan {
    fn of(sdp: &gst_sdp::SDPMessageRef) -> Option<Plan> {
        let mut video = None;
        let mut audio = None;
        for (mline, media) in sdp.medias().enumerate() {
            match media.media() {
                Some("video") if video.is_none() => {
                    video = format_of(media, "video", |name, fmtp| {
                        name.eq_ignore_ascii_case("H264")
                            && fmtp.get("packetization-mode").map(String::as_str) == Some("1")
                    })
                    .map(|caps| (mline as u32, caps));
                }
                Some("audio") if audio.is_none() => {
                    audio = format_of(media, "audio", |name, _| name.eq_ignore_ascii_case("OPUS"))
                        .map(|caps| (mline as u32, caps));
                }
                _ => {}
            }
        }
        Some(Plan { video: video?, audio })
    }

    /// The caps of each planned m-line, in the offer's order.
    fn transceivers(&self) -> Vec<&gst::Caps> {
        let mut planned: Vec<&(u32, gst::Caps)> = std::iter::once(&self.video).chain(self.audio.as_ref()).collect();
        planned.sort_by_key(|(mline, _)| *mline);
        planned.into_iter().map(|(_, caps)| caps).collect()
    }
}

/// The caps (as webrtcbin's codec preferences take them) of the first format of `media` that `wanted` accepts, by
/// its encoding name and `a=fmtp` parameters.
fn format_of(
    media: &gst_sdp::SDPMediaRef,
    kind: &str,
    wanted: impl Fn(&str, &HashMap<String, String>) -> bool,
) -> Option<gst::Caps> {
    media.formats().find_map(|format| {
        let pt = format.parse::<i32>().ok()?;
        let mut caps = media.caps_from_media(pt)?;
        let name = caps.structure(0)?.get::<&str>("encoding-name").ok()?.to_owned();
        if !wanted(&name, &crate::media::webrtc::fmtp_of(media, pt)) {
            return None;
        }
        {
            let s = caps.make_mut().structure_mut(0)?;
            s.set_name("application/x-rtp");
            s.set("media", kind);
        }
        Some(caps)
    })
}

/// The publisher's connection as the feed watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    /// May recover (ICE consent lost for a while).
    Down,
    Failed,
    Closed,
}

/// A negotiated session: its pipeline, where its video meets the hub, its connection's changes and the answer.
struct Negotiated {
    pipeline: gst::Pipeline,
    meet: Arc<Meet>,
    links: mpsc::UnboundedReceiver<Link>,
    answer: String,
}

/// Where the publisher's video meets the camera's hub. The video pad appears on a streaming thread when media
/// arrives; the hub comes when the camera's supervisor runs the feed; whichever comes second links them. Until then
/// the video waits, blocked, at the end of its depayloading chain.
#[derive(Default)]
struct Meet {
    state: Mutex<MeetState>,
}

#[derive(Default)]
struct MeetState {
    hub: Option<Arc<StreamHub>>,
    /// A video stream was taken (further ones are dropped).
    video: bool,
    /// An audio stream was taken (further ones are dropped).
    audio: bool,
    /// The end of the video chain waiting for the hub, and the probe that holds its data.
    waiting: Option<(gst::Pad, gst::PadProbeId)>,
    /// The depayloader's sink pad, where keyframe requests go upstream.
    depay_sink: Option<gst::Pad>,
}

impl Meet {
    /// The feed started: links the video to `hub` if it is waiting, after telling the hub of the sound already
    /// flowing (the hub wants the audio caps before the first video frame).
    fn attach(&self, pipeline: &gst::Pipeline, hub: Arc<StreamHub>) {
        let waiting = {
            let mut st = self.state.lock();
            st.hub = Some(hub.clone());
            st.waiting.take()
        };
        if let Some(caps) =
            pipeline.by_name("hub-audio").and_then(|sink| sink.static_pad("sink")).and_then(|pad| pad.current_caps())
        {
            hub.push_audio_caps(caps);
        }
        if let Some((pad, probe)) = waiting
            && let Err(e) = link_hub(pipeline, &pad, probe, hub)
        {
            gst::element_error!(pipeline, gst::StreamError::Failed, ("{}", e));
        }
    }

    /// Whether a video stream may still be taken; true once.
    fn claim_video(&self) -> bool {
        !std::mem::replace(&mut self.state.lock().video, true)
    }

    /// Whether an audio stream may still be taken; true once.
    fn claim_audio(&self) -> bool {
        !std::mem::replace(&mut self.state.lock().audio, true)
    }

    /// The hub, once the feed brought it.
    fn hub(&self) -> Option<Arc<StreamHub>> {
        self.state.lock().hub.clone()
    }

    /// The video chain is ready, its end `tail` held by `probe`: linked to the hub now if the feed has started.
    fn video_ready(
        &self,
        pipeline: &gst::Pipeline,
        tail: gst::Pad,
        probe: gst::PadProbeId,
        depay_sink: gst::Pad,
    ) -> Result<(), String> {
        let hub = {
            let mut st = self.state.lock();
            st.depay_sink = Some(depay_sink);
            match st.hub.clone() {
                Some(hub) => hub,
                None => {
                    st.waiting = Some((tail, probe));
                    return Ok(());
                }
            }
        };
        link_hub(pipeline, &tail, probe, hub)
    }

    /// Asks the publisher for a keyframe (the RTP session sends a PLI); nothing before its video arrived.
    fn request_keyframe(&self) {
        let pad = self.state.lock().depay_sink.clone();
        if let Some(pad) = pad {
            debug!("asking the publisher for a keyframe");
            pad.push_event(gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build());
        }
    }
}

/// Ends the video chain at `tail` with the hub's appsink and lets the held data through.
fn link_hub(
    pipeline: &gst::Pipeline,
    tail: &gst::Pad,
    probe: gst::PadProbeId,
    hub: Arc<StreamHub>,
) -> Result<(), String> {
    let sink = hub_sink(hub);
    // Added to a playing pipeline: it must not wait for a preroll the live pipeline never gives.
    sink.set_property("async", false);
    pipeline.add(&sink).map_err(|e| e.to_string())?;
    let sink_pad = sink.static_pad("sink").ok_or("appsink without sink pad")?;
    tail.link(&sink_pad).map_err(|e| format!("linking the hub: {e:?}"))?;
    sink.sync_state_with_parent().map_err(|e| e.to_string())?;
    tail.remove_probe(probe);
    Ok(())
}

/// A new stream from the publisher (on a streaming thread): the first H.264 video and the first Opus audio to the
/// hub, anything else dropped.
fn on_pad(pipeline: &gst::Pipeline, pad: &gst::Pad, meet: &Arc<Meet>) -> Result<(), String> {
    if pad.direction() != gst::PadDirection::Src {
        return Ok(());
    }
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let s = caps.structure(0).ok_or("a stream without caps")?;
    let media = s.get::<&str>("media").unwrap_or("");
    let encoding = s.get::<&str>("encoding-name").unwrap_or("");
    if media == "video" && encoding.eq_ignore_ascii_case("H264") && meet.claim_video() {
        return link_video(pipeline, pad, meet);
    }
    if media == "audio" && encoding.eq_ignore_ascii_case(AudioCodec::Opus.encoding_name()) && meet.claim_audio() {
        return link_audio(pipeline, pad, meet);
    }
    // Any further stream is received and dropped (the answer accepts one H.264 format on the first video m-line that
    // offers it and Opus on the first audio one; other m-lines keep their formats).
    debug!(media, encoding, "dropping a stream of the publisher");
    drop_stream(pipeline, pad)
}

/// Receives a stream of the publisher into a `fakesink`.
fn drop_stream(pipeline: &gst::Pipeline, pad: &gst::Pad) -> Result<(), String> {
    let sink = make("fakesink").map_err(|e| e.to_string())?;
    sink.set_property("sync", false);
    sink.set_property("async", false);
    pipeline.add(&sink).map_err(|e| e.to_string())?;
    sink.sync_state_with_parent().map_err(|e| e.to_string())?;
    let sink_pad = sink.static_pad("sink").ok_or("fakesink without sink pad")?;
    pad.link(&sink_pad).map_err(|e| format!("linking a dropped stream: {e:?}"))?;
    Ok(())
}

/// `depay ! parse ! capsfilter` for the publisher's H.264, its end held until the hub is there.
fn link_video(pipeline: &gst::Pipeline, pad: &gst::Pad, meet: &Meet) -> Result<(), String> {
    let codec = Codec::H264;
    let depay = make(codec.depayloader()).map_err(|e| e.to_string())?;
    // A lost packet asks for a keyframe and drops what cannot be decoded until it comes.
    depay.set_property("request-keyframe", true);
    depay.set_property("wait-for-keyframe", true);
    let (parse, filter) = super::ingest::parser_to_hub(codec)?;
    let chain = [&depay, &parse, &filter];
    pipeline.add_many(chain).map_err(|e| e.to_string())?;
    gst::Element::link_many(chain).map_err(|e| e.to_string())?;
    let tail = filter.static_pad("src").ok_or("capsfilter without src pad")?;
    let probe = tail
        .add_probe(gst::PadProbeType::BLOCK_DOWNSTREAM, |_, _| gst::PadProbeReturn::Ok)
        .ok_or("cannot hold the video until the camera takes it")?;
    for element in chain {
        element.sync_state_with_parent().map_err(|e| e.to_string())?;
    }
    let depay_sink = depay.static_pad("sink").ok_or("depayloader without sink pad")?;
    pad.link(&depay_sink).map_err(|e| format!("linking the video: {e:?}"))?;
    meet.video_ready(pipeline, tail, probe, depay_sink)
}

/// `rtpopusdepay ! opusparse ! queue ! appsink` for the publisher's Opus, to the hub's audio track once the feed
/// brought the hub (dropped until then: the video waits for a keyframe anyway, and audio before it is not kept).
/// The chain is linked from its end, so no buffer reaches an unlinked pad.
fn link_audio(pipeline: &gst::Pipeline, pad: &gst::Pad, meet: &Arc<Meet>) -> Result<(), String> {
    let depay = make(AudioCodec::Opus.depayloader()).map_err(|e| e.to_string())?;
    pipeline.add(&depay).map_err(|e| e.to_string())?;
    let depay_src = depay.static_pad("src").ok_or("depayloader without src pad")?;
    let meet = Arc::downgrade(meet);
    // PTS as they come: the running time of this pipeline, as the video's.
    let linked = add_audio_branch_to(pipeline, &depay_src, move || meet.upgrade()?.hub(), false, |_, _| {})?;
    if !linked {
        let _ = pipeline.remove(&depay);
        return drop_stream(pipeline, pad);
    }
    depay.sync_state_with_parent().map_err(|e| e.to_string())?;
    let depay_sink = depay.static_pad("sink").ok_or("depayloader without sink pad")?;
    pad.link(&depay_sink).map_err(|e| format!("linking the audio: {e:?}"))?;
    Ok(())
}

/// Builds the receiving pipeline, applies the offer, and returns the answer once ICE gathering completed. Blocking.
fn negotiate(config: &WebrtcConfig, offer: gst_sdp::SDPMessage, plan: &Plan) -> Result<Negotiated> {
    let fail = |detail: String| Error::dependency(Dependency::Webrtc, detail);
    let pipeline = gst::Pipeline::with_name("whip");
    let webrtc = crate::media::webrtc::webrtcbin(config)?;
    // ICE consent and DTLS both end a connection: webrtcbin's peer connection state covers them together.
    let (link_tx, links) = mpsc::unbounded_channel();
    webrtc.connect_notify(Some("connection-state"), move |w, _| {
        use gst_webrtc::WebRTCPeerConnectionState as S;
        let link = match w.property::<S>("connection-state") {
            S::Connected => Link::Up,
            S::Disconnected => Link::Down,
            S::Failed => Link::Failed,
            S::Closed => Link::Closed,
            _ => return,
        };
        let _ = link_tx.send(link);
    });
    let meet = Arc::new(Meet::default());
    let pipeline_weak = pipeline.downgrade();
    let pad_meet = meet.clone();
    webrtc.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else { return };
        if let Err(e) = on_pad(&pipeline, pad, &pad_meet) {
            // Surfaced on the bus, where the feed sees it.
            gst::element_error!(pipeline, gst::StreamError::Failed, ("{}", e));
        }
    });
    let gathering = crate::media::webrtc::Gathering::watch(&webrtc, config.ice_servers.is_empty());
    pipeline.add(&webrtc).map_err(|e| fail(e.to_string()))?;
    let teardown = |e: Error| {
        let _ = pipeline.set_state(gst::State::Null);
        e
    };
    pipeline.set_state(gst::State::Playing).map_err(|e| teardown(fail(format!("cannot start: {e}"))))?;
    let offer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, offer);
    crate::media::webrtc::promise(&webrtc, "set-remote-description", &[&offer]).map_err(teardown)?;
    // webrtcbin 1.22 makes the transceivers of a remote offer only when answering, taking for each m-line an
    // unassociated one whose codecs intersect the offer's: these, one per planned m-line, each with the one format
    // the answer keeps. M-lines without a plan get webrtcbin's own transceivers (all their formats; dropped media).
    for preferences in plan.transceivers() {
        let _ = webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
            "add-transceiver",
            &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, preferences],
        );
    }
    let text = gathering.answer(&webrtc).map_err(teardown)?;
    Ok(Negotiated { pipeline, meet, links, answer: text })
}

/// Feeds `hub` from a negotiated session until the publisher goes, ends its session (`end`), or `stop` fires; then
/// stops the pipeline off the runtime and unregisters the session.
async fn run(
    session: Negotiated,
    mut hold: Hold,
    hub: Arc<StreamHub>,
    stop: CancellationToken,
    end: CancellationToken,
    disconnect_timeout: Duration,
) -> Failure {
    let Negotiated { pipeline, meet, mut links, .. } = session;
    let mut bus = pipeline.bus().map(|b| b.stream());
    meet.attach(&pipeline, hub.clone());
    drop(pipeline);
    let mut keyframe_seen = false;
    let mut ask = tokio::time::interval(KEYFRAME_REQUEST_EVERY);
    let mut down_since: Option<tokio::time::Instant> = None;
    let ended = loop {
        // A connection down for `disconnect_timeout` is gone.
        let gone = async {
            match down_since {
                Some(t) => tokio::time::sleep_until(t + disconnect_timeout).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break Failure::retry("stopped"),
            _ = end.cancelled() => break Failure::retry("the publisher ended its session"),
            _ = hub.first_frame(), if !keyframe_seen => keyframe_seen = true,
            _ = ask.tick(), if !keyframe_seen => meet.request_keyframe(),
            Some(message) = async { match bus.as_mut() { Some(b) => b.next().await, None => None } } => {
                match message.view() {
                    gst::MessageView::Error(e) => break Failure::retry(format!("whip pipeline: {}", e.error())),
                    gst::MessageView::Warning(w) => debug!(warning = %w.error(), "whip pipeline warning"),
                    _ => {}
                }
            }
            Some(link) = links.recv() => match link {
                Link::Up => down_since = None,
                Link::Down => {
                    down_since.get_or_insert_with(tokio::time::Instant::now);
                }
                Link::Failed => break Failure::retry("the publisher's connection failed"),
                Link::Closed => break Failure::retry("the publisher closed its connection"),
            },
            _ = gone => break Failure::retry("the publisher's connection dropped"),
        }
    };
    if let Some(pipeline) = hold.pipeline.take()
        && let Err(e) = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await
    {
        warn!(err = %e, "whip pipeline teardown panicked");
    }
    drop(hold);
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of Chromium's offer with H.264 preferred (candidates and most formats left out).
    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 63 0\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:PFQz\r\n\
        a=ice-pwd:osF4SIw8WmIZgUqDlUFAuX/S\r\na=fingerprint:sha-256 47:11:1E:BA:BA:81:E6:49:33:96:1C:C1:92:2D:6A:A5:\
        03:F1:AD:E9:6F:00:BF:71:79:C2:6E:AE:BC:5A:F9:58\r\na=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\n\
        a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
        a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:0 PCMU/8000\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 104 102 103\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:PFQz\r\n\
        a=ice-pwd:osF4SIw8WmIZgUqDlUFAuX/S\r\na=fingerprint:sha-256 47:11:1E:BA:BA:81:E6:49:33:96:1C:C1:92:2D:6A:A5:\
        03:F1:AD:E9:6F:00:BF:71:79:C2:6E:AE:BC:5A:F9:58\r\na=setup:actpass\r\na=mid:1\r\na=sendonly\r\na=rtcp-mux\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack pli\r\n\
        a=rtpmap:104 H264/90000\r\na=rtcp-fb:104 nack pli\r\n\
        a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n\
        a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 ccm fir\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
        a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n";

    fn sdp(text: &str) -> gst_sdp::SDPMessage {
        gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).expect("parses")
    }

    fn pt(caps: &gst::Caps) -> i32 {
        caps.structure(0).and_then(|s| s.get::<i32>("payload").ok()).expect("a payload type")
    }

    #[test]
    fn the_plan_takes_h264_in_packetization_mode_1_and_opus() {
        gst::init().expect("gstreamer initialises");
        let plan = Plan::of(&sdp(OFFER)).expect("h264 offered");
        assert_eq!((plan.video.0, pt(&plan.video.1)), (1, 102), "VP8 and packetization-mode 0 are passed over");
        let audio = plan.audio.as_ref().expect("opus offered");
        assert_eq!((audio.0, pt(&audio.1)), (0, 111));
        assert!(Plan::of(&sdp(&OFFER.replace("H264", "H263"))).is_none(), "no H.264, no plan");
        let silent = Plan::of(&sdp(&OFFER.replace("opus", "speex"))).expect("video alone is enough");
        assert!(silent.audio.is_none());
    }

    #[test]
    fn the_answer_receives_the_chosen_h264_format_only() {
        gst::init().expect("gstreamer initialises");
        let offer = sdp(OFFER);
        let plan = Plan::of(&offer).expect("h264 offered");
        let config = WebrtcConfig {
            enabled: true,
            ice_servers: Vec::new(),
            candidate_addresses: vec!["127.0.0.1".parse().expect("an address")],
            max_sessions: 1,
            disconnect_timeout: Duration::from_secs(1),
        };
        let negotiated = negotiate(&config, offer, &plan).expect("negotiates");
        let answer = negotiated.answer.clone();
        let _ = negotiated.pipeline.set_state(gst::State::Null);
        let video = answer.split("m=video").nth(1).expect("a video m-line");
        assert!(video.starts_with(" 9 UDP/TLS/RTP/SAVPF 102\r\n"), "{answer}");
        assert!(video.contains("a=recvonly") && video.contains("a=rtcp-fb:102 nack pli"), "{answer}");
        assert!(video.contains("packetization-mode=1"), "{answer}");
        let audio = answer.split("m=audio").nth(1).and_then(|a| a.split("m=video").next()).expect("an audio m-line");
        assert!(audio.starts_with(" 9 UDP/TLS/RTP/SAVPF 111\r\n") && audio.contains("a=recvonly"), "{answer}");
        assert!(answer.contains("a=candidate:"), "non-trickle: the answer carries its candidates\n{answer}");
    }
}
