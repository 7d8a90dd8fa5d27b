#!/usr/bin/env bash
# Pushed-sources benchmark: what camhub costs per RTMP publisher next to nginx-rtmp receiving the same streams in the
# same run, how late a published picture reaches an RTSP reader of camhub's republish (next to an RTMP reader of
# nginx-rtmp), and camhub's CPU per SRT publisher and per WHIP (browser) publisher.
#
# Input: ONE clip encoded once per run (640x360 H.264 main, 25 fps, GOP 25, about 1000 kbit/s, with AAC, 20 s, FLV).
# Every publisher is `ffmpeg -re -stream_loop -1 -i clip.flv -c copy -f flv rtmp://...` (PUBLISHER below): no
# encoding, and the very same command for both servers, only the URL differs.
#   RTMP   one `camhub run` (stream keys made through the API, `camhub call create_stream_key`, one per publisher) and
#          one nginx-rtmp (Debian's libnginx-mod-rtmp; `nginx -c` on a config generated in the work directory,
#          daemon off, master_process off, so one process does all; `application live { live on; record off; }`)
#          run side by side. First both idle (the baseline); then for each N, N publishers to camhub, measured, stopped;
#          then the same N publishers to nginx-rtmp, measured, stopped. camhub must have the streams: the measurer
#          waits until get_camera_list shows the N cameras CONNECTED and checks it again after every window (for
#          nginx-rtmp: N established TCP connections on its port).
#          Per window: the server's utime+stime (/proc/PID/stat) as % of one core, and its RSS/PSS
#          (/proc/PID/smaps_rollup) at the window's end; figures are medians over the windows. Per stream:
#          (median at N - median idle) / N. The publishers' CPU is not counted (it is shown apart).
#   Latency  a Python publisher draws each frame's wall-clock time (ms, 32 bits + an 8-bit check) as 32x32 black and
#          white blocks, pipes raw frames into FFmpeg (x264 ultrafast, zerolatency, GOP 25) publishing RTMP; a reader
#          (FFmpeg decoding to raw grey lines, -fflags nobuffer -flags low_delay, one decoding thread, flushed per
#          frame) reads the blocks back and subtracts them from its own clock: camhub (RTMP in, RTSP/TCP out) then
#          nginx-rtmp (RTMP in, RTMP out). Same machine, same clock; the reader's decoding is in both figures.
#          Several reader sessions a few seconds apart, each joining at another point of the GOP: camhub builds its
#          RTSP media for the first reader and starts it from the latest keyframe, so where a reader joins matters.
#   SRT    the same clip as `-c copy -f mpegts srt://...?streamid=<key>` to camhub, N = 1 and 5 (CPU per stream
#          against the same idle baseline).
#   WHIP   when tests/browser/whip_publish.mjs and camhub's `POST /whip/<id>` exist: one headless Chromium fake
#          camera published over WHIP (that script, driven as tests/whip_ingest.rs drives it); camhub's CPU while it
#          publishes. Otherwise the report says why it was not measured.
# Results: evidence/sources.md. Raw results and logs: evidence/tmp/sources/.
#
# Usage:  scripts/bench/sources.sh            the CI form: N = 1, 5; 3 windows of 4 s; 4 latency sessions of 2 s (~3 min)
#         SOURCES_BENCH_FULL=1 scripts/bench/sources.sh   N = 1, 5, 20; 3 windows of 15 s; 8 sessions of 5 s (~11 min)
# Env:    SOURCES_COUNTS="1 5"        RTMP publisher counts (default 1 5, full 1 5 20)
#         SOURCES_SRT_COUNTS="1 5"    SRT publisher counts
#         SOURCES_WINDOW=4            one measurement window, seconds (full: 15)
#         SOURCES_WINDOWS=3           windows per measurement (medians are taken over them)
#         SOURCES_SETTLE=2            wait after the streams are up, seconds (full: 5)
#         SOURCES_LATENCY_SESSIONS=4  latency reader sessions per server (full: 8)
#         SOURCES_LATENCY_SECONDS=2   latency samples per session, seconds (full: 5), after 1 s of warm-up
#         SOURCES_WHIP=auto           auto: measure WHIP when it is there; 0: skip it
#         CAMHUB_BIN=path             use this binary and skip the build (default: cargo build --release)
#         FFMPEG_BIN, FFPROBE_BIN, NGINX_BIN=nginx, NGINX_RTMP_MODULE=/usr/lib/nginx/modules/ngx_rtmp_module.so
#         EVIDENCE_DIR=evidence       where the results go
# Needs: bash, /usr/bin/python3 with websockets (python3-websockets), ffmpeg, nginx + libnginx-mod-rtmp, Linux /proc;
#        for WHIP also node and chromium (all from scripts/install-deps.sh --test).
set -euo pipefail

BENCH_NAME=sources.sh
# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FULL="${SOURCES_BENCH_FULL:-0}"
if [ "$FULL" = 1 ]; then
  FORM="full"
  read -r -a COUNTS <<<"${SOURCES_COUNTS:-1 5 20}"
  WINDOW="${SOURCES_WINDOW:-15}"
  SETTLE="${SOURCES_SETTLE:-5}"
  LATENCY_SESSIONS="${SOURCES_LATENCY_SESSIONS:-8}"
  LATENCY_SECONDS="${SOURCES_LATENCY_SECONDS:-5}"
else
  FORM="CI"
  read -r -a COUNTS <<<"${SOURCES_COUNTS:-1 5}"
  WINDOW="${SOURCES_WINDOW:-4}"
  SETTLE="${SOURCES_SETTLE:-2}"
  LATENCY_SESSIONS="${SOURCES_LATENCY_SESSIONS:-4}"
  LATENCY_SECONDS="${SOURCES_LATENCY_SECONDS:-2}"
fi
read -r -a SRT_COUNTS <<<"${SOURCES_SRT_COUNTS:-1 5}"
WINDOWS="${SOURCES_WINDOWS:-3}"
WHIP_MODE="${SOURCES_WHIP:-auto}"
CONNECT_TIMEOUT=60
for n in "${COUNTS[@]}" "${SRT_COUNTS[@]}" "$WINDOWS" "$WINDOW" "$LATENCY_SESSIONS" "$LATENCY_SECONDS"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { note "counts, windows and seconds must be positive integers, not '$n'"; exit 64; }
done
MAXN=0
for n in "${COUNTS[@]}" "${SRT_COUNTS[@]}"; do
  if [ "$n" -gt "$MAXN" ]; then MAXN=$n; fi
done

# ---- tools ----
require_ffmpeg
NGINX="${NGINX_BIN:-nginx}"
RTMP_MODULE="${NGINX_RTMP_MODULE:-/usr/lib/nginx/modules/ngx_rtmp_module.so}"
command -v "$NGINX" >/dev/null ||
  { note "$NGINX not found: nginx-rtmp is the peer (scripts/install-deps.sh --test installs nginx and libnginx-mod-rtmp)"; exit 1; }
[ -f "$RTMP_MODULE" ] ||
  { note "$RTMP_MODULE not found (scripts/install-deps.sh --test installs libnginx-mod-rtmp)"; exit 1; }
command -v curl >/dev/null || { note "curl not found (scripts/install-deps.sh installs it)"; exit 1; }
"$PY" -c 'import websockets' 2>/dev/null ||
  { note "$PY has no websockets module (scripts/install-deps.sh installs python3-websockets)"; exit 1; }
# (Captured first: `grep -q` on a pipe would fail the pipeline under pipefail when it stops reading early.)
FFMPEG_ENCODERS="$("$FFMPEG" -hide_banner -encoders 2>/dev/null || true)"
FFMPEG_PROTOCOLS="$("$FFMPEG" -hide_banner -protocols 2>/dev/null || true)"
grep -q libx264 <<<"$FFMPEG_ENCODERS" || { note "$FFMPEG has no libx264 encoder"; exit 1; }
grep -q '^ *srt$' <<<"$FFMPEG_PROTOCOLS" || { note "$FFMPEG has no srt protocol"; exit 1; }
export FFMPEG_BIN="$FFMPEG" # for the latency publisher and reader

build_camhub
bench_workdir sources data nginx logs
bench_traps

NGINX_PID=""
LAT_PIDS=()
bench_cleanup_hook() {
  stop_pids 5 ${LAT_PIDS[@]+"${LAT_PIDS[@]}"}
  stop_pids 10 "$NGINX_PID"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
T_START=$(date +%s)
note "$FORM form: RTMP N = ${COUNTS[*]}, SRT N = ${SRT_COUNTS[*]}, $WINDOWS windows of ${WINDOW}s, settle ${SETTLE}s," \
  "latency $LATENCY_SESSIONS x ${LATENCY_SECONDS}s; load average $LOAD_BEFORE"

# ---- the helper programs ----
cat >"$WORK/sources.py" <<'PY'
"""Helper of scripts/bench/sources.sh (written there). Subcommands:
  measure SETTINGS_JSON         waits for the streams, then measures processes over windows; prints JSON
  wait-status PORT TOKEN STATUS DEVICES TIMEOUT   waits until every device (comma-separated) has STATUS
  latpub URL T0_FILE            publishes a clock picture over RTMP (raw frames into FFmpeg) until stopped
  latread URL SESSIONS SECONDS WARM GAP T0_FILE   reads the clock picture back; prints JSON (latencies in ms)
  whip SETTINGS_JSON            drives tests/browser/whip_publish.mjs and measures camhub while it publishes
  report SETTINGS_JSON          writes evidence/sources.md"""
import asyncio, json, os, select, signal, statistics, subprocess, sys, time
from benchlib import TCK, alive, authenticate, cpu_ticks, http_get, mem_kib, metric, rpc_call


FFMPEG = os.environ.get("FFMPEG_BIN", "ffmpeg")


def log(msg):
    print(f"sources.sh: {msg}", file=sys.stderr, flush=True)


def fail(msg):
    log(msg)
    sys.exit(1)


def median(xs):
    return statistics.median(xs) if xs else None


# ---- what the servers have ----

def camera_list(port, token):
    """{device: camera summary} from camhub's get_camera_list."""
    import websockets

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
            await authenticate(ws, token, 10)
            r = await rpc_call(ws, 1, "get_camera_list", {}, 10)
            return {c["device"]: c for c in r["result"]["cameras"]}

    return asyncio.run(go())


def camera_statuses(port, token):
    """{device: status} from camhub's get_camera_list."""
    return {d: c["status"] for d, c in camera_list(port, token).items()}


def established(port):
    """TCP connections established to local port `port` (the server's side)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "01":
                        n += 1
        except OSError:
            pass
    return n


def check(c):
    """(ok, what) for a target's check: camhub cameras CONNECTED, or established TCP connections."""
    if c["kind"] == "camhub":
        st = camera_statuses(c["port"], c["token"])
        up = sum(1 for d in c["devices"] if st.get(d) == "CONNECTED")
        return up == len(c["devices"]), up
    up = established(c["port"])
    return up == c["expect"], up


def busy_ticks():
    """The whole machine's non-idle CPU time (all CPUs, in clock ticks): everything but idle and iowait."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    return sum(v) - v[3] - v[4]


# ---- measure ----

def measure(s):
    targets, pubs = s["targets"], s.get("publishers", [])
    windows, window, settle, timeout = s["windows"], s["window"], s["settle"], s["timeout"]
    label = s["label"]
    for p in pubs + [t["pid"] for t in targets]:
        if not alive(p):
            fail(f"{label}: process {p} is gone before the measurement")
    t0 = time.monotonic()
    for t in targets:
        c = t.get("check")
        while c:
            for p in pubs + [t["pid"]]:
                if not alive(p):
                    fail(f"{label}: process {p} exited while waiting for the streams")
            try:
                ok, up = check(c)
            except Exception as e:  # camhub busy starting, a refused connection: try again
                ok, up = False, f"? ({e})"
            if ok:
                break
            if time.monotonic() - t0 > timeout:
                fail(f"{label}: {t['name']} has {up} of {len(c.get('devices', [])) or c.get('expect')} streams "
                     f"after {timeout} s")
            time.sleep(0.25)
    up_s = time.monotonic() - t0
    time.sleep(settle)
    cams = [t for t in targets if t.get("check", {}).get("kind") == "camhub" and t["check"]["devices"]]
    m0 = http_get(cams[0]["check"]["http"], "/metrics") if cams else ""
    out = {"label": label, "streams_up_seconds": round(up_s, 2), "windows": [], "targets": {}}
    for t in targets:
        out["targets"][t["name"]] = {"cpu": [], "rss_mib": [], "pss_mib": [], "streams": []}
    mw0 = time.monotonic()
    for _ in range(windows):
        w0 = time.monotonic()
        c0 = {t["name"]: cpu_ticks(t["pid"]) for t in targets}
        p0 = sum(cpu_ticks(p) for p in pubs)
        b0 = busy_ticks()
        time.sleep(window)
        c1 = {t["name"]: cpu_ticks(t["pid"]) for t in targets}
        p1 = sum(cpu_ticks(p) for p in pubs if alive(p))
        b1 = busy_ticks()
        el = time.monotonic() - w0
        mems = {t["name"]: mem_kib(t["pid"]) for t in targets}
        ours = sum(c1[n] - c0[n] for n in c1) + (p1 - p0)
        # The rest of the machine: other processes (builds, tests) and this measurer, % of one core.
        out["windows"].append({"seconds": round(el, 2), "publishers_cpu": round(100.0 * (p1 - p0) / TCK / el, 2),
                               "others_cpu": round(100.0 * (b1 - b0 - ours) / TCK / el, 1)})
        for t in targets:
            r = out["targets"][t["name"]]
            r["cpu"].append(round(100.0 * (c1[t["name"]] - c0[t["name"]]) / TCK / el, 2))
            r["rss_mib"].append(round(mems[t["name"]]["rss"] / 1024, 2))
            r["pss_mib"].append(round(mems[t["name"]]["pss"] / 1024, 2))
            if t.get("check"):
                ok, up = check(t["check"])
                r["streams"].append(up)
                if not ok:
                    fail(f"{label}: {t['name']} lost streams during the window ({up} left)")
        for p in pubs:
            if not alive(p):
                fail(f"{label}: publisher {p} exited during the measurement")
    span = time.monotonic() - mw0
    for t in targets:
        r = out["targets"][t["name"]]
        r["cpu_median"], r["rss_median"], r["pss_median"] = median(r["cpu"]), median(r["rss_mib"]), median(r["pss_mib"])
        if t in cams:
            m1 = http_get(t["check"]["http"], "/metrics")
            devs = t["check"]["devices"]
            f0, f1 = metric(m0, "camhub_camera_frames_total"), metric(m1, "camhub_camera_frames_total")
            y0, y1 = metric(m0, "camhub_camera_received_bytes_total"), metric(m1, "camhub_camera_received_bytes_total")
            fps = [(f1.get(d, 0) - f0.get(d, 0)) / span for d in devs]
            kbps = [(y1.get(d, 0) - y0.get(d, 0)) * 8 / 1000 / span for d in devs]
            r["fps_min"], r["fps_mean"] = round(min(fps), 1), round(sum(fps) / len(fps), 1)
            r["kbps_mean"] = round(sum(kbps) / len(kbps), 0)
            cams_now = camera_list(t["check"]["port"], t["check"]["token"])
            r["resolutions"] = sorted({str(cams_now.get(d, {}).get("resolution")) for d in devs})
    out["publishers_cpu_median"] = median([w["publishers_cpu"] for w in out["windows"]])
    out["others_cpu_median"] = median([w["others_cpu"] for w in out["windows"]])
    out["loadavg"] = os.getloadavg()[0]
    summary = ", ".join(f"{n} cpu {r['cpu_median']:.2f} % rss {r['rss_median']:.1f} MiB"
                        for n, r in out["targets"].items())
    log(f"{label}: {summary}; publishers {out['publishers_cpu_median']:.1f} %, other processes "
        f"{out['others_cpu_median']:.0f} %")
    print(json.dumps(out))


def wait_status(port, token, status, devices, timeout):
    devices = [d for d in devices.split(",") if d]
    t0 = time.monotonic()
    while True:
        try:
            st = camera_statuses(port, token)
            if all(st.get(d) == status for d in devices):
                return
        except Exception:
            st = {}
        if time.monotonic() - t0 > timeout:
            fail(f"cameras not {status} after {timeout} s: {st}")
        time.sleep(0.25)


# ---- latency: a clock drawn in the picture ----

W, H, FPS, BLOCK, BITS, ROW0 = 640, 360, 25, 32, 40, 32
PER_ROW = W // BLOCK
ROWS = (BITS + PER_ROW - 1) // PER_ROW


def check8(v):
    return (v ^ (v >> 8) ^ (v >> 16) ^ (v >> 24) ^ 0xA5) & 0xFF


def latpub(url, t0_file):
    """Frames at 25 fps, each carrying the wall-clock ms (mod 2^32) at which it is handed to the encoder; a keyframe
    every 25 frames, the first at the wall-clock time written to t0_file."""
    ff = subprocess.Popen(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{W}x{H}",
         "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
         "-g", str(FPS), "-sc_threshold", "0", "-b:v", "1000k", "-pix_fmt", "yuv420p", "-f", "flv", url],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    top = bytes([128]) * (W * ROW0)
    rest = bytes([128]) * (W * (H - ROW0 - ROWS * BLOCK))
    chroma = bytes([128]) * (W * H // 2)
    lut = {0: bytes([16]) * BLOCK, 1: bytes([235]) * BLOCK}
    try:
        t0, k = time.monotonic(), 0
        while True:
            d = t0 + k / FPS - time.monotonic()
            if d > 0:
                time.sleep(d)
            wall = time.time()
            if k == 0:
                with open(t0_file, "w") as f:
                    f.write(repr(wall))
            v = int(wall * 1000) & 0xFFFFFFFF
            word = v | (check8(v) << 32)
            bits = [(word >> i) & 1 for i in range(BITS)]
            band = b"".join(b"".join(lut[b] for b in bits[r * PER_ROW:(r + 1) * PER_ROW]) * BLOCK
                            for r in range(ROWS))
            ff.stdin.write(top + band + rest + chroma)
            ff.stdin.flush()
            k += 1
    except BrokenPipeError:
        fail("latency publisher: FFmpeg exited")
    finally:
        try:
            ff.stdin.close()
        except OSError:
            pass
        try:
            ff.wait(3)
        except subprocess.TimeoutExpired:
            ff.kill()
            ff.wait()


def read_clock(url, seconds, warm):
    """One reader session: (latencies in ms of the frames after `warm` seconds, unreadable frames)."""
    bh = ROWS * BLOCK
    # A small probe: FFmpeg would otherwise wait seconds for an FLV audio stream that never comes.
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "fatal", "-fflags", "nobuffer", "-flags", "low_delay",
           "-probesize", "32", "-analyzeduration", "0", "-threads", "1"]
    if url.startswith("rtsp:"):
        cmd += ["-rtsp_transport", "tcp"]
    cmd += ["-i", url, "-an", "-vf", f"crop={W}:{bh}:0:{ROW0}", "-pix_fmt", "gray", "-f", "rawvideo",
            "-flush_packets", "1", "-"]
    ff = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    size, fd = W * bh, ff.stdout.fileno()
    lat, bad, t_first = [], 0, None
    try:
        while True:
            buf = b""
            while len(buf) < size:
                ready, _, _ = select.select([fd], [], [], 15)
                if not ready:
                    fail(f"latency reader: no picture from {url} for 15 s")
                chunk = os.read(fd, size - len(buf))
                if not chunk:
                    fail(f"latency reader: {url} ended")
                buf += chunk
            now = int(time.time() * 1000)
            if t_first is None:
                t_first = time.monotonic()
            word = 0
            for i in range(BITS):
                r, c = divmod(i, PER_ROW)
                if buf[(r * BLOCK + BLOCK // 2) * W + c * BLOCK + BLOCK // 2] > 128:
                    word |= 1 << i
            v = word & 0xFFFFFFFF
            if word >> 32 != check8(v):
                bad += 1
                continue
            el = time.monotonic() - t_first
            if el < warm:
                continue
            lat.append((now - v) & 0xFFFFFFFF)
            if el >= warm + seconds:
                return lat, bad
    finally:
        ff.kill()
        ff.wait()


def latread(url, sessions, seconds, warm, gap, t0_file):
    """`sessions` reader sessions one after the other, at least `gap` seconds apart, started at spread points of the
    publisher's 1 s GOP ((k + 0.5) / sessions s after a keyframe; the publisher wrote its first keyframe's time to
    t0_file). camhub builds an RTSP media for the first reader and holds it 2 s after the last, so with gap > 2 each
    session gets a media of its own."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with open(t0_file) as f:
        t0 = float(f.read())
    gop = 1.0  # the publisher's GOP: FPS frames
    lat, bad, per_session, phases = [], 0, [], []
    for k in range(sessions):
        phase = (k + 0.5) / sessions * gop
        earliest = time.time() + (gap if k else 0.0)
        start = t0 + ((earliest - t0) // gop) * gop + phase
        if start < earliest:
            start += gop
        time.sleep(max(0.0, start - time.time()))
        l, b = read_clock(url, seconds, warm)
        lat += l
        bad += b
        per_session.append(statistics.median(l))
        phases.append(round(phase, 3))
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    out = {"frames": len(lat), "unreadable_frames": bad, "p50_ms": q(0.5), "p90_ms": q(0.9), "min_ms": lat[0],
           "max_ms": lat[-1], "sessions": sessions, "seconds": seconds,
           "session_p50_ms": [round(x) for x in per_session], "session_join_phase_s": phases}
    log(f"latency via {url.split('://')[0]}: p50 {out['p50_ms']} ms, p90 {out['p90_ms']} ms over {len(lat)} frames; "
        f"per session {out['session_p50_ms']}")
    print(json.dumps(out))


# ---- WHIP: tests/browser/whip_publish.mjs, driven as tests/whip_ingest.rs drives it ----

def whip(s):
    env = dict(os.environ, CAMHUB_URL=f"http://127.0.0.1:{s['http']}/", DEVICE=s["device"], STREAM_KEY=s["key"],
               FAILURE_SCREENSHOT=s["screenshot"])
    node = subprocess.Popen(["node", s["script"]], env=env, cwd=os.path.dirname(s["script"]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=open(s["log"], "w"), text=True, start_new_session=True)

    def stop():
        if node.poll() is None:
            try:
                os.killpg(node.pid, signal.SIGTERM)
                node.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(node.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                node.wait()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result, measured = {}, None
    deadline = time.monotonic() + s["timeout"]
    try:
        while True:
            ready, _, _ = select.select([node.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                fail(f"WHIP: the browser run took longer than {s['timeout']} s (log {s['log']})")
            line = node.stdout.readline()
            if not line:
                break
            line = line.strip()
            if line == "@cmd publishing":
                settings = {"label": "WHIP N=1", "windows": s["windows"], "window": s["window"],
                            "settle": s["settle"], "timeout": 30, "publishers": [],
                            "targets": [{"name": "camhub", "pid": s["camhub"],
                                         "check": {"kind": "camhub", "port": s["http"], "http": s["http"],
                                                   "token": s["token"], "devices": [s["device"]]}}]}
                r = subprocess.run([sys.executable, __file__, "measure", json.dumps(settings)],
                                   stdout=subprocess.PIPE, text=True)
                if r.returncode != 0:
                    fail("WHIP: measuring camhub failed")
                measured = json.loads(r.stdout)
                node.stdin.write("ok\n")
                node.stdin.flush()
            elif line.startswith("@cmd "):
                node.stdin.write("ok\n")
                node.stdin.flush()
            elif line.startswith("@result "):
                result = json.loads(line[len("@result "):])
        node.wait(30)
    finally:
        stop()
    if measured is None:
        fail(f"WHIP: the browser never published (exit {node.returncode}; log {s['log']})")
    measured["browser"] = result
    measured["browser_exit"] = node.returncode
    print(json.dumps(measured))


# ---- the report ----

def report(s):
    load = lambda p: json.load(open(p))
    idle = load(s["idle"])
    runs = [(n, load(c), load(g)) for n, c, g in s["rtmp"]]
    lat = {k: load(v) for k, v in s["latency"].items()}
    srt = [(n, load(f)) for n, f in s["srt"]]
    whipr = load(s["whip"]) if s.get("whip") else None
    ic, ig = idle["targets"]["camhub"], idle["targets"]["nginx"]
    per = lambda total, base, n: (total - base) / n
    f2 = lambda x: f"{x:.2f}"
    ratio = lambda a, b: f"{a / b:.1f}x" if b > 0.005 else "n/a (peer ~0)"
    full = s["form"] == "full"
    lines = [
        "# Pushed sources: camhub next to nginx-rtmp (RTMP), latency, SRT and WHIP",
        "",
        f"Produced by `{s['command']}` ({s['form']} form: {s['windows']} windows of {s['window']} s per figure, "
        f"medians; {'without `SOURCES_BENCH_FULL=1` it runs the CI form' if full else '`SOURCES_BENCH_FULL=1` gives the full form'}) "
        f"on {s['date']}, commit {s['commit']}, "
        f"{s['version']}, {s['ffmpeg']}, {s['nginx']} with libnginx-mod-rtmp {s['rtmp_module']}. Machine: "
        f"{s['nproc']} vCPU ({s['cpu_model']}), load average {s['load_before']} before and {s['load_after']} after; "
        f"the whole run took {s['elapsed']} s.",
        "",
        f"Input: one clip encoded once for the run: {s['clip']}. Every publisher is `{s['publisher']}` (no "
        "encoding; the very same command for both servers, only the URL differs). The publishers' CPU is not "
        "counted in the servers' figures (shown apart).",
        "",
        "## RTMP: camhub and nginx-rtmp, same publishers, same run",
        "",
        "CPU: the server process's utime+stime as % of one core (median of the windows). Memory: RSS and PSS at "
        "the end of each window (median). Per stream: (figure at N - idle figure) / N.",
        "",
        "| N | server | CPU % | CPU % per stream | RSS MiB | RSS per stream MiB | PSS MiB | streams up | "
        "camhub fps / kbit/s per stream | publishers' CPU % | other processes' CPU % |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| 0 | camhub | {f2(ic['cpu_median'])} | | {ic['rss_median']:.1f} | | {ic['pss_median']:.1f} | "
        f"{s['maxkeys']} keys, 0 up | | | {idle['others_cpu_median']:.0f} |",
        f"| 0 | nginx-rtmp | {f2(ig['cpu_median'])} | | {ig['rss_median']:.1f} | | {ig['pss_median']:.1f} | 0 | | | |",
    ]
    ratios = []
    targets = {}
    for n, c, g in runs:
        tc, tg = c["targets"]["camhub"], g["targets"]["nginx"]
        cc, cg = per(tc["cpu_median"], ic["cpu_median"], n), per(tg["cpu_median"], ig["cpu_median"], n)
        mc, mg = per(tc["rss_median"], ic["rss_median"], n), per(tg["rss_median"], ig["rss_median"], n)
        lines.append(f"| {n} | camhub | {f2(tc['cpu_median'])} | **{f2(cc)}** | {tc['rss_median']:.1f} | **{f2(mc)}** "
                     f"| {tc['pss_median']:.1f} | {min(tc['streams'])}/{n} CONNECTED | {tc['fps_min']:.1f} / "
                     f"{tc['kbps_mean']:.0f} | {c['publishers_cpu_median']:.1f} | {c['others_cpu_median']:.0f} |")
        lines.append(f"| {n} | nginx-rtmp | {f2(tg['cpu_median'])} | **{f2(cg)}** | {tg['rss_median']:.1f} | "
                     f"**{f2(mg)}** | {tg['pss_median']:.1f} | {min(tg['streams'])}/{n} TCP | | "
                     f"{g['publishers_cpu_median']:.1f} | {g['others_cpu_median']:.0f} |")
        ratios.append(f"| {n} | {ratio(cc, cg)} | {ratio(mc, mg)} | {tc['rss_median'] / tg['rss_median']:.1f}x |")
        targets[n] = (tc, mc)
    lines += [
        "",
        "camhub / nginx-rtmp:",
        "",
        "| N | CPU per stream | RSS per stream | RSS total |",
        "|---:|---:|---:|---:|",
        *ratios,
        "",
        "## Latency: publisher to reader",
        "",
        f"A clock drawn in the picture (ms as 32x32 blocks), stamped when the frame is handed to the publisher's "
        f"encoder (x264 ultrafast zerolatency, 640x360, 25 fps, GOP 25) and read back from the reader's decoded "
        f"frames (FFmpeg, `-fflags nobuffer -flags low_delay`, a minimal probe, one decoding thread, raw frames flushed one by one); "
        f"same machine, same clock. {lat['camhub']['sessions']} reader sessions per server, {lat['camhub']['seconds']} "
        "s of frames each after 1 s of warm-up, started 2.5 s or more apart (camhub holds a media 2 s after its last "
        "reader, so each session gets a new one) at spread points of the 1 s GOP "
        f"({', '.join(f'{x:.2f}' for x in lat['camhub']['session_join_phase_s'])} s after a keyframe); p50 and p90 "
        "over all their frames. Both paths include encoding, the RTMP publish and the reader's decoding.",
        "",
        "| path | p50 ms | p90 ms | min ms | max ms | frames | p50 of each session, ms |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for k, what in (("camhub", "RTMP → camhub → RTSP/TCP reader (`rtsp://…/<device>`)"),
                    ("nginx", "RTMP → nginx-rtmp → RTMP reader (`rtmp://…/live/<name>`)")):
        r = lat[k]
        lines.append(f"| {what} | **{r['p50_ms']}** | {r['p90_ms']} | {r['min_ms']} | {r['max_ms']} | {r['frames']} "
                     f"| {', '.join(str(x) for x in r['session_p50_ms'])} |")
    spread = lat["camhub"]["session_p50_ms"]
    if max(spread) - min(spread) > 150:
        lines += ["", "camhub's latency is steady within a session but grows with how long after a keyframe the "
                  f"session joined ({min(spread)} to {max(spread)} ms here): its RTSP media, built for the first "
                  "reader, starts from the latest keyframe, and the reader stays behind the live picture by about "
                  "that keyframe's age (up to one GOP, here 1 s) for as long as the media lives. publish::feed is "
                  "meant to send that GOP's history at once and catch up with the live edge; on this path (RTMP in, "
                  "RTSP out) it does not. nginx-rtmp sends from the live edge at every join."]
    lines += ["", "## SRT (camhub only)", "",
              "The same clip as `ffmpeg -re -stream_loop -1 -i clip.flv -c copy -f mpegts "
              "'srt://127.0.0.1:PORT?streamid=<key>'`, the same stream keys, the same idle baseline.", "",
              "| N | CPU % | CPU % per stream | RSS MiB | streams up | fps / kbit/s per stream | publishers' CPU % "
              "| other processes' CPU % |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in srt:
        t = r["targets"]["camhub"]
        lines.append(f"| {n} | {f2(t['cpu_median'])} | **{f2(per(t['cpu_median'], ic['cpu_median'], n))}** | "
                     f"{t['rss_median']:.1f} | {min(t['streams'])}/{n} CONNECTED | {t['fps_min']:.1f} / "
                     f"{t['kbps_mean']:.0f} | {r['publishers_cpu_median']:.1f} | {r['others_cpu_median']:.0f} |")
    lines += ["", "## WHIP (camhub only)", ""]
    if whipr:
        t = whipr["targets"]["camhub"]
        cam = ", ".join(t.get("resolutions", []))
        lines += [
            f"One headless Chromium publishing its fake camera ({cam} as camhub saw it) and microphone over WHIP "
            "(`tests/browser/whip_publish.mjs`, H.264 preferred, non-trickle), measured while it publishes. Not the "
            "clip: the browser encodes a picture of its own, at the frame rate and bitrate below; Chromium's own CPU "
            "is not counted.",
            "",
            "| N | CPU % | CPU % per stream | RSS MiB | streams up | fps / kbit/s | other processes' CPU % |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| 1 | {f2(t['cpu_median'])} | **{f2(t['cpu_median'] - ic['cpu_median'])}** | {t['rss_median']:.1f} | "
            f"{min(t['streams'])}/1 CONNECTED | {t['fps_min']:.1f} / {t['kbps_mean']:.0f} | "
            f"{whipr['others_cpu_median']:.0f} |",
        ]
        if whipr.get("browser_exit"):
            lines += ["", f"(The browser script's own checks after the measurement failed, exit "
                      f"{whipr['browser_exit']}: see `evidence/tmp/sources/logs/whip.log`; the figures were taken "
                      "while camhub had the camera CONNECTED.)"]
    else:
        lines.append(f"Not measured: {s['whip_reason']}.")
    # Targets.
    lines += ["", "## Targets (from the issue)", ""]
    big = [n for n in targets if n >= 5]
    if big:
        n = max(big)
        lines.append(f"- **5+ publishers at once**: {'met' if min(targets[n][0]['streams']) == n else 'NOT met'} — "
                     f"{n} RTMP publishers, all {n} cameras CONNECTED in get_camera_list after every window, at "
                     f"{targets[n][0]['fps_min']:.1f} fps or more each.")
    else:
        lines.append("- **5+ publishers at once**: not run (no N >= 5).")
    p50 = lat["camhub"]["p50_ms"]
    lines.append(f"- **Publisher-to-republished latency < 500 ms**: {'met' if p50 < 500 else 'NOT met'} — p50 "
                 f"{p50} ms, p90 {lat['camhub']['p90_ms']} ms over {lat['camhub']['sessions']} reader sessions "
                 f"(sessions' p50 {min(lat['camhub']['session_p50_ms'])} to {max(lat['camhub']['session_p50_ms'])} "
                 f"ms; nginx-rtmp: p50 {lat['nginx']['p50_ms']} ms).")
    if 5 in targets:
        tc, mc = targets[5]
        add = mc * 5
        lines.append(f"- **Under 30 MB for 5 streams**: {'met' if add * 1.048576 < 30 else 'NOT met'} for what the "
                     f"5 streams add ({add:.1f} MiB RSS over idle, {add * 1.048576:.1f} MB); camhub's whole RSS "
                     f"with 5 streams is {tc['rss_median']:.1f} MiB ({tc['rss_median'] * 1.048576:.1f} MB, "
                     f"{'under' if tc['rss_median'] * 1.048576 < 30 else 'over'} 30 MB), PSS "
                     f"{tc['pss_median']:.1f} MiB.")
    others = [r[1]["others_cpu_median"] for r in runs] + [r[2]["others_cpu_median"] for r in runs]
    others += [r["others_cpu_median"] for _, r in srt] + [idle["others_cpu_median"]]
    busy = max(others) > 20 or float(s["load_before"].split()[0]) > 1.0
    lines += [
        "",
        "## Notes",
        "",
        "- What each server does with a stream differs. camhub takes the FLV's H.264 apart into access units "
        "(parameter sets before each keyframe), keeps each camera's recent history from a keyframe (at least the "
        "recording pre-roll, 5 s by default) in its stream hub, counts statistics, tracks the camera's status "
        "(events, API) and mounts it on its RTSP server (the RTSP media is built only for a reader, so with no "
        "readers it costs nothing there); its AAC goes to the camera's audio track beside the video. nginx-rtmp relays the RTMP chunks to its subscribers (none "
        "here) and keeps no history; it carries the audio along.",
        f"- nginx-rtmp runs with `master_process off` (one process does everything, measured alone); its idle RSS is "
        "small because the module and nginx's core are all it holds. camhub's idle figures include the whole "
        "service (API, RTSP server, SQLite, GStreamer) with "
        f"{s['maxkeys']} stream-key cameras made and DISCONNECTED.",
        "- Readiness: camhub is measured only once get_camera_list shows all N cameras CONNECTED, checked again "
        "after every window; nginx-rtmp once its port has N established connections. fps and kbit/s are what camhub "
        "counted per camera over the windows (video only).",
        "- camhub reads each publisher's socket on a shared 20 ms grid (it wakes a few dozen times a second whatever "
        "the number of streams); that is part of its latency and of its idle cost.",
        f"- Other processes' CPU: the whole machine's non-idle time during the windows less the server and the "
        f"publishers, as % of one core ({s['nproc']} vCPU = {100 * s['nproc']} %): {min(others):.0f} to "
        f"{max(others):.0f} % (this measurer included); load average {s['load_before']} before the run, "
        f"{s['load_after']} after (that one counts the run's own publishers)."
        + (" Other work (builds, tests) shared the machine during this run, so single figures are noisy; compare "
           "the peers measured side by side in the same run rather than these figures with other runs."
           if busy else " The machine was otherwise quiet."),
        f"- {'Full' if full else 'CI'} form: windows of {s['window']} s"
        + ("" if full else " are short; `SOURCES_BENCH_FULL=1` adds N = 20 and 15 s windows")
        + f". CPU is read in 10 ms ticks, so one window's figure moves in steps of {1 / s['window']:.2f} % of a core.",
        "- Memory per stream is RSS (PSS also counts the share of libraries other processes on the machine map, and "
        "moves with them). The SRT and WHIP phases run after the RTMP ones in the same camhub, so their RSS includes "
        "what the allocator kept from earlier phases; only their CPU is compared with the idle baseline.",
        "",
        "Raw results: `evidence/tmp/sources/*.json` (not kept in git).",
        "",
    ]
    with open(s["out"], "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "measure":
        measure(json.loads(args[0]))
    elif cmd == "wait-status":
        wait_status(int(args[0]), args[1], args[2], args[3], float(args[4]))
    elif cmd == "latpub":
        latpub(args[0], args[1])
    elif cmd == "latread":
        latread(args[0], int(args[1]), float(args[2]), float(args[3]), float(args[4]), args[5])
    elif cmd == "whip":
        whip(json.loads(args[0]))
    elif cmd == "report":
        report(json.loads(args[0]))
    else:
        fail(f"sources.py: unknown subcommand {cmd}")
PY

# Runs a sources.py subcommand in the background (so that a signal interrupts `wait` and the trap runs at once),
# stdout to FILE.
helper() { # FILE SUBCOMMAND ARG...
  "${PYRUN[@]}" "$WORK/sources.py" "${@:2}" >"$1" &
  MEASURE_PID=$!
  wait_measure
}

json_settings() { # KEY=STRING or KEY:=JSON ... -> one JSON object
  "$PY" - "$@" <<'PY'
import json, sys
out = {}
for a in sys.argv[1:]:
    k, v = a.split("=", 1)
    if k.endswith(":"):
        out[k[:-1]] = json.loads(v)
    else:
        out[k] = v
print(json.dumps(out))
PY
}

# ---- the clip ----
CLIP="$WORK/clip.flv"
note "encoding the clip (640x360 H.264 + AAC, 25 fps, ~1000 kbit/s, 20 s)"
"$FFMPEG" -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=640x360:rate=25" \
  -f lavfi -i "sine=frequency=440:sample_rate=44100" -t 20 -vf "noise=alls=10:allf=t" \
  -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p -g 25 -keyint_min 25 -sc_threshold 0 \
  -b:v 1000k -maxrate 1100k -bufsize 1000k -c:a aac -b:a 64k -f flv "$CLIP" </dev/null
CLIP_KBPS="$("$FFPROBE" -v error -show_entries format=bit_rate -of csv=p=0 "$CLIP")"
CLIP_DESC="640x360 H.264 (main, GOP 25, x264 veryfast, testsrc2 with noise) 25 fps + AAC 64 kbit/s, 20 s FLV, $((CLIP_KBPS / 1000)) kbit/s in all"
PUBLISHER="ffmpeg -re -stream_loop -1 -i clip.flv -c copy -f flv rtmp://127.0.0.1:PORT/live/NAME"

# Starts one publisher of the clip per URL; their pids go to FFMPEG_PIDS (stopped by the cleanup).
start_publishers() { # FORMAT URL...
  local fmt="$1" url i=0
  for url in "${@:2}"; do
    "$FFMPEG" -hide_banner -loglevel error -re -stream_loop -1 -i "$CLIP" -c copy -f "$fmt" "$url" \
      </dev/null >/dev/null 2>"$WORK/logs/publisher-$fmt-$i.log" &
    FFMPEG_PIDS+=($!)
    i=$((i + 1))
  done
}

stop_publishers() {
  stop_pids 5 ${FFMPEG_PIDS[@]+"${FFMPEG_PIDS[@]}"}
  FFMPEG_PIDS=()
}

# ---- camhub ----
HTTP_PORT="$(free_port)"
RTSP_PORT="$(free_port)"
RTMP_PORT="$(free_port)"
SRT_PORT="$("$PY" -c 'import socket; s = socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
{
  camhub_config_head "$HTTP_PORT" 5000 "sources-bench-secret-0123456789" "$WORK/data"
  printf '[rtsp_server]\nlisten = "127.0.0.1:%s"\n' "$RTSP_PORT"
  printf '[rtmp]\nlisten = "127.0.0.1:%s"\n' "$RTMP_PORT"
  printf '[srt]\nlisten = "127.0.0.1:%s"\n' "$SRT_PORT"
  printf '[webrtc]\ncandidate_addresses = ["127.0.0.1"]\n'
} >"$WORK/camhub.toml"
RUST_LOG="${RUST_LOG:-warn}" start_camhub "$WORK"
for ((i = 0; i < 300; i++)); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/health/ready" 2>/dev/null; then break; fi
  kill -0 "$CAMHUB_PID" 2>/dev/null || fail_with_log "camhub exited at start; log:" "$WORK/camhub.log"
  sleep 0.1
done
note "camhub pid $CAMHUB_PID (http $HTTP_PORT, rtsp $RTSP_PORT, rtmp $RTMP_PORT, srt $SRT_PORT)"
TOKEN="$(camhub_token sources-bench "$WORK/camhub.toml")"
export CAMHUB_TOKEN="$TOKEN"

# One stream key per publisher (the largest N), one for the latency publisher, one for WHIP.
DEVICES=() KEYS=() URLS=()
create_key() { # NAME -> appends to DEVICES KEYS URLS
  local out fields d key u
  out="$("${CHILD_ENV[@]}" RUST_LOG=warn CAMHUB_TOKEN="$TOKEN" "$BIN" call --config "$WORK/camhub.toml" \
    create_stream_key "name=$1")" || fail_with_log "create_stream_key $1 failed; camhub log:" "$WORK/camhub.log"
  fields="$("$PY" -c 'import json, sys; r = json.load(sys.stdin); print(r["device"], r["stream_key"], r["rtmp_url"])' <<<"$out")"
  read -r d key u <<<"$fields"
  DEVICES+=("$d") KEYS+=("$key") URLS+=("$u")
}
for ((k = 0; k < MAXN; k++)); do create_key "bench-$k"; done
create_key latency
create_key whip
LAT_DEVICE="${DEVICES[MAXN]}" LAT_URL="${URLS[MAXN]}"
WHIP_DEVICE="${DEVICES[MAXN + 1]}" WHIP_KEY="${KEYS[MAXN + 1]}"
note "made $((MAXN + 2)) stream keys"
devices_json() { # N -> the first N devices as a JSON list
  "$PY" -c 'import json, sys; print(json.dumps(sys.argv[2:2 + int(sys.argv[1])]))' "$1" "${DEVICES[@]}"
}

# ---- nginx-rtmp ----
NGINX_PORT="$(free_port)"
cat >"$WORK/nginx/nginx.conf" <<EOF
# Generated by scripts/bench/sources.sh: nginx-rtmp as the peer, one process, no HTTP.
load_module $RTMP_MODULE;
daemon off;
master_process off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
rtmp {
  server {
    listen 127.0.0.1:$NGINX_PORT;
    application live { live on; record off; }
  }
}
EOF
"$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
  >"$WORK/nginx/out.log" 2>&1 </dev/null &
NGINX_PID=$!
for ((i = 0; i < 100; i++)); do
  if "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$NGINX_PORT" 2>/dev/null; then
    break
  fi
  kill -0 "$NGINX_PID" 2>/dev/null || fail_with_log "nginx exited at start:" "$WORK/nginx/error.log"
  sleep 0.1
done
note "nginx-rtmp pid $NGINX_PID (rtmp $NGINX_PORT)"

camhub_target() { # N -> a measure target for camhub with the first N devices
  printf '{"name": "camhub", "pid": %s, "check": {"kind": "camhub", "port": %s, "http": %s, "token": "%s", "devices": %s}}' \
    "$CAMHUB_PID" "$HTTP_PORT" "$HTTP_PORT" "$TOKEN" "$(devices_json "$1")"
}
nginx_target() { # N
  printf '{"name": "nginx", "pid": %s, "check": {"kind": "tcp", "port": %s, "expect": %s}}' "$NGINX_PID" "$NGINX_PORT" "$1"
}
pubs_json() {
  "$PY" -c 'import json, sys; print(json.dumps([int(p) for p in sys.argv[1:]]))' ${FFMPEG_PIDS[@]+"${FFMPEG_PIDS[@]}"}
}
measure() { # FILE LABEL TARGETS_JSON
  helper "$1" measure "$(json_settings "label=$2" "targets:=$3" "publishers:=$(pubs_json)" "windows:=$WINDOWS" \
    "window:=$WINDOW" "settle:=$SETTLE" "timeout:=$CONNECT_TIMEOUT")"
}
wait_disconnected() { # N
  local list
  list="$(IFS=,; echo "${DEVICES[*]:0:$1}")"
  helper /dev/null wait-status "$HTTP_PORT" "$TOKEN" DISCONNECTED "$list" 30
}

# ---- idle, then RTMP at each N ----
sleep "$SETTLE"
measure "$WORK/idle.json" "idle" "[$(camhub_target 0), {\"name\": \"nginx\", \"pid\": $NGINX_PID}]"
RTMP_RUNS=()
for N in "${COUNTS[@]}"; do
  start_publishers flv "${URLS[@]:0:$N}"
  measure "$WORK/rtmp-camhub-$N.json" "RTMP N=$N camhub" "[$(camhub_target "$N")]"
  stop_publishers
  wait_disconnected "$N"
  urls=()
  for ((k = 0; k < N; k++)); do urls+=("rtmp://127.0.0.1:$NGINX_PORT/live/bench-$k"); done
  start_publishers flv "${urls[@]}"
  measure "$WORK/rtmp-nginx-$N.json" "RTMP N=$N nginx-rtmp" "[$(nginx_target "$N")]"
  stop_publishers
  RTMP_RUNS+=("[$N, \"$WORK/rtmp-camhub-$N.json\", \"$WORK/rtmp-nginx-$N.json\"]")
done

# ---- latency ----
latency() { # NAME PUBLISH_URL READ_URL [DEVICE]
  rm -f "$WORK/latpub-$1.t0"
  "${PYRUN[@]}" "$WORK/sources.py" latpub "$2" "$WORK/latpub-$1.t0" 2>"$WORK/logs/latpub-$1.log" &
  LAT_PIDS=($!)
  if [ -n "${4:-}" ]; then
    helper /dev/null wait-status "$HTTP_PORT" "$TOKEN" CONNECTED "$4" "$CONNECT_TIMEOUT"
  else
    sleep 1
  fi
  helper "$WORK/latency-$1.json" latread "$3" "$LATENCY_SESSIONS" "$LATENCY_SECONDS" 1 2.5 "$WORK/latpub-$1.t0" ||
    fail_with_log "latency through $1 failed; publisher log:" "$WORK/logs/latpub-$1.log"
  stop_pids 5 "${LAT_PIDS[@]}"
  LAT_PIDS=()
}
note "latency through camhub, then nginx-rtmp"
latency camhub "$LAT_URL" "rtsp://127.0.0.1:$RTSP_PORT/$LAT_DEVICE" "$LAT_DEVICE"
latency nginx "rtmp://127.0.0.1:$NGINX_PORT/live/latency" "rtmp://127.0.0.1:$NGINX_PORT/live/latency"

# ---- SRT ----
SRT_RUNS=()
for N in "${SRT_COUNTS[@]}"; do
  urls=()
  for ((k = 0; k < N; k++)); do urls+=("srt://127.0.0.1:$SRT_PORT?streamid=${KEYS[k]}"); done
  start_publishers mpegts "${urls[@]}"
  measure "$WORK/srt-$N.json" "SRT N=$N camhub" "[$(camhub_target "$N")]"
  stop_publishers
  wait_disconnected "$N"
  SRT_RUNS+=("[$N, \"$WORK/srt-$N.json\"]")
done

# ---- WHIP ----
WHIP_FILE="" WHIP_REASON=""
WHIP_SCRIPT="$ROOT/tests/browser/whip_publish.mjs"
if [ "$WHIP_MODE" = 0 ]; then
  WHIP_REASON="skipped (SOURCES_WHIP=0)"
elif [ ! -f "$WHIP_SCRIPT" ]; then
  WHIP_REASON="tests/browser/whip_publish.mjs is not there"
elif [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/sdp' --data 'v=0' \
  "http://127.0.0.1:$HTTP_PORT/whip/$WHIP_DEVICE")" != 401 ]; then
  WHIP_REASON="this camhub has no \`POST /whip/<id>\` (an offer without a key was not answered 401)"
elif ! command -v node >/dev/null || [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ] ||
  [ ! -d "$ROOT/tests/browser/node_modules/playwright-core" ]; then
  WHIP_REASON="node, chromium or tests/browser/node_modules/playwright-core is missing (scripts/install-deps.sh --test)"
else
  note "WHIP: one headless Chromium publisher"
  if helper "$WORK/whip.json" whip "$(json_settings "http:=$HTTP_PORT" "device=$WHIP_DEVICE" "key=$WHIP_KEY" \
    "token=$TOKEN" "camhub:=$CAMHUB_PID" "script=$WHIP_SCRIPT" "screenshot=$WORK/whip-failure.png" \
    "log=$WORK/logs/whip.log" "windows:=$WINDOWS" "window:=$WINDOW" "settle:=$SETTLE" "timeout:=180")"; then
    WHIP_FILE="$WORK/whip.json"
  else
    WHIP_REASON="the browser run failed (see evidence/tmp/sources/logs/whip.log)"
    note "WHIP: $WHIP_REASON; going on without it"
  fi
fi

# ---- the report ----
kill -0 "$CAMHUB_PID" 2>/dev/null || fail_with_log "camhub exited during the run; log:" "$WORK/camhub.log"
report_warnings "$WORK/camhub.log" "camhub "
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
collect_versions
NGINX_VERSION="$("$NGINX" -v 2>&1 | sed 's|^nginx version: ||')"
MODULE_VERSION="$(dpkg-query -W -f='${Version}' libnginx-mod-rtmp 2>/dev/null || echo unknown)"
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
COMMAND="scripts/bench/sources.sh"
if [ "$FULL" = 1 ]; then COMMAND="SOURCES_BENCH_FULL=1 $COMMAND"; fi
"${PYRUN[@]}" "$WORK/sources.py" report "$(json_settings \
  "out=$EVIDENCE/sources.md" "form=$FORM" "command=$COMMAND" "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "commit=$commit" "version=$version" "ffmpeg=$(echo "$ffmpeg_version" | cut -d' ' -f1-3)" \
  "nginx=$NGINX_VERSION" "rtmp_module=$MODULE_VERSION" "nproc:=$(nproc)" "cpu_model=$CPU_MODEL" \
  "load_before=$LOAD_BEFORE" "load_after=$LOAD_AFTER" "elapsed:=$(($(date +%s) - T_START))" \
  "clip=$CLIP_DESC" "publisher=$PUBLISHER" "windows:=$WINDOWS" "window:=$WINDOW" "maxkeys:=$((MAXN + 2))" \
  "idle=$WORK/idle.json" "rtmp:=[$(IFS=,; echo "${RTMP_RUNS[*]}")]" \
  "latency:={\"camhub\": \"$WORK/latency-camhub.json\", \"nginx\": \"$WORK/latency-nginx.json\"}" \
  "srt:=[$(IFS=,; echo "${SRT_RUNS[*]}")]" "whip=$WHIP_FILE" "whip_reason=$WHIP_REASON")"
