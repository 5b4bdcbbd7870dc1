#!/usr/bin/env bash
# Build the standalone GPU pre-processing check (examples/gpu_preprocess_check.rs) for a GPU
# machine that has no Rust toolchain: x86-64, release, linking only glibc and libgcc_s.
# Nothing CUDA is linked (cudarc loads libcuda/libnvrtc at run time). The trtx C++ glue in the
# library needs libstdc++, which is linked statically here so the binary does not depend on the
# target's libstdc++ version.
# Usage: scripts/build_gpu_check.sh   -> prints the binary's path
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LIBCLANG_PATH="${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}"
STATIC="$(mktemp -d "${TMPDIR:-/tmp}/detrc-staticcxx.XXXXXX")"
trap 'rm -rf "$STATIC"' EXIT
ln -s "$(g++ -print-file-name=libstdc++.a)" "$STATIC/libstdc++.a"
cd "$ROOT"
# `cargo rustc` passes -L to the final link only, so the library builds stay cached.
cargo rustc --release --example gpu_preprocess_check -- -L "native=$STATIC" >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/gpu_preprocess_check"
if readelf -d "$BIN" | grep NEEDED | grep -qvE 'lib(c|m|gcc_s)\.so|ld-linux'; then
  echo "build_gpu_check: $BIN needs more than glibc and libgcc_s:" >&2
  readelf -d "$BIN" | grep NEEDED >&2
  exit 1
fi
echo "$BIN"
