//! Local camera discovery: turns V4L2 capture devices that udev reports (at start and on hot-plug) into cameras.
//! A device keeps its public id (`camera0`, `camera1`, ...) by its physical identity, stored in SQLite, across
//! unplug, replug and restarts. Unplugging leaves the camera listed (DISCONNECTED, same id) until it returns.
//! On a machine without udevd or devices, discovery finds nothing and says so once; it never stops the service.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::app::App;
use crate::base::CameraId;
use crate::camera::device::{DeviceSettings, Plugged};
use crate::config::{RecordMode, V4l2Config};
use crate::devices::udev::{self, Event, Node};
use crate::devices::v4l2::{self, Probe};
use crate::recording::Trigger;

/// Follows udev until `cancel` fires.
pub async fn run(app: Arc<App>, cancel: CancellationToken) {
    if !app.config().v4l2.enabled {
        info!("V4L2 discovery disabled by config");
        return;
    }
    let (present, mut monitor) = match udev::start() {
        Ok(started) => started,
        Err(e) => {
            warn!(err = %e, "V4L2 discovery unavailable (no udev on this machine?): no local cameras");
            return;
        }
    };
    info!(nodes = present.len(), "V4L2 discovery started");
    app.set_discovery_active(true);
    for node in present {
        added(&app, node).await;
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            event = monitor.next() => match event {
                Ok(Event::Added(node)) => added(&app, node).await,
                Ok(Event::Removed { syspath }) => removed(&app, &syspath),
                Err(e) => {
                    warn!(err = %e, "udev monitor failed: hot-plug is no longer followed");
                    break;
                }
            },
        }
    }
    app.set_discovery_active(false);
}

/// A node appeared: if it is a video capture node, its device becomes (or is again) a camera.
async fn added(app: &Arc<App>, node: Node) {
    let path = node.devnode.clone();
    let probe = match tokio::task::spawn_blocking(move || v4l2::probe(&path)).await {
        Ok(Ok(Some(probe))) => probe,
        Ok(Ok(None)) => return debug!(node = %node.devnode.display(), "not a video capture node"),
        Ok(Err(e)) => return warn!(node = %node.devnode.display(), err = %e, "cannot query V4L2 node"),
        Err(e) => return warn!(node = %node.devnode.display(), err = %e, "V4L2 probe failed"),
    };
    let key = identity(&node, &probe);
    let plugged = Plugged::new(node.devnode.clone(), node.syspath.clone(), probe);
    if let Some(camera) = app.cameras().find_device(&key) {
        let device = camera.source.device().expect("found by its device");
        match device.plugged() {
            // A device with several capture nodes is one camera: the first node found serves it.
            Some(current) if current.syspath != node.syspath => {
                debug!(camera_id = %camera.id, "another capture node of the same device ignored")
            }
            Some(_) => {}
            None => {
                info!(camera_id = %camera.id, "device plugged back in");
                device.plug(plugged);
            }
        }
        return;
    }
    if let Err(e) = new_camera(app, key, plugged).await {
        warn!(err = %e, "cannot add local camera");
    }
}

/// A device seen for the first time in this run becomes a camera (the registry gives it its stored id or the next
/// free `cameraN`), and records continuously and detects if its config says so.
async fn new_camera(app: &Arc<App>, key: String, plugged: Plugged) -> crate::error::Result<()> {
    let v4l2 = &app.config().v4l2;
    let camera = app
        .cameras()
        .add_device(key, plugged, |id, plugged| {
            let config = v4l2.cameras.iter().find(|c| &c.id == id);
            let name = config.and_then(|c| c.name.clone()).unwrap_or_else(|| plugged.probe.card.clone());
            (name, settings(v4l2, id))
        })
        .await?;
    info!(camera_id = %camera.id, "local camera found");
    app.detections().restore(&camera).await;
    let config = v4l2.cameras.iter().find(|c| c.id == camera.id);
    if config.is_some_and(|c| c.record == RecordMode::Always)
        && let Err(e) = app.recordings().start(&camera, None, None, Trigger::Continuous).await
    {
        warn!(camera_id = %camera.id, err = %e, "cannot start continuous recording");
    }
    Ok(())
}

/// A node went away: the camera it served is unplugged (and goes DISCONNECTED), keeping its id.
fn removed(app: &App, syspath: &std::path::Path) {
    for camera in app.cameras().list() {
        if let Some(device) = camera.source.device()
            && device.unplug(syspath)
        {
            info!(camera_id = %camera.id, "device unplugged");
        }
    }
}

/// The physical identity of a device: its USB ids and serial number when it has one (the same camera in any port),
/// otherwise where it is attached and what it calls itself (`ID_PATH`, the driver's bus info, the card name). Every
/// capture node of one device shares it.
fn identity(node: &Node, probe: &Probe) -> String {
    match (&node.usb_id, &node.serial) {
        (Some(usb), Some(serial)) => format!("usb:{usb}:{serial}"),
        _ => format!(
            "{}|{}|{}|{}",
            node.id_path.as_deref().unwrap_or(""),
            node.usb_id.as_deref().unwrap_or(""),
            probe.bus,
            probe.card
        ),
    }
}

fn settings(config: &V4l2Config, id: &CameraId) -> DeviceSettings {
    let own = config.cameras.iter().find(|c| &c.id == id);
    DeviceSettings {
        format: own.and_then(|c| c.format.clone()),
        size: own.and_then(|c| c.size),
        fps: own.and_then(|c| c.fps),
        ceiling: (config.max_width, config.max_height, config.max_fps),
        encoder: own.map_or_else(|| config.encoder.clone(), |c| c.encoder.clone()),
    }
}
