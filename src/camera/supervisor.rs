//! One task per camera: connect, watch, and reconnect forever. It owns the camera's ingest (the retina RTSP client by
//! default, or a GStreamer pipeline and its bus; for a local device, a V4L2 pipeline while it is plugged in), decides
//! the camera's status (CONNECTED on the first frame, DISCONNECTED on error, end of stream or a stall, ERROR when the
//! camera refuses us for a reason retrying will not fix soon) and publishes every change. A failure here ends one
//! attempt of one camera, never the process or another camera.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::device::LocalDevice;
use super::{Camera, CameraSource, CameraStatus};
use crate::base::FailureKind;
use crate::config::{MonitorConfig, RtspClient};
use crate::events::{EventBus, EventKind};
use crate::media::ingest::{RtspSettings, build_rtsp_ingest};
use crate::media::v4l2_ingest::{Capture, V4l2Ingest, build_v4l2_ingest};

/// The longest wait between attempts of a local device that keeps failing.
const LOCAL_RETRY_MAX: Duration = Duration::from_secs(30);

/// Why an attempt ended.
enum Ended {
    Cancelled,
    Failed { connected: bool, reason: String, status: CameraStatus },
}

/// Exponential backoff with jitter.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Backoff {
        Backoff { initial, max, jitter, next: initial }
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The delay before the next attempt; doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let factor = 1.0 + rand::rng().random_range(-self.jitter..=self.jitter);
        base.mul_f64(factor.max(0.0))
    }
}

/// Runs until `cancel` fires.
pub async fn supervise(camera: Arc<Camera>, monitor: MonitorConfig, events: EventBus, cancel: CancellationToken) {
    // A local device that keeps failing without delivering a frame is retried more slowly: a failure that outlasts a
    // few retries (a driver in a bad state, a device another process holds) will not clear in a second, and each
    // attempt opens the device and sets its mode. A device plugged in again is tried at once whatever the backoff
    // says.
    let max = match &camera.source {
        CameraSource::V4l2 { .. } => monitor.reconnect_max.max(LOCAL_RETRY_MAX),
        CameraSource::Rtsp { .. } => monitor.reconnect_max,
    };
    let mut backoff = Backoff::new(monitor.reconnect_initial, max, monitor.reconnect_jitter);
    let device = camera.source.device().cloned();
    loop {
        match attempt(&camera, &monitor, &events, &cancel).await {
            Ended::Cancelled => break,
            Ended::Failed { connected, reason, status } => {
                if connected {
                    backoff.reset();
                }
                debug!(reason, "attempt ended");
                set_status(&camera, &events, status, Some(reason));
            }
        }
        let delay = backoff.next_delay();
        let plugged_again = async {
            match &device {
                Some(device) => device.wait_replugged().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = plugged_again => {}
            _ = cancel.cancelled() => break,
        }
        camera.update_state(|s| s.reconnects += 1);
    }
    debug!("supervisor stopped");
}

/// One connection attempt, from connecting to tearing down.
async fn attempt(
    camera: &Arc<Camera>,
    monitor: &MonitorConfig,
    events: &EventBus,
    cancel: &CancellationToken,
) -> Ended {
    let ended = match &camera.source {
        CameraSource::Rtsp { url } => match monitor.rtsp_client {
            RtspClient::Retina => {
                let ingest = async {
                    let f = crate::media::rtsp_client::run(url, &camera.hub, monitor.connect_timeout).await;
                    (f.reason, status_of(f.kind))
                };
                watch(camera, monitor, events, cancel, ingest).await
            }
            RtspClient::Gstreamer => {
                let settings = RtspSettings { latency: monitor.rtsp_latency, tcp: true };
                match build_rtsp_ingest(url, &settings, camera.hub.clone()) {
                    Ok(pipeline) => {
                        run_pipeline(camera, monitor, events, cancel, pipeline, None, std::future::pending()).await
                    }
                    Err(e) => Ended::Failed { connected: false, reason: e.to_string(), status: CameraStatus::Error },
                }
            }
        },
        CameraSource::V4l2 { device } => attempt_device(camera, device, monitor, events, cancel).await,
    };
    camera.hub.reset();
    ended
}

/// One attempt of a local device: wait until it is plugged in, stream its best mode until it fails or is unplugged.
async fn attempt_device(
    camera: &Arc<Camera>,
    device: &Arc<LocalDevice>,
    monitor: &MonitorConfig,
    events: &EventBus,
    cancel: &CancellationToken,
) -> Ended {
    let plugged = tokio::select! {
        p = device.wait_plugged() => p,
        _ = cancel.cancelled() => return Ended::Cancelled,
    };
    // The first attempt on a node uses discovery's probe of it; later ones probe again: a device's modes can change
    // while it is plugged in (a loopback device has none until something writes to it).
    let probe = match plugged.take_fresh_probe() {
        Some(probe) => probe.clone(),
        None => {
            let node = plugged.node.clone();
            match tokio::task::spawn_blocking(move || crate::devices::v4l2::probe(&node)).await {
                Ok(Ok(Some(probe))) => probe,
                Ok(Ok(None)) => plugged.probe.clone(),
                Ok(Err(e)) => {
                    let reason = format!("cannot open the device: {e}");
                    return Ended::Failed { connected: false, reason, status: CameraStatus::Disconnected };
                }
                Err(e) => {
                    return Ended::Failed { connected: false, reason: e.to_string(), status: CameraStatus::Error };
                }
            }
        }
    };
    device.remember(&probe);
    if probe.multiplanar_only {
        let reason = "the device captures only through the multi-planar V4L2 interface, not supported yet".to_owned();
        return Ended::Failed { connected: false, reason, status: CameraStatus::Error };
    }
    if probe.modes.is_empty() {
        let reason = "the device offers no format (nothing is feeding it)".to_owned();
        return Ended::Failed { connected: false, reason, status: CameraStatus::Disconnected };
    }
    let Some(mode) = device.choose(&probe) else {
        let s = &device.settings;
        return Ended::Failed {
            connected: false,
            reason: format!(
                "the device offers no mode camhub can ingest{} within {}x{} at {} fps",
                s.format.as_deref().map(|f| format!(" in {f}")).unwrap_or_default(),
                s.size.map_or(s.ceiling.0, |(w, _)| w),
                s.size.map_or(s.ceiling.1, |(_, h)| h),
                s.fps.unwrap_or(s.ceiling.2),
            ),
            status: CameraStatus::Error,
        };
    };
    info!(format = mode.format, width = mode.width, height = mode.height, rate = ?mode.rate, "streaming device");
    device.set_in_use(Some(mode.clone()));
    let ended = match build_v4l2_ingest(&plugged.node, &mode, &device.settings.encoder, camera.hub.clone()) {
        Ok(V4l2Ingest { pipeline, capture }) => {
            let unplugged = async {
                device.wait_unplugged(&plugged).await;
                ("device unplugged".to_owned(), CameraStatus::Disconnected)
            };
            run_pipeline(camera, monitor, events, cancel, pipeline, Some(capture), unplugged).await
        }
        Err(e) => Ended::Failed { connected: false, reason: e.to_string(), status: CameraStatus::Error },
    };
    device.set_in_use(None);
    ended
}

/// Runs an ingest pipeline until its bus reports the end, `also` ends it, or the watch does; then tears it down with
/// the capture that feeds it, if any (a local device's).
async fn run_pipeline(
    camera: &Arc<Camera>,
    monitor: &MonitorConfig,
    events: &EventBus,
    cancel: &CancellationToken,
    pipeline: gst::Pipeline,
    capture: Option<Capture>,
    also: impl std::future::Future<Output = (String, CameraStatus)>,
) -> Ended {
    let ended = match (pipeline.bus(), pipeline.set_state(gst::State::Playing)) {
        (Some(bus), Ok(_)) => {
            let ingest = async {
                tokio::select! {
                    end = first_fatal(bus.stream()) => end,
                    end = also => end,
                }
            };
            watch(camera, monitor, events, cancel, ingest).await
        }
        (_, Err(e)) => Ended::Failed {
            connected: false,
            reason: format!("cannot start pipeline: {e}"),
            status: CameraStatus::Error,
        },
        (None, _) => {
            Ended::Failed { connected: false, reason: "pipeline has no bus".into(), status: CameraStatus::Error }
        }
    };
    teardown(pipeline, capture).await;
    ended
}

/// The first message of an ingest pipeline that ends the connection: (reason, status).
async fn first_fatal(mut messages: gst::bus::BusStream) -> (String, CameraStatus) {
    while let Some(message) = messages.next().await {
        match message.view() {
            gst::MessageView::Error(e) => {
                let err = e.error();
                let kind = if err.matches(gst::ResourceError::NotAuthorized) {
                    FailureKind::Refused
                } else if err.matches(gst::StreamError::CodecNotFound) {
                    FailureKind::Unsupported
                } else {
                    FailureKind::Retry
                };
                return (err.message().to_owned(), status_of(kind));
            }
            gst::MessageView::Eos(_) => return ("end of stream".into(), CameraStatus::Disconnected),
            gst::MessageView::Warning(w) => debug!(warning = %w.error(), "pipeline warning"),
            _ => {}
        }
    }
    ("bus closed".into(), CameraStatus::Disconnected)
}

/// Watches one connection: CONNECTED on its first frame, and its end when `ingest` ends (with why), the stall
/// watchdog fires, no frame comes within the connect timeout, or `cancel` fires.
async fn watch(
    camera: &Arc<Camera>,
    monitor: &MonitorConfig,
    events: &EventBus,
    cancel: &CancellationToken,
    ingest: impl std::future::Future<Output = (String, CameraStatus)>,
) -> Ended {
    let started = Instant::now();
    let mut connected = false;
    tokio::pin!(ingest);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ended::Cancelled,
            _ = camera.hub.first_frame(), if !connected => {
                connected = true;
                info!(after_ms = started.elapsed().as_millis() as u64, "connected");
                camera.update_state(|s| {
                    s.connected_since = Some(Instant::now());
                    s.last_error = None;
                });
                set_status(camera, events, CameraStatus::Connected, None);
            }
            (reason, status) = &mut ingest => return Ended::Failed { connected, reason, status },
            // The stall watchdog, on the shared pacing grid: a quarter of a second is plenty against a 2 s timeout.
            _ = crate::media::pace(Duration::from_millis(250)) => {
                let since = camera.hub.since_last_frame();
                if connected && since.is_some_and(|d| d > monitor.stall_timeout) {
                    return Ended::Failed {
                        connected,
                        reason: format!("no frame for {} ms", monitor.stall_timeout.as_millis()),
                        status: CameraStatus::Disconnected,
                    };
                }
                if !connected && started.elapsed() > monitor.connect_timeout {
                    return Ended::Failed {
                        connected,
                        reason: format!("no frame within {} ms of connecting", monitor.connect_timeout.as_millis()),
                        status: CameraStatus::Disconnected,
                    };
                }
            }
        }
    }
}

/// The status a source's failure puts its camera in: retrying soon may help a lost one, not a refused or unsupported one.
fn status_of(kind: FailureKind) -> CameraStatus {
    match kind {
        FailureKind::Retry => CameraStatus::Disconnected,
        FailureKind::Refused | FailureKind::Unsupported => CameraStatus::Error,
    }
}

/// Stops a pipeline off the async runtime: stopping a capture joins its thread (which closes the device), and
/// `set_state(Null)` joins streaming threads; both may block.
async fn teardown(pipeline: gst::Pipeline, capture: Option<Capture>) {
    let stop = move || {
        if let Some(capture) = capture {
            capture.stop();
        }
        pipeline.set_state(gst::State::Null)
    };
    match tokio::task::spawn_blocking(stop).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(err = %e, "pipeline teardown failed"),
        Err(e) => warn!(err = %e, "pipeline teardown panicked"),
    }
}

/// Records the new status and publishes it if it changed.
fn set_status(camera: &Arc<Camera>, events: &EventBus, status: CameraStatus, reason: Option<String>) {
    let mut previous = status;
    let changed = camera.update_state(|s| {
        previous = s.status;
        s.status = status;
        if status != CameraStatus::Connected {
            s.connected_since = None;
            if reason.is_some() {
                s.last_error = reason.clone();
            }
        }
    });
    if changed {
        match status {
            CameraStatus::Connected => info!("status CONNECTED"),
            other => warn!(status = other.as_str(), reason = reason.as_deref().unwrap_or(""), "camera lost"),
        }
        events.publish(EventKind::CameraStatus {
            camera: camera.id.clone(),
            name: camera.name.clone(),
            status,
            previous,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(2), 0.2);
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(200) && first <= Duration::from_millis(300), "{first:?}");
        let delays: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(2400)), "{delays:?}");
        assert!(delays.last().expect("eight delays") >= &Duration::from_millis(1600));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(300));
    }
}
