#!/usr/bin/env bash
# Runs the real-device tests (tests/v4l2.rs) inside the test VM (scripts/vm/run.sh): vivid and v4l2loopback devices,
# real udev events. `make test` calls this after `cargo test`; `make vm-test` runs it alone.
#
#   scripts/vm/test-v4l2.sh [TEST-BINARY ARGS...]     e.g. scripts/vm/test-v4l2.sh hotplug --nocapture
#
# The device tests are #[ignore]d on the host (no devices there), so the binary runs here with --ignored: only they
# run in the VM (the file's host test already ran under `cargo test`; it also passes here, expecting these devices),
# on one test thread (they share the devices and load/unload drivers). cargo builds on the host; only the prebuilt
# binary runs in the guest, whose view of target/ is read-only.
# VM options through the environment: VM_MEMORY, VM_TIMEOUT, VM_VERBOSE=1 (see run.sh).
# Cost: the build (nothing when `cargo test` just ran) + about 6 s of boot + the tests under software emulation.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
CARGO="${CARGO:-cargo}"

[ -f tests/v4l2.rs ] || {
  echo "vm/test-v4l2: tests/v4l2.rs does not exist; there are no device tests to run" >&2
  exit 1
}

echo "vm/test-v4l2: building the v4l2 test binary" >&2
messages="$(mktemp)"
trap 'rm -f "$messages"' EXIT
"$CARGO" test --locked --test v4l2 --no-run --message-format=json-render-diagnostics >"$messages"
exe="$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if (m.get("reason") == "compiler-artifact" and m.get("executable")
            and m["target"]["name"] == "v4l2" and m["profile"]["test"]):
        print(m["executable"])
' "$messages" | tail -n1)"
if [ -z "$exe" ] || [ ! -x "$exe" ]; then
  echo "vm/test-v4l2: cargo built no executable for the v4l2 test target" >&2
  exit 1
fi
# The test binary and the camhub binary it starts live in the target dir, which the guest must see wherever it is
# (run.sh shares it should it lie under /tmp or /run; a target dir set in .cargo/config is not in the environment).
target_dir="$("$CARGO" metadata --locked --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

# cargo runs test binaries in the package root with CARGO_MANIFEST_DIR set; do the same in the guest.
echo "vm/test-v4l2: running ${exe#"$root"/} in the VM" >&2
exec bash "$here/run.sh" --share "$target_dir" -e "CARGO_MANIFEST_DIR=$root" -e "CARGO_PKG_NAME=camhub" -- \
  "$exe" --ignored --test-threads=1 "$@"
