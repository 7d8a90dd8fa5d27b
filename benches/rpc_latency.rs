//! RPC latency benchmark: `get_camera_status` round trips over real WebSockets against a real camhub with one real
//! test camera, for C concurrent authenticated clients (1, 100 and 1000 by default).
//!
//! Each client runs a closed loop (one request in flight, the next sent only after the response) paced at a fixed
//! rate per client, below camhub's default rate limit (200 req/s sustained, burst 400, per connection). A client that
//! falls behind its pace does not burst to catch up. Every request's latency, from sending the frame to reading its
//! response, is recorded; the report gives p50, p90, p99, max and the achieved throughput per C, plus camhub's and
//! this process's CPU over the same window (both share the machine).
//!
//! Run with `cargo bench --bench rpc_latency` or `scripts/bench/rpc-latency.sh`. Writes evidence/rpc_latency.json
//! and evidence/rpc_latency.md; camhub's log goes to evidence/tmp/rpc_latency/. Settings, from the environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `RPC_CLIENTS` | `1,100,1000` | concurrent client counts, one phase each |
//! | `RPC_SECONDS` | `10` | length of each phase |
//! | `RPC_REQUESTS` | unset | if set, each client sends this many requests instead of running for `RPC_SECONDS` |
//! | `RPC_RATE` | `20` | requests per second per client; `0` means no pacing (then the rate limit answers) |
//! | `RPC_CONNECT_PARALLEL` | `64` | how many clients connect and authenticate at once |
//! | `RPC_RECORDING_CAMERAS` | `0` | also record this many 720p30 2000 kbit/s test cameras (a second testcam) the whole time; the results then go to `rpc_latency-recordingN.{json,md}` |
//! | `CAMHUB_BIN` | the bench build's `camhub` (`target/release/camhub`) | the binary to benchmark |
//! | `EVIDENCE_DIR` | `evidence` | where the results go |
//!
//! Under `cargo test --benches` (no `--bench` argument) it does nothing, so test runs never start a benchmark.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long one request may take before the client gives up on its connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const DEVICE: &str = "cam0";

#[derive(Debug, Clone)]
struct Settings {
    clients: Vec<usize>,
    seconds: f64,
    requests: Option<u64>,
    rate: f64,
    connect_parallel: usize,
    recording_cameras: usize,
    bin: PathBuf,
    evidence: PathBuf,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
            match std::env::var(name) {
                Ok(v) => v.trim().parse().map_err(|_| format!("{name}={v:?} is not a valid value")),
                Err(_) => Ok(default),
            }
        }
        let clients = std::env::var("RPC_CLIENTS").unwrap_or_else(|_| "1,100,1000".into());
        let clients: Vec<usize> = clients
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok().filter(|&c| c > 0).ok_or_else(|| format!("RPC_CLIENTS: bad count {s:?}")))
            .collect::<Result<_, _>>()?;
        if clients.is_empty() {
            return Err("RPC_CLIENTS names no client count".into());
        }
        let requests = match std::env::var("RPC_REQUESTS") {
            Ok(v) => Some(v.trim().parse().map_err(|_| format!("RPC_REQUESTS={v:?} is not a count"))?),
            Err(_) => None,
        };
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let bin =
            std::env::var_os("CAMHUB_BIN").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_camhub").into());
        let evidence = std::env::var_os("EVIDENCE_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("evidence"));
        let settings = Settings {
            clients,
            seconds: var("RPC_SECONDS", 10.0)?,
            requests,
            rate: var("RPC_RATE", 20.0)?,
            connect_parallel: var("RPC_CONNECT_PARALLEL", 64usize)?.max(1),
            recording_cameras: var("RPC_RECORDING_CAMERAS", 0usize)?,
            bin,
            evidence,
        };
        if settings.rate > 200.0 {
            eprintln!("rpc_latency: RPC_RATE {} exceeds camhub's default 200 req/s per connection", settings.rate);
        }
        Ok(settings)
    }
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("rpc_latency: skipped (not run by `cargo bench`)");
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rpc_latency: {e}");
            return ExitCode::from(64);
        }
    };
    raise_fd_limit();
    match run(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpc_latency: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: &Settings) -> Result<(), BoxError> {
    let work = settings.evidence.join("tmp").join("rpc_latency");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("data"))?;
    eprintln!("rpc_latency: camhub binary {}", settings.bin.display());

    let small = ["--width", "320", "--height", "240", "--fps", "15", "--bitrate", "300", "--loop-seconds", "2"];
    let cam = start_testcam(&settings.bin, &work, "testcam", 1, &small)?;
    // The cameras recorded meanwhile: the recording benchmark's source (scripts/bench/recording.sh).
    let recorded = match settings.recording_cameras {
        0 => None,
        n => Some(start_testcam(
            &settings.bin,
            &work,
            "testcam-recorded",
            n,
            &["--loop-seconds", "4", "--pattern", "snow"],
        )?),
    };
    let recording = recorded.as_ref().map(|c| (c.port, settings.recording_cameras));
    let hub = start_camhub(&settings.bin, &work, cam.port, recording)?;
    let token = issue_token(&settings.bin, &hub.config)?;
    eprintln!("rpc_latency: camhub pid {} on port {}, camera {DEVICE} connected", hub.proc.pid(), hub.port);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut phases = Vec::new();
    for &c in &settings.clients {
        let phase = runtime.block_on(phase(settings, &hub, &token, c))?;
        eprintln!(
            "rpc_latency: C={c}: {} requests, {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {} errors",
            phase["requests"],
            phase["throughput_rps"].as_f64().unwrap_or(0.0),
            phase["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
            phase["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
            phase["latency_ms"]["max"].as_f64().unwrap_or(0.0),
            phase["errors"],
        );
        phases.push(phase);
    }
    drop(runtime);
    let rss_mib = rss_kib(hub.proc.pid()).map(|k| k as f64 / 1024.0);
    drop(hub);
    drop(cam);
    drop(recorded);
    write_report(settings, phases, rss_mib)
}

// ---- child processes ----

/// A child process, stopped (SIGTERM, then SIGKILL after 15 s) when dropped, also on error or panic.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet and so cannot have been reused.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("rpc_latency: {} ignored SIGTERM for 15 s; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command for the camhub binary. camhub takes `CAMHUB_SECTION__KEY` variables as config overrides (the caller's
/// pass through); ours stay out.
fn camhub(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_remove("CAMHUB_BIN").env_remove("CAMHUB_CONFIG").env("NO_COLOR", "1");
    cmd
}

struct TestCam {
    port: u16,
    // Dropped last: stops the process.
    _proc: Proc,
}

/// `cameras` looping test cameras (`args`: their picture) on a port the test camera picks itself; its log is
/// `NAME.log`.
fn start_testcam(bin: &Path, work: &Path, name: &str, cameras: usize, args: &[&str]) -> Result<TestCam, BoxError> {
    let child = camhub(bin)
        .args(["testcam", "--listen", "127.0.0.1:0", "--cameras", &cameras.to_string()])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(work.join(format!("{name}.log")))?)
        .spawn()?;
    let mut proc = Proc { name: "testcam", child };
    let stdout = proc.child.stdout.take().ok_or("testcam has no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    // "testcam: serving rtsp://127.0.0.1:PORT/cam0 .. cam0"
    let port = line
        .split("rtsp://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| {
            format!("testcam did not start: {line:?}; see {}", work.join(format!("{name}.log")).display())
        })?;
    Ok(TestCam { port, _proc: proc })
}

struct Hub {
    port: u16,
    config: PathBuf,
    log: PathBuf,
    proc: Proc,
}

/// camhub with the measured camera and, with `recording` (a testcam's port and how many of its cameras), those
/// cameras recorded from start-up as the recording benchmark records them (fMP4, 10 s segments).
fn start_camhub(bin: &Path, work: &Path, cam_port: u16, recording: Option<(u16, usize)>) -> Result<Hub, BoxError> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = work.join("camhub.toml");
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_ms = 5000\n\
         [auth]\njwt_secret = \"rpc-latency-bench-secret-0123456789\"\n\
         [storage]\nroot = \"{}\"\n\
         [recording]\nformat = \"fmp4\"\nsegment_seconds = 10\n\
         [[cameras]]\nid = \"{DEVICE}\"\nurl = \"rtsp://127.0.0.1:{cam_port}/cam0\"\n",
        work.join("data").display()
    );
    let (rec_port, recorded) = recording.unwrap_or((0, 0));
    for k in 0..recorded {
        toml.push_str(&format!(
            "\n[[cameras]]\nid = \"rec{k}\"\nurl = \"rtsp://127.0.0.1:{rec_port}/cam{k}\"\nrecord = \"always\"\n"
        ));
    }
    std::fs::write(&config, toml)?;
    let log = work.join("camhub.log");
    let child = camhub(bin)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut hub = Hub { port, config, log, proc: Proc { name: "camhub", child } };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = hub.proc.exited() {
            return Err(format!("camhub exited with {status}; log:\n{}", hub.log_tail()).into());
        }
        let connected = http_get(port, "/health/cameras")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v["connected"].as_u64());
        if connected == Some(1 + recorded as u64) {
            return Ok(hub);
        }
        if Instant::now() > deadline {
            return Err(format!("camhub did not connect its cameras in 60 s; log:\n{}", hub.log_tail()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Hub {
    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// WebSocket connections camhub counts as open.
    fn connections(&self) -> Option<u64> {
        let (_, body) = http_get(self.port, "/health/system")?;
        serde_json::from_str::<Value>(&body).ok()?["connections"].as_u64()
    }
}

/// A viewer token from `camhub token`, as a client would get one.
fn issue_token(bin: &Path, config: &Path) -> Result<String, BoxError> {
    let out = camhub(bin)
        .args(["token", "--role", "viewer", "--ttl", "86400", "--user", "rpc-latency", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()?;
    if !out.status.success() {
        return Err(format!("camhub token failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Minimal HTTP/1.1 GET: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

// ---- /proc ----

/// utime+stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// 1000 clients need 1000 sockets here and in camhub (which inherits the limit): soft limit up to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// ---- the clients ----

#[derive(Deserialize)]
struct Response {
    id: Option<u64>,
    error: Option<RpcError>,
    result: Option<StatusResult>,
}

#[derive(Deserialize)]
struct RpcError {
    code: i64,
}

#[derive(Deserialize)]
struct StatusResult {
    device: String,
}

/// What one client saw.
#[derive(Default)]
struct ClientStats {
    /// Round trips of successful requests, microseconds.
    latencies_us: Vec<u32>,
    /// Error responses by JSON-RPC code (-1 for a result that was not the camera asked for).
    errors: BTreeMap<i64, u64>,
    timeouts: u64,
    /// Frames that were not our responses (notifications).
    other_frames: u64,
    /// Why the client stopped early, if it did.
    failure: Option<String>,
    last_response: Option<Instant>,
}

/// Connects and authenticates one client.
async fn connect(url: String, token: Arc<str>) -> Result<Ws, String> {
    // A 4-KiB read buffer: tungstenite zeroes the whole buffer (128 KiB by default) before every read, which made a
    // thousand clients burn the CPU they share with camhub here in memset (evidence/crowd.md).
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let auth = json!({ "jsonrpc": "2.0", "id": 0, "method": "authenticate", "params": { "auth_token": &*token } });
    ws.send(Message::Text(auth.to_string().into())).await.map_err(|e| format!("send: {e}"))?;
    loop {
        let frame = tokio::time::timeout(REQUEST_TIMEOUT, ws.next()).await.map_err(|_| "authenticate timed out")?;
        let Some(Ok(Message::Text(text))) = frame else {
            if let Some(Ok(_)) = frame {
                continue;
            }
            return Err(format!("socket closed while authenticating: {frame:?}"));
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("bad JSON: {e}"))?;
        if v["id"] == 0 {
            return match v["result"]["authenticated"].as_bool() {
                Some(true) => Ok(ws),
                _ => Err(format!("authenticate failed: {v}")),
            };
        }
    }
}

/// The closed loop of one client: first request at `first`, then one per `period` (never bursting to catch up),
/// until `end` or `count` requests.
async fn client_loop(
    mut ws: Ws,
    first: tokio::time::Instant,
    period: Duration,
    end: Instant,
    count: Option<u64>,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut next = first;
    let mut id: u64 = 0;
    loop {
        match count {
            Some(n) if id >= n => break,
            None if Instant::now() >= end => break,
            _ => {}
        }
        tokio::time::sleep_until(next).await;
        if count.is_none() && Instant::now() >= end {
            break;
        }
        id += 1;
        let request =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"get_camera_status","params":{{"device":"{DEVICE}"}}}}"#);
        let sent = Instant::now();
        if let Err(e) = ws.send(Message::Text(request.into())).await {
            stats.failure = Some(format!("send: {e}"));
            break;
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, read_response(&mut ws, id, &mut stats)).await {
            Err(_) => {
                stats.timeouts += 1;
                stats.failure = Some(format!("no response in {} s", REQUEST_TIMEOUT.as_secs()));
                break;
            }
            Ok(Err(e)) => {
                stats.failure = Some(e);
                break;
            }
            Ok(Ok(outcome)) => {
                let now = Instant::now();
                stats.last_response = Some(now);
                match outcome {
                    Ok(()) => {
                        stats.latencies_us.push(now.duration_since(sent).as_micros().min(u32::MAX as u128) as u32)
                    }
                    Err(code) => *stats.errors.entry(code).or_default() += 1,
                }
            }
        }
        next += period;
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
    }
    let _ = ws.close(None).await;
    stats
}

/// Reads frames until the response to `id`: Ok(Ok) for the camera's status, Ok(Err(code)) for an error response.
async fn read_response(ws: &mut Ws, id: u64, stats: &mut ClientStats) -> Result<Result<(), i64>, String> {
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => return Err(format!("server closed the socket: {frame:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("socket closed".into()),
        };
        let r: Response = serde_json::from_str(&text).map_err(|e| format!("bad JSON {text}: {e}"))?;
        if r.id != Some(id) {
            stats.other_frames += 1;
            continue;
        }
        return Ok(match (r.result, r.error) {
            (Some(s), None) if s.device == DEVICE => Ok(()),
            (_, Some(e)) => Err(e.code),
            _ => Err(-1),
        });
    }
}

/// One phase: `clients` clients connect, run their loops together, disconnect.
async fn phase(settings: &Settings, hub: &Hub, token: &str, clients: usize) -> Result<Value, BoxError> {
    let token: Arc<str> = token.into();
    let setup_started = Instant::now();
    let results: Vec<Result<Ws, String>> = futures::stream::iter(0..clients)
        .map(|_| connect(hub.ws_url(), token.clone()))
        .buffer_unordered(settings.connect_parallel)
        .collect()
        .await;
    let mut sockets = Vec::with_capacity(clients);
    let mut failures = BTreeMap::<String, usize>::new();
    for r in results {
        match r {
            Ok(ws) => sockets.push(ws),
            Err(e) => *failures.entry(e).or_default() += 1,
        }
    }
    if !failures.is_empty() {
        return Err(format!("C={clients}: {} clients could not connect: {failures:?}", clients - sockets.len()).into());
    }
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    let period = if settings.rate > 0.0 { Duration::from_secs_f64(1.0 / settings.rate) } else { Duration::ZERO };
    // Clients start spread over one period, as independent clients would, not all in the same millisecond.
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let end = start.into_std() + Duration::from_secs_f64(settings.seconds);
    let cpu_hub0 = cpu_seconds(hub.proc.pid());
    let cpu_self0 = cpu_seconds(std::process::id());
    let wall0 = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let first = start + period.mul_f64(i as f64 / clients as f64);
            tokio::spawn(client_loop(ws, first, period, end, settings.requests))
        })
        .collect();
    let mut all = Vec::with_capacity(tasks.len());
    for t in tasks {
        all.push(t.await?);
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu_hub = cpu_hub0.zip(cpu_seconds(hub.proc.pid())).map(|(a, b)| 100.0 * (b - a) / wall);
    let cpu_self = cpu_self0.zip(cpu_seconds(std::process::id())).map(|(a, b)| 100.0 * (b - a) / wall);

    let mut latencies: Vec<u32> = all.iter().flat_map(|s| s.latencies_us.iter().copied()).collect();
    latencies.sort_unstable();
    let mut errors = BTreeMap::<i64, u64>::new();
    for s in &all {
        for (code, n) in &s.errors {
            *errors.entry(*code).or_default() += n;
        }
    }
    let error_count: u64 = errors.values().sum();
    let timeouts: u64 = all.iter().map(|s| s.timeouts).sum();
    let other_frames: u64 = all.iter().map(|s| s.other_frames).sum();
    let mut client_failures = BTreeMap::<String, usize>::new();
    for f in all.iter().filter_map(|s| s.failure.clone()) {
        *client_failures.entry(f).or_default() += 1;
    }
    let start_std = start.into_std();
    let last = all.iter().filter_map(|s| s.last_response).max().unwrap_or(start_std);
    // A timed phase lasts its full length (or longer, if responses came late); a counted one until the last answer.
    let mut measured = last.saturating_duration_since(start_std).as_secs_f64();
    if settings.requests.is_none() {
        measured = measured.max(settings.seconds);
    }
    let measured = measured.max(1e-9);
    let answered = latencies.len() as u64 + error_count;

    // Sockets closed: camhub should count them gone soon.
    let closed = Instant::now();
    let mut drained_seconds = None;
    while closed.elapsed() < Duration::from_secs(30) {
        if hub.connections() == Some(0) {
            drained_seconds = Some(closed.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if drained_seconds.is_none() {
        eprintln!(
            "rpc_latency: C={clients}: camhub still counts {:?} connections 30 s after all closed",
            hub.connections()
        );
    }

    let ms = |us: u32| us as f64 / 1000.0;
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        ms(latencies[rank.clamp(1, latencies.len()) - 1])
    };
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|&l| l as f64).sum::<f64>() / latencies.len() as f64 / 1000.0
    };
    Ok(json!({
        "clients": clients,
        "requests": latencies.len(),
        "errors": error_count,
        "errors_by_code": errors.iter().map(|(c, n)| (c.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "timeouts": timeouts,
        "client_failures": client_failures,
        "other_frames": other_frames,
        "seconds": round(measured, 3),
        "offered_rps": if settings.rate > 0.0 { json!(round(settings.rate * clients as f64, 1)) } else { Value::Null },
        "throughput_rps": round(answered as f64 / measured, 1),
        "latency_ms": {
            "p50": round(pct(50.0), 3),
            "p90": round(pct(90.0), 3),
            "p99": round(pct(99.0), 3),
            "max": round(latencies.last().map_or(0.0, |&l| ms(l)), 3),
            "min": round(latencies.first().map_or(0.0, |&l| ms(l)), 3),
            "mean": round(mean, 3),
        },
        "connect_and_auth_seconds": round(setup_seconds, 3),
        "camhub_cpu_percent": cpu_hub.map(|c| round(c, 1)),
        "bench_cpu_percent": cpu_self.map(|c| round(c, 1)),
        "camhub_rss_mib": rss_kib(hub.proc.pid()).map(|k| round(k as f64 / 1024.0, 1)),
        "connections_drained_seconds": drained_seconds.map(|s| round(s, 2)),
    }))
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

// ---- the report ----

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn write_report(settings: &Settings, phases: Vec<Value>, rss_mib: Option<f64>) -> Result<(), BoxError> {
    let root = env!("CARGO_MANIFEST_DIR");
    let date = command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default();
    let mut commit =
        command_output("git", &["-C", root, "rev-parse", "--short=12", "HEAD"]).unwrap_or("unknown".into());
    if Command::new("git").args(["-C", root, "diff", "--quiet", "HEAD"]).status().is_ok_and(|s| !s.success()) {
        commit.push_str(" (dirty)");
    }
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let version = command_output(&settings.bin.to_string_lossy(), &["--version"]).unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load1 = load.split_whitespace().next().unwrap_or("?").to_owned();
    let mode = match settings.requests {
        Some(n) => format!("{n} requests per client"),
        None => format!("{} s per phase", settings.seconds),
    };
    let short = settings.requests.is_some()
        || settings.seconds < 10.0
        || (settings.clients != [1, 100, 1000] && settings.recording_cameras == 0);
    let pacing = if settings.rate > 0.0 { format!("{} req/s per client", settings.rate) } else { "unpaced".into() };
    let report = json!({
        "benchmark": "rpc_latency",
        "date": date,
        "git_commit": commit,
        "camhub_version": version,
        "nproc": nproc,
        "loadavg_at_end": load.trim(),
        "method": format!(
            "get_camera_status {{device: {DEVICE}}} over ws://127.0.0.1, closed loop per client, {pacing}, {mode}; \
             latency = send to response; camhub defaults (max_connections 2000, rate limit 200/s burst 400)"
        ),
        "camera": "one camhub testcam, 320x240 H.264 15 fps, loop mode",
        "recording_cameras": settings.recording_cameras,
        "per_client_rate": settings.rate,
        "seconds_per_phase": settings.requests.map_or(json!(settings.seconds), |_| Value::Null),
        "requests_per_client": settings.requests,
        "camhub_rss_mib_at_end": rss_mib.map(|m| round(m, 1)),
        "short_run": short,
        "phases": phases,
    });
    std::fs::create_dir_all(&settings.evidence)?;
    let name = match settings.recording_cameras {
        0 => "rpc_latency".to_owned(),
        n => format!("rpc_latency-recording{n}"),
    };
    std::fs::write(settings.evidence.join(format!("{name}.json")), serde_json::to_string_pretty(&report)? + "\n")?;

    let f = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.3}"));
    let f1 = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.1}"));
    let recording = match settings.recording_cameras {
        0 => String::new(),
        n => format!(
            " Meanwhile camhub records {n} more cameras (1280x720 H.264 30 fps, 2000 kbit/s, from a second testcam) \
             from start-up, fMP4 in 10 s segments."
        ),
    };
    let mut md = format!(
        "# camhub RPC latency benchmark\n\n{date}, commit {commit}, {version}, nproc {nproc}, load average at end \
         {load1}.\n`get_camera_status` round trips over WebSocket on 127.0.0.1, one request in flight per client, \
         {pacing}, {mode}; camhub and the clients share the machine.{recording}\n\n\
         | C | requests | throughput req/s | p50 ms | p90 ms | p99 ms | max ms | errors | camhub CPU % | clients CPU % |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    if short {
        let note = "**Short run** (not the default C = 1, 100, 1000 for 10 s each): a check of the tooling, not \
                    figures to compare.\n\n";
        let at = md.find("| C |").unwrap_or(md.len());
        md.insert_str(at, note);
    }
    for p in &report["phases"].as_array().cloned().unwrap_or_default() {
        let l = &p["latency_ms"];
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            p["clients"],
            p["requests"],
            f1(&p["throughput_rps"]),
            f(&l["p50"]),
            f(&l["p90"]),
            f(&l["p99"]),
            f(&l["max"]),
            p["errors"].as_u64().unwrap_or(0) + p["timeouts"].as_u64().unwrap_or(0),
            f1(&p["camhub_cpu_percent"]),
            f1(&p["bench_cpu_percent"]),
        ));
    }
    md.push_str(
        "\nThroughput counts answered requests over the phase; with pacing it cannot exceed the offered rate \
         (clients x rate). CPU is utime+stime over the phase as % of one core.\n",
    );
    std::fs::write(settings.evidence.join(format!("{name}.md")), &md)?;
    println!("{md}");
    Ok(())
}
