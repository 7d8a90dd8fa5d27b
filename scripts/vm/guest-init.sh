#!/bin/bash
# Stage 2 of the test VM's boot, run as PID 1 inside the guest (never on the host): the initramfs has mounted the
# host's / read-only under a tmpfs overlay, tmpfs on /run and /tmp, and the results share on /run/vmrig; this script
# mounts the host directories under /tmp or /run that run.sh shared, starts the real systemd-udevd, loads the V4L2
# drivers, runs the job that scripts/vm/run.sh wrote, stores its exit code in /run/vmrig/rc and powers off. It takes
# about 2.5 s of guest time (udevd, loading the modules) before the job starts.
# run.sh copies it into the results share for each run, so it can be edited without rebuilding the initramfs.
set -uo pipefail # not -e: PID 1 must always reach the power-off below

out=/run/vmrig
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

off() {
  sync
  busybox poweroff -f
  sleep 10 # poweroff -f does not return; never let PID 1 exit (kernel panic)
}
mark() { # rig timings on the console with --verbose
  if [ "${VMRIG_VERBOSE:-0}" = 1 ]; then echo "vm/guest: $(cut -d' ' -f1 /proc/uptime) s: $*"; fi
}
fail() {
  echo "vm/guest: $*" >&2
  echo "$*" >"$out/rig-error"
  off
}

# Options written by run.sh: VMRIG_VIVID (0/1), VMRIG_VIVID_ARGS, VMRIG_LOOPBACK (0/1), VMRIG_LOOPBACK_ARGS,
# VMRIG_VERBOSE (0/1), VMRIG_INTERACTIVE (0/1), VMRIG_TTY (0/1: the host's stdout is a terminal), VMRIG_SHM_SIZE,
# VMRIG_SHARES (host directories under /tmp or /run, shared as vmrig-share0, vmrig-share1, ... in that order).
VMRIG_SHARES=()
# shellcheck source=/dev/null
. "$out/config" || fail "cannot read $out/config"

mark "stage 2 started"
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts || fail "mount devpts"
mount -t tmpfs -o "mode=1777,size=${VMRIG_SHM_SIZE:-256m}" shm /dev/shm || fail "mount /dev/shm"
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
busybox hostname vmrig

# The host's directories under /tmp and /run that the command needs (a checkout or target dir there) are hidden by
# this guest's own tmpfs; each comes back at its host path, like /: read-only underneath, a tmpfs on top whose writes
# are thrown away.
if [ "${#VMRIG_SHARES[@]}" -gt 0 ]; then
  layers=/run/vmrig-shares
  mkdir -p "$layers"
  mount -t tmpfs -o mode=0755,size=256m vmrig-shares "$layers" || fail "tmpfs for the shared directories"
  for i in "${!VMRIG_SHARES[@]}"; do
    dir="${VMRIG_SHARES[$i]}"
    mkdir -p "$layers/$i/lower" "$layers/$i/upper" "$layers/$i/work" "$dir" || fail "cannot make $dir in the guest"
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro,cache=loose "vmrig-share$i" "$layers/$i/lower" ||
      fail "cannot mount the host's $dir over 9p"
    mount -t overlay -o "lowerdir=$layers/$i/lower,upperdir=$layers/$i/upper,workdir=$layers/$i/work" \
      "vmrig-share$i" "$dir" || fail "cannot mount the overlay on $dir"
    mark "host's $dir mounted"
  done
fi
busybox ip link set lo up || fail "cannot bring up lo"
# The serial console is a tty: without this every \n reaches the host as \r\n.
stty -F /dev/console -onlcr 2>/dev/null || true

mark "starting systemd-udevd"
if [ "${VMRIG_VERBOSE:-0}" = 1 ]; then
  /lib/systemd/systemd-udevd --daemon || fail "systemd-udevd did not start"
else
  # Only its greeting goes to stderr; once daemonized it logs to the kernel log (errors reach the console).
  /lib/systemd/systemd-udevd --daemon 2>/dev/null || fail "systemd-udevd did not start"
fi
mark "udevd started"
if [ "${VMRIG_VIVID:-1}" = 1 ]; then
  # shellcheck disable=SC2086 # word splitting of the module arguments is wanted
  modprobe vivid ${VMRIG_VIVID_ARGS:-} || fail "modprobe vivid ${VMRIG_VIVID_ARGS:-} failed"
fi
if [ "${VMRIG_LOOPBACK:-1}" = 1 ]; then
  # shellcheck disable=SC2086
  modprobe v4l2loopback ${VMRIG_LOOPBACK_ARGS:-} || fail "modprobe v4l2loopback ${VMRIG_LOOPBACK_ARGS:-} failed"
fi
mark "modules loaded"
udevadm settle --timeout=60 || echo "vm/guest: udevadm settle timed out; going on" >&2

mark "ready; video nodes: $(echo /dev/video*)"

# Processes the command left behind (a child it did not reap, a reader blocked on a loopback device) would hold the
# console pipe open forever; they are named and killed once the command itself has exited. udevd stays.
kill_leftovers() {
  local keep="$1" p pid comm names=()
  for p in /proc/[0-9]*; do
    pid="${p#/proc/}"
    if [ "$pid" = 1 ] || [ "$pid" = "$BASHPID" ] || [ "$pid" = "$keep" ] || [ ! -e "$p/exe" ]; then
      continue # init, this shell, the console reader, kernel threads (no exe) and zombies
    fi
    comm="$(cat "$p/comm" 2>/dev/null)" || continue
    case "$comm" in systemd-udevd | "(udev-worker)" | "(spawn)") continue ;; esac
    names+=("${comm}[$pid]")
    kill -KILL "$pid" 2>/dev/null
  done
  if [ ${#names[@]} -gt 0 ]; then
    echo "vm/guest: the command left ${#names[@]} processes running, killed: ${names[*]}" >/dev/console
  fi
}

if [ "${VMRIG_INTERACTIVE:-0}" = 1 ]; then
  # ttyS0 rather than /dev/console so that it can be the controlling terminal: job control and Ctrl-C work.
  setsid --ctty --wait bash "$out/job" </dev/ttyS0 >/dev/ttyS0 2>&1
  rc=$?
  kill_leftovers ""
elif [ "${VMRIG_TTY:-0}" = 1 ]; then
  bash "$out/job" </dev/null >/dev/console 2>&1
  rc=$?
  kill_leftovers ""
else
  # The host's output is not a terminal (CI, a log file): neither is the command's, so it prints no colours or
  # progress lines, as it would on the host. A FIFO rather than a shell pipe, so that only the command is waited for.
  mkfifo /run/vmrig-console
  cat /run/vmrig-console >/dev/console &
  cat_pid=$!
  bash "$out/job" </dev/null >/run/vmrig-console 2>&1 &
  wait $!
  rc=$?
  kill_leftovers "$cat_pid"
  wait "$cat_pid" # everything written has reached the console
fi
mark "command exited $rc"
echo "$rc" >"$out/rc"
off
