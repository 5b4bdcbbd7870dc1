#!/usr/bin/env bash
# The main job on the bundled example model, from a fresh clone: installs the build
# dependency (libclang for the TensorRT bindings), builds detrc, compiles the example DETR with
# verification and builds an fp16 TensorRT engine for sm86 from it.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/install_build_deps.sh)"
cargo build --release --locked
./target/release/detrc compile fixtures/detr_tiny_op17_b1.onnx -o build-out/detr_tiny.onnx --verify
if bash scripts/install_tensorrt_rtx.sh .trt >&2; then
    ./target/release/detrc build build-out/detr_tiny.onnx -o build-out/detr_tiny.fp16.engine \
        --precision fp16 --target sm86 --tensorrt-dir .trt
    ./target/release/detrc inspect build-out/detr_tiny.fp16.engine
else
    echo "example: TensorRT-RTX libraries unavailable; skipped the engine build" >&2
fi
