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
# then stops the recorder (SIGTERM, which finalises the files) and runs ffprobe on cam0's first and last file, and
# on every file of every camera to count frames lost: the source sends exactly FPS frames a second with evenly spaced
# timestamps, so a hole in a file's frame timestamps (a gap over 1.5 frame intervals) is frames lost, counted as the
# gap in frame intervals less one.
# Recordings go to a temporary directory (RECORDING_DATA_DIR), deleted after each phase unless RECORDING_KEEP=1.
# Results: evidence/recording.json (everything) and evidence/recording.md (tables). Logs: evidence/tmp/recording/.
#
# Usage:  scripts/bench/recording.sh [N ...]         e.g. scripts/bench/recording.sh 1 2
# Env:    RECORDING_COUNTS="1 10 50"   camera counts (arguments win)
#         RECORDING_WINDOW=30          measurement window, seconds
#         RECORDING_SETTLE=5           wait after all cameras record, seconds
#         RECORDING_CONNECT_TIMEOUT=120  how long N cameras may take to connect and start writing, seconds
#         RECORDING_FFMPEG_RESTART_WINDOW=90  until every FFmpeg has written its first file, at most this many
#                                       seconds, one that exited, or that has not written 64 KiB
#                                       RECORDING_FFMPEG_STUCK_AFTER (20) seconds after its start, is started again (as
#                                       Frigate's watchdog would);
#                                       the restarts are reported
#         RECORDING_TOOLS="camhub ffmpeg"  which recorders to run, in this order
#         RECORDING_ROUNDS=1           rounds per N: camhub, FFmpeg, camhub, FFmpeg, ... (a noisy machine drifts; the
#                                       comparison takes each recorder's median round)
#         RECORDING_EARLIER="F ..."     result.json files of phases run before (e.g. another count, after a failure),
#                                       reported with this run's
#         RECORDING_REPORT_ONLY=1      run nothing: report RECORDING_EARLIER's results (and RECORDING_FAILED's notes)
#         RECORDING_FAILED="TEXT"      a note on phases that failed before (with RECORDING_REPORT_ONLY)
#         RECORDING_FRAMES=1           count every file's frames after each phase (0 skips it; it takes a while at 100)
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

BENCH_NAME=recording.sh
# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_counts "${RECORDING_COUNTS:-1 10 50}" "$@"
read -r -a TOOLS <<<"${RECORDING_TOOLS:-camhub ffmpeg}"
for t in "${TOOLS[@]}"; do
  [[ "$t" == camhub || "$t" == ffmpeg ]] || { echo "recording.sh: RECORDING_TOOLS: '$t' is not camhub or ffmpeg" >&2; exit 64; }
done
[ ${#TOOLS[@]} -gt 0 ] || { echo "recording.sh: RECORDING_TOOLS is empty" >&2; exit 64; }
WINDOW="${RECORDING_WINDOW:-30}"
SETTLE="${RECORDING_SETTLE:-5}"
CONNECT_TIMEOUT="${RECORDING_CONNECT_TIMEOUT:-120}"
RESTART_WINDOW="${RECORDING_FFMPEG_RESTART_WINDOW:-90}"
STUCK_AFTER="${RECORDING_FFMPEG_STUCK_AFTER:-20}"
MODE="${RECORDING_CAMHUB_MODE:-always}"
[[ "$MODE" == always || "$MODE" == api ]] || { echo "recording.sh: RECORDING_CAMHUB_MODE must be always or api" >&2; exit 64; }
FORMAT="${RECORDING_FORMAT:-fmp4}"
SEGMENT="${RECORDING_SEGMENT:-10}"
KEEP="${RECORDING_KEEP:-0}"
ROUNDS="${RECORDING_ROUNDS:-1}"
COUNT_FRAMES="${RECORDING_FRAMES:-1}"
require_ffmpeg
if [ "$MODE" = api ] && ! "$PY" -c 'import websockets' 2>/dev/null; then
  echo "recording.sh: RECORDING_CAMHUB_MODE=api needs the websockets module for $PY (apt-get install python3-websockets)" >&2
  exit 1
fi

build_camhub
testcam_pattern "${RECORDING_PATTERN-snow}" " (check the bytes written)"

bench_workdir recording
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
  note "warning: $DATA_ROOT has ${free_mb} MB free; the largest phase may need about $need_mb MB"
fi

# camhub gets 15 s to finish its recordings (shutdown_grace_ms below), FFmpeg as long.
CAMHUB_STOP_GRACE=20
bench_cleanup_hook() {
  if [ "$KEEP" != 1 ] && [ "$DATA_ROOT_OURS" = 1 ]; then
    rm -rf "$DATA_ROOT"
  elif [ "$KEEP" = 1 ]; then
    note "recordings kept in $DATA_ROOT"
  fi
}
bench_traps

# Whether process $1 runs (a child that exited stays a zombie until waited for, and `kill -0` still finds it).
process_running() { # PID
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" && [ -n "$state" ] && [ "$state" != Z ]
}

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
import json, os, re, subprocess, sys, time
from benchlib import TCK, alive, authenticate, cpu_ticks, health, http_get, mem_kib, metric, rpc_call, threads, \
    wait_connected

READY_BYTES = 64 * 1024


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

    def check_alive():
        dead = [p for p in pids if not alive(p)]
        if dead:
            log(f"{len(dead)} of {len(pids)} recorder processes exited (pids {dead[:5]})")
            sys.exit(1)

    t0 = time.monotonic()
    # 1. Every camera connected (camhub) ...
    if tool == "camhub":
        wait_connected(port, n, timeout, check_alive, log, t0)
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

    m0 = http_get(port, "/metrics") if tool == "camhub" else ""
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
        m1 = http_get(port, "/metrics")
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
            "connected_at_end": health(port)["connected"],
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
            await authenticate(ws, os.environ["BENCH_TOKEN"], 30)  # the token is not in argv (ps)
            for k in range(n):
                r = await rpc_call(ws, k + 1, "start_recording", {"device": f"cam{k}"}, 30)
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


def frames(ffprobe, directory, fps):
    """Frames written and frames lost (holes in each file's frame timestamps) over every camK_* file."""
    interval = 1.0 / float(fps)
    written = lost = files = 0
    worst = 0.0
    per_camera = {}
    for name in sorted(os.listdir(directory)):
        m = re.match(r"cam(\d+)_", name)
        if not m:
            continue
        p = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=dts_time",
                            "-of", "csv=p=0", os.path.join(directory, name)], capture_output=True, text=True)
        times = sorted(float(t) for t in p.stdout.split() if t not in ("", "N/A"))
        files += 1
        written += len(times)
        holes = 0
        for a, b in zip(times, times[1:]):
            gap = b - a
            worst = max(worst, gap)
            if gap > 1.5 * interval:
                holes += round(gap / interval) - 1
        lost += holes
        per_camera[int(m.group(1))] = per_camera.get(int(m.group(1)), 0) + holes
    print(json.dumps({"files_checked": files, "frames_written": written, "frames_lost": lost,
                      "cameras_with_loss": sum(1 for v in per_camera.values() if v),
                      "widest_gap_ms": round(worst * 1000, 1)}))


if __name__ == "__main__":
    if sys.argv[1] == "measure":
        measure(json.loads(sys.argv[2]))
    elif sys.argv[1] == "frames":
        frames(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "probe":
        probe(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
PY

# Waits for the measuring helper in the background, so that a signal interrupts `wait` and the trap runs at once.
run_measure() { # SETTINGS_JSON OUT [TOKEN]
  BENCH_TOKEN="${3:-}" "${PYRUN[@]}" "$WORK/recording.py" measure "$1" >"$2" &
  MEASURE_PID=$!
  wait_measure
}

# ffprobe on cam0's first and last file of a phase, then the stop time, into the phase's result.
finish_phase() { # RESULT DIR STOP_SECONDS
  local result="$1" dir="$2" stop_s="$3" first last
  first="$(find "$dir" -maxdepth 1 -name 'cam0_*' -printf '%f\n' | LC_ALL=C sort | head -n 1)"
  last="$(find "$dir" -maxdepth 1 -name 'cam0_*' -printf '%f\n' | LC_ALL=C sort | tail -n 1)"
  {
    if [ -n "$first" ]; then "${PYRUN[@]}" "$WORK/recording.py" probe "$FFPROBE" "$dir/$first"; else echo null; fi
    if [ -n "$last" ] && [ "$last" != "$first" ]; then "${PYRUN[@]}" "$WORK/recording.py" probe "$FFPROBE" "$dir/$last"; else echo null; fi
  } >"$result.probe"
  if [ "$COUNT_FRAMES" = 1 ]; then
    "${PYRUN[@]}" "$WORK/recording.py" frames "$FFPROBE" "$dir" "$FPS" >"$result.frames"
  else
    echo null >"$result.frames"
  fi
  "$PY" - "$result" "$stop_s" "$dir" <<'PY'
import json, os, re, sys
path, stop_s, directory = sys.argv[1], float(sys.argv[2]), sys.argv[3]
r = json.load(open(path))
r["frames"] = json.load(open(path + ".frames"))
os.remove(path + ".frames")
first, last = [json.loads(l) for l in open(path + ".probe").read().split("\n") if l.strip()][:2]
r["stop_seconds"] = round(stop_s, 2)
r["probe_first"], r["probe_last"] = first, last
names = [n for n in os.listdir(directory) if re.match(r"cam\d+_", n)]
r["files_total_at_end"] = len(names)
r["bytes_total_at_end"] = sum(os.path.getsize(os.path.join(directory, n)) for n in names)
r["playable"] = bool(first and first["playable"] and (last is None or last["playable"]))
json.dump(r, open(path, "w"))
os.remove(path + ".probe")
if r["frames"]:
    print(f"recording.sh: N={r['cameras']} {r['tool']}: {r['frames']['frames_written']} frames in "
          f"{r['frames']['files_checked']} files, {r['frames']['frames_lost']} lost", file=sys.stderr)
print(f"recording.sh: N={r['cameras']} {r['tool']}: stopped in {stop_s:.1f} s; cam0 first file "
      f"{first and first['file']}: {first and first['duration_seconds']} s, playable {first and first['playable']}; "
      f"last file {last and last['file']}: playable {last and last['playable']}", file=sys.stderr)
PY
}

# ---- the test cameras ----
note "starting testcam ($SOURCES cameras, ${WIDTH}x${HEIGHT}@${FPS}, GOP $GOP, $BITRATE kbit/s," \
  "loop ${LOOP_SECONDS}s, picture ${PATTERN:-default}); recordings in $DATA_ROOT"
[ "${RECORDING_REPORT_ONLY:-0}" = 1 ] || start_testcam "$SOURCES" --loop-seconds "$LOOP_SECONDS" ${PATTERN_ARGS[@]+"${PATTERN_ARGS[@]}"}

settings_json() { # TOOL N PIDS(comma) DIR [PORT]
  "$PY" -c 'import json, sys
tool, n, pids, d, port, mode, window, settle, timeout, cam = sys.argv[1:11]
print(json.dumps({"tool": tool, "cameras": int(n), "pids": [int(p) for p in pids.split(",")], "dir": d,
                  "port": int(port) if port else None, "mode": mode, "window": float(window),
                  "settle": float(settle), "connect_timeout": float(timeout), "testcam_pid": int(cam)}))' \
    "$1" "$2" "$3" "$4" "${5:-}" "$MODE" "$WINDOW" "$SETTLE" "$CONNECT_TIMEOUT" "$TESTCAM_PID"
}

# ---- one camhub phase ----
phase_camhub() { # N ROUND
  local N="$1" dir="$WORK/n$1/r$2/camhub" data="$DATA_ROOT/n$1/r$2/camhub" port token="" record_line=""
  mkdir -p "$dir" "$data"
  port="$(free_port)"
  [ "$MODE" = always ] && record_line='record = "always"'
  {
    camhub_config_head "$port" 15000 recording-bench-secret-0123456789 "$data"
    printf 'min_free_mb = 256\n'
    printf '[recording]\nformat = "%s"\nsegment_seconds = %s\n' "$FORMAT" "$SEGMENT"
    for ((k = 0; k < N; k++)); do
      printf '\n[[cameras]]\nid = "cam%d"\nurl = "rtsp://127.0.0.1:%s/cam%d"\n%s\n' "$k" "$CAM_PORT" "$k" "$record_line"
    done
  } >"$dir/camhub.toml"
  if [ "$MODE" = api ]; then
    token="$(camhub_token recording-bench "$dir/camhub.toml")"
  fi
  note "N=$N camhub: starting on port $port ($MODE, $FORMAT, ${SEGMENT} s segments)"
  start_camhub "$dir"
  run_measure "$(settings_json camhub "$N" "$CAMHUB_PID" "$data/recordings" "$port")" "$dir/result.json" "$token" \
    || fail_with_log "N=$N camhub failed; log tail:" "$dir/camhub.log"
  timed_stop "$CAMHUB_STOP_GRACE" "$CAMHUB_PID"
  CAMHUB_PID=""
  finish_phase "$dir/result.json" "$data/recordings" "$STOP_SECONDS"
  report_warnings "$dir/camhub.log" "N=$N camhub: "
  RESULTS+=("$dir/result.json")
  [ "$KEEP" = 1 ] || rm -rf "$data"
}

# ---- one FFmpeg phase ----
phase_ffmpeg() { # N ROUND
  local N="$1" dir="$WORK/n$1/r$2/ffmpeg" data="$DATA_ROOT/n$1/r$2/ffmpeg" k pids
  mkdir -p "$dir" "$data"
  note "N=$N ffmpeg: starting $N processes"
  FFMPEG_PIDS=()
  for ((k = 0; k < N; k++)); do
    exec_ffmpeg "rtsp://127.0.0.1:$CAM_PORT/cam$k" "$data/cam${k}_%03d.mp4" </dev/null >/dev/null 2>"$dir/cam$k.log" &
    FFMPEG_PIDS+=($!)
  done
  # Frigate's watchdog starts again an FFmpeg that exits, or that writes nothing for a while; so does this peer, until
  # every camera has written 64 KiB of its first file or RESTART_WINDOW seconds passed. 1 to 3 of 50 or 100 started at
  # once never got their stream: they waited without writing until stopped ("Output file #0 does not contain any
  # stream" is what FFmpeg says then), in most runs. One that has not written 64 KiB STUCK_AFTER seconds after its
  # start is stopped and started again.
  local restarts=0 t written started=()
  for ((k = 0; k < N; k++)); do started[k]=0; done
  for ((t = 1; t <= RESTART_WINDOW; t++)); do
    sleep 1
    written=0
    for ((k = 0; k < N; k++)); do
      # An exited process is started again even after its first file (the measurement needs every one running).
      if process_running "${FFMPEG_PIDS[$k]}" \
        && [ "$(stat -c %s "$data/cam${k}_000.mp4" 2>/dev/null || echo 0)" -ge 65536 ]; then
        written=$((written + 1))
      elif ! process_running "${FFMPEG_PIDS[$k]}" || ((t - started[k] >= STUCK_AFTER)); then
        kill -9 "${FFMPEG_PIDS[$k]}" 2>/dev/null || true
        wait "${FFMPEG_PIDS[$k]}" 2>/dev/null || true
        rm -f "$data/cam${k}_"*.mp4
        exec_ffmpeg "rtsp://127.0.0.1:$CAM_PORT/cam$k" "$data/cam${k}_%03d.mp4" </dev/null >/dev/null 2>>"$dir/cam$k.log" &
        FFMPEG_PIDS[k]=$!
        started[k]=$t
        restarts=$((restarts + 1))
      fi
    done
    [ "$written" -lt "$N" ] || break
  done
  [ "$restarts" = 0 ] || note "N=$N ffmpeg: $restarts processes exited or wrote nothing, and were started again"
  pids="$(IFS=,; echo "${FFMPEG_PIDS[*]}")"
  if ! run_measure "$(settings_json ffmpeg "$N" "$pids" "$data")" "$dir/result.json"; then
    # The peer failing is a result too: reported, and the other phases go on.
    note "N=$N ffmpeg failed; logs:"
    for ((k = 0; k < N && k < 5; k++)); do tail -n 5 "$dir/cam$k.log" >&2 || true; done
    FAILED+=("FFmpeg at N=$N failed (its processes' logs: $dir/cam*.log)")
    timed_stop "$CAMHUB_STOP_GRACE" "${FFMPEG_PIDS[@]}"
    FFMPEG_PIDS=()
    [ "$KEEP" = 1 ] || rm -rf "$data"
    return 0
  fi
  timed_stop "$CAMHUB_STOP_GRACE" "${FFMPEG_PIDS[@]}"
  FFMPEG_PIDS=()
  finish_phase "$dir/result.json" "$data" "$STOP_SECONDS"
  local errors
  errors="$(find "$dir" -name 'cam*.log' -size +0 | wc -l)"
  if [ "$errors" -gt 0 ]; then
    note "N=$N ffmpeg: $errors processes logged errors, e.g.:"
    find "$dir" -name 'cam*.log' -size +0 | head -n 1 | xargs head -n 3 >&2
  fi
  RESULTS+=("$dir/result.json")
  [ "$KEEP" = 1 ] || rm -rf "$data"
}

read -r -a RESULTS <<<"${RECORDING_EARLIER:-}"
FAILED=()
[ -z "${RECORDING_FAILED:-}" ] || FAILED+=("$RECORDING_FAILED")
[ "${RECORDING_REPORT_ONLY:-0}" = 1 ] && COUNTS=()
for N in "${COUNTS[@]}"; do
  for ((round = 1; round <= ROUNDS; round++)); do
    for tool in "${TOOLS[@]}"; do
      "phase_$tool" "$N" "$round"
    done
  done
done

# ---- the report ----
collect_versions
RECORDING_FAILED_NOTES="$(printf '%s\n' ${FAILED[@]+"${FAILED[@]}"})" "${PYRUN[@]}" - "$EVIDENCE" "$commit" "$version" "$ffmpeg_version" "$FFMPEG_CMD" "$MODE" "$FORMAT" "$SEGMENT" "$WIDTH" \
  "$HEIGHT" "$FPS" "$GOP" "$BITRATE" "$LOOP_SECONDS" "$SOURCES" "$PATTERN" "$WINDOW" "${COUNTS[*]}" "${TOOLS[*]}" \
  "${RESULTS[@]}" <<'PY'
import json, os, sys
from benchlib import run_line, run_meta, stream_text, testcam_source, write_json, write_markdown

(evidence, commit, version, ffmpeg_version, ffmpeg_cmd, mode, fmt, segment, width, height, fps, gop, bitrate, loop_s,
 sources, pattern, window, counts, tools, *files) = sys.argv[1:]
runs = [json.load(open(f)) for f in files]
counts = " ".join(sorted({str(r["cameras"]) for r in runs}, key=int))  # what ran, this time or before
# FFmpeg's figures from /work/shared/perf-anchors.md (60 s window, gst-rtsp-server source), for orientation.
ANCHOR_FFMPEG_CPU = {1: 0.80, 10: 0.66, 50: 0.59}
ANCHOR_FFMPEG_PSS = {1: 48.0, 10: 15.6, 50: 12.5}

by_n = {}
for r in runs:
    by_n.setdefault(r["cameras"], {}).setdefault(r["tool"], []).append(r)
# With several rounds, each recorder's median round (by CPU per camera) stands for it.
for pair in by_n.values():
    for tool, rs in pair.items():
        rs.sort(key=lambda r: r["cpu_percent_per_camera"])
        pair[tool] = rs[(len(rs) - 1) // 2]
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
            "rounds": len([r for r in runs if r["cameras"] == n and r["tool"] == "camhub"]),
            "camhub_frames_lost": (c.get("frames") or {}).get("frames_lost"),
            "ffmpeg_frames_lost": (f.get("frames") or {}).get("frames_lost"),
        })
        row["cpu_target_met"] = row["cpu_ratio_camhub_over_ffmpeg"] is not None and row["cpu_ratio_camhub_over_ffmpeg"] <= 0.5
    row["anchor_ffmpeg_cpu_percent_per_camera"] = ANCHOR_FFMPEG_CPU.get(n)
    row["anchor_ffmpeg_pss_mib_per_camera"] = ANCHOR_FFMPEG_PSS.get(n)
    comparison.append(row)

meta = {
    **run_meta("recording", commit, version, width, height, fps, gop, bitrate, ffmpeg_version),
    "source": testcam_source(loop_s, pattern, sources),
    "camhub_setup": (f"`camhub run`, cameras with record = \"always\"" if mode == "always"
                     else "`camhub run`, start_recording per camera over the API")
                    + f"; [recording] format = \"{fmt}\", segment_seconds = {segment}, other keys at their defaults "
                      "(pre_roll_seconds 5, fragment_ms 500)",
    "ffmpeg_command": ffmpeg_cmd + " (one process per camera, stdin from /dev/null)",
    "method": "phases run one after the other (never both recorders at once; with several rounds, alternately, and "
              "each recorder's median round by CPU is compared), each after all cameras connected and "
              "wrote 64 KiB, plus a settle time; CPU = utime+stime over the window (% of one core; FFmpeg: sum of its "
              "processes); RSS/PSS from smaps_rollup each second, summed over processes, mean; written = growth of "
              "each camera's files over the window; playable = ffprobe of cam0's first and last file after stopping",
}
short = float(window) < 29.5 or not {"10", "50"} <= set(counts.split()) or tools.split() != ["camhub", "ffmpeg"]
meta["short_run"] = short
failed = [l for l in os.environ.get("RECORDING_FAILED_NOTES", "").splitlines() if l.strip()]
write_json(os.path.join(evidence, "recording.json"),
           {**meta, "runs": runs, "comparison": comparison, "failed_phases": failed})

yn = lambda b: "yes" if b else "**no**"
lines = [
    "# camhub recording benchmark (next to FFmpeg)",
    "",
    run_line(meta),
    *(["", "**Short run** (not N = 10 and 50 at least with a 30 s window, both recorders): a check of the tooling, "
       "not figures to compare.", ""] if short else [""]),
    f"Streams: {stream_text(meta)}, from {meta['source']}. Each recorder records N of them, copying (no "
    f"re-encoding) into {segment} s segments; "
    f"window {runs[0]['window_seconds']:.0f} s after all cameras were recording and a settle time. The recorders "
    "run one after the other, never at the same time.",
    "",
    f"- camhub: {meta['camhub_setup']}.",
    f"- FFmpeg, one process per camera (as Frigate records): `{ffmpeg_cmd}`",
    "",
    "| N | recorder | CPU % total | CPU % per camera | RSS MiB | PSS MiB | PSS per camera MiB | written kbit/s per camera "
    "| written MiB per camera | threads | testcam CPU % | frames written | frames lost | load | playable |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
]
for r in runs:
    fr = r.get("frames") or {}
    lines.append(
        f"| {r['cameras']} | {r['tool']} | {r['cpu_percent']:.1f} | {r['cpu_percent_per_camera']:.2f} "
        f"| {r['rss_mib']:.1f} | {r['pss_mib']:.1f} | {r['pss_mib_per_camera']:.2f} "
        f"| {r['written_kbps_per_camera_mean']:.0f} | {r['written_bytes_per_camera_mean'] / 1048576:.2f} "
        f"| {r['threads']} | {r['testcam_cpu_percent']:.1f} | {fr.get('frames_written', '-')} "
        f"| {fr.get('frames_lost', '-')} | {r['loadavg_at_end']:.2f} | {yn(r['playable'])} |"
    )
pairs = [c for c in comparison if "cpu_ratio_camhub_over_ffmpeg" in c]
if pairs:
    lines += [
        "",
        "| N | camhub CPU % per camera | FFmpeg CPU % per camera | CPU camhub / FFmpeg (target <= 0.5) | target met "
        "| PSS camhub / FFmpeg | written camhub / FFmpeg | frames lost camhub / FFmpeg | FFmpeg anchor CPU % per camera |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    fx = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
    for c in pairs:
        lines.append(
            f"| {c['cameras']} | {c['camhub_cpu_percent_per_camera']:.2f} | {c['ffmpeg_cpu_percent_per_camera']:.2f} "
            f"| {fx(c['cpu_ratio_camhub_over_ffmpeg'])} | {yn(c['cpu_target_met'])} "
            f"| {fx(c['pss_ratio_camhub_over_ffmpeg'])} | {fx(c['written_ratio_camhub_over_ffmpeg'])} "
            f"| {c['camhub_frames_lost']} / {c['ffmpeg_frames_lost']} "
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
if failed:
    lines += ["", "**Failed phases**: " + "; ".join(failed) + "."]
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
write_markdown(os.path.join(evidence, "recording.md"), lines)
PY
