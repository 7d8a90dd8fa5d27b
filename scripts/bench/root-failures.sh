#!/usr/bin/env bash
# Storage root failures: how much video each failure of a recordings root costs. Runs the storage roots test
# (tests/storage_roots.rs: real loop-mounted ext4 disks, the real test camera, real camhub) with ROOT_FAULTS faults on
# root A while it records: lazy unmount, read-only (ext4 error), I/O errors (ext4 shutdown), full, in turn; after each
# the disk comes back and is used again. Per fault: the switch-over gap (the first frame of the new file on root B
# minus the last frame recorded before it, from the index's start times and ffprobe's durations; negative = the two
# files overlap, nothing lost) and how soon the new file on B appeared. Video lost per fault = max(0, gap).
# Results: evidence/root_failures.json and evidence/root_failures.md.
#
# Usage:  sudo scripts/bench/root-failures.sh      (loop devices and mounts need root)
# Env:    ROOT_FAULTS=10        faults in all
#         EVIDENCE_DIR=evidence where the results go
# Needs: root, cargo, the test dependencies (scripts/install-deps.sh --test).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
EVIDENCE="${EVIDENCE_DIR:-$ROOT/evidence}"
FAULTS="${ROOT_FAULTS:-10}"
[[ "$FAULTS" =~ ^[1-9][0-9]*$ ]] || { echo "root-failures.sh: ROOT_FAULTS must be a positive integer" >&2; exit 64; }
[ "$(id -u)" = 0 ] || { echo "root-failures.sh: needs root (loop devices and mounts)" >&2; exit 1; }
mkdir -p "$EVIDENCE"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

cd "$ROOT"
echo "root-failures.sh: $FAULTS faults (tests/storage_roots.rs)" >&2
CAMHUB_ROOT_FAULTS="$FAULTS" cargo test -q --test storage_roots -- --nocapture >"$LOG" 2>&1 ||
  { grep -A3 panicked "$LOG" | cut -c1-2000 >&2; echo "root-failures.sh: the test failed" >&2; exit 1; }

python3 - "$LOG" "$EVIDENCE" "$FAULTS" "$(git rev-parse --short=12 HEAD)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import json, re, statistics, sys
log, evidence, faults, commit, cores, load = sys.argv[1:]
rows = []
for line in open(log, errors="replace"):
    m = re.match(r"(\w+): switch-over gap ([+-]\d+) ms .*?; A's open file (.*?); new file on B seen (\d+) ms", line)
    if m:
        rows.append({"fault": m.group(1), "gap_ms": int(m.group(2)), "open_file_on_a": m.group(3),
                     "new_file_seen_ms": int(m.group(4)), "lost_ms": max(0, int(m.group(2)))})
if len(rows) != int(faults):
    sys.exit(f"root-failures.sh: {len(rows)} faults measured, {faults} expected")
lost = [r["lost_ms"] for r in rows]
seen = [r["new_file_seen_ms"] for r in rows]
report = {"commit": commit, "cores": int(cores), "load_average_after": load, "faults": rows,
          "lost_ms": {"median": statistics.median(lost), "max": max(lost), "total": sum(lost)},
          "new_file_seen_ms": {"median": statistics.median(seen), "max": max(seen)}}
json.dump(report, open(f"{evidence}/root_failures.json", "w"), indent=2)
table = "\n".join(f"| {i + 1} | {r['fault']} | {r['gap_ms']:+d} ms | {r['lost_ms']} ms | {r['new_file_seen_ms']} ms | "
                  f"{r['open_file_on_a']} |" for i, r in enumerate(rows))
md = f"""# Video lost per storage root failure

`scripts/bench/root-failures.sh`: tests/storage_roots.rs with {faults} faults on root A (64 MiB loop-mounted ext4)
while one camera (320x240, 15 fps, 1 s GOP) records in 3 s fMP4 segments with 500 ms fragments; root B takes over,
A is repaired or remounted and used again before the next fault. Commit {commit}, {cores} cores, debug build.

Gap: the first frame of the new file on B minus the last frame recorded before it (index start times plus
ffprobe durations); negative means the files overlap (the frames since the keyframe before the last sync are carried
to B), so nothing is lost. Lost = max(0, gap).

| # | fault | gap | lost | new file on B after | A's open file |
|---|---|---|---|---|---|
{table}

Video lost per failure: median {report["lost_ms"]["median"]} ms, max {report["lost_ms"]["max"]} ms, {report["lost_ms"]["total"]} ms over
{faults} failures; the new file on B appeared {report["new_file_seen_ms"]["median"]} ms (median) after the fault, at most
{report["new_file_seen_ms"]["max"]} ms. No peer here records to several disks: a single-root recorder (Frigate; FFmpeg's
segment muxer) stops at the first failed write, and everything until its disk is fixed is lost.
"""
open(f"{evidence}/root_failures.md", "w").write(md)
print(md)
EOF
