#!/usr/bin/env bash
# HLS benchmark: camhub's low-latency HLS against its own WebRTC and against FFmpeg making HLS from the same camera.
# One `camhub testcam --clock-blocks` camera (640x360, 30 fps, GOP 30, 1000 kbit/s, encoded live): each frame carries
# the wall-clock time it was drawn at (16-pixel blocks along its bottom: Unix ms, then a check byte).
#   latency  glass to glass in Debian's Chromium (headless, software decoding), same machine, same clock: camhub's web
#            page plays the camera and tests/browser/hls_latency.mjs reads the clock off every presented frame and
#            takes it from Date.now(), for HLS_LATENCY_SECONDS after HLS_WARM seconds. Twice: over WebRTC (WHEP, the
#            page's first choice; camhub offers 127.0.0.1 as its ICE candidate) and over LL-HLS (camhub with
#            [webrtc] enabled = false, so the page plays HLS with hls.js from assets/web). p50, p90, max per transport.
#   cpu      camhub's CPU (utime+stime, % of one core, over HLS_CPU_WINDOW seconds) with no viewer (the camera's
#            ingest alone), then with N FFmpeg readers of the HLS playlist (`-c copy -f null`, each its own client),
#            N in HLS_VIEWERS; the first viewer pays for the camera's muxer, the others only for being served. The
#            peer, in the same run: FFmpeg making HLS from camhub's RTSP republish of the same camera
#            (`ffmpeg -rtsp_transport tcp -i rtsp://... -c copy -f hls -hls_segment_type fmp4 -hls_time 1`, writing
#            files, as one runs it behind a web server), its own CPU over the same window.
# Results: evidence/hls.json and the figures part of evidence/hls.md (the file's prose around them is kept). Logs:
# evidence/tmp/hls/.
#
# Usage:  scripts/bench/hls.sh
# Env:    HLS_LATENCY_SECONDS=10   frames read per transport, seconds
#         HLS_WARM=3               playing before the reading starts, seconds
#         HLS_CPU_WINDOW=15        each CPU window, seconds
#         HLS_VIEWERS="1 5"        FFmpeg HLS readers per window
#         CAMHUB_BIN=path          use this binary and skip the build (default: cargo build --release)
#         EVIDENCE_DIR=evidence
# Needs: node with tests/browser's node_modules (scripts/install-deps.sh --test), Debian's chromium, ffmpeg, and
# assets/web/hls.light.min.js (scripts/install-models.sh).
set -euo pipefail

BENCH_NAME=hls.sh
# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LATENCY_SECONDS="${HLS_LATENCY_SECONDS:-10}"
WARM="${HLS_WARM:-3}"
WINDOW="${HLS_CPU_WINDOW:-15}"
read -r -a VIEWERS <<<"${HLS_VIEWERS:-1 5}"
for v in "$LATENCY_SECONDS" "$WARM" "$WINDOW" "${VIEWERS[@]}"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { note "HLS_* settings must be positive integers (got $v)"; exit 64; }
done
HLS_JS="$ROOT/assets/web/hls.light.min.js"
[ -f "$HLS_JS" ] || { note "$HLS_JS is missing: run scripts/install-models.sh"; exit 1; }
[ -d "$ROOT/tests/browser/node_modules/playwright-core" ] || {
  note "tests/browser/node_modules is missing: run scripts/install-deps.sh --test"
  exit 1
}
# shellcheck disable=SC2034 # read by lib.sh's start_testcam
WIDTH=640 HEIGHT=360 FPS=30 GOP=30 BITRATE=1000
require_ffmpeg
build_camhub
bench_workdir hls whep hls peer
bench_traps
TCK=$(getconf CLK_TCK)

start_testcam 1 --clock-blocks

# cpu_percent PID SECONDS: the process's CPU over the next SECONDS, in % of one core.
cpu_percent() {
  local a b
  a=$(awk '{print $14 + $15}' "/proc/$1/stat")
  sleep "$2"
  b=$(awk '{print $14 + $15}' "/proc/$1/stat")
  awk -v a="$a" -v b="$b" -v t="$TCK" -v s="$2" 'BEGIN { printf "%.2f", (b - a) * 100 / t / s }'
}

# phase NAME EXTRA_TOML: camhub on the camera with EXTRA_TOML; sets DIR, PORT, TOKEN once the camera is connected.
phase() {
  DIR="$WORK/$1"
  PORT=$(free_port)
  {
    camhub_config_head "$PORT" 2000 "hls-bench-secret-0123456789abcdef" "$DIR/data"
    printf '[rtsp_server]\nlisten = "127.0.0.1:%s"\n[rtmp]\nenabled = false\n[srt]\nenabled = false\n' "$(free_port)"
    printf '[v4l2]\nenabled = false\n[hls]\nplayer_js = "%s"\n%s\n' "$HLS_JS" "$2"
    printf '[[cameras]]\nid = "cam0"\nurl = "rtsp://127.0.0.1:%s/cam0"\n' "$CAM_PORT"
  } >"$DIR/camhub.toml"
  TOKEN=$(camhub_token bench "$DIR/camhub.toml")
  start_camhub "$DIR"
  local i
  for ((i = 0; i < 300; i++)); do
    curl -sf "http://127.0.0.1:$PORT/health/cameras" 2>/dev/null | grep -q '"connected":1}' && return 0
    kill -0 "$CAMHUB_PID" 2>/dev/null || fail_with_log "camhub exited" "$DIR/camhub.log"
    sleep 0.1
  done
  fail_with_log "cam0 did not connect in 30 s" "$DIR/camhub.log"
}

# latency NAME: the page's glass-to-glass latency, into $WORK/NAME-latency.json.
latency() {
  (cd "$ROOT/tests/browser" && CAMHUB_URL="http://127.0.0.1:$PORT/" CAMHUB_TOKEN="$TOKEN" SECONDS="$LATENCY_SECONDS" \
    WARM="$WARM" node hls_latency.mjs) 2>"$WORK/$1-browser.log" | sed -n 's/^@result //p' >"$WORK/$1-latency.json"
  [ -s "$WORK/$1-latency.json" ] || fail_with_log "the $1 latency run failed" "$WORK/$1-browser.log"
  note "$1: $(tail -n 1 "$WORK/$1-browser.log")"
}

phase whep $'[webrtc]\ncandidate_addresses = ["127.0.0.1"]'
latency whep
timed_stop "$CAMHUB_STOP_GRACE" "$CAMHUB_PID"
CAMHUB_PID=""

phase hls $'[webrtc]\nenabled = false'
sleep 3
IDLE=$(cpu_percent "$CAMHUB_PID" "$WINDOW")
note "camhub, no viewer: $IDLE %"
# One hls.js viewer in low-latency mode (parts and blocking reloads): camhub's CPU while the browser plays (the whole
# latency run: sign-in, the page's API calls, HLS), in % of one core.
T0=$(awk '{print $14 + $15}' "/proc/$CAMHUB_PID/stat")
S0=$(date +%s.%N)
latency hls
BROWSER=$(awk -v a="$T0" -v b="$(awk '{print $14 + $15}' "/proc/$CAMHUB_PID/stat")" -v t="$TCK" -v s0="$S0" \
  -v s1="$(date +%s.%N)" 'BEGIN { printf "%.2f", (b - a) * 100 / t / (s1 - s0) }')
note "camhub while one hls.js viewer plays: $BROWSER %"
URL="http://127.0.0.1:$PORT/hls/cam0/index.m3u8"
CPU_LINES=()
for n in "${VIEWERS[@]}"; do
  FFMPEG_PIDS=()
  for ((i = 0; i < n; i++)); do
    "$FFMPEG" -nostdin -hide_banner -loglevel error -headers "Authorization: Bearer $TOKEN"$'\r\n' -i "$URL" \
      -c copy -f null - 2>"$WORK/hls/reader-$n-$i.log" &
    FFMPEG_PIDS+=($!)
  done
  sleep 5
  C=$(cpu_percent "$CAMHUB_PID" "$WINDOW")
  for p in "${FFMPEG_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || fail_with_log "an HLS reader died" "$WORK/hls/reader-$n-0.log"; done
  stop_pids 2 "${FFMPEG_PIDS[@]}"
  FFMPEG_PIDS=()
  note "camhub, $n HLS viewers: $C %"
  CPU_LINES+=("$n $C")
  sleep 2
done
# The peer: FFmpeg making HLS files from camhub's RTSP republish of the same camera.
RTSP_PORT=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"$/\1/p' "$WORK/hls/camhub.toml" | sed -n 2p)
"$FFMPEG" -nostdin -hide_banner -loglevel error -rtsp_transport tcp -i "rtsp://127.0.0.1:$RTSP_PORT/cam0" -c copy \
  -f hls -hls_segment_type fmp4 -hls_time 1 -hls_list_size 7 -hls_flags delete_segments \
  "$WORK/peer/index.m3u8" 2>"$WORK/peer/ffmpeg.log" &
PEER_PID=$!
FFMPEG_PIDS=("$PEER_PID")
sleep 5
PEER=$(cpu_percent "$PEER_PID" "$WINDOW")
ls "$WORK/peer"/*.m4s >/dev/null 2>&1 || fail_with_log "FFmpeg wrote no HLS segment" "$WORK/peer/ffmpeg.log"
stop_pids 2 "$PEER_PID"
FFMPEG_PIDS=()
note "FFmpeg -f hls (the peer's muxer): $PEER %"
timed_stop "$CAMHUB_STOP_GRACE" "$CAMHUB_PID"
CAMHUB_PID=""
collect_versions

COMMIT="$commit" VERSION="$version" FFMPEG_VERSION="$ffmpeg_version" HLS_CPU_WINDOW="$WINDOW" \
  "${PYRUN[@]}" - "$WORK" "$EVIDENCE" "$IDLE" "$PEER" "$BROWSER" "${CPU_LINES[@]}" <<'PY'
import json, os, statistics, sys
from benchlib import run_meta, run_line, write_json
work, evidence, idle, peer = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
browser = float(sys.argv[5])
cpu = [(int(n), float(c)) for n, c in (l.split() for l in sys.argv[6:])]
meta = run_meta("hls", os.environ["COMMIT"], os.environ["VERSION"], 640, 360, 30, 30, 1000, os.environ["FFMPEG_VERSION"])

def figures(name):
    r = json.load(open(f"{work}/{name}-latency.json"))
    xs = sorted(r["latencies"])
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]
    return {"transport": r["transport"], "frames": len(xs), "unreadable": r["unreadable"],
            "p50_ms": q(0.5), "p90_ms": q(0.9), "max_ms": xs[-1], "mean_ms": round(statistics.mean(xs), 1)}

whep, hls = figures("whep"), figures("hls")
first = next((c for n, c in cpu if n == 1), None)
per_viewer = [{"viewers": n, "camhub_cpu_percent": c, "over_idle_percent": round(c - idle, 2)} for n, c in cpu]
more = [(n, c) for n, c in cpu if n > 1]
extra = round((more[-1][1] - first) / (more[-1][0] - 1), 3) if first is not None and more else None
result = dict(meta, latency={"whep": whep, "hls": hls},
              cpu={"window_s": int(os.environ.get("HLS_CPU_WINDOW", "15")), "idle_percent": idle, "viewers": per_viewer,
                   "first_viewer_percent": round(first - idle, 2) if first is not None else None,
                   "each_further_viewer_percent": extra, "peer_ffmpeg_hls_percent": peer,
                   "one_hlsjs_viewer_percent": browser})
write_json(f"{evidence}/hls.json", result)
lines = [
    f"Run: {run_line(result)}",
    "",
    "| glass to glass in Chromium | frames | p50 | p90 | max |",
    "|---|---|---|---|---|",
    f"| LL-HLS (hls.js, parts of 200 ms) | {hls['frames']} | {hls['p50_ms']} ms | {hls['p90_ms']} ms | {hls['max_ms']} ms |",
    f"| WebRTC (WHEP), same run | {whep['frames']} | {whep['p50_ms']} ms | {whep['p90_ms']} ms | {whep['max_ms']} ms |",
    "",
    f"camhub's CPU over {result['cpu']['window_s']} s windows, % of one core: no viewer {idle:.2f} %; "
    + "; ".join(f"{v['viewers']} FFmpeg HLS reader{'s' if v['viewers'] > 1 else ''} {v['camhub_cpu_percent']:.2f} %" for v in per_viewer)
    + f"; while one hls.js viewer plays in low-latency mode (parts, blocking reloads; the page's own API calls included) {browser:.2f} %.",
    "",
    f"The first FFmpeg reader costs camhub {result['cpu']['first_viewer_percent']} % (the camera's muxer and serving "
    f"it); each further reader {extra} %. The peer, FFmpeg making fMP4 HLS files from the same camera (`-c copy -f hls "
    f"-hls_time 1`, reading camhub's RTSP republish; a web server would serve the files): {peer:.2f} % for its RTSP "
    "read and muxing together.",
]
begin, end = "<!-- bench:hls begin -->", "<!-- bench:hls end -->"
path = f"{evidence}/hls.md"
try:
    text = open(path).read()
except FileNotFoundError:
    text = f"# HLS\n\n{begin}\n{end}\n"
if begin not in text:
    text += f"\n{begin}\n{end}\n"
head, rest = text.split(begin, 1)
tail = rest.split(end, 1)[1]
open(path, "w").write(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)
print("\n".join(lines))
PY
