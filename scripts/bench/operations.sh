#!/usr/bin/env bash
# Operations figures in one page, evidence/operations.md: the reload time of a 100-camera config with one change
# (scripts/bench/reload.sh), the video lost per storage root failure over 10 failures (scripts/bench/root-failures.sh,
# root), and the index rebuild time per 1000 segments (scripts/bench/rebuild.sh). Runs the three, then summarises
# their JSON; OPERATIONS_SUMMARY_ONLY=1 only summarises what they last wrote.
#
# Usage:  sudo scripts/bench/operations.sh
# Env:    OPERATIONS_SUMMARY_ONLY=1   do not run the benchmarks
#         CAMHUB_BIN=path             the binary reload.sh and rebuild.sh use (default: cargo build --release)
#         EVIDENCE_DIR=evidence       where the results go
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EVIDENCE="${EVIDENCE_DIR:-$HERE/../../evidence}"
if [ "${OPERATIONS_SUMMARY_ONLY:-}" != 1 ]; then
  bash "$HERE/reload.sh"
  bash "$HERE/root-failures.sh"
  bash "$HERE/rebuild.sh"
fi
for f in reload root_failures rebuild; do
  [ -f "$EVIDENCE/$f.json" ] || { echo "operations.sh: $EVIDENCE/$f.json is missing; run without OPERATIONS_SUMMARY_ONLY" >&2; exit 1; }
done

python3 - "$EVIDENCE" <<'EOF'
import json, sys
evidence = sys.argv[1]
reload, roots, rebuild = (json.load(open(f"{evidence}/{n}.json")) for n in ("reload", "root_failures", "rebuild"))
w, a, rs = reload["watcher"], reload["api"], reload["restart_to_all_connected_ms"]
lost = roots["lost_ms"]
faults = len(roots["faults"])
kinds = sorted({f["fault"] for f in roots["faults"]})
md = f"""# Operations: reload, storage root failures, index rebuild

Written by `scripts/bench/operations.sh` from the three benchmarks' results; each has its page with the details.

## Reload of a {reload["cameras"]}-camera config with one change ([reload.md](reload.md))

One RTSP camera added to (and removed from) a config of {reload["cameras"]} running RTSP cameras, {reload["rounds"]} times each
way per trigger; commit {reload["commit"]}, {reload["cores"]} cores.

| | median | max |
|---|---|---|
| the reload itself (read, validate, diff, apply) | {w["apply_ms"]["median"]} ms (watcher), {a["apply_ms"]["median"]} ms (`reload_config`) | {max(w["apply_ms"]["max"], a["apply_ms"]["max"])} ms |
| file saved → `config.reloaded` event (150 ms debounce included) | {w["to_event_ms"]["median"]} ms | {w["to_event_ms"]["max"]} ms |
| file saved → the added camera CONNECTED | {w["to_connected_ms"]["median"]} ms | {w["to_connected_ms"]["max"]} ms |
| peer: a restart, SIGTERM → every camera CONNECTED again | {rs["median"]} ms | {rs["max"]} ms |

The other {reload["cameras"]} cameras: {reload["untouched_status_changes"]} status changes during all reloads; their counters
went on. A restart, the peer, cuts every viewer and recording for those seconds.

## Video lost per storage root failure ([root_failures.md](root_failures.md))

{faults} failures of the root a camera was recording onto ({", ".join(kinds)}, in turn; commit {roots["commit"]}):
video lost median {lost["median"]} ms, max {lost["max"]} ms, {lost["total"]} ms in all. The recording moved to the other
root with the frames since the last sync carried over (files overlap); the new file appeared
{roots["new_file_seen_ms"]["median"]} ms (median) after the fault.

## Rebuilding the recordings index ([rebuild.md](rebuild.md))

`camhub check --rebuild` with the database deleted, {rebuild["segments"]} segments of {rebuild["segment_seconds"]} s
({rebuild["segment_bytes"] / 1e6:.2f} MB each; {rebuild["build"]}, commit {rebuild["commit"]}):
**{rebuild["rebuild_from_nothing_per_1000_s"]} s per 1000 segments** ({rebuild["rebuild_from_nothing_mb_per_s"]} MB/s; every file
demuxed, measured, fsynced and indexed); over a whole index {rebuild["rebuild_whole_index_per_1000_s"]} s per 1000. `backup`:
{rebuild["backup_s"]} s, `restore`: {rebuild["restore_s"]} s for that index.
"""
open(f"{evidence}/operations.md", "w").write(md)
print(md)
EOF
