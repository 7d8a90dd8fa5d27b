#!/usr/bin/env bash
# Local (V4L2) camera benchmark: how long camhub takes to notice a camera unplugged and plugged back in, and what
# encoding a raw 640x480 camera costs in CPU.
#
# 1. In the VM rig (scripts/vm/run.sh: Debian's kernel under qemu TCG, one emulated vCPU, vivid, real systemd-udevd;
#    run with --no-loopback so that vivid is the only camera), scripts/bench/v4l2.py starts `camhub run` with its data
#    dir on the guest's /tmp ([storage] min_free_mb = 16, [v4l2] 640x480 at most 30 fps, [monitor]
#    connect_timeout_ms = 30000, stall_timeout_ms = 6000), waits until the vivid camera is CONNECTED, then
#    - CPU: camhub's utime+stime over a window (% of the vCPU) and the frames it encoded (camhub_camera_frames_total);
#    - hot-plug: CYCLES times, writes vivid.0 to /sys/bus/platform/drivers/vivid/unbind, waits for the
#      camera_status_update DISCONNECTED on an authenticated WebSocket, 2 s, writes bind, waits for CONNECTED, 3 s.
#      `udevadm monitor --kernel --udev` and camhub's log lines split each time into kernel, udevd and camhub;
#    - then, camhub stopped, the chain src/media/v4l2_ingest.rs builds, in the mode camhub chose, under
#      gst-launch-1.0 (same window), and `v4l2src ! fakesink` alone (capture cost).
#    Under TCG the times are upper bounds and the CPU figures only compare with each other.
# 2. On the host (real CPU): the same encode chain fed by `videotestsrc is-live=true` in YUY2 640x480 at 30 fps, minus
#    the same source into the same sink, RUNS times each (alternating) per picture: the absolute cost of encoding
#    one camera, as % of one core. The host is shared: each window records the load and the busiest other processes.
# Results: evidence/v4l2.json (everything) and evidence/v4l2.md (tables). Logs: evidence/tmp/v4l2/ (vm/ holds the
# guest's camhub.log, udev-monitor.txt and guest.json; vm-console.log the guest's console).
#
# Usage:  scripts/bench/v4l2.sh
# Env:    V4L2_CYCLES=8             hot-plug cycles
#         V4L2_WINDOW=30            CPU window in the VM, seconds (after V4L2_WARMUP=5)
#         V4L2_HOST_RUNS=3          host runs per chain and picture
#         V4L2_HOST_WINDOW=20       host CPU window, seconds (after 3 s warm-up)
#         V4L2_HOST_PATTERNS="smpte snow"  videotestsrc pictures on the host (smpte is still, snow is noise)
#         V4L2_VM_TIMEOUT=1800      kill the VM after this long, seconds
#         CAMHUB_BIN=path           use this binary and skip the build (default: cargo build --release); not under
#                                   /tmp, which the VM does not share
#         EVIDENCE_DIR=evidence     where the results go
# Needs: qemu and the rig (scripts/vm/setup.sh runs on first use), gst-launch-1.0 with x264enc and fpsdisplaysink,
# /usr/bin/python3 with the websockets module (Debian's python3-websockets), Linux /proc.
# Takes about 7.5 minutes plus the build: ~2.5 min in the VM (boot, connect, 35 s CPU window, 8 cycles of ~7 s,
# 2 x 35 s gst-launch) and ~4.6 min on the host (2 pictures x 3 runs x 2 chains x 23 s).
set -euo pipefail

BENCH_NAME=v4l2.sh
# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CYCLES="${V4L2_CYCLES:-8}"
WINDOW="${V4L2_WINDOW:-30}"
WARMUP="${V4L2_WARMUP:-5}"
HOST_RUNS="${V4L2_HOST_RUNS:-3}"
HOST_WINDOW="${V4L2_HOST_WINDOW:-20}"
read -r -a HOST_PATTERNS <<<"${V4L2_HOST_PATTERNS:-smpte snow}"
VM_TIMEOUT="${V4L2_VM_TIMEOUT:-1800}"
for v in "$CYCLES" "$WINDOW" "$WARMUP" "$HOST_RUNS" "$HOST_WINDOW" "$VM_TIMEOUT"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { note "settings must be positive integers, not '$v'"; exit 64; }
done
[ ${#HOST_PATTERNS[@]} -gt 0 ] || { note "V4L2_HOST_PATTERNS is empty"; exit 64; }

script_start=$SECONDS
command -v gst-launch-1.0 >/dev/null || { note "gst-launch-1.0 not found"; exit 1; }
for element in x264enc fpsdisplaysink videotestsrc; do
  gst-inspect-1.0 "$element" >/dev/null 2>&1 || { note "GStreamer element $element not found"; exit 1; }
done
"$PY" -c 'import websockets' 2>/dev/null || { note "$PY has no websockets module (apt install python3-websockets)"; exit 1; }

build_start=$SECONDS
build_camhub
if [ -n "${CAMHUB_BIN:-}" ]; then BUILD_SECONDS=skipped; else BUILD_SECONDS=$((SECONDS - build_start)); fi
case "$BIN" in
  /tmp/* | /run/*) note "$BIN is under /tmp or /run, which the VM does not share"; exit 1 ;;
esac

bench_workdir v4l2 vm
VM_PGID=""
bench_cleanup_hook() {
  if [ -n "$VM_PGID" ]; then
    kill -TERM -- "-$VM_PGID" 2>/dev/null || true
    wait 2>/dev/null || true
  fi
}
bench_traps

# ---- 1. the VM ----
note "VM: camhub and vivid, ${WINDOW} s CPU window, $CYCLES hot-plug cycles, then gst-launch-1.0 (a few minutes;" \
  "console in $WORK/vm-console.log)"
# Its own session, so that the cleanup can stop run.sh, timeout and qemu together.
setsid bash scripts/vm/run.sh -o "$WORK/vm" --no-loopback -t "$VM_TIMEOUT" \
  -e "PYTHONPATH=$WORK" -e PYTHONDONTWRITEBYTECODE=1 -- \
  "$PY" "$ROOT/scripts/bench/v4l2.py" guest /run/vmrig "$BIN" "$CYCLES" "$WARMUP" "$WINDOW" \
  >"$WORK/vm-console.log" 2>&1 </dev/null &
vm_pid=$!
for _ in $(seq 50); do # setsid (not a group leader here, so it does not fork) has made run.sh a session leader
  if [ "$(ps -o pgid= -p "$vm_pid" | tr -d ' ')" = "$vm_pid" ]; then VM_PGID=$vm_pid && break; fi
  sleep 0.1
done
[ -n "$VM_PGID" ] || note "warning: run.sh (pid $vm_pid) is not in its own process group; an interruption may leave qemu"
tail -n +1 -f --pid="$vm_pid" "$WORK/vm-console.log" | grep --line-buffered '^v4l2.sh: ' >&2 &
vm_rc=0
wait "$vm_pid" || vm_rc=$?
VM_PGID=""
if [ "$vm_rc" -ne 0 ] || [ ! -s "$WORK/vm/guest.json" ]; then
  note "the VM part failed (exit $vm_rc); console tail:"
  tail -n 30 "$WORK/vm-console.log" >&2 || true
  [ ! -s "$WORK/vm/camhub.log" ] || fail_with_log "camhub log tail (guest):" "$WORK/vm/camhub.log"
  exit 1
fi
report_warnings "$WORK/vm/camhub.log" "guest camhub: "

# ---- 2. the host ----
note "host: encode chain vs source only, ${HOST_RUNS} runs x ${HOST_WINDOW} s per picture (${HOST_PATTERNS[*]});" \
  "load average now $(cut -d' ' -f1-3 /proc/loadavg)"
"${PYRUN[@]}" "$ROOT/scripts/bench/v4l2.py" host "$WORK/host.json" "$HOST_RUNS" 3 "$HOST_WINDOW" \
  "${HOST_PATTERNS[@]}" &
MEASURE_PID=$!
wait_measure || { note "the host part failed"; exit 1; }

# ---- the report ----
collect_versions
"${PYRUN[@]}" "$ROOT/scripts/bench/v4l2.py" report "$EVIDENCE" "$WORK/host.json" "$WORK/vm/guest.json" \
  "$commit" "$version" "$BUILD_SECONDS" "$((SECONDS - script_start))"
