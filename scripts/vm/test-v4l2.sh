#!/usr/bin/env bash
# Runs the real-device tests (tests/v4l2.rs) inside the test VM (scripts/vm/run.sh): vivid and v4l2loopback devices,
# real udev events. `make vm-test` runs it alone; `make test` runs scripts/vm/test-in-vm.sh for each target that has
# tests for the VM, this one included.
#
#   scripts/vm/test-v4l2.sh [TEST-BINARY ARGS...]     e.g. scripts/vm/test-v4l2.sh hotplug --nocapture
#
# The device tests are #[ignore]d on the host (no devices there), so the binary runs in the VM with --ignored, on one
# test thread (they share the devices and load/unload drivers). See scripts/vm/test-in-vm.sh.
set -euo pipefail
exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/test-in-vm.sh" v4l2 "$@"
