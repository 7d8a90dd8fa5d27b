#!/usr/bin/env bash
# RPC latency benchmark: builds release, raises the open-file limit (1000 clients need 1000 sockets on each side),
# then runs `cargo bench --bench rpc_latency` (benches/rpc_latency.rs), which writes evidence/rpc_latency.json and
# evidence/rpc_latency.md.
#
# Usage:  scripts/bench/rpc-latency.sh [C ...]          e.g. scripts/bench/rpc-latency.sh 1 10
# Env:    RPC_CLIENTS="1,100,1000" (arguments win), RPC_SECONDS=10, RPC_REQUESTS (per client, instead of seconds),
#         RPC_RATE=20 (req/s per client; camhub allows 200), RPC_CONNECT_PARALLEL=64, CAMHUB_BIN, EVIDENCE_DIR
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

RPC_CLIENTS="${RPC_CLIENTS:-1,100,1000}"
export RPC_CLIENTS
if [ $# -gt 0 ]; then
  RPC_CLIENTS="$(IFS=,; echo "$*")"
  export RPC_CLIENTS
fi

# Soft limit up to the hard one; C clients need about C descriptors here and C in camhub (which inherits it).
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ]; then ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true; else ulimit -n "$hard" 2>/dev/null || true; fi
max=0
for c in ${RPC_CLIENTS//,/ }; do [ "$c" -gt "$max" ] 2>/dev/null && max=$c; done
[ "$max" -gt 0 ] || max=1000
if [ "$(ulimit -n)" -lt $((max + 256)) ]; then
  echo "rpc-latency.sh: warning: open-file limit $(ulimit -n) is low for $max clients" >&2
fi

echo "rpc-latency.sh: cargo build --release" >&2
cargo build --release --bin camhub >&2
cargo bench --bench rpc_latency
