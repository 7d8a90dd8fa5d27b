#!/usr/bin/env bash
# The chaos suite's figures (tests/chaos.rs, issue 13): runs its host tests and, in the test VM, its netem test, and
# writes every figure they print (`chaos:` lines: detection and recovery per fault, media and bytes lost per SIGKILL,
# RSS and threads beside 50 dead sources) to evidence/chaos.md, with the conditions. Needs root (network namespaces)
# and what `make test` installs.
#
# Usage:  scripts/bench/chaos.sh
# Env:    CAMHUB_CHAOS_LONG=1    the long form (20 link cycles, 10 freezes, 30 kills, 5 minutes of dead sources)
#         CAMHUB_CHAOS_CYCLES=N  link fault cycles
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
out="$root/evidence/chaos.md"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

form="bounded (CI) form"
[ "${CAMHUB_CHAOS_LONG:-0}" = 1 ] && form="long form (CAMHUB_CHAOS_LONG=1)"
start=$SECONDS
cargo test --locked --test chaos -- --nocapture --test-threads=1 2>&1 | tee -a "$log"
host_s=$((SECONDS - start))
start=$SECONDS
bash scripts/vm/test-in-vm.sh chaos --nocapture 2>&1 | tee -a "$log"
vm_s=$((SECONDS - start))

{
  echo "# Chaos suite figures"
  echo
  echo "Written by \`scripts/bench/chaos.sh\` on $(date -u +%Y-%m-%d), $form: \`tests/chaos.rs\` on the host"
  echo "(${host_s} s with the build) and its netem test in the qemu VM rig under TCG software emulation (${vm_s} s)."
  echo "Machine: $(nproc) cores ($(uname -r) host kernel), debug build, other builds and tests running beside it: the"
  echo "times are noisy. Every line below is a test's own output; each test asserts the issue's targets."
  echo
  echo '```'
  grep -a 'chaos: ' "$log" | sed 's/^.*chaos: //'
  echo '```'
} >"$out"
echo "chaos: figures written to ${out#"$root"/}" >&2
