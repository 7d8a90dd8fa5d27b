//! Test rig shared by the integration tests: the real test camera and real camhub as child processes, and a real
//! WebSocket JSON-RPC client. Nothing here imitates a component; every helper drives the real thing.
#![allow(dead_code)]

pub mod abuse;
pub mod peer;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

pub const SECRET: &str = "integration-test-secret-0123456789";
pub const BIN: &str = env!("CARGO_BIN_EXE_camhub");

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `camhub testcam` as a child process; killed on drop.
pub struct TestCam {
    pub port: u16,
    pub cameras: usize,
    child: Option<Child>,
}

impl TestCam {
    /// Small live cameras (320x240, 15 fps, 1 s GOP) so tests stay cheap.
    pub fn start(cameras: usize) -> TestCam {
        Self::start_on(free_port(), cameras)
    }

    pub fn start_on(port: u16, cameras: usize) -> TestCam {
        Self::start_with(port, cameras, &["--width", "320", "--height", "240", "--fps", "15", "--bitrate", "300"])
    }

    /// Small live cameras like `start`, with sound in `codec` (`aac`, `pcmu`, `pcma`): a tone with a burst at each
    /// second, while the picture shows a white square (see [`av_marks`]).
    pub fn start_with_audio(cameras: usize, codec: &str) -> TestCam {
        let args = ["--width", "320", "--height", "240", "--fps", "15", "--bitrate", "300", "--audio", codec];
        Self::start_with(free_port(), cameras, &args)
    }

    /// A test camera with explicit picture arguments (`--width`, `--pattern`, ...).
    pub fn start_with(port: u16, cameras: usize, args: &[&str]) -> TestCam {
        let child = Command::new(BIN)
            .args(["testcam", "--listen", &format!("127.0.0.1:{port}"), "--cameras", &cameras.to_string()])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn camhub testcam");
        assert!(wait_for_port(port, Duration::from_secs(20)), "test camera did not listen on port {port}");
        TestCam { port, cameras, child: Some(child) }
    }

    pub fn url(&self, index: usize) -> String {
        format!("rtsp://127.0.0.1:{}/cam{index}", self.port)
    }

    /// Kills the camera server at once (SIGKILL), as a crash or a pulled cable would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestCam {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A camhub service as a child process with its own data dir; stopped on drop.
pub struct Camhub {
    pub port: u16,
    /// camhub's own RTSP server (cameras republished at `rtsp://127.0.0.1:RTSP_PORT/<id>`): a free port per launch.
    pub rtsp_port: u16,
    /// Extra `[server]`, `[storage]` and `[rtsp_server]` keys, kept across restarts.
    server_keys: String,
    storage_keys: String,
    rtsp_keys: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    /// Extra environment of the process, kept across restarts.
    env: Vec<(String, String)>,
}

/// Extra keys, one per line, for a section of the config camhub is started with.
#[derive(Default)]
struct Keys<'a> {
    server: &'a str,
    storage: &'a str,
    rtsp: &'a str,
}

impl Camhub {
    /// Starts camhub with `extra` appended to a config that sets listen, storage and secret.
    pub fn start(extra: &str) -> Camhub {
        Self::start_with_server_keys("", extra)
    }

    /// Like `start`, with extra keys (one per line) for the `[server]` section.
    pub fn start_with_server_keys(server_keys: &str, extra: &str) -> Camhub {
        Self::launched(Self::unstarted(None, Keys { server: server_keys, ..Keys::default() }, &[]), extra)
    }

    /// Like `start`, with extra environment variables for the process.
    pub fn start_with_env(env: &[(&str, &str)], extra: &str) -> Camhub {
        Self::launched(Self::unstarted(None, Keys::default(), env), extra)
    }

    /// Starts with its data dir at `dir` (which the caller owns, e.g. a tmpfs mount) and extra `[storage]` keys.
    pub fn start_at(dir: &Path, storage_keys: &str, extra: &str) -> Camhub {
        Self::launched(Self::unstarted(Some(dir), Keys { storage: storage_keys, ..Keys::default() }, &[]), extra)
    }

    /// Like `start`, with extra keys (one per line) for the `[rtsp_server]` section.
    pub fn start_with_rtsp_keys(rtsp_keys: &str, extra: &str) -> Camhub {
        Self::launched(Self::unstarted(None, Keys { rtsp: rtsp_keys, ..Keys::default() }, &[]), extra)
    }

    /// A camhub not started yet, in `dir` or a temporary data dir of its own.
    fn unstarted(dir: Option<&Path>, keys: Keys, env: &[(&str, &str)]) -> Camhub {
        let tmp = match dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("temp dir")),
        };
        let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| tmp.as_ref().expect("temp dir").path().to_path_buf());
        Camhub {
            port: 0,
            rtsp_port: 0,
            server_keys: keys.server.to_owned(),
            storage_keys: keys.storage.to_owned(),
            rtsp_keys: keys.rtsp.to_owned(),
            dir,
            _tmp: tmp,
            child: None,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn launched(mut hub: Camhub, extra: &str) -> Camhub {
        hub.launch(extra);
        hub
    }

    /// camhub's RTSP URL of a camera.
    pub fn rtsp_url(&self, id: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{id}", self.rtsp_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("camhub is running").id()
    }

    /// Waits up to `timeout` for camhub to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Kills camhub at once (SIGKILL), as a crash or power cut of the process would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same data dir after `stop` or `kill9`.
    pub fn start_again(&mut self, extra: &str) {
        self.launch(extra);
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.dir.join("recordings")
    }

    /// Starts again on the same data dir (a restart).
    pub fn restart(&mut self, extra: &str) {
        self.stop();
        self.launch(extra);
    }

    /// The config file camhub runs with: listen, storage, secret, then `extra`.
    fn config_text(&self, extra: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n{}\n[auth]\njwt_secret = \"{SECRET}\"\n[storage]\nroot = \"{}\"\n{}\n\
             [rtsp_server]\nlisten = \"127.0.0.1:{}\"\n{}\n[rtmp]\nlisten = \"127.0.0.1:0\"\n[srt]\nlisten = \"127.0.0.1:0\"\n{extra}\n",
            self.port,
            self.server_keys,
            self.dir.display(),
            self.storage_keys,
            self.rtsp_port,
            self.rtsp_keys,
        )
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("camhub.toml")
    }

    /// Replaces the config file, with `extra` instead of what it was started with, the way editors save: a new file
    /// renamed over the old one. A running camhub is not restarted.
    pub fn rewrite_config(&self, extra: &str) {
        let tmp = self.dir.join(".camhub.toml.new");
        std::fs::write(&tmp, self.config_text(extra)).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("rename config into place");
    }

    fn launch(&mut self, extra: &str) {
        self.port = free_port();
        self.rtsp_port = free_port();
        let path = self.config_path();
        std::fs::write(&path, self.config_text(extra)).expect("write config");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("camhub.log")).expect("log file");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "camhub=debug,info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn camhub run");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("camhub exited early with {status}; log:\n{}", self.log());
            }
            if http_get(self.port, "/health/ready").is_some_and(|(code, _)| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("camhub did not become ready; log:\n{}", self.log());
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("camhub.log")).unwrap_or_default()
    }

    /// SIGTERM and wait (graceful stop).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_signal(c.id(), 15);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn token(&self, role: &str) -> String {
        token(role, 3600)
    }

    /// A new API key with `role`, made by the real `camhub apikey create` on this instance's config.
    pub fn api_key(&self, role: &str) -> String {
        let out = Command::new(BIN)
            .args(["apikey", "create", "--role", role, "--config"])
            .arg(self.dir.join("camhub.toml"))
            .output()
            .expect("run camhub apikey create");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
    }

    /// A client of `role`, once `device` is CONNECTED (20 s at most; else a panic with camhub's log).
    pub async fn connected_client(&self, role: &str, device: &str) -> Client {
        let client = self.client(role).await;
        client
            .wait_status(device, Duration::from_secs(20), |s| s["status"] == "CONNECTED")
            .await
            .unwrap_or_else(|| panic!("{device} never connected; log:\n{}", self.log()));
        client
    }

    pub async fn client(&self, role: &str) -> Client {
        let client = Client::connect(&self.ws_url()).await;
        let r = client.call("authenticate", json!({ "auth_token": self.token(role) })).await;
        assert!(r.is_ok(), "authenticate as {role}: {r:?}");
        client
    }
}

impl Drop for Camhub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a signal to a process through the `kill` command.
pub fn send_signal(pid: u32, signal: i32) {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// A JWT signed with the test secret.
pub fn token(role: &str, ttl_secs: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    sign(&json!({ "user_id": "test", "role": role, "iat": now, "exp": now + ttl_secs }), SECRET)
}

/// `claims` as an HS256 JWT signed with `secret`.
pub fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign token")
}

/// Minimal HTTP/1.1 GET over a real socket: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A real WebSocket JSON-RPC client: responses by id, server notifications on a queue.
pub struct Client {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: std::sync::atomic::AtomicU64,
    notifications: Mutex<mpsc::UnboundedReceiver<Value>>,
    /// Frames the server sent that were neither responses to our ids nor notifications.
    pub others: Mutex<mpsc::UnboundedReceiver<Value>>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        let (other_tx, other_rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let p = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let v: Value = serde_json::from_str(&text).expect("server sends JSON");
                if let Some(id) = v.get("id").and_then(Value::as_u64)
                    && let Some(tx) = p.lock().await.remove(&id)
                {
                    let _ = tx.send(v);
                } else if v.get("method").is_some() && v.get("id").is_none() {
                    let mut v = v;
                    // When it reached the client, for delivery-latency checks (outside `params`, which specs check).
                    v["received_at"] = json!(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .expect("clock")
                            .as_secs_f64()
                    );
                    let _ = note_tx.send(v);
                } else {
                    let _ = other_tx.send(v);
                }
            }
        });
        Client { out, pending, next_id: 1.into(), notifications: Mutex::new(note_rx), others: Mutex::new(other_rx) }
    }

    /// Calls `method`; Ok(result) or Err(error object).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id, tx);
        let req = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.out.send(Message::Text(req.to_string().into())).expect("socket open");
        let v = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .unwrap_or_else(|_| panic!("no response to {method} in 10 s"))
            .expect("reader alive");
        assert_eq!(v["jsonrpc"], "2.0");
        match v.get("error") {
            Some(e) => Err(e.clone()),
            None => Ok(v["result"].clone()),
        }
    }

    /// Calls the method `M` of the API's declaration with typed params, and reads its typed result: the types are the
    /// server's own, so a result that does not decode into them is a failure of the test.
    pub async fn call_typed<M: camhub::rpc::methods::Method>(&self, params: &M::Params) -> Result<M::Result, Value> {
        let params = serde_json::to_value(params).expect("params serialize");
        let result = self.call(M::NAME, params).await?;
        Ok(serde_json::from_value(result.clone())
            .unwrap_or_else(|e| panic!("{} answered {result}, which is not its result type: {e}", M::NAME)))
    }

    /// Sends a raw text frame.
    pub fn send_raw(&self, text: &str) {
        self.out.send(Message::Text(text.to_owned().into())).expect("socket open");
    }

    /// The next frame that is not a response to a `call` (e.g. the reply to a raw frame).
    pub async fn next_other(&self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.others.lock().await.recv()).await.ok().flatten()
    }

    /// Waits for a notification `method` whose params satisfy `pred`.
    pub async fn wait_notification(
        &self,
        method: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.notifications.lock().await;
        loop {
            let v = tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten()?;
            if v["method"] == method && pred(&v["params"]) {
                return Some(v["params"].clone());
            }
        }
    }

    /// The next notification of any method (its whole frame, with `received_at` in Unix seconds), or `None` after
    /// `timeout`.
    pub async fn next_notification(&self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.notifications.lock().await.recv()).await.ok().flatten()
    }

    /// Like `wait_notification`, with the time (Unix seconds) the notification reached the client.
    pub async fn wait_notification_timed(
        &self,
        method: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<(Value, f64)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.notifications.lock().await;
        loop {
            let v = tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten()?;
            if v["method"] == method && pred(&v["params"]) {
                return Some((v["params"].clone(), v["received_at"].as_f64().unwrap_or(0.0)));
            }
        }
    }

    /// Polls `get_camera_status` until `pred` holds.
    pub async fn wait_status(&self, device: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(s) = self.call("get_camera_status", json!({ "device": device })).await
                && pred(&s)
            {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

/// An FFmpeg RTSP reader copying `seconds` of a stream; its stdout lists one line per packet (framemd5).
pub fn rtsp_reader(url: &str, seconds: u32) -> std::process::Child {
    Command::new("ffmpeg")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-i", url, "-t", &seconds.to_string()])
        .args(["-map", "0:v:0", "-c", "copy", "-flush_packets", "1", "-f", "framemd5", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ffmpeg (scripts/install-deps.sh --test installs it)")
}

/// Waits for a reader and returns how many video packets it received.
pub fn packets(child: std::process::Child) -> usize {
    let out = child.wait_with_output().expect("ffmpeg ran");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with('#')).count()
}

/// One HTTP request over a real socket: (status, head, body).
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    std::io::Write::write_all(&mut s, req.as_bytes()).expect("send");
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head.to_owned(), body.to_owned())
}

pub fn camera_toml(id: &str, url: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\n")
}

/// Runs ffprobe (a real demuxer) on a file: (duration seconds, width, height, codec).
pub fn ffprobe(path: &Path) -> Result<(f64, u32, u32, String), String> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "format=duration:stream=width,height,codec_name",
        ])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .map_err(|e| format!("ffprobe cannot run ({e}); install ffmpeg (scripts/install-deps.sh --test)"))?;
    if !out.status.success() {
        return Err(format!("ffprobe {}: {}", path.display(), String::from_utf8_lossy(&out.stderr)));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let stream = &v["streams"][0];
    let duration = v["format"]["duration"].as_str().and_then(|d| d.parse().ok()).ok_or("no duration")?;
    Ok((
        duration,
        stream["width"].as_u64().unwrap_or(0) as u32,
        stream["height"].as_u64().unwrap_or(0) as u32,
        stream["codec_name"].as_str().unwrap_or("").to_owned(),
    ))
}

/// Decodes a whole file with FFmpeg; Err with its complaints if any frame fails.
pub fn decodes_cleanly(path: &Path) -> Result<(), String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .map_err(|e| format!("ffmpeg cannot run: {e}"))?;
    if out.status.success() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", path.display(), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Whether the first video packet of a file is flagged as a keyframe by its container (ffprobe).
pub fn first_frame_is_key(path: &Path) -> bool {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_packets", "-read_intervals", "%+#1"])
        .args(["-show_entries", "packet=flags", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout).lines().next().is_some_and(|l| l.trim().starts_with('K'))
}

/// One stream of a file as ffprobe sees it.
#[derive(Debug, Clone)]
pub struct ProbedStream {
    /// `video` or `audio`.
    pub kind: String,
    pub codec: String,
    pub start: f64,
    pub duration: f64,
    pub sample_rate: u32,
}

/// Every stream of a file or an RTSP URL (ffprobe), with start time and duration (the stream's, or else the
/// container's).
pub fn ffprobe_streams(target: impl AsRef<std::ffi::OsStr>) -> Result<Vec<ProbedStream>, String> {
    let target = target.as_ref();
    let mut command = Command::new("ffprobe");
    command.args(["-v", "error"]);
    if target.to_string_lossy().starts_with("rtsp://") {
        command.args(["-rtsp_transport", "tcp"]);
    }
    let out = command
        .args(["-show_entries", "format=duration:stream=codec_type,codec_name,start_time,duration,sample_rate"])
        .args(["-of", "json"])
        .arg(target)
        .output()
        .map_err(|e| format!("ffprobe cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!("ffprobe {}: {}", target.to_string_lossy(), String::from_utf8_lossy(&out.stderr)));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let number = |v: &Value| v.as_str().and_then(|d| d.parse::<f64>().ok());
    let container = number(&v["format"]["duration"]).unwrap_or(0.0);
    let streams = v["streams"].as_array().ok_or("no streams")?;
    Ok(streams
        .iter()
        .map(|s| ProbedStream {
            kind: s["codec_type"].as_str().unwrap_or("").to_owned(),
            codec: s["codec_name"].as_str().unwrap_or("").to_owned(),
            start: number(&s["start_time"]).unwrap_or(0.0),
            duration: number(&s["duration"]).unwrap_or(container),
            sample_rate: number(&s["sample_rate"]).unwrap_or(0.0) as u32,
        })
        .collect())
}

/// The test camera's per-second marks as a player meets them (running time, seconds), decoded by GStreamer from a
/// file or an RTSP URL: the frames that show the white square at the bottom left, and the onsets of the loud bursts in
/// the sound. `limit` bounds how much of a live source is read: that much of each of its streams from their first
/// sample (so a slow connection on a loaded machine still yields as many marks), within a wall-clock bound of several
/// times that.
pub fn av_marks(uri: &str, limit: Duration) -> Result<(Vec<f64>, Vec<f64>), String> {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app as gst_app;
    gst::init().map_err(|e| e.to_string())?;
    let pipeline = gst::parse::launch(&format!(
        "uridecodebin uri=\"{uri}\" name=d \
         d. ! queue ! videoconvert ! video/x-raw,format=GRAY8 ! appsink name=v sync=false \
         d. ! queue ! audioconvert ! audioresample ! audio/x-raw,format=S16LE,channels=1,layout=interleaved ! \
         appsink name=a sync=false"
    ))
    .map_err(|e| e.to_string())?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline".to_owned())?;
    let sink = |name: &str| {
        pipeline.by_name(name).and_then(|e| e.downcast::<gst_app::AppSink>().ok()).ok_or(format!("no {name}"))
    };
    let (video, audio) = (sink("v")?, sink("a")?);
    pipeline.set_state(gst::State::Playing).map_err(|e| e.to_string())?;
    let running = |sample: &gst::Sample| -> Option<f64> {
        let pts = sample.buffer()?.pts()?;
        let segment = sample.segment()?.downcast_ref::<gst::format::Time>()?.clone();
        segment.to_running_time(pts).map(|t| t.nseconds() as f64 / 1e9)
    };
    let deadline = Instant::now() + limit * 4 + Duration::from_secs(20);
    let (mut first_video, mut first_audio) = (None::<f64>, None::<f64>);
    let (mut squares, mut bursts) = (Vec::new(), Vec::new());
    let mut last_loud: Option<f64> = None;
    let (mut video_done, mut audio_done) = (false, false);
    while !(video_done && audio_done) && Instant::now() < deadline {
        if !video_done {
            match video.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
                Some(sample) => {
                    let caps = sample.caps().and_then(|c| c.structure(0).map(|s| s.to_owned())).ok_or("no caps")?;
                    let (w, h) = (
                        caps.get::<i32>("width").unwrap_or(0) as usize,
                        caps.get::<i32>("height").unwrap_or(0) as usize,
                    );
                    let stride = (w + 3) & !3;
                    if let Some(t) = running(&sample) {
                        video_done = t - *first_video.get_or_insert(t) >= limit.as_secs_f64();
                    }
                    let map = sample.buffer().ok_or("no buffer")?.map_readable().map_err(|e| e.to_string())?;
                    // The square's inside, clear of its edges (scaling and compression soften them).
                    let side = h / 4;
                    let (mut white, mut all) = (0, 0);
                    for row in h - side + 3..h - 3 {
                        for col in 3..side - 3 {
                            all += 1;
                            if map.get(row * stride + col).is_some_and(|y| *y > 180) {
                                white += 1;
                            }
                        }
                    }
                    if all > 0
                        && white * 100 >= all * 95
                        && let Some(t) = running(&sample)
                    {
                        squares.push(t);
                    }
                }
                None => video_done = video.is_eos(),
            }
        }
        if !audio_done {
            match audio.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
                Some(sample) => {
                    let rate = sample
                        .caps()
                        .and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("rate").ok()))
                        .ok_or("no rate")? as f64;
                    let Some(start) = running(&sample) else { continue };
                    audio_done = start - *first_audio.get_or_insert(start) >= limit.as_secs_f64();
                    let map = sample.buffer().ok_or("no buffer")?.map_readable().map_err(|e| e.to_string())?;
                    for (i, pair) in map.chunks_exact(2).enumerate() {
                        let value = i16::from_le_bytes([pair[0], pair[1]]);
                        if value.unsigned_abs() > 13000 {
                            let t = start + i as f64 / rate;
                            if last_loud.is_none_or(|l| t - l > 0.3) {
                                bursts.push(t);
                            }
                            last_loud = Some(t);
                        }
                    }
                }
                None => audio_done = audio.is_eos(),
            }
        }
    }
    let error = pipeline.bus().and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]));
    let _ = pipeline.set_state(gst::State::Null);
    if let Some(msg) = error
        && let gst::MessageView::Error(e) = msg.view()
    {
        return Err(format!("{uri}: {} ({:?})", e.error(), e.debug()));
    }
    Ok((squares, bursts))
}

/// How far the sound is behind the picture (seconds; negative: ahead): for each square the nearest burst, the median
/// over all of them. `None` when no square has a burst within half a second.
pub fn av_offset(squares: &[f64], bursts: &[f64]) -> Option<f64> {
    let mut offsets: Vec<f64> = squares
        .iter()
        .filter_map(|s| {
            bursts.iter().map(|b| b - s).min_by(|a, b| a.abs().total_cmp(&b.abs())).filter(|d| d.abs() < 0.5)
        })
        .collect();
    if offsets.is_empty() {
        return None;
    }
    offsets.sort_by(f64::total_cmp);
    Some(offsets[offsets.len() / 2])
}

/// gst-discoverer-1.0's view of a file: its duration in seconds.
pub fn discoverer_duration(path: &Path) -> Result<f64, String> {
    let out = Command::new("gst-discoverer-1.0")
        .arg(path)
        .output()
        .map_err(|e| format!("gst-discoverer-1.0 cannot run ({e}); install gstreamer1.0-plugins-base-apps"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.trim_start().starts_with("Duration:")).ok_or_else(|| text.to_string())?;
    let t = line.split_once(':').map(|(_, t)| t.trim()).ok_or("no duration")?;
    let mut parts = t.split(':');
    let (h, m, s) = (parts.next(), parts.next(), parts.next());
    match (
        h.and_then(|h| h.parse::<f64>().ok()),
        m.and_then(|m| m.parse::<f64>().ok()),
        s.and_then(|s| s.parse::<f64>().ok()),
    ) {
        (Some(h), Some(m), Some(s)) => Ok(h * 3600.0 + m * 60.0 + s),
        _ => Err(format!("unreadable duration {t:?}")),
    }
}

/// One HTTP/1.1 request over a real socket: (status, raw headers, body).
pub fn http_request(port: u16, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = out[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Some((code, head, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}

/// A file of `scripts/install-models.sh`'s under `assets/` (ONNX Runtime, models, photos), or a panic that says how to
/// install it: tests that need one never skip.
pub fn asset(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets").join(relative);
    assert!(path.is_file(), "{} is missing: run scripts/install-models.sh; this test never skips", path.display());
    path
}

/// The `[inference]` section of a config with the COCO model.
pub fn inference_toml() -> String {
    format!(
        "[inference]\nruntime = \"{}\"\n[[inference.models]]\nname = \"coco\"\npath = \"{}\"\nkind = \"boxes\"\n\
         labels = \"coco80\"\n",
        asset("onnxruntime/libonnxruntime.so").display(),
        asset("models/coco-centernet.onnx").display()
    )
}
