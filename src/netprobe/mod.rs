//! Asking devices on the network what cameras they are, at the addresses camhub is given and nowhere else:
//! WS-Discovery probes multicast on named interfaces (`wsd`), the ONVIF device and media services over SOAP with an
//! optional WS-Security UsernameToken (`soap`, `onvif`), and RTSP DESCRIBE of a URL (`rtsp`). It never walks an address
//! range, and it never follows an address a device names on another host: it asks the address the device answered
//! from. Knows nothing about cameras' lifecycle or clients; nothing it returns or logs carries a credential.

pub mod onvif;
pub mod rtsp;
pub mod soap;
pub mod wsd;

use std::time::Duration;

/// A user name and password for devices (ONVIF WS-Security, RTSP). `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ username: {:?}, password: \"..\" }}", self.username)
    }
}

/// Why asking a device failed. Messages name no credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The device refused the credentials, or wants some and none were given.
    #[error("credentials refused")]
    Unauthorized,
    /// The device answered that there is nothing there (RTSP 404, an unknown path).
    #[error("not found")]
    NotFound,
    /// Nothing listens, or the address cannot be reached.
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// Any other failure: a SOAP fault, an unreadable answer, an RTSP error.
    #[error("{0}")]
    Failed(String),
}

/// Runs `work`, or gives up after `limit` with [`ProbeError::Timeout`].
pub(crate) async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(limit, work).await.unwrap_or(Err(ProbeError::Timeout(limit)))
}

/// `url` with its host replaced by `host` (the address the device answered from), its port and path kept; a URL
/// without a host, or whose host cannot be set, is refused.
pub fn on_host(url: &url::Url, host: &str) -> Option<url::Url> {
    let mut moved = url.clone();
    url.host_str()?;
    moved.set_host(Some(host)).ok()?;
    Some(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_a_device_names_are_moved_to_the_one_it_answered_from() {
        let named = url::Url::parse("http://192.0.2.99:8080/onvif/media?x=1").expect("url");
        assert_eq!(
            on_host(&named, "10.201.0.2").map(String::from),
            Some("http://10.201.0.2:8080/onvif/media?x=1".into())
        );
        let v6 = on_host(&url::Url::parse("rtsp://h/a").expect("url"), "[fe80::1]").expect("IPv6 host");
        assert_eq!(v6.as_str(), "rtsp://[fe80::1]/a");
        assert!(on_host(&url::Url::parse("urn:x").expect("url"), "10.0.0.1").is_none());
        let shown = format!("{:?}", Credentials { username: "u".into(), password: "p4ss".into() });
        assert!(!shown.contains("p4ss"), "{shown}");
    }
}
