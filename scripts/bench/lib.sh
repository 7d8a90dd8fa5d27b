# shellcheck shell=bash
# scripts/bench/lib.sh: what the benchmark scripts ingest.sh, recording.sh and snapshot.sh share. Sourced, never run,
# right after `set -euo pipefail`, with BENCH_NAME set to the script's name (the prefix of every message):
#
#   BENCH_NAME=ingest.sh
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sourcing it sets
#   ROOT      the repository (and makes it the working directory)
#   PY        /usr/bin/python3, else python3 from PATH
#   EVIDENCE  where results go: EVIDENCE_DIR, default evidence/
#   WIDTH HEIGHT FPS GOP BITRATE LOOP_SECONDS  the reference stream (1280x720, 30 fps, GOP 30, 2000 kbit/s) and
#             testcam's loop length
#   CHILD_ENV the `env` prefix camhub's processes run with (CAMHUB_SECTION__KEY overrides of the caller pass through)
#   TESTCAM_PID CAMHUB_PID MEASURE_PID FFMPEG_PIDS  the processes the cleanup stops (empty: none), with
#             CAMHUB_STOP_GRACE=15 and MEASURE_STOP_GRACE=2 seconds (scripts may change them)
# and provides these functions:
#   note MSG                     MSG on stderr, prefixed with "$BENCH_NAME: "
#   bench_counts DEFAULT [N...]  camera counts: the arguments, else the words of DEFAULT, each a positive integer
#                                (else exit 64); sets COUNTS, MAXN (the largest) and SOURCES (testcam cameras: MAXN,
#                                at least 50)
#   build_camhub                 BIN: CAMHUB_BIN, else `cargo build --release` and target/release/camhub
#   testcam_pattern PAT NOTE     PATTERN and PATTERN_ARGS (--pattern PAT) when this testcam has --pattern, else
#                                PATTERN="" and a warning ending in NOTE
#   require_ffmpeg               FFMPEG and FFPROBE (FFMPEG_BIN, FFPROBE_BIN; default ffmpeg, ffprobe), or exit 1
#   bench_workdir NAME [SUB...]  WORK=$EVIDENCE/tmp/NAME, emptied, with subdirectories SUB; writes the Python module
#                                benchlib (below) there and sets PYRUN, the command that runs Python with it importable
#   bench_traps                  the cleanup on exit and on INT/TERM/HUP/PIPE: stops MEASURE_PID, then CAMHUB_PID and
#                                FFMPEG_PIDS, then TESTCAM_PID, then calls bench_cleanup_hook if the script defines it
#   stop_pids GRACE PID...       SIGTERM, SIGKILL to those left after GRACE seconds, reap; empty PIDs are skipped
#   timed_stop GRACE PID...      stop_pids, and the seconds it took in STOP_SECONDS
#   free_port                    prints an unused TCP port on 127.0.0.1
#   start_testcam CAMERAS ARG... `camhub testcam` serving CAMERAS reference streams (plus ARGs) in the background,
#                                output in $WORK/testcam.{out,log}; sets TESTCAM_PID and, once it serves, CAM_PORT
#   camhub_config_head PORT GRACE_MS SECRET STORAGE_ROOT  prints a config's [server], [auth] and [storage] sections
#   camhub_token USER CONFIG     prints an operator token (a day's validity)
#   start_camhub DIR             `camhub run --config DIR/camhub.toml` in the background, output in
#                                DIR/camhub.{out,log}; sets CAMHUB_PID
#   wait_measure                 waits for MEASURE_PID (a helper run in the background, so that a signal interrupts
#                                `wait` and the trap runs at once), clears it and returns its status
#   fail_with_log MSG LOG        MSG and the last 30 lines of LOG on stderr, then exit 1
#   report_warnings LOG [PREFIX] the first WARN/ERROR lines of a camhub log on stderr, if there are any
#   collect_versions             commit (git, "(dirty)" when the tree differs), version (camhub --version) and, when
#                                FFMPEG is set, ffmpeg_version, for the report
# The Python module benchlib, for the measuring and report programs (run them with "${PYRUN[@]}"), provides:
#   alive, cpu_ticks, cpu_seconds, mem_kib, threads   a process's state from /proc
#   http_get, health, metric, wait_connected          camhub's HTTP API (/health/cameras, /metrics)
#   rpc_call, authenticate                            camhub's WebSocket JSON-RPC API (needs the websockets module)
#   run_meta, testcam_source, stream_text, run_line   a report's common fields and lines
#   write_json, write_markdown                        the report files

[ -n "${BENCH_NAME:-}" ] || { echo "lib.sh: set BENCH_NAME before sourcing scripts/bench/lib.sh" >&2; exit 70; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"
EVIDENCE="${EVIDENCE_DIR:-$ROOT/evidence}"
# shellcheck disable=SC2034 # used by the scripts
WIDTH=1280 HEIGHT=720 FPS=30 GOP=30 BITRATE=2000 LOOP_SECONDS=4

# camhub takes CAMHUB_SECTION__KEY variables as config overrides (the caller's pass through); ours stay out.
CHILD_ENV=(env -u CAMHUB_BIN -u CAMHUB_CONFIG NO_COLOR=1)

TESTCAM_PID=""
CAMHUB_PID=""
MEASURE_PID=""
FFMPEG_PIDS=()
CAMHUB_STOP_GRACE=15
MEASURE_STOP_GRACE=2

note() {
  echo "$BENCH_NAME: $*" >&2
}

# ---- settings ----

bench_counts() { # DEFAULT [N ...]
  local n
  COUNTS=("${@:2}")
  if [ ${#COUNTS[@]} -eq 0 ]; then
    read -r -a COUNTS <<<"$1"
  fi
  for n in "${COUNTS[@]}"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { note "camera count must be a positive integer, not '$n'"; exit 64; }
  done
  MAXN=0
  for n in "${COUNTS[@]}"; do
    if [ "$n" -gt "$MAXN" ]; then MAXN=$n; fi
  done
  SOURCES=$(( MAXN > 50 ? MAXN : 50 ))
}

build_camhub() {
  if [ -n "${CAMHUB_BIN:-}" ]; then
    BIN="$CAMHUB_BIN"
  else
    note "cargo build --release"
    cargo build --release --bin camhub >&2
    BIN="$ROOT/target/release/camhub"
  fi
  [ -x "$BIN" ] || { note "$BIN is not an executable"; exit 1; }
}

testcam_pattern() { # PATTERN NOTE
  PATTERN="$1"
  PATTERN_ARGS=()
  if [ -n "$PATTERN" ]; then
    if "$BIN" testcam --help 2>/dev/null | grep -q -- '--pattern'; then
      PATTERN_ARGS=(--pattern "$PATTERN")
    else
      note "this testcam has no --pattern; using its default picture$2"
      PATTERN=""
    fi
  fi
}

require_ffmpeg() {
  FFMPEG="${FFMPEG_BIN:-ffmpeg}"
  FFPROBE="${FFPROBE_BIN:-ffprobe}"
  command -v "$FFMPEG" >/dev/null || { note "$FFMPEG not found"; exit 1; }
  command -v "$FFPROBE" >/dev/null || { note "$FFPROBE not found"; exit 1; }
}

bench_workdir() { # NAME [SUBDIR ...]
  local sub
  WORK="$EVIDENCE/tmp/$1"
  rm -rf "$WORK"
  mkdir -p "$WORK" "$EVIDENCE"
  for sub in "${@:2}"; do mkdir -p "$WORK/$sub"; done
  write_benchlib "$WORK/benchlib.py"
  PYRUN=(env "PYTHONPATH=$WORK${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 "$PY")
}

# ---- processes ----

# SIGTERM to every pid (empty ones are skipped), then SIGKILL to those left after GRACE seconds; reaps them all.
# Always returns 0: it runs in the EXIT trap, where a failure would end the cleanup early.
stop_pids() { # GRACE PID ...
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
      note "pid $pid ignored SIGTERM for ${grace}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  return 0
}

timed_stop() { # GRACE PID ...
  local t_stop t_stopped
  t_stop=$(date +%s.%N)
  stop_pids "$@"
  t_stopped=$(date +%s.%N)
  STOP_SECONDS="$("$PY" -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$t_stop" "$t_stopped")"
}

bench_cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM HUP
  trap "" PIPE
  stop_pids "$MEASURE_STOP_GRACE" "$MEASURE_PID"
  stop_pids "$CAMHUB_STOP_GRACE" "$CAMHUB_PID" ${FFMPEG_PIDS[@]+"${FFMPEG_PIDS[@]}"}
  stop_pids 10 "$TESTCAM_PID"
  if declare -F bench_cleanup_hook >/dev/null; then bench_cleanup_hook; fi
  exit "$rc"
}

bench_traps() {
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  trap 'exit 141' PIPE
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_testcam() { # CAMERAS [ARG ...]
  local i
  "${CHILD_ENV[@]}" RUST_LOG=warn "$BIN" testcam --listen 127.0.0.1:0 --cameras "$1" \
    --width "$WIDTH" --height "$HEIGHT" --fps "$FPS" --gop "$GOP" --bitrate "$BITRATE" "${@:2}" \
    >"$WORK/testcam.out" 2>"$WORK/testcam.log" &
  TESTCAM_PID=$!
  CAM_PORT=""
  for ((i = 0; i < 1200; i++)); do
    CAM_PORT="$(sed -n 's|^testcam: serving rtsp://[^:]*:\([0-9]*\)/cam0.*|\1|p' "$WORK/testcam.out" 2>/dev/null || true)"
    if [ -n "$CAM_PORT" ]; then break; fi
    kill -0 "$TESTCAM_PID" 2>/dev/null || { note "testcam exited; log:"; cat "$WORK/testcam.log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$CAM_PORT" ] || { note "testcam did not start in 120 s"; exit 1; }
  note "testcam pid $TESTCAM_PID on port $CAM_PORT"
}

camhub_config_head() { # PORT SHUTDOWN_GRACE_MS JWT_SECRET STORAGE_ROOT
  printf '[server]\nlisten = "127.0.0.1:%s"\nshutdown_grace_ms = %s\n' "$1" "$2"
  printf '[auth]\njwt_secret = "%s"\n' "$3"
  printf '[storage]\nroot = "%s"\n' "$4"
}

camhub_token() { # USER CONFIG
  "${CHILD_ENV[@]}" RUST_LOG=warn "$BIN" token --role operator --ttl 86400 --user "$1" --config "$2"
}

start_camhub() { # DIR
  "${CHILD_ENV[@]}" RUST_LOG="${RUST_LOG:-info}" "$BIN" run --config "$1/camhub.toml" \
    >"$1/camhub.out" 2>"$1/camhub.log" &
  CAMHUB_PID=$!
}

wait_measure() {
  local rc=0
  wait "$MEASURE_PID" || rc=$?
  MEASURE_PID=""
  return "$rc"
}

fail_with_log() { # MSG LOG
  note "$1"
  tail -n 30 "$2" >&2 || true
  exit 1
}

report_warnings() { # LOG [PREFIX]
  if grep -q -E ' (WARN|ERROR) ' "$1"; then
    note "${2:-}warnings in $1:"
  grep -m 5 -E ' (WARN|ERROR) ' "$1" >&2 || true
  fi
}

# ---- the report ----

collect_versions() {
  commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  git diff --quiet HEAD 2>/dev/null || commit="$commit (dirty)"
  # shellcheck disable=SC2034 # used by the scripts
  version="$("$BIN" --version 2>/dev/null || echo unknown)"
  if [ -n "${FFMPEG:-}" ]; then
    # shellcheck disable=SC2034 # used by the scripts
    ffmpeg_version="$("$FFMPEG" -version 2>/dev/null | head -n 1 || echo unknown)"
  fi
}

# ---- the Python module benchlib ----

write_benchlib() { # PATH
  cat >"$1" <<'PY'
"""Helpers shared by the Python programs of scripts/bench/*.sh (written here by scripts/bench/lib.sh, its source):
a process's state from /proc, camhub's HTTP and WebSocket APIs, and the common parts of the reports."""
import asyncio, datetime, json, os, platform, re, sys, time, urllib.request

TCK = os.sysconf("SC_CLK_TCK")


# ---- /proc ----

def alive(p):
    """Whether process p exists and is not a zombie."""
    try:
        with open(f"/proc/{p}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_ticks(p):
    """utime + stime of process p, in clock ticks (TCK a second)."""
    with open(f"/proc/{p}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime + stime (fields 14, 15)


def cpu_seconds(p):
    """utime + stime of process p, in seconds."""
    return cpu_ticks(p) / TCK


def mem_kib(p):
    """{"rss": KiB, "pss": KiB} of process p, from /proc/PID/smaps_rollup."""
    out = {"rss": 0, "pss": 0}
    with open(f"/proc/{p}/smaps_rollup") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Rss", "Pss"):
                out[key.lower()] = int(value.split()[0])
    return out


def threads(p):
    """How many threads process p has."""
    with open(f"/proc/{p}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


# ---- camhub's HTTP API ----

def http_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def health(port):
    """/health/cameras: {"total": ..., "connected": ..., ...}."""
    return json.loads(http_get(port, "/health/cameras"))


def metric(text, name):
    """{camera: value} for a per-camera counter in the Prometheus text."""
    pat = re.compile(r'^' + name + r'\{camera="([^"]+)"\} (\d+)$', re.M)
    return {m.group(1): int(m.group(2)) for m in pat.finditer(text)}


def wait_connected(port, n, timeout, check_alive, log, t0=None, timeout_message=None):
    """Polls /health/cameras every 0.1 s until all n configured cameras are connected. check_alive() runs first in
    every round (it exits when camhub is gone); timeout seconds after t0 (default: now), logs timeout_message (default:
    how many connected) and exits with 1."""
    if t0 is None:
        t0 = time.monotonic()
    connected = -1
    while True:
        check_alive()
        try:
            h = health(port)
            connected = h["connected"]
            if h["total"] == n and connected == n:
                return
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() - t0 > timeout:
            log(timeout_message or f"only {connected} of {n} cameras connected after {timeout:.0f} s")
            sys.exit(1)
        time.sleep(0.1)


# ---- camhub's WebSocket API (the caller imports websockets and connects) ----

async def rpc_call(ws, i, method, params, timeout):
    """Sends a JSON-RPC request with id i and returns the response with that id (skipping other messages)."""
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}))
    while True:
        r = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if r.get("id") == i:
            return r


async def authenticate(ws, token, timeout):
    """authenticate (request id 0) with a token; raises RuntimeError when refused."""
    r = await rpc_call(ws, 0, "authenticate", {"auth_token": token}, timeout)
    if not r.get("result", {}).get("authenticated"):
        raise RuntimeError(f"authenticate failed: {r}")


# ---- the reports ----

def run_meta(benchmark, commit, version, width, height, fps, gop, bitrate, ffmpeg_version=None):
    """The fields every report's JSON starts with, in this order: the run (date, commit, versions, machine) and the
    stream. ffmpeg_version only when given."""
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    meta = {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": commit,
        "camhub_version": version,
    }
    if ffmpeg_version is not None:
        meta["ffmpeg_version"] = ffmpeg_version
    meta.update({
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "loadavg_at_end": list(os.getloadavg()),
        "stream": {"width": int(width), "height": int(height), "fps": int(fps), "gop": int(gop),
                   "bitrate_kbps": int(bitrate), "codec": "h264", "transport": "rtsp/tcp 127.0.0.1"},
    })
    return meta


def testcam_source(loop_s, pattern, sources):
    """The "source" of a report whose streams come from one looping testcam."""
    return (f"one `camhub testcam --loop-seconds {loop_s}" + (f" --pattern {pattern}" if pattern else "")
            + f"` process serving {sources} cameras")


def stream_text(meta):
    """The stream, in words: 1280x720 H.264, 30 fps, ..."""
    s = meta["stream"]
    return (f"{s['width']}x{s['height']} H.264, {s['fps']} fps, GOP {s['gop']}, {s['bitrate_kbps']} kbit/s, "
            "RTSP over TCP on 127.0.0.1")


def run_line(meta):
    """The line under a report's title: date, commit, versions, machine, load."""
    ffmpeg = f"{meta['ffmpeg_version']}, " if "ffmpeg_version" in meta else ""
    return (f"{meta['date']}, commit {meta['git_commit']}, {meta['camhub_version']}, {ffmpeg}nproc {meta['nproc']} "
            f"({meta['cpu_model'] or 'unknown CPU'}), load average at end {meta['loadavg_at_end'][0]:.2f}.")


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_markdown(path, lines):
    """Writes the report's lines to path, and prints them."""
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
PY
}
