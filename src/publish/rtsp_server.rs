//! camhub's RTSP server: gst-rtsp-server on its own GLib main-context thread, every published camera mounted at
//! `/<id>`. Each mount is a [`CamFactory`]: one shared media per camera whatever the URL a reader used, built for the
//! first reader (`appsrc ! rtph264pay|rtph265pay`, the hub's avc/hvc1 frames payloaded as they are, with the parameter
//! sets the hub has before every keyframe; for a camera with sound a second stream, `appsrc ! rtpmp4gpay|rtppcmupay|
//! rtppcmapay`, the camera's audio as it came) and torn down `LINGER` after the last reader left. The linger is a prepare
//! reference of our own on the media: without it, a reader that reconnects at once (or a DESCRIBE right after another
//! client's) finds the shared media half torn down and gets 503 from gst-rtsp-server.
//!
//! Mounts follow the cameras: the publisher asks the server's thread to reconcile whenever a camera is added,
//! removed, withdrawn or published again (from the event bus and the streaming methods), and the thread then mounts
//! cameras that appeared and unmounts those removed or withdrawn (closing their readers). A tick on the thread
//! (every 250 ms) expires idle sessions and counts readers. Optional Basic auth
//! ([`CamAuth`]): a configured user, or any user name with a valid API key or JWT as the password; credentials are
//! never logged.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::gst_rtsp;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::subclass::prelude::*;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::feed::{self, Feed};
use super::{Counters, Publisher};
use crate::auth::Authenticator;
use crate::base::CameraId;
use crate::camera::Camera;
use crate::config::{RtspServerConfig, RtspUser};
use crate::error::{Error, Result};
use crate::media::{audio_codec_of, codec_of};

/// How often the server's thread reconciles mounts, expires sessions and counts readers.
const TICK: Duration = Duration::from_millis(250);
/// How long a verified RTSP credential is trusted before it is checked again (a revoked API key stops working within
/// this time).
const CREDENTIAL_CACHE: Duration = Duration::from_secs(30);
/// How long a media stays up after its last reader left.
const LINGER: Duration = Duration::from_secs(2);
/// The role the token of an authenticated reader carries, and the only role the mounts admit.
const READER_ROLE: &str = "reader";

/// Lists the cameras that exist now.
pub type CameraList = Arc<dyn Fn() -> Vec<Arc<Camera>> + Send + Sync>;

/// The running server; dropping it stops the thread (readers are disconnected).
pub struct RtspServer {
    context: glib::MainContext,
    main_loop: glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
    port: u16,
}

thread_local! {
    /// The reconcile step of the server whose thread this is, for `reconcile_now`.
    static RECONCILE: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
}

impl RtspServer {
    /// Binds and starts serving; returns once the server listens.
    pub fn start(
        config: &RtspServerConfig,
        publisher: Weak<Publisher>,
        cameras: CameraList,
        auth: Authenticator,
        api: tokio::runtime::Handle,
        media: tokio::runtime::Handle,
    ) -> Result<RtspServer> {
        crate::media::init()?;
        let context = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let server = rtsp::RTSPServer::new();
        server.set_address(&config.listen.ip().to_string());
        server.set_service(&config.listen.port().to_string());
        if config.require_auth {
            server.set_auth(Some(&CamAuth::new(config.users.clone(), auth, api)));
        }
        let mounts = server.mount_points().ok_or_else(|| Error::internal("rtsp server has no mount points"))?;
        let mut state = Mounts {
            server: server.clone(),
            mounts,
            publisher,
            cameras,
            media,
            auth: config.require_auth,
            mounted: BTreeSet::new(),
            held: HashMap::new(),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_loop = main_loop.clone();
        let thread_context = context.clone();
        let thread = std::thread::Builder::new()
            .name("camhub-rtsp".into())
            .spawn(move || {
                let run = || -> std::result::Result<(), String> {
                    let source = server.attach(Some(&thread_context)).map_err(|e| e.to_string())?;
                    let _ = ready_tx.send(Ok(server.bound_port()));
                    state.reconcile();
                    state.tick();
                    let state = std::rc::Rc::new(RefCell::new(state));
                    let ticking = state.clone();
                    let tick = glib::timeout_source_new(TICK, None, glib::Priority::DEFAULT, {
                        // The closure must be Send for the generic API, but it only ever runs on this thread: the
                        // state stays here behind a thread guard.
                        let ticking = glib::thread_guard::ThreadGuard::new(ticking);
                        move || {
                            ticking.get_ref().borrow_mut().tick();
                            glib::ControlFlow::Continue
                        }
                    });
                    tick.attach(Some(&thread_context));
                    RECONCILE.with(|r| {
                        *r.borrow_mut() = Some(Box::new(move || {
                            let mut state = state.borrow_mut();
                            state.reconcile();
                            state.tick();
                        }))
                    });
                    thread_loop.run();
                    tick.destroy();
                    // The listening source lives in this thread's context: `SourceId::remove` would look for it in
                    // the global default context, not find it, and panic (seen at every shutdown).
                    if let Some(source) = thread_context.find_source_by_id(&source) {
                        source.destroy();
                    }
                    // Readers are told the server is going.
                    let clients = server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Ref));
                    for client in clients {
                        client.close();
                    }
                    RECONCILE.with(|r| r.borrow_mut().take());
                    Ok(())
                };
                let result = thread_context.with_thread_default(run);
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        let _ = ready_tx.send(Err(e));
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            })
            .map_err(Error::internal)?;
        let port = crate::media::bound_port(&ready_rx, config.listen)?;
        info!(port, address = %config.listen.ip(), auth = config.require_auth, "rtsp server listening");
        Ok(RtspServer { context, main_loop, thread: Some(thread), port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs the reconcile step on the server's thread now.
    pub fn reconcile_now(&self) {
        self.context.invoke(|| {
            RECONCILE.with(|r| {
                if let Some(f) = r.borrow().as_ref() {
                    f();
                }
            })
        });
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the server's thread keeps between ticks. Lives on that thread only.
struct Mounts {
    server: rtsp::RTSPServer,
    mounts: rtsp::RTSPMountPoints,
    publisher: Weak<Publisher>,
    cameras: CameraList,
    media: tokio::runtime::Handle,
    auth: bool,
    mounted: BTreeSet<CameraId>,
    /// Per mount: its current media (set by the factory) and our hold on it.
    held: HashMap<CameraId, Hold>,
}

/// Our prepare reference on a mount's media, which keeps it up while readers come and go. Taken by the media's
/// `prepared` handler (at once: a tick would be too late for a client that disconnects within milliseconds), released
/// by the server thread's tick.
struct Hold {
    held: Arc<Mutex<Option<rtsp::RTSPMedia>>>,
    last_reader: Instant,
}

impl Mounts {
    /// Mounts the published cameras that are not, and unmounts the mounts of cameras removed or withdrawn.
    fn reconcile(&mut self) {
        let Some(publisher) = self.publisher.upgrade() else { return };
        let cameras = (self.cameras)();
        let wanted: HashMap<&CameraId, &Arc<Camera>> =
            cameras.iter().filter(|c| publisher.is_published(&c.id)).map(|c| (&c.id, c)).collect();
        let gone: Vec<CameraId> = self.mounted.iter().filter(|id| !wanted.contains_key(id)).cloned().collect();
        for id in gone {
            self.unmount(&id);
        }
        for (id, camera) in &wanted {
            if !self.mounted.contains(*id) {
                self.mount(camera, publisher.counters(id));
            }
        }
    }

    /// Expires idle sessions, counts each mount's readers, and releases holds whose linger ran out.
    fn tick(&mut self) {
        let Some(publisher) = self.publisher.upgrade() else { return };
        if let Some(pool) = self.server.session_pool() {
            pool.cleanup();
            for id in &self.mounted {
                let path = format!("/{id}");
                let readers = sessions_on(&pool, &path).len();
                publisher.counters(id).rtsp_readers.store(readers, Ordering::Relaxed);
                if let Some(hold) = self.held.get_mut(id) {
                    hold.update(readers);
                }
            }
        }
    }

    fn mount(&mut self, camera: &Arc<Camera>, counters: Arc<Counters>) {
        let current = Arc::new(Mutex::new(None));
        self.held.insert(camera.id.clone(), Hold { held: current.clone(), last_reader: Instant::now() });
        let factory = CamFactory::new(camera.clone(), counters, self.media.clone(), current);
        factory.set_shared(true);
        if self.auth {
            factory.add_role_from_structure(
                &gst::Structure::builder(READER_ROLE)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                    .build(),
            );
        }
        self.mounts.add_factory(&format!("/{}", camera.id), factory);
        self.mounted.insert(camera.id.clone());
        debug!(camera_id = %camera.id, "rtsp mount added");
    }

    /// Withdraws a mount: new readers get 404, current ones are disconnected.
    fn unmount(&mut self, id: &CameraId) {
        let path = format!("/{id}");
        self.mounts.remove_factory(&path);
        self.mounted.remove(id);
        if let Some(mut hold) = self.held.remove(id) {
            hold.release();
        }
        let clients = self.server.client_filter(Some(&mut |_, client| {
            let mine = client.session_filter(Some(&mut |_, session| {
                if has_media(session, &path) { rtsp::RTSPFilterResult::Ref } else { rtsp::RTSPFilterResult::Keep }
            }));
            if mine.is_empty() { rtsp::RTSPFilterResult::Keep } else { rtsp::RTSPFilterResult::Ref }
        }));
        let closed = clients.len();
        for client in clients {
            client.close();
        }
        debug!(camera_id = %id, readers_closed = closed, "rtsp mount removed");
    }
}

impl Hold {
    /// Releases the hold once no reader has been there for `LINGER`.
    fn update(&mut self, readers: usize) {
        let now = Instant::now();
        let held = self.held.lock().is_some();
        if readers > 0 || !held {
            self.last_reader = now;
        } else if now.duration_since(self.last_reader) >= LINGER {
            self.release();
        }
    }

    fn release(&mut self) {
        let media = self.held.lock().take();
        if let Some(media) = media {
            let _ = media.unprepare();
        }
    }
}

/// Whether `session` has the media mounted exactly at `path` (not merely a prefix of it).
fn has_media(session: &rtsp::RTSPSession, path: &str) -> bool {
    !session
        .filter(Some(&mut |_, media| match media.matches(path) {
            Some(n) if n as usize == path.len() => rtsp::RTSPFilterResult::Ref,
            _ => rtsp::RTSPFilterResult::Keep,
        }))
        .is_empty()
}

fn sessions_on(pool: &rtsp::RTSPSessionPool, path: &str) -> Vec<rtsp::RTSPSession> {
    pool.filter(Some(&mut |_, session| {
        if has_media(session, path) { rtsp::RTSPFilterResult::Ref } else { rtsp::RTSPFilterResult::Keep }
    }))
}

// ---- the media factory ----

/// What a mount serves.
struct MountSettings {
    camera: Arc<Camera>,
    counters: Arc<Counters>,
    media: tokio::runtime::Handle,
    /// The media our hold is on, if any (see [`Hold`]).
    current: Arc<Mutex<Option<rtsp::RTSPMedia>>>,
}

mod factory_imp {
    use super::*;

    #[derive(Default)]
    pub struct CamFactory {
        pub(super) settings: OnceLock<MountSettings>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for CamFactory {
        const NAME: &'static str = "CamhubMediaFactory";
        type Type = super::CamFactory;
        type ParentType = rtsp::RTSPMediaFactory;
    }

    impl ObjectImpl for CamFactory {}

    impl RTSPMediaFactoryImpl for CamFactory {
        /// One media per camera, whatever host or query a reader's URL had.
        fn gen_key(&self, _url: &gst_rtsp::RTSPUrl) -> Option<glib::GString> {
            Some("camera".into())
        }

        /// `appsrc name=src ! rtph26Xpay name=pay0`, for the camera's current caps; none (503) before it delivered any.
        /// With sound, `appsrc name=audio ! rtpmp4gpay|rtppcmupay|rtppcmapay name=pay1` beside it.
        fn create_element(&self, _url: &gst_rtsp::RTSPUrl) -> Option<gst::Element> {
            let s = self.settings.get()?;
            let caps = s.camera.hub.caps()?;
            let codec = codec_of(&caps)?;
            let audio = s.camera.hub.audio_caps().and_then(|caps| Some((audio_codec_of(&caps)?, caps)));
            let build = || -> std::result::Result<gst::Element, glib::BoolError> {
                let bin = gst::Bin::new();
                let src = feed::appsrc("src", &caps);
                let pay = gst::ElementFactory::make(codec.payloader())
                    .name("pay0")
                    .property("pt", 96u32)
                    // No parameter sets from the payloader: the hub's keyframes begin with theirs already (every
                    // ingest puts them there). rtph264pay's "-1" (GStreamer 1.22) sends them again before each IDR
                    // *slice*, which splits a keyframe of several slices into two access units with one timestamp
                    // for FFmpeg ("non monotonically increasing dts").
                    .property("config-interval", 0i32)
                    .build()?;
                bin.add_many([src.upcast_ref(), &pay])?;
                src.link(&pay)?;
                if let Some((audio_codec, audio_caps)) = &audio {
                    let src = feed::appsrc("audio", audio_caps);
                    let pay = gst::ElementFactory::make(audio_codec.payloader())
                        .name("pay1")
                        .property("pt", 97u32)
                        .build()?;
                    bin.add_many([src.upcast_ref(), &pay])?;
                    src.link(&pay)?;
                }
                Ok(bin.upcast())
            };
            match build() {
                Ok(e) => Some(e),
                Err(e) => {
                    warn!(camera_id = %s.camera.id, err = %e, "cannot build rtsp media");
                    None
                }
            }
        }

        /// A new shared media: feed it from the hub until it is unprepared; count its bytes per reader.
        fn media_configure(&self, media: &rtsp::RTSPMedia) {
            self.parent_media_configure(media);
            let Some(s) = self.settings.get() else { return };
            let Some(bin) = media.element().downcast::<gst::Bin>().ok() else { return };
            let (Some(src), Some(pay)) =
                (bin.by_name("src").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()), bin.by_name("pay0"))
            else {
                return;
            };
            let Some(codec) = src.caps().as_ref().and_then(codec_of) else { return };
            let audio = bin.by_name("audio").and_then(|e| e.downcast::<gst_app::AppSrc>().ok());
            for pay in std::iter::once(pay).chain(bin.by_name("pay1")) {
                if let Some(pad) = pay.static_pad("src") {
                    feed::count_bytes(&pad, s.counters.clone(), |c| c.rtsp_readers.load(Ordering::Relaxed) as u64);
                }
            }
            let stop = CancellationToken::new();
            media.connect_unprepared({
                let stop = stop.clone();
                move |_| stop.cancel()
            });
            media.connect_prepared({
                let current = s.current.clone();
                move |media| {
                    if current.lock().is_some() || media.prepare(None).is_err() {
                        return;
                    }
                    let old = current.lock().replace(media.clone());
                    // A hold on an earlier media of this mount (already gone) is released.
                    if let Some(old) = old {
                        let _ = old.unprepare();
                    }
                }
            });
            let started = Arc::new(tokio::sync::Notify::new());
            feed::on_need_data(&src, started.clone());
            let id = s.camera.id.clone();
            let feed = Feed {
                appsrc: src,
                audio,
                hub: Arc::downgrade(&s.camera.hub),
                codec,
                counters: s.counters.clone(),
                started,
                restart: None,
                stop,
            };
            debug!(camera_id = %id, "rtsp media built");
            s.media.spawn(async move {
                let end = feed::run(feed).await;
                debug!(camera_id = %id, ?end, "rtsp media feed ended");
            });
        }
    }
}

glib::wrapper! {
    /// The media factory of one camera's mount.
    pub struct CamFactory(ObjectSubclass<factory_imp::CamFactory>) @extends rtsp::RTSPMediaFactory;
}

impl CamFactory {
    fn new(
        camera: Arc<Camera>,
        counters: Arc<Counters>,
        media: tokio::runtime::Handle,
        current: Arc<Mutex<Option<rtsp::RTSPMedia>>>,
    ) -> CamFactory {
        let factory: CamFactory = glib::Object::new();
        let _ = factory.imp().settings.set(MountSettings { camera, counters, media, current });
        factory
    }
}

// ---- authentication ----

/// What a verified credential is good for until.
struct Verified {
    until: Instant,
}

struct AuthSettings {
    /// Configured users: name and SHA-256 of the password (compared as digests, not as strings).
    users: Vec<(String, [u8; 32])>,
    auth: Authenticator,
    /// The API runtime, to look API keys up in the database from this (non-runtime) thread.
    api: tokio::runtime::Handle,
    /// Verified `Authorization` values by digest; bounded by expiry and a size cap.
    cache: Mutex<HashMap<[u8; 32], Verified>>,
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

impl AuthSettings {
    /// Whether the Basic credential (base64 `user:password`) is good: a configured user, or any user name with an API
    /// key or JWT as the password.
    fn verify(&self, basic: &str) -> bool {
        let key = digest(basic.as_bytes());
        {
            let mut cache = self.cache.lock();
            match cache.get(&key) {
                Some(v) if v.until > Instant::now() => return true,
                Some(_) => {
                    cache.remove(&key);
                }
                None => {}
            }
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else { return false };
        let Ok(text) = String::from_utf8(decoded) else { return false };
        let Some((user, password)) = text.split_once(':') else { return false };
        let pass = digest(password.as_bytes());
        let until = if self.users.iter().any(|(u, p)| u == user && *p == pass) {
            Some(Instant::now() + CREDENTIAL_CACHE)
        } else if password.is_empty() {
            None
        } else {
            let auth = self.auth.clone();
            let password = password.to_owned();
            let verified = self
                .api
                .block_on(async move { tokio::time::timeout(Duration::from_secs(2), auth.verify(&password)).await });
            match verified {
                Ok(Ok(principal)) => {
                    let mut ttl = CREDENTIAL_CACHE;
                    if let Some(exp) = principal.expires_at {
                        ttl = ttl.min(exp.duration_since(std::time::SystemTime::now()).unwrap_or_default());
                    }
                    Some(Instant::now() + ttl)
                }
                _ => None,
            }
        };
        match until {
            Some(until) => {
                let mut cache = self.cache.lock();
                if cache.len() > 1024 {
                    let now = Instant::now();
                    cache.retain(|_, v| v.until > now);
                }
                cache.insert(key, Verified { until });
                true
            }
            None => {
                // Never the credential itself, not even the user name (clients put keys anywhere).
                debug!("rtsp reader presented credentials that do not verify");
                false
            }
        }
    }
}

mod auth_imp {
    use super::*;

    #[derive(Default)]
    pub struct CamAuth {
        pub(super) settings: OnceLock<AuthSettings>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for CamAuth {
        const NAME: &'static str = "CamhubRtspAuth";
        type Type = super::CamAuth;
        type ParentType = rtsp::RTSPAuth;
    }

    impl ObjectImpl for CamAuth {}

    impl RTSPAuthImpl for CamAuth {
        /// Gives the request the reader token when its Basic credential verifies. Without a token, the default
        /// checks refuse the mount with 401 and a `WWW-Authenticate: Basic` challenge.
        fn authenticate(&self, ctx: &rtsp::RTSPContext) -> bool {
            let Some(s) = self.settings.get() else { return false };
            let basic = ctx.request().and_then(|req| {
                req.parse_auth_credentials()
                    .iter()
                    .find(|c| c.scheme() == gst_rtsp::RTSPAuthMethod::Basic)
                    .and_then(|c| c.authorization().map(str::to_owned))
            });
            if basic.is_some_and(|b| s.verify(&b)) {
                ctx.set_token(
                    rtsp::RTSPToken::builder().field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, READER_ROLE).build(),
                );
            }
            true
        }
    }
}

glib::wrapper! {
    /// RTSP Basic authentication against configured users and camhub's API keys and tokens.
    pub struct CamAuth(ObjectSubclass<auth_imp::CamAuth>) @extends rtsp::RTSPAuth;
}

impl CamAuth {
    fn new(users: Vec<RtspUser>, auth: Authenticator, api: tokio::runtime::Handle) -> CamAuth {
        let a: CamAuth = glib::Object::new();
        a.set_supported_methods(gst_rtsp::RTSPAuthMethod::Basic);
        a.set_realm(Some("camhub"));
        let users = users.into_iter().map(|u| (u.user, digest(u.password.as_bytes()))).collect();
        let _ = a.imp().settings.set(AuthSettings { users, auth, api, cache: Mutex::new(HashMap::new()) });
        a
    }
}
