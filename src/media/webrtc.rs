//! The webrtcbin both WebRTC directions share (WHEP viewers, WHIP publishers): the element as configured, its promise
//! actions run to their reply, an offer's format parameters, and the non-trickle answer: created, set, and sent once
//! ICE gathering is done (or, with host candidates only, as soon as they are known).

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use tracing::warn;

use crate::config::WebrtcConfig;
use crate::error::{Dependency, Error, Result};

/// The longest the answer waits for ICE gathering; what was gathered by then is sent.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// With host candidates only, how long after the first one the answer waits for the rest (they are gathered together).
const HOST_CANDIDATES_SETTLE: Duration = Duration::from_millis(10);
/// The longest a promise of webrtcbin may take.
const PROMISE_TIMEOUT: Duration = Duration::from_secs(5);

/// A `webrtcbin` as camhub uses it both ways: max-bundle, the configured STUN/TURN servers, and only the configured
/// local addresses as host candidates when some are given.
pub fn webrtcbin(config: &WebrtcConfig) -> Result<gst::Element> {
    let webrtc = super::make("webrtcbin")?;
    webrtc.set_property_from_str("bundle-policy", "max-bundle");
    for server in &config.ice_servers {
        if server.scheme() == "stun" {
            webrtc.set_property("stun-server", server.as_str());
        } else {
            let _ = webrtc.emit_by_name::<bool>("add-turn-server", &[&server.as_str()]);
        }
    }
    if !config.candidate_addresses.is_empty() {
        let ice = webrtc.property::<gst::Object>("ice-agent");
        for address in &config.candidate_addresses {
            let _ = ice.emit_by_name::<bool>("add-local-ip-address", &[&address.to_string()]);
        }
    }
    Ok(webrtc)
}

/// The `a=fmtp:PT` parameters of a media, keys lowercased.
pub fn fmtp_of(media: &gst_sdp::SDPMediaRef, pt: i32) -> HashMap<String, String> {
    let prefix = format!("{pt} ");
    (0..media.attributes_len())
        .filter_map(|i| media.attribute_val_n("fmtp", i))
        .find_map(|v| v.strip_prefix(&prefix))
        .map(|params| {
            params
                .split(';')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs one of webrtcbin's promise actions and waits for its reply. Blocking.
pub fn promise(webrtc: &gst::Element, action: &str, args: &[&dyn ToValue]) -> Result<Option<gst::Structure>> {
    let (tx, rx) = mpsc::channel();
    let p = gst::Promise::with_change_func(move |reply| {
        let _ = tx.send(reply.map(|r| r.map(|s| s.to_owned())).map_err(|e| format!("{e:?}")));
    });
    let mut values: Vec<glib::Value> = args.iter().map(|a| a.to_value()).collect();
    values.push(p.to_value());
    webrtc.emit_by_name_with_values(action, &values);
    match rx.recv_timeout(PROMISE_TIMEOUT) {
        Ok(Ok(reply)) => {
            if let Some(s) = &reply
                && let Ok(e) = s.get::<glib::Error>("error")
            {
                return Err(Error::dependency(Dependency::Webrtc, format!("{action}: {e}")));
            }
            Ok(reply)
        }
        Ok(Err(e)) => Err(Error::dependency(Dependency::Webrtc, format!("{action}: {e}"))),
        Err(_) => Err(Error::dependency(Dependency::Webrtc, format!("{action} timed out"))),
    }
}

/// What the answer waits on: webrtcbin's first candidate and the end of its gathering. Made before the pipeline
/// starts, so no signal is missed.
pub struct Gathering {
    first_candidate: Option<mpsc::Receiver<()>>,
    gathered: mpsc::Receiver<()>,
}

impl Gathering {
    /// Watches `webrtc`. Without STUN or TURN servers every candidate is a host candidate, known as soon as the local
    /// description is set; libnice reports the end of gathering about 200 ms later. Such an answer goes out at its
    /// first candidate (plus a moment for the others gathered with it) instead of waiting for that report.
    pub fn watch(webrtc: &gst::Element, host_only: bool) -> Gathering {
        let first_candidate = host_only.then(|| {
            let (tx, rx) = mpsc::channel();
            webrtc.connect("on-ice-candidate", false, move |_| {
                let _ = tx.send(());
                None
            });
            rx
        });
        let (tx, gathered) = mpsc::channel();
        webrtc.connect_notify(Some("ice-gathering-state"), move |w, _| {
            if w.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
                == gst_webrtc::WebRTCICEGatheringState::Complete
            {
                let _ = tx.send(());
            }
        });
        Gathering { first_candidate, gathered }
    }

    /// Creates and sets the answer to the remote offer already set, waits for the candidates (non-trickle), and
    /// returns the local description's SDP. Blocking.
    pub fn answer(self, webrtc: &gst::Element) -> Result<String> {
        let fail = |e: String| Error::dependency(Dependency::Webrtc, e);
        let reply = promise(webrtc, "create-answer", &[&None::<gst::Structure>])?;
        let answer = reply
            .and_then(|r| r.get::<gst_webrtc::WebRTCSessionDescription>("answer").ok())
            .ok_or_else(|| fail("webrtcbin made no answer".into()))?;
        promise(webrtc, "set-local-description", &[&answer])?;
        let complete = || {
            webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
                == gst_webrtc::WebRTCICEGatheringState::Complete
        };
        let host_only = self.first_candidate.is_some_and(|rx| rx.recv_timeout(GATHER_TIMEOUT).is_ok());
        if host_only {
            std::thread::sleep(HOST_CANDIDATES_SETTLE);
        } else if !complete() && self.gathered.recv_timeout(GATHER_TIMEOUT).is_err() {
            // Non-trickle: wait for every candidate (fast on a LAN); after the timeout, answer with what there is.
            warn!("ICE gathering did not complete in time; answering with the candidates gathered so far");
        }
        let local = webrtc
            .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
            .ok_or_else(|| fail("no local description".into()))?;
        local.sdp().as_text().map_err(|e| fail(e.to_string()))
    }
}
