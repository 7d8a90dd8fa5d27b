#!/usr/bin/env bash
# Inference benchmark: what object detection costs camhub and how fast it answers, each figure next to a peer measured
# in the same run, on 720p30 test cameras (1280x720, 30 fps, GOP 30, 2000 kbit/s, RTSP over TCP on 127.0.0.1):
#   1. inference time per model (coco: assets/models/coco-centernet.onnx on photos/person.jpg; blazeface:
#      assets/models/blazeface-front-128.onnx on photos/astronaut.png), p50/p99: camhub's in-process figure
#      (get_inference_status inference_p50_ms/p99_ms after INFERENCE_RUNS inferences on a camera showing the photo, one
#      camera per model, decoding every frame meanwhile) and, like for like, `cargo bench --bench inference` (camhub's
#      engine in process on the same photo, nothing else running) next to scripts/bench/inference_peer.py (ONNX
#      Runtime's Python API, 1 thread, the same model file and photo), both run before camhub starts;
#   2. frame-to-notification latency at 5 detections/s on a 720p30 camera showing person.jpg: camhub's own
#      latency_p50/p99_ms (frame arrival to tracker result) and, from outside, the receipt time of each `event`
#      notification (topic detection, type new or update) minus its frame_time (when the frame arrived at camhub).
#      Updates come at most once a second per object and only when it moves or scores higher, so a still photo gives
#      few; a second camera ("latency", end_after_s = 1) hides the photo 2 s and shows it 3 s in turn, so that each
#      appearance is a `new` event per object. Target: p50 <= 150 ms;
#   3. CPU per 720p30 camera with detection on (camhub's utime+stime, % of one core, minus the same cameras with
#      detection off in the same run): (a) a still scene (testcam --pattern smpte: colour bars, only a burnt-in clock
#      changing): target <= 1.5 points above ingest; (b) a busy scene (person.jpg shown, 5 inferences/s); next to a
#      Frigate-style chain on the same cameras: `ffmpeg -rtsp_transport tcp -i URL -f rawvideo -pix_fmt yuv420p
#      -vf fps=5,scale=512:-2 pipe:` into scripts/bench/frigate_peer.py (onnxruntime, 1 thread): for the busy scene it
#      runs the COCO model on every frame it gets (FFmpeg + Python CPU); for the still scene it runs no model (Frigate
#      decodes every frame but detects only on motion), so the peer's figure there is FFmpeg's decoding;
#   4. how many cameras showing person.jpg the machine holds at 5 detections/s each: N = INFERENCE_COUNTS in turn, a
#      fresh camhub each, until a camera's rate (actual_fps, and inferences over the window) falls below 90 % of 5/s or
#      dropped_frames grows; and the memory detection adds (RSS with detection on the N cameras minus RSS with it off
#      on the same N cameras, same process).
#
# Cameras. With INFERENCE_IMAGE_SOURCE=clip (the default), a live `camhub testcam --image PHOTO` is recorded once at the
# start (FFmpeg, -c copy, a whole number of GOPs from the stream's first keyframe) and looped by `testcam --file`,
# which costs next to nothing per camera: a live testcam encodes every camera with x264, which on a 2-core machine
# would take the CPU camhub is measured on (INFERENCE_IMAGE_SOURCE=live serves them live instead; only camhub's and
# the peers' processes are ever measured, never testcam's). The still scene is `testcam --loop-seconds 4 --pattern
# smpte`. The photo cameras hide the photo for 1 s in every 10 (testcam --image-schedule 1:9) because camhub decodes
# every frame and infers at the configured rate only once it has seen motion; a photo present from a camera's first
# frame never moves, and camhub then infers on keyframes only (about 1/s). The blazeface camera is square
# (INFERENCE_FACE_SIZE, 720x720): letterboxed from 16:9 into 128x128 the astronaut's face is too small to be found.
#
# Results: evidence/inference.json and evidence/inference.md. Logs, clips and raw results: evidence/tmp/inference/.
# Default run on an idle 2-core machine: about 6 minutes (clips 12 s, Python peer 10 s, camhub 2.5 min, Frigate chain
# 1 min, capacity 35-45 s per camera count tried, usually 3 or 4 counts), plus the build without CAMHUB_BIN.
#
# Usage:  scripts/bench/inference.sh [N ...]         camera counts for part 4, e.g. scripts/bench/inference.sh 1 2 4
# Env:    INFERENCE_PARTS="peer camhub frigate capacity"  which parts run (the report shows the others as not run)
#         INFERENCE_WINDOW=20          CPU windows of parts 3 (camhub and the Frigate chain), seconds
#         INFERENCE_SETTLE=5           wait after connecting and after each change before a window, seconds
#         INFERENCE_RUNS=100           camhub inferences per model before its figures are read (part 1)
#         INFERENCE_PEER_RUNS=100      inference_peer.py runs per model (after its 3 warm-up runs)
#         INFERENCE_LATENCY_SECONDS=20 how long the latency camera runs detection (part 2)
#         INFERENCE_FPS=5              detections per second per camera
#         INFERENCE_COUNTS="1 2 4 6 8"  camera counts for part 4 (arguments win); it stops at the first that fails
#         INFERENCE_CAPACITY_ALL=0     1: try every count even after one failed
#         INFERENCE_CAPACITY_WINDOW=15 part 4's window per count, seconds
#         INFERENCE_THREADS=           camhub's [inference] threads (empty: camhub's default)
#         INFERENCE_IMAGE_SOURCE=clip  clip or live (see above)
#         INFERENCE_FACE_SIZE=720x720  the blazeface camera's picture
#         INFERENCE_CONNECT_TIMEOUT=60 how long cameras may take to connect, seconds
#         INFERENCE_PYTHON=assets/.venv/bin/python  the Python with onnxruntime, numpy and pillow (scripts/install-models.sh)
#         FFMPEG_BIN=ffmpeg FFPROBE_BIN=ffprobe
#         CAMHUB_BIN=path              use this binary and skip the build (default: cargo build --release)
#         EVIDENCE_DIR=evidence        where the results go
# Needs: the assets of scripts/install-models.sh (ONNX Runtime, the two models, the photos, assets/.venv), bash,
#        /usr/bin/python3 with Debian's python3-websockets, ffmpeg, ffprobe, Linux /proc.
set -euo pipefail

BENCH_NAME=inference.sh
# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- settings ----
int_setting() { # NAME VALUE MIN
  [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge "$3" ] || { note "$1 must be an integer >= $3, not '$2'"; exit 64; }
}
read -r -a PARTS <<<"${INFERENCE_PARTS:-peer camhub frigate capacity}"
for p in "${PARTS[@]}"; do
  [[ "$p" =~ ^(peer|camhub|frigate|capacity)$ ]] || { note "INFERENCE_PARTS: '$p' is not peer, camhub, frigate or capacity"; exit 64; }
done
[ ${#PARTS[@]} -gt 0 ] || { note "INFERENCE_PARTS is empty"; exit 64; }
part() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }
WINDOW="${INFERENCE_WINDOW:-20}"
SETTLE="${INFERENCE_SETTLE:-5}"
RUNS="${INFERENCE_RUNS:-100}"
PEER_RUNS="${INFERENCE_PEER_RUNS:-100}"
LAT_SECONDS="${INFERENCE_LATENCY_SECONDS:-20}"
DET_FPS="${INFERENCE_FPS:-5}"
CAP_WINDOW="${INFERENCE_CAPACITY_WINDOW:-15}"
CAP_ALL="${INFERENCE_CAPACITY_ALL:-0}"
CONNECT_TIMEOUT="${INFERENCE_CONNECT_TIMEOUT:-60}"
THREADS="${INFERENCE_THREADS:-}"
IMAGE_SOURCE="${INFERENCE_IMAGE_SOURCE:-clip}"
FACE_SIZE="${INFERENCE_FACE_SIZE:-720x720}"
VENV_PY="${INFERENCE_PYTHON:-$ROOT/assets/.venv/bin/python}"
int_setting INFERENCE_WINDOW "$WINDOW" 1
int_setting INFERENCE_SETTLE "$SETTLE" 0
int_setting INFERENCE_RUNS "$RUNS" 1
int_setting INFERENCE_PEER_RUNS "$PEER_RUNS" 1
int_setting INFERENCE_LATENCY_SECONDS "$LAT_SECONDS" 1
int_setting INFERENCE_FPS "$DET_FPS" 1
[ "$DET_FPS" -le 30 ] || { note "INFERENCE_FPS must be at most 30"; exit 64; }
int_setting INFERENCE_CAPACITY_WINDOW "$CAP_WINDOW" 1
int_setting INFERENCE_CONNECT_TIMEOUT "$CONNECT_TIMEOUT" 1
[ -z "$THREADS" ] || int_setting INFERENCE_THREADS "$THREADS" 1
[[ "$CAP_ALL" == 0 || "$CAP_ALL" == 1 ]] || { note "INFERENCE_CAPACITY_ALL must be 0 or 1"; exit 64; }
[[ "$IMAGE_SOURCE" == clip || "$IMAGE_SOURCE" == live ]] || { note "INFERENCE_IMAGE_SOURCE must be clip or live"; exit 64; }
[[ "$FACE_SIZE" =~ ^([1-9][0-9]*)x([1-9][0-9]*)$ ]] || { note "INFERENCE_FACE_SIZE must be WIDTHxHEIGHT"; exit 64; }
FACE_W="${BASH_REMATCH[1]}" FACE_H="${BASH_REMATCH[2]}"
bench_counts "${INFERENCE_COUNTS:-1 2 4 6 8}" "$@"

# ---- what it needs ----
ORT_LIB="$ROOT/assets/onnxruntime/libonnxruntime.so"
COCO="$ROOT/assets/models/coco-centernet.onnx"
FACE="$ROOT/assets/models/blazeface-front-128.onnx"
PERSON="$ROOT/assets/photos/person.jpg"
ASTRONAUT="$ROOT/assets/photos/astronaut.png"
for f in "$ORT_LIB" "$COCO" "$FACE" "$PERSON" "$ASTRONAUT"; do
  [ -f "$f" ] || { note "${f#"$ROOT"/} is missing: run scripts/install-models.sh"; exit 1; }
done
if ! [ -x "$VENV_PY" ] || ! "$VENV_PY" -c 'import onnxruntime, numpy, PIL' 2>/dev/null; then
  note "$VENV_PY cannot import onnxruntime, numpy and PIL: run scripts/install-models.sh (or set INFERENCE_PYTHON)"
  exit 1
fi
"$PY" -c 'import websockets' 2>/dev/null || {
  note "needs the websockets module for $PY (apt-get install python3-websockets)"
  exit 1
}
require_ffmpeg

build_camhub
bench_workdir inference clips main frigate capacity

# The testcam processes (several: one picture each), stopped by the cleanup after everything else.
CAM_PIDS=()
bench_cleanup_hook() {
  stop_pids 10 ${CAM_PIDS[@]+"${CAM_PIDS[@]}"}
}
MEASURE_STOP_GRACE=15 # the measuring program stops its FFmpeg and Python children on SIGTERM
bench_traps

# start_cam NAME CAMERAS ARG...: `camhub testcam` in the background; sets STARTED_PID and STARTED_PORT.
start_cam() {
  local name="$1" cameras="$2" i port=""
  shift 2
  "${CHILD_ENV[@]}" RUST_LOG=warn "$BIN" testcam --listen 127.0.0.1:0 --cameras "$cameras" --fps "$FPS" --gop "$GOP" \
    --bitrate "$BITRATE" "$@" >"$WORK/testcam-$name.out" 2>"$WORK/testcam-$name.log" &
  STARTED_PID=$!
  CAM_PIDS+=("$STARTED_PID")
  for ((i = 0; i < 1200; i++)); do
    port="$(sed -n 's|^testcam: serving rtsp://[^:]*:\([0-9]*\)/cam0.*|\1|p' "$WORK/testcam-$name.out" 2>/dev/null || true)"
    if [ -n "$port" ]; then break; fi
    kill -0 "$STARTED_PID" 2>/dev/null || fail_with_log "testcam $name exited" "$WORK/testcam-$name.log"
    sleep 0.1
  done
  [ -n "$port" ] || { note "testcam $name did not start in 120 s"; exit 1; }
  STARTED_PORT="$port"
}

# stop_cam PID: stops one testcam and forgets it.
stop_cam() {
  local kept=() p
  stop_pids 10 "$1"
  for p in "${CAM_PIDS[@]}"; do
    if [ "$p" != "$1" ]; then kept+=("$p"); fi
  done
  CAM_PIDS=(${kept[@]+"${kept[@]}"})
}

# ---- the cameras ----
# Each photo camera: NAME, photo, size, schedule (ABSENT:PRESENT seconds, looped).
BUSY_ARGS=(--width "$WIDTH" --height "$HEIGHT" --image "$PERSON" --image-schedule 1:9)
LAT_ARGS=(--width "$WIDTH" --height "$HEIGHT" --image "$PERSON" --image-schedule 2:3)
FACE_ARGS=(--width "$FACE_W" --height "$FACE_H" --image "$ASTRONAUT" --image-schedule 1:9)
STILL_ARGS=(--width "$WIDTH" --height "$HEIGHT" --pattern smpte)

if [ "$IMAGE_SOURCE" = clip ]; then
  # One schedule cycle from the stream's start (its first frame is a keyframe; the cycles are whole GOPs), recorded
  # without re-encoding, all three at once.
  note "recording the photo clips (busy 10 s, latency 5 s, face 10 s) from live test cameras"
  declare -A CLIP_FRAMES=([busy]=$((10 * FPS)) [latency]=$((5 * FPS)) [face]=$((10 * FPS)))
  declare -A LIVE_PID=()
  FFMPEG_PIDS=()
  for name in busy latency face; do
    case $name in
      busy) args=("${BUSY_ARGS[@]}") ;;
      latency) args=("${LAT_ARGS[@]}") ;;
      face) args=("${FACE_ARGS[@]}") ;;
    esac
    start_cam "rec-$name" 1 "${args[@]}"
    LIVE_PID[$name]=$STARTED_PID
    "$FFMPEG" -nostdin -hide_banner -loglevel error -rtsp_transport tcp -timeout 20000000 \
      -i "rtsp://127.0.0.1:$STARTED_PORT/cam0" -c copy -frames:v "${CLIP_FRAMES[$name]}" -y "$WORK/clips/$name.mp4" \
      2>"$WORK/clips/$name.log" &
    FFMPEG_PIDS+=($!)
  done
  failed=""
  for i in 0 1 2; do
    wait "${FFMPEG_PIDS[$i]}" || failed="$failed $i"
  done
  FFMPEG_PIDS=()
  for i in $failed; do
    name=(busy latency face)
    fail_with_log "recording the ${name[$i]} clip failed (ffmpeg)" "$WORK/clips/${name[$i]}.log"
  done
  for name in busy latency face; do
    stop_cam "${LIVE_PID[$name]}"
    # Looped, a clip must start with a keyframe and hold exactly the frames asked for.
    flags="$("$FFPROBE" -v error -select_streams v -show_entries packet=flags -of csv=p=0 "$WORK/clips/$name.mp4")"
    count="$(grep -c . <<<"$flags" || true)"
    keys="$(grep -c K <<<"$flags" || true)"
    [ "$count" = "${CLIP_FRAMES[$name]}" ] && [[ "$(head -n 1 <<<"$flags")" == K* ]] || {
      note "clip $name: $count frames ($keys keyframes), first ${flags%%$'\n'*}; expected ${CLIP_FRAMES[$name]} from a keyframe"
      exit 1
    }
  done
  BUSY_ARGS=(--file "$WORK/clips/busy.mp4")
  LAT_ARGS=(--file "$WORK/clips/latency.mp4")
  FACE_ARGS=(--file "$WORK/clips/face.mp4")
  STILL_ARGS+=(--loop-seconds "$LOOP_SECONDS")
fi

note "starting the test cameras ($IMAGE_SOURCE): still (smpte), busy ($MAXN x person.jpg), latency, face"
start_cam still 1 "${STILL_ARGS[@]}"
STILL_PORT=$STARTED_PORT STILL_PID=$STARTED_PID
start_cam busy "$MAXN" "${BUSY_ARGS[@]}"
BUSY_PORT=$STARTED_PORT BUSY_PID=$STARTED_PID
start_cam latency 1 "${LAT_ARGS[@]}"
LAT_PORT=$STARTED_PORT
start_cam face 1 "${FACE_ARGS[@]}"
FACE_PORT=$STARTED_PORT

# ---- the measuring program: `main`, `frigate` and `capacity`, each SETTINGS_JSON in, one JSON result out ----
cat >"$WORK/inference.py" <<'PY'
"""Helpers of scripts/bench/inference.sh (written there): `main SETTINGS_JSON` (camhub with detection turned on and
off camera by camera), `frigate SETTINGS_JSON` (the FFmpeg + Python chain) and `capacity SETTINGS_JSON` (one camera
count) each print one JSON result."""
import asyncio, json, os, signal, statistics, subprocess, sys, time
from benchlib import alive, cpu_seconds, mem_kib, wait_connected

# SIGTERM (the script's cleanup) ends this program through its `finally` clauses: children are stopped.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
PREFIX = "inference.sh"


def log(msg):
    print(f"{PREFIX}: {msg}", file=sys.stderr, flush=True)


def pct(values, p):
    """Nearest rank, as camhub computes its own percentiles."""
    s = sorted(values)
    if not s:
        return None
    rank = -(-p * len(s) // 100)
    return round(s[min(max(int(rank), 1), len(s)) - 1], 2)


def stats(values):
    return {"count": len(values), "p50": pct(values, 50), "p99": pct(values, 99),
            "max": round(max(values), 2) if values else None,
            "mean": round(sum(values) / len(values), 2) if values else None}


def mib(kib):
    return round(kib / 1024, 1)


# ---- camhub's WebSocket API: one connection, responses matched by id, notifications kept with their receipt time ----

class Client:
    def __init__(self, ws):
        self.ws, self.pending, self.notes, self.next_id = ws, {}, [], 1

    async def reader(self):
        import websockets
        try:
            async for message in self.ws:
                received = time.time()
                r = json.loads(message)
                if "id" in r and r["id"] in self.pending:
                    self.pending.pop(r["id"]).set_result(r)
                elif "method" in r:
                    self.notes.append((received, r))
        except websockets.ConnectionClosed:
            pass

    async def close(self):
        self.task.cancel()
        await self.ws.close()

    async def call(self, method, params, timeout=15.0):
        i, self.next_id = self.next_id, self.next_id + 1
        future = asyncio.get_running_loop().create_future()
        self.pending[i] = future
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}))
        r = await asyncio.wait_for(future, timeout)
        if "error" in r:
            raise RuntimeError(f"{method} {params}: {r['error']}")
        return r["result"]


async def connect(port, token):
    import websockets
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None)
    client = Client(ws)
    client.task = asyncio.create_task(client.reader())
    r = await client.call("authenticate", {"auth_token": token})
    if not r.get("authenticated"):
        raise RuntimeError(f"authenticate failed: {r}")
    return client


def camera(status, device):
    return next((c for c in status["cameras"] if c["device"] == device), None)


def model(status, name):
    return next((m for m in status["models"] if m["name"] == name), None)


class Camhub:
    def __init__(self, s):
        self.pid, self.port, self.token = s["pid"], s["port"], os.environ["BENCH_TOKEN"]

    def check_alive(self):
        if not alive(self.pid):
            log("camhub exited")
            sys.exit(1)

    async def window(self, seconds, every=None):
        """CPU (% of one core) and RSS (sampled each second) over `seconds`; `every()` (async) runs each second too."""
        c0, w0 = cpu_seconds(self.pid), time.monotonic()
        end, rss = w0 + seconds, []
        while True:
            self.check_alive()
            rss.append(mem_kib(self.pid)["rss"])
            if every:
                await every()
            now = time.monotonic()
            if now >= end:
                break
            await asyncio.sleep(min(1.0, end - now))
        c1, w1 = cpu_seconds(self.pid), time.monotonic()
        return {"seconds": round(w1 - w0, 2), "cpu_percent": round(100 * (c1 - c0) / (w1 - w0), 2),
                "rss_mib_mean": mib(sum(rss) / len(rss)), "rss_mib_peak": mib(max(rss))}

    async def wait_mode(self, client, devices, mode, timeout):
        """Until every camera in devices decodes in `mode` (or timeout); returns the seconds it took, None on timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            self.check_alive()
            st = await client.call("get_inference_status", {})
            if all((camera(st, d) or {}).get("decode_mode") == mode for d in devices):
                return round(time.monotonic() - t0, 1)
            await asyncio.sleep(0.5)
        return None


# ---- main: parts 1 (camhub), 2 and 3 (camhub) on one camhub with four cameras ----

async def main_phase(s):
    hub = Camhub(s)
    fps, settle, window, runs = s["fps"], s["settle"], s["window"], s["runs"]
    t0 = time.monotonic()
    wait_connected(hub.port, 4, s["connect_timeout"], hub.check_alive, log, t0)
    log(f"4 cameras connected after {time.monotonic() - t0:.1f} s; settling {settle} s")
    await asyncio.sleep(settle)
    client = await connect(hub.port, hub.token)
    await client.call("subscribe_events", {"topics": ["detection"]})
    out = {}

    async def status():
        return await client.call("get_inference_status", {})

    async def turn(device, on):
        return await client.call("set_detection", {"device": device, "enabled": on, "fps": fps} if on
                                 else {"device": device, "enabled": False})

    # 3. ingest only: every camera streaming, no detection.
    out["ingest"] = await hub.window(window)
    log(f"ingest only (4 cameras): camhub {out['ingest']['cpu_percent']:.2f} % of a core, "
        f"rss {out['ingest']['rss_mib_mean']} MiB")

    # 3a. the still scene: detection on the smpte camera (its first frame goes to the model, then keyframes only).
    await turn("still", True)
    await asyncio.sleep(max(settle, 4))
    a = camera(await status(), "still")
    w = await hub.window(window)
    b = camera(await status(), "still")
    await turn("still", False)
    out["still"] = {**w, "decode_mode": b["decode_mode"],
                    "decoded_per_s": round((b["frames_decoded"] - a["frames_decoded"]) / w["seconds"], 2),
                    "inferred_per_s": round((b["frames_inferred"] - a["frames_inferred"]) / w["seconds"], 2),
                    "dropped": b["dropped_frames"] - a["dropped_frames"], "at_end": b}
    log(f"still scene: camhub {w['cpu_percent']:.2f} % ({w['cpu_percent'] - out['ingest']['cpu_percent']:+.2f}), "
        f"decode mode {b['decode_mode']}, {out['still']['decoded_per_s']} frames decoded/s, "
        f"{out['still']['inferred_per_s']} inferred/s")

    # 3b, 1 (coco) and 2: the busy scene, person.jpg at 5 inferences/s.
    on_at = time.time()
    await turn("busy", True)
    took = await hub.wait_mode(client, ["busy"], "all", 15)
    if took is None:
        log("busy: still decoding keyframes only 15 s after detection was turned on")
    await asyncio.sleep(settle)
    a = camera(await status(), "busy")
    w = await hub.window(window)
    st = await status()
    b = camera(st, "busy")
    deadline = time.monotonic() + 2 * runs / fps + 30
    while model(st, "coco")["runs"] < runs and time.monotonic() < deadline:
        await asyncio.sleep(1)
        st = await status()
    await turn("busy", False)
    off_at = time.time()
    out["busy"] = {**w, "seconds_to_decode_all": took, "decode_mode": b["decode_mode"],
                   "decoded_per_s": round((b["frames_decoded"] - a["frames_decoded"]) / w["seconds"], 2),
                   "inferred_per_s": round((b["frames_inferred"] - a["frames_inferred"]) / w["seconds"], 2),
                   "dropped": b["dropped_frames"] - a["dropped_frames"], "at_end": camera(st, "busy"),
                   "on_at": on_at, "off_at": off_at}
    out["coco"] = model(st, "coco")
    log(f"busy scene: camhub {w['cpu_percent']:.2f} % ({w['cpu_percent'] - out['ingest']['cpu_percent']:+.2f}), "
        f"{out['busy']['inferred_per_s']} inferred/s; coco {out['coco']['runs']} runs, p50 "
        f"{out['coco']['inference_p50_ms']} ms, p99 {out['coco']['inference_p99_ms']} ms; busy latency p50 "
        f"{out['busy']['at_end']['latency_p50_ms']} ms")

    # 2. the latency camera: the photo comes and goes, each appearance a `new` event per object.
    await turn("latency", True)
    await asyncio.sleep(s["latency_seconds"])
    out["latency_camera"] = camera(await status(), "latency")
    await turn("latency", False)

    # 1. blazeface: the face camera until its model has run `runs` times.
    await turn("face", True)
    took = await hub.wait_mode(client, ["face"], "all", 15)
    deadline = time.monotonic() + 2 * runs / fps + 30
    st = await status()
    while model(st, "face")["runs"] < runs and time.monotonic() < deadline:
        await asyncio.sleep(1)
        st = await status()
    await turn("face", False)
    out["face"] = model(st, "face")
    out["face_camera"] = {**camera(st, "face"), "seconds_to_decode_all": took}
    if out["face"]["runs"] < runs:
        log(f"blazeface ran only {out['face']['runs']} times (face tracked? decode mode "
            f"{out['face_camera']['decode_mode']})")
    log(f"blazeface: {out['face']['runs']} runs, p50 {out['face']['inference_p50_ms']} ms, p99 "
        f"{out['face']['inference_p99_ms']} ms")

    await asyncio.sleep(0.5)
    out["notifications"] = [
        {"received": t, "device": n["params"].get("device"), "type": n["params"]["data"].get("type"),
         "label": n["params"]["data"].get("label"), "frame_time": n["params"]["data"].get("frame_time")}
        for t, n in client.notes
        if n.get("method") == "event" and isinstance(n.get("params", {}).get("data"), dict)
        and "frame_time" in n["params"]["data"]
    ]
    lat = [1000 * (x["received"] - x["frame_time"]) for x in out["notifications"]
           if x["type"] in ("new", "update") and x["device"] in ("busy", "latency")]
    log(f"notifications: {len(lat)} new/update on busy and latency, receipt - frame_time p50 {pct(lat, 50)} ms, "
        f"p99 {pct(lat, 99)} ms; camhub's own on latency: p50 {out['latency_camera']['latency_p50_ms']} ms")
    out["inference_status_at_end"] = {k: v for k, v in st.items() if k != "cameras"}
    await client.close()
    return out


# ---- capacity: N cameras, detection off then on ----

async def capacity_phase(s):
    hub = Camhub(s)
    n, fps, settle, window = s["cameras"], s["fps"], s["settle"], s["window"]
    devices = [f"cam{k}" for k in range(n)]
    t0 = time.monotonic()
    wait_connected(hub.port, n, s["connect_timeout"], hub.check_alive, log, t0)
    await asyncio.sleep(settle)
    client = await connect(hub.port, hub.token)
    off = await hub.window(max(settle, 5))
    for d in devices:
        await client.call("set_detection", {"device": d, "enabled": True, "fps": fps})
    took = await hub.wait_mode(client, devices, "all", 15)
    if took is None:
        log(f"N={n}: not every camera decodes every frame 15 s after detection was turned on")
    # actual_fps counts the last 5 s: let it fill with inferences at the full rate first.
    await asyncio.sleep(max(settle, 6))
    a = await client.call("get_inference_status", {})
    samples = {d: [] for d in devices}

    async def sample():
        st = await client.call("get_inference_status", {})
        for d in devices:
            samples[d].append((camera(st, d) or {}).get("actual_fps", 0.0))

    w = await hub.window(window, every=sample)
    b = await client.call("get_inference_status", {})
    cams = []
    for d in devices:
        ca, cb = camera(a, d), camera(b, d)
        cams.append({
            "device": d,
            "inferred_per_s": round((cb["frames_inferred"] - ca["frames_inferred"]) / w["seconds"], 2),
            "decoded_per_s": round((cb["frames_decoded"] - ca["frames_decoded"]) / w["seconds"], 2),
            "actual_fps_median": statistics.median(samples[d]) if samples[d] else 0.0,
            "actual_fps_min": min(samples[d]) if samples[d] else 0.0,
            "dropped": cb["dropped_frames"] - ca["dropped_frames"],
            "decode_mode": cb["decode_mode"],
            "latency_p50_ms": cb["latency_p50_ms"], "latency_p99_ms": cb["latency_p99_ms"],
        })
    need = 0.9 * fps
    engine_dropped = b["dropped_frames"] - a["dropped_frames"]
    held = engine_dropped == 0 and all(
        c["inferred_per_s"] >= need and c["actual_fps_median"] >= need and c["dropped"] == 0 for c in cams)
    await client.close()
    r = {"cameras": n, "held": held, "seconds_to_decode_all": took, "off": off, "on": w,
         "rss_added_mib": round(w["rss_mib_mean"] - off["rss_mib_mean"], 1), "engine_dropped": engine_dropped,
         "threads": b["threads"], "coco": model(b, "coco"), "per_camera": cams,
         "min_inferred_per_s": min(c["inferred_per_s"] for c in cams),
         "min_actual_fps": min(c["actual_fps_median"] for c in cams),
         "dropped": sum(c["dropped"] for c in cams),
         "latency_p50_ms_max": max(c["latency_p50_ms"] for c in cams),
         "latency_p99_ms_max": max(c["latency_p99_ms"] for c in cams)}
    log(f"N={n}: {'held' if held else 'did not hold'}: min {r['min_inferred_per_s']} inferences/s and actual_fps "
        f"{r['min_actual_fps']} per camera, {r['dropped']} dropped (engine {engine_dropped}), camhub "
        f"{w['cpu_percent']:.1f} % CPU, rss {off['rss_mib_mean']} -> {w['rss_mib_mean']} MiB, coco p50 "
        f"{r['coco']['inference_p50_ms']} ms")
    return r


# ---- frigate: FFmpeg decoding into a Python detector, the still and the busy scene ----

def frigate_phase(s):
    out = {}
    for scene, url, mode in (("still", s["still_url"], "read"), ("busy", s["busy_url"], "detect")):
        ff_cmd = [s["ffmpeg"], "-nostdin", "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp",
                  "-i", url, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-vf", f"fps={s['fps']},scale=512:-2", "pipe:"]
        report = os.path.join(s["dir"], f"{scene}.json")
        rd_cmd = [s["python"], s["reader"], "--width", "512", "--height", str(s["scaled_height"]), "--mode", mode,
                  "--model", s["model"], "--kind", "boxes", "--threads", "1", "--report", report]
        ff = rd = None
        try:
            with open(os.path.join(s["dir"], f"{scene}-ffmpeg.log"), "w") as fe, \
                    open(os.path.join(s["dir"], f"{scene}-python.log"), "w") as pe:
                ff = subprocess.Popen(ff_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=fe)
                rd = subprocess.Popen(rd_cmd, stdin=ff.stdout, stdout=subprocess.DEVNULL, stderr=pe)
            ff.stdout.close()
            time.sleep(s["settle"] + (2 if mode == "detect" else 0))  # connect, and load the model
            for p, who in ((ff, "ffmpeg"), (rd, "python")):
                if p.poll() is not None:
                    log(f"frigate {scene}: {who} exited ({p.returncode}); see {s['dir']}/{scene}-{who}.log")
                    sys.exit(1)
            f0, r0, w0, t0 = cpu_seconds(ff.pid), cpu_seconds(rd.pid), time.monotonic(), time.time()
            rss = []
            while time.monotonic() - w0 < s["window"]:
                rss.append(mem_kib(ff.pid)["rss"] + mem_kib(rd.pid)["rss"])
                time.sleep(min(1.0, max(0.0, s["window"] - (time.monotonic() - w0))))
            f1, r1, w1, t1 = cpu_seconds(ff.pid), cpu_seconds(rd.pid), time.monotonic(), time.time()
        finally:
            for p in (rd, ff):
                if p and p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
        with open(report) as f:
            rep = json.load(f)
        secs = w1 - w0
        frames = sum(1 for t in rep["arrived"] if t0 <= t <= t1)
        r = {"mode": mode, "seconds": round(secs, 2),
             "ffmpeg_cpu_percent": round(100 * (f1 - f0) / secs, 2),
             "python_cpu_percent": round(100 * (r1 - r0) / secs, 2),
             "total_cpu_percent": round(100 * (f1 - f0 + r1 - r0) / secs, 2),
             "frames_per_s_to_python": round(frames / secs, 2),
             "rss_mib_mean": mib(sum(rss) / max(len(rss), 1)),
             "inference_ms": stats(rep["run_ms"]) if rep["run_ms"] else None,
             "ffmpeg_command": f"ffmpeg -rtsp_transport tcp -i URL -f rawvideo -pix_fmt yuv420p -vf fps={s['fps']},scale=512:-2 pipe:"}
        log(f"frigate {scene}: ffmpeg {r['ffmpeg_cpu_percent']:.2f} %, python {r['python_cpu_percent']:.2f} %, "
            f"{r['frames_per_s_to_python']} frames/s to python"
            + (f", inference p50 {r['inference_ms']['p50']} ms" if r["inference_ms"] else ""))
        out[scene] = r
    return out


if __name__ == "__main__":
    what, settings = sys.argv[1], json.loads(sys.argv[2])
    if what == "main":
        result = asyncio.run(main_phase(settings))
    elif what == "capacity":
        result = asyncio.run(capacity_phase(settings))
    else:
        result = frigate_phase(settings)
    result["loadavg_at_end"] = os.getloadavg()[0]
    print(json.dumps(result))
PY

# camhub's config: the head, its own RTSP server on a free port (not 8554, which another camhub may hold), the
# inference section with both models.
camhub_config() { # DIR PORT
  camhub_config_head "$2" 5000 inference-bench-secret-0123456789 "$1/data"
  printf '[rtsp_server]\nlisten = "127.0.0.1:%s"\n' "$(free_port)"
  printf '[inference]\nruntime = "%s"\n' "$ORT_LIB"
  if [ -n "$THREADS" ]; then printf 'threads = %s\n' "$THREADS"; fi
  printf '[[inference.models]]\nname = "coco"\npath = "%s"\nkind = "boxes"\nlabels = "coco80"\n' "$COCO"
  printf '[[inference.models]]\nname = "face"\npath = "%s"\nkind = "blazeface"\n' "$FACE"
}
camera_entry() { # ID URL DETECT
  printf '[[cameras]]\nid = "%s"\nurl = "%s"\ndetect = %s\n' "$1" "$2" "$3"
}
# run_measure WHAT SETTINGS_JSON OUT: the measuring program in the background (a signal interrupts `wait`).
run_measure() {
  "${PYRUN[@]}" "$WORK/inference.py" "$1" "$2" >"$3" &
  MEASURE_PID=$!
}
start_hub() { # DIR (its cameras in DIR/cameras.toml)
  local dir="$1" port
  port="$(free_port)"
  HUB_PORT=$port
  mkdir -p "$dir/data"
  camhub_config "$dir" "$port" >"$dir/camhub.toml"
  cat "$dir/cameras.toml" >>"$dir/camhub.toml"
  TOKEN="$(camhub_token inference-bench "$dir/camhub.toml")"
  start_camhub "$dir"
}
stop_hub() { # DIR
  stop_pids "$CAMHUB_STOP_GRACE" "$CAMHUB_PID"
  CAMHUB_PID=""
  report_warnings "$1/camhub.log" "$(basename "$1"): "
}
OFF="{ model = \"coco\", enabled = false, fps = $DET_FPS }"

# ---- 1. the Python peer, before camhub runs ----
if part peer; then
  note "Python peer: inference_peer.py, 1 thread, $PEER_RUNS runs per model (camhub not running)"
  "$VENV_PY" scripts/bench/inference_peer.py --model "$COCO" --kind boxes --frames "$PERSON" --runs "$PEER_RUNS" \
    --threads 1 --json "$WORK/peer-coco.json" >/dev/null &
  MEASURE_PID=$!
  wait_measure || { note "inference_peer.py failed on the COCO model"; exit 1; }
  "$VENV_PY" scripts/bench/inference_peer.py --model "$FACE" --kind blazeface --frames "$ASTRONAUT" --runs "$PEER_RUNS" \
    --threads 1 --json "$WORK/peer-face.json" >/dev/null &
  MEASURE_PID=$!
  wait_measure || { note "inference_peer.py failed on the BlazeFace model"; exit 1; }
  # camhub's own engine on the same files and photos, in process and with nothing else running: the like-for-like
  # figure (the live figure below is read while the camera's frames are being decoded on the same two cores).
  note "camhub in process: cargo bench --bench inference, $PEER_RUNS runs per model"
  INFERENCE_RUNS="$PEER_RUNS" cargo bench --quiet --bench inference >"$WORK/engine.jsonl" 2>"$WORK/engine.log" &
  MEASURE_PID=$!
  wait_measure || fail_with_log "cargo bench --bench inference failed" "$WORK/engine.log"
fi

# ---- 1, 2, 3: camhub with the four cameras ----
if part camhub; then
  dir="$WORK/main"
  mkdir -p "$dir"
  {
    camera_entry still "rtsp://127.0.0.1:$STILL_PORT/cam0" "$OFF"
    camera_entry busy "rtsp://127.0.0.1:$BUSY_PORT/cam0" "$OFF"
    camera_entry latency "rtsp://127.0.0.1:$LAT_PORT/cam0" "{ model = \"coco\", enabled = false, fps = $DET_FPS, end_after_s = 1 }"
    camera_entry face "rtsp://127.0.0.1:$FACE_PORT/cam0" "{ model = \"face\", enabled = false, fps = $DET_FPS }"
  } >"$dir/cameras.toml"
  start_hub "$dir"
  note "camhub (4 cameras) on port $HUB_PORT: ingest, still scene, busy scene, latency, blazeface"
  settings="$(printf '{"pid": %s, "port": %s, "fps": %s, "settle": %s, "window": %s, "runs": %s, "latency_seconds": %s, "connect_timeout": %s}' \
    "$CAMHUB_PID" "$HUB_PORT" "$DET_FPS" "$SETTLE" "$WINDOW" "$RUNS" "$LAT_SECONDS" "$CONNECT_TIMEOUT")"
  BENCH_TOKEN="$TOKEN" run_measure main "$settings" "$WORK/main.json"
  wait_measure || fail_with_log "the camhub part failed; camhub log tail:" "$dir/camhub.log"
  stop_hub "$dir"
fi

# ---- 3: the Frigate-style chain, camhub stopped ----
if part frigate; then
  note "Frigate-style chain: ffmpeg | frigate_peer.py on the still and the busy camera (camhub not running)"
  settings="$("$PY" -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
    ffmpeg "$FFMPEG" python "$VENV_PY" reader "$ROOT/scripts/bench/frigate_peer.py" model "$COCO" \
    still_url "rtsp://127.0.0.1:$STILL_PORT/cam0" busy_url "rtsp://127.0.0.1:$BUSY_PORT/cam0" dir "$WORK/frigate")"
  settings="${settings%\}}, \"fps\": $DET_FPS, \"settle\": $SETTLE, \"window\": $WINDOW, \"scaled_height\": $(( (512 * HEIGHT / WIDTH) / 2 * 2 ))}"
  run_measure frigate "$settings" "$WORK/frigate.json"
  wait_measure || { note "the Frigate-style chain failed; logs in $WORK/frigate/"; exit 1; }
fi

# ---- 4: capacity ----
CAP_RESULTS=()
if part capacity; then
  for N in "${COUNTS[@]}"; do
    dir="$WORK/capacity/n$N"
    mkdir -p "$dir"
    for ((k = 0; k < N; k++)); do
      camera_entry "cam$k" "rtsp://127.0.0.1:$BUSY_PORT/cam$k" "$OFF"
    done >"$dir/cameras.toml"
    start_hub "$dir"
    note "N=$N: camhub on port $HUB_PORT, detection off then on"
    settings="$(printf '{"pid": %s, "port": %s, "cameras": %s, "fps": %s, "settle": %s, "window": %s, "connect_timeout": %s}' \
      "$CAMHUB_PID" "$HUB_PORT" "$N" "$DET_FPS" "$SETTLE" "$CAP_WINDOW" "$CONNECT_TIMEOUT")"
    BENCH_TOKEN="$TOKEN" run_measure capacity "$settings" "$dir/result.json"
    wait_measure || fail_with_log "N=$N failed; camhub log tail:" "$dir/camhub.log"
    stop_hub "$dir"
    CAP_RESULTS+=("$dir/result.json")
    if [ "$CAP_ALL" != 1 ] && ! "$PY" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["held"] else 1)' "$dir/result.json"; then
      note "N=$N did not hold; not trying more cameras (INFERENCE_CAPACITY_ALL=1 tries them all)"
      break
    fi
  done
fi

stop_pids 10 ${CAM_PIDS[@]+"${CAM_PIDS[@]}"}
CAM_PIDS=()

# ---- the report ----
collect_versions
settings="$(printf '{"window": %s, "settle": %s, "runs": %s, "peer_runs": %s, "latency_seconds": %s, "fps": %s, "capacity_window": %s, "capacity_all": %s, "counts": "%s", "threads": "%s", "image_source": "%s", "face_size": "%s", "parts": "%s", "loop_seconds": %s}' \
  "$WINDOW" "$SETTLE" "$RUNS" "$PEER_RUNS" "$LAT_SECONDS" "$DET_FPS" "$CAP_WINDOW" "$CAP_ALL" "${COUNTS[*]}" "$THREADS" \
  "$IMAGE_SOURCE" "$FACE_SIZE" "${PARTS[*]}" "$LOOP_SECONDS")"
"${PYRUN[@]}" - "$EVIDENCE" "$WORK" "$settings" "$commit" "$version" "$ffmpeg_version" "$WIDTH" "$HEIGHT" "$FPS" "$GOP" \
  "$BITRATE" ${CAP_RESULTS[@]+"${CAP_RESULTS[@]}"} <<'PY'
import json, os, sys
from benchlib import run_line, run_meta, stream_text, write_json, write_markdown

evidence, work, settings, commit, version, ffmpeg_version, width, height, fps, gop, bitrate, *cap_files = sys.argv[1:]
s = json.loads(settings)


def load(name):
    path = os.path.join(work, name)
    return json.load(open(path)) if os.path.exists(path) else None


def pct(values, p):
    v = sorted(values)
    if not v:
        return None
    rank = -(-p * len(v) // 100)
    return round(v[min(max(int(rank), 1), len(v)) - 1], 1)


peer_coco, peer_face = load("peer-coco.json"), load("peer-face.json")
engine_path = os.path.join(work, "engine.jsonl")
engine = {}
if os.path.exists(engine_path):
    for line in open(engine_path):
        if line.strip().startswith("{"):
            r = json.loads(line)
            engine[r["model"]] = r
main, frigate = load("main.json"), load("frigate.json")
caps = [json.load(open(f)) for f in cap_files]

# Part 2: notification receipt minus frame_time, per camera and in all.
notes = (main or {}).get("notifications", [])
latency = {}
for device in ("busy", "latency"):
    ms = [1000 * (n["received"] - n["frame_time"]) for n in notes
          if n["device"] == device and n["type"] in ("new", "update")]
    latency[device] = {"count": len(ms), "new": sum(1 for n in notes if n["device"] == device and n["type"] == "new"),
                       "update": sum(1 for n in notes if n["device"] == device and n["type"] == "update"),
                       "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "max_ms": round(max(ms), 1) if ms else None}
all_ms = [1000 * (n["received"] - n["frame_time"]) for n in notes
          if n["device"] in ("busy", "latency") and n["type"] in ("new", "update")]
latency["all"] = {"count": len(all_ms), "p50_ms": pct(all_ms, 50), "p99_ms": pct(all_ms, 99)}

held = [c["cameras"] for c in caps if c["held"]]
largest = max(held) if held else 0
short = (s["window"] < 20 or s["runs"] < 100 or s["peer_runs"] < 100 or s["latency_seconds"] < 20
         or s["capacity_window"] < 15 or s["parts"] != "peer camhub frigate capacity")
meta = {
    **run_meta("inference", commit, version, width, height, fps, gop, bitrate, ffmpeg_version),
    "settings": s,
    "short_run": short,
}
ingest = main["ingest"]["cpu_percent"] if main else None
result = {
    **meta,
    "inference_ms": {
        "coco": {"photo": "person.jpg", "camhub": (main or {}).get("coco"), "python": peer_coco,
                 "camhub_in_process": engine.get("coco")},
        "blazeface": {"photo": "astronaut.png", "camhub": (main or {}).get("face"), "python": peer_face,
                      "camhub_in_process": engine.get("blazeface")},
    },
    "latency": {
        "target_p50_ms": 150,
        "camhub_busy": ((main or {}).get("busy") or {}).get("at_end"),
        "camhub_latency_camera": (main or {}).get("latency_camera"),
        "notifications": latency,
    },
    "cpu": {
        "target_still_points_above_ingest": 1.5,
        "ingest_only": (main or {}).get("ingest"),
        "still": (main or {}).get("still"),
        "busy": {k: v for k, v in ((main or {}).get("busy") or {}).items() if k not in ("on_at", "off_at")} or None,
        "still_points_above_ingest": round(main["still"]["cpu_percent"] - ingest, 2) if main else None,
        "busy_points_above_ingest": round(main["busy"]["cpu_percent"] - ingest, 2) if main else None,
        "frigate": frigate,
    },
    "capacity": {"largest_held": largest if caps else None, "runs": caps},
    "face_camera": (main or {}).get("face_camera"),
    "notifications_raw": notes,
}
write_json(os.path.join(evidence, "inference.json"), result)

fx = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
yn = lambda b: "yes" if b else "**no**"
mode = "looped clips recorded from a live `camhub testcam --image`" if s["image_source"] == "clip" \
    else "live `camhub testcam --image` cameras (x264 on this machine: their CPU competes with what is measured)"
lines = [
    "# camhub inference benchmark (next to ONNX Runtime's Python API and a Frigate-style FFmpeg chain)",
    "",
    run_line(meta),
    *(["", "**Short run** (settings below the defaults, or parts left out): a check of the tooling, not figures to "
       "compare."] if short else []),
    "",
    f"Cameras: {stream_text(meta)}; the photo cameras are {mode}, the photo hidden 1 s in every 10 (camhub decodes "
    "every frame and infers at the configured rate only after motion; a photo present from a camera's first frame "
    "never moves, and camhub then infers on keyframes only, about once a second). The still scene is `camhub testcam "
    f"--pattern smpte --loop-seconds {s['loop_seconds']}` (colour bars, only the burnt-in clock and frame counter "
    f"change). Detection at {s['fps']} frames/s; camhub's [inference] threads: "
    f"{s['threads'] or 'default'}{' (' + str(main['inference_status_at_end']['threads']) + ')' if main else ''}. "
    "CPU is utime+stime from /proc as % of one core; only camhub's and the peers' processes are measured, never the "
    "test cameras'.",
    "",
    "## 1. Inference time per model (ms in the model per frame)",
    "",
    "| model | photo | camhub in process p50 | p99 | Python p50 | p99 | camhub live runs | live p50 | live p99 |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
]
for name, r in result["inference_ms"].items():
    c, p, e = r["camhub"] or {}, r["python"] or {}, r["camhub_in_process"] or {}
    lines.append(f"| {name} | {r['photo']} | **{fx(e.get('p50_ms'))}** | {fx(e.get('p99_ms'))} "
                 f"| **{fx(p.get('p50_ms'))}** | {fx(p.get('p99_ms'))} | {c.get('runs', '-')} "
                 f"| {fx(c.get('inference_p50_ms'))} | {fx(c.get('inference_p99_ms'))} |")
lines += [
    "",
    "camhub in process: `cargo bench --bench inference` (camhub's engine, `Model::detect` on the photo decoded to I420 "
    f"as a camera's frame is; the session run alone, after 3 warm-up runs), {s['peer_runs']} runs, right after the "
    "Python peer and with nothing else running: the like-for-like pair. camhub live: `get_inference_status` models[].inference_p50_ms/p99_ms (session run alone, nearest rank over its last "
    f"512 runs) after at least {s['runs']} inferences, read while the camera showing the photo runs detection "
    f"(coco on a 1280x720 camera, blazeface on a {s['face_size']} one; every frame decoded). Python: "
    "`scripts/bench/inference_peer.py --threads 1` (session.run alone, after 3 warm-up runs; numpy's interpolated "
    f"percentiles) on the same model file and photo, {s['peer_runs']} runs, with camhub not running.",
    "",
    "## 2. Frame-to-notification latency",
    "",
    "| camera | camhub p50 ms | camhub p99 ms | notifications (new + update) | receipt - frame_time p50 ms | p99 ms | max ms |",
    "|---|---:|---:|---:|---:|---:|---:|",
]
for device, label, cam in (("busy", "busy (photo tracked, steady 5/s)", result["latency"]["camhub_busy"]),
                           ("latency", "latency (photo 2 s away, 3 s shown)", result["latency"]["camhub_latency_camera"])):
    n, cam = latency[device], cam or {}
    lines.append(f"| {label} | {fx(cam.get('latency_p50_ms'))} | {fx(cam.get('latency_p99_ms'))} "
                 f"| {n['count']} ({n['new']} + {n['update']}) | {fx(n['p50_ms'])} | {fx(n['p99_ms'])} "
                 f"| {fx(n['max_ms'])} |")
lat_cam = result["latency"]["camhub_latency_camera"] or {}
busy_cam = result["latency"]["camhub_busy"] or {}
lines += [
    "",
    "camhub's own figure is frame arrival to tracker result (`latency_p50_ms`/`latency_p99_ms`, its recent "
    "inferences, including the catch-up when a camera switches from keyframes to every frame: the frames since the "
    "last keyframe are decoded at once); from outside, each `event` notification (topic detection, type new or update) is timed on receipt "
    "by a subscribed WebSocket client, minus the event's `frame_time` (when that frame arrived at camhub, same clock). "
    "A `new` is sent after the event is indexed and its picture saved (JPEG at the camera's size, fsync). Updates come "
    "at most once a second per object and only when it moves or scores higher, so the still photo gives few; the "
    "latency camera (end_after_s = 1) gives a `new` per object at each appearance. "
    f"All notifications: {latency['all']['count']}, p50 {fx(latency['all']['p50_ms'])} ms, p99 "
    f"{fx(latency['all']['p99_ms'])} ms. Target p50 <= 150 ms: camhub's own (busy) "
    f"{yn(busy_cam.get('latency_p50_ms') is not None and busy_cam.get('latency_p50_ms') <= 150)}, notifications "
    f"{yn(latency['all']['p50_ms'] is not None and latency['all']['p50_ms'] <= 150)}.",
    "",
    "## 3. CPU per 720p30 camera with detection on",
    "",
]
if main:
    st, bu, ing = main["still"], main["busy"], main["ingest"]
    lines += [
        "| scene | camhub % (4 cameras streaming) | detection adds (points of one core) | decode mode | frames decoded/s | inferences/s |",
        "|---|---:|---:|---|---:|---:|",
        f"| ingest only (no detection) | {ing['cpu_percent']:.2f} | - | - | - | - |",
        f"| still (smpte), detection on | {st['cpu_percent']:.2f} | **{st['cpu_percent'] - ing['cpu_percent']:+.2f}** "
        f"| {st['decode_mode']} | {st['decoded_per_s']} | {st['inferred_per_s']} |",
        f"| busy (person.jpg), detection on | {bu['cpu_percent']:.2f} | **{bu['cpu_percent'] - ing['cpu_percent']:+.2f}** "
        f"| {bu['decode_mode']} | {bu['decoded_per_s']} | {bu['inferred_per_s']} |",
        "",
        f"One camhub with four cameras (still, busy, latency, face) streaming throughout; {s['window']} s windows: all "
        "off, then detection on the still camera alone, then on the busy camera alone (the difference is that "
        "camera's detection; ingest per camera is the benchmark `ingest.sh`). Target for the still scene: at most "
        f"1.5 points above ingest: {yn(st['cpu_percent'] - ing['cpu_percent'] <= 1.5)}.",
        "",
    ]
else:
    lines += ["camhub part not run.", ""]
if frigate:
    fs, fb = frigate["still"], frigate["busy"]
    lines += [
        "| Frigate-style chain | FFmpeg % | Python % | total % | frames/s to Python | model p50 ms | RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| still (smpte): decode only, no model | **{fs['ffmpeg_cpu_percent']:.2f}** | {fs['python_cpu_percent']:.2f} "
        f"| {fs['total_cpu_percent']:.2f} | {fs['frames_per_s_to_python']} | - | {fs['rss_mib_mean']} |",
        f"| busy (person.jpg): model on every frame | {fb['ffmpeg_cpu_percent']:.2f} | {fb['python_cpu_percent']:.2f} "
        f"| **{fb['total_cpu_percent']:.2f}** | {fb['frames_per_s_to_python']} "
        f"| {fx((fb['inference_ms'] or {}).get('p50'))} | {fb['rss_mib_mean']} |",
        "",
        f"`{fb['ffmpeg_command']}` into `scripts/bench/frigate_peer.py` (onnxruntime, 1 thread: yuv420p to RGB, "
        "letterboxed to 512x512, the COCO model), on the same cameras, camhub not running. This is what Frigate runs per "
        "camera for its detect stream: FFmpeg decodes every frame of it all the time. On a still scene Frigate's motion "
        "detector finds nothing and no model runs, but the decoding goes on; so for the still scene the fair peer is "
        "FFmpeg's decoding alone (the Python process only reads and drops the frames), to set against camhub, which "
        "then decodes keyframes only. For the busy scene the peer runs the model on every frame it gets (Frigate would "
        "on the regions with motion or tracked objects), so its total (FFmpeg + Python) sets against camhub's busy "
        "figure, which includes its ingest share of the stream and its decoding of every frame.",
        "",
    ]
else:
    lines += ["Frigate-style chain not run.", ""]
lines += ["## 4. Cameras held at " + f"{s['fps']} detections/s each, and the memory detection adds", ""]
if caps:
    lines += [
        "| cameras | held | min inferences/s | min actual_fps | dropped | camhub CPU % | RSS off MiB | RSS on MiB | detection adds MiB | latency p50 / p99 ms (worst camera) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in caps:
        lines.append(
            f"| {c['cameras']} | {yn(c['held'])} | {c['min_inferred_per_s']} | {c['min_actual_fps']} "
            f"| {c['dropped'] + c['engine_dropped']} | {c['on']['cpu_percent']:.1f} | {c['off']['rss_mib_mean']:.1f} "
            f"| {c['on']['rss_mib_mean']:.1f} | {c['rss_added_mib']:+.1f} "
            f"| {fx(c['latency_p50_ms_max'])} / {fx(c['latency_p99_ms_max'])} |")
    lines += [
        "",
        f"**Largest count that held: {largest}** (of {', '.join(str(c['cameras']) for c in caps)} tried; "
        f"[inference] threads {caps[-1]['threads']}). Each count: a fresh camhub with N cameras showing person.jpg, "
        f"{s['settle']} s with detection off (RSS off), then set_detection on every camera, once every camera "
        f"decodes every frame a {s['capacity_window']} s window: held when every camera ran at least 90 % of "
        f"{s['fps']} inferences/s (frames_inferred over the window, and the median of actual_fps sampled each "
        "second) and no dropped_frames grew (cameras' or the engine's). Detection adds = mean RSS with detection "
        "on minus mean RSS with it off, same process, same cameras.",
        "",
    ]
else:
    lines += ["Capacity part not run.", ""]
write_markdown(os.path.join(evidence, "inference.md"), lines)
PY
