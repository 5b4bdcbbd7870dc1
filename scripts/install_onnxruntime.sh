#!/usr/bin/env bash
# Install the onnxruntime 1.31.1 CPU shared library (libonnxruntime.so.1.31.1) that detrc's
# onnxruntime reference runtime loads at run time (`--reference onnxruntime`, the CPU backend
# of `detrc run`/`bench`). It is taken from the pinned PyPI wheel onnxruntime==1.31.1,
# verified against hard-coded sha256 sums and copied into DEST_DIR. Python and pip are needed
# only here, to download and unpack the wheel; detrc itself never runs Python.
#
# Usage: scripts/install_onnxruntime.sh [DEST_DIR]     (default: <repo>/.ort)
# Env:   PYTHON  python interpreter with pip (default: python3)
# Then:  detrc finds <repo>/.ort by itself, or export DETRC_ONNXRUNTIME=<DEST_DIR>/libonnxruntime.so.1.31.1
set -euo pipefail

WHEEL_PKG="onnxruntime"
WHEEL_VERSION="1.31.1"
WHEEL_FILE="onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256="5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"
LIB="libonnxruntime.so.1.31.1"
LIB_IN_ZIP="onnxruntime/capi/$LIB"
LIB_SHA256="fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"

say()  { echo "install_onnxruntime: $*"; }
die()  { echo "install_onnxruntime: ERROR: $*" >&2; exit 1; }

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST_DIR="${1:-$REPO_ROOT/.ort}"
PYTHON="${PYTHON:-python3}"

[[ "$(uname -s)" == Linux && "$(uname -m)" == x86_64 ]] \
  || die "only Linux x86_64 is supported (the wheel is manylinux_2_28_x86_64); this is $(uname -s) $(uname -m)"
command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST_DIR/$LIB" && "$(sha_of "$DEST_DIR/$LIB")" == "$LIB_SHA256" ]]; then
  say "already installed: $DEST_DIR/$LIB (sha256 verified), nothing to do"
  exit 0
fi
[[ -f "$DEST_DIR/$LIB" ]] && say "existing $DEST_DIR/$LIB has the wrong sha256, replacing it"

command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found; install Python 3 with pip or set PYTHON=/path/to/python3"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "'$PYTHON -m pip' does not work; install pip for $PYTHON or set PYTHON"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/detrc-ort.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

say "downloading $WHEEL_PKG==$WHEEL_VERSION from PyPI (~24 MB)"
# The platform and Python tags are fixed so the same wheel (and sha256) is fetched whatever
# Python runs pip; the library inside does not depend on the Python version.
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
    "$WHEEL_PKG==$WHEEL_VERSION" -d "$TMP" \
  || die "pip download of $WHEEL_PKG==$WHEEL_VERSION failed (is PyPI reachable?)"

WHEEL="$TMP/$WHEEL_FILE"
[[ -f "$WHEEL" ]] || die "expected $WHEEL_FILE after download, got: $(ls "$TMP")"
got="$(sha_of "$WHEEL")"
[[ "$got" == "$WHEEL_SHA256" ]] || die "wheel sha256 mismatch: expected $WHEEL_SHA256, got $got"

"$PYTHON" - "$WHEEL" "$LIB_IN_ZIP" "$TMP/$LIB" <<'PY' || die "could not extract $LIB_IN_ZIP from the wheel"
import shutil, sys, zipfile
whl, member, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
got="$(sha_of "$TMP/$LIB")"
[[ "$got" == "$LIB_SHA256" ]] || die "$LIB sha256 mismatch: expected $LIB_SHA256, got $got"

mkdir -p "$DEST_DIR" || die "cannot create $DEST_DIR"
chmod 0755 "$TMP/$LIB"
# copy next to the destination then rename, so an interrupted run never leaves a partial file
cp "$TMP/$LIB" "$DEST_DIR/.$LIB.partial"
mv -f "$DEST_DIR/.$LIB.partial" "$DEST_DIR/$LIB"
[[ "$(sha_of "$DEST_DIR/$LIB")" == "$LIB_SHA256" ]] || die "verification after install failed: $DEST_DIR/$LIB"
say "installed $DEST_DIR/$LIB (sha256 $LIB_SHA256)"
