#!/usr/bin/env bash
# Install the build-time dependency of the `trtx` crate: libclang < 22 (for autocxx/bindgen).
# Debian/Ubuntu: libclang1-19 + libclang-common-19-dev. Idempotent; quiet when already present.
# Prints the LIBCLANG_PATH to use on stdout (messages go to stderr), so this works:
#   eval "$(scripts/install_build_deps.sh)"
set -euo pipefail

LLVM_VER=19
PKGS=("libclang1-$LLVM_VER" "libclang-common-$LLVM_VER-dev")
LIBCLANG_DIR="/usr/lib/llvm-$LLVM_VER/lib"

say() { echo "install_build_deps: $*" >&2; }
die() { echo "install_build_deps: ERROR: $*" >&2; exit 1; }

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  command -v apt-get >/dev/null || die "apt-get not found; install libclang $LLVM_VER (< 22) by hand and set LIBCLANG_PATH"
  SUDO=""
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ${missing[*]}"
    SUDO="sudo"
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null || die "apt-get update failed"
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
else
  say "libclang $LLVM_VER already installed"
fi

ls "$LIBCLANG_DIR"/libclang*.so* >/dev/null 2>&1 || die "no libclang in $LIBCLANG_DIR after install"
echo "export LIBCLANG_PATH=$LIBCLANG_DIR"
