//! A WebRTC receiving peer: webrtcbin with a recvonly H.264 transceiver (and, when asked, a recvonly Opus one),
//! offering 127.0.0.1 as its candidate, depayloading and decoding what it receives.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;

pub struct Peer {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    pub decoded: Arc<AtomicU64>,
    /// Audio buffers decoded (Opus).
    pub audio_decoded: Arc<AtomicU64>,
    /// The encoding names of the audio streams that arrived.
    pub audio_streams: Arc<Mutex<Vec<String>>>,
}

/// A bin that decodes with `description` into an appsink counting into `count`.
fn counting_bin(description: &str, count: Arc<AtomicU64>) -> gst::Bin {
    let bin = gst::parse::bin_from_description(&format!("{description} ! appsink name=out sync=false"), true)
        .expect("decode bin");
    let sink = bin.by_name("out").and_downcast::<gst_app::AppSink>().expect("appsink");
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let _ = s.pull_sample();
                count.fetch_add(1, Ordering::Relaxed);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    bin
}

fn wait(webrtc: &gst::Element, action: &str, arg: &dyn ToValue) -> Option<gst::Structure> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = gst::Promise::with_change_func(move |r| {
        let _ = tx.send(r.ok().flatten().map(|s| s.to_owned()));
    });
    webrtc.emit_by_name_with_values(action, &[arg.to_value(), p.to_value()]);
    rx.recv_timeout(Duration::from_secs(10)).expect("promise answered")
}

impl Peer {
    /// A peer receiving video, and audio (Opus) when `audio`.
    pub fn new(audio: bool) -> Peer {
        gst::init().expect("gstreamer");
        let pipeline = gst::Pipeline::new();
        let webrtc = gst::ElementFactory::make("webrtcbin").build().expect("webrtcbin");
        webrtc.set_property_from_str("bundle-policy", "max-bundle");
        pipeline.add(&webrtc).expect("add");
        let ice = webrtc.property::<gst::Object>("ice-agent");
        let _ = ice.emit_by_name::<bool>("add-local-ip-address", &[&"127.0.0.1"]);
        let caps = gst::Caps::from_str(
            "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=102,\
             packetization-mode=(string)1,profile-level-id=(string)42e01f",
        )
        .expect("caps");
        let _ = webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
            "add-transceiver",
            &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
        );
        if audio {
            let caps = gst::Caps::from_str(
                "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111,\
                 encoding-params=(string)2",
            )
            .expect("caps");
            let _ = webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                "add-transceiver",
                &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
            );
        }
        let decoded = Arc::new(AtomicU64::new(0));
        let audio_decoded = Arc::new(AtomicU64::new(0));
        let audio_streams = Arc::new(Mutex::new(Vec::new()));
        let pipe = pipeline.clone();
        let (count, audio_count, streams) = (decoded.clone(), audio_decoded.clone(), audio_streams.clone());
        webrtc.connect_pad_added(move |_, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let s = caps.structure(0).expect("rtp caps");
            let bin = if s.get::<&str>("media") == Ok("audio") {
                let encoding = s.get::<&str>("encoding-name").unwrap_or("").to_owned();
                streams.lock().expect("not poisoned").push(encoding);
                counting_bin("rtpopusdepay ! opusdec", audio_count.clone())
            } else {
                counting_bin("rtph264depay ! h264parse ! avdec_h264", count.clone())
            };
            pipe.add(&bin).expect("add decode bin");
            bin.sync_state_with_parent().expect("sync");
            let sinkpad = bin.static_pad("sink").expect("ghost sink");
            pad.link(&sinkpad).expect("link");
        });
        pipeline.set_state(gst::State::Playing).expect("playing");
        Peer { pipeline, webrtc, decoded, audio_decoded, audio_streams }
    }

    /// The complete offer (ICE gathered).
    pub fn offer(&self) -> String {
        let reply = wait(&self.webrtc, "create-offer", &None::<gst::Structure>).expect("offer");
        let offer = reply.get::<gst_webrtc::WebRTCSessionDescription>("offer").expect("offer field");
        let _ = wait(&self.webrtc, "set-local-description", &offer);
        for _ in 0..100 {
            if self.webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
                == gst_webrtc::WebRTCICEGatheringState::Complete
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let local = self.webrtc.property::<gst_webrtc::WebRTCSessionDescription>("local-description");
        local.sdp().as_text().expect("sdp text")
    }

    pub fn answer(&self, sdp: &str) {
        let msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).expect("answer parses");
        let answer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, msg);
        let _ = wait(&self.webrtc, "set-remote-description", &answer);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
