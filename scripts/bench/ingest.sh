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

BENCH_NAME=ingest.sh
# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_counts "${INGEST_COUNTS:-1 10 50}" "$@"
WINDOW="${INGEST_WINDOW:-30}"
SETTLE="${INGEST_SETTLE:-5}"
CONNECT_TIMEOUT="${INGEST_CONNECT_TIMEOUT:-120}"

build_camhub
testcam_pattern "${INGEST_PATTERN-snow}" " (check the measured bitrate)"

bench_workdir ingest
bench_traps

# ---- the test cameras ----
note "starting testcam ($SOURCES cameras, ${WIDTH}x${HEIGHT}@${FPS}, GOP $GOP, $BITRATE kbit/s," \
  "loop ${LOOP_SECONDS}s, picture ${PATTERN:-default})"
start_testcam "$SOURCES" --loop-seconds "$LOOP_SECONDS" ${PATTERN_ARGS[@]+"${PATTERN_ARGS[@]}"}

# ---- one run per camera count ----
RESULTS=()
for N in "${COUNTS[@]}"; do
  dir="$WORK/n$N"
  mkdir -p "$dir/data"
  port="$(free_port)"
  {
    camhub_config_head "$port" 5000 ingest-bench-secret-0123456789 "$dir/data"
    for ((k = 0; k < N; k++)); do
      printf '\n[[cameras]]\nid = "cam%d"\nurl = "rtsp://127.0.0.1:%s/cam%d"\n' "$k" "$CAM_PORT" "$k"
    done
  } >"$dir/camhub.toml"
  note "N=$N: starting camhub on port $port"
  start_camhub "$dir"
  # In the background, so that a signal interrupts `wait` and the trap runs at once.
  "${PYRUN[@]}" - "$CAMHUB_PID" "$port" "$N" "$WINDOW" "$SETTLE" "$CONNECT_TIMEOUT" "$TESTCAM_PID" \
    >"$dir/result.json" <<'PY' &
"""Waits for N connected cameras, settles, then measures camhub (and, for context, testcam) over the window."""
import json, os, sys, time
from benchlib import TCK, alive, cpu_ticks, health, http_get, mem_kib, metric, threads, wait_connected

pid, port, n, window, settle, connect_timeout, cam_pid = sys.argv[1:8]
pid, port, n, cam_pid = int(pid), int(port), int(n), int(cam_pid)
window, settle, connect_timeout = float(window), float(settle), float(connect_timeout)


def log(msg):
    print(f"ingest.sh: N={n}: {msg}", file=sys.stderr, flush=True)


def check_alive():
    if not alive(pid):
        log("camhub exited before all cameras connected")
        sys.exit(1)


t0 = time.monotonic()
wait_connected(port, n, connect_timeout, check_alive, log, t0)
connect_s = time.monotonic() - t0
log(f"all {n} connected after {connect_s:.1f} s; settling {settle:.0f} s")
time.sleep(settle)

m0 = http_get(port, "/metrics")
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
m1 = http_get(port, "/metrics")
frames1, reconnects1 = metric(m1, "camhub_camera_frames_total"), metric(m1, "camhub_camera_reconnects_total")
bytes1 = metric(m1, "camhub_camera_received_bytes_total")
h1 = health(port)
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
  wait_measure || fail_with_log "N=$N failed; camhub log tail:" "$dir/camhub.log"
  timed_stop "$CAMHUB_STOP_GRACE" "$CAMHUB_PID"
  CAMHUB_PID=""
  "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); r["stop_seconds"] = round(float(sys.argv[2]), 2); json.dump(r, open(sys.argv[1], "w"))' \
    "$dir/result.json" "$STOP_SECONDS"
  RESULTS+=("$dir/result.json")
done

# ---- the report ----
collect_versions
"${PYRUN[@]}" - "$EVIDENCE" "$commit" "$version" "$WIDTH" "$HEIGHT" "$FPS" "$GOP" "$BITRATE" "$LOOP_SECONDS" \
  "$SOURCES" "$PATTERN" "${RESULTS[@]}" <<'PY'
import json, os, sys
from benchlib import run_line, run_meta, stream_text, testcam_source, write_json, write_markdown

evidence, commit, version, width, height, fps, gop, bitrate, loop_s, sources, pattern, *files = sys.argv[1:]
runs = [json.load(open(f)) for f in files]
meta = {
    **run_meta("ingest", commit, version, width, height, fps, gop, bitrate),
    "source": testcam_source(loop_s, pattern, sources),
    "method": "camhub utime+stime over the window (% of one core); RSS/PSS from smaps_rollup sampled each second (mean)",
}
short = min(r["window_seconds"] for r in runs) < 29.5 or [r["cameras"] for r in runs] != [1, 10, 50]
meta["short_run"] = short
write_json(os.path.join(evidence, "ingest.json"), {**meta, "runs": runs})

lines = [
    "# camhub ingest benchmark",
    "",
    run_line(meta),
    *(["", "**Short run** (not the default N = 1, 10, 50 with a 30 s window): a check of the tooling, not figures "
       "to compare.", ""] if short else []),
    f"Streams: {stream_text(meta)}, from {meta['source']}. Window {runs[0]['window_seconds']:.0f} s after all "
    "cameras connected and a settle time.",
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
write_markdown(os.path.join(evidence, "ingest.md"), lines)
PY
