#!/usr/bin/env bash
# Runs one command inside a throw-away VM that has real V4L2 devices and a real udev, and returns its exit code.
#
#   scripts/vm/run.sh [options] -- CMD ARGS...
#
# Why: the host (and CI) has no camera, no kernel modules and no udevd. The VM boots Debian's kernel under qemu
# (software emulation, TCG: /dev/kvm here cannot run it), loads the kernel's vivid test driver (/dev/video0..3 and
# friends) and v4l2loopback (/dev/video10), with systemd-udevd running, so device discovery, hot-plug (rmmod/modprobe,
# unbind/bind) and capture are the real thing. The host's whole / is visible read-only at the same paths (a tmpfs
# overlay on top makes it writable, changes are thrown away), so host-built binaries run unchanged in the same working
# directory. The guest has its own tmpfs /tmp and /run; the directories it needs from the host's /tmp or /run (the
# working directory, the repository, CARGO_TARGET_DIR, the rig's files, and --share) are shared into it one by one,
# at the same paths and the same way as /.
#
# Output of CMD streams live to this terminal (the guest's serial console). Exit status: CMD's own, or
#   124  the VM did not finish within the timeout (qemu was killed)
#   125  the rig failed: the VM did not boot, a driver did not load, or the command could not be started
#
# Options (each also settable through the environment variable shown):
#   -m, --memory SIZE      guest RAM, qemu syntax (VM_MEMORY, default 1536M)
#   -t, --timeout SECONDS  kill the VM after this long (VM_TIMEOUT, default 600)
#       --no-vivid         do not load vivid (the command loads it itself)
#       --no-loopback      do not load v4l2loopback
#       --vivid-args ARGS  module arguments for vivid (VM_VIVID_ARGS, default none: one instance, video0..3)
#       --loopback-args ARGS  module arguments for v4l2loopback
#                          (VM_LOOPBACK_ARGS, default "devices=1 video_nr=10 card_label=camhub-loopback")
#   -e, --env NAME[=VALUE] pass one more environment variable (besides PATH, HOME, RUST_*, GST_*, CAMHUB_*, CARGO_*...)
#   -s, --share DIR        one more host directory the command needs, should it lie under /tmp or /run (anywhere
#                          else it is visible anyway)
#   -o, --out DIR          host directory shared read-write with the guest as /run/vmrig (also $VMRIG_OUT in the
#                          guest), kept after the run for artifacts; default a temporary directory, deleted
#   -i, --interactive      connect CMD's stdin to this terminal (e.g. `run.sh -i -- bash`); Ctrl-C goes to the
#                          guest, Ctrl-A x quits qemu
#   -v, --verbose          kernel messages and rig timings on the console (VM_VERBOSE=1)
#
# Cost, measured on a 2-core host with no KVM: the command starts 5-7 s after run.sh does, a trivial command takes
# 6-9 s end to end; qemu's RSS is about 400 MB, up to 800 MB with camhub and GStreamer inside. The first run also
# runs setup.sh (packages and the DKMS build: about 1 min).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
vm_dir="${VM_DIR:-${CARGO_TARGET_DIR:-$root/target}/vm}"

memory="${VM_MEMORY:-1536M}"
timeout_s="${VM_TIMEOUT:-600}"
vivid=1
loopback=1
vivid_args="${VM_VIVID_ARGS:-}"
loopback_args="${VM_LOOPBACK_ARGS:-devices=1 video_nr=10 card_label=camhub-loopback}"
out=""
interactive=0
verbose="${VM_VERBOSE:-0}"
extra_env=()
asked_shares=()

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  exit "${1:-0}"
}
rig_usage() {
  echo "vm/run: $*; see scripts/vm/run.sh --help" >&2
  exit 2
}
rig_fail() {
  echo "vm/run: $*" >&2
  exit 125
}

while [ $# -gt 0 ]; do
  case "$1" in
    -m | --memory) memory="$2" && shift 2 ;;
    -t | --timeout) timeout_s="$2" && shift 2 ;;
    --no-vivid) vivid=0 && shift ;;
    --no-loopback) loopback=0 && shift ;;
    --vivid-args) vivid_args="$2" && shift 2 ;;
    --loopback-args) loopback_args="$2" && shift 2 ;;
    -e | --env) extra_env+=("$2") && shift 2 ;;
    -s | --share)
      [ -d "$2" ] || rig_usage "--share $2 is not a directory"
      asked_shares+=("$2") && shift 2
      ;;
    -o | --out) out="$2" && shift 2 ;;
    -i | --interactive) interactive=1 && shift ;;
    -v | --verbose) verbose=1 && shift ;;
    -h | --help) usage 0 ;;
    --) shift && break ;;
    *) rig_usage "unknown option $1 (the command goes after --)" ;;
  esac
done
[ $# -gt 0 ] || rig_usage "no command given"
[[ "$timeout_s" =~ ^[0-9]+$ ]] || rig_fail "--timeout wants whole seconds, got '$timeout_s'"

bash "$here/setup.sh" || rig_fail "setup.sh failed: the VM cannot be built on this machine"
# shellcheck source=/dev/null
. "$vm_dir/env"
for f in "$VM_VMLINUX" "$VM_INITRAMFS" "$VM_GST_REGISTRY"; do
  [ -s "$f" ] || rig_fail "$f is missing after setup"
done
# Directories the guest must see at their host paths. Everything outside /tmp and /run comes with the host's /; those
# two are the guest's own tmpfs, which would hide a checkout or a target dir there (`make test` in a clone under /tmp),
# so each such directory gets a share of its own, mounted in place by guest-init.sh. One inside another needs none.
wanted=("$PWD" "$root" "$vm_dir" ${CARGO_TARGET_DIR:+"$CARGO_TARGET_DIR"} "${asked_shares[@]}")
shares=()
while IFS= read -r dir; do
  case "$dir/" in /tmp/* | /run/*) ;; *) continue ;; esac
  for shared in "${shares[@]}"; do
    case "$dir/" in "$shared"/*) continue 2 ;; esac
  done
  shares+=("$dir")
done < <(
  # Absolute and existing (a CARGO_TARGET_DIR not built yet is nothing to share); sorted, so a parent comes first.
  for d in "${wanted[@]}"; do (cd "$d" 2>/dev/null && pwd) || true; done | LC_ALL=C sort -u
)

if [ -n "$out" ]; then
  mkdir -p "$out"
  out="$(cd "$out" && pwd)"
  rm -f "$out/rc" "$out/rig-error" "$out/job" "$out/config" "$out/guest-init.sh"
else
  out="$(mktemp -d "${TMPDIR:-/tmp}/vmrig.XXXXXX")"
  trap 'rm -rf "$out"' EXIT
fi

# The guest's options (sourced by guest-init.sh).
{
  printf 'VMRIG_VIVID=%q\nVMRIG_VIVID_ARGS=%q\n' "$vivid" "$vivid_args"
  printf 'VMRIG_LOOPBACK=%q\nVMRIG_LOOPBACK_ARGS=%q\n' "$loopback" "$loopback_args"
  printf 'VMRIG_VERBOSE=%q\nVMRIG_INTERACTIVE=%q\n' "$verbose" "$interactive"
  if [ -t 1 ]; then echo VMRIG_TTY=1; else echo VMRIG_TTY=0; fi
  printf 'VMRIG_SHARES=('
  for dir in "${shares[@]}"; do printf ' %q' "$dir"; done
  printf ' )\n'
} >"$out/config"
# Stage 2 boots from the results share rather than from the repository, which may itself be one of the shares that
# only stage 2 mounts. A copy per run, so editing guest-init.sh still needs no rebuild.
cp "$here/guest-init.sh" "$out/guest-init.sh"

# The job: same working directory and a sane subset of this environment, then CMD.
passed=(PATH HOME USER LOGNAME LANG LC_ALL LC_CTYPE TERM TZ CI NO_COLOR
  RUST_LOG RUST_BACKTRACE RUST_LIB_BACKTRACE RUST_TEST_THREADS RUST_TEST_NOCAPTURE RUST_MIN_STACK
  GST_DEBUG GST_DEBUG_NO_COLOR GST_DEBUG_DUMP_DOT_DIR ORT_DYLIB_PATH)
while IFS= read -r name; do passed+=("$name"); done < <(compgen -e | grep -E '^(CAMHUB_|CARGO_)' || true)
{
  echo "# written by scripts/vm/run.sh; run by scripts/vm/guest-init.sh inside the VM"
  for name in "${passed[@]}"; do
    if [ -n "${!name+x}" ]; then printf 'export %s=%q\n' "$name" "${!name}"; fi
  done
  for kv in "${extra_env[@]}"; do
    name="${kv%%=*}"
    [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || rig_fail "--env wants NAME or NAME=VALUE, got '$kv'"
    if [ "$name" = "$kv" ]; then
      if [ -n "${!name+x}" ]; then printf 'export %s=%q\n' "$name" "${!name}"; fi
    else
      printf 'export %s=%q\n' "$name" "${kv#*=}"
    fi
  done
  # The registry built on the host (setup.sh): without it the first GStreamer call rescans every plugin over 9p.
  printf 'export GST_REGISTRY=%q GST_REGISTRY_UPDATE=no VMRIG_OUT=/run/vmrig\n' "$VM_GST_REGISTRY"
  printf 'cd %q || { echo "vm/run: %q is not visible in the guest" >&2; exit 125; }\n' "$PWD" "$PWD"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} >"$out/job"

cmdline="console=ttyS0 panic=-1 oops=panic mitigations=off vmrig.init=/run/vmrig/guest-init.sh"
if [ "$verbose" = 1 ]; then
  cmdline="$cmdline loglevel=7"
else
  cmdline="$cmdline quiet loglevel=3"
fi

# shellcheck disable=SC2054 # qemu options are comma-separated
qemu=(qemu-system-x86_64
  -accel tcg,thread=multi,tb-size=256 -cpu max -smp 1 -m "$memory"
  -nodefaults -display none -no-reboot -net none
  -kernel "$VM_VMLINUX" -initrd "$VM_INITRAMFS" -append "$cmdline"
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
  -virtfs "local,path=${out//,/,,},mount_tag=vmrig,security_model=none,multidevs=remap")
for i in "${!shares[@]}"; do
  # qemu's option syntax escapes a comma in a value by doubling it.
  qemu+=(-virtfs "local,path=${shares[$i]//,/,,},mount_tag=vmrig-share$i,security_model=none,readonly=on,multidevs=remap")
done

if [ "$interactive" = 1 ]; then
  # Ctrl-C goes to the guest; Ctrl-A x quits qemu.
  # shellcheck disable=SC2054
  qemu+=(-chardev stdio,id=console,mux=on,signal=off -serial chardev:console)
else
  qemu+=(-serial stdio)
fi

[ "$verbose" = 0 ] || echo "vm/run: kernel $VM_KERNEL, ${memory} RAM, timeout ${timeout_s} s; results share $out" >&2
[ "$verbose" = 0 ] || [ ${#shares[@]} = 0 ] || echo "vm/run: shared from the host's /tmp or /run: ${shares[*]}" >&2
start=$SECONDS
set +e
if [ "$interactive" = 1 ]; then
  timeout --foreground --kill-after=5 "$timeout_s" "${qemu[@]}"
else
  timeout --foreground --kill-after=5 "$timeout_s" "${qemu[@]}" </dev/null
fi
qemu_rc=$?
set -e
elapsed=$((SECONDS - start))

if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
  echo "vm/run: the VM did not finish within ${timeout_s} s and was killed (raise --timeout / VM_TIMEOUT)" >&2
  exit 124
fi
if [ -s "$out/rig-error" ]; then
  rig_fail "the VM could not run the command: $(cat "$out/rig-error")"
fi
if [ ! -s "$out/rc" ]; then
  rig_fail "the VM stopped after ${elapsed} s before the command finished (qemu exit $qemu_rc; rerun with --verbose to see the boot)"
fi
rc="$(cat "$out/rc")"
[ "$verbose" = 0 ] || echo "vm/run: command exited $rc; ${elapsed} s wall for the whole VM" >&2
exit "$rc"
