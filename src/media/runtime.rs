//! The media runtime: one thread running a current-thread tokio runtime for every camera's ingest and every
//! recording, in turns at most every `TURN`, or `LIVE_TURN` while someone waits for frames as they come (`Live`).
//! Kept apart from the RPC runtime so that neither slows the other, single-threaded because, with many cameras,
//! waking worker threads costs more than the work, and paced because a runtime left to wait on its sockets wakes for
//! every TCP segment of every camera (about 40 times a second per camera, measured): after a turn the thread sleeps
//! out the rest of the turn, when nobody waits on the sockets, so the next turn reads what 50 ms (20 ms) of every
//! camera brought at once. Idle, it waits as any runtime does (for I/O, a timer or a task sent from elsewhere) and
//! costs nothing.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The shortest time between two turns of the media thread while nobody waits for live frames: the most it adds to the
/// latency of what it runs (a frame's way from the socket to the hub and a recorder, a task sent from another thread)
/// while it is busy. Each turn costs every camera a few system calls (reads until one finds nothing), so a turn of
/// 50 ms costs recording cameras about a quarter less CPU than one of 20 ms (measured at 10 cameras).
pub const TURN: Duration = Duration::from_millis(50);

/// The turn while a `Live` is held: a viewer's frames (RTSP, WebRTC, HLS) and a snapshot's frame wait at most this.
pub const LIVE_TURN: Duration = Duration::from_millis(20);

/// How many `Live`s are held.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The media thread (the latest started: one per service), to cut its sleep short when a `Live` is taken.
static THREAD: Mutex<Option<Thread>> = Mutex::new(None);

/// Held while someone waits for a camera's frames as they arrive (a publishing feed, a snapshot): the media thread
/// turns every `LIVE_TURN` instead of every `TURN`. Taking one ends a longer sleep the thread is in at once.
#[derive(Debug)]
pub struct Live(());

impl Live {
    pub fn take() -> Live {
        LIVE.fetch_add(1, Ordering::Relaxed);
        if let Some(thread) = THREAD.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            thread.unpark();
        }
        Live(())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The turn in force now.
fn turn_length() -> Duration {
    if LIVE.load(Ordering::Relaxed) > 0 { LIVE_TURN } else { TURN }
}

/// How many times a turn runs what is ready and then polls sockets and timers without waiting, after its wait. The
/// tasks the wait readied run in the first, with every task they wake in turn (a frame read wakes the publishing feeds
/// it goes to); a second is for what needs a poll in between. What is readied after the last runs next turn.
const ROUNDS: usize = 1;

/// The running media thread. Dropping it stops the runtime, so drop it after its tasks were stopped and awaited
/// (or the shutdown grace ran out). The thread is not joined: a task stuck past the grace time must not hold up exit.
#[derive(Debug)]
pub struct MediaRuntime {
    handle: Handle,
    /// Dropping it ends the thread's loop after its current turn.
    _stop: oneshot::Sender<()>,
}

impl MediaRuntime {
    pub fn start() -> std::io::Result<MediaRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().on_thread_unpark(unparked).build()?;
        let handle = runtime.handle().clone();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("camhub-media".into()).spawn(move || {
            while matches!(stopped.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
                let began = runtime.block_on(turn());
                // Parked rather than asleep, so that a `Live` taken meanwhile shortens the wait to its turn; a
                // wake-up for anything else (or none) only parks again for the rest.
                while let Some(rest) = turn_length().checked_sub(began.elapsed()) {
                    std::thread::park_timeout(rest);
                }
            }
        })?;
        *THREAD.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread.thread().clone());
        Ok(MediaRuntime { handle, _stop: stop })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

thread_local! {
    /// Whether the media runtime woke from waiting since the turn began, and the turn's waker.
    static WOKEN: RefCell<(bool, Option<Waker>)> = const { RefCell::new((false, None)) };
}

/// The runtime's hook after each wait: something arrived (I/O, a timer, a task from another thread).
fn unparked() {
    WOKEN.with_borrow_mut(|(woken, waker)| {
        *woken = true;
        if let Some(w) = waker.take() {
            w.wake();
        }
    });
}

/// One turn: waits (as the runtime waits: on sockets, timers and other threads) until something arrives, then
/// `ROUNDS` times the tasks that are ready run until none is, and sockets and timers are polled without waiting (a
/// yielding task is woken only after that poll), which readies the next round's tasks. Returns when the turn began.
async fn turn() -> Instant {
    Woken.await;
    let began = Instant::now();
    for _ in 0..ROUNDS {
        tokio::task::yield_now().await;
    }
    began
}

/// Ready once the runtime has woken from a wait since the turn began.
struct Woken;

impl Future for Woken {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        WOKEN.with_borrow_mut(|(woken, waker)| {
            if std::mem::take(woken) {
                Poll::Ready(())
            } else {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a task on `runtime` that sleeps 1 ms `turns` times (a timer fires in the first turn after it is due, so
    /// the task runs once per turn) and returns the shortest time between two of its runs.
    fn shortest_turn(runtime: &MediaRuntime, turns: u32) -> Duration {
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.handle().spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let mut last = Instant::now();
            let mut shortest = Duration::MAX;
            for _ in 0..turns {
                tokio::time::sleep(Duration::from_millis(1)).await;
                shortest = shortest.min(last.elapsed());
                last = Instant::now();
            }
            let _ = tx.send(shortest);
        });
        rx.recv_timeout(Duration::from_secs(20)).expect("the media runtime ran the task")
    }

    // One test: `Live`s are counted process-wide, and no other unit test starts a media runtime or takes one.
    #[test]
    fn turns_at_the_live_pace_only_while_a_live_is_held_and_taking_one_cuts_the_sleep_short() {
        let runtime = MediaRuntime::start().expect("media runtime");
        // Never sooner than a turn: the thread parks for the rest of it, whatever wakes it.
        let quiet = shortest_turn(&runtime, 6);
        assert!(quiet >= TURN - Duration::from_millis(1), "a turn every {quiet:?} with nobody live, not {TURN:?}");

        let live = Live::take();
        let fast = shortest_turn(&runtime, 10);
        assert!(fast < TURN - Duration::from_millis(10), "a turn every {fast:?} while live, not {LIVE_TURN:?}");
        drop(live);
        let quiet = shortest_turn(&runtime, 6);
        assert!(quiet >= TURN - Duration::from_millis(1), "a turn every {quiet:?} after the live ended");

        // A task runs, then waits 1 ms for its timer; a `Live` taken while the thread sleeps out its 50-ms turn
        // brings the next turn forward to 20 ms after the last began.
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.handle().spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let ran = Instant::now();
            let _ = tx.send(ran);
            tokio::time::sleep(Duration::from_millis(1)).await;
            let _ = tx.send(Instant::now());
        });
        let ran = rx.recv_timeout(Duration::from_secs(20)).expect("the task ran");
        let live = Live::take();
        let next = rx.recv_timeout(Duration::from_secs(20)).expect("the task ran again");
        drop(live);
        let waited = next - ran;
        assert!(
            waited < TURN - Duration::from_millis(10),
            "the next turn came {waited:?} after, not about {LIVE_TURN:?}"
        );
    }
}
