//! One task per camera: connect, watch, and reconnect forever. It drives the camera's ingest through the one
//! [`Source`] interface (RTSP, a local device, a looping file, a pushed stream: it does not know which), decides
//! the camera's status (CONNECTED on the first frame, DISCONNECTED on error, end of stream or a stall, ERROR when the
//! camera refuses us for a reason retrying will not fix soon) and publishes every change. A failure here ends one
//! attempt of one camera, never the process or another camera.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use super::source::{Attempt, Connection, Source};
use super::{Camera, CameraStatus};
use crate::base::{Failure, FailureKind};
use crate::config::MonitorConfig;
use crate::events::{EventBus, EventKind};

/// Why an attempt ended.
enum Ended {
    Cancelled,
    Failed { connected: bool, failure: Failure },
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
    let source = super::source::of(&camera.source, &monitor);
    let mut backoff = Backoff::new(monitor.reconnect_initial, source.retry_max(&monitor), monitor.reconnect_jitter);
    for number in 1.. {
        match attempt(&camera, source.as_ref(), &monitor, &events, &cancel, number).await {
            Ended::Cancelled => break,
            Ended::Failed { connected, failure } => {
                if connected {
                    backoff.reset();
                }
                debug!(reason = failure.reason, "attempt ended");
                set_status(&camera, &events, status_of(failure.kind), Some(failure.reason));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = source.wake() => {}
            _ = cancel.cancelled() => break,
        }
        camera.update_state(|s| s.reconnects += 1);
    }
    debug!("supervisor stopped");
}

/// One attempt: wait for the source, connect, watch the connection, tear it down.
async fn attempt(
    camera: &Arc<Camera>,
    source: &dyn Source,
    monitor: &MonitorConfig,
    events: &EventBus,
    cancel: &CancellationToken,
    number: u64,
) -> Ended {
    // The attempt's way to its first frame, as a span of its own (the connection that follows may last for days).
    let connecting = info_span!(
        "camera.connect",
        camera_id = %camera.id,
        source = camera.source.kind(),
        attempt = number,
        outcome = Empty,
        reason = Empty,
        after_ms = Empty,
        otel.status_code = Empty,
    );
    let attempt = Attempt { hub: camera.hub.clone(), stop: cancel.child_token(), monitor: monitor.clone() };
    let connected = tokio::select! {
        c = source.connect(&attempt).instrument(connecting.clone()) => c,
        _ = cancel.cancelled() => {
            connecting.record("outcome", "cancelled");
            return Ended::Cancelled;
        }
    };
    let ended = match connected {
        Ok(connection) => watch(camera, monitor, events, cancel, &attempt, connection, connecting).await,
        Err(failure) => {
            connect_failed(&connecting, &failure);
            Ended::Failed { connected: false, failure }
        }
    };
    camera.hub.reset();
    ended
}

/// Marks a connect span with the failure that ended the attempt before its first frame.
fn connect_failed(span: &Span, failure: &Failure) {
    let outcome = match failure.kind {
        FailureKind::Retry => "failed",
        FailureKind::Refused => "refused",
        FailureKind::Unsupported => "unsupported",
    };
    span.record("outcome", outcome);
    span.record("reason", failure.reason.as_str());
    span.record("otel.status_code", "ERROR");
}

/// Watches one connection: CONNECTED on its first frame, and its end when it ends (with why), the stall watchdog
/// fires, no frame comes within the connect timeout, or `cancel` fires; then stops it and waits for its teardown.
async fn watch(
    camera: &Arc<Camera>,
    monitor: &MonitorConfig,
    events: &EventBus,
    cancel: &CancellationToken,
    attempt: &Attempt,
    mut connection: Connection<'_>,
    connecting: Span,
) -> Ended {
    let started = Instant::now();
    let mut connected = false;
    // Open until the first frame (then closed, with its outcome) or the attempt's end.
    let mut connecting = Some(connecting);
    let verdict = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ended::Cancelled,
            _ = camera.hub.first_frame(), if !connected => {
                connected = true;
                let after_ms = started.elapsed().as_millis() as u64;
                if let Some(span) = connecting.take() {
                    span.record("outcome", "connected");
                    span.record("after_ms", after_ms);
                    span.in_scope(|| info!(after_ms, "connected"));
                }
                camera.update_state(|s| {
                    s.connected_since = Some(Instant::now());
                    s.last_error = None;
                });
                set_status(camera, events, CameraStatus::Connected, None);
            }
            failure = &mut connection => {
                if let Some(span) = connecting.take() {
                    connect_failed(&span, &failure);
                }
                return Ended::Failed { connected, failure };
            }
            // The stall watchdog, on the shared pacing grid: a quarter of a second is plenty against a 2 s timeout.
            _ = crate::media::pace(Duration::from_millis(250)) => {
                let since = camera.hub.since_last_frame();
                if connected && since.is_some_and(|d| d > monitor.stall_timeout) {
                    let reason = format!("no frame for {} ms", monitor.stall_timeout.as_millis());
                    break Ended::Failed { connected, failure: Failure::retry(reason) };
                }
                if !connected && started.elapsed() > monitor.connect_timeout {
                    let reason = format!("no frame within {} ms of connecting", monitor.connect_timeout.as_millis());
                    break Ended::Failed { connected, failure: Failure::retry(reason) };
                }
            }
        }
    };
    match (connecting, &verdict) {
        (Some(span), Ended::Failed { failure, .. }) => connect_failed(&span, failure),
        (Some(span), Ended::Cancelled) => {
            span.record("outcome", "cancelled");
        }
        (None, _) => {}
    }
    attempt.stop.cancel();
    connection.await;
    verdict
}

/// The status a source's failure puts its camera in: retrying soon may help a lost one, not a refused or unsupported one.
fn status_of(kind: FailureKind) -> CameraStatus {
    match kind {
        FailureKind::Retry => CameraStatus::Disconnected,
        FailureKind::Refused | FailureKind::Unsupported => CameraStatus::Error,
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
