//! The camera registry and the only owner of the `cameras` table: which cameras exist, where they came from, and one
//! supervisor task per camera. Every change (a camera added through the API, removed, or found on the machine) is
//! checked, persisted and registered as one step under one lock, so two concurrent adds of one name cannot both
//! pass the check. Cameras added at run time are persisted before they start, so they come back after a restart;
//! configured cameras are re-read from the config at every start; a local device keeps its id by its identity. A
//! pushed camera is opened by its stream key (only its SHA-256 is kept, here and in the table); the manager is the
//! gate the protocol servers ask, and removing the camera revokes its key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use super::device::{DeviceSettings, LocalDevice, Plugged};
use super::{Camera, CameraId, CameraSource, CameraStatus, Origin};
use crate::auth::{hash_key, new_key};
use crate::base::url::{parse_stream_url, redact_url};
use crate::config::{MonitorConfig, SourceConfig};
use crate::error::{Error, Result, State};
use crate::events::{EventBus, EventKind};
use crate::media::push::{Gate, PushSlot};
use crate::storage::Db;
use crate::storage::db::CameraRow;

/// Upper bound on cameras, so a client cannot exhaust the process by adding streams.
pub const MAX_CAMERAS: usize = 256;

/// How stream keys begin, so a leaked one is recognisable.
const STREAM_KEY_PREFIX: &str = "sk_";

/// A pushed camera's stream key as listed: never the key itself.
#[derive(Debug, Clone)]
pub struct StreamKeyInfo {
    pub camera: Arc<Camera>,
    /// The key's first characters.
    pub prefix: String,
}

/// A stream key's camera slot and the key's first characters.
#[derive(Debug)]
struct KeyEntry {
    slot: Arc<PushSlot>,
    prefix: String,
    camera: CameraId,
}

#[derive(Debug)]
struct Entry {
    camera: Arc<Camera>,
    /// Cancels this camera's supervisor alone.
    cancel: CancellationToken,
}

#[derive(Debug)]
pub struct CameraManager {
    /// Short reads and writes only; supervisors never take it.
    cameras: RwLock<BTreeMap<CameraId, Entry>>,
    /// Held across each change's check, database write and registration (an async lock: the write awaits), so
    /// changes happen one at a time and a check stays true until its change is made.
    changes: tokio::sync::Mutex<()>,
    db: Db,
    events: EventBus,
    monitor: MonitorConfig,
    /// History each camera's hub keeps (the recording pre-roll).
    hub_retain: std::time::Duration,
    /// Pushed cameras' stream keys: SHA-256 (hex) to the camera's slot and the key's first characters. Read by the
    /// protocol servers' gate on every publish request.
    keys: Arc<RwLock<HashMap<String, KeyEntry>>>,
    /// Parent of every camera's cancellation token: cancelling it stops them all.
    shutdown: CancellationToken,
    /// Supervisor tasks, so shutdown can wait for every pipeline to be torn down.
    tasks: TaskTracker,
    /// The runtime supervisors run on (the media runtime).
    runtime: tokio::runtime::Handle,
}

impl CameraManager {
    pub fn new(
        db: Db,
        events: EventBus,
        monitor: MonitorConfig,
        hub_retain: std::time::Duration,
        shutdown: CancellationToken,
        runtime: tokio::runtime::Handle,
    ) -> CameraManager {
        CameraManager {
            cameras: RwLock::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(()),
            keys: Arc::default(),
            db,
            events,
            monitor,
            hub_retain,
            shutdown,
            tasks: TaskTracker::new(),
            runtime,
        }
    }

    /// Starts the configured cameras, then those added at run time in an earlier life.
    pub async fn start(&self, configured: &[crate::config::CameraConfig]) -> Result<()> {
        let _change = self.changes.lock().await;
        for c in configured {
            self.insert_configured(c).await?;
        }
        for r in self.db.cameras().await? {
            if r.origin != Origin::Api.as_str() {
                continue;
            }
            let Ok(id) = CameraId::parse(&r.id) else {
                warn!(camera_id = r.id, "skipping unreadable stored camera");
                continue;
            };
            let (source, key) = match (r.kind.as_str(), r.url.as_deref().map(parse_stream_url), r.key_hash) {
                ("rtsp", Some(Ok(url)), _) => (CameraSource::Rtsp { url }, None),
                ("push", _, Some(hash)) => {
                    (CameraSource::Push { slot: Arc::default() }, Some((hash, r.key_prefix.unwrap_or_default())))
                }
                _ => {
                    warn!(camera_id = r.id, "skipping unreadable stored camera");
                    continue;
                }
            };
            if self.get(&id).is_some() {
                warn!(camera_id = %id, "stored camera shadowed by a configured camera with the same id");
                continue;
            }
            self.insert(Camera::new(id, r.name, source, Origin::Api), key)?;
        }
        Ok(())
    }

    /// A configured camera: persisted (as configured) and started.
    async fn insert_configured(&self, c: &crate::config::CameraConfig) -> Result<Arc<Camera>> {
        let (source, key) = match &c.source {
            SourceConfig::Rtsp(url) => (CameraSource::Rtsp { url: url.clone() }, None),
            SourceConfig::File(path) => (CameraSource::File { path: path.clone() }, None),
            SourceConfig::Push { key_hash } => {
                (CameraSource::Push { slot: Arc::default() }, Some((key_hash.clone(), "(configured)".to_owned())))
            }
        };
        if let Some((hash, _)) = &key
            && self.keys.read().contains_key(hash)
        {
            return Err(Error::invalid_param("stream_key_sha256", "two cameras have the same stream key"));
        }
        if self.get(&c.id).is_some() {
            return Err(Error::invalid_state(State::CameraExists, &[State::Absent]));
        }
        self.db.upsert_camera(&row(&c.id, &c.name, &source, Origin::Config, key.as_ref())).await?;
        let camera = Camera::new(c.id.clone(), c.name.clone(), source, Origin::Config);
        camera.hub.set_sound(c.audio);
        self.insert(camera, key)
    }

    /// A camera a reloaded config file added (or changed, after `remove_configured`): checked, persisted, started
    /// and announced. A camera added at run time that has the id keeps it; the configured one is refused.
    pub async fn add_configured(&self, c: &crate::config::CameraConfig) -> Result<Arc<Camera>> {
        let _change = self.changes.lock().await;
        if self.cameras.read().len() >= MAX_CAMERAS {
            return Err(Error::invalid_state(State::CameraLimit, &[]));
        }
        let camera = self.insert_configured(c).await?;
        self.announce(&camera);
        Ok(camera)
    }

    /// A configured camera a reloaded config file no longer has (or changed): stopped, forgotten, unpersisted.
    pub async fn remove_configured(&self, id: &CameraId) -> Result<Arc<Camera>> {
        let _change = self.changes.lock().await;
        let camera = self.get(id).ok_or_else(|| Error::camera_not_found(id.as_str()))?;
        if camera.origin != Origin::Config {
            return Err(Error::invalid_state(State::AddedAtRunTime, &[State::Configured]));
        }
        self.forget(id).await?;
        Ok(camera)
    }

    /// A camera pushed with a new stream key, created at run time: checked, persisted and registered as one step.
    /// The key is returned once; only its SHA-256 is kept.
    pub async fn create_push(&self, id: CameraId, name: String) -> Result<(Arc<Camera>, String)> {
        let _change = self.changes.lock().await;
        if self.get(&id).is_some() {
            return Err(Error::invalid_state(State::CameraExists, &[State::Absent]));
        }
        if self.cameras.read().len() >= MAX_CAMERAS {
            return Err(Error::invalid_state(State::CameraLimit, &[]));
        }
        let key = new_key(STREAM_KEY_PREFIX);
        let stored = (hash_key(&key), key[..STREAM_KEY_PREFIX.len() + 6].to_owned());
        let source = CameraSource::Push { slot: Arc::default() };
        self.db.upsert_camera(&row(&id, &name, &source, Origin::Api, Some(&stored))).await?;
        let camera = self.insert(Camera::new(id, name, source, Origin::Api), Some(stored))?;
        self.announce(&camera);
        Ok((camera, key))
    }

    /// Pushed cameras with their keys' prefixes, ordered by camera id.
    pub fn stream_keys(&self) -> Vec<StreamKeyInfo> {
        let mut listed: Vec<StreamKeyInfo> = self
            .keys
            .read()
            .values()
            .filter_map(|k| Some(StreamKeyInfo { camera: self.get(&k.camera)?, prefix: k.prefix.clone() }))
            .collect();
        listed.sort_by(|a, b| a.camera.id.cmp(&b.camera.id));
        listed
    }

    /// What protocol servers ask on each publish request: the slot a stream key opens, if any.
    pub fn gate(&self) -> Gate {
        let keys = self.keys.clone();
        Arc::new(move |key: &str| keys.read().get(&hash_key(key)).map(|k| k.slot.clone()))
    }

    /// Adds a network camera at run time: checked, persisted, then started, as one step.
    pub async fn add(&self, id: CameraId, name: String, url: url::Url) -> Result<Arc<Camera>> {
        let _change = self.changes.lock().await;
        if self.get(&id).is_some() {
            return Err(Error::invalid_state(State::CameraExists, &[State::Absent]));
        }
        if let Some(existing) = self.find_by_url(&url) {
            info!(camera_id = %existing.id, "stream already added");
            return Err(Error::invalid_state(State::StreamExists, &[State::Absent]));
        }
        if self.cameras.read().len() >= MAX_CAMERAS {
            return Err(Error::invalid_state(State::CameraLimit, &[]));
        }
        let source = CameraSource::Rtsp { url };
        self.db.upsert_camera(&row(&id, &name, &source, Origin::Api, None)).await?;
        let camera = self.insert(Camera::new(id, name, source, Origin::Api), None)?;
        self.announce(&camera);
        Ok(camera)
    }

    /// Removes a camera added at run time: stopped, forgotten, and unpersisted.
    pub async fn remove(&self, id: &CameraId) -> Result<Arc<Camera>> {
        let _change = self.changes.lock().await;
        let camera = self.get(id).ok_or_else(|| Error::camera_not_found(id.as_str()))?;
        match camera.origin {
            Origin::Api => {}
            Origin::Config => return Err(Error::invalid_state(State::Configured, &[State::AddedAtRunTime])),
            Origin::Discovered => return Err(Error::invalid_state(State::Discovered, &[State::AddedAtRunTime])),
        }
        self.forget(id).await?;
        Ok(camera)
    }

    /// Stops a camera and removes it from the registry and the database (the caller holds `changes`).
    async fn forget(&self, id: &CameraId) -> Result<()> {
        self.db.delete_camera(id.as_str()).await?;
        let removed = self.cameras.write().remove(id);
        if let Some(entry) = removed {
            if let Some(slot) = entry.camera.source.push_slot() {
                // The key is revoked with its camera: refused from now on, and its publisher dropped (cancel below).
                slot.close();
                self.keys.write().retain(|_, k| k.camera != *id);
            }
            entry.cancel.cancel();
            // Clients that do not subscribe to topics still learn the camera is gone.
            let previous = entry.camera.state().status;
            self.events.publish(EventKind::CameraStatus {
                camera: id.clone(),
                name: entry.camera.name.clone(),
                status: CameraStatus::Disconnected,
                previous,
                reason: Some("camera removed".into()),
            });
        }
        info!(camera_id = %id, "camera removed");
        self.events.publish(EventKind::CameraRemoved { camera: id.clone() });
        Ok(())
    }

    /// Adds a local device seen for the first time in this run, plugged in at `plugged`: its stored id (by its
    /// physical identity `key`) or the next free `cameraN`, persisted, then started. `describe` gives the camera's
    /// name and settings once its id is known.
    pub async fn add_device(
        &self,
        key: String,
        plugged: Plugged,
        describe: impl FnOnce(&CameraId, &Plugged) -> (String, DeviceSettings),
    ) -> Result<Arc<Camera>> {
        let _change = self.changes.lock().await;
        let rows = self.db.cameras().await?;
        let stored = rows.iter().find(|r| r.device_key.as_deref() == Some(key.as_str()));
        let id = match stored.and_then(|r| CameraId::parse(&r.id).ok()) {
            Some(id) if self.get(&id).is_none() => id,
            other => {
                if let Some(taken) = other {
                    warn!(camera_id = %taken, "the device's stored id is now used by another camera; it gets a new one");
                    self.db.delete_camera(taken.as_str()).await?;
                }
                self.next_free_id(&rows)
            }
        };
        let (name, settings) = describe(&id, &plugged);
        let device = Arc::new(LocalDevice::new(key, settings));
        let source = CameraSource::V4l2 { device: device.clone() };
        self.db.upsert_camera(&row(&id, &name, &source, Origin::Discovered, None)).await?;
        device.plug(plugged);
        let camera = self.insert(Camera::new(id, name, source, Origin::Discovered), None)?;
        self.announce(&camera);
        Ok(camera)
    }

    fn announce(&self, camera: &Camera) {
        self.events.publish(EventKind::CameraAdded {
            camera: camera.id.clone(),
            name: camera.name.clone(),
            source: camera.source.kind(),
        });
    }

    /// The lowest `cameraN` no stored or registered camera uses (configured cameras are registered first).
    fn next_free_id(&self, rows: &[CameraRow]) -> CameraId {
        let mut used: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
        used.extend(self.cameras.read().keys().map(|id| id.to_string()));
        (0..)
            .map(|n| format!("camera{n}"))
            .find(|id| !used.contains(id))
            .and_then(|id| CameraId::parse(&id).ok())
            .expect("cameraN is a valid id")
    }

    /// The local camera whose device has this physical identity.
    pub fn find_device(&self, key: &str) -> Option<Arc<Camera>> {
        self.cameras.read().values().map(|e| e.camera.clone()).find(|c| c.source.device().is_some_and(|d| d.key == key))
    }

    pub fn get(&self, id: &CameraId) -> Option<Arc<Camera>> {
        self.cameras.read().get(id).map(|e| e.camera.clone())
    }

    /// Looks up a camera by public id string; a malformed id is simply not found.
    pub fn get_str(&self, id: &str) -> Option<Arc<Camera>> {
        CameraId::parse(id).ok().and_then(|id| self.get(&id))
    }

    /// The camera whose source is this URL (credentials ignored).
    pub fn find_by_url(&self, url: &url::Url) -> Option<Arc<Camera>> {
        let wanted = redact_url(url);
        self.cameras.read().values().map(|e| e.camera.clone()).find(|c| c.public_url() == wanted)
    }

    /// All cameras, ordered by id.
    pub fn list(&self) -> Vec<Arc<Camera>> {
        self.cameras.read().values().map(|e| e.camera.clone()).collect()
    }

    /// Waits for every supervisor to finish (after the shutdown token was cancelled).
    pub async fn wait_stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Registers and starts a camera; a pushed camera's key (hash, prefix) opens its slot from now on.
    fn insert(&self, camera: Camera, key: Option<(String, String)>) -> Result<Arc<Camera>> {
        camera.hub.set_retain(self.hub_retain);
        let camera = Arc::new(camera);
        let cancel = self.shutdown.child_token();
        {
            let mut cameras = self.cameras.write();
            if cameras.contains_key(&camera.id) {
                return Err(Error::invalid_state(State::CameraExists, &[State::Absent]));
            }
            cameras.insert(camera.id.clone(), Entry { camera: camera.clone(), cancel: cancel.clone() });
        }
        if let (Some(slot), Some((hash, prefix))) = (camera.source.push_slot(), key) {
            self.keys.write().insert(hash, KeyEntry { slot: slot.clone(), prefix, camera: camera.id.clone() });
        }
        // A root span: a camera added by a request outlives it, and its log lines must not name that request.
        let span = info_span!(parent: None, "camera", camera_id = %camera.id);
        info!(parent: &span, source = camera.public_url(), origin = camera.origin.as_str(), "camera added");
        self.tasks.spawn_on(
            super::supervisor::supervise(camera.clone(), self.monitor.clone(), self.events.clone(), cancel)
                .instrument(span),
            &self.runtime,
        );
        Ok(camera)
    }
}

fn row(id: &CameraId, name: &str, source: &CameraSource, origin: Origin, key: Option<&(String, String)>) -> CameraRow {
    let (url, device_key) = match source {
        CameraSource::Rtsp { url } => (Some(url.to_string()), None),
        CameraSource::V4l2 { device } => (None, Some(device.key.clone())),
        CameraSource::File { path } => (Some(format!("file://{}", path.display())), None),
        CameraSource::Push { .. } => (None, None),
    };
    CameraRow {
        id: id.to_string(),
        kind: source.stored_kind().into(),
        origin: origin.as_str().into(),
        name: name.into(),
        url,
        device_key,
        key_hash: key.map(|(hash, _)| hash.clone()),
        key_prefix: key.map(|(_, prefix)| prefix.clone()),
    }
}
