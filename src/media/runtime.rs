//! The media runtime: one thread running a current-thread tokio runtime for every camera's ingest and every
//! recording. Kept apart from the RPC runtime so that neither slows the other, and single-threaded because, with
//! many cameras, waking worker threads costs more than the work (measured: see `evidence/`).

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The running media thread. Dropping it stops the runtime, so drop it after its tasks were stopped and awaited.
#[derive(Debug)]
pub struct MediaRuntime {
    handle: Handle,
    /// Dropping it lets the thread's `block_on` return.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MediaRuntime {
    pub fn start() -> std::io::Result<MediaRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("camhub-media".into()).spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        Ok(MediaRuntime { handle, stop: Some(stop), thread: Some(thread) })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for MediaRuntime {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
