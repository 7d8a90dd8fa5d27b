//! Stream URLs: what an acceptable camera URL is, and how its credentials are kept out of sight. A URL with
//! credentials never leaves the process: logs, errors and responses show it redacted, and clients get the user and
//! password as separate values. Also the host (and port) a client or the config names for discovery to probe.

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

/// A configured camera's source URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUrl {
    /// `rtsp://` or `rtsps://`.
    Stream(url::Url),
    /// `file:///absolute/path` (a clip to loop).
    File(std::path::PathBuf),
}

/// Checks a configured source: an RTSP URL (see [`parse_stream_url`]) or a `file://` URL of an absolute path. Only the
/// config may name a file: a client never gives camhub a path.
pub fn parse_source_url(s: &str) -> Result<SourceUrl, String> {
    if s.starts_with("file:") {
        let url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
        let path = url.to_file_path().map_err(|_| "a file URL must name an absolute local path (file:///...)")?;
        return Ok(SourceUrl::File(path));
    }
    parse_stream_url(s).map(SourceUrl::Stream).map_err(|e| format!("{e} (or file:///path/to/clip.mp4)"))
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

/// A host to probe, as a client or the config names it: `host` or `host:port` (an IPv6 address in brackets). Never a
/// range: one name or address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: url::Host<String>,
    pub port: Option<u16>,
}

impl HostPort {
    pub const RULE: &'static str = "a host name or IP address, optionally with :PORT (an IPv6 address in brackets)";

    pub fn parse(s: &str) -> Result<HostPort, &'static str> {
        let s = s.trim();
        if s.is_empty() || s.len() > 255 || s.contains(['/', '@', '?', '#', '\\']) || s.contains(char::is_whitespace) {
            return Err(Self::RULE);
        }
        let url = url::Url::parse(&format!("rtsp://{s}/")).map_err(|_| Self::RULE)?;
        let host = url.host().ok_or(Self::RULE)?.to_owned();
        if matches!(&host, url::Host::Domain(d) if d.is_empty()) || url.port() == Some(0) {
            return Err(Self::RULE);
        }
        Ok(HostPort { host, port: url.port() })
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_to_probe_are_one_host_with_an_optional_port() {
        let h = HostPort::parse("10.201.0.2:8554").expect("address and port");
        assert_eq!(
            (h.host.to_string(), h.port, h.to_string()),
            ("10.201.0.2".into(), Some(8554), "10.201.0.2:8554".into())
        );
        let h = HostPort::parse("[fe80::1]").expect("IPv6");
        assert_eq!((h.to_string(), h.port), ("[fe80::1]".into(), None));
        assert_eq!(HostPort::parse("Cam.Local").map(|h| h.to_string()), Ok("Cam.Local".into()));
        for bad in ["", "10.0.0.0/24", "user@cam", "cam:0", "cam:99999", "a b", "rtsp://cam", "cam/x"] {
            assert!(HostPort::parse(bad).is_err(), "{bad:?}");
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

    #[test]
    fn configured_sources_may_be_files() {
        assert_eq!(parse_source_url("file:///srv/clip.mp4"), Ok(SourceUrl::File("/srv/clip.mp4".into())));
        assert!(parse_source_url("file://otherhost/clip.mp4").is_err(), "a file on another host");
        assert!(matches!(parse_source_url("rtsp://cam/x"), Ok(SourceUrl::Stream(_))));
        assert!(parse_source_url("http://cam/x").is_err());
    }
}
