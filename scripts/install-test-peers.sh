#!/usr/bin/env bash
# Installs what the tests' network peers run on, under assets/ at the repository root (git ignores it), every package
# from PyPI through pip, pinned with what they need:
#   .venv-peers/   WSDiscovery (the `wsdiscovery` module, with ifaddr and click): tests/peers/onvif_peer.py, the ONVIF
#                  camera that tests/discovery.rs runs in a network namespace of its own
#   .venv-otlp/    rotel (Streamfold's OpenTelemetry collector, written in Rust, shipped as a wheel with its binary):
#                  the OTLP/HTTP receiver tests/telemetry.rs sends camhub's traces to; it prints every span it
#                  receives. Linked as .venv-otlp/bin/rotel-agent. (PyPI has no otelcol or Jaeger binary that
#                  receives OTLP; rotel is a real collector a few MB large.)
# Idempotent: the venv is kept while it holds exactly these requirements (assets/.venv-peers/.requirements), so a
# second run only checks that. Debian's python3-venv is installed when missing (root or sudo). Runs from any
# directory; scripts/install-deps.sh --test runs it.
#   scripts/install-test-peers.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
A=$ROOT/assets
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
PEER_REQS=(WSDiscovery==2.1.2 ifaddr==0.2.0 click==8.5.1)
OTLP_REQS=(rotel==0.0.1a15 typing-extensions==4.15.0)

note() { echo "install-test-peers.sh: $*" >&2; }

mkdir -p "$A"
# One run at a time, with scripts/install-models.sh too (the same lock): two would build the same venv at once.
exec 9>"$A/.lock"
flock 9

# ready VENV REQS...: whether VENV holds exactly REQS.
ready() {
  local venv=$1
  shift
  [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$*" ]
}
if ready "$A/.venv-peers" "${PEER_REQS[@]}" && ready "$A/.venv-otlp" "${OTLP_REQS[@]}" \
  && [ -x "$A/.venv-otlp/bin/rotel-agent" ]; then
  exit 0
fi
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  note "installing: python3-venv"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 python3-venv
fi

venv=$A/.venv-peers
if ! ready "$venv" "${PEER_REQS[@]}"; then
  note "creating assets/.venv-peers with ${PEER_REQS[*]}"
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${PEER_REQS[@]}"
  "$venv/bin/python" -c 'import wsdiscovery.publishing'
  echo "${PEER_REQS[*]}" >"$venv/.requirements"
  note "ready: assets/.venv-peers"
fi

venv=$A/.venv-otlp
if ! ready "$venv" "${OTLP_REQS[@]}" || [ ! -x "$venv/bin/rotel-agent" ]; then
  note "creating assets/.venv-otlp with ${OTLP_REQS[*]}"
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${OTLP_REQS[@]}"
  # A relative link: assets/ may be reached through another checkout's symlink.
  agent=$("$venv/bin/python" -c 'import os, rotel; print(os.path.relpath(
    os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"), os.path.join(os.sys.prefix, "bin")))')
  chmod +x "$venv/bin/$agent"
  ln -sf "$agent" "$venv/bin/rotel-agent"
  "$venv/bin/rotel-agent" --version
  echo "${OTLP_REQS[*]}" >"$venv/.requirements"
  note "ready: assets/.venv-otlp (rotel-agent)"
fi
