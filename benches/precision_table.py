#!/usr/bin/env python3
"""The fp16 and GridSample table of docs/precision.md, measured on every fixture in one run.

For each model (default: fixtures/family, fixtures/fp16, fixtures/rfdetr):

* `detrc compile --precision fp16 --no-fp16-guard`: does plain `to-fp16` keep the outputs
  finite under emulated fp16 storage?
* `detrc compile --precision fp16` (guarded): the sorted scores' SQNR against the fp32 model,
  the detections kept (as sets), the ops the guard kept in fp32 and in how many rounds;
* `detrc compile --gridsample gather --verify` (models with GridSample): equal to the original?
  (tract for Deformable DETR's float64 grids, which onnxruntime cannot run);
* `detrc build <guarded fp16 model> --target sm86` without `--precision`: does the engine build?
  (TensorRT-RTX 1.7, CPU only: built, never run).

Usage:
    cargo build --release
    python3 benches/precision_table.py [--only SUBSTR] [--md OUT.md]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DETRC = ROOT / "target" / "release" / "detrc"


def detrc(*args: str) -> tuple[int, dict | None, str]:
    p = subprocess.run([str(DETRC), *args], capture_output=True, text=True)
    try:
        j = json.loads(p.stdout) if p.stdout.strip() else None
    except json.JSONDecodeError:
        j = None
    return p.returncode, j, p.stderr


def row(model: Path, tmp: Path) -> dict:
    name = model.stem
    out = tmp / f"{name}.fp16.onnx"
    r: dict = {"model": f"{model.parent.name}/{name}"}
    code, _, err = detrc("compile", str(model), "-o", str(tmp / "plain.onnx"), "--precision",
                         "fp16", "--no-fp16-guard", "--json")
    r["plain"] = "ok" if code == 0 else ("inf/NaN" if "not finite" in err else f"exit {code}")
    t0 = time.time()
    code, j, err = detrc("compile", str(model), "-o", str(out), "--precision", "fp16", "--json")
    r["seconds"] = time.time() - t0
    if code != 0:
        r["guarded"] = f"exit {code}: {err.strip().splitlines()[-1][:80]}"
        return r
    f16 = j["precision"]["fp16"]
    d = f16.get("detections") or {}
    r["guarded"] = "ok"
    r["sqnr"] = d.get("sorted_scores_sqnr_db")
    r["dets"] = f"{d.get('matched', 0)}/{d.get('fp32_detections', 0)}" if d else "-"
    r["kept"] = len(f16["kept"])
    r["rounds"] = f16["rounds"]
    ops = j.get("ops_after", {})
    if ops.get("GridSample", 0):
        args = ["compile", str(model), "-o", str(tmp / "gather.onnx"), "--gridsample", "gather",
                "--verify", "--json"]
        code, gj, gerr = detrc(*args)
        if code != 0 and "onnxruntime cannot load" in gerr:
            code, gj, gerr = detrc(*args, "--reference", "tract")
        if code == 0 and gj and gj.get("ops_before", {}).get("GridSample", 0):
            left = gj["ops_after"].get("GridSample", 0)
            r["gather"] = f"equal ({left} left)" if gj.get("verified") else "not verified"
        elif code == 0:
            r["gather"] = "-"
        else:
            r["gather"] = f"exit {code}"
    else:
        r["gather"] = "-"
    code, _, err = detrc("build", str(out), "-o", str(tmp / "e.engine"), "--target", "sm86",
                         "--json")
    r["engine"] = "builds" if code == 0 else f"exit {code}: {err.strip().splitlines()[-1][:60]}"
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only")
    ap.add_argument("--md", type=Path)
    a = ap.parse_args()
    models = []
    for d in ["fixtures/family", "fixtures/fp16", "fixtures/rfdetr"]:
        models += sorted((ROOT / d).glob("*.onnx"))
    if a.only:
        models = [m for m in models if a.only in str(m)]
    lines = [
        "| model | plain to-fp16 | guarded: sorted scores SQNR | detections kept | ops kept fp32 "
        "(rounds) | GridSample gather | fp16 engine sm86 |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as t:
        for m in models:
            r = row(m, Path(t))
            sq = f"{r['sqnr']:.1f} dB" if r.get("sqnr") is not None else r.get("guarded")
            line = (f"| {r['model']} | {r['plain']} | {sq} | {r.get('dets', '-')} | "
                    f"{r.get('kept', '-')} ({r.get('rounds', '-')}) | {r.get('gather', '-')} | "
                    f"{r.get('engine', '-')} |")
            print(line, flush=True)
            lines.append(line)
    if a.md:
        a.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("DETRC_ONNXRUNTIME", str(ROOT / ".ort/libonnxruntime.so.1.31.1"))
    os.environ.setdefault("DETRC_TENSORRT_DIR", str(ROOT / ".trt"))
    main()
