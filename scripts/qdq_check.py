#!/usr/bin/env python3
"""Checks a Q/DQ model the way TensorRT-RTX needs it and runs it under onnxruntime.

Prints JSON: Where / QuantizeLinear / DequantizeLinear counts, INT32 DequantizeLinear inputs,
nonzero zero points, and with --float and --images each output's SQNR (dB) against the float
model on those images (pre-processed as `detrc run` does), computed by onnxruntime (CPU,
graph optimizations disabled). Exit code 1 if the model does not load or run.

Usage: qdq_check.py QDQ.onnx [--float FLOAT.onnx --images DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_compare import images, run_all, session, sqnr, structure  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--float", type=Path)
    ap.add_argument("--images", type=Path)
    args = ap.parse_args()
    res = structure(args.model)
    q = session(args.model)
    if args.images:
        b, _, h, w = q.get_inputs()[0].shape
        batches = images(args.images, h, w, b)
        got = run_all(q, batches)
        res["images"] = sum(len(x) for x in batches)
        if args.float:
            res["sqnr_db"] = sqnr(run_all(session(args.float), batches), got)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
