#!/usr/bin/env python3
"""detrc against onnx-simplifier and onnxslim on every DETR-family fixture, in one run.

For each fixture of fixtures/family/manifest.json: node count and the counts of the ops
TensorRT users want gone (Gather, Where, Shape, ReduceMean, ScatterND), and the wall time of

* `detrc compile` (release build),
* `python -m onnxsim` (onnx-simplifier 0.8.1),
* `onnxslim` 0.1.98,

all run one after the other on the same machine. detrc's output is also compared with the
original under onnxruntime on a seeded input (within 1e-4; TopK outputs as sets of detections;
the float64-grid Deformable DETR exports against a copy with the grid cast to float, since
onnxruntime cannot run the original).

Usage (the fixture venv has onnxsim, onnxslim and onnxruntime):
    cargo build --release
    /work/venv-fix/bin/python benches/family_vs_peers.py [--only SUBSTR] [--md docs/family.md]
    /work/venv-fix/bin/python benches/family_vs_peers.py --files /tmp/holdout/*.onnx  # hold-outs
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
WATCH = ["Gather", "Where", "Shape", "ReduceMean", "ScatterND"]


def counts(path: Path) -> tuple[int, Counter, set]:
    """Nodes, op histogram, and the non-standard op domains used (com.microsoft, ...): an
    output with those is not a TensorRT-parsable ONNX model and does not count as a peer's
    result."""
    m = onnx.load(str(path), load_external_data=False)
    return (len(m.graph.node), Counter(n.op_type for n in m.graph.node),
            {n.domain for n in m.graph.node if n.domain not in ("", "ai.onnx")})


def timed(cmd: list[str]) -> tuple[float, str | None]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        text = (r.stderr or r.stdout).strip()
        return dt, text.splitlines()[-1][:200] if text else f"exit {r.returncode}"
    return dt, None


def check(orig: Path, comp: Path, batch: int) -> str:
    from family_compare import compare
    try:
        ok, msg = compare(str(orig), str(comp), batch=batch)
    except Exception as e:  # noqa: BLE001
        return f"cannot run: {str(e).splitlines()[0][:80]}"
    return msg if ok else f"MISMATCH {msg}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="substring of the fixture names to run")
    ap.add_argument("--detrc", default=str(ROOT / "target/release/detrc"))
    ap.add_argument("--files", nargs="+", type=Path,
                    help="these ONNX files (hold-out exports) instead of the manifest's fixtures")
    ap.add_argument("--md", type=Path, help="also write the table into this markdown file "
                    "between the BEGIN/END family-table markers")
    a = ap.parse_args()
    if a.files:
        sources = [f.resolve() for f in a.files]
    else:
        man = json.loads((ROOT / "fixtures/family/manifest.json").read_text())
        sources = [ROOT / e["file"] for e in man["fixtures"]]
    tmp = Path(tempfile.mkdtemp(prefix="detrc_family_bench_"))
    rows = []
    for src in sources:
        if a.only and a.only not in src.name:
            continue
        stem = src.name[:-5]
        outs = {t: tmp / f"{stem}.{t}.onnx" for t in ("detrc", "onnxsim", "onnxslim")}
        cmds = {
            "detrc": [a.detrc, "compile", str(src), "-o", str(outs["detrc"]), "-q"],
            "onnxsim": [sys.executable, "-m", "onnxsim", str(src), str(outs["onnxsim"])],
            "onnxslim": [shutil.which("onnxslim") or str(Path(sys.executable).parent / "onnxslim"),
                         str(src), str(outs["onnxslim"])],
        }
        row = {"name": stem, "orig": counts(src)}
        for tool, cmd in cmds.items():
            dt, err = timed(cmd)
            row[tool] = (dt, err, counts(outs[tool]) if err is None else None)
        if row["detrc"][1] is None:
            row["check"] = check(src, outs["detrc"], 1 if "rtdetrv2_official" in stem else 2)
        else:
            row["check"] = "-"
        rows.append(row)
        print(json.dumps({"name": stem, "orig": row["orig"][0],
                          **{t: (row[t][2][0] if row[t][2] else row[t][1]) for t in cmds},
                          "times": {t: round(row[t][0], 2) for t in cmds},
                          "check": row["check"]}), flush=True)
    table = render(rows)
    print(table)
    if a.md:
        text = a.md.read_text() if a.md.exists() else ""
        begin, end = "<!-- BEGIN family-table -->", "<!-- END family-table -->"
        block = f"{begin}\n{table}\n{end}"
        if begin in text and end in text:
            text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
        else:
            text += "\n" + block + "\n"
        a.md.write_text(text)


def left(c: Counter) -> str:
    parts = [f"{c[k]} {k}" for k in WATCH if c.get(k)]
    return ", ".join(parts) or "-"


def gsw(r, t) -> str:
    """Gather/Shape/Where left by tool `t`."""
    if not r[t][2]:
        return "-"
    c = r[t][2][1]
    return f"{c['Gather']}/{c['Shape']}/{c['Where']}"


def render(rows) -> str:
    head = ("| export | original | detrc | onnxsim | onnxslim | left by detrc | "
            "detrc / best peer | Gather/Shape/Where detrc · onnxsim · onnxslim | detrc s | "
            "onnxsim s | onnxslim s | detrc vs original |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    foreign = False
    for r in rows:
        def n(t):
            nonlocal foreign
            if not r[t][2]:
                return "fails"
            if r[t][2][2]:
                foreign = True
                return f"{r[t][2][0]}* ({', '.join(sorted(r[t][2][2]))})"
            return str(r[t][2][0])
        # A peer output with ops outside the standard ONNX domain does not count.
        peers = [r[t][2][0] for t in ("onnxsim", "onnxslim") if r[t][2] and not r[t][2][2]]
        ratio = (f"{r['detrc'][2][0] / min(peers):.2f}x" if peers and r["detrc"][2] else "-")
        lines.append(
            f"| {r['name']} | {r['orig'][0]} | {n('detrc')} | {n('onnxsim')} | {n('onnxslim')} "
            f"| {left(r['detrc'][2][1]) if r['detrc'][2] else r['detrc'][1]} | {ratio} "
            f"| {gsw(r, 'detrc')} · {gsw(r, 'onnxsim')} · {gsw(r, 'onnxslim')} "
            f"| {r['detrc'][0]:.2f} | {r['onnxsim'][0]:.2f} | {r['onnxslim'][0]:.2f} "
            f"| {r['check']} |")
    if foreign:
        lines.append("\n\\* uses ops outside the standard ONNX domain (TensorRT cannot parse "
                     "them): not counted as the best peer.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
