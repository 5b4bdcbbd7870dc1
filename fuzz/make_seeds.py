#!/usr/bin/env python3
"""Seed inputs for the `compile` fuzz target, in two corpora.

fuzz/corpus/compile/ (the default corpus, small inputs: thousands of executions per second):
- fixtures/cnn_tiny_op17_b1.onnx (8 KB, taken as is);
- every model of tests/corpus/bad/ (the known hostile inputs).

fuzz/corpus/compile_detr/ (large inputs, about a hundred executions per second):
- "skeletons" of the DETR fixtures: the same graph, but every initializer over 4 KiB
  becomes a graph input of the same type and shape. The node structure that the DETR passes
  (fold-mask, prune-aux-heads, fuse-matmul...) match is all there, in 0.2-0.45 MB instead of
  1-1.4 MB. Shape constants, scalars, indices and the small detection-head weights stay
  initializers, because the passes read them (prune-aux-heads applies only to constant heads;
  with a 1 KiB threshold it no longer fires).

fuzz/corpus/compile_family/ (large inputs): skeletons, made the same way, of one export of
every DETR-family fixture architecture (fixtures/family/: transformers DETR variants, RT-DETR,
RT-DETRv2, D-FINE, and the official RT-DETRv2 / D-FINE exports). Initializers kept in
external data become graph inputs too, so no seed refers to a file.

Deterministic; rerun it any time (existing files of the same name are overwritten, files the
fuzzer added are left alone).

Usage: .venv/bin/python fuzz/make_seeds.py
"""

import os
import shutil

import onnx
from onnx import helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus", "compile")
OUT_DETR = os.path.join(ROOT, "fuzz", "corpus", "compile_detr")
SKELETONS = [
    "detr_tiny_op17_b1.onnxsim.onnx",
    "detr_tiny_op17_b1.onnxslim.onnx",
    "detr_tiny_op17_b1.onnx",
    "detr_tiny_op12_b1.onnx",
]
FAMILY = [
    "detr_op17_b1.onnx",
    "conditional_detr_op16_b1.onnx",
    "dab_detr_op17_b1.onnx",
    "deformable_detr_op17_b1.onnx",
    "deformable_detr_refine_op16_b1.onnx",
    "rtdetr_op17_b1.onnx",
    "rtdetr_v2_op16_b1.onnx",
    "dfine_op17_b1.onnx",
    "dfine_op17_dyn.onnx",
    "detr_op18_dynamo_b1.onnx",
    "rtdetrv2_official.onnx",
    "dfine_official_raw.onnx",
    "dfine_official_simplified.onnx",
]
OUT_FAMILY = os.path.join(ROOT, "fuzz", "corpus", "compile_family")
BIG = 4097


def skeleton(path):
    m = onnx.ModelProto()
    with open(path, "rb") as f:
        m.ParseFromString(f.read())
    g = m.graph
    keep, moved = [], []
    for t in g.initializer:
        external = t.data_location == onnx.TensorProto.EXTERNAL
        (moved if external or len(t.raw_data) >= BIG else keep).append(t)
    del g.initializer[:]
    g.initializer.extend(keep)
    for t in moved:
        g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return m.SerializeToString()


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(OUT_DETR, exist_ok=True)
    n = 0
    shutil.copy(os.path.join(ROOT, "fixtures", "cnn_tiny_op17_b1.onnx"), OUT)
    n += 1
    bad = os.path.join(ROOT, "tests", "corpus", "bad")
    for name in sorted(os.listdir(bad)):
        if name.endswith(".onnx"):
            shutil.copy(os.path.join(bad, name), os.path.join(OUT, "bad_" + name))
            n += 1
    for name in SKELETONS:
        data = skeleton(os.path.join(ROOT, "fixtures", name))
        out = os.path.join(OUT_DETR, "skeleton_" + name)
        with open(out, "wb") as f:
            f.write(data)
        print(f"{os.path.basename(out)}: {len(data)} bytes")
        n += 1
    os.makedirs(OUT_FAMILY, exist_ok=True)
    for name in FAMILY:
        src = os.path.join(ROOT, "fixtures", "family", name)
        if not os.path.exists(src):
            print(f"{name}: missing, skipped (scripts/make_family_fixtures.py makes it)")
            continue
        data = skeleton(src)
        out = os.path.join(OUT_FAMILY, "skeleton_" + name)
        with open(out, "wb") as f:
            f.write(data)
        print(f"{os.path.basename(out)}: {len(data)} bytes")
        n += 1
    print(f"{n} seeds in {os.path.relpath(OUT, ROOT)}, {os.path.relpath(OUT_DETR, ROOT)} and "
          f"{os.path.relpath(OUT_FAMILY, ROOT)}")


if __name__ == "__main__":
    main()
