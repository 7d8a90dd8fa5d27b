#!/usr/bin/env bash
# Runs both benchmarks (ingest, then RPC latency) with their defaults or the environment's settings (see
# scripts/bench/ingest.sh and scripts/bench/rpc-latency.sh), then prints the two markdown tables from evidence/.
# Meant for an otherwise idle machine: the full run takes about 3 x (connect + 5 s + 30 s) plus 3 x 10 s and builds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
EVIDENCE="${EVIDENCE_DIR:-$ROOT/evidence}"

bash scripts/bench/ingest.sh >/dev/null
bash scripts/bench/rpc-latency.sh >/dev/null

echo
cat "$EVIDENCE/ingest.md"
echo
cat "$EVIDENCE/rpc_latency.md"
