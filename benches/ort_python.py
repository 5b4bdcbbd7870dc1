#!/usr/bin/env python3
"""Baseline for benches/reference_speed.sh: onnxruntime's Python API on one model.

    ort_python.py MODEL.onnx [--threads 2] [--level all|extended|basic|disabled]
                  [--iters 20] [--warmup 3] [--input synthetic|random] [--seed 0]

Prints one JSON line: session seconds, median / p90 / min ms per inference (the same statistic
`detrc bench` reports), the output names and shapes. Inputs are seeded standard-normal values
(the timing does not depend on them).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--level", choices=sorted(LEVELS), default="all")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="write the outputs of the first run to this .npz")
    a = ap.parse_args()

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.graph_optimization_level = LEVELS[a.level]
    so.log_severity_level = 3
    t0 = time.perf_counter()
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    session_s = time.perf_counter() - t0
    rng = np.random.default_rng(a.seed)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        feeds[i.name] = rng.standard_normal(shape).astype(DTYPES.get(i.type, np.float32))
    outs = sess.run(None, feeds)
    if a.save:
        np.savez(a.save, **{o.name: v for o, v in zip(sess.get_outputs(), outs)})
    for _ in range(a.warmup):
        sess.run(None, feeds)
    ms = []
    for _ in range(a.iters):
        t = time.perf_counter()
        sess.run(None, feeds)
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    p90 = ms[max(0, -(-9 * len(ms) // 10) - 1)]
    print(json.dumps({
        "onnxruntime": ort.__version__, "threads": a.threads, "level": a.level,
        "session_s": session_s, "median_ms": statistics.median(ms), "p90_ms": p90,
        "min_ms": ms[0], "iters": a.iters,
        "outputs": {o.name: list(v.shape) for o, v in zip(sess.get_outputs(), outs)},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
