//! udev: the `video4linux` nodes present at start and their hot-plug after it. The monitor socket is registered with
//! tokio (`AsyncFd`), so waiting for a plug costs nothing; nothing polls `/dev`. The monitor listens to udev's
//! events, not the kernel's, so a node is announced once udevd has created it and filled in its properties.

use std::io;
use std::path::PathBuf;

use tokio::io::unix::AsyncFd;
use tracing::debug;

/// A `video4linux` node as udev describes it.
#[derive(Debug, Clone)]
pub struct Node {
    /// `/dev/videoN`: internal, never shown to clients.
    pub devnode: PathBuf,
    /// `/sys/...`: what a removal names.
    pub syspath: PathBuf,
    /// `ID_PATH`: where the device hangs (USB port, platform device).
    pub id_path: Option<String>,
    /// `ID_SERIAL_SHORT`: the device's serial number, when it has one.
    pub serial: Option<String>,
    /// `ID_VENDOR_ID:ID_MODEL_ID` for USB devices.
    pub usb_id: Option<String>,
    /// `ID_V4L_PRODUCT` or the sysfs `name`: what the device calls itself.
    pub product: Option<String>,
}

/// A change to the set of nodes.
#[derive(Debug)]
pub enum Event {
    Added(Node),
    Removed { syspath: PathBuf },
}

/// Hot-plug events of `video4linux` nodes.
pub struct Monitor {
    socket: AsyncFd<udev::MonitorSocket>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

/// Starts listening, then lists the nodes present, so that nothing plugged in between is missed (a node may then
/// be reported twice; callers treat a repeated add as a no-op).
pub fn start() -> io::Result<(Vec<Node>, Monitor)> {
    let socket = udev::MonitorBuilder::new()?.match_subsystem("video4linux")?.listen()?;
    // SAFETY: the monitor socket owns its descriptor for its whole life and always returns the same one; the AsyncFd
    // owns the socket, so the descriptor stays open until the AsyncFd is dropped.
    let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
    let monitor = Monitor { socket };
    let mut enumerator = udev::Enumerator::new()?;
    enumerator.match_subsystem("video4linux")?;
    let nodes = enumerator.scan_devices()?.filter_map(|d| node(&d)).collect();
    Ok((nodes, monitor))
}

impl Monitor {
    /// The next add or remove. Other actions (`change`, `bind`) are skipped.
    pub async fn next(&mut self) -> io::Result<Event> {
        loop {
            let mut ready = self.socket.readable_mut().await?;
            // The socket is non-blocking: drain what is there, then wait again.
            let event = ready.get_inner_mut().iter().next();
            let Some(event) = event else {
                ready.clear_ready();
                continue;
            };
            let device = event.device();
            match event.event_type() {
                udev::EventType::Add => {
                    if let Some(node) = node(&device) {
                        return Ok(Event::Added(node));
                    }
                }
                udev::EventType::Remove => {
                    return Ok(Event::Removed { syspath: device.syspath().to_owned() });
                }
                other => debug!(action = ?other, syspath = %device.syspath().display(), "udev event ignored"),
            }
        }
    }
}

fn node(device: &udev::Device) -> Option<Node> {
    let devnode = device.devnode()?.to_owned();
    let text =
        |key: &str| device.property_value(key).map(|v| v.to_string_lossy().trim().to_owned()).filter(|v| !v.is_empty());
    let usb_id = match (text("ID_VENDOR_ID"), text("ID_MODEL_ID")) {
        (Some(vendor), Some(model)) => Some(format!("{vendor}:{model}")),
        _ => None,
    };
    let product = text("ID_V4L_PRODUCT").or_else(|| {
        device.attribute_value("name").map(|v| v.to_string_lossy().trim().to_owned()).filter(|v| !v.is_empty())
    });
    Some(Node {
        devnode,
        syspath: device.syspath().to_owned(),
        id_path: text("ID_PATH"),
        serial: text("ID_SERIAL_SHORT"),
        usb_id,
        product,
    })
}
