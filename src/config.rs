//! Configuration: a TOML file plus `CAMHUB_*` environment overrides, read into raw serde structs, then validated into
//! the typed [`Config`] the rest of camhub uses. Nothing here starts anything; a bad value is a [`ConfigError`] that
//! names the key, and the binary turns it into exit code 64.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::camera::CameraId;

/// A configuration problem: the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { key: key.into(), problem: problem.into() }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub monitor: MonitorConfig,
    pub cameras: Vec<CameraConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// WebSocket at `ws://LISTEN/ws`; the HTTP endpoints share the listener.
    pub listen: SocketAddr,
    /// Concurrent WebSocket connections; further upgrades get HTTP 503.
    pub max_connections: usize,
    /// Largest request frame; a larger one gets -32600 and the connection lives on.
    pub max_message_bytes: usize,
    /// Sustained requests per second per connection (token bucket refill rate).
    pub rate_limit_per_sec: u32,
    /// Requests a connection may burst above the sustained rate.
    pub rate_limit_burst: u32,
    /// Notifications a slow client may have queued before the oldest are dropped.
    pub notification_queue: usize,
    /// How long shutdown waits for cameras and connections to finish.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// HS256 secret; `None` means a random secret kept in the data dir.
    pub jwt_secret: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Data dir: the SQLite file and, later, recordings and snapshots.
    pub root: PathBuf,
}

/// How cameras are watched and reconnected.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// No frame for this long means the camera is disconnected.
    pub stall_timeout: Duration,
    /// First reconnect delay; doubles on each failure up to `reconnect_max`.
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// Each delay is varied by up to this fraction either way, so cameras behind one switch do not retry in step.
    pub reconnect_jitter: f64,
    /// RTSP jitterbuffer latency.
    pub rtsp_latency: Duration,
    /// How long to wait for the first frame of a new connection before giving up on the attempt.
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct CameraConfig {
    pub id: CameraId,
    pub name: String,
    pub url: url::Url,
}

impl Config {
    /// Reads `path` (if given) and `CAMHUB_*` environment overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::new("--config", format!("file {} does not exist", path.display())));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        Self::from_builder(builder)
    }

    /// Parses a TOML document (plus environment overrides); used by tests and the embedded demo.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_builder(config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml)))
    }

    fn from_builder(builder: config::ConfigBuilder<config::builder::DefaultState>) -> Result<Config, ConfigError> {
        // Only `CAMHUB_SECTION__KEY` variables override the file; others such as `CAMHUB_CONFIG` (the path) are not
        // config keys.
        let overrides: config::Map<String, String> =
            std::env::vars().filter(|(k, _)| k.starts_with("CAMHUB_") && k.contains("__")).collect();
        let raw: RawConfig = builder
            .add_source(
                config::Environment::with_prefix("CAMHUB")
                    .prefix_separator("_")
                    .separator("__")
                    .source(Some(overrides)),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(from_config_error)?;
        raw.validate()
    }
}

/// Splits the `config` crate's message into key and problem where it names a key.
fn from_config_error(e: config::ConfigError) -> ConfigError {
    let text = e.to_string().replace('\n', " ");
    // Messages look like `invalid type: string "x", expected u16 for key `server.max_connections` in ...`.
    let Some((problem, rest)) = text.split_once(" for key `") else { return ConfigError::new("config", text) };
    let Some((key, _)) = rest.split_once('`') else { return ConfigError::new("config", text) };
    // For an unknown key the message names its section; the key is the section plus the field.
    if let Some(field) = problem.strip_prefix("unknown field `").and_then(|p| p.split_once('`')).map(|(f, _)| f) {
        return ConfigError::new(format!("{key}.{field}"), "unknown key");
    }
    ConfigError::new(key, problem.trim())
}

// ---- raw, as written ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    auth: RawAuth,
    storage: RawStorage,
    monitor: RawMonitor,
    cameras: Vec<RawCamera>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    max_connections: usize,
    max_message_bytes: usize,
    rate_limit_per_sec: u32,
    rate_limit_burst: u32,
    notification_queue: usize,
    shutdown_grace_ms: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8002".into(),
            max_connections: 2000,
            max_message_bytes: 256 * 1024,
            rate_limit_per_sec: 200,
            rate_limit_burst: 400,
            notification_queue: 1024,
            shutdown_grace_ms: 10_000,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    jwt_secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    root: PathBuf,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage { root: "/var/lib/camhub".into() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMonitor {
    stall_timeout_ms: u64,
    reconnect_initial_ms: u64,
    reconnect_max_ms: u64,
    reconnect_jitter: f64,
    rtsp_latency_ms: u64,
    connect_timeout_ms: u64,
}

impl Default for RawMonitor {
    fn default() -> Self {
        RawMonitor {
            stall_timeout_ms: 2000,
            reconnect_initial_ms: 250,
            reconnect_max_ms: 2000,
            reconnect_jitter: 0.2,
            rtsp_latency_ms: 200,
            connect_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCamera {
    id: String,
    name: Option<String>,
    url: String,
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let s = self.server;
        let listen: SocketAddr = s
            .listen
            .parse()
            .map_err(|_| ConfigError::new("server.listen", format!("{:?} is not an IP:PORT address", s.listen)))?;
        positive("server.max_connections", s.max_connections)?;
        if s.max_message_bytes < 1024 {
            return Err(ConfigError::new("server.max_message_bytes", "must be at least 1024"));
        }
        positive("server.rate_limit_per_sec", s.rate_limit_per_sec as usize)?;
        positive("server.rate_limit_burst", s.rate_limit_burst as usize)?;
        positive("server.notification_queue", s.notification_queue)?;

        if let Some(secret) = &self.auth.jwt_secret
            && secret.len() < 16
        {
            return Err(ConfigError::new("auth.jwt_secret", "must be at least 16 characters"));
        }
        if self.storage.root.as_os_str().is_empty() {
            return Err(ConfigError::new("storage.root", "must not be empty"));
        }

        let m = self.monitor;
        positive("monitor.stall_timeout_ms", m.stall_timeout_ms as usize)?;
        positive("monitor.reconnect_initial_ms", m.reconnect_initial_ms as usize)?;
        if m.reconnect_max_ms < m.reconnect_initial_ms {
            return Err(ConfigError::new("monitor.reconnect_max_ms", "must be at least reconnect_initial_ms"));
        }
        if !(0.0..=1.0).contains(&m.reconnect_jitter) {
            return Err(ConfigError::new("monitor.reconnect_jitter", "must be between 0 and 1"));
        }
        positive("monitor.connect_timeout_ms", m.connect_timeout_ms as usize)?;

        let mut cameras = Vec::with_capacity(self.cameras.len());
        for (i, c) in self.cameras.into_iter().enumerate() {
            let key = |field: &str| format!("cameras[{i}].{field}");
            let id = CameraId::parse(&c.id).map_err(|rule| ConfigError::new(key("id"), rule))?;
            if cameras.iter().any(|other: &CameraConfig| other.id == id) {
                return Err(ConfigError::new(key("id"), format!("duplicate camera id {id:?}")));
            }
            let url = crate::camera::parse_stream_url(&c.url).map_err(|rule| ConfigError::new(key("url"), rule))?;
            cameras.push(CameraConfig { name: c.name.unwrap_or_else(|| id.to_string()), id, url });
        }

        Ok(Config {
            server: ServerConfig {
                listen,
                max_connections: s.max_connections,
                max_message_bytes: s.max_message_bytes,
                rate_limit_per_sec: s.rate_limit_per_sec,
                rate_limit_burst: s.rate_limit_burst,
                notification_queue: s.notification_queue,
                shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
            },
            auth: AuthConfig { jwt_secret: self.auth.jwt_secret },
            storage: StorageConfig { root: self.storage.root },
            monitor: MonitorConfig {
                stall_timeout: Duration::from_millis(m.stall_timeout_ms),
                reconnect_initial: Duration::from_millis(m.reconnect_initial_ms),
                reconnect_max: Duration::from_millis(m.reconnect_max_ms),
                reconnect_jitter: m.reconnect_jitter,
                rtsp_latency: Duration::from_millis(m.rtsp_latency_ms),
                connect_timeout: Duration::from_millis(m.connect_timeout_ms),
            },
            cameras,
        })
    }
}

fn positive(key: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 { Err(ConfigError::new(key, "must be greater than 0")) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::from_toml("").expect("empty config is valid");
        assert!(c.server.listen.ip().is_loopback());
        assert_eq!(c.monitor.stall_timeout, Duration::from_secs(2));
        assert!(c.monitor.reconnect_initial <= Duration::from_millis(500));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[server]\nbogus = 1", "server.bogus"),
            ("[auth]\njwt_secret = \"short\"", "auth.jwt_secret"),
            ("[[cameras]]\nid = \"Bad Id\"\nurl = \"rtsp://h/x\"", "cameras[0].id"),
            ("[[cameras]]\nid = \"a\"\nurl = \"http://h/x\"", "cameras[0].url"),
            (
                "[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/y\"",
                "cameras[1].id",
            ),
            ("[monitor]\nreconnect_jitter = 3.0", "monitor.reconnect_jitter"),
        ];
        for (text, key) in cases {
            let e = Config::from_toml(text).expect_err(text);
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = Config::from_toml("[server]\nmax_connections = \"many\"").expect_err("wrong type");
        assert!(e.to_string().contains("max_connections"), "{e}");
    }
}
