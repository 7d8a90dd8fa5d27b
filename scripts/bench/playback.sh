#!/usr/bin/env bash
# Playback time to first byte: camhub records the reference test camera (1280x720, 30 fps, GOP 30, 2000 kbit/s) in
# 2 s segments; once PLAYBACK_SEGMENTS + 2 segments are indexed, GET /playback/cam0 asks for a range that touches
# PLAYBACK_SEGMENTS of them (from 0.5 s into the first, for PLAYBACK_SEGMENTS x 2 - 1 s), PLAYBACK_RUNS times, each
# with a start 1 ms later than the last so the cache never answers (every run demuxes and muxes the whole range); then
# the same URL again, PLAYBACK_RUNS times, from the cache (what a player's Range requests get). Time to first byte:
# from the request sent (a fresh TCP connection to 127.0.0.1) to the first byte of the response (its status line: the
# file is built before the answer starts). Medians and extremes; also the file's size and duration.
# Results: evidence/playback.json and evidence/playback.md. Work files: evidence/tmp/playback/.
#
# Usage:  scripts/bench/playback.sh
# Env:    PLAYBACK_SEGMENTS=10  segments the range touches
#         PLAYBACK_RUNS=9       requests of each kind
#         CAMHUB_BIN=path       use this binary and skip the build (default: cargo build --release)
#         EVIDENCE_DIR=evidence where the results go
# Needs: bash, python3, Linux.
set -euo pipefail

BENCH_NAME=playback.sh
# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SEGMENTS="${PLAYBACK_SEGMENTS:-10}"
RUNS="${PLAYBACK_RUNS:-9}"
for v in SEGMENTS RUNS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { note "PLAYBACK_$v must be a positive integer"; exit 64; }
done

build_camhub
bench_workdir playback data
bench_traps

DATA="$WORK/data"
CONFIG="$DATA/camhub.toml"
PORT="$(free_port)"
SECRET="playback-bench-secret-0123456789abcdef"
start_testcam 1
{
  camhub_config_head "$PORT" 5000 "$SECRET" "$DATA"
  printf '[rtsp_server]\nlisten = "127.0.0.1:%s"\n[rtmp]\nenabled = false\n[srt]\nenabled = false\n' "$(free_port)"
  printf '[recording]\nsegment_seconds = 2\n'
  printf '[[cameras]]\nid = "cam0"\nurl = "rtsp://127.0.0.1:%s/cam0"\nrecord = "always"\n' "$CAM_PORT"
} >"$CONFIG"
start_camhub "$DATA"
TOKEN="$(camhub_token bench "$CONFIG")"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
collect_versions

"$PY" - "$EVIDENCE" "$PORT" "$TOKEN" "$SEGMENTS" "$RUNS" "$commit" "$version" "$(nproc)" "$LOAD_BEFORE" \
  "$DATA" <<'EOF'
import json, os, socket, statistics, sqlite3, subprocess, sys, time
from datetime import datetime, timezone

evidence, port, token, segments, runs, commit, version, cores, load, data = sys.argv[1:]
port, segments, runs = int(port), int(segments), int(runs)

# The database is read only once camhub is ready (its migrations done): a reader there while camhub created it made
# its first migration fail once ("table cameras already exists").
import urllib.request
deadline = time.time() + 60
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit(f"playback.sh: camhub not ready; see {data}/camhub.log")
    time.sleep(0.2)

def indexed():
    try:
        db = sqlite3.connect(f"file:{data}/camhub.db?mode=ro", uri=True, timeout=5)
        rows = db.execute("SELECT started_at, ended_at FROM segments WHERE camera = 'cam0' ORDER BY started_at").fetchall()
        db.close()
        return rows
    except sqlite3.Error:
        return []

deadline = time.time() + 60 + 3 * segments
while len(rows := indexed()) < segments + 2:
    if time.time() > deadline:
        sys.exit(f"playback.sh: only {len(rows)} segments indexed; see {data}/camhub.log")
    time.sleep(0.5)
first = rows[1][0]  # the second segment: the first one holds the pre-roll's start-up
duration = segments * 2 - 1

def iso(ms):
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

def get(start_ms):
    """(ms to the first byte, status, body bytes, headers) of one GET on a fresh connection."""
    path = f"/playback/cam0?start={iso(start_ms)}&duration={duration}"
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    t0 = time.perf_counter()
    s.sendall(request.encode())
    chunk = s.recv(65536)
    ttfb = (time.perf_counter() - t0) * 1000
    data = bytearray(chunk)
    while chunk := s.recv(1 << 20):
        data += chunk
    s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return ttfb, int(lines[0].split()[1]), body, headers

built, cached = [], []
size = file_duration = None
for i in range(runs):
    ttfb, status, body, headers = get(first + 500 + i)
    if status != 200:
        sys.exit(f"playback.sh: {status} {body[:200]!r}")
    built.append(ttfb)
    size, file_duration = len(body), float(headers.get("x-playback-duration", "nan"))
for i in range(runs):
    ttfb, status, body, _ = get(first + 500 + runs - 1)
    cached.append(ttfb)
log = open(f"{data}/camhub.log").read().splitlines()
builds = [l for l in log if "playback range built" in l]
touched = [w.split("=")[1] for w in builds[-1].split() if w.startswith("segments=")] if builds else ["?"]

def summary(v):
    return {"median_ms": round(statistics.median(v), 1), "min_ms": round(min(v), 1), "max_ms": round(max(v), 1),
            "runs": [round(x, 1) for x in v]}

result = {
    "commit": commit, "version": version, "cores": int(cores), "load_before": load,
    "load_after": open("/proc/loadavg").read().split()[:3],
    "stream": "1280x720, 30 fps, GOP 30 (1 s), 2000 kbit/s, H.264 (camhub testcam), segments of 2 s, fmp4",
    "range": {"segments": int(touched[0]) if touched[0].isdigit() else touched[0], "duration_s": duration,
              "file_bytes": size, "file_duration_s": file_duration, "format": "mp4 (faststart)"},
    "built": summary(built), "cached": summary(cached),
}
os.makedirs(evidence, exist_ok=True)
json.dump(result, open(f"{evidence}/playback.json", "w"), indent=2)
md = f"""# Playback time to first byte (scripts/bench/playback.sh)

A range over {result['range']['segments']} segments of 2 s ({duration} s asked, {file_duration} s and {size} bytes
delivered as MP4 with its index first) of the reference stream ({result['stream']}), release build, {cores} cores,
load before {load}, after {' '.join(result['load_after'])}; commit {commit}.

| request | median | min | max | runs |
|---|---|---|---|---|
| built (every run a new range: demux {result['range']['segments']} segments, mux, write) | {result['built']['median_ms']} ms | {result['built']['min_ms']} ms | {result['built']['max_ms']} ms | {runs} |
| cached (the same range again, as a player's Range requests) | {result['cached']['median_ms']} ms | {result['cached']['min_ms']} ms | {result['cached']['max_ms']} ms | {runs} |

Time to first byte: from the request sent on a fresh connection to 127.0.0.1 to the response's first byte.
"""
open(f"{evidence}/playback.md", "w").write(md)
print(md)
EOF
report_warnings "$DATA/camhub.log"
