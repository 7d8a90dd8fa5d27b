//! The ONVIF calls that turn a device service address into stream URLs: the media service's address
//! (`GetCapabilities`, else `GetServices`), its profiles (`GetProfiles`, with each one's encoder settings) and each
//! profile's RTSP URL (`GetStreamUri`, RTP-Unicast over RTSP). Every address a device names is moved to the host the
//! caller asks (the one the device answered from), so camhub talks to no other.

use super::soap::{self, escape, text_of};
use super::{Credentials, ProbeError, on_host};

const DEVICE_NS: &str = "http://www.onvif.org/ver10/device/wsdl";
const MEDIA_NS: &str = "http://www.onvif.org/ver10/media/wsdl";
const SCHEMA_NS: &str = "http://www.onvif.org/ver10/schema";

/// Profiles read from one device at most; the rest are ignored.
const MAX_PROFILES: usize = 16;

/// A media profile: what `GetProfiles` says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub token: String,
    pub name: String,
    /// The video encoder's `Encoding` (`H264`, `H265`, `JPEG`, ...), when the profile has one.
    pub encoding: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// The address of the device's media service, on `host`.
pub async fn media_service(
    http: &reqwest::Client,
    device: &url::Url,
    host: &str,
    creds: Option<&Credentials>,
) -> Result<url::Url, ProbeError> {
    let body = format!(
        "<tds:GetCapabilities xmlns:tds=\"{DEVICE_NS}\"><tds:Category>Media</tds:Category></tds:GetCapabilities>"
    );
    let found = match soap::call(http, device, &format!("{DEVICE_NS}/GetCapabilities"), &body, creds).await {
        Ok(text) => {
            let doc = soap::parse(&text)?;
            let media = doc.descendants().find(|n| n.has_tag_name((SCHEMA_NS, "Media")));
            media.and_then(|m| text_of(m, SCHEMA_NS, "XAddr")).map(str::to_owned)
        }
        // Devices that answer at all answer GetCapabilities (ONVIF 1.0); some newer ones only GetServices.
        Err(ProbeError::Failed(_)) => None,
        Err(e) => return Err(e),
    };
    let xaddr = match found {
        Some(x) => x,
        None => {
            let body = format!(
                "<tds:GetServices xmlns:tds=\"{DEVICE_NS}\"><tds:IncludeCapability>false</tds:IncludeCapability>\
                 </tds:GetServices>"
            );
            let text = soap::call(http, device, &format!("{DEVICE_NS}/GetServices"), &body, creds).await?;
            let doc = soap::parse(&text)?;
            doc.descendants()
                .filter(|n| n.has_tag_name((DEVICE_NS, "Service")))
                .find(|s| text_of(*s, DEVICE_NS, "Namespace") == Some(MEDIA_NS))
                .and_then(|s| text_of(s, DEVICE_NS, "XAddr"))
                .map(str::to_owned)
                .ok_or_else(|| ProbeError::Failed("the device names no media service".into()))?
        }
    };
    service_url(&xaddr, host)
}

/// The device's media profiles, with their video encoder settings.
pub async fn profiles(
    http: &reqwest::Client,
    media: &url::Url,
    creds: Option<&Credentials>,
) -> Result<Vec<Profile>, ProbeError> {
    let body = format!("<trt:GetProfiles xmlns:trt=\"{MEDIA_NS}\"/>");
    let text = soap::call(http, media, &format!("{MEDIA_NS}/GetProfiles"), &body, creds).await?;
    parse_profiles(&text)
}

fn parse_profiles(text: &str) -> Result<Vec<Profile>, ProbeError> {
    let doc = soap::parse(text)?;
    let profiles = doc
        .descendants()
        .filter(|n| n.has_tag_name((MEDIA_NS, "Profiles")))
        .filter_map(|p| {
            let token = p.attribute("token")?.to_owned();
            let name = p.children().find(|c| c.has_tag_name((SCHEMA_NS, "Name"))).and_then(|n| n.text());
            let video = p.children().find(|c| c.has_tag_name((SCHEMA_NS, "VideoEncoderConfiguration")));
            let number = |name: &str| video.and_then(|v| text_of(v, SCHEMA_NS, name)).and_then(|t| t.parse().ok());
            Some(Profile {
                name: name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or(&token).to_owned(),
                encoding: video.and_then(|v| text_of(v, SCHEMA_NS, "Encoding")).map(str::to_owned),
                width: number("Width"),
                height: number("Height"),
                token,
            })
        })
        .take(MAX_PROFILES)
        .collect();
    Ok(profiles)
}

/// The RTSP URL of a profile's stream, on `host`, without any credentials the device put in it.
pub async fn stream_uri(
    http: &reqwest::Client,
    media: &url::Url,
    token: &str,
    host: &str,
    creds: Option<&Credentials>,
) -> Result<url::Url, ProbeError> {
    let body = format!(
        "<trt:GetStreamUri xmlns:trt=\"{MEDIA_NS}\" xmlns:tt=\"{SCHEMA_NS}\"><trt:StreamSetup>\
         <tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport>\
         </trt:StreamSetup><trt:ProfileToken>{}</trt:ProfileToken></trt:GetStreamUri>",
        escape(token)
    );
    let text = soap::call(http, media, &format!("{MEDIA_NS}/GetStreamUri"), &body, creds).await?;
    let doc = soap::parse(&text)?;
    let uri = doc
        .descendants()
        .find(|n| n.has_tag_name((MEDIA_NS, "MediaUri")))
        .and_then(|m| text_of(m, SCHEMA_NS, "Uri"))
        .ok_or_else(|| ProbeError::Failed("GetStreamUri answered no URI".into()))?;
    let url =
        crate::base::url::parse_stream_url(uri).map_err(|rule| ProbeError::Failed(format!("stream URI {rule}")))?;
    let url = on_host(&crate::base::url::strip_credentials(&url), host)
        .ok_or_else(|| ProbeError::Failed("stream URI has no host".into()))?;
    Ok(url)
}

/// A service address a device named, moved to `host`; only `http` is spoken.
fn service_url(xaddr: &str, host: &str) -> Result<url::Url, ProbeError> {
    let url =
        url::Url::parse(xaddr).map_err(|_| ProbeError::Failed("the device names an unreadable address".into()))?;
    if url.scheme() != "http" {
        return Err(ProbeError::Failed(format!("the device's service is {}, only http is spoken", url.scheme())));
    }
    on_host(&url, host).ok_or_else(|| ProbeError::Failed("the device names an address without a host".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_with_their_encoder_settings() {
        let text = format!(
            "<s:Envelope xmlns:s=\"{}\" xmlns:trt=\"{MEDIA_NS}\" xmlns:tt=\"{SCHEMA_NS}\"><s:Body><trt:GetProfilesResponse>\
             <trt:Profiles token=\"main\" fixed=\"true\"><tt:Name>MainStream</tt:Name>\
             <tt:VideoEncoderConfiguration token=\"v\"><tt:Name>enc</tt:Name><tt:Encoding>H264</tt:Encoding>\
             <tt:Resolution><tt:Width>320</tt:Width><tt:Height>240</tt:Height></tt:Resolution>\
             </tt:VideoEncoderConfiguration></trt:Profiles>\
             <trt:Profiles token=\"audio\"></trt:Profiles></trt:GetProfilesResponse></s:Body></s:Envelope>",
            soap::SOAP_ENV
        );
        let profiles = parse_profiles(&text).expect("profiles");
        assert_eq!(
            profiles[0],
            Profile {
                token: "main".into(),
                name: "MainStream".into(),
                encoding: Some("H264".into()),
                width: Some(320),
                height: Some(240)
            }
        );
        assert_eq!((profiles[1].name.as_str(), profiles[1].encoding.as_ref()), ("audio", None));
    }

    #[test]
    fn service_addresses_are_http_on_the_host_that_answered() {
        let moved = service_url("http://192.168.7.7/onvif/media_service", "10.201.0.2").expect("http");
        assert_eq!(moved.as_str(), "http://10.201.0.2/onvif/media_service");
        assert!(service_url("https://10.201.0.2/onvif", "10.201.0.2").is_err());
        assert!(service_url("not a url", "10.201.0.2").is_err());
    }
}
