//! Where pushed streams meet their cameras. A camera whose frames arrive when a publisher connects (RTMP, SRT, WHIP)
//! has a [`PushSlot`]; a protocol server that accepted a publisher for it (its stream key checked by whoever asked the
//! server to run) hands the publisher over as an [`Arrival`], which the camera's supervisor runs as one connection.
//! One publisher at a time per slot: a second one is refused while the first publishes. This module knows neither
//! keys nor cameras' lifecycle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::base::Failure;
use crate::media::hub::StreamHub;

/// The protocols a publisher can push with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rtmp = 1,
    Srt = 2,
    Whip = 3,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::Srt => "srt",
            Protocol::Whip => "whip",
        }
    }

    fn from_u8(n: u8) -> Option<Protocol> {
        [Protocol::Rtmp, Protocol::Srt, Protocol::Whip].into_iter().find(|p| *p as u8 == n)
    }
}

/// Feeds a hub from an accepted publisher until it stops publishing, fails, or `stop` fires; says why it ended.
pub type Feed = Box<dyn FnOnce(Arc<StreamHub>, CancellationToken) -> BoxFuture<'static, Failure> + Send>;

/// An accepted publisher, waiting for its camera's supervisor to run it.
pub struct Arrival {
    pub protocol: Protocol,
    feed: Feed,
}

impl Arrival {
    pub fn new(protocol: Protocol, feed: Feed) -> Arrival {
        Arrival { protocol, feed }
    }

    /// Runs the publisher into `hub` (see [`Feed`]).
    pub fn run(self, hub: Arc<StreamHub>, stop: CancellationToken) -> BoxFuture<'static, Failure> {
        (self.feed)(hub, stop)
    }
}

impl std::fmt::Debug for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arrival").field("protocol", &self.protocol).finish_non_exhaustive()
    }
}

/// A push camera's meeting point with its publishers.
#[derive(Debug)]
pub struct PushSlot {
    tx: mpsc::Sender<Arrival>,
    /// Taken by the camera's supervisor, the only receiver.
    rx: tokio::sync::Mutex<mpsc::Receiver<Arrival>>,
    /// A publisher was accepted and has not finished: further ones are refused.
    busy: AtomicBool,
    /// The protocol of the current or last publisher (0: none yet).
    protocol: AtomicU8,
    arrived: Notify,
    /// Closed by the camera's end: a publisher offered afterwards is refused.
    closed: AtomicBool,
}

impl Default for PushSlot {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(1);
        PushSlot {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            busy: AtomicBool::new(false),
            protocol: AtomicU8::new(0),
            arrived: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }
}

/// Why a publisher was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another publisher is pushing to this camera.
    Busy,
    /// The camera is gone.
    Closed,
}

impl PushSlot {
    /// Hands `arrival` to the camera; refused while another publisher is on, or once the camera is gone.
    pub fn offer(&self, arrival: Arrival) -> Result<(), Refusal> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refusal::Closed);
        }
        if self.busy.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(Refusal::Busy);
        }
        self.protocol.store(arrival.protocol as u8, Ordering::Release);
        match self.tx.try_send(arrival) {
            Ok(()) => {
                self.arrived.notify_one();
                Ok(())
            }
            Err(_) => {
                self.busy.store(false, Ordering::Release);
                Err(Refusal::Busy)
            }
        }
    }

    /// The next accepted publisher; the caller must call [`PushSlot::finished`] when it is done with it.
    pub async fn next(&self) -> Option<Arrival> {
        self.rx.lock().await.recv().await
    }

    /// The publisher taken from `next` has ended: the next one may come.
    pub fn finished(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// Resolves when a publisher has been offered since the last call.
    pub async fn arrived(&self) {
        self.arrived.notified().await
    }

    /// Whether a publisher is pushing (or accepted and about to).
    pub fn publishing(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// The protocol of the current or last publisher.
    pub fn protocol(&self) -> Option<Protocol> {
        Protocol::from_u8(self.protocol.load(Ordering::Acquire))
    }

    /// The camera is gone: refuse publishers from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// Finds the slot a stream key opens, if any: given to protocol servers by whoever owns the keys.
pub type Gate = Arc<dyn Fn(&str) -> Option<Arc<PushSlot>> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival() -> Arrival {
        Arrival::new(Protocol::Rtmp, Box::new(|_, _| Box::pin(async { Failure::retry("done") })))
    }

    #[tokio::test]
    async fn one_publisher_at_a_time() {
        let slot = PushSlot::default();
        assert!(slot.offer(arrival()).is_ok());
        assert_eq!(slot.offer(arrival()).unwrap_err(), Refusal::Busy);
        let taken = slot.next().await.expect("the first publisher");
        assert_eq!(taken.protocol, Protocol::Rtmp);
        assert_eq!(slot.offer(arrival()).unwrap_err(), Refusal::Busy, "still publishing");
        slot.finished();
        assert!(slot.offer(arrival()).is_ok());
        slot.finished();
        slot.close();
        assert_eq!(slot.offer(arrival()).unwrap_err(), Refusal::Closed);
        assert_eq!(slot.protocol(), Some(Protocol::Rtmp));
    }
}
