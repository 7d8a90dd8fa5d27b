//! Network discovery methods: `discover_external_streams` (a scan now, of the configured interfaces and the hosts
//! named) and `set_discovery_interval` (the periodic scan). Results name streams by URL without credentials.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::base::time::iso;
use crate::base::url::HostPort;
use crate::config::DiscoveryConfig;
use crate::error::{Error, Result};
use crate::netprobe::Credentials;
use crate::rpc::Rpc;
use crate::rpc::session::Session;
use crate::scanner::{self, Request};

/// Hosts one call may name.
const MAX_HOSTS: usize = 64;
/// `timeout_ms` when not given, and the values it may take.
const DEFAULT_TIMEOUT_MS: i64 = 3000;
const TIMEOUT_MS: std::ops::RangeInclusive<i64> = 100..=30_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoverParams {
    pub hosts: Option<Vec<String>>,
    pub timeout_ms: Option<i64>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// How a stream was found.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StreamSource {
    Onvif,
    RtspProbe,
}

impl From<scanner::Source> for StreamSource {
    fn from(s: scanner::Source) -> Self {
        match s {
            scanner::Source::Onvif => StreamSource::Onvif,
            scanner::Source::RtspProbe => StreamSource::RtspProbe,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DiscoveredStream {
    pub name: String,
    /// Without credentials.
    pub url: String,
    /// Always `rtsp`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Always `DISCOVERED`.
    pub status: String,
    pub source: StreamSource,
    pub codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Whether a camera has this URL (credentials ignored); `device` is then its id.
    pub already_added: bool,
    pub device: Option<String>,
    /// The address it was found at.
    pub host: String,
    /// The ONVIF profile's token.
    pub profile: Option<String>,
    pub discovered_at: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeviceStatus {
    Ok,
    AuthFailed,
    NoStreams,
    Unreachable,
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DiscoveredDevice {
    pub address: String,
    pub source: StreamSource,
    pub name: Option<String>,
    /// The ONVIF device service asked.
    pub service: Option<String>,
    pub streams: usize,
    pub status: DeviceStatus,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Scanned {
    pub interfaces: Vec<String>,
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Discovered {
    pub discovered_streams: Vec<DiscoveredStream>,
    pub total_found: usize,
    pub devices: Vec<DiscoveredDevice>,
    pub errors: Vec<String>,
    pub scanned: Scanned,
    pub scan_timestamp: String,
    pub scan_duration_ms: u64,
    pub message: String,
}

pub async fn discover(rpc: Arc<Rpc>, _: Arc<Session>, p: DiscoverParams) -> Result<Discovered> {
    let hosts = p.hosts.unwrap_or_default();
    if hosts.len() > MAX_HOSTS {
        return Err(Error::invalid_param("hosts", "at most 64 hosts"));
    }
    let mut targets: Vec<HostPort> = Vec::with_capacity(hosts.len());
    for h in &hosts {
        let target = HostPort::parse(h).map_err(|rule| Error::invalid_param("hosts", rule))?;
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    let timeout_ms = p.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !TIMEOUT_MS.contains(&timeout_ms) {
        return Err(Error::invalid_param("timeout_ms", "between 100 and 30000"));
    }
    if p.username.as_ref().is_some_and(|u| u.is_empty() || u.chars().count() > 128) {
        return Err(Error::invalid_param("username", "1 to 128 characters"));
    }
    if p.password.as_ref().is_some_and(|pw| pw.chars().count() > 128) {
        return Err(Error::invalid_param("password", "at most 128 characters"));
    }
    let credentials = match (p.username, p.password) {
        (Some(username), password) => Some(Credentials { username, password: password.unwrap_or_default() }),
        (None, Some(_)) => return Err(Error::invalid_param("username", "needed with password")),
        (None, None) => None,
    };
    let scanner = rpc.app.scanner();
    let nothing_to_scan = targets.is_empty() && !scanner.multicast();
    let request = Request { hosts: targets, timeout: Duration::from_millis(timeout_ms as u64), credentials };
    let scan = scanner.discover(request).await;
    let at = iso(scan.started);
    let streams: Vec<DiscoveredStream> = scan
        .streams
        .iter()
        .map(|s| DiscoveredStream {
            name: s.name.clone(),
            url: s.url.to_string(),
            kind: "rtsp".into(),
            status: "DISCOVERED".into(),
            source: s.source.into(),
            codec: s.codec.clone(),
            width: s.width,
            height: s.height,
            already_added: s.camera.is_some(),
            device: s.camera.as_ref().map(ToString::to_string),
            host: s.host.clone(),
            profile: s.profile.clone(),
            discovered_at: at.clone(),
        })
        .collect();
    let devices: Vec<DiscoveredDevice> = scan
        .devices
        .iter()
        .map(|d| DiscoveredDevice {
            address: d.address.clone(),
            source: d.source.into(),
            name: d.name.clone(),
            service: d.service.clone(),
            streams: d.streams,
            status: match d.status {
                scanner::DeviceStatus::Ok => DeviceStatus::Ok,
                scanner::DeviceStatus::AuthFailed => DeviceStatus::AuthFailed,
                scanner::DeviceStatus::NoStreams => DeviceStatus::NoStreams,
                scanner::DeviceStatus::Unreachable => DeviceStatus::Unreachable,
                scanner::DeviceStatus::Error => DeviceStatus::Error,
            },
            error: d.error.clone(),
        })
        .collect();
    let message = if nothing_to_scan {
        "nothing to scan: no hosts given, and no [discovery] interfaces configured for WS-Discovery".to_owned()
    } else {
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "found {} on {} of {}",
            plural(streams.len(), "stream", "streams"),
            devices.iter().filter(|d| d.streams > 0).count(),
            plural(devices.len(), "device", "devices")
        )
    };
    Ok(Discovered {
        total_found: streams.len(),
        discovered_streams: streams,
        devices,
        errors: scan.problems,
        scanned: Scanned { interfaces: scan.interfaces, hosts: scan.hosts },
        scan_timestamp: at,
        scan_duration_ms: scan.took.as_millis() as u64,
        message,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntervalParams {
    pub scan_interval: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IntervalSet {
    pub scan_interval: u64,
    /// Always `UPDATED`.
    pub status: String,
    pub message: String,
    /// As `get_system_status` reports it after the change.
    pub discovery_active: bool,
}

pub async fn set_interval(rpc: Arc<Rpc>, _: Arc<Session>, p: IntervalParams) -> Result<IntervalSet> {
    let seconds =
        u64::try_from(p.scan_interval).ok().filter(|s| DiscoveryConfig::valid_interval(*s)).ok_or_else(|| {
            let (min, max) = (DiscoveryConfig::MIN_INTERVAL, DiscoveryConfig::MAX_INTERVAL);
            Error::invalid_param("scan_interval", format!("0 (off) or {min} to {max} seconds"))
        })?;
    let scanner = rpc.app.scanner();
    scanner.set_scan_interval(seconds).await?;
    let config = scanner.config();
    let message = match seconds {
        0 => "periodic discovery is off".to_owned(),
        s if config.hosts.is_empty() && config.interfaces.is_empty() => format!(
            "periodic discovery every {s} s; nothing is configured to scan yet ([discovery] interfaces and hosts are empty)"
        ),
        s => format!("periodic discovery every {s} s, starting now"),
    };
    Ok(IntervalSet {
        scan_interval: seconds,
        status: "UPDATED".into(),
        message,
        discovery_active: rpc.app.discovery_active(),
    })
}
