//! The command line: `run`, `demo`, `testcam`, `check-config`, `check`, `backup`, `restore`, `token`, `apikey create`,
//! and the built-in API client `call` and `events`. Parses arguments, loads and validates config (a bad one exits 64 with one line), installs
//! logging and signal handling, then calls the library. No service logic lives here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::auth::Role;
use crate::base::AudioCodec;
use crate::client::{Client, ClientError};
use crate::config::{Config, ConfigError};
use crate::media::testcam::{Image, TestCam, TestCamSettings, TestCamSource};

/// EX_USAGE from sysexits.h: the configuration or the command line is wrong.
const EXIT_USAGE: u8 = 64;
/// `call` and `events`: the server answered with a JSON-RPC error.
const EXIT_RPC_ERROR: u8 = 1;
/// `call` and `events`: no connection, or it was lost.
const EXIT_CONNECTION: u8 = 2;
/// EX_DATAERR: `restore` was given a backup that is not whole (manifest, hashes) or not for this camhub.
const EXIT_DATA: u8 = 65;
/// EX_CANTCREAT: `backup` was pointed at a directory that already holds a backup.
const EXIT_CANT_CREATE: u8 = 73;
/// EX_TEMPFAIL: a camhub runs on the data dir (`restore`, `check --repair/--rebuild`); stop it and try again.
const EXIT_RUNNING: u8 = 75;

#[derive(Debug, Parser)]
#[command(name = "camhub", version, about = "Cameras in, one WebSocket JSON-RPC API out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Run {
        #[arg(long, env = "CAMHUB_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run camhub on its embedded default with the built-in test camera (for a first look).
    Demo {
        /// Data dir for the demo.
        #[arg(long, default_value = "var/demo")]
        data: PathBuf,
    },
    /// Serve test cameras over RTSP: rtsp://LISTEN/cam0 .. camN-1.
    Testcam(TestcamArgs),
    /// Validate a config file without starting anything; when a camhub runs at the file's server.listen (or --url),
    /// print what a reload to this file would change there (nothing is applied).
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
        /// The running camhub's WebSocket URL [default: ws://<server.listen>/ws].
        #[arg(long)]
        url: Option<String>,
        /// An admin JWT or API key for the comparison; without one, a short-lived admin token is made from the data
        /// dir's secret (as `camhub token` does).
        #[arg(long, env = "CAMHUB_TOKEN", hide_env_values = true)]
        token: Option<Secret>,
    },
    /// Compare recordings on disk with the index; with --repair, make them agree; with --rebuild, rebuild the index
    /// from the files (a lost database, or one older than the disks). --repair and --rebuild refuse while camhub runs.
    Check {
        #[arg(long, env = "CAMHUB_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        repair: bool,
        /// Index every file without a row, measure again every file whose size changed, drop rows without a file.
        #[arg(long, conflicts_with = "repair")]
        rebuild: bool,
    },
    /// Copy the database (consistent, while camhub runs), the config and the key material into a directory with a
    /// manifest (exit 73 if it already holds a backup).
    Backup {
        #[arg(long, env = "CAMHUB_CONFIG")]
        config: Option<PathBuf>,
        /// The backup directory (created, mode 0700).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Replace a backup already in DIR.
        #[arg(long)]
        overwrite: bool,
    },
    /// Put a backup back while camhub is stopped: its manifest checked first (exit 65 if a file changed), then the
    /// database and key material restored with their permissions (exit 75 while camhub runs on the data dir).
    Restore {
        /// The config naming the data dir; if the file does not exist, the backup's config is written there first.
        #[arg(long, env = "CAMHUB_CONFIG")]
        config: Option<PathBuf>,
        /// The backup directory.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
    },
    /// Print a signed JWT for a role.
    Token {
        #[arg(long, env = "CAMHUB_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        #[arg(long, default_value = "cli")]
        user: String,
    },
    /// Manage API keys.
    Apikey {
        #[command(subcommand)]
        action: ApikeyAction,
    },
    /// Call one API method and print its result as JSON (exit 1 with the error object on stderr if the server refuses,
    /// 2 if it cannot be reached).
    Call {
        #[command(flatten)]
        client: ClientArgs,
        /// The method, e.g. get_camera_list.
        method: String,
        /// Parameters as key=value; a value that parses as JSON is JSON (duration=10, topics='["camera.connected"]'),
        /// anything else a string (device=cam0).
        params: Vec<String>,
    },
    /// Print notifications, one JSON line each, until Ctrl-C: the `event`s of the topics given (camera.status_change,
    /// recording.start, ...), or camera_status_update and recording_status_update when none is given.
    Events {
        #[command(flatten)]
        client: ClientArgs,
        /// Stop after this many notifications.
        #[arg(long)]
        count: Option<u64>,
        topics: Vec<String>,
    },
}

/// How `call` and `events` reach the service.
#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// The config whose server.listen gives the default URL.
    #[arg(long, env = "CAMHUB_CONFIG")]
    config: Option<PathBuf>,
    /// WebSocket URL [default: ws://<server.listen>/ws].
    #[arg(long)]
    url: Option<String>,
    /// A JWT or an API key, sent with `authenticate` first (not for `ping`).
    #[arg(long, env = "CAMHUB_TOKEN", hide_env_values = true)]
    token: Option<Secret>,
}

/// A credential given on the command line or in the environment. Its `Debug` form hides it, so neither a log line nor
/// a panic message can carry it.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

#[derive(Debug, Subcommand)]
enum ApikeyAction {
    /// Create a key for a role and print it (only its hash is stored).
    Create {
        #[arg(long, env = "CAMHUB_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[derive(Debug, clap::Args)]
struct TestcamArgs {
    #[arg(long, default_value = "127.0.0.1:8654")]
    listen: std::net::SocketAddr,
    #[arg(long, default_value_t = 1)]
    cameras: usize,
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Frames between keyframes (default: one second's worth).
    #[arg(long)]
    gop: Option<u32>,
    #[arg(long, default_value_t = 2000)]
    bitrate: u32,
    /// Picture: ball (cheap to encode) or a videotestsrc pattern such as snow (noise, full bitrate).
    #[arg(long, default_value = "ball")]
    pattern: String,
    /// Loop the video of this MP4/MKV file instead of generating a picture.
    #[arg(long, conflicts_with = "loop_seconds")]
    file: Option<PathBuf>,
    /// Encode this many seconds once and loop them (cheap for many cameras) instead of encoding live.
    #[arg(long)]
    loop_seconds: Option<u32>,
    /// Show this photo (PNG, JPEG) over the live picture, letterboxed: a real object for detection to find.
    #[arg(long, conflicts_with_all = ["file", "loop_seconds"])]
    image: Option<PathBuf>,
    /// With --image: ABSENT:PRESENT seconds, the photo hidden then shown in turn from the stream's start (e.g. 10:10).
    #[arg(long, requires = "image", value_parser = parse_schedule)]
    image_schedule: Option<(Duration, Duration)>,
    /// Also serve cam0 at this path (e.g. /stream1, one of the paths discover_external_streams tries).
    #[arg(long)]
    also_at: Option<String>,
    /// Sound (live cameras): aac, pcmu, pcma or none. A tone with a burst at each second, while the picture shows a
    /// white square at the same instants (to measure A/V sync).
    #[arg(long, value_enum, default_value_t = Sound::None, conflicts_with_all = ["file", "loop_seconds"])]
    audio: Sound,
    /// Live cameras: switch the picture between full and half size every this many seconds, mid-stream.
    #[arg(long, conflicts_with_all = ["file", "loop_seconds", "image"])]
    resize_every: Option<u64>,
    /// Live cameras: draw the wall-clock time each frame is made at along its bottom (16-pixel blocks: Unix ms, low
    /// 32 bits, then a check byte), for measuring glass-to-glass latency.
    #[arg(long, conflicts_with_all = ["file", "loop_seconds"])]
    clock_blocks: bool,
}

/// The test camera's `--audio`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Sound {
    None,
    Aac,
    Pcmu,
    Pcma,
}

impl Sound {
    fn codec(self) -> Option<AudioCodec> {
        match self {
            Sound::None => None,
            Sound::Aac => Some(AudioCodec::Aac),
            Sound::Pcmu => Some(AudioCodec::Pcmu),
            Sound::Pcma => Some(AudioCodec::Pcma),
        }
    }
}

/// `ABSENT:PRESENT` in seconds, each 1 to 3600.
fn parse_schedule(text: &str) -> Result<(Duration, Duration), String> {
    let (a, p) = text.split_once(':').ok_or("ABSENT:PRESENT seconds, e.g. 10:10")?;
    let secs = |v: &str| match v.trim().parse::<f64>() {
        Ok(s) if (1.0..=3600.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{v:?} is not a number of seconds between 1 and 3600")),
    };
    Ok((secs(a)?, secs(p)?))
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "role must be viewer, operator or admin".into())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` reads its config before logging starts: the trace exporter, a layer of the logging, comes from it.
    let run_config = match &cli.command {
        Command::Run { config } => match load(config.as_deref()) {
            Ok(c) => Some(c),
            Err(code) => return code,
        },
        _ => None,
    };
    let telemetry = match init_logging(run_config.as_ref().map(|c| &c.telemetry)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("camhub: config error: telemetry.otlp_endpoint: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(config) = &run_config {
        apply_log_level(config);
        raise_open_file_limit();
    }
    // Clients and the API get a multi-thread runtime; cameras and recordings run on the media runtime's own thread
    // (`media::runtime`).
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let code = runtime.block_on(dispatch(cli.command, run_config));
    drop(runtime);
    // After the service has stopped, off the runtime: the last spans (the shutdown's own among them) go out.
    if let Some(t) = telemetry {
        t.shutdown();
    }
    code
}

/// Raises the soft limit of open files to the hard one: every client connection, RTSP reader, WebRTC session,
/// camera and recording segment holds descriptors, and the soft limit a shell or container starts a process with
/// (often 1024) is far below what `server.max_connections` allows. The systemd unit sets both (`LimitNOFILE`).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(err = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return;
    }
    if limit.rlim_cur >= limit.rlim_max {
        tracing::debug!(limit = limit.rlim_cur, "open-file limit");
        return;
    }
    let soft = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        tracing::info!(from = soft, to = limit.rlim_max, "open-file limit raised to the hard limit");
    } else {
        tracing::warn!(err = %std::io::Error::last_os_error(), limit = soft, "cannot raise the open-file limit");
    }
}

async fn dispatch(command: Command, run_config: Option<Config>) -> ExitCode {
    match command {
        Command::Run { config: path } => {
            let Some(config) = run_config else { return fail("run without its config".into()) };
            let reloading = crate::reload::Reloading { path, ..log_reloading() };
            finish(crate::service::run(config, reloading, shutdown_signal()).await)
        }
        Command::Demo { data } => demo(data).await,
        Command::Testcam(args) => testcam(args).await,
        Command::CheckConfig { config, url, token } => match load(Some(&config)) {
            Ok(c) => {
                println!("{}: ok ({} cameras, listen {})", config.display(), c.cameras.len(), c.server.listen);
                compare_with_running(&config, &c, url, token).await
            }
            Err(code) => code,
        },
        Command::Check { config, repair, rebuild } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if rebuild { rebuild_index(config).await } else { check(config, repair).await }
        }
        Command::Backup { config: path, to, overwrite } => {
            let config = match load(path.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            backup(&config, path.as_deref(), &to, overwrite).await
        }
        Command::Restore { config, from } => restore(config.as_deref(), &from).await,
        Command::Token { config, role, ttl, user } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let result = async {
                let (db, auth) = crate::service::open_storage(&config).await?;
                let token = auth.issue(&user, role, Duration::from_secs(ttl))?;
                db.close().await;
                anyhow::Ok(token)
            };
            match result.await {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("{e:#}")),
            }
        }
        Command::Call { client, method, params } => call(client, &method, &params).await,
        Command::Events { client, count, topics } => events(client, count, topics).await,
        Command::Apikey { action: ApikeyAction::Create { config, role, name } } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let result = async {
                let (db, auth) = crate::service::open_storage(&config).await?;
                let key = auth.create_api_key(role, &name).await?;
                db.close().await;
                anyhow::Ok(key)
            };
            match result.await {
                Ok(key) => {
                    println!("{key}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("{e:#}")),
            }
        }
    }
}

/// Loads and validates config; a problem is one line on stderr and exit 64.
fn load(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    let config = Config::load(path).map_err(|e: ConfigError| {
        eprintln!("camhub: config error: {e}");
        ExitCode::from(EXIT_USAGE)
    })?;
    apply_log_level(&config);
    Ok(config)
}

fn fail(message: String) -> ExitCode {
    eprintln!("camhub: error: {message}");
    ExitCode::FAILURE
}

/// The end of `run`: a problem the config caused only at start-up (a model file that is missing or corrupt, the
/// inference runtime) exits 64 like any config error, with one line naming the key.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<ConfigError>() {
            Some(c) => {
                eprintln!("camhub: config error: {c}");
                ExitCode::from(EXIT_USAGE)
            }
            None => fail(format!("{e:#}")),
        },
    }
}

/// Changes the running log filter; set once logging is installed.
static LOG_FILTER: std::sync::OnceLock<crate::reload::LogFilter> = std::sync::OnceLock::new();

/// The log on stderr and, with `[telemetry] otlp_endpoint`, trace export beside it, each with its own filter:
/// `RUST_LOG=warn` quiets the log, not the traces. The log's filter can be changed while running (`LOG_FILTER`):
/// `RUST_LOG` when set, else `info` until the config's `[log] level` is read (and again on each reload).
fn init_logging(
    telemetry: Option<&crate::config::TelemetryConfig>,
) -> Result<Option<crate::telemetry::Telemetry>, opentelemetry_otlp::ExporterBuildError> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let colour = wants_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
    let log = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let (exporter, traces) = match telemetry.map(crate::telemetry::layer).transpose()?.flatten() {
        Some((exporter, layer)) => (Some(exporter), Some(layer)),
        None => (None, None),
    };
    tracing_subscriber::registry().with(log).with(traces).init();
    let set: crate::reload::LogFilter = std::sync::Arc::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    let _ = LOG_FILTER.set(set);
    if let Some(endpoint) = telemetry.and_then(|t| t.otlp_endpoint.as_ref()).filter(|_| exporter.is_some()) {
        tracing::info!(%endpoint, "exporting traces over OTLP/HTTP");
    }
    Ok(exporter)
}

/// How the service changes its log filter on reload; `RUST_LOG`, when set, wins over the config.
fn log_reloading() -> crate::reload::Reloading {
    crate::reload::Reloading {
        path: None,
        log: LOG_FILTER.get().cloned(),
        log_from_env: std::env::var_os("RUST_LOG").is_some(),
    }
}

/// Puts the config's `[log] level` in force, unless `RUST_LOG` is set (or logging is not installed yet).
fn apply_log_level(config: &Config) {
    let reloading = log_reloading();
    if let (Some(set), false) = (reloading.log, reloading.log_from_env) {
        // Validated with the config: it parses.
        let _ = set(&config.log.level);
    }
}

/// Colour only for a person at a terminal: a log file or the journal would keep the escape codes as text. `NO_COLOR`
/// with any non-empty value turns it off (no-color.org); an empty one does not count.
fn wants_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once. The handlers are installed when this is
/// called, not when the future is first polled: a signal during start-up (before the service awaits its shutdown)
/// is then held for it instead of killing the process with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = signal(SignalKind::terminate()).and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
    async move {
        let Ok((mut term, mut int)) = handlers else {
            // Without signal handlers the service can only be killed; run until then.
            return std::future::pending().await;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tokio::spawn(async move {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            eprintln!("camhub: second signal, exiting now");
            // `_exit`, not `exit`: C libraries' exit handlers (OpenSSL's cleanup among them) must not run while other
            // threads still use them. With `exit`, a second signal during start-up, while the WHEP DTLS certificate
            // was being made, ended in SIGSEGV instead of 130. Files are safe either way: nothing is buffered
            // in-process.
            // SAFETY: `_exit` ends the process at once and touches no Rust state.
            unsafe { libc::_exit(130) }
        });
    }
}

async fn testcam(args: TestcamArgs) -> ExitCode {
    let source = match (args.file, args.loop_seconds) {
        (Some(path), _) => TestCamSource::File(path),
        (None, Some(seconds)) => TestCamSource::Loop { seconds },
        (None, None) => TestCamSource::Live,
    };
    let settings = TestCamSettings {
        listen: args.listen,
        cameras: args.cameras,
        width: args.width,
        height: args.height,
        fps: args.fps,
        gop: args.gop,
        bitrate_kbps: args.bitrate,
        pattern: args.pattern,
        source,
        image: args.image.map(|path| Image { path, schedule: args.image_schedule }),
        also_at: args.also_at,
        audio: args.audio.codec(),
        resize_every: args.resize_every.map(Duration::from_secs),
        clock_blocks: args.clock_blocks,
    };
    let cameras = settings.cameras;
    let host = settings.listen.ip();
    let cam = match tokio::task::spawn_blocking(move || TestCam::start(settings)).await {
        Ok(Ok(cam)) => cam,
        Ok(Err(e)) => return fail(e.to_string()),
        Err(e) => return fail(e.to_string()),
    };
    println!("testcam: serving rtsp://{host}:{}/cam0 .. cam{}", cam.port(), cameras - 1);
    shutdown_signal().await;
    drop(cam);
    ExitCode::SUCCESS
}

/// The demo's detection camera: a test camera showing a real photo of a person (and a dog) ten seconds in twenty.
const DEMO_DOOR: &str = "127.0.0.1:8655";

/// The demo's detection part, when `scripts/install-models.sh` has put ONNX Runtime, the COCO model and the photos
/// beside the sources: the inference section and a camera that detects people and records them. Otherwise why not.
fn demo_detection() -> Result<(String, PathBuf), String> {
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let runtime = assets.join("onnxruntime/libonnxruntime.so");
    let model = assets.join("models/coco-centernet.onnx");
    let photo = assets.join("photos/person.jpg");
    for file in [&runtime, &model, &photo] {
        if !file.is_file() {
            return Err(format!("{} is missing (run scripts/install-models.sh)", file.display()));
        }
    }
    let toml = format!(
        "[inference]\nruntime = {runtime:?}\n[[inference.models]]\nname = \"coco\"\npath = {model:?}\nkind = \"boxes\"\n\
         labels = \"coco80\"\n[[cameras]]\nid = \"door\"\nname = \"Front door (detection)\"\n\
         url = \"rtsp://{DEMO_DOOR}/cam0\"\nrecord = \"events\"\n\
         detect = {{ model = \"coco\", labels = [\"person\", \"dog\", \"cat\", \"car\"] }}\n",
        runtime = runtime.display().to_string(),
        model = model.display().to_string(),
    );
    Ok((toml, photo))
}

async fn demo(data: PathBuf) -> ExitCode {
    let detection = demo_detection();
    let text = match &detection {
        Ok((toml, _)) => format!("{}\n{toml}", include_str!("../config/demo.toml")),
        Err(_) => include_str!("../config/demo.toml").to_owned(),
    };
    let mut config = match Config::from_toml(&text) {
        Ok(c) => c,
        Err(e) => return fail(format!("embedded demo config: {e}")),
    };
    config.storage.root = data;
    // The page's HLS player, where scripts/install-models.sh put it.
    let hls_js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/web/hls.light.min.js");
    if hls_js.is_file() {
        config.hls.player_js = Some(hls_js);
    }
    // Every port is claimed or checked before anything is started or printed: a newcomer whose port is taken gets one
    // line naming it, not a banner of URLs and a token that lead nowhere.
    let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
        Ok(l) => l,
        Err(e) => return cannot_listen(config.server.listen, "HTTP/WebSocket", &e),
    };
    // The RTSP server binds inside gst-rtsp-server, late in start-up: this probe holds its port until just before.
    let rtsp_probe = if config.rtsp_server.enabled {
        match std::net::TcpListener::bind(config.rtsp_server.listen) {
            Ok(probe) => Some(probe),
            Err(e) => return cannot_listen(config.rtsp_server.listen, "RTSP server", &e),
        }
    } else {
        None
    };
    if config.rtmp.enabled
        && let Err(e) = std::net::TcpListener::bind(config.rtmp.listen)
    {
        return cannot_listen(config.rtmp.listen, "RTMP server", &e);
    }
    if config.srt.enabled
        && let Err(e) = std::net::UdpSocket::bind(config.srt.listen)
    {
        return cannot_listen(config.srt.listen, "SRT listener", &e);
    }
    let settings = TestCamSettings { cameras: 2, width: 1280, height: 720, fps: 30, ..TestCamSettings::default() };
    // gst-rtsp-server's own error for a taken port does not say so; a probe does.
    if let Err(e) = std::net::TcpListener::bind(settings.listen) {
        return cannot_listen(settings.listen, "test camera", &e);
    }
    let cam = match tokio::task::spawn_blocking(move || TestCam::start(settings)).await {
        Ok(Ok(cam)) => cam,
        Ok(Err(e)) => return fail(format!("test camera: {e}")),
        Err(e) => return fail(e.to_string()),
    };
    let door = match &detection {
        Ok((_, photo)) => {
            let listen: std::net::SocketAddr = DEMO_DOOR.parse().expect("literal address");
            if let Err(e) = std::net::TcpListener::bind(listen) {
                return cannot_listen(listen, "detection test camera", &e);
            }
            let image =
                Image { path: photo.clone(), schedule: Some((Duration::from_secs(10), Duration::from_secs(10))) };
            let settings = TestCamSettings { listen, image: Some(image), ..TestCamSettings::default() };
            match tokio::task::spawn_blocking(move || TestCam::start(settings)).await {
                Ok(Ok(cam)) => Some(cam),
                Ok(Err(e)) => return fail(format!("detection test camera: {e}")),
                Err(e) => return fail(e.to_string()),
            }
        }
        Err(_) => None,
    };
    let token = async {
        let (db, auth) = crate::service::open_storage(&config).await?;
        let token = auth.issue("demo", Role::Admin, Duration::from_secs(24 * 3600))?;
        db.close().await;
        anyhow::Ok(token)
    };
    let token = match token.await {
        Ok(t) => t,
        Err(e) => return fail(format!("{e:#}")),
    };
    let listen = config.server.listen;
    println!();
    println!("camhub demo: 2 test cameras at rtsp://127.0.0.1:{}/cam0 and cam1", cam.port());
    println!("  WebSocket JSON-RPC : ws://{listen}/ws");
    println!("  admin token (24 h) : {token}");
    println!(
        "  recordings         : cam0 records continuously into {}/recordings (1 min segments)",
        config.storage.root.display()
    );
    // The binary as the user started it (`./target/release/camhub` under `make run`), so the lines paste as they are.
    let exe = std::env::args().next().unwrap_or_else(|| "camhub".into());
    println!("  try                : export CAMHUB_TOKEN=<the token above>");
    println!("                       {exe} call --url ws://{listen}/ws get_camera_list");
    println!("                       {exe} call --url ws://{listen}/ws take_snapshot device=cam1");
    println!("                       {exe} call --url ws://{listen}/ws list_recordings");
    println!("                       {exe} events --url ws://{listen}/ws camera.status_change   # until Ctrl-C");
    match &detection {
        Ok(_) => {
            println!("  detection          : door shows a person 10 s in 20; each one is an event and a recording");
            println!("                       {exe} events --url ws://{listen}/ws detection   # until Ctrl-C");
            println!("                       {exe} call --url ws://{listen}/ws list_events");
        }
        Err(why) => println!("  detection          : off: {why}"),
    }
    if config.rtmp.enabled {
        println!(
            "  push a camera      : {exe} call --url ws://{listen}/ws create_stream_key name=mine   # key shown once"
        );
        println!(
            "                       ffmpeg -re -i clip.mp4 -c copy -f flv rtmp://{}/live/<stream key>",
            config.rtmp.listen
        );
    }
    println!("  health             : curl http://{listen}/health/cameras");
    println!();
    drop(rtsp_probe);
    let result = crate::service::run_with_listener(config, log_reloading(), listener, shutdown_signal()).await;
    drop(door);
    drop(cam);
    finish(result)
}

/// `check-config`'s second half: asks the camhub running at `url` what a reload to this file would change, and prints
/// it. No camhub there is not an error (the file is valid); a refusal is.
async fn compare_with_running(
    path: &std::path::Path,
    config: &Config,
    url: Option<String>,
    token: Option<Secret>,
) -> ExitCode {
    let url = url.unwrap_or_else(|| default_url(config.server.listen));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return fail(format!("reading {}: {e}", path.display())),
    };
    let Ok(mut client) = Client::connect(&url).await else {
        println!("no camhub answers at {url}: nothing to compare with");
        return ExitCode::SUCCESS;
    };
    let token = match token {
        Some(Secret(t)) => t,
        None => {
            let minted = async {
                let (db, auth) = crate::service::open_storage(config).await?;
                let token = auth.issue("check-config", Role::Admin, Duration::from_secs(60))?;
                db.close().await;
                anyhow::Ok(token)
            };
            match minted.await {
                Ok(t) => t,
                Err(e) => return fail(format!("cannot make an admin token from the data dir (give --token): {e:#}")),
            }
        }
    };
    if let Err(e) = client.authenticate(&token).await {
        return client_failure(e);
    }
    let r = match client.call("reload_config", json!({ "dry_run": true, "config_toml": text })).await {
        Ok(r) => r,
        Err(e) => return client_failure(e),
    };
    print!("{}", describe_reload(&url, &r));
    ExitCode::SUCCESS
}

/// A reload report as lines a person reads.
fn describe_reload(url: &str, r: &Value) -> String {
    let list = |key: &str| -> Vec<String> {
        r[key].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    };
    if r["changed"] != json!(true) {
        return format!("the camhub at {url} runs this config already: a reload would change nothing\n");
    }
    let mut out = format!("a reload of the camhub at {url} would:\n");
    let restarted = list("cameras_restarted");
    for (key, what) in [("cameras_added", "add camera"), ("cameras_removed", "remove camera")] {
        for id in list(key) {
            out.push_str(&format!("  {what} {id}\n"));
        }
    }
    for id in list("cameras_changed") {
        let how = if restarted.contains(&id) { "restart it" } else { "running on" };
        out.push_str(&format!("  change camera {id} ({how})\n"));
    }
    for key in list("applied_live") {
        out.push_str(&format!("  apply {key} at once\n"));
    }
    for key in list("restart_required") {
        out.push_str(&format!("  NOT apply {key}: needs a restart\n"));
    }
    out
}

/// One line for a port that cannot be had, naming the port and what it is for; exit 1.
fn cannot_listen(addr: std::net::SocketAddr, what: &str, e: &std::io::Error) -> ExitCode {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        eprintln!("camhub: port {} ({what}) is taken: {e}", addr.port());
    } else {
        eprintln!("camhub: cannot listen on {addr} ({what}): {e}");
    }
    ExitCode::FAILURE
}

/// `camhub call`: one method, its result as pretty JSON on stdout.
async fn call(args: ClientArgs, method: &str, params: &[String]) -> ExitCode {
    let params = match crate::client::parse_params(params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("camhub: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // `ping` is public, and a stale token must not stop someone from checking that the service is up.
    let token = if method == "ping" { None } else { args.token.clone() };
    let mut client = match connect(&args, token.as_ref()).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.call(method, params).await {
        Ok(result) => {
            println!("{}", pretty(&result));
            ExitCode::SUCCESS
        }
        Err(e) => client_failure(e),
    }
}

/// `camhub events`: notifications as JSON lines until a signal or `--count`.
async fn events(args: ClientArgs, count: Option<u64>, topics: Vec<String>) -> ExitCode {
    if args.token.is_none() {
        eprintln!(
            "camhub: events needs a token (--token or CAMHUB_TOKEN): only authenticated clients get notifications"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let mut client = match connect(&args, args.token.as_ref()).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !topics.is_empty()
        && let Err(e) = client.call("subscribe_events", json!({ "topics": topics })).await
    {
        return client_failure(e);
    }
    // Every authenticated client gets the status updates; with topics named, only their events are what was asked for.
    let wanted = |method: &str| {
        if topics.is_empty() {
            method == "camera_status_update" || method == "recording_status_update"
        } else {
            method == "event"
        }
    };
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        tokio::select! {
            () = &mut stop => break,
            next = client.next_notification() => match next {
                Ok(notification) => {
                    if wanted(notification["method"].as_str().unwrap_or_default()) {
                        // One line each (stdout is line-buffered), so a script sees it as soon as it arrives.
                        println!("{notification}");
                        printed += 1;
                    }
                }
                Err(e) => return client_failure(e),
            },
        }
    }
    ExitCode::SUCCESS
}

/// Connects to the URL given, or to the config's listener, and authenticates with `token` if there is one.
async fn connect(args: &ClientArgs, token: Option<&Secret>) -> Result<Client, ExitCode> {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => default_url(load(args.config.as_deref())?.server.listen),
    };
    let mut client = Client::connect(&url).await.map_err(client_failure)?;
    if let Some(Secret(token)) = token {
        client.authenticate(token).await.map_err(client_failure)?;
    }
    Ok(client)
}

/// `ws://LISTEN/ws`, with a wildcard listen address (all interfaces) reached over loopback.
fn default_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("ws://{}/ws", SocketAddr::new(ip, listen.port()))
}

/// The server's error object on stderr (exit 1), or one line for a connection that failed (exit 2).
fn client_failure(e: ClientError) -> ExitCode {
    match e {
        ClientError::Rpc(error) => {
            eprintln!("{}", pretty(&error));
            ExitCode::from(EXIT_RPC_ERROR)
        }
        ClientError::Connection(why) => {
            eprintln!("camhub: {why}");
            ExitCode::from(EXIT_CONNECTION)
        }
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// `camhub check`: prints every mismatch between recordings on disk and the index; exit 1 if any remain.
async fn check(config: Config, repair: bool) -> ExitCode {
    // Repairs change the index: not under a running service.
    let _lock = if repair {
        match lock_data_dir(&config) {
            Ok(lock) => Some(lock),
            Err(code) => return code,
        }
    } else {
        None
    };
    let result = async {
        crate::media::init()?;
        let (db, _auth) = crate::service::open_storage(&config).await?;
        let files = crate::storage::files::Files::new(&config.storage.root);
        files.create_dirs()?;
        let roots = open_roots(&db, &config, "checked").await?;
        let report = crate::recording::recovery::reconcile(&db, &roots.present(), repair).await?;
        db.close().await;
        anyhow::Ok(report)
    };
    match result.await {
        Ok(r) => {
            for name in &r.unindexed {
                println!("unindexed file: {name}{}", if repair { " (recovered and indexed)" } else { "" });
            }
            for name in &r.missing {
                println!("index row without file: {name}{}", if repair { " (row removed)" } else { "" });
            }
            for name in &r.size_mismatch {
                println!("size differs from index: {name}");
            }
            for name in &r.unrecoverable {
                println!("unrecoverable (left in place): {name}");
            }
            if r.interrupted_sessions > 0 {
                println!("sessions marked interrupted: {}", r.interrupted_sessions);
            }
            let clean = r.is_clean() || (repair && r.unrecoverable.is_empty() && r.size_mismatch.is_empty());
            println!("{}", if clean { "ok" } else { "mismatches found" });
            if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => fail(format!("{e:#}")),
    }
}

/// The storage roots for `check` and `check --rebuild`, each root that is not usable named with what is `left` undone.
async fn open_roots(
    db: &crate::storage::Db,
    config: &Config,
    left: &str,
) -> crate::error::Result<crate::storage::roots::Roots> {
    let roots = crate::storage::roots::Roots::open(db.clone(), &config.storage).await?;
    for root in roots.statuses().iter().filter(|r| r.state != crate::storage::roots::RootState::Ok) {
        let (path, state) = (root.path.display(), root.state.as_str());
        println!("storage root {path} not {left}: {state} ({})", root.detail.as_deref().unwrap_or(""));
    }
    Ok(roots)
}

/// Takes the data dir's lock for a command that must not run beside the service; exit 75 if a camhub holds it.
fn lock_data_dir(config: &Config) -> Result<crate::storage::lock::DataDirLock, ExitCode> {
    use crate::storage::lock::{DataDirLock, LockError};
    let root = &config.storage.root;
    if let Err(e) = std::fs::create_dir_all(root) {
        return Err(fail(format!("creating data dir {}: {e}", root.display())));
    }
    DataDirLock::acquire(root).map_err(|e| match e {
        LockError::Held { .. } => {
            eprintln!("camhub: {e}; stop it first");
            ExitCode::from(EXIT_RUNNING)
        }
        LockError::Io { .. } => fail(e.to_string()),
    })
}

/// `camhub check --rebuild`: the recordings index rebuilt from the files; exit 1 if a file could not be indexed.
async fn rebuild_index(config: Config) -> ExitCode {
    let _lock = match lock_data_dir(&config) {
        Ok(lock) => lock,
        Err(code) => return code,
    };
    let started = std::time::Instant::now();
    let result = async {
        crate::media::init()?;
        let (db, _auth) = crate::service::open_storage(&config).await?;
        let files = crate::storage::files::Files::new(&config.storage.root);
        files.create_dirs()?;
        // A database lost and started afresh takes the id the disks carry: they are its own, not foreign.
        crate::storage::roots::Roots::adopt(&db, &config.storage).await?;
        let roots = open_roots(&db, &config, "rebuilt").await?;
        let report = crate::recording::recovery::rebuild(&db, &roots.present()).await;
        db.close().await;
        anyhow::Ok(report?)
    };
    match result.await {
        Ok(r) => {
            for name in &r.indexed {
                println!("indexed: {name}");
            }
            for name in &r.remeasured {
                println!("measured again (size changed): {name}");
            }
            for name in &r.removed {
                println!("row removed (no file): {name}");
            }
            for name in &r.unrecoverable {
                println!("unrecoverable (left in place, not indexed): {name}");
            }
            for path in &r.skipped {
                println!("skipped (not a segment name, or a second copy): {path}");
            }
            if r.interrupted_sessions > 0 {
                println!("sessions marked interrupted: {}", r.interrupted_sessions);
            }
            println!(
                "rebuilt from {} files in {:.1} s: {} kept, {} indexed, {} measured again, {} rows removed, {} unrecoverable",
                r.files,
                started.elapsed().as_secs_f64(),
                r.kept,
                r.indexed.len(),
                r.remeasured.len(),
                r.removed.len(),
                r.unrecoverable.len()
            );
            if r.unrecoverable.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => fail(format!("{e:#}")),
    }
}

/// A refused backup or restore: one line, and the exit code of its kind.
fn backup_failure(e: crate::backup::BackupError) -> ExitCode {
    use crate::backup::BackupError;
    eprintln!("camhub: {e}");
    ExitCode::from(match e {
        BackupError::Exists(_) => EXIT_CANT_CREATE,
        BackupError::Target(_) => EXIT_USAGE,
        BackupError::Running(_) => EXIT_RUNNING,
        BackupError::Invalid { .. } => EXIT_DATA,
        BackupError::Failed(_) => 1,
    })
}

/// `camhub backup`: prints what it copied.
async fn backup(config: &Config, path: Option<&std::path::Path>, to: &std::path::Path, overwrite: bool) -> ExitCode {
    let plan = crate::backup::BackupPlan { data_dir: &config.storage.root, config: path, to, overwrite };
    match crate::backup::backup(plan).await {
        Ok(m) => {
            println!("backup of {} written to {}", config.storage.root.display(), to.display());
            for f in &m.files {
                println!("  {:<12} {:>10} bytes  mode {}  sha256 {}", f.name, f.size, f.mode, f.sha256);
            }
            println!(
                "  database schema {}, {} recordings indexed ({:.1} s), camhub {}, {}",
                m.schema_version,
                m.segments,
                m.segments_duration_ms as f64 / 1000.0,
                m.camhub_version,
                m.created_at
            );
            ExitCode::SUCCESS
        }
        Err(e) => backup_failure(e),
    }
}

/// `camhub restore`: the backup checked, then put back; prints what it did.
async fn restore(path: Option<&std::path::Path>, from: &std::path::Path) -> ExitCode {
    let manifest = match crate::backup::verify(from) {
        Ok(m) => m,
        Err(e) => return backup_failure(e),
    };
    // On a new machine the config may be what is missing: the backup's is put where it was asked for.
    if let Some(path) = path {
        match crate::backup::restore_missing_config(from, &manifest, path) {
            Ok(true) => println!("config restored to {}", path.display()),
            Ok(false) => {}
            Err(e) => return backup_failure(e),
        }
    }
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::backup::restore(from, &manifest, &config.storage.root, path).await {
        Ok(done) => {
            for line in done {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => backup_failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_at_a_terminal_without_no_color() {
        assert!(wants_colour(true, None));
        assert!(wants_colour(true, Some("".into())), "an empty NO_COLOR does not count");
        assert!(!wants_colour(true, Some("1".into())));
        assert!(!wants_colour(true, Some("false".into())), "any non-empty value disables colour");
        assert!(!wants_colour(false, None));
    }

    #[test]
    fn the_default_url_reaches_a_wildcard_listener_over_loopback() {
        let url = |addr: &str| default_url(addr.parse().expect("literal address"));
        assert_eq!(url("127.0.0.1:8002"), "ws://127.0.0.1:8002/ws");
        assert_eq!(url("0.0.0.0:9000"), "ws://127.0.0.1:9000/ws");
        assert_eq!(url("[::]:8002"), "ws://[::1]:8002/ws");
        assert_eq!(url("192.0.2.7:8002"), "ws://192.0.2.7:8002/ws");
    }

    #[test]
    fn a_token_does_not_show_in_debug_output() {
        let cli = Cli::try_parse_from(["camhub", "call", "--token", "s3cret-token", "ping"]).expect("parses");
        assert!(!format!("{cli:?}").contains("s3cret-token"));
    }
}
