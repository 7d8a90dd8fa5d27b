#!/usr/bin/env bash
# Prepares the real-device test rig (scripts/vm/run.sh): a Debian kernel booted under qemu (TCG) whose vivid and
# v4l2loopback drivers give real V4L2 devices and whose systemd-udevd sends real uevents. The host has neither.
#
# What it does (idempotent; run as root or with sudo):
#   1. apt-get installs what is missing: qemu, Debian's kernel + headers, dkms + v4l2loopback-dkms, busybox-static,
#      cpio, kmod, udev, v4l-utils (and the GStreamer tools whose registry the guest reuses).
#   2. Picks the guest kernel K: the newest /lib/modules/K that has vivid and whose headers are installed (not
#      `uname -r`: the host runs another kernel). VM_KERNEL=K overrides.
#   3. Makes sure v4l2loopback is built for K (dkms).
#   4. Into $VM_DIR (default target/vm/): the uncompressed ELF kernel (qemu boots it through its PVH entry point,
#      faster than bzImage), a tiny initramfs (static busybox + 9p/virtio/overlay modules) and a GStreamer registry
#      built on the host, so the guest does not rescan every plugin over 9p. Rebuilt only when an input changes.
#   5. Writes $VM_DIR/env (VM_KERNEL, paths) for run.sh.
#
# Cost, measured on a 2-core machine: cold (packages + dkms build) about 1 min; warm 0.2-0.5 s.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
vm_dir="${VM_DIR:-${CARGO_TARGET_DIR:-$root/target}/vm}"

die() {
  echo "vm/setup: $*" >&2
  exit 1
}
log() { echo "vm/setup: $*" >&2; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
built=0 # set when this run changed something; then it says so

# --- 1. packages -------------------------------------------------------------------------------------------------
packages=(
  qemu-system-x86 linux-image-amd64 linux-headers-amd64 dkms v4l2loopback-dkms
  busybox-static cpio kmod udev v4l-utils xz-utils gstreamer1.0-tools gstreamer1.0-plugins-good
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]} (about 1 min the first time)"
  $SUDO apt-get update -qq -o DPkg::Lock::Timeout=300
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
  built=1
fi
for tool in qemu-system-x86_64 busybox cpio modprobe dkms xz gst-inspect-1.0; do
  command -v "$tool" >/dev/null || die "$tool is missing after installing packages; cannot build the test VM"
done

# --- 2. guest kernel -----------------------------------------------------------------------------------------------
has_vivid() { [ -n "$(find "/lib/modules/$1/kernel/drivers/media/test-drivers/vivid" -name 'vivid.ko*' 2>/dev/null)" ]; }
has_headers() { [ -e "/lib/modules/$1/build/Makefile" ] || [ -e "/usr/src/linux-headers-$1/Makefile" ]; }
if [ -n "${VM_KERNEL:-}" ]; then
  K="$VM_KERNEL"
  has_vivid "$K" || die "VM_KERNEL=$K: /lib/modules/$K has no vivid driver"
else
  K=""
  if [ -d /lib/modules ]; then
    for d in $(find /lib/modules -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -rV); do
      if has_vivid "$d" && has_headers "$d" && [ -e "/boot/vmlinuz-$d" ]; then
        K="$d"
        break
      fi
    done
  fi
  [ -n "$K" ] || die "no kernel in /lib/modules has vivid, its headers and /boot/vmlinuz (is linux-image-amd64 installed?)"
fi
[ -r "/boot/vmlinuz-$K" ] || die "/boot/vmlinuz-$K is missing or unreadable"

# --- 3. v4l2loopback for K -----------------------------------------------------------------------------------------
loopback_ko() { modinfo -k "$K" -F filename v4l2loopback 2>/dev/null || true; }
if [ -z "$(loopback_ko)" ]; then
  ver="$(dpkg-query -W -f='${Version}' v4l2loopback-dkms | sed 's/^[0-9]*://; s/-[^-]*$//')"
  log "building v4l2loopback $ver for $K with dkms (about 25 s)"
  $SUDO dkms install -m v4l2loopback -v "$ver" -k "$K" >/dev/null ||
    die "dkms could not build v4l2loopback $ver for kernel $K (see /var/lib/dkms/v4l2loopback/$ver/build/make.log)"
  [ -n "$(loopback_ko)" ] || die "dkms reported success but modinfo -k $K finds no v4l2loopback"
  built=1
fi

# --- 4. kernel, initramfs, GStreamer registry ----------------------------------------------------------------------
mkdir -p "$vm_dir"
exec 9>"$vm_dir/.setup.lock"
flock 9 # concurrent runs (make -j) build once

initramfs_modules=(9p 9pnet_virtio virtio_pci overlay)
# Everything the cached files depend on; a change in any of them rebuilds them.
inputs="$(
  echo "kernel=$K"
  stat -c 'vmlinuz=%s %Y' "/boot/vmlinuz-$K"
  stat -c 'modules.dep=%s %Y' "/lib/modules/$K/modules.dep"
  echo "busybox=$(dpkg-query -W -f='${Version}' busybox-static)"
  echo "modules=${initramfs_modules[*]}"
  sed -n '/^ *# --- initramfs init ---/,/^ *# --- end init ---/p' "${BASH_SOURCE[0]}" | sha256sum
)"

vmlinux="$vm_dir/vmlinux-$K"
initramfs="$vm_dir/initramfs-$K.cpio"
if [ ! -s "$vmlinux" ] || [ ! -s "$initramfs" ] || [ "$(cat "$vm_dir/inputs" 2>/dev/null)" != "$inputs" ]; then
  log "building guest kernel image and initramfs for $K in $vm_dir"
  rm -f "$vm_dir/inputs"

  # bzImage -> ELF vmlinux: the payload is XZ; qemu boots the ELF through its PVH note (5.5 s vs 8-9 s to userspace).
  offset="$(LC_ALL=C grep -obUaP '\xFD7zXZ\x00' "/boot/vmlinuz-$K" | head -n1 | cut -d: -f1 || true)"
  [ -n "$offset" ] || die "/boot/vmlinuz-$K has no XZ payload; cannot extract the ELF kernel"
  tail -c +"$((offset + 1))" "/boot/vmlinuz-$K" | xz -dc --single-stream >"$vmlinux.tmp" 2>/dev/null || true
  [ "$(head -c 4 "$vmlinux.tmp" | od -An -c | tr -d ' ')" = '177ELF' ] ||
    die "decompressing /boot/vmlinuz-$K at offset $offset did not give an ELF kernel"
  mv "$vmlinux.tmp" "$vmlinux"

  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage"/{bin,dev,proc,sys,lower,upper,newroot,lib/modules}
  cp "$(command -v busybox)" "$stage/bin/busybox"
  # insmod lines in dependency order; modules already built into the kernel show up as "builtin" and are skipped.
  : >"$stage/modules.order"
  for m in "${initramfs_modules[@]}"; do
    modprobe -S "$K" --show-depends "$m" || die "modprobe -S $K --show-depends $m failed"
  done | awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++' | while read -r ko; do
    base="$(basename "$ko")"
    case "$ko" in
      *.xz) xz -dc "$ko" >"$stage/lib/modules/${base%.xz}" && base="${base%.xz}" ;;
      *.zst) zstd -qdc "$ko" >"$stage/lib/modules/${base%.zst}" && base="${base%.zst}" ;;
      *.gz) gzip -dc "$ko" >"$stage/lib/modules/${base%.gz}" && base="${base%.gz}" ;;
      *) cp "$ko" "$stage/lib/modules/$base" ;;
    esac
    echo "$base" >>"$stage/modules.order"
  done
  # --- initramfs init ---
  cat >"$stage/init" <<'INIT'
#!/bin/busybox sh
# Stage 1 (initramfs): mount the host's / read-only over 9p under a tmpfs overlay, hand over to the repo's
# scripts/vm/guest-init.sh (path on the kernel command line as vmrig.init=) inside that root.
/bin/busybox --install -s /bin
export PATH=/bin
fail() {
  echo "vm/init: $*" >&2
  echo "rig: $*" >/out/rig-error 2>/dev/null
  poweroff -f
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/lib/modules/$m" || fail "insmod $m failed"; done </modules.order
stage2=""
upper_size=256m
tmp_size=512m
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vmrig.init=*) stage2="${arg#vmrig.init=}" ;;
    vmrig.upper=*) upper_size="${arg#vmrig.upper=}" ;;
    vmrig.tmp=*) tmp_size="${arg#vmrig.tmp=}" ;;
  esac
done
mkdir -p /out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vmrig /out || fail "cannot mount the results share"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro,cache=loose hostroot /lower ||
  fail "cannot mount the host's / over 9p"
mount -t tmpfs -o "size=$upper_size,mode=0755" upper /upper || fail "tmpfs for the overlay"
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot ||
  fail "cannot mount the overlay root"
mount -t tmpfs -o mode=0755,size=64m run /newroot/run || fail "tmpfs on /run"
mount -t tmpfs -o "mode=1777,size=$tmp_size" tmp /newroot/tmp || fail "tmpfs on /tmp"
mkdir -p /newroot/run/vmrig
mount --move /out /newroot/run/vmrig || fail "move the results share"
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
[ -n "$stage2" ] || fail "no vmrig.init= on the kernel command line"
[ -x "/newroot$stage2" ] || [ -r "/newroot$stage2" ] || fail "$stage2 is not visible in the guest"
exec switch_root /newroot /bin/bash "$stage2"
INIT
  # --- end init ---
  chmod 0755 "$stage/init"
  (cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) >"$initramfs.tmp"
  mv "$initramfs.tmp" "$initramfs"
  rm -rf "$stage"
  trap - EXIT
  echo "$inputs" >"$vm_dir/inputs"
  built=1
fi

# The guest's GStreamer reads this registry instead of scanning ~300 plugins over 9p (~35 s under TCG).
# Rebuilt on the host when a plugin changed (gst-inspect only rescans what changed; ~0.2 s when nothing did).
GST_REGISTRY="$vm_dir/gst-registry.bin" gst-inspect-1.0 >/dev/null 2>&1 ||
  die "gst-inspect-1.0 could not build $vm_dir/gst-registry.bin"

cat >"$vm_dir/env.tmp" <<EOF
VM_KERNEL=$K
VM_VMLINUX=$vmlinux
VM_INITRAMFS=$initramfs
VM_GST_REGISTRY=$vm_dir/gst-registry.bin
EOF
mv "$vm_dir/env.tmp" "$vm_dir/env"
[ "$built" = 0 ] || log "ready: kernel $K, $(dkms status -m v4l2loopback -k "$K" 2>/dev/null | head -n1 | cut -d, -f1), files in $vm_dir"
