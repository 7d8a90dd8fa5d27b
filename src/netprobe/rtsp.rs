//! RTSP as discovery uses it: whether something accepts connections on a port, and what a URL serves, by a DESCRIBE
//! with the `retina` client (the one camhub's ingest uses): the first video stream's codec and picture size, read
//! from the SDP and its parameter sets. Nothing is set up or played.

use std::time::Duration;

use retina::client::{Credentials as RtspCredentials, Session, SessionOptions};
use retina::codec::ParametersRef;

use super::{Credentials, ProbeError, within};
use crate::base::Codec;

/// What a DESCRIBE says of a URL's first video stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// `H264` or `H265` (the names the API uses), or another codec's RTP encoding name, in capitals.
    pub codec: String,
    /// The picture size, when the SDP carries the parameter sets.
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// Whether something accepts TCP connections at `host:port` within `limit`.
pub async fn listening(host: &url::Host<String>, port: u16, limit: Duration) -> Result<(), ProbeError> {
    let connect = async {
        let result = match host {
            url::Host::Domain(name) => tokio::net::TcpStream::connect((name.as_str(), port)).await,
            url::Host::Ipv4(ip) => tokio::net::TcpStream::connect((*ip, port)).await,
            url::Host::Ipv6(ip) => tokio::net::TcpStream::connect((*ip, port)).await,
        };
        result.map(drop).map_err(|e| ProbeError::Unreachable(e.to_string()))
    };
    within(limit, connect).await
}

/// DESCRIBEs `url` (which carries no credentials; `creds` are offered if the server asks) within `limit`.
pub async fn describe(url: &url::Url, creds: Option<&Credentials>, limit: Duration) -> Result<Described, ProbeError> {
    let creds = creds.map(|c| RtspCredentials { username: c.username.clone(), password: c.password.clone() });
    let options =
        SessionOptions::default().creds(creds).user_agent(format!("{}/{}", crate::base::NAME, crate::base::VERSION));
    let session = within(limit, async {
        Session::describe(url.clone(), options).await.map_err(|e| match e.status_code() {
            Some(401 | 403) => ProbeError::Unauthorized,
            Some(404) => ProbeError::NotFound,
            _ => ProbeError::Failed(e.to_string()),
        })
    })
    .await?;
    let video = session
        .streams()
        .iter()
        .find(|s| s.media() == "video")
        .ok_or_else(|| ProbeError::Failed("no video stream".into()))?;
    let codec = Codec::from_encoding_name(video.encoding_name())
        .map_or_else(|| video.encoding_name().to_ascii_uppercase(), |c| c.as_str().to_owned());
    let size = match video.parameters() {
        Some(ParametersRef::Video(v)) => Some(v.pixel_dimensions()),
        _ => None,
    };
    Ok(Described { codec, width: size.map(|s| s.0), height: size.map(|s| s.1) })
}
