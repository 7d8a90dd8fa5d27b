#!/usr/bin/env bash
# Installs every Debian package camhub needs to build, run and test (idempotent; root or sudo), checks that a
# Rust toolchain new enough for our dependencies is present, then installs ONNX Runtime, the detection models and the
# test photos under assets/ (scripts/install-models.sh; cached, so a second run only verifies them), and with --test
# the Python of the tests' network peers (scripts/install-test-peers.sh).
#   scripts/install-deps.sh          build and run
#   scripts/install-deps.sh --test   also what the tests and benchmarks use
set -euo pipefail

packages=(
  pkg-config libclang-dev libudev-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-nice gstreamer1.0-rtsp gstreamer1.0-x
  ca-certificates curl python3 python3-websockets
)
if [ "${1:-}" = "--test" ]; then
  # ffmpeg: ffprobe checks files and is the peer in benchmarks; procps: ps in scripts;
  # plugins-base-apps: gst-discoverer-1.0.
  # chromium, nodejs: the page's browser test (tests/browser.rs) drives Debian's Chromium with playwright-core.
  # iproute2: ip netns and veth pairs for the network discovery test (tests/discovery.rs); python3-venv: its peer.
  # nginx, libnginx-mod-rtmp: nginx-rtmp, relaying to camhub in tests/sources.rs and the peer of
  # scripts/bench/sources.sh (run there from a config of its own, never as the system service).
  # e2fsprogs, util-linux, mount: loop-mounted ext4 disks of the storage roots test (tests/storage_roots.rs, as root).
  packages+=(ffmpeg procps gstreamer1.0-plugins-base-apps chromium nodejs iproute2 python3-venv nginx libnginx-mod-rtmp)
  packages+=(e2fsprogs util-linux mount)
  # NodeSource's nodejs carries npm; Debian's nodejs needs its npm package.
  command -v npm >/dev/null || packages+=(npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}"
  # No service of these packages is started by installing them (nginx would take port 80): camhub's tests and
  # benchmarks run what they need from configs of their own. A policy-rc.d we add (none was there) goes at exit.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${missing[@]}"
fi

if [ "${1:-}" = "--test" ]; then
  # The browser test's node side, exactly as locked (playwright-core only; it never downloads a browser).
  npm ci --prefix "$(dirname "$0")/../tests/browser" --no-audit --no-fund --loglevel=error
  # The discovery test's ONVIF peer: WSDiscovery from PyPI, pinned, in assets/.venv-peers.
  bash "$(dirname "$0")/install-test-peers.sh"
fi

if ! command -v cargo >/dev/null; then
  echo "camhub needs Rust >= 1.94 (cargo on PATH); install it with rustup and rerun" >&2
  exit 1
fi

# Both modes: camhub's detection needs ONNX Runtime and its models; the tests and benchmarks also use the photos.
bash "$(dirname "$0")/install-models.sh"
