//! A local (V4L2) camera's device: its physical identity, which never changes, and its node while plugged in, which
//! comes and goes. Discovery plugs and unplugs it; the camera's supervisor waits for it and streams from it.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::config::EncoderConfig;
use crate::devices::v4l2::{Chosen, Probe, Wanted};

/// What the config asks of this camera (mode and encoding), with the ceiling for modes it leaves free.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub format: Option<String>,
    pub size: Option<(u32, u32)>,
    pub fps: Option<u32>,
    /// Width, height and frame rate no automatic choice exceeds.
    pub ceiling: (u32, u32, u32),
    pub encoder: EncoderConfig,
}

/// The device's node while it is plugged in, and what it offered when probed.
#[derive(Debug)]
pub struct Plugged {
    /// `/dev/videoN`: internal (admin debug only), never in a response.
    pub node: PathBuf,
    pub syspath: PathBuf,
    pub probe: Probe,
    /// Set until the first attempt on this node takes `probe` as it is (discovery probed it a moment ago); later
    /// attempts probe again.
    unused: std::sync::atomic::AtomicBool,
}

impl Plugged {
    pub fn new(node: PathBuf, syspath: PathBuf, probe: Probe) -> Plugged {
        Plugged { node, syspath, probe, unused: std::sync::atomic::AtomicBool::new(true) }
    }

    /// The probe made when the node was plugged, the first time it is asked for; `None` afterwards.
    pub fn take_fresh_probe(&self) -> Option<&Probe> {
        self.unused.swap(false, std::sync::atomic::Ordering::Relaxed).then_some(&self.probe)
    }
}

#[derive(Debug)]
pub struct LocalDevice {
    /// The physical identity (serial, or port and card) that maps the device back to its camera id.
    pub key: String,
    pub settings: DeviceSettings,
    /// `Some` while plugged in. Discovery writes it; the supervisor waits on it.
    plugged: watch::Sender<Option<Arc<Plugged>>>,
    /// The mode being streamed, for status; set by the supervisor.
    in_use: Mutex<Option<Chosen>>,
    /// What the device offered when last plugged in: its capabilities stay known while it is unplugged.
    last_probe: Mutex<Option<Probe>>,
}

impl LocalDevice {
    pub fn new(key: String, settings: DeviceSettings) -> LocalDevice {
        LocalDevice {
            key,
            settings,
            plugged: watch::Sender::new(None),
            in_use: Mutex::new(None),
            last_probe: Mutex::new(None),
        }
    }

    pub fn plug(&self, plugged: Plugged) {
        *self.last_probe.lock() = Some(plugged.probe.clone());
        self.plugged.send_replace(Some(Arc::new(plugged)));
    }

    /// Unplugs the device if `syspath` is its node; says whether it was.
    pub fn unplug(&self, syspath: &std::path::Path) -> bool {
        self.plugged.send_if_modified(|p| {
            if p.as_ref().is_some_and(|p| p.syspath == syspath) {
                *p = None;
                true
            } else {
                false
            }
        })
    }

    pub fn plugged(&self) -> Option<Arc<Plugged>> {
        self.plugged.borrow().clone()
    }

    /// Waits until the device is plugged in.
    pub async fn wait_plugged(&self) -> Arc<Plugged> {
        let mut rx = self.plugged.subscribe();
        let plugged = rx.wait_for(Option::is_some).await;
        // The sender lives in `self`, so the channel cannot close while we wait.
        plugged.map(|p| p.clone()).ok().flatten().expect("the sender outlives the wait")
    }

    /// Waits until the device is plugged in anew (a node other than the one it has now, if any).
    pub async fn wait_replugged(&self) {
        let mut rx = self.plugged.subscribe();
        let now = rx.borrow_and_update().clone();
        let _ = rx
            .wait_for(|p| match (p, &now) {
                (Some(p), Some(now)) => !Arc::ptr_eq(p, now),
                (Some(_), None) => true,
                (None, _) => false,
            })
            .await;
    }

    /// Waits until `node` is no longer the device's node (unplugged, or replaced by a new plug).
    pub async fn wait_unplugged(&self, node: &Arc<Plugged>) {
        let mut rx = self.plugged.subscribe();
        let _ = rx.wait_for(|p| !p.as_ref().is_some_and(|p| Arc::ptr_eq(p, node))).await;
    }

    /// The mode to stream from what the device offers, per the settings.
    pub fn choose(&self, probe: &Probe) -> Option<Chosen> {
        let s = &self.settings;
        let wanted = Wanted { format: s.format.as_deref(), size: s.size, fps: s.fps };
        crate::devices::v4l2::choose(&probe.modes, &wanted, s.ceiling)
    }

    pub fn set_in_use(&self, mode: Option<Chosen>) {
        *self.in_use.lock() = mode;
    }

    /// Keeps a newer probe of the device (its modes as reported by the latest attempt).
    pub fn remember(&self, probe: &Probe) {
        *self.last_probe.lock() = Some(probe.clone());
    }

    pub fn last_probe(&self) -> Option<Probe> {
        self.last_probe.lock().clone()
    }

    pub fn in_use(&self) -> Option<Chosen> {
        self.in_use.lock().clone()
    }
}
