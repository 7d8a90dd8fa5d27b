#!/usr/bin/env bash
# Runs the #[ignore]d tests of one test target inside the test VM (scripts/vm/run.sh): the tests that need what only
# the guest has, real V4L2 devices and udev (tests/v4l2.rs) or kernel modules such as sch_netem (tests/chaos.rs's
# netem test). `make test` calls this after `cargo test` for each such target.
#
#   scripts/vm/test-in-vm.sh TARGET [TEST-BINARY ARGS...]     e.g. scripts/vm/test-in-vm.sh chaos netem --nocapture
#
# Those tests are #[ignore]d on the host (with the reason), so the binary runs here with --ignored: only they run in
# the VM, on one test thread. cargo builds on the host; only the prebuilt binary runs in the guest, whose view of
# target/ is read-only.
# VM options through the environment: VM_MEMORY, VM_TIMEOUT, VM_VERBOSE=1 (see run.sh).
# Cost: the build (nothing when `cargo test` just ran) + about 6 s of boot + the tests under software emulation.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
CARGO="${CARGO:-cargo}"

target="${1:-}"
[ -n "$target" ] || {
  echo "vm/test-in-vm: which test target? e.g. scripts/vm/test-in-vm.sh chaos" >&2
  exit 2
}
shift
[ -f "tests/$target.rs" ] || {
  echo "vm/test-in-vm: tests/$target.rs does not exist; there are no such tests to run" >&2
  exit 1
}

echo "vm/test-in-vm: building the $target test binary" >&2
messages="$(mktemp)"
trap 'rm -f "$messages"' EXIT
"$CARGO" test --locked --test "$target" --no-run --message-format=json-render-diagnostics >"$messages"
exe="$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if (m.get("reason") == "compiler-artifact" and m.get("executable")
            and m["target"]["name"] == sys.argv[2] and m["profile"]["test"]):
        print(m["executable"])
' "$messages" "$target" | tail -n1)"
if [ -z "$exe" ] || [ ! -x "$exe" ]; then
  echo "vm/test-in-vm: cargo built no executable for the $target test target" >&2
  exit 1
fi
# The test binary and the camhub binary it starts live in the target dir, which the guest must see wherever it is
# (run.sh shares it should it lie under /tmp or /run; a target dir set in .cargo/config is not in the environment).
target_dir="$("$CARGO" metadata --locked --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

# cargo runs test binaries in the package root with CARGO_MANIFEST_DIR set; do the same in the guest.
echo "vm/test-in-vm: running ${exe#"$root"/} in the VM" >&2
exec bash "$here/run.sh" --share "$target_dir" -e "CARGO_MANIFEST_DIR=$root" -e "CARGO_PKG_NAME=camhub" -- \
  "$exe" --ignored --test-threads=1 "$@"
