#!/usr/bin/env bash
# Hot reload benchmark: camhub runs RELOAD_CAMERAS real RTSP cameras (the test camera, each mount its own stream) from
# its config file; one camera is added to the file and removed again, RELOAD_ROUNDS times each, by the file watcher
# (the file replaced by a rename, as editors save) and by `reload_config`. Measured: from the rename (or the call) to
# the `config.reloaded` event, the reload's own time (camhub's log, `elapsed_ms`), and until the added camera is
# CONNECTED; and that the untouched cameras saw nothing (no status change, frame counters only rising). The peer is
# what a reload replaces: a restart of camhub with the same config, timed from SIGTERM until every camera is CONNECTED
# again (every viewer and recording cut meanwhile), RELOAD_RESTARTS times.
# Results: evidence/reload.json and evidence/reload.md. Work files: evidence/tmp/reload/.
#
# Usage:  scripts/bench/reload.sh
# Env:    RELOAD_CAMERAS=100    cameras in the config
#         RELOAD_ROUNDS=10      adds and removes per trigger
#         RELOAD_RESTARTS=3     restarts of the peer measurement
#         CAMHUB_BIN=path       use this binary and skip the build (default: cargo build --release)
#         EVIDENCE_DIR=evidence where the results go
# Needs: bash, python3, Linux.
set -euo pipefail

BENCH_NAME=reload.sh
# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CAMERAS="${RELOAD_CAMERAS:-100}"
ROUNDS="${RELOAD_ROUNDS:-10}"
RESTARTS="${RELOAD_RESTARTS:-3}"
for v in CAMERAS ROUNDS RESTARTS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { note "RELOAD_$v must be a positive integer"; exit 64; }
done
# Small cameras, encoded once and looped: the machine's cores go to camhub, not to the test camera.
WIDTH=320 HEIGHT=240 FPS=10 GOP=10 BITRATE=200

build_camhub
bench_workdir reload data
bench_traps

DATA="$WORK/data"
CONFIG="$DATA/camhub.toml"
PORT="$(free_port)"
SECRET="reload-bench-secret-0123456789abcdef"
start_testcam "$((CAMERAS + 1))" --loop-seconds "$LOOP_SECONDS"
{
  camhub_config_head "$PORT" 5000 "$SECRET" "$DATA" | sed '/^shutdown_grace_ms/a watch_config = false'
  printf '[rtsp_server]\nlisten = "127.0.0.1:%s"\n[rtmp]\nenabled = false\n[srt]\nenabled = false\n' "$(free_port)"
  for ((i = 0; i < CAMERAS; i++)); do
    printf '[[cameras]]\nid = "cam%s"\nurl = "rtsp://127.0.0.1:%s/cam%s"\n' "$i" "$CAM_PORT" "$i"
  done
} >"$CONFIG"
start_camhub "$DATA"
TOKEN="$("${CHILD_ENV[@]}" RUST_LOG=warn "$BIN" token --role admin --ttl 86400 --user bench --config "$CONFIG")"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

collect_versions
"$PY" - "$EVIDENCE" "$BIN" "$CONFIG" "$DATA" "$PORT" "$TOKEN" "$CAMHUB_PID" "$CAM_PORT" "$CAMERAS" "$ROUNDS" \
  "$RESTARTS" "$commit" "$version" "$(nproc)" "$LOAD_BEFORE" <<'EOF'
import atexit, json, os, re, signal, statistics, subprocess, sys, threading, time, urllib.request

(evidence, binary, config, data, port, token, pid, cam_port, cameras, rounds, restarts, commit, version, cores,
 load) = sys.argv[1:]
cameras, rounds, restarts, pid = int(cameras), int(rounds), int(restarts), int(pid)
url = f"ws://127.0.0.1:{port}/ws"
env = dict(os.environ, NO_COLOR="1", RUST_LOG="warn", CAMHUB_TOKEN=token)
env.pop("CAMHUB_CONFIG", None)
log_path = f"{data}/camhub.log"
base = open(config).read()
added = base + f'[[cameras]]\nid = "cam{cameras}"\nurl = "rtsp://127.0.0.1:{cam_port}/cam{cameras}"\n'

def connected_count():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/system", timeout=2) as r:
            return json.load(r)["cameras"]["connected"]
    except Exception:
        return -1

def wait_all(want, limit):
    t0 = time.time()
    while time.time() - t0 < limit:
        if connected_count() >= want:
            return time.time()
        time.sleep(0.02)
    sys.exit(f"reload.sh: {want} cameras not connected within {limit} s; see {log_path}")

def call(method, **params):
    args = [binary, "call", "--url", url, method] + [f"{k}={json.dumps(v)}" for k, v in params.items()]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)

class Events:
    """`camhub events` on the topics asked for; each notification with the time it was read."""
    def __init__(self, topics):
        self.proc = subprocess.Popen([binary, "events", "--url", url] + topics, env=env, stdout=subprocess.PIPE,
                                     text=True)
        self.lines, self.cond = [], threading.Condition()
        threading.Thread(target=self.read, daemon=True).start()
    def read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(json.loads(line)["params"])
                self.cond.notify_all()
    def wait(self, pred, limit=30):
        deadline = time.time() + limit
        with self.cond:
            while True:
                for i, e in enumerate(self.lines):
                    if pred(e):
                        return self.lines.pop(i)
                left = deadline - time.time()
                if left <= 0:
                    sys.exit(f"reload.sh: an awaited event did not come; see {log_path}")
                self.cond.wait(left)
    def drain(self):
        with self.cond:
            out, self.lines = self.lines, []
            return out
    def stop(self):
        self.proc.terminate()

def reload_elapsed_ms():
    found = re.findall(r'config reloaded.*elapsed_ms=(\d+)', open(log_path).read())
    return int(found[-1])

def write(text):
    tmp = config + ".new"
    open(tmp, "w").write(text)
    t0 = time.time()
    os.rename(tmp, config)
    return t0

def stop_camhub():
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass

# Whatever happens here, the camhub this script started last is stopped (bash's trap knows only the first one).
atexit.register(stop_camhub)

def alive(pid):
    """Running: neither gone nor a zombie (the first camhub is bash's child, reaped only when this script ends)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

def restart(text):
    """SIGTERM, the config file replaced while camhub is down, a new camhub; milliseconds until every camera is
    CONNECTED again."""
    global pid
    t0 = time.time()
    os.kill(pid, signal.SIGTERM)
    while alive(pid):
        time.sleep(0.02)
    open(config, "w").write(text)
    out = open(log_path, "a")
    proc = subprocess.Popen([binary, "run", "--config", config], env=dict(env, RUST_LOG="info"),
                            stdout=subprocess.DEVNULL, stderr=out)
    pid = proc.pid
    return (wait_all(cameras, 180) - t0) * 1000

def reap():
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pass

wait_all(cameras, 180)
time.sleep(3)
results = {"watcher": {"to_event_ms": [], "apply_ms": [], "to_connected_ms": []},
           "api": {"call_ms": [], "apply_ms": [], "to_connected_ms": []}}
others, frames, restart_ms = [], [], []
watched = base.replace("watch_config = false", "watch_config = true")
watched_added = added.replace("watch_config = false", "watch_config = true")
for trigger, (plain, more) in (("api", (base, added)), ("watcher", (watched, watched_added))):
    if trigger == "watcher":
        restart_ms.append(restart(plain))
        time.sleep(3)
    events = Events(["config.reloaded", "camera.connected", "camera.status_change"])
    time.sleep(1)
    frames.append(call("get_camera_status", device="cam0")["metrics"]["frames"])
    events.drain()
    r = results[trigger]
    for i in range(rounds):
        for text, adding in ((more, True), (plain, False)):
            if trigger == "watcher":
                t0 = write(text)
                e = events.wait(lambda e: e["topic"] == "config.reloaded")
                r["to_event_ms"].append((e["timestamp"] - t0) * 1000)
            else:
                write(text)
                t0 = time.time()
                call("reload_config")
                r["call_ms"].append((time.time() - t0) * 1000)
            r["apply_ms"].append(reload_elapsed_ms())
            if adding:
                e = events.wait(lambda e: e["topic"] == "camera.connected" and e["device"] == f"cam{cameras}")
                r["to_connected_ms"].append((e["timestamp"] - t0) * 1000)
            time.sleep(0.5)
            others += [e for e in events.drain() if e.get("device") not in (f"cam{cameras}", None)]
    frames.append(call("get_camera_status", device="cam0")["metrics"]["frames"])
    events.stop()
for _ in range(restarts - 1):
    restart_ms.append(restart(watched))
    reap()
os.kill(pid, signal.SIGTERM)
while alive(pid):
    time.sleep(0.05)
reap()
frames_before, frames_after = frames[0], frames[-1]

med = lambda xs: round(statistics.median(xs), 1) if xs else None
mx = lambda xs: round(max(xs), 1) if xs else None
report = {
    "commit": commit, "version": version, "cores": int(cores), "load_average_before": load,
    "cameras": cameras, "rounds": rounds,
    "watcher": {k: {"median": med(v), "max": mx(v), "n": len(v)} for k, v in results["watcher"].items()},
    "api": {k: {"median": med(v), "max": mx(v), "n": len(v)} for k, v in results["api"].items()},
    "restart_to_all_connected_ms": {"median": med(restart_ms), "max": mx(restart_ms), "n": len(restart_ms)},
    "untouched_status_changes": len(others),
    "cam0_frames_per_phase": frames,
}
json.dump(report, open(f"{evidence}/reload.json", "w"), indent=2)
w, a = report["watcher"], report["api"]
rs = report["restart_to_all_connected_ms"]
md = f"""# Hot reload of a {cameras}-camera config

`scripts/bench/reload.sh`: {cameras} RTSP cameras (the test camera, 320x240 at 10 fps, each mount its own stream) in the
config file; one camera added and removed again, {rounds} times each, by the file watcher (the file replaced by a
rename) and by `reload_config`; {version}, commit {commit}, {cores} cores, load average before {load}.

| trigger | until | median | max |
|---|---|---|---|
| watcher | `config.reloaded` event after the rename (150 ms debounce included) | {w["to_event_ms"]["median"]} ms | {w["to_event_ms"]["max"]} ms |
| watcher | the reload itself (read, diff, apply; camhub's log) | {w["apply_ms"]["median"]} ms | {w["apply_ms"]["max"]} ms |
| watcher | the added camera CONNECTED, after the rename | {w["to_connected_ms"]["median"]} ms | {w["to_connected_ms"]["max"]} ms |
| `reload_config` | the reply (`camhub call`, a process start included) | {a["call_ms"]["median"]} ms | {a["call_ms"]["max"]} ms |
| `reload_config` | the reload itself | {a["apply_ms"]["median"]} ms | {a["apply_ms"]["max"]} ms |
| peer: restart | every camera CONNECTED again after SIGTERM ({rs["n"]} restarts; viewers and recordings cut) | {rs["median"]} ms | {rs["max"]} ms |

The {cameras} cameras no change touched: {report["untouched_status_changes"]} status changes during the reloads; cam0's frame
counter before and after each trigger's rounds: {frames} (it only rises; the restart between the phases resets it).
"""
open(f"{evidence}/reload.md", "w").write(md)
print(md)
EOF
CAMHUB_PID=""
