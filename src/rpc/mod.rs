//! The JSON-RPC 2.0 transport over WebSocket (`/ws` on the HTTP listener): one connection task per client
//! (`connection`) owns framing, limits, authentication and notifications; the API is declared once in `methods`,
//! whose handlers parse, call one use case of the application and render the result (`wire` for shapes several
//! methods share, `notify` for notifications); `errors` is the one mapping of errors to codes. No camera or media
//! logic lives here.

pub mod connection;
pub mod errors;
pub mod methods;
pub mod notify;
pub mod session;
pub mod wire;

use std::sync::Arc;

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
}

impl Rpc {
    pub fn new(app: Arc<App>, shutdown: CancellationToken) -> Arc<Rpc> {
        let max = app.config().server.max_connections;
        Arc::new(Rpc {
            app,
            sessions: Sessions::default(),
            renders: notify::Renders::default(),
            connection_slots: Arc::new(Semaphore::new(max)),
            shutdown,
        })
    }
}
