//! The JSON-RPC 2.0 transport over WebSocket (`/ws` on the HTTP listener): one connection task per client
//! (`connection`) owns framing, limits, authentication and notifications; the API is declared once in `methods`,
//! whose handlers parse, call one use case of the application and render the result (`wire` for shapes several
//! methods share, `notify` for notifications); `errors` is the one mapping of errors to codes. No camera or media
//! logic lives here. Notifications are written by a task per connection on a runtime of their own (`Notifier`), so
//! an event fanned out to thousands of connections never queues a request's answer behind it.

pub mod connection;
pub mod errors;
pub mod methods;
pub mod notify;
pub mod session;
pub mod wire;

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use session::Sessions;

/// What every connection and method shares.
#[derive(Debug)]
pub struct Rpc {
    pub app: Arc<App>,
    pub sessions: Sessions,
    /// The latest events' notification frames, rendered once for every connection.
    pub renders: notify::Renders,
    /// One permit per open WebSocket: `max_connections` bounds them.
    connection_slots: Arc<Semaphore>,
    /// Closes every connection at shutdown.
    shutdown: CancellationToken,
    /// Where connections' notification writers run.
    notifier: Notifier,
}

impl Rpc {
    pub fn new(app: Arc<App>, shutdown: CancellationToken) -> std::io::Result<Arc<Rpc>> {
        let max = app.config().server.max_connections;
        Ok(Arc::new(Rpc {
            app,
            sessions: Sessions::default(),
            renders: notify::Renders::default(),
            connection_slots: Arc::new(Semaphore::new(max)),
            notifier: Notifier::start(shutdown.clone())?,
            shutdown,
        }))
    }
}

/// How much lower than the rest of camhub the notification thread runs (a nice value): when the machine is busy,
/// the kernel gives a thread answering a request about three times the CPU share of a notification burst.
const NOTIFY_NICE: libc::c_int = 5;

/// Lowers the calling thread's scheduling priority by `NOTIFY_NICE` (Linux: nice is per thread). Raising it back
/// would need a privilege; lowering never does. A failure only costs the preference, said once in the log.
fn lower_priority() {
    // SAFETY: gettid has no preconditions; setpriority only reads its arguments.
    let result = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NOTIFY_NICE)
    };
    if result != 0 {
        tracing::debug!(err = %std::io::Error::last_os_error(), "cannot lower the notification thread's priority");
    }
}

/// The notification runtime: one thread with a current-thread tokio runtime for every connection's notification
/// writer. An event wakes every connection that gets it (thousands, each rendering and writing a frame); on the
/// request runtime those wake-ups queued behind them every request that arrived meanwhile (a client's p99 at 2,000
/// connections was 9-33 times its calm one). On a thread of its own, at a lower priority, the burst takes at most
/// one core, and the kernel, not a run queue, shares the machine between it and the requests, whose threads mostly
/// sleep and so get a core as soon as they wake. A burst it cannot keep up with makes slow connections lag, and a lagging connection
/// loses its oldest notifications (counted), as it always did.
#[derive(Debug)]
struct Notifier {
    handle: Handle,
}

impl Notifier {
    fn start(shutdown: CancellationToken) -> std::io::Result<Notifier> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        // Ends at shutdown, when the connections have been told to close; their writers are dropped with it.
        std::thread::Builder::new().name("camhub-notify".into()).spawn(move || {
            lower_priority();
            runtime.block_on(shutdown.cancelled_owned())
        })?;
        Ok(Notifier { handle })
    }
}
