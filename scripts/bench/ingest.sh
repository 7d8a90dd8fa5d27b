#!/usr/bin/env bash
# Ingest benchmark: camhub's CPU and memory while it ingests N 720p30 test-camera streams (1280x720, 30 fps, GOP 30,
# 2000 kbit/s, RTSP over TCP on 127.0.0.1), for N = 1, 10, 50 by default.
#
# One `camhub testcam --loop-seconds 4` process serves every stream (a clip encoded once and looped from memory, so
# the source costs little). For each N a fresh `camhub run` gets a config listing cam0..camN-1; once
# /health/cameras reports N connected and a settle time has passed, the script measures over a window:
#   CPU    utime+stime of the camhub process (/proc/PID/stat), as % of one core;
#   memory RSS and PSS (/proc/PID/smaps_rollup), sampled every second: mean and peak;
#   frames camhub_camera_frames_total and camhub_camera_received_bytes_total from /metrics, to show every stream
#          really flowed, at what frame rate and bitrate.
# Results: evidence/ingest.json (everything) and evidence/ingest.md (a table). Logs: evidence/tmp/ingest/.
#
# Usage:  scripts/bench/ingest.sh [N ...]            e.g. scripts/bench/ingest.sh 1 2
# Env:    INGEST_COUNTS="1 10 50"   camera counts (arguments win)
#         INGEST_WINDOW=30          measurement window, seconds
#         INGEST_SETTLE=5           wait after all cameras connected, seconds
#         INGEST_CONNECT_TIMEOUT=120  how long N cameras may take to connect, seconds
#         INGEST_PATTERN=snow       testcam picture, when the binary has `testcam --pattern`: snow (noise) makes the
#                                   encoder really spend 2000 kbit/s, as the reference stream did; the default `ball`
#                                   picture comes out at about a third of that. Empty: testcam's default.
#         CAMHUB_BIN=path           use this binary and skip the build (default: cargo build --release)
#         EVIDENCE_DIR=evidence     where the results go
# Needs: bash, /usr/bin/python3 (standard library only), Linux /proc.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"

COUNTS=("$@")
if [ ${#COUNTS[@]} -eq 0 ]; then
  read -r -a COUNTS <<<"${INGEST_COUNTS:-1 10 50}"
fi
for n in "${COUNTS[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "ingest.sh: camera count must be a positive integer, not '$n'" >&2; exit 64; }
done
WINDOW="${INGEST_WINDOW:-30}"
SETTLE="${INGEST_SETTLE:-5}"
CONNECT_TIMEOUT="${INGEST_CONNECT_TIMEOUT:-120}"
EVIDENCE="${EVIDENCE_DIR:-$ROOT/evidence}"
WIDTH=1280 HEIGHT=720 FPS=30 GOP=30 BITRATE=2000 LOOP_SECONDS=4
MAXN=0
for n in "${COUNTS[@]}"; do [ "$n" -gt "$MAXN" ] && MAXN=$n; done
SOURCES=$(( MAXN > 50 ? MAXN : 50 ))

if [ -n "${CAMHUB_BIN:-}" ]; then
  BIN="$CAMHUB_BIN"
else
  echo "ingest.sh: cargo build --release" >&2
  cargo build --release --bin camhub >&2
  BIN="$ROOT/target/release/camhub"
fi
[ -x "$BIN" ] || { echo "ingest.sh: $BIN is not an executable" >&2; exit 1; }
PATTERN_ARGS=()
PATTERN="${INGEST_PATTERN-snow}"
if [ -n "$PATTERN" ]; then
  if "$BIN" testcam --help 2>/dev/null | grep -q -- '--pattern'; then
    PATTERN_ARGS=(--pattern "$PATTERN")
  else
    echo "ingest.sh: this testcam has no --pattern; using its default picture (check the measured bitrate)" >&2
    PATTERN=""
  fi
fi

WORK="$EVIDENCE/tmp/ingest"
rm -rf "$WORK"
mkdir -p "$WORK" "$EVIDENCE"

TESTCAM_PID=""
CAMHUB_PID=""
MEASURE_PID=""

# SIGTERM, then SIGKILL after $2 seconds; reaps the child.
stop_pid() {
  local pid="$1" grace="${2:-15}" i
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "ingest.sh: pid $pid ignored SIGTERM for ${grace}s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  trap "" PIPE
  stop_pid "$MEASURE_PID" 2
  stop_pid "$CAMHUB_PID" 15
  stop_pid "$TESTCAM_PID" 10
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

# ---- the test cameras ----
echo "ingest.sh: starting testcam ($SOURCES cameras, ${WIDTH}x${HEIGHT}@${FPS}, GOP $GOP, $BITRATE kbit/s," \
  "loop ${LOOP_SECONDS}s, picture ${PATTERN:-default})" >&2
"${CHILD_ENV[@]}" RUST_LOG=warn "$BIN" testcam --listen 127.0.0.1:0 --cameras "$SOURCES" \
  --width "$WIDTH" --height "$HEIGHT" --fps "$FPS" --gop "$GOP" --bitrate "$BITRATE" --loop-seconds "$LOOP_SECONDS" \
  ${PATTERN_ARGS[@]+"${PATTERN_ARGS[@]}"} >"$WORK/testcam.out" 2>"$WORK/testcam.log" &
TESTCAM_PID=$!
CAM_PORT=""
for ((i = 0; i < 1200; i++)); do
  CAM_PORT="$(sed -n 's|^testcam: serving rtsp://[^:]*:\([0-9]*\)/cam0.*|\1|p' "$WORK/testcam.out" 2>/dev/null || true)"
  [ -n "$CAM_PORT" ] && break
  kill -0 "$TESTCAM_PID" 2>/dev/null || { echo "ingest.sh: testcam exited; log:" >&2; cat "$WORK/testcam.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$CAM_PORT" ] || { echo "ingest.sh: testcam did not start in 120 s" >&2; exit 1; }
echo "ingest.sh: testcam pid $TESTCAM_PID on port $CAM_PORT" >&2

# ---- one run per camera count ----
RESULTS=()
for N in "${COUNTS[@]}"; do
  dir="$WORK/n$N"
  mkdir -p "$dir/data"
  port="$(free_port)"
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\nshutdown_grace_ms = 5000\n' "$port"
    printf '[auth]\njwt_secret = "ingest-bench-secret-0123456789"\n'
    printf '[storage]\nroot = "%s"\n' "$dir/data"
    for ((k = 0; k < N; k++)); do
      printf '\n[[cameras]]\nid = "cam%d"\nurl = "rtsp://127.0.0.1:%s/cam%d"\n' "$k" "$CAM_PORT" "$k"
    done
  } >"$dir/camhub.toml"
  echo "ingest.sh: N=$N: starting camhub on port $port" >&2
  "${CHILD_ENV[@]}" RUST_LOG="${RUST_LOG:-info}" "$BIN" run --config "$dir/camhub.toml" \
    >"$dir/camhub.out" 2>"$dir/camhub.log" &
  CAMHUB_PID=$!
  # In the background, so that a signal interrupts `wait` and the trap runs at once.
  "$PY" - "$CAMHUB_PID" "$port" "$N" "$WINDOW" "$SETTLE" "$CONNECT_TIMEOUT" "$TESTCAM_PID" \
    >"$dir/result.json" <<'PY' &
"""Waits for N connected cameras, settles, then measures camhub (and, for context, testcam) over the window."""
import json, os, re, sys, time, urllib.request

pid, port, n, window, settle, connect_timeout, cam_pid = sys.argv[1:8]
pid, port, n, cam_pid = int(pid), int(port), int(n), int(cam_pid)
window, settle, connect_timeout = float(window), float(settle), float(connect_timeout)
TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"ingest.sh: N={n}: {msg}", file=sys.stderr, flush=True)


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
    out = {}
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


def get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def health():
    return json.loads(get("/health/cameras"))


def metric(text, name):
    """{camera: value} for a per-camera counter in the Prometheus text."""
    pat = re.compile(r'^' + name + r'\{camera="([^"]+)"\} (\d+)$', re.M)
    return {m.group(1): int(m.group(2)) for m in pat.finditer(text)}


t0 = time.monotonic()
connected = -1
while True:
    if not alive(pid):
        log("camhub exited before all cameras connected")
        sys.exit(1)
    try:
        h = health()
        connected = h["connected"]
        if h["total"] == n and connected == n:
            break
    except (OSError, ValueError, KeyError):
        pass
    if time.monotonic() - t0 > connect_timeout:
        log(f"only {connected} of {n} cameras connected after {connect_timeout:.0f} s")
        sys.exit(1)
    time.sleep(0.1)
connect_s = time.monotonic() - t0
log(f"all {n} connected after {connect_s:.1f} s; settling {settle:.0f} s")
time.sleep(settle)

m0 = get("/metrics")
frames0, reconnects0 = metric(m0, "camhub_camera_frames_total"), metric(m0, "camhub_camera_reconnects_total")
bytes0 = metric(m0, "camhub_camera_received_bytes_total")
log(f"measuring for {window:.0f} s")
w0, c0, k0 = time.monotonic(), cpu_ticks(pid), cpu_ticks(cam_pid)
samples = []
deadline = w0 + window
while True:
    samples.append(mem_kib(pid))
    left = deadline - time.monotonic()
    if left <= 0:
        break
    time.sleep(min(1.0, left))
w1, c1, k1 = time.monotonic(), cpu_ticks(pid), cpu_ticks(cam_pid)
m1 = get("/metrics")
frames1, reconnects1 = metric(m1, "camhub_camera_frames_total"), metric(m1, "camhub_camera_reconnects_total")
bytes1 = metric(m1, "camhub_camera_received_bytes_total")
h1 = health()
elapsed = w1 - w0

cpu = 100.0 * (c1 - c0) / TCK / elapsed
cam_cpu = 100.0 * (k1 - k0) / TCK / elapsed
mib = lambda kib: kib / 1024.0
rss = [mib(s["rss"]) for s in samples]
pss = [mib(s["pss"]) for s in samples]
fps = {c: (frames1.get(c, 0) - frames0.get(c, 0)) / elapsed for c in frames1}
kbps = {c: (bytes1.get(c, 0) - bytes0.get(c, 0)) * 8 / 1000 / elapsed for c in bytes1}
result = {
    "cameras": n,
    "connect_seconds": round(connect_s, 2),
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
    "threads": threads(pid),
    "fps_per_camera_mean": round(sum(fps.values()) / max(len(fps), 1), 2),
    "fps_per_camera_min": round(min(fps.values()), 2) if fps else 0.0,
    "kbps_per_camera_mean": round(sum(kbps.values()) / max(len(kbps), 1), 1),
    "kbps_per_camera_min": round(min(kbps.values()), 1) if kbps else 0.0,
    "reconnects_during_window": sum(reconnects1.get(c, 0) - reconnects0.get(c, 0) for c in reconnects1),
    "connected_at_end": h1["connected"],
    "testcam_cpu_percent": round(cam_cpu, 2),
    "loadavg_at_end": os.getloadavg()[0],
}
log(f"cpu {cpu:.1f} % ({cpu / n:.2f} %/camera), rss {result['rss_mib']:.1f} MiB, pss {result['pss_mib']:.1f} MiB, "
    f"{result['fps_per_camera_mean']} fps and {result['kbps_per_camera_mean']:.0f} kbit/s per camera, testcam {cam_cpu:.1f} %")
print(json.dumps(result))
PY
  MEASURE_PID=$!
  if ! wait "$MEASURE_PID"; then
    echo "ingest.sh: N=$N failed; camhub log tail:" >&2
    tail -n 30 "$dir/camhub.log" >&2 || true
    exit 1
  fi
  MEASURE_PID=""
  t_stop=$(date +%s.%N)
  stop_pid "$CAMHUB_PID" 15
  CAMHUB_PID=""
  t_stopped=$(date +%s.%N)
  "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); r["stop_seconds"] = round(float(sys.argv[3]) - float(sys.argv[2]), 2); json.dump(r, open(sys.argv[1], "w"))' \
    "$dir/result.json" "$t_stop" "$t_stopped"
  RESULTS+=("$dir/result.json")
done

# ---- the report ----
commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || commit="$commit (dirty)"
version="$("$BIN" --version 2>/dev/null || echo unknown)"
"$PY" - "$EVIDENCE" "$commit" "$version" "$WIDTH" "$HEIGHT" "$FPS" "$GOP" "$BITRATE" "$LOOP_SECONDS" "$SOURCES" "$PATTERN" \
  "${RESULTS[@]}" <<'PY'
import datetime, json, os, platform, sys

evidence, commit, version, width, height, fps, gop, bitrate, loop_s, sources, pattern, *files = sys.argv[1:]
runs = [json.load(open(f)) for f in files]
cpu_model = ""
try:
    with open("/proc/cpuinfo") as f:
        cpu_model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
except OSError:
    pass
meta = {
    "benchmark": "ingest",
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "git_commit": commit,
    "camhub_version": version,
    "nproc": os.cpu_count(),
    "cpu_model": cpu_model,
    "kernel": platform.release(),
    "loadavg_at_end": list(os.getloadavg()),
    "stream": {"width": int(width), "height": int(height), "fps": int(fps), "gop": int(gop),
               "bitrate_kbps": int(bitrate), "codec": "h264", "transport": "rtsp/tcp 127.0.0.1"},
    "source": f"one `camhub testcam --loop-seconds {loop_s}"
              + (f" --pattern {pattern}" if pattern else "") + f"` process serving {sources} cameras",
    "method": "camhub utime+stime over the window (% of one core); RSS/PSS from smaps_rollup sampled each second (mean)",
}
short = min(r["window_seconds"] for r in runs) < 29.5 or [r["cameras"] for r in runs] != [1, 10, 50]
meta["short_run"] = short
with open(os.path.join(evidence, "ingest.json"), "w") as f:
    json.dump({**meta, "runs": runs}, f, indent=2)
    f.write("\n")

lines = [
    "# camhub ingest benchmark",
    "",
    f"{meta['date']}, commit {commit}, {version}, nproc {meta['nproc']} ({cpu_model or 'unknown CPU'}), "
    f"load average at end {meta['loadavg_at_end'][0]:.2f}.",
    *(["", "**Short run** (not the default N = 1, 10, 50 with a 30 s window): a check of the tooling, not figures "
       "to compare.", ""] if short else []),
    f"Streams: {width}x{height} H.264, {fps} fps, GOP {gop}, {bitrate} kbit/s, RTSP over TCP on 127.0.0.1, "
    f"from {meta['source']}. Window {runs[0]['window_seconds']:.0f} s after all cameras connected and a settle time.",
    "",
    "| N | CPU % total | CPU % per camera | RSS MiB | RSS per camera MiB | PSS MiB | PSS per camera MiB "
    "| fps per camera | kbit/s per camera | threads | testcam CPU % |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for r in runs:
    lines.append(
        f"| {r['cameras']} | {r['cpu_percent']:.1f} | {r['cpu_percent_per_camera']:.2f} | {r['rss_mib']:.1f} "
        f"| {r['rss_mib_per_camera']:.2f} | {r['pss_mib']:.1f} | {r['pss_mib_per_camera']:.2f} "
        f"| {r['fps_per_camera_mean']:.1f} | {r['kbps_per_camera_mean']:.0f} | {r['threads']} "
        f"| {r['testcam_cpu_percent']:.1f} |"
    )
low = [r for r in runs if r["kbps_per_camera_mean"] < 0.8 * int(bitrate)]
if low:
    lines += ["", f"**Note**: the streams carried {min(r['kbps_per_camera_mean'] for r in low):.0f} kbit/s per camera, "
              f"well under the nominal {bitrate} kbit/s of the reference figures (a simple picture; see INGEST_PATTERN)."]
lines += [
    "",
    "CPU: camhub's utime+stime over the window as % of one core. Memory: mean of one sample per second "
    "(`/proc/PID/smaps_rollup`). fps and kbit/s per camera: what camhub received during the window (`/metrics`).",
    "",
]
with open(os.path.join(evidence, "ingest.md"), "w") as f:
    f.write("\n".join(lines))
print("\n".join(lines))
PY
