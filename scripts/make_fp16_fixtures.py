#!/usr/bin/env python3
"""Family fixtures with planted large activations (fixtures/fp16/), for the fp16 check and guard
of `detrc compile --precision fp16`.

Trained detection transformers overflow fp16 in their decoder FFNs: the hidden activation of a
ReLU FFN reaches past 65504 while the layer's output stays small (the reports behind RT-DETR#104,
D-FINE#44, DEIM#107). Random-weight fixtures do not. Here every decoder FFN of a small seeded
family model (built as in make_family_fixtures.py) is rescaled so that its hidden activation
peaks at PEAK on the fixture input, while the model computes the same function in fp32:

    fc2(relu(s * fc1(x))) / s == fc2(relu(fc1(x)))      for s > 0 (ReLU is positively homogeneous)

so fc1's weight and bias are multiplied by s and fc2's weight divided by s. The fp32 export is
checked against torch as usual; in fp16 storage the hidden activation is inf.

Usage:
    python scripts/make_fp16_fixtures.py                   # all fixtures
    python scripts/make_fp16_fixtures.py --family rtdetr --opset 17 --batch 0 --peak 3e5 \\
        --seed 7 --out /tmp/x.onnx                         # one hold-out
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_family_fixtures as fam  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "fixtures" / "fp16"
# Hidden activations peak at 3x fp16's largest value: past it on every input like the
# fixture's, as a trained model's are on real images.
PEAK = 2.0e5

# (family, opset, batch: 1 static / 0 dynamic, exporter)
FIXTURES = [
    ("detr", 17, 1, "torchscript"),
    ("deformable_detr", 16, 1, "torchscript"),
    ("rtdetr", 17, 1, "torchscript"),
    ("rtdetr_v2", 17, 0, "torchscript"),
    ("dfine", 16, 1, "torchscript"),
]


def decoder_ffns(model: nn.Module) -> list[tuple[str, nn.Linear, nn.Linear]]:
    """The (fc1, fc2) pairs of every decoder layer whose activation is a ReLU."""
    found = []
    for name, m in model.named_modules():
        if ".decoder.layers." not in name + "." or name.count(".layers.") != 1:
            continue
        fc1, fc2 = getattr(m, "fc1", None), getattr(m, "fc2", None)
        layers = getattr(m, "layers", None)
        if fc1 is None and isinstance(layers, nn.ModuleList) and len(layers) == 2:
            fc1, fc2 = layers  # D-FINE's two-layer MLP
        if not (isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)):
            continue
        act = getattr(m, "activation_fn", None) or getattr(m, "activation", None) or \
            getattr(m, "act", None)
        is_relu = act is torch.nn.functional.relu or isinstance(act, nn.ReLU) or \
            type(act).__name__ == "ReLU" or getattr(act, "__name__", "") == "relu"
        if not is_relu:
            raise SystemExit(f"{name}: decoder activation {act!r} is not a ReLU; the planted "
                             "scale would change the function")
        found.append((name, fc1, fc2))
    if not found:
        raise SystemExit("no decoder FFN (fc1, fc2) found")
    return found


def plant(model: nn.Module, x: torch.Tensor, peak: float) -> dict:
    """Rescales every decoder FFN so its hidden activation peaks at `peak` on `x`."""
    ffns = decoder_ffns(model)
    peaks: dict[str, float] = {}
    hooks = [fc1.register_forward_hook(
        lambda _m, _i, out, n=name: peaks.__setitem__(n, max(peaks.get(n, 0.0),
                                                             float(out.abs().max()))))
        for name, fc1, _ in ffns]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    scales = {}
    with torch.no_grad():
        for name, fc1, fc2 in ffns:
            s = peak / max(peaks[name], 1e-6)
            fc1.weight.mul_(s)
            if fc1.bias is not None:
                fc1.bias.mul_(s)
            fc2.weight.div_(s)
            scales[name] = s
    return {"layers": len(ffns), "scale_min": min(scales.values()),
            "scale_max": max(scales.values()), "hidden_peak": peak}


def make(family: str, opset: int, batch: int, exporter: str, peak: float, seed: int | None,
         out: Path) -> dict:
    spec = fam.FAMILIES[family]
    seed = spec["seed"] + 100 if seed is None else seed
    model = fam.build(family, seed)
    size = spec["size"]
    x = fam.make_input(batch or 2, size)
    planted = plant(model.model, x, peak)
    with torch.no_grad():
        ref = list(model(x))
    fam.export(model, x, out, opset, exporter, dynamic=batch == 0)
    info = fam.check(out, {"pixel_values": x.numpy()}, ref)
    return {
        "file": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
        "family": family,
        "architecture": spec["arch"],
        "exporter": exporter,
        "opset": opset,
        "batch": batch or "dynamic",
        "inputs": {"pixel_values": [batch or "batch", 3, *size]},
        "seed": seed,
        "planted": planted,
        "nodes": info["nodes"],
        "checked_with": info["checked_with"],
        "bytes": fam.file_bytes(out),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--batch", type=int, default=1, help="0 = dynamic")
    ap.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"])
    ap.add_argument("--peak", type=float, default=PEAK)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.family:
        out = a.out or Path(f"/tmp/{a.family}_planted.onnx")
        print(json.dumps(make(a.family, a.opset, a.batch, a.exporter, a.peak, a.seed, out)))
        return

    import onnx
    import onnxruntime
    import transformers

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    entries = []
    for family, opset, batch, exporter in FIXTURES:
        b = "dyn" if batch == 0 else f"b{batch}"
        out = OUT_DIR / f"{family}_planted_op{opset}_{b}.onnx"
        e = make(family, opset, batch, exporter, PEAK, None, out)
        print(f"{out.name}: {e['bytes']} B, {e['nodes']} nodes, {e['planted']['layers']} FFNs")
        entries.append(e)
    manifest = {
        "generator": "scripts/make_fp16_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "input_seed": fam.INPUT_SEED,
        "notes": [
            "family models as in fixtures/family (small configs, seeded random weights, "
            "non-trivial biases and norms), decoder FFNs rescaled: fc1 x s, fc2 / s, so the "
            "hidden ReLU activation peaks at 'hidden_peak' on the fixture input (past fp16's "
            "65504) and the fp32 function is unchanged",
        ],
        "fixtures": entries,
    }
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
