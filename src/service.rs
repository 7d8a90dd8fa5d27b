//! Start-up and shutdown of the whole service, in order: config already validated, then GStreamer, data dir,
//! database, auth, cameras, listener, READY to systemd; on shutdown STOPPING, cameras and connections drained within
//! the grace time, database closed. `run` takes its shutdown signal as a future so tests and the CLI inject it. The
//! composition root: it builds the application's parts and hands the app to the transport, so it sits with the
//! transport in the layers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::{App, Listener, Parts, Phase};
use crate::auth::{Authenticator, load_or_create_secret};
use crate::base::time::{millis, now_ms};
use crate::camera::CameraManager;
use crate::config::{Config, RecordMode};
use crate::events::{EventBus, EventKind};
use crate::media::runtime::MediaRuntime;
use crate::recording::{self, Recordings, Trigger as RecordingTrigger};
use crate::reload::{Reloading, Trigger};
use crate::scanner::Scanner;
use crate::snapshot::Snapshots;
use crate::storage::Db;
use crate::storage::files::Files;
use crate::storage::roots::Roots;

/// Events kept in the log, and detection events with their pictures.
const EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Opens the data dir and database, and builds the authenticator: what `run` and the admin commands share.
pub async fn open_storage(config: &Config) -> anyhow::Result<(Db, Authenticator)> {
    let root = &config.storage.root;
    std::fs::create_dir_all(root).with_context(|| format!("creating data dir {}", root.display()))?;
    let db = Db::open(&root.join("camhub.db")).await.context("opening database")?;
    let secret = load_or_create_secret(config.auth.jwt_secret.as_deref(), root).context("loading jwt secret")?;
    let auth = Authenticator::new(&secret, db.clone());
    Ok((db, auth))
}

/// Binds `config.server.listen` and runs until `shutdown` resolves.
pub async fn run(config: Config, reloading: Reloading, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(config.server.listen).await.with_context(|| format!("binding {}", config.server.listen))?;
    run_with_listener(config, reloading, listener, shutdown).await
}

pub async fn run_with_listener(
    config: Config,
    reloading: Reloading,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // SIGHUP reloads the config; its handler is installed before start-up, so an early one is held, not fatal.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    crate::media::init()?;
    let missing = crate::media::missing_elements();
    anyhow::ensure!(
        missing.is_empty(),
        "GStreamer elements missing: {} (run scripts/install-deps.sh)",
        missing.join(", ")
    );

    // Held until `run` returns: `restore` and `check --repair/--rebuild` refuse while it is.
    std::fs::create_dir_all(&config.storage.root)
        .with_context(|| format!("creating data dir {}", config.storage.root.display()))?;
    let _lock = crate::storage::lock::DataDirLock::acquire(&config.storage.root)?;
    let (db, auth) = open_storage(&config).await?;
    let files = Files::new(&config.storage.root);
    files.create_dirs().context("creating storage areas")?;
    let roots = Arc::new(Roots::open(db.clone(), &config.storage).await.context("opening storage roots")?);
    let report = recording::recovery::reconcile(&db, &roots.present(), true).await.context("reconciling recordings")?;
    if !report.unrecoverable.is_empty() {
        warn!(files = ?report.unrecoverable, "recordings that could not be recovered were left in place, unindexed");
    }
    let events = EventBus::new(config.server.notification_queue);
    let root_cancel = CancellationToken::new();
    let media = MediaRuntime::start().context("starting the media runtime")?;
    let cameras = Arc::new(CameraManager::new(
        db.clone(),
        events.clone(),
        config.monitor.clone(),
        config.recording.pre_roll,
        root_cancel.child_token(),
        media.handle().clone(),
    ));
    let scanner = Arc::new(Scanner::new(config.discovery.clone(), cameras.clone(), events.clone(), db.clone()).await);
    let recordings = Arc::new(
        Recordings::new(
            db.clone(),
            (files.clone(), roots.clone()),
            events.clone(),
            config.recording.clone(),
            config.storage.clone(),
            root_cancel.child_token(),
            media.handle().clone(),
        )
        .await?,
    );
    let snapshots = Snapshots::new(files.clone(), config.snapshots.clone(), events.clone());
    // Models are loaded before anything is served: a missing or corrupt one is a config error (exit 64).
    let engine = match &config.inference {
        Some(inference) => Some(Arc::new(crate::inference::Engine::start(inference)?)),
        None => None,
    };
    let detections = Arc::new(crate::detection::Detections::new(crate::detection::DetectionParts {
        engine,
        cameras: config.detecting(),
        db: db.clone(),
        files: files.clone(),
        events: events.clone(),
        recordings: recordings.clone(),
        runtime: media.handle().clone(),
        shutdown: root_cancel.child_token(),
    }));
    detections.recover().await?;
    let streams = crate::publish::Publisher::new(&config, auth.clone(), media.handle().clone());
    let configured = config.cameras.clone();
    let (rtmp, srt) = (config.rtmp.clone(), config.srt.clone());
    let publish_events = events.subscribe();
    let watched = reloading.path.clone().filter(|_| config.server.watch_config);
    let app = Arc::new(App::new(Parts {
        config,
        reloading,
        auth,
        events: events.clone(),
        cameras,
        recordings,
        snapshots,
        streams,
        detections,
        scanner,
    }));

    let log_stop = CancellationToken::new();
    let log_task = tokio::spawn(log_events(db.clone(), events.subscribe(), log_stop.clone()));
    app.cameras().start(&configured).await.context("starting cameras")?;
    if rtmp.enabled {
        let bound =
            crate::media::rtmp::start(rtmp.listen, app.cameras().gate(), root_cancel.child_token(), media.handle())
                .await
                .context("starting the rtmp server")?;
        app.set_listener(Listener::Rtmp, bound);
    }
    if srt.enabled {
        let bound =
            crate::media::srt::start(srt.listen, app.cameras().gate(), root_cancel.child_token(), media.handle())
                .await
                .context("starting the srt listener")?;
        app.set_listener(Listener::Srt, bound);
    }
    let guard = tokio::spawn(app.recordings().clone().guard());
    let root_checks = tokio::spawn(app.recordings().clone().watch_roots());
    let prune = tokio::spawn(app.detections().clone().prune(EVENT_RETENTION, root_cancel.child_token()));
    let weak = Arc::downgrade(&app);
    let cameras: crate::publish::rtsp_server::CameraList =
        Arc::new(move || weak.upgrade().map(|app| app.cameras().list()).unwrap_or_default());
    app.streams()
        .start(cameras, publish_events, tokio::runtime::Handle::current())
        .context("starting the rtsp server")?;
    for c in configured.iter().filter(|c| c.record == RecordMode::Always) {
        if let Some(camera) = app.cameras().get(&c.id)
            && let Err(e) = app.recordings().start(&camera, None, None, RecordingTrigger::Continuous).await
        {
            warn!(camera_id = %c.id, err = %e, "cannot start continuous recording");
        }
    }

    // Configured cameras and those added through the API; local devices as discovery finds them.
    for camera in app.cameras().list() {
        app.detections().restore(&camera).await;
    }

    // Local devices are found after the configured cameras, so a configured id is never given to a device.
    let discovery = tokio::spawn(crate::discovery::run(app.clone(), root_cancel.child_token()));
    // Network scans after the cameras are known, so a scan tells which streams are cameras already.
    let scans = tokio::spawn(app.scanner().clone().run(root_cancel.child_token()));

    let server =
        crate::http::Server::new(app.clone(), root_cancel.child_token()).context("starting the notification thread")?;
    let addr = listener.local_addr()?;
    info!(%addr, ws = %format!("ws://{addr}/ws"), cameras = app.cameras().list().len(), "camhub listening");
    let serve = tokio::spawn(server.serve(listener));

    let reloads = spawn_reloads(&app, watched.as_deref(), hangups.ok(), root_cancel.child_token());

    app.set_phase(Phase::Running);
    events.publish(EventKind::SystemStartup);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let watchdog = spawn_watchdog(root_cancel.clone());

    shutdown.await;
    info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    app.set_phase(Phase::Stopping);
    events.publish(EventKind::SystemShutdown);
    // Let the shutdown notification reach connected clients before their sockets close.
    tokio::time::sleep(Duration::from_millis(50)).await;
    root_cancel.cancel();
    // Readers and WebRTC peers are disconnected before the cameras they watch stop.
    app.streams().shutdown().await;

    let grace = app.config().server.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        let _ = discovery.await;
        let _ = scans.await;
        app.detections().wait_stopped().await;
        app.recordings().wait_stopped().await;
        app.cameras().wait_stopped().await;
        if let Err(e) = serve.await {
            warn!(err = %e, "server task failed");
        }
    })
    .await;
    if drained.is_err() {
        warn!(grace_ms = grace.as_millis() as u64, "shutdown grace time exceeded; exiting anyway");
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    guard.abort();
    root_checks.abort();
    prune.abort();
    drop(reloads);
    // The log drains what shutdown itself published (recordings stopped, cameras lost) before the database closes.
    log_stop.cancel();
    let _ = log_task.await;
    db.close().await;
    drop(media);
    info!("stopped");
    Ok(())
}

/// Reloads the config on SIGHUP and when the file changes on disk, one reload at a time and each change seen once
/// (changes during a reload make one more); returns the watcher, which stops watching when dropped.
fn spawn_reloads(
    app: &Arc<App>,
    path: Option<&std::path::Path>,
    hangups: Option<tokio::signal::unix::Signal>,
    stop: CancellationToken,
) -> Option<impl Drop> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Trigger>(1);
    let watcher = path.and_then(|path| {
        let tx = tx.clone();
        match crate::reload::watch(path, move || {
            let _ = tx.try_send(Trigger::Watcher);
        }) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(err = %e, "cannot watch the config file; SIGHUP and reload_config still reload it");
                None
            }
        }
    });
    if let Some(mut hangups) = hangups {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    got = hangups.recv() => match got {
                        Some(()) => { let _ = tx.send(Trigger::Signal).await; }
                        None => break,
                    },
                    _ = stop.cancelled() => break,
                }
            }
        });
    }
    let app = app.clone();
    tokio::spawn(async move {
        loop {
            let trigger = tokio::select! {
                t = rx.recv() => match t { Some(t) => t, None => break },
                _ = stop.cancelled() => break,
            };
            // Errors are logged and published by the reload itself.
            let _ = app.reload(trigger, None).await;
        }
    });
    watcher
}

/// Pings systemd's watchdog at half its interval, when systemd asked for one.
fn spawn_watchdog(cancel: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let period = Duration::from_micros(usec / 2);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => { let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]); }
                _ = cancel.cancelled() => break,
            }
        }
    }))
}

/// Writes every event to the event log and prunes it daily; when `stop` fires, writes what is queued and returns.
async fn log_events(
    db: Db,
    mut rx: tokio::sync::broadcast::Receiver<Arc<crate::events::Event>>,
    stop: CancellationToken,
) {
    let mut prune = tokio::time::interval(Duration::from_secs(24 * 3600));
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Ok(event) => write_event(&db, &event).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => warn!(lost = n, "event log fell behind"),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = prune.tick() => {
                let before = now_ms() - EVENT_RETENTION.as_millis() as i64;
                if let Err(e) = db.prune_events(before).await {
                    warn!(err = %e, "cannot prune event log");
                }
            }
            _ = stop.cancelled() => {
                while let Ok(event) = rx.try_recv() {
                    write_event(&db, &event).await;
                }
                break;
            }
        }
    }
}

async fn write_event(db: &Db, event: &crate::events::Event) {
    let topic = event.topics().first().copied().unwrap_or("unknown");
    let device = event.device().map(|d| d.to_string());
    let details = serde_json::to_string(&crate::rpc::notify::event_data(event)).unwrap_or_default();
    if let Err(e) = db.insert_event(millis(event.at), topic, device.as_deref(), &details).await {
        warn!(err = %e, "cannot log event");
    }
}
