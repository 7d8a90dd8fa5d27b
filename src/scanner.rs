//! Network discovery of cameras, the use case: what to probe (WS-Discovery on the configured interfaces, RTSP on the
//! hosts a client or the config names, never a range), what each device offers (its ONVIF profiles and their stream
//! URLs, or RTSP on common ports and paths), each stream's codec and picture size, and whether it is a camera
//! already; and the periodic scan, which announces each stream it finds for the first time (`discovery.found`) and,
//! with `auto_add`, adds each device that is no camera yet (its largest stream) through the camera registry. The
//! interval set through the API is kept in the `settings` table. The protocols are `netprobe`'s: this module sends
//! nothing itself, and nothing it returns carries a credential.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::base::CameraId;
use crate::base::url::HostPort;
use crate::camera::CameraManager;
use crate::config::DiscoveryConfig;
use crate::error::{Error, Result, State};
use crate::events::{EventBus, EventKind, FoundNote};
use crate::netprobe::{self, Credentials, ProbeError, onvif, rtsp, wsd};
use crate::storage::Db;

/// Where the periodic scan interval set through the API is kept.
const INTERVAL_SETTING: &str = "discovery/scan_interval";

/// Ports probed on every host named for RTSP (besides the port it is named with): the standard port and the common
/// alternative (MediaMTX, camhub's own server, many NVRs).
pub const RTSP_PORTS: [u16; 2] = [554, 8554];

/// Paths tried, in order, on each open port until one serves video: the usual default streams. Kept short: each is
/// a DESCRIBE, and a server that answers one rarely answers another.
pub const RTSP_PATHS: [&str; 8] = [
    "/",                                    // servers with one stream
    "/stream1",                             // TP-Link Tapo and many generic cameras
    "/live",                                // generic
    "/h264",                                // generic
    "/Streaming/Channels/101",              // Hikvision, main stream
    "/cam/realmonitor?channel=1&subtype=0", // Dahua and its OEMs, main stream
    "/axis-media/media.amp",                // Axis
    "/live/ch00_0",                         // many low-cost cameras
];

/// How long periodic scans wait for answers.
const PERIODIC_TIMEOUT: Duration = Duration::from_secs(3);
/// Scans running at once (clients' and the periodic one); more wait their turn, so clients cannot flood the network.
const CONCURRENT_SCANS: usize = 2;
/// Hosts probed at once within one scan.
const CONCURRENT_HOSTS: usize = 16;

/// How a stream was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Announced by WS-Discovery, its URL from the device's ONVIF media service.
    Onvif,
    /// Answered an RTSP DESCRIBE on a host named for probing.
    RtspProbe,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Onvif => "onvif",
            Source::RtspProbe => "rtsp_probe",
        }
    }
}

/// What to scan besides the configured interfaces.
#[derive(Debug, Clone)]
pub struct Request {
    /// Hosts to probe for RTSP.
    pub hosts: Vec<HostPort>,
    /// How long to wait for WS-Discovery answers, and for each exchange with a device.
    pub timeout: Duration,
    /// Offered to devices (ONVIF WS-Security, RTSP); never put in what a scan returns.
    pub credentials: Option<Credentials>,
}

/// A stream found.
#[derive(Debug, Clone)]
pub struct Stream {
    pub name: String,
    /// Without credentials.
    pub url: url::Url,
    pub source: Source,
    /// The address it was found at.
    pub host: String,
    /// `H264`, `H265`, or another codec's name; from the DESCRIBE, else from the ONVIF profile.
    pub codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The ONVIF profile's token.
    pub profile: Option<String>,
    /// The camera with this URL (credentials ignored), if there is one.
    pub camera: Option<CameraId>,
    /// Its device, as an index into [`Scan::devices`].
    pub device: usize,
}

/// How asking a device went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    Ok,
    AuthFailed,
    /// It answered, but no stream was found (no profile, or nothing at the common RTSP paths).
    NoStreams,
    Unreachable,
    Error,
}

/// A device found or probed, and how asking it went.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its address (an ONVIF device), or the host as named (RTSP probing).
    pub address: String,
    pub source: Source,
    pub name: Option<String>,
    /// The ONVIF device service asked.
    pub service: Option<String>,
    pub streams: usize,
    pub status: DeviceStatus,
    pub error: Option<String>,
}

/// A scan's findings.
#[derive(Debug, Clone)]
pub struct Scan {
    pub streams: Vec<Stream>,
    pub devices: Vec<Device>,
    /// Every problem met (an interface, a device), one line each.
    pub problems: Vec<String>,
    /// The interfaces WS-Discovery probed on, and the hosts probed for RTSP.
    pub interfaces: Vec<String>,
    pub hosts: Vec<String>,
    pub started: SystemTime,
    pub took: Duration,
}

/// One device's findings, before they are numbered into a [`Scan`].
struct Finding {
    device: Device,
    streams: Vec<Stream>,
}

/// Network discovery: scans on request and periodically.
#[derive(Debug)]
pub struct Scanner {
    config: DiscoveryConfig,
    cameras: Arc<CameraManager>,
    events: EventBus,
    db: Db,
    /// The periodic scan interval in seconds (0 = off); the periodic task waits on its changes.
    interval: watch::Sender<u64>,
    /// Turns to scan, so scans run at most [`CONCURRENT_SCANS`] at once.
    turns: Semaphore,
    /// URLs (without credentials) the periodic scan has announced, so each is announced once in the process's life.
    announced: Mutex<HashSet<String>>,
}

impl Scanner {
    /// The scanner, with the interval last set through the API (else the config's).
    pub async fn new(config: DiscoveryConfig, cameras: Arc<CameraManager>, events: EventBus, db: Db) -> Scanner {
        let stored = match db.setting(INTERVAL_SETTING).await {
            Ok(value) => value.and_then(|v| v.parse().ok()).filter(|s| DiscoveryConfig::valid_interval(*s)),
            Err(e) => {
                warn!(err = %e, "cannot read the stored discovery interval; the config's applies");
                None
            }
        };
        let interval = stored.unwrap_or(config.scan_interval);
        Scanner {
            config,
            cameras,
            events,
            db,
            interval: watch::Sender::new(interval),
            turns: Semaphore::new(CONCURRENT_SCANS),
            announced: Mutex::new(HashSet::new()),
        }
    }

    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    /// Seconds between periodic scans; 0 when off.
    pub fn scan_interval(&self) -> u64 {
        *self.interval.borrow()
    }

    /// Whether periodic scanning is on.
    pub fn periodic(&self) -> bool {
        self.scan_interval() > 0
    }

    /// Whether a scan without hosts would probe anything (WS-Discovery needs configured interfaces).
    pub fn multicast(&self) -> bool {
        !self.config.interfaces.is_empty()
    }

    /// Sets the periodic scan interval (0 = off; the caller checked it), keeps it, and scans at once if on.
    pub async fn set_scan_interval(&self, seconds: u64) -> Result<()> {
        self.db.set_setting(INTERVAL_SETTING, &seconds.to_string()).await?;
        self.interval.send_replace(seconds);
        info!(scan_interval_s = seconds, "discovery interval set");
        Ok(())
    }

    /// Scans the configured interfaces and `request`'s hosts.
    pub async fn discover(&self, request: Request) -> Scan {
        let _turn = self.turns.acquire().await.expect("the scan semaphore is never closed");
        let started = SystemTime::now();
        let clock = Instant::now();
        let mut scan = Scan {
            streams: Vec::new(),
            devices: Vec::new(),
            problems: Vec::new(),
            interfaces: self.config.interfaces.clone(),
            hosts: request.hosts.iter().map(ToString::to_string).collect(),
            started,
            took: Duration::ZERO,
        };
        let http = match reqwest::Client::builder()
            .timeout(request.timeout)
            .connect_timeout(request.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(format!("{}/{}", crate::base::NAME, crate::base::VERSION))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                warn!(err = %e, "cannot make an HTTP client for ONVIF");
                scan.problems.push(format!("cannot make an HTTP client: {e}"));
                return scan;
            }
        };
        let creds = request.credentials.as_ref();
        let onvif = self.onvif(&http, request.timeout, creds);
        let timeout = request.timeout;
        let hosts = futures::stream::iter(request.hosts.clone())
            .map(move |h| async move { probe_host(&h, timeout, creds).await })
            .buffered(CONCURRENT_HOSTS)
            .collect::<Vec<_>>();
        let ((onvif, problems), hosts) = tokio::join!(onvif, hosts);
        scan.problems = problems;
        let mut seen = HashSet::new();
        for finding in onvif.into_iter().chain(hosts) {
            let index = scan.devices.len();
            if let Some(e) = &finding.device.error {
                scan.problems.push(format!("{} ({}): {e}", finding.device.address, finding.device.source.as_str()));
            }
            scan.devices.push(finding.device);
            for mut stream in finding.streams {
                // The same stream found twice (ONVIF and a probe of its host) is listed once, as found first.
                if seen.insert(stream.url.to_string()) {
                    stream.device = index;
                    stream.camera = self.cameras.find_by_url(&stream.url).map(|c| c.id.clone());
                    scan.streams.push(stream);
                }
            }
        }
        scan.took = clock.elapsed();
        debug!(
            streams = scan.streams.len(),
            devices = scan.devices.len(),
            took_ms = scan.took.as_millis() as u64,
            "scan done"
        );
        scan
    }

    /// WS-Discovery on the configured interfaces, then each device that answered.
    async fn onvif(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
        creds: Option<&Credentials>,
    ) -> (Vec<Finding>, Vec<String>) {
        if self.config.interfaces.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let probed = wsd::probe(&self.config.interfaces, timeout).await;
        let devices = probed.matches.iter().map(|m| onvif_device(http, m, timeout, creds));
        (futures::future::join_all(devices).await, probed.problems)
    }

    /// Periodic scans until `cancel` fires: at once when the interval is set, then every interval.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut changes = self.interval.subscribe();
        loop {
            let seconds = *changes.borrow_and_update();
            if seconds > 0 {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.periodic_scan() => {}
                }
            }
            let pause = async {
                match seconds {
                    0 => std::future::pending().await,
                    s => tokio::time::sleep(Duration::from_secs(s)).await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = pause => {}
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }

    /// One periodic scan of the configured interfaces and hosts: new streams announced, new devices added with
    /// `auto_add`.
    async fn periodic_scan(&self) {
        if self.config.hosts.is_empty() && !self.multicast() {
            debug!("periodic scan: nothing configured to scan");
            return;
        }
        let credentials = self
            .config
            .username
            .clone()
            .map(|username| Credentials { username, password: self.config.password.clone().unwrap_or_default() });
        let request = Request { hosts: self.config.hosts.clone(), timeout: PERIODIC_TIMEOUT, credentials };
        let scan = self.discover(request).await;
        for problem in &scan.problems {
            debug!(problem, "periodic scan");
        }
        let mut added = Vec::new();
        if self.config.auto_add {
            for (index, _) in scan.devices.iter().enumerate() {
                let mine = scan.streams.iter().filter(|s| s.device == index);
                if mine.clone().any(|s| s.camera.is_some()) {
                    continue;
                }
                // The largest picture: the main stream of a camera with several profiles.
                let Some(best) = mine.max_by_key(|s| {
                    (
                        u64::from(s.width.unwrap_or(0)) * u64::from(s.height.unwrap_or(0)),
                        std::cmp::Reverse(s.url.to_string()),
                    )
                }) else {
                    continue;
                };
                match self.add(best).await {
                    Ok(id) => {
                        info!(camera_id = %id, url = %best.url, "discovery added a camera");
                        added.push((best.url.to_string(), id));
                    }
                    Err(e) => warn!(url = %best.url, err = %e, "discovery could not add a camera"),
                }
            }
        }
        let mut new = 0;
        for stream in &scan.streams {
            let url = stream.url.to_string();
            let camera = added.iter().find(|(u, _)| *u == url).map(|(_, id)| id.clone());
            if (stream.camera.is_some() && camera.is_none()) || !self.announced.lock().insert(url.clone()) {
                continue;
            }
            new += 1;
            self.events.publish(EventKind::DiscoveryFound(Arc::new(FoundNote {
                url,
                name: stream.name.clone(),
                source: stream.source.as_str(),
                codec: stream.codec.clone(),
                width: stream.width,
                height: stream.height,
                camera,
            })));
        }
        if new > 0 {
            info!(new, "periodic scan found new streams");
        }
    }

    /// Adds a found stream as a camera (with the configured credentials in its URL), named as found; its id is made
    /// from the name, with `-2`, `-3`, ... when taken.
    async fn add(&self, stream: &Stream) -> Result<CameraId> {
        let mut url = stream.url.clone();
        if let Some(user) = &self.config.username {
            // Both only fail for URLs that cannot carry credentials, which rtsp:// URLs with a host can.
            let _ = url.set_username(user);
            let _ = url.set_password(self.config.password.as_deref());
        }
        let base = CameraId::from_name(&stream.name).map_or_else(|| "camera".to_owned(), |id| id.to_string());
        for n in 1..=16 {
            let candidate = if n == 1 { base.clone() } else { format!("{}-{n}", &base[..base.len().min(60)]) };
            let Ok(id) = CameraId::parse(&candidate) else { continue };
            if self.cameras.get(&id).is_some() {
                continue;
            }
            match self.cameras.add(id, stream.name.clone(), url.clone()).await {
                Ok(camera) => return Ok(camera.id.clone()),
                Err(Error::InvalidState { state: State::CameraExists, .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::invalid_state(State::CameraExists, &[State::Absent]))
    }
}

/// One ONVIF device: its media service, profiles and stream URLs, then a DESCRIBE of each stream for its codec and
/// size (the profile's encoder settings when the DESCRIBE cannot tell).
async fn onvif_device(
    http: &reqwest::Client,
    found: &wsd::Match,
    timeout: Duration,
    creds: Option<&Credentials>,
) -> Finding {
    let host = wsd::host_of(found.from);
    let name = found.name().unwrap_or_else(|| host.clone());
    let mut device = Device {
        address: host.clone(),
        source: Source::Onvif,
        name: Some(name.clone()),
        service: None,
        streams: 0,
        status: DeviceStatus::Ok,
        error: None,
    };
    let Some(service) = found.device_service() else {
        device.status = DeviceStatus::Error;
        device.error = Some("the device names no http service address".into());
        return Finding { device, streams: Vec::new() };
    };
    device.service = Some(service.to_string());
    let asked = netprobe::within(timeout * 2, async {
        let media = onvif::media_service(http, &service, &host, creds).await?;
        let profiles = onvif::profiles(http, &media, creds).await?;
        let uris = profiles.iter().map(|p| onvif::stream_uri(http, &media, &p.token, &host, creds));
        let uris = futures::future::join_all(uris).await;
        Ok(profiles.into_iter().zip(uris).collect::<Vec<_>>())
    })
    .await;
    let profiles = match asked {
        Ok(p) => p,
        Err(e) => {
            device.status = status_of(&e);
            device.error = Some(e.to_string());
            return Finding { device, streams: Vec::new() };
        }
    };
    let mut errors = Vec::new();
    let mut streams = Vec::new();
    for (profile, uri) in profiles {
        match uri {
            Ok(url) => streams.push((profile, url)),
            Err(e) => errors.push(format!("profile {}: {e}", profile.token)),
        }
    }
    let described = streams.iter().map(|(_, url)| rtsp::describe(url, creds, timeout));
    let described = futures::future::join_all(described).await;
    let streams: Vec<Stream> = streams
        .into_iter()
        .zip(described)
        .map(|((profile, url), d)| {
            let d = d.map_err(|e| debug!(url = %url, err = %e, "DESCRIBE of an ONVIF stream failed")).ok();
            Stream {
                name: format!("{name} {}", profile.name),
                codec: d.as_ref().map(|d| d.codec.clone()).or_else(|| profile.encoding.map(|e| e.to_ascii_uppercase())),
                width: d.as_ref().and_then(|d| d.width).or(profile.width),
                height: d.as_ref().and_then(|d| d.height).or(profile.height),
                profile: Some(profile.token),
                url,
                source: Source::Onvif,
                host: host.clone(),
                camera: None,
                device: 0,
            }
        })
        .collect();
    device.streams = streams.len();
    if streams.is_empty() {
        device.status = DeviceStatus::NoStreams;
    }
    if !errors.is_empty() {
        device.error = Some(errors.join("; "));
    }
    Finding { device, streams }
}

/// A host named for probing: each of its port and [`RTSP_PORTS`] that accepts connections, DESCRIBEd at
/// [`RTSP_PATHS`] until one serves video.
async fn probe_host(target: &HostPort, timeout: Duration, creds: Option<&Credentials>) -> Finding {
    let mut ports: Vec<u16> = target.port.into_iter().collect();
    ports.extend(RTSP_PORTS.iter().filter(|p| target.port != Some(**p)));
    let results = futures::future::join_all(ports.iter().map(|port| async move {
        (*port, netprobe::within(timeout * 2, probe_port(&target.host, *port, timeout, creds)).await)
    }))
    .await;
    let mut device = Device {
        address: target.to_string(),
        source: Source::RtspProbe,
        name: None,
        service: None,
        streams: 0,
        status: DeviceStatus::Ok,
        error: None,
    };
    let mut streams = Vec::new();
    let mut errors = Vec::new();
    for (port, result) in results {
        match result {
            Ok((path, d)) => {
                let url = url::Url::parse(&format!("rtsp://{}:{port}{path}", target.host))
                    .expect("a host and a port make a URL");
                streams.push(Stream {
                    name: format!("{}:{port}{path}", target.host),
                    url,
                    source: Source::RtspProbe,
                    host: target.host.to_string(),
                    codec: Some(d.codec),
                    width: d.width,
                    height: d.height,
                    profile: None,
                    camera: None,
                    device: 0,
                });
            }
            Err(e) => errors.push((port, e)),
        }
    }
    device.streams = streams.len();
    if streams.is_empty() {
        let worst = errors.iter().map(|(_, e)| status_of(e)).min_by_key(|s| match s {
            DeviceStatus::AuthFailed => 0,
            DeviceStatus::NoStreams => 1,
            DeviceStatus::Error => 2,
            _ => 3,
        });
        device.status = worst.unwrap_or(DeviceStatus::NoStreams);
        let said: Vec<String> = errors
            .iter()
            .map(|(port, e)| match e {
                ProbeError::NotFound => format!("port {port}: no video at the common paths"),
                e => format!("port {port}: {e}"),
            })
            .collect();
        device.error = Some(said.join("; "));
    }
    Finding { device, streams }
}

/// One port: closed, or the first of [`RTSP_PATHS`] that serves video (a refusal of credentials ends the search;
/// when none does, the last path's failure, [`ProbeError::NotFound`] when they all were).
async fn probe_port(
    host: &url::Host<String>,
    port: u16,
    timeout: Duration,
    creds: Option<&Credentials>,
) -> std::result::Result<(&'static str, rtsp::Described), ProbeError> {
    rtsp::listening(host, port, timeout).await?;
    let mut last = ProbeError::NotFound;
    for path in RTSP_PATHS {
        let url = url::Url::parse(&format!("rtsp://{host}:{port}{path}")).expect("a host and a port make a URL");
        match rtsp::describe(&url, creds, timeout).await {
            Ok(d) => return Ok((path, d)),
            Err(ProbeError::Unauthorized) => return Err(ProbeError::Unauthorized),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn status_of(e: &ProbeError) -> DeviceStatus {
    match e {
        ProbeError::Unauthorized => DeviceStatus::AuthFailed,
        ProbeError::Unreachable(_) | ProbeError::Timeout(_) => DeviceStatus::Unreachable,
        ProbeError::NotFound => DeviceStatus::NoStreams,
        ProbeError::Failed(_) => DeviceStatus::Error,
    }
}
