#!/usr/bin/env python3
"""INT8 accuracy of `detrc quantize` against onnxruntime's `quantize_static`, side by side.

For one DETR model: compile it with detrc, make synthetic calibration and held-out images
(scripts/make_calibration_images.py, disjoint seeds), quantize the compiled model
- with `detrc quantize --method M` for every method asked for, and
- with onnxruntime's `quantize_static` (QDQ, symmetric int8 activations and weights,
  per-channel weights, MinMax, Conv/MatMul/Gemm only, no bias quantization), calibrated on the
  same images with the same pre-processing (scripts/ref_detect.py's, which is detrc run's),

then runs the float model and every quantized model under onnxruntime (CPU, graph
optimizations disabled, so Q/DQ pairs are evaluated exactly as written) on the held-out
images and prints each output's SQNR (dB, over all held-out images), together with checks of
the structure TensorRT-RTX needs: no Where, no INT32 (bias) DequantizeLinear, every zero point
0. Exit code 1 if a detrc model fails a structural check, or (with --check) if its SQNR is
below onnxruntime's minus 0.5 dB on any output or below 40 dB on the boxes.

Usage: int8_compare.py --detrc BIN --model M.onnx --work DIR [--calib 32] [--eval 16]
                       [--methods max,percentile,entropy,mse] [--json out.json] [--check]
                       [--fp8]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ref_detect import collect, preprocess  # noqa: E402


def sh(*cmd: str) -> None:
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}")


def images(folder: Path, h: int, w: int, batch: int) -> list[np.ndarray]:
    files = collect([folder])
    out = []
    for i in range(0, len(files), batch):
        chunk = files[i:i + batch]
        arrs = [preprocess(np.asarray(Image.open(f).convert("RGB")), h, w, True) for f in chunk]
        while len(arrs) < batch:
            arrs.append(arrs[-1])
        out.append(np.stack(arrs))
    return out


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def structure(path: Path) -> dict:
    """What TensorRT-RTX cares about in a Q/DQ model."""
    m = onnx.load(str(path))
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in g.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].t.name is not None}
    ops = [n.op_type for n in g.node]
    int32_dq, nonzero_zp = [], []
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if n.op_type == "DequantizeLinear":
            t = inits.get(n.input[0])
            if t is not None and t.data_type == onnx.TensorProto.INT32:
                int32_dq.append(n.input[0])
        if len(n.input) > 2 and n.input[2]:
            zp = inits.get(n.input[2]) or consts.get(n.input[2])
            if zp is not None and np.any(numpy_helper.to_array(zp) != 0):
                nonzero_zp.append(n.input[2])
    return {
        "where": ops.count("Where"),
        "quantize_linear": ops.count("QuantizeLinear"),
        "dequantize_linear": ops.count("DequantizeLinear"),
        "int32_dequantize": len(int32_dq),
        "nonzero_zero_points": len(nonzero_zp),
    }


def ort_quantize(compiled: Path, out: Path, calib: list[np.ndarray], input_name: str) -> float:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {input_name: x}

    t0 = time.time()
    quantize_static(
        str(compiled), str(out), Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                       "QuantizeBias": False},
    )
    return time.time() - t0


def sqnr(ref: dict[str, list[np.ndarray]], got: dict[str, list[np.ndarray]]) -> dict[str, float]:
    res = {}
    for name, xs in ref.items():
        s = sum(float(np.sum(x.astype(np.float64) ** 2)) for x in xs)
        n = sum(float(np.sum((x.astype(np.float64) - y.astype(np.float64)) ** 2))
                for x, y in zip(xs, got[name]))
        res[name] = 300.0 if n == 0 else min(300.0, 10 * np.log10(s / n))
    return res


def run_all(sess: ort.InferenceSession, batches: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    names = [o.name for o in sess.get_outputs()]
    feed = sess.get_inputs()[0].name
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for x in batches:
        for n, v in zip(names, sess.run(None, {feed: x})):
            out[n].append(v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detrc", required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--methods", default="max,percentile,entropy,mse")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--fp8", action="store_true",
                    help="also `detrc quantize --format fp8 --method mse` (FP8 E4M3, opset 19); "
                         "shown for comparison, not held to the int8 baseline by --check")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    cal_dir, eval_dir = work / "calibration", work / "heldout"
    for d, n, seed in [(cal_dir, args.calib, 1000), (eval_dir, args.eval, 5000)]:
        if not d.is_dir() or len(list(d.glob("*.png"))) != n:
            sh(sys.executable, str(HERE / "make_calibration_images.py"), "--out", str(d),
               "--count", str(n), "--seed", str(seed))
    compiled = work / "compiled.onnx"
    sh(args.detrc, "compile", str(args.model), "-o", str(compiled), "-q")

    fsess = session(compiled)
    inp = fsess.get_inputs()[0]
    b, _, h, w = inp.shape
    calib = images(cal_dir, h, w, b)
    held = images(eval_dir, h, w, b)
    ref = run_all(fsess, held)

    rows = {}
    ort_q = work / "ort_quantize_static.onnx"
    secs = ort_quantize(compiled, ort_q, calib, inp.name)
    rows["onnxruntime quantize_static (MinMax)"] = {
        "model": str(ort_q), "seconds": secs, "structure": structure(ort_q),
        "sqnr_db": sqnr(ref, run_all(session(ort_q), held))}
    for m in args.methods.split(","):
        out = work / f"detrc_{m}.onnx"
        t0 = time.time()
        sh(args.detrc, "quantize", str(compiled), "-o", str(out), "--calibration", str(cal_dir),
           "--method", m, "-q", "--report", str(work / f"detrc_{m}.report.json"))
        rows[f"detrc quantize --method {m}"] = {
            "model": str(out), "seconds": time.time() - t0, "structure": structure(out),
            "sqnr_db": sqnr(ref, run_all(session(out), held))}

    if args.fp8:
        out = work / "detrc_fp8_mse.onnx"
        t0 = time.time()
        sh(args.detrc, "quantize", str(compiled), "-o", str(out), "--calibration", str(cal_dir),
           "--method", "mse", "--format", "fp8", "-q")
        rows["detrc quantize --format fp8 (mse)"] = {
            "model": str(out), "seconds": time.time() - t0, "structure": structure(out),
            "sqnr_db": sqnr(ref, run_all(session(out), held)), "format": "fp8"}

    outs = list(ref)
    print(f"{args.model.name}: compiled by detrc, {args.calib} calibration / {args.eval} "
          f"held-out synthetic images, onnxruntime {ort.__version__} CPU (no graph optimization)")
    head = f"{'quantizer':<40}" + "".join(f"{o + ' SQNR dB':>20}" for o in outs)
    print(head + f"{'Q/DQ':>7}{'Where':>7}{'i32 DQ':>8}{'zp!=0':>7}{'s':>7}")
    for k, r in rows.items():
        s = r["structure"]
        print(f"{k:<40}" + "".join(f"{r['sqnr_db'][o]:>20.2f}" for o in outs)
              + f"{s['quantize_linear']:>7}{s['where']:>7}{s['int32_dequantize']:>8}"
              f"{s['nonzero_zero_points']:>7}{r['seconds']:>7.1f}")
    base = rows["onnxruntime quantize_static (MinMax)"]["sqnr_db"]
    rc = 0
    boxes = next((o for o in outs if "box" in o), outs[-1])
    for k, r in rows.items():
        if not k.startswith("detrc"):
            continue
        s = r["structure"]
        if s["where"] or s["int32_dequantize"] or s["nonzero_zero_points"]:
            print(f"FAIL {k}: structure {s}")
            rc = 1
        if args.check and r.get("format") != "fp8":
            for o in outs:
                if r["sqnr_db"][o] < base[o] - 0.5:
                    print(f"FAIL {k}: {o} SQNR {r['sqnr_db'][o]:.2f} < ort {base[o]:.2f} - 0.5")
                    rc = 1
            if r["sqnr_db"][boxes] < 40.0:
                print(f"FAIL {k}: {boxes} SQNR {r['sqnr_db'][boxes]:.2f} < 40 dB")
                rc = 1
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "calib": args.calib,
                                         "eval": args.eval, "rows": rows}, indent=2) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
