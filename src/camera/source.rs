//! The one interface every ingest implements, so the supervisor drives a camera without knowing where its frames come
//! from. A [`Source`] waits until there is something to connect to (at once for a network camera or a file; a device
//! plugged in; a publisher that arrived with the camera's stream key), then starts one [`Connection`]: a future that
//! feeds the camera's hub and ends with why it stopped, tearing down what it started when the attempt's `stop` token
//! fires. Implementations: retina and rtspsrc (RTSP), V4L2 devices, looping files, and pushed streams (RTMP, SRT,
//! WHIP) through a [`PushSlot`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use gstreamer as gst;
use gstreamer::prelude::*;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::device::LocalDevice;
use crate::base::{Failure, FailureKind};
use crate::config::{MonitorConfig, RtspClient};
use crate::media::hub::StreamHub;
use crate::media::ingest::{RtspSettings, build_rtsp_ingest};
use crate::media::push::PushSlot;
use crate::media::v4l2_ingest::{Capture, V4l2Ingest, build_v4l2_ingest};

/// One connection of a source: feeds the hub until it ends, and says why.
pub type Connection<'a> = BoxFuture<'a, Failure>;

/// What one attempt gives its source.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub hub: Arc<StreamHub>,
    /// Fired when the supervisor ends the attempt (stall, shutdown): the connection tears down and returns.
    pub stop: CancellationToken,
    pub monitor: MonitorConfig,
}

/// Where a camera's frames come from, as the supervisor drives it.
pub trait Source: Send + Sync {
    /// Waits until there is something to connect to, then starts one connection. Waiting has no time limit (a
    /// device may stay unplugged, a publisher away); the connect timeout counts from the connection's start.
    fn connect<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<Connection<'a>, Failure>>;

    /// Resolves when the next attempt should start at once whatever the backoff says (a device plugged in again, a
    /// publisher arrived).
    fn wake(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    /// The longest wait between failed attempts.
    fn retry_max(&self, monitor: &MonitorConfig) -> Duration {
        monitor.reconnect_max
    }
}

/// An RTSP camera through the retina client.
pub struct Retina {
    pub url: url::Url,
}

impl Source for Retina {
    fn connect<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<Connection<'a>, Failure>> {
        Box::pin(async move {
            let connection: Connection<'a> = Box::pin(async move {
                tokio::select! {
                    f = crate::media::rtsp_client::run(&self.url, &attempt.hub, attempt.monitor.connect_timeout) => f,
                    _ = attempt.stop.cancelled() => Failure::retry("stopped"),
                }
            });
            Ok(connection)
        })
    }
}

/// An RTSP camera through GStreamer's rtspsrc.
pub struct RtspSrc {
    pub url: url::Url,
}

impl Source for RtspSrc {
    fn connect<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<Connection<'a>, Failure>> {
        Box::pin(async move {
            let settings = RtspSettings { latency: attempt.monitor.rtsp_latency, tcp: true };
            let pipeline = build_rtsp_ingest(&self.url, &settings, attempt.hub.clone())
                .map_err(|e| Failure::unsupported(e.to_string()))?;
            Ok(run_pipeline(pipeline, None, std::future::pending(), &attempt.stop))
        })
    }
}

/// A clip played in a loop.
pub struct File {
    pub path: PathBuf,
}

impl Source for File {
    fn connect<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<Connection<'a>, Failure>> {
        Box::pin(async move {
            let pipeline = crate::media::file_ingest::build_file_ingest(&self.path, attempt.hub.clone())
                .map_err(|e| Failure::unsupported(e.to_string()))?;
            let connection: Connection<'a> =
                Box::pin(crate::media::file_ingest::run_looping(pipeline, attempt.stop.clone()));
            Ok(connection)
        })
    }
}

/// A stream pushed to camhub: each connection is one publisher, from its arrival until it stops.
pub struct Push {
    pub slot: Arc<PushSlot>,
}

impl Source for Push {
    fn connect<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<Connection<'a>, Failure>> {
        Box::pin(async move {
            let arrival = self.slot.next().await.ok_or_else(|| Failure::retry("the camera was removed"))?;
            info!(protocol = arrival.protocol.as_str(), "publisher arrived");
            let feed = arrival.run(attempt.hub.clone(), attempt.stop.clone());
            let slot = self.slot.clone();
            let connection: Connection<'a> = Box::pin(async move {
                let ended = feed.await;
                slot.finished();
                ended
            });
            Ok(connection)
        })
    }

    fn wake(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.slot.arrived())
    }
}

/// A local device: streamed in its chosen mode while it is plugged in.
pub struct Device {
    pub device: Arc<LocalDevice>,
}

/// The longest wait between attempts of a local device that keeps failing.
const LOCAL_RETRY_MAX: Duration = Duration::from_secs(30);

impl Source for Device {
    fn connect<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<Connection<'a>, Failure>> {
        Box::pin(self.connect_device(attempt))
    }

    fn wake(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.device.wait_replugged())
    }

    // A local device that keeps failing without delivering a frame is retried more slowly: a failure that outlasts a
    // few retries (a driver in a bad state, a device another process holds) will not clear in a second, and each
    // attempt opens the device and sets its mode. A device plugged in again is tried at once (`wake`).
    fn retry_max(&self, monitor: &MonitorConfig) -> Duration {
        monitor.reconnect_max.max(LOCAL_RETRY_MAX)
    }
}

impl Device {
    /// Waits until the device is plugged in, probes it and starts its pipeline in the chosen mode.
    async fn connect_device<'a>(&'a self, attempt: &'a Attempt) -> Result<Connection<'a>, Failure> {
        let device = &self.device;
        let plugged = device.wait_plugged().await;
        // The first attempt on a node uses discovery's probe of it; later ones probe again: a device's modes can
        // change while it is plugged in (a loopback device has none until something writes to it).
        let probe = match plugged.take_fresh_probe() {
            Some(probe) => probe.clone(),
            None => {
                let node = plugged.node.clone();
                match tokio::task::spawn_blocking(move || crate::devices::v4l2::probe(&node)).await {
                    Ok(Ok(Some(probe))) => probe,
                    Ok(Ok(None)) => plugged.probe.clone(),
                    Ok(Err(e)) => return Err(Failure::retry(format!("cannot open the device: {e}"))),
                    Err(e) => return Err(Failure::unsupported(e.to_string())),
                }
            }
        };
        device.remember(&probe);
        if probe.multiplanar_only {
            return Err(Failure::unsupported(
                "the device captures only through the multi-planar V4L2 interface, not supported yet",
            ));
        }
        if probe.modes.is_empty() {
            return Err(Failure::retry("the device offers no format (nothing is feeding it)"));
        }
        let Some(mode) = device.choose(&probe) else {
            let s = &device.settings;
            return Err(Failure::unsupported(format!(
                "the device offers no mode camhub can ingest{} within {}x{} at {} fps",
                s.format.as_deref().map(|f| format!(" in {f}")).unwrap_or_default(),
                s.size.map_or(s.ceiling.0, |(w, _)| w),
                s.size.map_or(s.ceiling.1, |(_, h)| h),
                s.fps.unwrap_or(s.ceiling.2),
            )));
        };
        info!(format = mode.format, width = mode.width, height = mode.height, rate = ?mode.rate, "streaming device");
        let V4l2Ingest { pipeline, capture } =
            build_v4l2_ingest(&plugged.node, &mode, &device.settings.encoder, attempt.hub.clone())
                .map_err(|e| Failure::unsupported(e.to_string()))?;
        device.set_in_use(Some(mode.clone()));
        let unplugged = async move {
            device.wait_unplugged(&plugged).await;
            Failure::retry("device unplugged")
        };
        let running = run_pipeline(pipeline, Some(capture), unplugged, &attempt.stop);
        let connection: Connection<'a> = Box::pin(async move {
            let ended = running.await;
            device.set_in_use(None);
            ended
        });
        Ok(connection)
    }
}

/// Runs an ingest pipeline until its bus reports the end, `also` ends it, or `stop` fires; then tears it down with
/// the capture that feeds it, if any (a local device's).
fn run_pipeline<'a>(
    pipeline: gst::Pipeline,
    capture: Option<Capture>,
    also: impl std::future::Future<Output = Failure> + Send + 'a,
    stop: &'a CancellationToken,
) -> Connection<'a> {
    Box::pin(async move {
        let ended = match (pipeline.bus(), pipeline.set_state(gst::State::Playing)) {
            (Some(bus), Ok(_)) => tokio::select! {
                end = first_fatal(bus.stream()) => end,
                end = also => end,
                _ = stop.cancelled() => Failure::retry("stopped"),
            },
            (_, Err(e)) => Failure::unsupported(format!("cannot start pipeline: {e}")),
            (None, _) => Failure::unsupported("pipeline has no bus"),
        };
        teardown(pipeline, capture).await;
        ended
    })
}

/// The first message of an ingest pipeline that ends the connection.
async fn first_fatal(mut messages: gst::bus::BusStream) -> Failure {
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
                return Failure { kind, reason: err.message().to_owned() };
            }
            gst::MessageView::Eos(_) => return Failure::retry("end of stream"),
            gst::MessageView::Warning(w) => debug!(warning = %w.error(), "pipeline warning"),
            _ => {}
        }
    }
    Failure::retry("bus closed")
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

/// The source of a camera, as configured.
pub fn of(source: &super::CameraSource, monitor: &MonitorConfig) -> Box<dyn Source> {
    use super::CameraSource;
    match source {
        CameraSource::Rtsp { url } => match monitor.rtsp_client {
            RtspClient::Retina => Box::new(Retina { url: url.clone() }),
            RtspClient::Gstreamer => Box::new(RtspSrc { url: url.clone() }),
        },
        CameraSource::File { path } => Box::new(File { path: path.clone() }),
        CameraSource::Push { slot, .. } => Box::new(Push { slot: slot.clone() }),
        CameraSource::V4l2 { device } => Box::new(Device { device: device.clone() }),
    }
}
