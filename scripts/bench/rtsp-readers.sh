#!/usr/bin/env bash
# RTSP republishing benchmark: camhub's CPU and memory while N FFmpeg readers watch ONE camera through camhub's RTSP
# server (rtsp://127.0.0.1:PORT/cam0, one shared media, no re-encoding), for N = 0 (ingest only), 1, 5, 20 by default.
#
# One `camhub testcam --loop-seconds 4 --pattern snow` process serves the reference stream (1280x720 H.264, 30 fps,
# GOP 30, 2000 kbit/s); one `camhub run` ingests it as cam0. For each N, N readers start, exactly as READER_CMD below
# (stdin from /dev/null); once camhub counts N RTSP readers (/metrics camhub_stream_readers) and a settle time has
# passed, the script measures over a window:
#   CPU     utime+stime (/proc/PID/stat) as % of one core, for camhub and for the N readers together;
#   memory  camhub's RSS and PSS (/proc/PID/smaps_rollup) sampled every second: mean, peak;
#   sent    camhub_stream_sent_bytes_total growth over the window (RTP bytes, once per reader), as Mbit/s;
# then stops the readers and waits until camhub counts none (its media is torn down 2 s after the last reader).
# Results: evidence/publish.json and evidence/publish.md. Logs: evidence/tmp/publish/.
#
# Usage:  scripts/bench/rtsp-readers.sh [N ...]      e.g. scripts/bench/rtsp-readers.sh 1 5
# Env:    PUBLISH_COUNTS="0 1 5 20"   reader counts (arguments win; 0 measures ingest alone)
#         PUBLISH_WINDOW=20           measurement window, seconds
#         PUBLISH_SETTLE=5            wait after all readers are counted, seconds
#         PUBLISH_PATTERN=snow        testcam picture (snow makes the encoder really spend 2000 kbit/s)
#         FFMPEG_BIN=ffmpeg FFPROBE_BIN=ffprobe
#         CAMHUB_BIN=path             use this binary and skip the build (default: cargo build --release)
#         EVIDENCE_DIR=evidence       where the results go
# Needs: bash, /usr/bin/python3 (standard library), ffmpeg, Linux /proc.
set -euo pipefail

BENCH_NAME=rtsp-readers.sh
# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNTS=()
for n in ${@:-${PUBLISH_COUNTS:-0 1 5 20}}; do
  [[ "$n" =~ ^[0-9]+$ ]] || { note "'$n' is not a reader count"; exit 64; }
  COUNTS+=("$n")
done
WINDOW="${PUBLISH_WINDOW:-20}"
SETTLE="${PUBLISH_SETTLE:-5}"
require_ffmpeg
build_camhub
testcam_pattern "${PUBLISH_PATTERN-snow}" ""
bench_workdir publish data
bench_traps

READER_CMD="ffmpeg -hide_banner -loglevel error -rtsp_transport tcp -i rtsp://127.0.0.1:PORT/cam0 -c copy -f null -"

start_testcam 1 --loop-seconds "$LOOP_SECONDS" "${PATTERN_ARGS[@]}"
HTTP_PORT="$(free_port)"
RTSP_PORT="$(free_port)"
{
  camhub_config_head "$HTTP_PORT" 5000 "rtsp-readers-bench-secret-0123456789" "$WORK/data"
  printf '[rtsp_server]\nlisten = "127.0.0.1:%s"\n' "$RTSP_PORT"
  printf '[[cameras]]\nid = "cam0"\nurl = "rtsp://127.0.0.1:%s/cam0"\n' "$CAM_PORT"
} >"$WORK/camhub.toml"
start_camhub "$WORK"
note "camhub pid $CAMHUB_PID (http $HTTP_PORT, rtsp $RTSP_PORT)"

cat >"$WORK/publish.py" <<'PY'
"""Helper of scripts/bench/rtsp-readers.sh: `wait PORT N TIMEOUT` waits until camhub counts N RTSP readers of cam0;
`measure SETTINGS_JSON` prints one phase's result as JSON."""
import json, sys, time
from benchlib import TCK, alive, cpu_ticks, http_get, mem_kib, threads


def readers(port):
    text = http_get(port, "/metrics")
    for line in text.splitlines():
        if line.startswith('camhub_stream_readers{camera="cam0",protocol="rtsp"}'):
            return int(line.split()[-1])
    return -1


def sent(port):
    text = http_get(port, "/metrics")
    for line in text.splitlines():
        if line.startswith('camhub_stream_sent_bytes_total{camera="cam0"}'):
            return int(line.split()[-1])
    return 0


def wait(port, n, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if readers(port) == n:
                return
        except OSError:
            pass
        time.sleep(0.2)
    print(f"rtsp-readers.sh: camhub did not count {n} readers in {timeout} s (last {readers(port)})", file=sys.stderr)
    sys.exit(1)


def measure(s):
    port, camhub, pids, window = s["port"], s["camhub"], s["readers"], s["window"]
    for p in [camhub] + pids:
        if not alive(p):
            print(f"rtsp-readers.sh: process {p} is gone", file=sys.stderr)
            sys.exit(1)
    w0 = time.monotonic()
    c0, r0, b0 = cpu_ticks(camhub), sum(cpu_ticks(p) for p in pids), sent(port)
    samples = []
    deadline = w0 + window
    while True:
        m = mem_kib(camhub)
        samples.append((m["rss"], m["pss"]))
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(1.0, left))
    c1, r1, b1 = cpu_ticks(camhub), sum(cpu_ticks(p) for p in pids), sent(port)
    elapsed = time.monotonic() - w0
    alive_readers = sum(1 for p in pids if alive(p))
    print(json.dumps({
        "readers": len(pids),
        "readers_alive_at_end": alive_readers,
        "readers_counted_by_camhub": readers(port),
        "window_s": round(elapsed, 2),
        "camhub_cpu_percent": round(100.0 * (c1 - c0) / TCK / elapsed, 2),
        "readers_cpu_percent": round(100.0 * (r1 - r0) / TCK / elapsed, 2),
        "camhub_rss_mib_mean": round(sum(r for r, _ in samples) / len(samples) / 1024, 1),
        "camhub_rss_mib_peak": round(max(r for r, _ in samples) / 1024, 1),
        "camhub_pss_mib_mean": round(sum(p for _, p in samples) / len(samples) / 1024, 1),
        "camhub_threads": threads(camhub),
        "sent_mbit_s": round((b1 - b0) * 8 / elapsed / 1e6, 2),
    }))


if __name__ == "__main__":
    if sys.argv[1] == "wait":
        wait(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        measure(json.loads(sys.argv[2]))
PY

# camhub is up and cam0 connected (the readers would otherwise get 503).
"${PYRUN[@]}" - "$HTTP_PORT" <<'PY' || fail_with_log "cam0 did not connect" "$WORK/camhub.log"
import sys, time
from benchlib import wait_connected
wait_connected(int(sys.argv[1]), 1, 60, lambda: None, lambda m: print("rtsp-readers.sh:", m, file=sys.stderr))
PY

RESULTS=()
for n in "${COUNTS[@]}"; do
  FFMPEG_PIDS=()
  for ((i = 0; i < n; i++)); do
    "$FFMPEG" -hide_banner -loglevel error -rtsp_transport tcp -i "rtsp://127.0.0.1:$RTSP_PORT/cam0" -c copy -f null - \
      </dev/null >/dev/null 2>>"$WORK/readers.log" &
    FFMPEG_PIDS+=("$!")
  done
  "${PYRUN[@]}" "$WORK/publish.py" wait "$HTTP_PORT" "$n" 60 || fail_with_log "N=$n: readers not counted" "$WORK/camhub.log"
  note "N=$n: all readers counted; settling ${SETTLE} s, measuring ${WINDOW} s"
  sleep "$SETTLE"
  pids_json="[$(IFS=,; echo "${FFMPEG_PIDS[*]}")]"
  result="$("${PYRUN[@]}" "$WORK/publish.py" measure \
    "{\"port\": $HTTP_PORT, \"camhub\": $CAMHUB_PID, \"readers\": $pids_json, \"window\": $WINDOW}")"
  note "N=$n: $result"
  RESULTS+=("$result")
  stop_pids 2 "${FFMPEG_PIDS[@]}"
  FFMPEG_PIDS=()
  "${PYRUN[@]}" "$WORK/publish.py" wait "$HTTP_PORT" 0 30 || fail_with_log "readers not released" "$WORK/camhub.log"
  sleep 3
done
report_warnings "$WORK/camhub.log"

collect_versions
"${PYRUN[@]}" - "$EVIDENCE" "$commit" "$version" "$ffmpeg_version" "$READER_CMD" "$WIDTH" "$HEIGHT" "$FPS" "$GOP" \
  "$BITRATE" "$LOOP_SECONDS" "$PATTERN" "${RESULTS[@]}" <<'PY'
import json, sys
from benchlib import run_line, run_meta, stream_text, testcam_source, write_json, write_markdown
(evidence, commit, version, ffmpeg_version, reader_cmd, width, height, fps, gop, bitrate, loop_s, pattern) = sys.argv[1:13]
results = [json.loads(r) for r in sys.argv[13:]]
meta = run_meta("rtsp_readers", commit, version, int(width), int(height), int(fps), int(gop), int(bitrate),
                ffmpeg_version)
report = {**meta, "source": testcam_source(loop_s, pattern, 1), "reader_command": reader_cmd, "results": results}
write_json(f"{evidence}/publish.json", report)
lines = [
    "# RTSP republishing: one camera, N readers",
    "",
    run_line(meta),
    "",
    f"Stream: {stream_text(meta)}; {report['source']}. camhub ingests it (retina) and serves it at "
    "rtsp://127.0.0.1:PORT/cam0: one shared media (appsrc ! rtph264pay), no re-encoding. Readers: "
    f"`{reader_cmd}`. CPU is % of one core over the window (utime+stime from /proc); the readers' CPU is their sum. "
    "N = 0 is camhub ingesting with nobody watching (the media is built only for readers).",
    "",
    "| readers | camhub CPU | readers' CPU (all) | camhub RSS mean / peak | camhub PSS | camhub threads | sent |",
    "|---:|---:|---:|---:|---:|---:|---:|",
]
for r in results:
    lines.append(
        f"| {r['readers']} | {r['camhub_cpu_percent']:.2f} % | {r['readers_cpu_percent']:.2f} % | "
        f"{r['camhub_rss_mib_mean']:.1f} / {r['camhub_rss_mib_peak']:.1f} MiB | {r['camhub_pss_mib_mean']:.1f} MiB | "
        f"{r['camhub_threads']} | {r['sent_mbit_s']:.2f} Mbit/s |")
lines += ["", "Generated by `scripts/bench/rtsp-readers.sh`; raw numbers in `evidence/publish.json`.", ""]
write_markdown(f"{evidence}/publish.md", lines)
PY
