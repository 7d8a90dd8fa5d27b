//! Cameras: their public ids, sources and observed state. The registry and the per-camera supervisors live in
//! `manager` and `supervisor`; this module owns the nouns they share. It knows nothing about the RPC wire format.

pub mod device;
pub mod manager;
pub mod supervisor;

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use crate::media::hub::StreamHub;

pub use manager::CameraManager;

/// A camera's public id: `[a-z0-9_-]{1,64}`. Device paths and URLs never serve as ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CameraId(String);

impl CameraId {
    pub const RULE: &'static str = "must match [a-z0-9_-]{1,64}";

    pub fn parse(s: &str) -> Result<CameraId, &'static str> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok { Ok(CameraId(s.to_owned())) } else { Err(Self::RULE) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `s` is an `rtsp://` or `rtsps://` URL with a host.
pub fn parse_stream_url(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "rtsp" | "rtsps") {
        return Err(format!("scheme must be rtsp or rtsps, not {:?}", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    Ok(url)
}

/// The URL without its user and password.
pub fn strip_credentials(url: &url::Url) -> url::Url {
    let mut clean = url.clone();
    // Both setters only fail for URLs that cannot have credentials, which then have none to strip.
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean
}

/// The URL as logs, errors and responses may show it: no credentials.
pub fn redact_url(url: &url::Url) -> String {
    strip_credentials(url).to_string()
}

/// The user and password of a URL as typed (they arrive percent-encoded), if it has a user.
pub fn credentials(url: &url::Url) -> Option<(String, String)> {
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    (!url.username().is_empty()).then(|| (decode(url.username()), url.password().map(decode).unwrap_or_default()))
}

/// Where a camera's frames come from.
#[derive(Debug, Clone)]
pub enum CameraSource {
    /// A network camera; the URL may carry credentials and so never leaves the process.
    Rtsp { url: url::Url },
    /// A local V4L2 (USB) device, known by its physical identity; its node comes and goes with hot-plug.
    V4l2 { device: Arc<device::LocalDevice> },
}

impl CameraSource {
    pub fn kind(&self) -> &'static str {
        match self {
            CameraSource::Rtsp { .. } => "rtsp",
            CameraSource::V4l2 { .. } => "v4l2",
        }
    }

    pub fn device(&self) -> Option<&Arc<device::LocalDevice>> {
        match self {
            CameraSource::V4l2 { device } => Some(device),
            CameraSource::Rtsp { .. } => None,
        }
    }
}

/// Who declared the camera: the config file or a client at run time (persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Config,
    Api,
    /// Found on the machine (a V4L2 device through udev).
    Discovered,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
            Origin::Discovered => "discovered",
        }
    }
}

/// The states the contract names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CameraStatus {
    Connected,
    Disconnected,
    Error,
}

impl CameraStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CameraStatus::Connected => "CONNECTED",
            CameraStatus::Disconnected => "DISCONNECTED",
            CameraStatus::Error => "ERROR",
        }
    }
}

/// What the supervisor last observed.
#[derive(Debug, Clone)]
pub struct CameraState {
    pub status: CameraStatus,
    /// When the current connection delivered its first frame.
    pub connected_since: Option<Instant>,
    pub last_change: SystemTime,
    /// The last failure, already free of credentials.
    pub last_error: Option<String>,
    pub reconnects: u64,
}

/// One camera: identity, source, live state and the hub its frames flow through.
#[derive(Debug)]
pub struct Camera {
    pub id: CameraId,
    pub name: String,
    pub source: CameraSource,
    pub origin: Origin,
    pub hub: Arc<StreamHub>,
    /// Written only by the camera's supervisor; read by any RPC. Never held across `.await`.
    state: Mutex<CameraState>,
}

impl Camera {
    pub fn new(id: CameraId, name: String, source: CameraSource, origin: Origin) -> Camera {
        Camera {
            hub: Arc::new(StreamHub::new(id.clone())),
            id,
            name,
            source,
            origin,
            state: Mutex::new(CameraState {
                status: CameraStatus::Disconnected,
                connected_since: None,
                last_change: SystemTime::now(),
                last_error: None,
                reconnects: 0,
            }),
        }
    }

    pub fn state(&self) -> CameraState {
        self.state.lock().clone()
    }

    /// Refuses work that needs frames (-32020 with the current status) unless the camera is connected.
    pub fn require_connected(&self) -> crate::error::Result<()> {
        match self.state.lock().status {
            CameraStatus::Connected => Ok(()),
            other => {
                Err(crate::error::Error::InvalidState { state: other.as_str().into(), allowed: vec!["CONNECTED"] })
            }
        }
    }

    /// The source as logs may show it: an RTSP URL without credentials, or a device's physical identity (never its
    /// `/dev` node).
    pub fn public_url(&self) -> String {
        match &self.source {
            CameraSource::Rtsp { url } => redact_url(url),
            CameraSource::V4l2 { device } => format!("v4l2:{}", device.key),
        }
    }

    /// Applies `change` and says whether the status changed.
    fn update_state(&self, change: impl FnOnce(&mut CameraState)) -> bool {
        let mut state = self.state.lock();
        let before = state.status;
        change(&mut state);
        if state.status != before {
            state.last_change = SystemTime::now();
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_rule() {
        for good in ["front", "cam_0", "a-b", &"x".repeat(64)] {
            assert!(CameraId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Front", "a b", "../x", "a/b", &"x".repeat(65), "cam.0"] {
            assert!(CameraId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction_strips_credentials() {
        let url = parse_stream_url("rtsp://user:s3cret@cam.local:554/stream?x=1").expect("valid url");
        let shown = redact_url(&url);
        assert!(!shown.contains("s3cret") && !shown.contains("user"), "{shown}");
        assert_eq!(shown, "rtsp://cam.local:554/stream?x=1");
        let typed = parse_stream_url("rtsp://al%40ice:p%3Ass@h/x").expect("valid url");
        assert_eq!(credentials(&typed), Some(("al@ice".into(), "p:ss".into())));
        assert_eq!(credentials(&url::Url::parse("rtsp://h/x").expect("valid url")), None);
    }

    #[test]
    fn stream_urls_are_checked() {
        assert!(parse_stream_url("http://x/y").is_err());
        assert!(parse_stream_url("rtsp:///y").is_err());
        assert!(parse_stream_url("not a url").is_err());
        assert!(parse_stream_url("rtsps://cam/y").is_ok());
    }
}
