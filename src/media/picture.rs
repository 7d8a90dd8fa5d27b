//! A camera's latest decoded picture, shared: a decoder that runs anyway (detection's) publishes each frame it
//! decodes here, so that a snapshot of the same moment is encoded from it instead of decoded a second time. Nothing
//! here decodes, and nothing is kept beyond the one latest picture.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use gstreamer as gst;
use tokio::sync::{Notify, watch};

/// One decoded frame and when its encoded frame arrived in the hub (the hub's `Frame::arrived`, exactly: decoders
/// stamp frames with their arrival and read it back from the decoded buffer).
#[derive(Debug, Clone)]
pub struct Picture {
    pub sample: gst::Sample,
    pub arrived: Instant,
}

#[derive(Debug)]
pub struct Pictures {
    /// The latest picture; a watch so that a snapshot can wait for the one it needs.
    latest: watch::Sender<Option<Picture>>,
    /// Whether the publishing decoder decodes every frame now (detection on motion), rather than keyframes only:
    /// only then is it worth waiting for its next picture.
    every_frame: AtomicBool,
    /// A snapshot waits for a picture: the decoder takes the hub's frames now rather than at its next batch.
    wanted: Notify,
}

impl Default for Pictures {
    fn default() -> Pictures {
        Pictures { latest: watch::channel(None).0, every_frame: AtomicBool::new(false), wanted: Notify::new() }
    }
}

impl Pictures {
    /// A decoded frame (called on the decoder's streaming thread: it never blocks).
    pub fn publish(&self, sample: gst::Sample, arrived: Instant) {
        self.latest.send_replace(Some(Picture { sample, arrived }));
    }

    /// The decoder stopped: its last picture is let go and nobody waits for the next.
    pub fn clear(&self) {
        self.every_frame.store(false, Ordering::Relaxed);
        self.latest.send_replace(None);
    }

    pub fn set_every_frame(&self, every_frame: bool) {
        self.every_frame.store(every_frame, Ordering::Relaxed);
    }

    pub fn every_frame(&self) -> bool {
        self.every_frame.load(Ordering::Relaxed)
    }

    pub fn latest(&self) -> Option<Picture> {
        self.latest.borrow().clone()
    }

    /// Follows the pictures as they are published.
    pub fn follow(&self) -> watch::Receiver<Option<Picture>> {
        self.latest.subscribe()
    }

    /// Asks the decoder to take the hub's frames at once (a snapshot waits for a picture).
    pub fn want(&self) {
        self.wanted.notify_one();
    }

    /// Resolves when a snapshot asked for a picture.
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }
}
