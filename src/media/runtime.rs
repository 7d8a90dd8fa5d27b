//! The media runtime: one thread running a current-thread tokio runtime for every camera's ingest and every
//! recording. Kept apart from the RPC runtime so that neither slows the other, and single-threaded because, with
//! many cameras, waking worker threads costs more than the work (measured: see `evidence/`).

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The running media thread. Dropping it stops the runtime, so drop it after its tasks were stopped and awaited
/// (or the shutdown grace ran out). The thread is not joined: a task stuck past the grace time must not hold up exit.
#[derive(Debug)]
pub struct MediaRuntime {
    handle: Handle,
    /// Dropping it lets the thread's `block_on` return.
    _stop: oneshot::Sender<()>,
}

impl MediaRuntime {
    pub fn start() -> std::io::Result<MediaRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new().name("camhub-media".into()).spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        Ok(MediaRuntime { handle, _stop: stop })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}
