#!/usr/bin/env bash
# The project's test command (README and .ci/run): installs what the tests need on a fresh
# machine, then runs the whole suite. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_python.sh
# The onnxruntime cross-checks must run here, not be skipped.
export DETRC_REQUIRE_ORT=1
# The engine tests build real TensorRT-RTX engines (CPU only) and must run here, not be skipped.
PYTHON=.venv/bin/python scripts/install_tensorrt_rtx.sh
export DETRC_TENSORRT_DIR="$PWD/.trt" DETRC_REQUIRE_TENSORRT=1
# The onnxruntime reference runtime (the Rust cross-checks through it must run, not be skipped).
PYTHON=.venv/bin/python scripts/install_onnxruntime.sh
export DETRC_ONNXRUNTIME="$PWD/.ort/libonnxruntime.so.1.31.1" DETRC_REQUIRE_ONNXRUNTIME=1
eval "$(scripts/install_build_deps.sh)"
cargo test --locked "$@"
# The Python package: `pip wheel .`, installed into a fresh venv, pytest (docs/python.md).
scripts/test_python.sh
