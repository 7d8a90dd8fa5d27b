//! Publishing: every camera republished, without re-encoding, over RTSP (`rtsp_server`: gst-rtsp-server on its own
//! GLib thread, one shared media per camera built for its first reader), WebRTC (`whep`: one webrtcbin per WHEP
//! session) and low-latency HLS (`hls`: one fMP4 muxer per camera watched, parts and segments in memory). RTSP and
//! WHEP are hub consumers fed by `feed`; HLS feeds its muxer itself (its timeline is the stream's, not the clock's). This module owns which cameras are published (all by default;
//! `stop_streaming` withdraws one until `start_streaming`), their public URLs, and the counters the API reports
//! (readers, bytes and frames sent). It knows cameras and hubs; it knows nothing about JSON-RPC or HTTP framing.

pub mod feed;
pub mod hls;
pub mod rtsp_server;
pub mod whep;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::auth::Authenticator;
use crate::base::CameraId;
use crate::config::Config;
use crate::error::{Error, Result, State};
use crate::events::{Event, EventKind};

/// What one camera's publishing has done; shared by the RTSP thread, WHEP sessions and the API.
#[derive(Debug, Default)]
pub struct Counters {
    /// RTSP sessions set up on the camera's mount (counted by the RTSP thread every tick).
    pub rtsp_readers: AtomicUsize,
    /// Live WHEP sessions of the camera.
    pub webrtc_sessions: AtomicUsize,
    /// HLS viewers: who asked for any of the camera's HLS stream in the last 5 s.
    pub hls_viewers: AtomicUsize,
    /// RTP bytes sent to readers: each packet counted once per reader it goes to (transport framing excluded).
    pub bytes_sent: AtomicU64,
    /// Frames handed to a publishing pipeline (once per frame for the shared RTSP media, once per WHEP session).
    pub frames_sent: AtomicU64,
}

impl Counters {
    pub fn readers(&self) -> usize {
        self.rtsp_readers.load(Ordering::Relaxed)
            + self.webrtc_sessions.load(Ordering::Relaxed)
            + self.hls_viewers.load(Ordering::Relaxed)
    }
}

/// Whether a camera is published, and since when.
#[derive(Debug, Clone, Copy)]
pub enum Publication {
    Started { since: SystemTime },
    Stopped { since: SystemTime },
}

#[derive(Debug)]
struct Entry {
    counters: Arc<Counters>,
    publication: Publication,
}

/// A camera's public URLs.
#[derive(Debug, Clone, Default)]
pub struct Urls {
    pub rtsp: String,
    pub webrtc: String,
    pub hls: String,
}

/// The publishing service: the RTSP server, WHEP sessions, and per-camera state.
pub struct Publisher {
    rtsp_enabled: bool,
    webrtc_enabled: bool,
    /// `rtsp://HOST:PORT` (port fixed once the server is bound).
    rtsp_base: Mutex<String>,
    /// `http://HOST:PORT`.
    http_base: String,
    /// Per-camera publication and counters; short critical sections, never held while calling GStreamer.
    entries: Mutex<BTreeMap<CameraId, Entry>>,
    /// The running RTSP server, once started.
    rtsp: Mutex<Option<rtsp_server::RtspServer>>,
    pub whep: whep::Whep,
    pub hls: hls::Hls,
    config: Config,
    auth: Authenticator,
    /// The media runtime: feeders and WHEP sessions run there.
    runtime: tokio::runtime::Handle,
    /// Stops the housekeeping task.
    stop: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("rtsp_base", &*self.rtsp_base.lock()).finish_non_exhaustive()
    }
}

impl Publisher {
    /// Nothing runs until [`Publisher::start`].
    pub fn new(config: &Config, auth: Authenticator, runtime: tokio::runtime::Handle) -> Arc<Publisher> {
        let r = &config.rtsp_server;
        let host = |ip: std::net::IpAddr| match &r.public_host {
            Some(h) => h.clone(),
            None if ip.is_ipv6() => format!("[{ip}]"),
            None => ip.to_string(),
        };
        Arc::new(Publisher {
            rtsp_enabled: r.enabled,
            webrtc_enabled: config.webrtc.enabled,
            rtsp_base: Mutex::new(format!("rtsp://{}:{}", host(r.listen.ip()), r.listen.port())),
            http_base: format!("http://{}:{}", host(config.server.listen.ip()), config.server.listen.port()),
            entries: Mutex::new(BTreeMap::new()),
            rtsp: Mutex::new(None),
            whep: whep::Whep::new(config.webrtc.clone(), runtime.clone()),
            hls: hls::Hls::new(config.hls.clone(), runtime.clone()),
            config: config.clone(),
            auth,
            runtime,
            stop: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Starts the RTSP server (when enabled). `cameras` lists the cameras that exist now; `events` says when that
    /// changes: a camera added is mounted, a camera removed is unmounted, its WebRTC sessions ended and its counters
    /// forgotten, at once. A subscriber that fell behind reconciles with the whole list.
    pub fn start(
        self: &Arc<Self>,
        cameras: rtsp_server::CameraList,
        mut events: broadcast::Receiver<Arc<Event>>,
        api: tokio::runtime::Handle,
    ) -> Result<()> {
        if self.webrtc_enabled() {
            self.whep.prewarm();
        }
        if self.hls.enabled() {
            hls::register_muxer()?;
        }
        let weak = Arc::downgrade(self);
        let list = cameras.clone();
        let stop = self.stop.clone();
        self.runtime.spawn(async move {
            loop {
                let changed = tokio::select! {
                    _ = stop.cancelled() => return,
                    event = events.recv() => match event {
                        Ok(event) => matches!(event.kind, EventKind::CameraAdded { .. } | EventKind::CameraRemoved { .. }),
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                if !changed {
                    continue;
                }
                let Some(publisher) = weak.upgrade() else { return };
                let ids: Vec<CameraId> = list().iter().map(|c| c.id.clone()).collect();
                publisher.retain(|id| ids.contains(id));
                publisher.reconcile_now();
                publisher.hls.end_missing(|id| ids.contains(id));
                publisher.whep.end_missing(|id| ids.contains(id)).await;
            }
        });
        if !self.rtsp_enabled {
            return Ok(());
        }
        let server = rtsp_server::RtspServer::start(
            &self.config.rtsp_server,
            Arc::downgrade(self),
            cameras,
            self.auth.clone(),
            api,
            self.runtime.clone(),
        )?;
        let r = &self.config.rtsp_server;
        if r.listen.port() == 0 {
            let mut base = self.rtsp_base.lock();
            let host =
                base.trim_start_matches("rtsp://").rsplit_once(':').map(|(h, _)| h.to_owned()).unwrap_or_default();
            *base = format!("rtsp://{host}:{}", server.port());
        }
        *self.rtsp.lock() = Some(server);
        Ok(())
    }

    /// Stops the RTSP server (readers disconnected) and ends every WHEP session.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let server = self.rtsp.lock().take();
        if let Some(server) = server {
            let _ = tokio::task::spawn_blocking(move || drop(server)).await;
        }
        self.whep.shutdown().await;
        self.hls.shutdown();
    }

    /// The RTSP port actually bound (0 when the server is disabled or not started).
    pub fn rtsp_port(&self) -> u16 {
        self.rtsp.lock().as_ref().map(|s| s.port()).unwrap_or(0)
    }

    pub fn urls(&self, id: &CameraId) -> Urls {
        Urls {
            rtsp: if self.rtsp_enabled { format!("{}/{id}", self.rtsp_base.lock()) } else { String::new() },
            webrtc: if self.webrtc_enabled { format!("{}/whep/{id}", self.http_base) } else { String::new() },
            hls: if self.hls.enabled() { format!("{}/hls/{id}/index.m3u8", self.http_base) } else { String::new() },
        }
    }

    /// Where a publisher of camera `id` POSTs its WHIP offer (on the HTTP listener, like WHEP).
    pub fn whip_url(&self, id: &CameraId) -> String {
        format!("{}/whip/{id}", self.http_base)
    }

    pub fn rtsp_enabled(&self) -> bool {
        self.rtsp_enabled
    }

    pub fn webrtc_enabled(&self) -> bool {
        self.webrtc_enabled
    }

    /// The counters of a camera (created on first use; dropped when the camera is).
    pub fn counters(&self, id: &CameraId) -> Arc<Counters> {
        self.entries.lock().entry(id.clone()).or_insert_with(Entry::new).counters.clone()
    }

    pub fn publication(&self, id: &CameraId) -> Publication {
        self.entries.lock().entry(id.clone()).or_insert_with(Entry::new).publication
    }

    pub fn is_published(&self, id: &CameraId) -> bool {
        matches!(self.publication(id), Publication::Started { .. })
    }

    /// Publishes a camera again after `stop_streaming` (a no-op if it is published). Returns when it was published.
    pub fn start_streaming(&self, id: &CameraId) -> SystemTime {
        let since = {
            let mut entries = self.entries.lock();
            let entry = entries.entry(id.clone()).or_insert_with(Entry::new);
            match entry.publication {
                Publication::Started { since } => since,
                Publication::Stopped { .. } => {
                    let since = SystemTime::now();
                    entry.publication = Publication::Started { since };
                    since
                }
            }
        };
        self.reconcile_now();
        since
    }

    /// Withdraws a camera: its RTSP readers and WHEP sessions are disconnected and new ones refused until
    /// `start_streaming`. Returns when it had been published; refuses a camera that is not published.
    pub async fn stop_streaming(&self, id: &CameraId) -> Result<SystemTime> {
        let since = {
            let mut entries = self.entries.lock();
            let entry = entries.entry(id.clone()).or_insert_with(Entry::new);
            match entry.publication {
                Publication::Started { since } => {
                    entry.publication = Publication::Stopped { since: SystemTime::now() };
                    since
                }
                Publication::Stopped { .. } => {
                    return Err(Error::invalid_state(State::Stopped, &[State::Started]));
                }
            }
        };
        self.reconcile_now();
        self.whep.end_camera(id).await;
        self.hls.end_camera(id);
        Ok(since)
    }

    /// Forgets cameras that no longer exist (their mounts are withdrawn by the RTSP thread).
    fn retain(&self, exists: impl Fn(&CameraId) -> bool) {
        self.entries.lock().retain(|id, _| exists(id));
    }

    /// Asks the RTSP thread to mount and unmount now rather than at its next tick.
    fn reconcile_now(&self) {
        if let Some(server) = self.rtsp.lock().as_ref() {
            server.reconcile_now();
        }
    }
}

impl Entry {
    fn new() -> Entry {
        Entry { counters: Arc::default(), publication: Publication::Started { since: SystemTime::now() } }
    }
}
