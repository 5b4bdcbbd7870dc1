#!/usr/bin/env python3
"""Compare a compiled DETR-family model with its original under onnxruntime.

    family_compare.py ORIGINAL.onnx COMPILED.onnx [--atol 1e-4] [--seed 7] [--batch 2]

Inputs are seeded: float images (standard normal for `pixel_values`, uniform [0, 1) for the
official exports' `images`), `orig_target_sizes` set to the image size. A dynamic batch axis
gets `--batch` (RT-DETRv2's official export only runs at 1; pass --batch 1).

* Outputs named labels/boxes/scores (TopK postprocessing inside the graph) are compared as
  sets of detections: near-equal scores may come out in another order.
* Other outputs element-wise: |a - b| <= atol * max(1, max|a|).
* An original that onnxruntime cannot run because a GridSample reads a float64 grid
  (transformers' Deformable DETR) is compared through a copy with those grids cast to float.

Exit 0 when equal, 1 on a mismatch, 2 when a model cannot be run. Needs onnx, onnxruntime,
numpy (scripts/requirements-ci.txt).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
from onnx import helper


def grid_cast_copy(m: onnx.ModelProto):
    """The model with every float64 GridSample grid cast to float; (model, number cast)."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(m)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.input)
             + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in m.graph.initializer})
    nodes, n_cast = [], 0
    for node in m.graph.node:
        if node.op_type == "GridSample" and types.get(node.input[1]) == onnx.TensorProto.DOUBLE:
            out = f"{node.input[1]}__as_float_{n_cast}"
            nodes.append(helper.make_node("Cast", [node.input[1]], [out],
                                          to=onnx.TensorProto.FLOAT, name=f"grid_cast_{n_cast}"))
            node.input[1] = out
            n_cast += 1
        nodes.append(node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m, n_cast


def session(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def feeds_for(sess, seed: int, batch: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    image_hw = None
    for i in sess.get_inputs():
        dims = [d if isinstance(d, int) and d > 0 else batch for d in i.shape]
        if i.type == "tensor(float)":
            if i.name == "images":
                out[i.name] = rng.random(dims, dtype=np.float32)
            else:
                out[i.name] = rng.standard_normal(dims, dtype=np.float32)
            image_hw = dims[-2:]
    for i in sess.get_inputs():
        if i.type == "tensor(int64)":
            dims = [d if isinstance(d, int) and d > 0 else batch for d in i.shape]
            hw = image_hw or [320, 320]
            out[i.name] = np.tile(np.array([hw], dtype=np.int64), (dims[0], 1))
    return out


def detections_match(ref, got, atol=1e-4) -> float:
    """Every reference detection (label, box, score) has its own match in `got`."""
    (rl, rb, rs), (gl, gb, gs) = ref, got
    worst = 0.0
    for b in range(rl.shape[0]):
        used = set()
        for i in np.argsort(-rs[b]):
            best, best_j = None, None
            for j in range(gl.shape[1]):
                if j in used or gl[b, j] != rl[b, i]:
                    continue
                d = max(abs(float(gs[b, j] - rs[b, i])), float(np.abs(gb[b, j] - rb[b, i]).max()))
                if best is None or d < best:
                    best, best_j = d, j
            scale = max(1.0, float(np.abs(rb[b, i]).max()))
            if best is None or best > atol * scale:
                raise ValueError(f"detection {i} of image {b} has no match (best diff {best})")
            used.add(best_j)
            worst = max(worst, best)
    return worst


def compare(orig: str, comp: str, atol=1e-4, seed=7, batch=2) -> tuple[bool, str]:
    note = ""
    try:
        so = session(orig)
    except Exception:  # noqa: BLE001 - the float64-grid GridSample
        m, n = grid_cast_copy(onnx.load(orig))
        if n == 0:
            raise
        so = session(m)
        note = f" (original through a copy with {n} GridSample grids cast to float)"
    sc = session(comp)
    feeds = feeds_for(so, seed, batch)
    names = [o.name for o in so.get_outputs()]
    ref = dict(zip(names, so.run(None, feeds)))
    got = dict(zip([o.name for o in sc.get_outputs()], sc.run(None, feeds)))
    if set(names) == {"labels", "boxes", "scores"}:
        keys = ("labels", "boxes", "scores")
        try:
            d = detections_match([ref[k] for k in keys], [got[k] for k in keys], atol)
        except ValueError as e:
            return False, f"{e}{note}"
        return True, f"max diff {d:.1e} (detections as sets){note}"
    worst = 0.0
    for n in names:
        r, o = ref[n], got[n]
        if r.shape != o.shape:
            return False, f"{n}: shape {o.shape} != {r.shape}"
        d = float(np.abs(r.astype(np.float64) - o.astype(np.float64)).max())
        if not d <= atol * max(1.0, float(np.abs(r).max())):
            return False, f"{n}: max diff {d:.2e}{note}"
        worst = max(worst, d)
    return True, f"max diff {worst:.1e}{note}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("original")
    ap.add_argument("compiled")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=2)
    a = ap.parse_args()
    try:
        ok, msg = compare(a.original, a.compiled, a.atol, a.seed, a.batch)
    except Exception as e:  # noqa: BLE001
        print(f"cannot run: {e}")
        sys.exit(2)
    print(("ok: " if ok else "MISMATCH: ") + msg)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
