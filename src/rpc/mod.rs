//! The client-facing transport: one HTTP listener (axum) serving the JSON-RPC WebSocket at `/ws` and the HTTP
//! endpoints. JSON-RPC methods are a jsonrpsee `RpcModule`; the WebSocket connection (`connection`) owns framing,
//! limits, authentication checks and notifications, then hands each request to the module. This layer shapes the
//! wire and checks roles; it holds no camera or media logic.

pub mod connection;
pub mod errors;
pub mod http;
pub mod methods;
pub mod session;
pub mod storage_methods;
pub mod web;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use jsonrpsee::Methods;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use session::Sessions;

/// What every connection and method shares.
#[derive(Debug)]
pub struct RpcContext {
    pub app: Arc<App>,
    pub sessions: Sessions,
    /// Sampled on demand for `get_metrics`; behind a lock because refreshing mutates it.
    system: Mutex<Option<sysinfo::System>>,
}

/// Process figures for `get_metrics` and `/metrics`.
#[derive(Debug, Default)]
pub struct ProcessMetrics {
    pub cpu_percent: f32,
    pub rss_bytes: u64,
    pub threads: usize,
    pub disk_usage_percent: f64,
}

impl RpcContext {
    pub fn new(app: Arc<App>) -> RpcContext {
        RpcContext { app, sessions: Sessions::default(), system: Mutex::new(sysinfo::System::new().ok()) }
    }

    pub fn process_metrics(&self) -> ProcessMetrics {
        let pid = sysinfo::Pid::from_u32(std::process::id());
        let mut sys = self.system.lock();
        let Some(sys) = sys.as_mut() else { return ProcessMetrics::default() };
        sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
        let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
        let disk_usage_percent = crate::storage::disk_usage(&self.app.config.storage.root)
            .map(|(total, available)| if total == 0 { 0.0 } else { 100.0 * (total - available) as f64 / total as f64 })
            .unwrap_or(0.0);
        match sys.process(pid) {
            Some(p) => {
                ProcessMetrics { cpu_percent: p.cpu_usage(), rss_bytes: p.memory(), threads, disk_usage_percent }
            }
            None => ProcessMetrics { threads, disk_usage_percent, ..Default::default() },
        }
    }
}

/// The transport, ready to serve.
#[derive(Clone)]
pub struct Server {
    ctx: Arc<RpcContext>,
    methods: Methods,
    /// One permit per open WebSocket: `max_connections` bounds them.
    connection_slots: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl Server {
    pub fn new(app: Arc<App>, shutdown: CancellationToken) -> Server {
        let max = app.config.server.max_connections;
        let ctx = Arc::new(RpcContext::new(app));
        let methods = methods::module(ctx.clone()).into();
        Server { ctx, methods, connection_slots: Arc::new(Semaphore::new(max)), shutdown }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/ws", axum::routing::get(connection::upgrade))
            .merge(http::routes())
            .merge(web::routes())
            .with_state(self.clone())
    }

    /// Serves on `listener` until the shutdown token fires, then lets open requests finish.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let shutdown = self.shutdown.clone();
        // Notifications are small frames often sent back to back: without TCP_NODELAY, Nagle holds the second one for
        // the client's delayed ACK (measured: 40 ms from a camera change to its topic event).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(err = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, self.router().into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    }
}
