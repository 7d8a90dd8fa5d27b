#!/usr/bin/env bash
# Runs every benchmark (ingest, RPC latency, recording next to FFmpeg, snapshots next to FFmpeg, RTSP readers, index
# rebuild, hot reload, storage root failures) with their defaults or the environment's settings (see
# scripts/bench/ingest.sh, rpc-latency.sh, recording.sh, snapshot.sh, rtsp-readers.sh, rebuild.sh, reload.sh and
# root-failures.sh), then prints the markdown tables from evidence/ (operations.md sums up the last three).
# Meant for an otherwise idle machine: the full run takes about 3 x (connect + 5 s + 30 s) for ingest, 3 x 10 s for
# RPC latency, 6 x (connect + 5 s + 30 s + stop) for recording (camhub and FFmpeg at N = 1, 10, 50, one after the
# other; up to about 0.6 GB of recordings at once at N = 50, in a temporary directory emptied after each phase), and
# about 2 x 10 s + 100 snapshots + 20 x ~1.5 s for snapshots, 4 x (5 s + 20 s + 5 s) for RTSP readers, about 20 s and
# 0.5 GB for the index rebuild, about 3 min for reload (100 cameras) and 3 min for 10 root failures, plus builds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
EVIDENCE="${EVIDENCE_DIR:-$ROOT/evidence}"

bash scripts/bench/ingest.sh >/dev/null
bash scripts/bench/rpc-latency.sh >/dev/null
bash scripts/bench/recording.sh >/dev/null
bash scripts/bench/snapshot.sh >/dev/null
bash scripts/bench/v4l2.sh >/dev/null # local cameras in the VM rig (scripts/vm), then encoding cost on the host
bash scripts/bench/rtsp-readers.sh >/dev/null
bash scripts/bench/rebuild.sh >/dev/null
bash scripts/bench/reload.sh >/dev/null # a 100-camera config reloaded, against a restart
bash scripts/bench/root-failures.sh >/dev/null # needs root: loop-mounted disks
OPERATIONS_SUMMARY_ONLY=1 bash scripts/bench/operations.sh >/dev/null

for report in ingest rpc_latency recording snapshot publish operations; do
  echo
  cat "$EVIDENCE/$report.md"
done
