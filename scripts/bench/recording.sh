#!/usr/bin/env bash
# Recording benchmark: camhub's CPU and memory while it RECORDS N 720p30 test-camera streams (1280x720, 30 fps,
# GOP 30, 2000 kbit/s, RTSP over TCP on 127.0.0.1) to segmented files without re-encoding, next to FFmpeg doing the
# same job the way Frigate does it, in the same run, for N = 1, 10, 50 by default.
#
# One `camhub testcam --loop-seconds 4 --pattern snow` process serves every stream. For each N, two phases run one
# after the other against the same source (never at the same time: on a small machine they would share its cores):
#   camhub  a fresh `camhub run` whose config lists cam0..camN-1 with `record = "always"` (continuous recording from
#           start-up; RECORDING_CAMHUB_MODE=api calls start_recording for each camera over the WebSocket API instead),
#           [recording] format fmp4, segment_seconds 10, everything else at its default;
#   ffmpeg  one process per camera, exactly as in FFMPEG_CMD below (stdin from /dev/null).
# Once every camera is connected (camhub: /health/cameras) and every camera's files on disk hold at least 64 KiB,
# and a settle time has passed, the script measures over a window:
#   CPU    utime+stime (/proc/PID/stat) as % of one core; for FFmpeg the sum over its N processes;
#   memory RSS and PSS (/proc/PID/smaps_rollup) sampled every second (for FFmpeg summed over processes): mean, peak;
#   disk   bytes each camera's files grew by over the window (both should write about the stream's bitrate);
# then stops the recorder (SIGTERM, which finalises the files) and runs ffprobe on cam0's first and last file.
# Recordings go to a temporary directory (RECORDING_DATA_DIR), deleted after each phase unless RECORDING_KEEP=1.
# Results: evidence/recording.json (everything) and evidence/recording.md (tables). Logs: evidence/tmp/recording/.
#
# Usage:  scripts/bench/recording.sh [N ...]         e.g. scripts/bench/recording.sh 1 2
# Env:    RECORDING_COUNTS="1 10 50"   camera counts (arguments win)
#         RECORDING_WINDOW=30          measurement window, seconds
#         RECORDING_SETTLE=5           wait after all cameras record, seconds
#         RECORDING_CONNECT_TIMEOUT=120  how long N cameras may take to connect and start writing, seconds
#         RECORDING_TOOLS="camhub ffmpeg"  which recorders to run, in this order
#         RECORDING_CAMHUB_MODE=always  always: `record = "always"` in the config; api: start_recording per camera
#                                       (needs Debian's python3-websockets for /usr/bin/python3)
#         RECORDING_FORMAT=fmp4        camhub's [recording] format (fmp4, mp4, mkv)
#         RECORDING_SEGMENT=10         segment length, seconds, for both recorders
#         RECORDING_PATTERN=snow       testcam picture (snow makes the encoder really spend 2000 kbit/s)
#         RECORDING_DATA_DIR=dir       where recordings are written (default: a new directory under $TMPDIR or /tmp)
#         RECORDING_KEEP=0             1 keeps the recordings (and RECORDING_DATA_DIR) after the run
#         FFMPEG_BIN=ffmpeg FFPROBE_BIN=ffprobe
#         CAMHUB_BIN=path              use this binary and skip the build (default: cargo build --release)
#         EVIDENCE_DIR=evidence        where the results go
# Needs: bash, /usr/bin/python3 (standard library; python3-websockets only for RECORDING_CAMHUB_MODE=api), ffmpeg,
#        ffprobe, Linux /proc.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"

COUNTS=("$@")
if [ ${#COUNTS[@]} -eq 0 ]; then
  read -r -a COUNTS <<<"${RECORDING_COUNTS:-1 10 50}"
fi
for n in "${COUNTS[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "recording.sh: camera count must be a positive integer, not '$n'" >&2; exit 64; }
done
read -r -a TOOLS <<<"${RECORDING_TOOLS:-camhub ffmpeg}"
for t in "${TOOLS[@]}"; do
  [[ "$t" == camhub || "$t" == ffmpeg ]] || { echo "recording.sh: RECORDING_TOOLS: '$t' is not camhub or ffmpeg" >&2; exit 64; }
done
[ ${#TOOLS[@]} -gt 0 ] || { echo "recording.sh: RECORDING_TOOLS is empty" >&2; exit 64; }
WINDOW="${RECORDING_WINDOW:-30}"
SETTLE="${RECORDING_SETTLE:-5}"
CONNECT_TIMEOUT="${RECORDING_CONNECT_TIMEOUT:-120}"
MODE="${RECORDING_CAMHUB_MODE:-always}"
[[ "$MODE" == always || "$MODE" == api ]] || { echo "recording.sh: RECORDING_CAMHUB_MODE must be always or api" >&2; exit 64; }
FORMAT="${RECORDING_FORMAT:-fmp4}"
SEGMENT="${RECORDING_SEGMENT:-10}"
KEEP="${RECORDING_KEEP:-0}"
FFMPEG="${FFMPEG_BIN:-ffmpeg}"
FFPROBE="${FFPROBE_BIN:-ffprobe}"
EVIDENCE="${EVIDENCE_DIR:-$ROOT/evidence}"
WIDTH=1280 HEIGHT=720 FPS=30 GOP=30 BITRATE=2000 LOOP_SECONDS=4
MAXN=0
for n in "${COUNTS[@]}"; do [ "$n" -gt "$MAXN" ] && MAXN=$n; done
SOURCES=$(( MAXN > 50 ? MAXN : 50 ))
command -v "$FFMPEG" >/dev/null || { echo "recording.sh: $FFMPEG not found" >&2; exit 1; }
command -v "$FFPROBE" >/dev/null || { echo "recording.sh: $FFPROBE not found" >&2; exit 1; }
if [ "$MODE" = api ] && ! "$PY" -c 'import websockets' 2>/dev/null; then
  echo "recording.sh: RECORDING_CAMHUB_MODE=api needs the websockets module for $PY (apt-get install python3-websockets)" >&2
  exit 1
fi

if [ -n "${CAMHUB_BIN:-}" ]; then
  BIN="$CAMHUB_BIN"
else
  echo "recording.sh: cargo build --release" >&2
  cargo build --release --bin camhub >&2
  BIN="$ROOT/target/release/camhub"
fi
[ -x "$BIN" ] || { echo "recording.sh: $BIN is not an executable" >&2; exit 1; }
PATTERN_ARGS=()
PATTERN="${RECORDING_PATTERN-snow}"
if [ -n "$PATTERN" ]; then
  if "$BIN" testcam --help 2>/dev/null | grep -q -- '--pattern'; then
    PATTERN_ARGS=(--pattern "$PATTERN")
  else
    echo "recording.sh: this testcam has no --pattern; using its default picture (check the bytes written)" >&2
    PATTERN=""
  fi
fi

WORK="$EVIDENCE/tmp/recording"
rm -rf "$WORK"
mkdir -p "$WORK" "$EVIDENCE"
if [ -n "${RECORDING_DATA_DIR:-}" ]; then
  DATA_ROOT="$RECORDING_DATA_DIR"
  mkdir -p "$DATA_ROOT"
  DATA_ROOT_OURS=0
else
  DATA_ROOT="$(mktemp -d "${TMPDIR:-/tmp}/camhub-recording-bench.XXXXXX")"
  DATA_ROOT_OURS=1
fi

# Both recorders write about BITRATE per camera: warn when the largest phase might not fit (camhub also stops
# recording below its [storage] min_free_mb, set to 256 here).
need_mb=$(( MAXN * BITRATE * (CONNECT_TIMEOUT / 4 + SETTLE + WINDOW + 2 * SEGMENT) / 8 / 1000 + 256 ))
free_mb=$(df -Pm "$DATA_ROOT" | awk 'NR == 2 { print $4 }')
if [ "${free_mb:-0}" -lt "$need_mb" ]; then
  echo "recording.sh: warning: $DATA_ROOT has ${free_mb} MB free; the largest phase may need about $need_mb MB" >&2
fi

TESTCAM_PID=""
CAMHUB_PID=""
MEASURE_PID=""
FFMPEG_PIDS=()

# SIGTERM to every pid (empty ones are skipped), then SIGKILL to those left after $1 seconds; reaps them all.
# Always returns 0: it runs in the EXIT trap, where a failure would end the cleanup early.
stop_pids() {
  local grace="$1" pid i alive
  shift
  local pids=()
  for pid in "$@"; do
    if [ -n "$pid" ]; then pids+=("$pid"); fi
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for ((i = 0; i < grace * 10; i++)); do
    alive=0
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; break; fi
    done
    if [ "$alive" -eq 0 ]; then break; fi
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "recording.sh: pid $pid ignored SIGTERM for ${grace}s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  return 0
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM HUP
  trap "" PIPE
  stop_pids 2 "$MEASURE_PID"
  stop_pids 20 "$CAMHUB_PID" ${FFMPEG_PIDS[@]+"${FFMPEG_PIDS[@]}"}
  stop_pids 10 "$TESTCAM_PID"
  if [ "$KEEP" != 1 ] && [ "$DATA_ROOT_OURS" = 1 ]; then
    rm -rf "$DATA_ROOT"
  elif [ "$KEEP" = 1 ]; then
    echo "recording.sh: recordings kept in $DATA_ROOT" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# camhub takes CAMHUB_SECTION__KEY variables as config overrides (the caller's pass through); ours stay out.
CHILD_ENV=(env -u CAMHUB_BIN -u CAMHUB_CONFIG NO_COLOR=1)

# The FFmpeg command per camera, as Frigate runs it. Run in the background (`exec_ffmpeg URL OUT &`), the subshell
# becomes FFmpeg, so $! is FFmpeg's pid.
exec_ffmpeg() { # URL OUTPATTERN
  exec "$FFMPEG" -hide_banner -loglevel error -rtsp_transport tcp -i "$1" -c copy -f segment -segment_time "$SEGMENT" \
    -segment_format mp4 -reset_timestamps 1 "$2"
}
FFMPEG_CMD="ffmpeg -hide_banner -loglevel error -rtsp_transport tcp -i rtsp://127.0.0.1:PORT/camK -c copy -f segment \
-segment_time $SEGMENT -segment_format mp4 -reset_timestamps 1 OUT/camK_%03d.mp4"

# ---- the measuring helper: `measure` (wait, settle, measure one phase) and `probe` (ffprobe one file) ----
cat >"$WORK/recording.py" <<'PY'
"""Helpers of scripts/bench/recording.sh: `measure SETTINGS_JSON` prints one phase's result as JSON;
`probe FFPROBE FILE` prints what ffprobe says of a recording as JSON."""
import json, os, re, subprocess, sys, time, urllib.request

TCK = os.sysconf("SC_CLK_TCK")
READY_BYTES = 64 * 1024


def alive(p):
    try:
        with open(f"/proc/{p}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_ticks(p):
    with open(f"/proc/{p}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime + stime (fields 14, 15)


def mem_kib(p):
    out = {"rss": 0, "pss": 0}
    with open(f"/proc/{p}/smaps_rollup") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Rss", "Pss"):
                out[key.lower()] = int(value.split()[0])
    return out


def threads(p):
    with open(f"/proc/{p}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def sizes(directory, n):
    """{camera index: (bytes, files)} of the files named camK_* in directory."""
    out = {k: [0, 0] for k in range(n)}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return out
    for e in entries:
        m = re.match(r"cam(\d+)_", e.name)
        if not m or int(m.group(1)) not in out:
            continue
        try:
            size = e.stat().st_size
        except FileNotFoundError:
            continue
        out[int(m.group(1))][0] += size
        out[int(m.group(1))][1] += 1
    return out


def measure(s):
    tool, n, pids, directory = s["tool"], s["cameras"], s["pids"], s["dir"]
    window, settle, timeout = s["window"], s["settle"], s["connect_timeout"]
    port = s.get("port")

    def log(msg):
        print(f"recording.sh: N={n} {tool}: {msg}", file=sys.stderr, flush=True)

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.read().decode()

    def metric(text, name):
        pat = re.compile(r'^' + name + r'\{camera="([^"]+)"\} (\d+)$', re.M)
        return {m.group(1): int(m.group(2)) for m in pat.finditer(text)}

    def check_alive():
        dead = [p for p in pids if not alive(p)]
        if dead:
            log(f"{len(dead)} of {len(pids)} recorder processes exited (pids {dead[:5]})")
            sys.exit(1)

    t0 = time.monotonic()
    # 1. Every camera connected (camhub) ...
    if tool == "camhub":
        connected = -1
        while True:
            check_alive()
            try:
                h = json.loads(get("/health/cameras"))
                connected = h["connected"]
                if h["total"] == n and connected == n:
                    break
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() - t0 > timeout:
                log(f"only {connected} of {n} cameras connected after {timeout:.0f} s")
                sys.exit(1)
            time.sleep(0.1)
        if s.get("mode") == "api":
            start_recordings(s, n, log)
    connect_s = time.monotonic() - t0
    # 2. ... and every camera's files on disk growing.
    ready = 0
    while True:
        check_alive()
        sz = sizes(directory, n)
        ready = sum(1 for b, _ in sz.values() if b >= READY_BYTES)
        if ready == n:
            break
        if time.monotonic() - t0 > timeout:
            log(f"only {ready} of {n} cameras wrote {READY_BYTES} bytes after {timeout:.0f} s")
            sys.exit(1)
        time.sleep(0.2)
    recording_s = time.monotonic() - t0
    log(f"all {n} connected after {connect_s:.1f} s and writing after {recording_s:.1f} s; settling {settle:.0f} s")
    time.sleep(settle)
    check_alive()

    m0 = get("/metrics") if tool == "camhub" else ""
    log(f"measuring for {window:.0f} s")
    sz0 = sizes(directory, n)
    w0 = time.monotonic()
    c0 = sum(cpu_ticks(p) for p in pids)
    k0 = cpu_ticks(s["testcam_pid"])
    samples = []
    deadline = w0 + window
    while True:
        rss = pss = 0
        for p in pids:
            m = mem_kib(p)
            rss += m["rss"]
            pss += m["pss"]
        samples.append((rss, pss))
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(1.0, left))
    c1 = sum(cpu_ticks(p) for p in pids)
    k1 = cpu_ticks(s["testcam_pid"])
    w1 = time.monotonic()
    sz1 = sizes(directory, n)
    check_alive()
    elapsed = w1 - w0
    thread_count = sum(threads(p) for p in pids)

    cpu = 100.0 * (c1 - c0) / TCK / elapsed
    cam_cpu = 100.0 * (k1 - k0) / TCK / elapsed
    rss = [r / 1024.0 for r, _ in samples]
    pss = [p / 1024.0 for _, p in samples]
    written = [sz1[k][0] - sz0[k][0] for k in range(n)]
    files = [sz1[k][1] for k in range(n)]
    kbps = [b * 8 / 1000 / elapsed for b in written]
    result = {
        "tool": tool,
        "cameras": n,
        "processes": len(pids),
        "connect_seconds": round(connect_s, 2),
        "recording_seconds": round(recording_s, 2),
        "window_seconds": round(elapsed, 2),
        "cpu_percent": round(cpu, 2),
        "cpu_percent_per_camera": round(cpu / n, 3),
        "rss_mib": round(sum(rss) / len(rss), 2),
        "rss_mib_peak": round(max(rss), 2),
        "rss_mib_per_camera": round(sum(rss) / len(rss) / n, 3),
        "pss_mib": round(sum(pss) / len(pss), 2),
        "pss_mib_peak": round(max(pss), 2),
        "pss_mib_per_camera": round(sum(pss) / len(pss) / n, 3),
        "memory_samples": len(samples),
        "threads": thread_count,
        "written_bytes_per_camera_mean": round(sum(written) / n),
        "written_bytes_per_camera_min": min(written),
        "written_bytes_per_camera_max": max(written),
        "written_kbps_per_camera_mean": round(sum(kbps) / n, 1),
        "written_kbps_per_camera_min": round(min(kbps), 1),
        "cameras_not_writing": sum(1 for b in written if b <= 0),
        "files_per_camera_at_end_of_window": round(sum(files) / n, 2),
        "testcam_cpu_percent": round(cam_cpu, 2),
        "loadavg_at_end": os.getloadavg()[0],
    }
    if tool == "camhub":
        m1 = get("/metrics")
        f0, f1 = metric(m0, "camhub_camera_frames_total"), metric(m1, "camhub_camera_frames_total")
        b0, b1 = metric(m0, "camhub_camera_received_bytes_total"), metric(m1, "camhub_camera_received_bytes_total")
        r0, r1 = metric(m0, "camhub_camera_reconnects_total"), metric(m1, "camhub_camera_reconnects_total")
        fps = [(f1.get(c, 0) - f0.get(c, 0)) / elapsed for c in f1]
        rx = [(b1.get(c, 0) - b0.get(c, 0)) * 8 / 1000 / elapsed for c in b1]
        result.update({
            "recording_mode": s.get("mode"),
            "received_fps_per_camera_mean": round(sum(fps) / max(len(fps), 1), 2),
            "received_kbps_per_camera_mean": round(sum(rx) / max(len(rx), 1), 1),
            "reconnects_during_window": sum(r1.get(c, 0) - r0.get(c, 0) for c in r1),
            "connected_at_end": json.loads(get("/health/cameras"))["connected"],
        })
    log(f"cpu {cpu:.1f} % ({cpu / n:.2f} %/camera), rss {result['rss_mib']:.1f} MiB, pss {result['pss_mib']:.1f} MiB "
        f"({result['pss_mib_per_camera']:.2f}/camera), {result['written_kbps_per_camera_mean']:.0f} kbit/s written "
        f"per camera, testcam {cam_cpu:.1f} %")
    print(json.dumps(result))


def start_recordings(s, n, log):
    """start_recording for cam0..camN-1 over the WebSocket API (an operator token)."""
    import asyncio
    import websockets

    async def run():
        async with websockets.connect(f"ws://127.0.0.1:{s['port']}/ws", max_size=None) as ws:
            async def call(i, method, params):
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}))
                while True:
                    r = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if r.get("id") == i:
                        return r
            r = await call(0, "authenticate", {"auth_token": os.environ["BENCH_TOKEN"]})  # not in argv (ps)
            if not r.get("result", {}).get("authenticated"):
                raise RuntimeError(f"authenticate failed: {r}")
            for k in range(n):
                r = await call(k + 1, "start_recording", {"device": f"cam{k}"})
                if r.get("result", {}).get("status") != "RECORDING":
                    raise RuntimeError(f"start_recording cam{k}: {r}")

    t = time.monotonic()
    try:
        asyncio.run(run())
    except Exception as e:  # noqa: BLE001 - any failure ends the phase with its reason
        log(f"start_recording failed: {e}")
        sys.exit(1)
    log(f"start_recording for {n} cameras took {time.monotonic() - t:.2f} s")


def probe(ffprobe, path):
    cmd = [ffprobe, "-v", "error", "-count_packets", "-show_entries",
           "stream=codec_name,width,height,avg_frame_rate,nb_read_packets:format=format_name,duration,size",
           "-of", "json", path]
    p = subprocess.run(cmd, capture_output=True, text=True)
    out = {"file": os.path.basename(path), "ffprobe_exit": p.returncode}
    try:
        j = json.loads(p.stdout or "{}")
    except ValueError:
        j = {}
    video = next((st for st in j.get("streams", []) if st.get("codec_name")), {})
    fmt = j.get("format", {})
    out.update({
        "codec": video.get("codec_name"),
        "width": video.get("width"),
        "height": video.get("height"),
        "avg_frame_rate": video.get("avg_frame_rate"),
        "packets": int(video.get("nb_read_packets") or 0),
        "duration_seconds": round(float(fmt.get("duration") or 0), 3),
        "size_bytes": int(fmt.get("size") or 0),
        "format": fmt.get("format_name"),
    })
    if p.stderr.strip():
        out["ffprobe_errors"] = p.stderr.strip().splitlines()[:5]
    out["playable"] = (p.returncode == 0 and out["codec"] in ("h264", "hevc") and out["packets"] > 0
                       and out["duration_seconds"] > 0 and "ffprobe_errors" not in out)
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "measure":
        measure(json.loads(sys.argv[2]))
    elif sys.argv[1] == "probe":
        probe(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
PY

# Waits for the measuring helper in the background, so that a signal interrupts `wait` and the trap runs at once.
run_measure() { # SETTINGS_JSON OUT [TOKEN]
  BENCH_TOKEN="${3:-}" "$PY" "$WORK/recording.py" measure "$1" >"$2" &
  MEASURE_PID=$!
  local rc=0
  wait "$MEASURE_PID" || rc=$?
  MEASURE_PID=""
  return "$rc"
}

# ffprobe on cam0's first and last file of a phase, then the stop time, into the phase's result.
finish_phase() { # RESULT DIR STOP_SECONDS
  local result="$1" dir="$2" stop_s="$3" first last
  first="$(find "$dir" -maxdepth 1 -name 'cam0_*' -printf '%f\n' | LC_ALL=C sort | head -n 1)"
  last="$(find "$dir" -maxdepth 1 -name 'cam0_*' -printf '%f\n' | LC_ALL=C sort | tail -n 1)"
  {
    if [ -n "$first" ]; then "$PY" "$WORK/recording.py" probe "$FFPROBE" "$dir/$first"; else echo null; fi
    if [ -n "$last" ] && [ "$last" != "$first" ]; then "$PY" "$WORK/recording.py" probe "$FFPROBE" "$dir/$last"; else echo null; fi
  } >"$result.probe"
  "$PY" - "$result" "$stop_s" "$dir" <<'PY'
import json, os, re, sys
path, stop_s, directory = sys.argv[1], float(sys.argv[2]), sys.argv[3]
r = json.load(open(path))
first, last = [json.loads(l) for l in open(path + ".probe").read().split("\n") if l.strip()][:2]
r["stop_seconds"] = round(stop_s, 2)
r["probe_first"], r["probe_last"] = first, last
names = [n for n in os.listdir(directory) if re.match(r"cam\d+_", n)]
r["files_total_at_end"] = len(names)
r["bytes_total_at_end"] = sum(os.path.getsize(os.path.join(directory, n)) for n in names)
r["playable"] = bool(first and first["playable"] and (last is None or last["playable"]))
json.dump(r, open(path, "w"))
os.remove(path + ".probe")
print(f"recording.sh: N={r['cameras']} {r['tool']}: stopped in {stop_s:.1f} s; cam0 first file "
      f"{first and first['file']}: {first and first['duration_seconds']} s, playable {first and first['playable']}; "
      f"last file {last and last['file']}: playable {last and last['playable']}", file=sys.stderr)
PY
}

# ---- the test cameras ----
echo "recording.sh: starting testcam ($SOURCES cameras, ${WIDTH}x${HEIGHT}@${FPS}, GOP $GOP, $BITRATE kbit/s," \
  "loop ${LOOP_SECONDS}s, picture ${PATTERN:-default}); recordings in $DATA_ROOT" >&2
"${CHILD_ENV[@]}" RUST_LOG=warn "$BIN" testcam --listen 127.0.0.1:0 --cameras "$SOURCES" \
  --width "$WIDTH" --height "$HEIGHT" --fps "$FPS" --gop "$GOP" --bitrate "$BITRATE" --loop-seconds "$LOOP_SECONDS" \
  ${PATTERN_ARGS[@]+"${PATTERN_ARGS[@]}"} >"$WORK/testcam.out" 2>"$WORK/testcam.log" &
TESTCAM_PID=$!
CAM_PORT=""
for ((i = 0; i < 1200; i++)); do
  CAM_PORT="$(sed -n 's|^testcam: serving rtsp://[^:]*:\([0-9]*\)/cam0.*|\1|p' "$WORK/testcam.out" 2>/dev/null || true)"
  [ -n "$CAM_PORT" ] && break
  kill -0 "$TESTCAM_PID" 2>/dev/null || { echo "recording.sh: testcam exited; log:" >&2; cat "$WORK/testcam.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$CAM_PORT" ] || { echo "recording.sh: testcam did not start in 120 s" >&2; exit 1; }
echo "recording.sh: testcam pid $TESTCAM_PID on port $CAM_PORT" >&2

settings_json() { # TOOL N PIDS(comma) DIR [PORT]
  "$PY" -c 'import json, sys
tool, n, pids, d, port, mode, window, settle, timeout, cam = sys.argv[1:11]
print(json.dumps({"tool": tool, "cameras": int(n), "pids": [int(p) for p in pids.split(",")], "dir": d,
                  "port": int(port) if port else None, "mode": mode, "window": float(window),
                  "settle": float(settle), "connect_timeout": float(timeout), "testcam_pid": int(cam)}))' \
    "$1" "$2" "$3" "$4" "${5:-}" "$MODE" "$WINDOW" "$SETTLE" "$CONNECT_TIMEOUT" "$TESTCAM_PID"
}

# ---- one camhub phase ----
phase_camhub() { # N
  local N="$1" dir="$WORK/n$1/camhub" data="$DATA_ROOT/n$1/camhub" port token="" record_line="" t_stop t_stopped
  mkdir -p "$dir" "$data"
  port="$(free_port)"
  [ "$MODE" = always ] && record_line='record = "always"'
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\nshutdown_grace_ms = 15000\n' "$port"
    printf '[auth]\njwt_secret = "recording-bench-secret-0123456789"\n'
    printf '[storage]\nroot = "%s"\nmin_free_mb = 256\n' "$data"
    printf '[recording]\nformat = "%s"\nsegment_seconds = %s\n' "$FORMAT" "$SEGMENT"
    for ((k = 0; k < N; k++)); do
      printf '\n[[cameras]]\nid = "cam%d"\nurl = "rtsp://127.0.0.1:%s/cam%d"\n%s\n' "$k" "$CAM_PORT" "$k" "$record_line"
    done
  } >"$dir/camhub.toml"
  if [ "$MODE" = api ]; then
    token="$("${CHILD_ENV[@]}" RUST_LOG=warn "$BIN" token --role operator --ttl 86400 --user recording-bench \
      --config "$dir/camhub.toml")"
  fi
  echo "recording.sh: N=$N camhub: starting on port $port ($MODE, $FORMAT, ${SEGMENT} s segments)" >&2
  "${CHILD_ENV[@]}" RUST_LOG="${RUST_LOG:-info}" "$BIN" run --config "$dir/camhub.toml" \
    >"$dir/camhub.out" 2>"$dir/camhub.log" &
  CAMHUB_PID=$!
  if ! run_measure "$(settings_json camhub "$N" "$CAMHUB_PID" "$data/recordings" "$port")" "$dir/result.json" "$token"; then
    echo "recording.sh: N=$N camhub failed; log tail:" >&2
    tail -n 30 "$dir/camhub.log" >&2 || true
    exit 1
  fi
  t_stop=$(date +%s.%N)
  stop_pids 20 "$CAMHUB_PID"
  CAMHUB_PID=""
  t_stopped=$(date +%s.%N)
  finish_phase "$dir/result.json" "$data/recordings" "$("$PY" -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$t_stop" "$t_stopped")"
  if grep -q -E ' (WARN|ERROR) ' "$dir/camhub.log"; then
    echo "recording.sh: N=$N camhub: warnings in $dir/camhub.log:" >&2
    grep -E ' (WARN|ERROR) ' "$dir/camhub.log" | head -n 5 >&2
  fi
  RESULTS+=("$dir/result.json")
  [ "$KEEP" = 1 ] || rm -rf "$data"
}

# ---- one FFmpeg phase ----
phase_ffmpeg() { # N
  local N="$1" dir="$WORK/n$1/ffmpeg" data="$DATA_ROOT/n$1/ffmpeg" k pids t_stop t_stopped
  mkdir -p "$dir" "$data"
  echo "recording.sh: N=$N ffmpeg: starting $N processes" >&2
  FFMPEG_PIDS=()
  for ((k = 0; k < N; k++)); do
    exec_ffmpeg "rtsp://127.0.0.1:$CAM_PORT/cam$k" "$data/cam${k}_%03d.mp4" </dev/null >/dev/null 2>"$dir/cam$k.log" &
    FFMPEG_PIDS+=($!)
  done
  pids="$(IFS=,; echo "${FFMPEG_PIDS[*]}")"
  if ! run_measure "$(settings_json ffmpeg "$N" "$pids" "$data")" "$dir/result.json"; then
    echo "recording.sh: N=$N ffmpeg failed; logs:" >&2
    for ((k = 0; k < N && k < 5; k++)); do tail -n 5 "$dir/cam$k.log" >&2 || true; done
    exit 1
  fi
  t_stop=$(date +%s.%N)
  stop_pids 20 "${FFMPEG_PIDS[@]}"
  FFMPEG_PIDS=()
  t_stopped=$(date +%s.%N)
  finish_phase "$dir/result.json" "$data" "$("$PY" -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$t_stop" "$t_stopped")"
  local errors
  errors="$(find "$dir" -name 'cam*.log' -size +0 | wc -l)"
  if [ "$errors" -gt 0 ]; then
    echo "recording.sh: N=$N ffmpeg: $errors processes logged errors, e.g.:" >&2
    find "$dir" -name 'cam*.log' -size +0 | head -n 1 | xargs head -n 3 >&2
  fi
  RESULTS+=("$dir/result.json")
  [ "$KEEP" = 1 ] || rm -rf "$data"
}

RESULTS=()
for N in "${COUNTS[@]}"; do
  for tool in "${TOOLS[@]}"; do
    "phase_$tool" "$N"
  done
done

# ---- the report ----
commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || commit="$commit (dirty)"
version="$("$BIN" --version 2>/dev/null || echo unknown)"
ffmpeg_version="$("$FFMPEG" -version 2>/dev/null | head -n 1 || echo unknown)"
"$PY" - "$EVIDENCE" "$commit" "$version" "$ffmpeg_version" "$FFMPEG_CMD" "$MODE" "$FORMAT" "$SEGMENT" "$WIDTH" \
  "$HEIGHT" "$FPS" "$GOP" "$BITRATE" "$LOOP_SECONDS" "$SOURCES" "$PATTERN" "$WINDOW" "${COUNTS[*]}" "${TOOLS[*]}" \
  "${RESULTS[@]}" <<'PY'
import datetime, json, os, platform, sys

(evidence, commit, version, ffmpeg_version, ffmpeg_cmd, mode, fmt, segment, width, height, fps, gop, bitrate, loop_s,
 sources, pattern, window, counts, tools, *files) = sys.argv[1:]
runs = [json.load(open(f)) for f in files]
cpu_model = ""
try:
    with open("/proc/cpuinfo") as f:
        cpu_model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
except OSError:
    pass
# FFmpeg's figures from /work/shared/perf-anchors.md (60 s window, gst-rtsp-server source), for orientation.
ANCHOR_FFMPEG_CPU = {1: 0.80, 10: 0.66, 50: 0.59}
ANCHOR_FFMPEG_PSS = {1: 48.0, 10: 15.6, 50: 12.5}

by_n = {}
for r in runs:
    by_n.setdefault(r["cameras"], {})[r["tool"]] = r
comparison = []
for n, pair in sorted(by_n.items()):
    c, f = pair.get("camhub"), pair.get("ffmpeg")
    row = {"cameras": n}
    if c and f:
        ratio = lambda a, b: round(a / b, 3) if b else None
        row.update({
            "camhub_cpu_percent_per_camera": c["cpu_percent_per_camera"],
            "ffmpeg_cpu_percent_per_camera": f["cpu_percent_per_camera"],
            "cpu_ratio_camhub_over_ffmpeg": ratio(c["cpu_percent_per_camera"], f["cpu_percent_per_camera"]),
            "pss_ratio_camhub_over_ffmpeg": ratio(c["pss_mib_per_camera"], f["pss_mib_per_camera"]),
            "written_ratio_camhub_over_ffmpeg": ratio(c["written_bytes_per_camera_mean"],
                                                      f["written_bytes_per_camera_mean"]),
        })
        row["cpu_target_met"] = row["cpu_ratio_camhub_over_ffmpeg"] is not None and row["cpu_ratio_camhub_over_ffmpeg"] <= 0.5
    row["anchor_ffmpeg_cpu_percent_per_camera"] = ANCHOR_FFMPEG_CPU.get(n)
    row["anchor_ffmpeg_pss_mib_per_camera"] = ANCHOR_FFMPEG_PSS.get(n)
    comparison.append(row)

meta = {
    "benchmark": "recording",
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "git_commit": commit,
    "camhub_version": version,
    "ffmpeg_version": ffmpeg_version,
    "nproc": os.cpu_count(),
    "cpu_model": cpu_model,
    "kernel": platform.release(),
    "loadavg_at_end": list(os.getloadavg()),
    "stream": {"width": int(width), "height": int(height), "fps": int(fps), "gop": int(gop),
               "bitrate_kbps": int(bitrate), "codec": "h264", "transport": "rtsp/tcp 127.0.0.1"},
    "source": f"one `camhub testcam --loop-seconds {loop_s}"
              + (f" --pattern {pattern}" if pattern else "") + f"` process serving {sources} cameras",
    "camhub_setup": (f"`camhub run`, cameras with record = \"always\"" if mode == "always"
                     else "`camhub run`, start_recording per camera over the API")
                    + f"; [recording] format = \"{fmt}\", segment_seconds = {segment}, other keys at their defaults "
                      "(pre_roll_seconds 5, fragment_ms 500)",
    "ffmpeg_command": ffmpeg_cmd + " (one process per camera, stdin from /dev/null)",
    "method": "phases run one after the other (never both recorders at once), each after all cameras connected and "
              "wrote 64 KiB, plus a settle time; CPU = utime+stime over the window (% of one core; FFmpeg: sum of its "
              "processes); RSS/PSS from smaps_rollup each second, summed over processes, mean; written = growth of "
              "each camera's files over the window; playable = ffprobe of cam0's first and last file after stopping",
}
short = float(window) < 29.5 or counts.split() != ["1", "10", "50"] or tools.split() != ["camhub", "ffmpeg"]
meta["short_run"] = short
with open(os.path.join(evidence, "recording.json"), "w") as f:
    json.dump({**meta, "runs": runs, "comparison": comparison}, f, indent=2)
    f.write("\n")

yn = lambda b: "yes" if b else "**no**"
lines = [
    "# camhub recording benchmark (next to FFmpeg)",
    "",
    f"{meta['date']}, commit {commit}, {version}, {ffmpeg_version}, nproc {meta['nproc']} "
    f"({cpu_model or 'unknown CPU'}), load average at end {meta['loadavg_at_end'][0]:.2f}.",
    *(["", "**Short run** (not the default N = 1, 10, 50 with a 30 s window, both recorders): a check of the tooling, "
       "not figures to compare.", ""] if short else [""]),
    f"Streams: {width}x{height} H.264, {fps} fps, GOP {gop}, {bitrate} kbit/s, RTSP over TCP on 127.0.0.1, "
    f"from {meta['source']}. Each recorder records N of them, copying (no re-encoding) into {segment} s segments; "
    f"window {runs[0]['window_seconds']:.0f} s after all cameras were recording and a settle time. The recorders "
    "run one after the other, never at the same time.",
    "",
    f"- camhub: {meta['camhub_setup']}.",
    f"- FFmpeg, one process per camera (as Frigate records): `{ffmpeg_cmd}`",
    "",
    "| N | recorder | CPU % total | CPU % per camera | RSS MiB | PSS MiB | PSS per camera MiB | written kbit/s per camera "
    "| written MiB per camera | threads | testcam CPU % | playable |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
]
for r in runs:
    lines.append(
        f"| {r['cameras']} | {r['tool']} | {r['cpu_percent']:.1f} | {r['cpu_percent_per_camera']:.2f} "
        f"| {r['rss_mib']:.1f} | {r['pss_mib']:.1f} | {r['pss_mib_per_camera']:.2f} "
        f"| {r['written_kbps_per_camera_mean']:.0f} | {r['written_bytes_per_camera_mean'] / 1048576:.2f} "
        f"| {r['threads']} | {r['testcam_cpu_percent']:.1f} | {yn(r['playable'])} |"
    )
pairs = [c for c in comparison if "cpu_ratio_camhub_over_ffmpeg" in c]
if pairs:
    lines += [
        "",
        "| N | camhub CPU % per camera | FFmpeg CPU % per camera | CPU camhub / FFmpeg (target <= 0.5) | target met "
        "| PSS camhub / FFmpeg | written camhub / FFmpeg | FFmpeg anchor CPU % per camera |",
        "|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    fx = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
    for c in pairs:
        lines.append(
            f"| {c['cameras']} | {c['camhub_cpu_percent_per_camera']:.2f} | {c['ffmpeg_cpu_percent_per_camera']:.2f} "
            f"| {fx(c['cpu_ratio_camhub_over_ffmpeg'])} | {yn(c['cpu_target_met'])} "
            f"| {fx(c['pss_ratio_camhub_over_ffmpeg'])} | {fx(c['written_ratio_camhub_over_ffmpeg'])} "
            f"| {fx(c['anchor_ffmpeg_cpu_percent_per_camera'])} |"
        )
lines += ["", "Files checked with ffprobe after stopping (cam0's first and last file):", ""]
for r in runs:
    for which in ("probe_first", "probe_last"):
        p = r.get(which)
        if p:
            lines.append(
                f"- N={r['cameras']} {r['tool']} `{p['file']}`: {p['codec']} {p['width']}x{p['height']}, "
                f"{p['duration_seconds']:.2f} s, {p['packets']} packets, {p['size_bytes']} bytes, "
                f"{p['format']}; playable {yn(p['playable'])}"
                + (f"; ffprobe said: {'; '.join(p['ffprobe_errors'])}" if p.get("ffprobe_errors") else "")
            )
bad = [r for r in runs if r["cameras_not_writing"]]
if bad:
    lines += ["", "**Note**: some cameras wrote nothing during the window: "
              + ", ".join(f"N={r['cameras']} {r['tool']}: {r['cameras_not_writing']}" for r in bad) + "."]
low = [r for r in runs if r["written_kbps_per_camera_mean"] < 0.8 * int(bitrate)]
if low:
    lines += ["", f"**Note**: under 80 % of the nominal {bitrate} kbit/s reached the disk in: "
              + ", ".join(f"N={r['cameras']} {r['tool']} ({r['written_kbps_per_camera_mean']:.0f})" for r in low) + "."]
lines += [
    "",
    "CPU: utime+stime over the window as % of one core (FFmpeg: summed over its N processes). Memory: mean of one "
    "sample per second (`/proc/PID/smaps_rollup`), summed over processes; RSS counts shared pages once per process, "
    "PSS splits them. Written: how much each camera's files grew during the window. The FFmpeg anchor is the figure "
    "in /work/shared/perf-anchors.md (a 60 s window, another source), for orientation only; the ratio uses the FFmpeg "
    "run above.",
    "",
]
with open(os.path.join(evidence, "recording.md"), "w") as f:
    f.write("\n".join(lines))
print("\n".join(lines))
PY
