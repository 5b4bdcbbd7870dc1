#!/usr/bin/env python3
"""Check a dynamic-batch model image by image against the original under onnxruntime.

    ort_batch_check.py ORIGINAL.onnx COMPILED.onnx [--batches 1,2,3,4] [--traced B]
                       [--seed 0] [--atol 1e-4] [--rtol 1e-4]

COMPILED runs at every batch size of --batches on seeded random inputs (float:
standard normal, integer: 0..9, bool: random); ORIGINAL runs at the batch it
accepts (--traced, default: its declared static batch, else the first of 1..8
it runs at) on the same images, a chunk at a time, the last chunk padded by
repeating its last image. Each image's outputs must match: an element passes
when |a - b| <= atol + rtol * |a|. Outputs without a batch axis are compared
whole.

Models with a TopK (detection post-processing: labels, boxes, scores of the
top K queries) are compared as sets of detections: per image, the outputs that
share the [batch, K] leading dimensions form one row per detection, and every
row must have a partner within tolerance on the other side (ties in the score
order may permute the detections).

Both run on the CPU execution provider with graph optimizations DISABLED.
Exit status: 0 every image matches at every batch size, 1 a mismatch or a
failed run of COMPILED, 2 usage/load error.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2

_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64,
    "tensor(float16)": np.float16, "tensor(int64)": np.int64,
    "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(uint8)": np.uint8,
}


def load(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def static_dims(sess, batch: int) -> dict:
    """Input shapes with axis 0 set to `batch`; other dimensions must be static."""
    out = {}
    for i in sess.get_inputs():
        dims = list(i.shape)
        shape = []
        for k, d in enumerate(dims):
            if k == 0:
                shape.append(batch)
            elif isinstance(d, int) and d >= 0:
                shape.append(d)
            else:
                raise ValueError(f"input '{i.name}' has a dynamic dimension {k} ({d!r})")
        out[i.name] = (shape, _DTYPES[i.type])
    return out


def make_inputs(dims: dict, rng) -> dict:
    feeds = {}
    for name, (shape, dt) in dims.items():
        if np.issubdtype(dt, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dt)
        elif dt == np.bool_:
            feeds[name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        else:
            feeds[name] = rng.integers(0, 10, size=shape).astype(dt)
    return feeds


def traced_batch(sess, path: str) -> int:
    d0 = sess.get_inputs()[0].shape[0]
    if isinstance(d0, int) and d0 > 0:
        return d0
    for b in range(1, 9):
        try:
            sess.run(None, make_inputs(static_dims(sess, b), np.random.default_rng(0)))
            return b
        except Exception:  # noqa: BLE001 - onnxruntime raises its own types
            continue
    raise ValueError(f"{path} runs at none of the batch sizes 1..8; give --traced")


def has_topk(path: str) -> bool:
    import onnx

    m = onnx.load(path, load_external_data=False)
    return any(n.op_type == "TopK" for n in m.graph.node)


def close(a, b, atol, rtol) -> tuple[bool, float]:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        return False, float("inf")
    if a64.size == 0:
        return True, 0.0
    d = np.abs(a64 - b64)
    d = np.where(np.isnan(a64) & np.isnan(b64), 0.0, d)
    ok = bool(np.all(d <= atol + rtol * np.abs(a64)))
    return ok, float(np.nan_to_num(d, nan=np.inf).max())


def rows_match(ra: np.ndarray, rb: np.ndarray, atol, rtol) -> tuple[bool, float]:
    """Every row of `ra` has a distinct partner in `rb` within tolerance."""
    if ra.shape != rb.shape:
        return False, float("inf")
    free = list(range(len(rb)))
    worst = 0.0
    for r in ra:
        best, best_d = None, float("inf")
        for j in free:
            d = np.abs(r - rb[j])
            if np.all(d <= atol + rtol * np.abs(r)) and d.max() < best_d:
                best, best_d = j, float(d.max())
        if best is None:
            return False, float("inf")
        free.remove(best)
        worst = max(worst, best_d)
    return True, worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("original")
    ap.add_argument("compiled")
    ap.add_argument("--batches", default="1,2,3,4")
    ap.add_argument("--traced", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--rtol", type=float, default=1e-4)
    try:
        args = ap.parse_args(argv)
        batches = [int(b) for b in args.batches.split(",")]
    except (SystemExit, ValueError) as e:
        return EXIT_OK if getattr(e, "code", 1) == 0 else EXIT_USAGE
    try:
        sa, sb = load(args.original), load(args.compiled)
        t = args.traced or traced_batch(sa, args.original)
        sets = has_topk(args.original)
    except Exception as e:  # noqa: BLE001
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    names = [o.name for o in sa.get_outputs()]
    print(f"original runs at batch {t}; compiled at {batches}; "
          f"{'TopK: detections compared as sets' if sets else 'element-wise'}")
    all_ok = True
    for k in batches:
        rng = np.random.default_rng(args.seed + k)
        try:
            feeds = make_inputs(static_dims(sb, k), rng)
            out_b = dict(zip(names, sb.run(names, feeds)))
        except Exception as e:  # noqa: BLE001
            print(f"batch {k}: FAIL running {args.compiled}: {e}")
            all_ok = False
            continue
        worst = {n: 0.0 for n in names}
        bad = []
        for c in range(0, k, t):
            rows = [min(i, k - 1) for i in range(c, c + t)]
            chunk = {n: v[rows] if v.ndim else v for n, v in feeds.items()}
            out_a = dict(zip(names, sa.run(names, chunk)))
            for i in range(min(t, k - c)):
                per = {}
                for n in names:
                    a, b = out_a[n], out_b[n]
                    if a.ndim and a.shape[0] == t and b.shape[0] == k:
                        per[n] = (a[i], b[c + i])
                    elif c == 0 and i == 0:
                        ok, d = close(a, b, args.atol, args.rtol)
                        worst[n] = max(worst[n], d)
                        if not ok:
                            bad.append(f"{n} (no batch axis)")
                groups = {}
                for n, (a, b) in per.items():
                    key = a.shape[:1] if sets and a.ndim >= 1 else (n,)
                    groups.setdefault(key, []).append(n)
                for key, members in groups.items():
                    if sets and len(key) == 1 and isinstance(key[0], int):
                        ra = np.concatenate([per[n][0].reshape(key[0], -1).astype(np.float64)
                                             for n in members], axis=1)
                        rb = np.concatenate([per[n][1].reshape(key[0], -1).astype(np.float64)
                                             for n in members], axis=1)
                        ok, d = rows_match(ra, rb, args.atol, args.rtol)
                    else:
                        ok, d = close(per[members[0]][0], per[members[0]][1], args.atol, args.rtol)
                    for n in members:
                        worst[n] = max(worst[n], d)
                    if not ok:
                        bad.append(f"image {c + i}: {'+'.join(members)}")
        status = "OK" if not bad else "FAIL " + "; ".join(bad[:4])
        all_ok &= not bad
        diffs = ", ".join(f"{n} {worst[n]:.2e}" for n in names)
        print(f"batch {k}: {k} images, max |diff| {diffs}: {status}")
    print("PASS" if all_ok else "FAIL")
    return EXIT_OK if all_ok else EXIT_MISMATCH


if __name__ == "__main__":
    sys.exit(main())
