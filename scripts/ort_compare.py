#!/usr/bin/env python3
"""Compare two ONNX models numerically under onnxruntime.

    ort_compare.py A.onnx B.onnx [--seed 0] [--atol 1e-4] [--rtol 1e-4] [--runs 2]

Both models run on onnxruntime's CPU execution provider with graph
optimizations DISABLED (so ORT itself rewrites nothing), on the same seeded
random inputs: shapes and dtypes come from A's inputs (float: standard normal;
integer: 0..9; bool: random), inputs are matched to B by name. Every output of
A is compared with B's output of the same name: shape, dtype and max abs diff.
An element passes when |a - b| <= atol + rtol * |a| (NaN matches NaN, inf
matches the same inf). Run i (0-based) uses seed + i.

Exit status: 0 all outputs within tolerance, 1 a mismatch (or B fails to run on
A's inputs), 2 usage/load error.
Needs only numpy and onnxruntime (scripts/requirements-ci.txt).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2

_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64,
    "tensor(float16)": np.float16, "tensor(int64)": np.int64,
    "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


class UsageError(Exception):
    pass


def load(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any load failure is a usage error
        raise UsageError(f"cannot load {path}: {e}") from e


def make_inputs(sess, rng: np.random.Generator) -> dict:
    feeds = {}
    for i in sess.get_inputs():
        if i.type not in _DTYPES:
            raise UsageError(f"input '{i.name}': unsupported type {i.type}")
        shape = []
        for d in i.shape:
            if isinstance(d, int) and d >= 0:
                shape.append(d)
            else:
                print(f"note: input '{i.name}' has dynamic dim {d!r}; using 1", file=sys.stderr)
                shape.append(1)
        dt = _DTYPES[i.type]
        if np.issubdtype(dt, np.floating):
            v = rng.standard_normal(shape).astype(dt)
        elif dt == np.bool_:
            v = rng.integers(0, 2, size=shape).astype(np.bool_)
        else:
            v = rng.integers(0, 10, size=shape).astype(dt)
        feeds[i.name] = v
    return feeds


def compare(name: str, a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> tuple[bool, str]:
    if a.shape != b.shape:
        return False, f"{name}: FAIL shape {list(a.shape)} vs {list(b.shape)}"
    if a.dtype != b.dtype:
        return False, f"{name}: FAIL dtype {a.dtype} vs {b.dtype}"
    head = f"{name}: shape {list(a.shape)} {a.dtype}"
    if a.size == 0:
        return True, f"{head} (empty) OK"
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        bad = int(np.count_nonzero(a != b))
        diff = 0 if bad == 0 else int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))
        ok = bad == 0
        return ok, f"{head} max_abs_diff {diff} mismatched {bad}/{a.size} {'OK' if ok else 'FAIL'}"
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(a64) & np.isnan(b64)
    same_inf = np.isinf(a64) & (a64 == b64)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(a64 - b64)
        d = np.where(both_nan | same_inf, 0.0, d)
        d = np.where(np.isnan(d), np.inf, d)  # NaN on one side only
        tol = atol + rtol * np.abs(np.where(np.isfinite(a64), a64, 0.0))
        bad_mask = d > tol
    bad = int(np.count_nonzero(bad_mask))
    max_abs = float(d.max())
    rel = d / np.maximum(np.abs(a64), 1e-12)
    max_rel = float(np.where(np.isfinite(rel), rel, np.inf).max())
    ok = bad == 0
    return ok, (f"{head} max_abs_diff {max_abs:.3e} max_rel_diff {max_rel:.3e} "
                f"mismatched {bad}/{a.size} {'OK' if ok else 'FAIL'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Compare two ONNX models under onnxruntime "
                                 "(CPU EP, graph optimizations disabled).")
    ap.add_argument("a", metavar="A.onnx", help="reference model (input shapes come from here)")
    ap.add_argument("b", metavar="B.onnx", help="model under test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--runs", type=int, default=2)
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return EXIT_OK if e.code == 0 else EXIT_USAGE
    if args.runs < 1 or args.atol < 0 or args.rtol < 0:
        print("error: --runs must be >= 1 and tolerances >= 0", file=sys.stderr)
        return EXIT_USAGE

    try:
        sa, sb = load(args.a), load(args.b)
        a_in = {i.name for i in sa.get_inputs()}
        b_in = {i.name for i in sb.get_inputs()}
        if a_in != b_in:
            raise UsageError(f"input names differ: A {sorted(a_in)} vs B {sorted(b_in)}")
        a_out = [o.name for o in sa.get_outputs()]
        b_out = {o.name for o in sb.get_outputs()}
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE

    all_ok = True
    missing = [n for n in a_out if n not in b_out]
    for n in missing:
        print(f"{n}: FAIL missing from B")
        all_ok = False
    extra = sorted(b_out - set(a_out))
    if extra:
        print(f"note: B has extra outputs not compared: {extra}", file=sys.stderr)
    common = [n for n in a_out if n in b_out]

    for r in range(args.runs):
        rng = np.random.default_rng(args.seed + r)
        try:
            feeds = make_inputs(sa, rng)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
        try:
            ra = dict(zip(a_out, sa.run(a_out, feeds)))
        except Exception as e:  # noqa: BLE001
            print(f"error: running {args.a}: {e}", file=sys.stderr)
            return EXIT_USAGE
        try:
            rb = dict(zip(common, sb.run(common, feeds))) if common else {}
        except Exception as e:  # noqa: BLE001
            print(f"run {r}: FAIL running {args.b}: {e}")
            print("FAIL")
            return EXIT_MISMATCH
        for n in common:
            ok, line = compare(n, np.asarray(ra[n]), np.asarray(rb[n]), args.atol, args.rtol)
            all_ok &= ok
            print(f"run {r} seed {args.seed + r}: {line}")

    print("PASS" if all_ok else "FAIL")
    return EXIT_OK if all_ok else EXIT_MISMATCH


if __name__ == "__main__":
    sys.exit(main())
