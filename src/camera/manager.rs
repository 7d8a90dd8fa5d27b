//! The camera registry: which cameras exist, where they came from, and one supervisor task per camera. Cameras added
//! at run time are persisted before they start, so they come back after a restart; configured cameras are re-read
//! from the config at every start.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use super::device::LocalDevice;
use super::{Camera, CameraId, CameraSource, Origin};
use crate::config::MonitorConfig;
use crate::error::{Error, Result};
use crate::events::{EventBus, EventKind};
use crate::storage::Db;
use crate::storage::db::CameraRow;

/// Upper bound on cameras, so a client cannot exhaust the process by adding streams.
pub const MAX_CAMERAS: usize = 256;

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
    db: Db,
    events: EventBus,
    monitor: MonitorConfig,
    /// History each camera's hub keeps (the recording pre-roll).
    hub_retain: std::time::Duration,
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
        for c in configured {
            let source = CameraSource::Rtsp { url: c.url.clone() };
            self.db.upsert_camera(&row(&c.id, &c.name, &source, Origin::Config)).await?;
            self.insert(Camera::new(c.id.clone(), c.name.clone(), source, Origin::Config))?;
        }
        for r in self.db.cameras().await? {
            if r.origin != Origin::Api.as_str() {
                continue;
            }
            let (Ok(id), Some(Ok(url))) = (CameraId::parse(&r.id), r.url.as_deref().map(super::parse_stream_url))
            else {
                warn!(camera_id = r.id, "skipping unreadable stored camera");
                continue;
            };
            if self.get(&id).is_some() {
                warn!(camera_id = %id, "stored camera shadowed by a configured camera with the same id");
                continue;
            }
            self.insert(Camera::new(id, r.name, CameraSource::Rtsp { url }, Origin::Api))?;
        }
        Ok(())
    }

    /// Adds a network camera at run time: persisted first, then started.
    pub async fn add(&self, id: CameraId, name: String, url: url::Url) -> Result<Arc<Camera>> {
        if self.get(&id).is_some() {
            return Err(Error::InvalidState { state: format!("camera {id} exists"), allowed: vec!["absent"] });
        }
        if let Some(existing) = self.find_by_url(&url) {
            return Err(Error::InvalidState {
                state: format!("stream already added as {}", existing.id),
                allowed: vec!["absent"],
            });
        }
        if self.cameras.read().len() >= MAX_CAMERAS {
            return Err(Error::InvalidState {
                state: format!("{MAX_CAMERAS} cameras"),
                allowed: vec!["fewer cameras"],
            });
        }
        let source = CameraSource::Rtsp { url };
        self.db.upsert_camera(&row(&id, &name, &source, Origin::Api)).await?;
        let camera = self.insert(Camera::new(id, name, source, Origin::Api))?;
        self.events.publish(EventKind::CameraAdded { camera: camera.clone() });
        Ok(camera)
    }

    /// Removes a camera added at run time: stopped, forgotten, and unpersisted.
    pub async fn remove(&self, id: &CameraId) -> Result<()> {
        let camera = self.get(id).ok_or_else(|| Error::camera_not_found(id.as_str()))?;
        match camera.origin {
            Origin::Api => {}
            Origin::Config => {
                return Err(Error::InvalidState {
                    state: "configured camera (remove it from the config file)".into(),
                    allowed: vec!["added at run time"],
                });
            }
            Origin::Discovered => {
                return Err(Error::InvalidState {
                    state: "local device (unplug it)".into(),
                    allowed: vec!["added at run time"],
                });
            }
        }
        self.db.delete_camera(id.as_str()).await?;
        let removed = self.cameras.write().remove(id);
        if let Some(entry) = removed {
            entry.cancel.cancel();
            // Clients that do not subscribe to topics still learn the camera is gone.
            let previous = entry.camera.state().status;
            self.events.publish(EventKind::CameraStatus {
                camera: entry.camera,
                status: super::CameraStatus::Disconnected,
                previous,
                reason: Some("camera removed".into()),
            });
        }
        info!(camera_id = %id, "camera removed");
        self.events.publish(EventKind::CameraRemoved { id: id.clone() });
        Ok(())
    }

    /// Adds a camera found on the machine (its row, with the device's identity, is already stored).
    pub fn add_discovered(&self, id: CameraId, name: String, device: Arc<LocalDevice>) -> Result<Arc<Camera>> {
        let camera = self.insert(Camera::new(id, name, CameraSource::V4l2 { device }, Origin::Discovered))?;
        self.events.publish(EventKind::CameraAdded { camera: camera.clone() });
        Ok(camera)
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
        let wanted = super::redact_url(url);
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

    fn insert(&self, camera: Camera) -> Result<Arc<Camera>> {
        camera.hub.set_retain(self.hub_retain);
        let camera = Arc::new(camera);
        let cancel = self.shutdown.child_token();
        {
            let mut cameras = self.cameras.write();
            if cameras.contains_key(&camera.id) {
                return Err(Error::InvalidState {
                    state: format!("camera {} exists", camera.id),
                    allowed: vec!["absent"],
                });
            }
            cameras.insert(camera.id.clone(), Entry { camera: camera.clone(), cancel: cancel.clone() });
        }
        let span = info_span!("camera", camera_id = %camera.id);
        info!(parent: &span, source = camera.public_url(), origin = camera.origin.as_str(), "camera added");
        self.tasks.spawn_on(
            super::supervisor::supervise(camera.clone(), self.monitor.clone(), self.events.clone(), cancel)
                .instrument(span),
            &self.runtime,
        );
        Ok(camera)
    }
}

fn row(id: &CameraId, name: &str, source: &CameraSource, origin: Origin) -> CameraRow {
    let (url, device_key) = match source {
        CameraSource::Rtsp { url } => (Some(url.to_string()), None),
        CameraSource::V4l2 { device } => (None, Some(device.key.clone())),
    };
    CameraRow {
        id: id.to_string(),
        kind: source.kind().into(),
        origin: origin.as_str().into(),
        name: name.into(),
        url,
        device_key,
    }
}
