//! WS-Discovery (the 2005/04 edition ONVIF uses): a `Probe` for `dn:NetworkVideoTransmitter` sent to the multicast
//! group 239.255.255.250:3702 on each named interface (its IPv4 address as the sending interface, TTL 1, no
//! loopback), and the unicast `ProbeMatches` that answer it, collected for a time window. Nothing is sent anywhere
//! else; a match that answers another probe is ignored.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::debug;

use super::soap::SOAP_ENV;

/// The WS-Discovery multicast group and port.
pub const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 3702);
const WSA: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
const WSD: &str = "http://schemas.xmlsoap.org/ws/2005/04/discovery";
const NETWORK_WSDL: &str = "http://www.onvif.org/ver10/network/wsdl";
/// The probe is sent again after this long, as SOAP-over-UDP repeats multicast (a lost datagram is not retried).
const REPEAT_AFTER: Duration = Duration::from_millis(250);
/// Matches read from one interface at most, so a flood cannot grow the list without end.
const MAX_MATCHES: usize = 256;

/// A device that answered: where from, its endpoint, scopes and service addresses as it gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The address the answer came from: the only one camhub will talk to about this device.
    pub from: IpAddr,
    /// Its endpoint reference (usually `urn:uuid:...`), which identifies it across interfaces and answers.
    pub endpoint: String,
    pub scopes: Vec<String>,
    pub xaddrs: Vec<String>,
}

impl Match {
    /// The name the device gives itself in its scopes (`onvif://www.onvif.org/name/...`), else its hardware.
    pub fn name(&self) -> Option<String> {
        let scope = |kind: &str| {
            let prefix = format!("onvif://www.onvif.org/{kind}/");
            self.scopes
                .iter()
                .find_map(|s| s.strip_prefix(&prefix))
                .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy().trim().to_owned())
        };
        scope("name").or_else(|| scope("hardware")).filter(|n| !n.is_empty())
    }

    /// The device service's address on the host the answer came from: an `http` XAddr on that host, else the first
    /// `http` one, moved there.
    pub fn device_service(&self) -> Option<url::Url> {
        let host = host_of(self.from);
        let http: Vec<url::Url> =
            self.xaddrs.iter().filter_map(|x| url::Url::parse(x).ok()).filter(|u| u.scheme() == "http").collect();
        let same = http.iter().find(|u| u.host_str() == Some(host.as_str()));
        same.or(http.first()).and_then(|u| super::on_host(u, &host))
    }
}

/// An address as a URL host (IPv6 in brackets).
pub fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// What a probe found, and what went wrong on the way (an interface that does not exist or cannot send).
#[derive(Debug, Default)]
pub struct Probed {
    pub matches: Vec<Match>,
    pub problems: Vec<String>,
}

/// Probes on each of `interfaces` and collects the matches that arrive within `window`, one per device.
pub async fn probe(interfaces: &[String], window: Duration) -> Probed {
    let runs = interfaces.iter().map(|name| async move { (name, probe_on(name, window).await) });
    let mut probed = Probed::default();
    let mut seen = HashSet::new();
    for (name, result) in futures::future::join_all(runs).await {
        match result {
            Ok(matches) => {
                for m in matches {
                    if seen.insert(m.endpoint.clone()) {
                        probed.matches.push(m);
                    }
                }
            }
            Err(e) => probed.problems.push(format!("interface {name}: {e}")),
        }
    }
    probed
}

/// One interface: its own socket, the probe sent twice, answers read until the window closes.
async fn probe_on(interface: &str, window: Duration) -> Result<Vec<Match>, String> {
    let addr = interface_v4(interface)?;
    let socket = socket_on(addr).map_err(|e| format!("cannot open a socket on {addr}: {e}"))?;
    let id = message_id();
    let probe = probe_message(&id);
    socket.send_to(probe.as_bytes(), SocketAddr::V4(GROUP)).await.map_err(|e| format!("cannot send: {e}"))?;
    debug!(interface, %addr, "WS-Discovery probe sent");
    let deadline = tokio::time::Instant::now() + window;
    let mut repeat = Some(tokio::time::Instant::now() + REPEAT_AFTER.min(window / 2));
    let mut matches: Vec<Match> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let wake = repeat.map_or(deadline, |r| r.min(deadline));
        match tokio::time::timeout_at(wake, socket.recv_from(&mut buf)).await {
            Err(_) if tokio::time::Instant::now() >= deadline => break,
            Err(_) => {
                repeat = None;
                // A lost repeat changes nothing: the first probe was sent.
                let _ = socket.send_to(probe.as_bytes(), SocketAddr::V4(GROUP)).await;
            }
            Ok(Err(e)) => return Err(format!("cannot receive: {e}")),
            Ok(Ok((n, from))) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                match parse_matches(&text, &id, from.ip()) {
                    Ok(found) => {
                        for m in found {
                            if matches.len() < MAX_MATCHES && !matches.iter().any(|k| k.endpoint == m.endpoint) {
                                matches.push(m);
                            }
                        }
                    }
                    Err(e) => debug!(from = %from.ip(), err = %e, "ignored a WS-Discovery datagram"),
                }
            }
        }
    }
    Ok(matches)
}

/// The IPv4 address of the interface named `name`.
fn interface_v4(name: &str) -> Result<Ipv4Addr, String> {
    let all = if_addrs::get_if_addrs().map_err(|e| format!("cannot list interfaces: {e}"))?;
    let mine: Vec<&if_addrs::Interface> = all.iter().filter(|i| i.name == name).collect();
    if mine.is_empty() {
        return Err("no such interface".into());
    }
    mine.iter()
        .find_map(|i| match i.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| "no IPv4 address".into())
}

/// A UDP socket bound to `addr` (an ephemeral port), sending multicast out of its interface only.
fn socket_on(addr: Ipv4Addr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((addr, 0)).into())?;
    socket.set_multicast_if_v4(&addr)?;
    // The link only, and not back to this machine's own listeners.
    socket.set_multicast_ttl_v4(1)?;
    socket.set_multicast_loop_v4(false)?;
    UdpSocket::from_std(socket.into())
}

/// A fresh `urn:uuid:` message id (a random, version 4 UUID).
fn message_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("urn:uuid:{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The `Probe` for network video transmitters.
pub fn probe_message(message_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <s:Envelope xmlns:s=\"{SOAP_ENV}\" xmlns:a=\"{WSA}\" xmlns:d=\"{WSD}\" xmlns:dn=\"{NETWORK_WSDL}\">\
         <s:Header><a:Action s:mustUnderstand=\"1\">{WSD}/Probe</a:Action>\
         <a:MessageID>{message_id}</a:MessageID>\
         <a:ReplyTo><a:Address>{WSA}/role/anonymous</a:Address></a:ReplyTo>\
         <a:To s:mustUnderstand=\"1\">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header>\
         <s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body></s:Envelope>"
    )
}

/// The matches of a `ProbeMatches` answering the probe `message_id` that are network video transmitters.
pub fn parse_matches(text: &str, message_id: &str, from: IpAddr) -> Result<Vec<Match>, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let header_text =
        |name: &str| doc.descendants().find(|n| n.has_tag_name((WSA, name))).and_then(|n| n.text()).map(str::trim);
    if header_text("Action") != Some(&format!("{WSD}/ProbeMatches")) {
        return Err("not a ProbeMatches".into());
    }
    if header_text("RelatesTo") != Some(message_id) {
        return Err("answers another probe".into());
    }
    let list = |node: roxmltree::Node<'_, '_>, name: &str| -> Vec<String> {
        node.children()
            .find(|c| c.has_tag_name((WSD, name)))
            .and_then(|c| c.text())
            .map(|t| t.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let matches = doc
        .descendants()
        .filter(|n| n.has_tag_name((WSD, "ProbeMatch")))
        .filter(|m| {
            // Types are QNames; the local name is what tells a camera, whatever prefix the device declared.
            list(*m, "Types").iter().any(|t| t.rsplit(':').next() == Some("NetworkVideoTransmitter"))
        })
        .filter_map(|m| {
            let endpoint = m
                .descendants()
                .find(|n| n.has_tag_name((WSA, "Address")))
                .and_then(|n| n.text())
                .map(|t| t.trim().to_owned())?;
            Some(Match { from, endpoint, scopes: list(m, "Scopes"), xaddrs: list(m, "XAddrs") })
        })
        .collect();
    Ok(matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(relates_to: &str, types: &str) -> String {
        format!(
            "<s:Envelope xmlns:s=\"{SOAP_ENV}\" xmlns:a=\"{WSA}\" xmlns:d=\"{WSD}\" xmlns:q=\"{NETWORK_WSDL}\">\
             <s:Header><a:Action>{WSD}/ProbeMatches</a:Action><a:RelatesTo>{relates_to}</a:RelatesTo></s:Header>\
             <s:Body><d:ProbeMatches><d:ProbeMatch><a:EndpointReference><a:Address>urn:uuid:1</a:Address>\
             </a:EndpointReference><d:Types>{types}</d:Types>\
             <d:Scopes>onvif://www.onvif.org/name/Gate_Cam%201 onvif://www.onvif.org/hardware/X1</d:Scopes>\
             <d:XAddrs>http://192.0.2.5/onvif/device_service http://10.201.0.2:8080/onvif/device_service</d:XAddrs>\
             <d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>"
        )
    }

    #[test]
    fn matches_are_read_from_answers_to_our_probe_only() {
        let id = message_id();
        assert!(id.starts_with("urn:uuid:") && id.len() == 45, "{id}");
        let from: IpAddr = "10.201.0.2".parse().expect("ip");
        let found = parse_matches(&answer(&id, "q:NetworkVideoTransmitter"), &id, from).expect("a match");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name().as_deref(), Some("Gate_Cam 1"));
        let service = found[0].device_service().expect("an http XAddr");
        assert_eq!(service.as_str(), "http://10.201.0.2:8080/onvif/device_service", "the one on the answering host");
        assert!(parse_matches(&answer("urn:uuid:other", "q:NetworkVideoTransmitter"), &id, from).is_err());
        assert_eq!(parse_matches(&answer(&id, "q:Printer"), &id, from), Ok(vec![]));
        assert!(roxmltree::Document::parse(&probe_message(&id)).is_ok());
    }

    #[test]
    fn an_xaddr_on_another_host_is_moved_to_the_one_that_answered() {
        let m = Match {
            from: "10.201.0.2".parse().expect("ip"),
            endpoint: "urn:uuid:1".into(),
            scopes: vec![],
            xaddrs: vec!["https://10.201.0.2/x".into(), "http://169.254.169.254/onvif/device_service".into()],
        };
        assert_eq!(m.device_service().map(String::from), Some("http://10.201.0.2/onvif/device_service".into()));
        assert_eq!(m.name(), None);
    }

    #[test]
    fn unknown_interfaces_are_named_as_such() {
        assert_eq!(interface_v4("camhub-nosuch0"), Err("no such interface".to_owned()));
    }
}
