#!/usr/bin/env bash
# Install the two TensorRT-RTX 1.7.1 shared libraries detrc needs to build engines:
#   libtensorrt_rtx.so.1.7.1            (builder/runtime)
#   libtensorrt_onnxparser_rtx.so.1.7.1 (ONNX parser)
# They are taken from the PyPI wheel onnxruntime-ep-nv-tensorrt-rtx-cu13 (pinned),
# verified against hard-coded sha256 sums and copied into DEST_DIR.
# No GPU, CUDA driver or CUDA runtime is needed to build engines with them.
#
# Usage: scripts/install_tensorrt_rtx.sh [DEST_DIR]     (default: <repo>/.trt)
# Env:   PYTHON  python interpreter with pip (default: python3)
# Then:  export DETRC_TENSORRT_DIR=<DEST_DIR>
set -euo pipefail

WHEEL_PKG="onnxruntime-ep-nv-tensorrt-rtx-cu13"
WHEEL_VERSION="0.5.0"
WHEEL_FILE="onnxruntime_ep_nv_tensorrt_rtx_cu13-0.5.0-py3-none-manylinux_2_28_x86_64.whl"
WHEEL_SHA256="32f575c633d171b4edf4b53d3bb22b72a6c9c0a850d2982ce9a788a5d40d3298"
WHEEL_DIR_IN_ZIP="onnxruntime_ep_nv_tensorrt_rtx"
LIBS=(libtensorrt_rtx.so.1.7.1 libtensorrt_onnxparser_rtx.so.1.7.1)
declare -A LIB_SHA256=(
  [libtensorrt_rtx.so.1.7.1]="6980f8946580af43f06ccbd82a06c65d61638ff76329d726764a0a408747be84"
  [libtensorrt_onnxparser_rtx.so.1.7.1]="8bc09093b0e460f494d0410d8a2d2739b3e4de441d016e1f8ffa74bfb99a49aa"
)

say()  { echo "install_tensorrt_rtx: $*"; }
die()  { echo "install_tensorrt_rtx: ERROR: $*" >&2; exit 1; }

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST_DIR="${1:-$REPO_ROOT/.trt}"
PYTHON="${PYTHON:-python3}"

[[ "$(uname -s)" == Linux && "$(uname -m)" == x86_64 ]] \
  || die "only Linux x86_64 is supported (the wheel is manylinux_2_28_x86_64); this is $(uname -s) $(uname -m)"
command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

all_present_and_valid() {
  local lib
  for lib in "${LIBS[@]}"; do
    [[ -f "$DEST_DIR/$lib" ]] || return 1
    [[ "$(sha_of "$DEST_DIR/$lib")" == "${LIB_SHA256[$lib]}" ]] || return 1
  done
}

if all_present_and_valid; then
  say "already installed in $DEST_DIR (sha256 verified), nothing to do"
  say "export DETRC_TENSORRT_DIR=$DEST_DIR"
  exit 0
fi

for lib in "${LIBS[@]}"; do
  if [[ -f "$DEST_DIR/$lib" && "$(sha_of "$DEST_DIR/$lib")" != "${LIB_SHA256[$lib]}" ]]; then
    say "existing $DEST_DIR/$lib has the wrong sha256, replacing it"
  fi
done

command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found; install Python 3 with pip or set PYTHON=/path/to/python3"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "'$PYTHON -m pip' does not work; install pip for $PYTHON or set PYTHON"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/detrc-trt.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

say "downloading $WHEEL_PKG==$WHEEL_VERSION from PyPI (~146 MB)"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
    "$WHEEL_PKG==$WHEEL_VERSION" -d "$TMP" \
  || die "pip download of $WHEEL_PKG==$WHEEL_VERSION failed (is PyPI reachable?)"

WHEEL="$TMP/$WHEEL_FILE"
[[ -f "$WHEEL" ]] || die "expected $WHEEL_FILE after download, got: $(ls "$TMP")"
got="$(sha_of "$WHEEL")"
[[ "$got" == "$WHEEL_SHA256" ]] || die "wheel sha256 mismatch: expected $WHEEL_SHA256, got $got"

mkdir -p "$TMP/x"
"$PYTHON" - "$WHEEL" "$TMP/x" "$WHEEL_DIR_IN_ZIP" "${LIBS[@]}" <<'PY' || die "could not extract the libraries from the wheel"
import sys, zipfile, shutil, os
whl, out, prefix, *libs = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    for lib in libs:
        with z.open(f"{prefix}/{lib}") as src, open(os.path.join(out, lib), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
PY

for lib in "${LIBS[@]}"; do
  got="$(sha_of "$TMP/x/$lib")"
  [[ "$got" == "${LIB_SHA256[$lib]}" ]] || die "$lib sha256 mismatch: expected ${LIB_SHA256[$lib]}, got $got"
done

mkdir -p "$DEST_DIR" || die "cannot create $DEST_DIR"
for lib in "${LIBS[@]}"; do
  chmod 0755 "$TMP/x/$lib"
  # copy next to the destination then rename, so an interrupted run never leaves a partial file
  cp "$TMP/x/$lib" "$DEST_DIR/.$lib.partial"
  mv -f "$DEST_DIR/.$lib.partial" "$DEST_DIR/$lib"
  say "installed $DEST_DIR/$lib (sha256 ${LIB_SHA256[$lib]})"
done
all_present_and_valid || die "verification after install failed in $DEST_DIR"
say "done; export DETRC_TENSORRT_DIR=$DEST_DIR"
