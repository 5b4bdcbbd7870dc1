#!/usr/bin/env python3
"""Generate the seeded-random DETR ONNX fixtures used by detrc's tests.

The models are the OFFICIAL facebookresearch/detr architecture, imported from
the `detr` PyPI package (which ships the repository's `models` and `util`
packages): `DETR`, `Transformer`, `Joiner`, `PositionEmbeddingSine`,
`BackboneBase`/`Backbone` and `FrozenBatchNorm2d`. No pretrained weights are
used: every tensor is drawn from a fixed per-config seed, and every bias,
LayerNorm affine and FrozenBatchNorm2d buffer is given a non-trivial value so
that no `x*1` / `x+0` is trivially removable by a rewriter.

The export mirrors the default DETR ONNX export: eval mode, aux_loss=False,
return_intermediate_dec=True (as in DETR's hubconf and build()), so the heads
run on the stacked [L, B, Q, D] decoder output and `[-1]` picks the last
layer (a Gather with index -1 in ONNX). TorchScript exporter (dynamo=False),
static shapes, torch's default constant folding.

Usage:
    python scripts/make_fixtures.py                 # all committed fixtures
    python scripts/make_fixtures.py --config r50    # DETR-R50, on demand
        [--size 800 800] [--opset 17] [--batch 1] [--out bench-out/x.onnx]
    python scripts/make_fixtures.py --config tiny --opset 13 --batch 3 --out /tmp/t.onnx
    python scripts/make_fixtures.py --dynamic-only  # only the *_dyn.onnx fixtures

Requires scripts/requirements-fixtures.txt (torch, torchvision, detr, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

# detr's util/misc.py does `float(torchvision.__version__[:3]) < 0.7` at import
# time: with torchvision 0.29 that reads "0.2" (< 0.7) and then imports
# helpers that no longer exist. Note "0.10.0" would read "0.1" and fail the
# same way, so pretend to be 0.9 while importing detr, then restore.
_TV_VERSION = torchvision.__version__
torchvision.__version__ = "0.9.0"
try:
    from models.backbone import Backbone, BackboneBase, FrozenBatchNorm2d, Joiner  # noqa: E402
    from models.detr import DETR  # noqa: E402
    from models.position_encoding import PositionEmbeddingSine  # noqa: E402
    from models.transformer import Transformer  # noqa: E402
    import models.backbone as detr_backbone  # noqa: E402
    import util.misc as detr_misc  # noqa: E402
finally:
    torchvision.__version__ = _TV_VERSION

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MAX_FIXTURE_BYTES = 2 * 1024 * 1024

# --------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------
CONFIGS = {
    # ResNet18-shaped body (BasicBlock x [2,2,2,2]) at 1/8 width.
    "tiny": dict(
        block="basic", layers=[2, 2, 2, 2], widths=[8, 16, 32, 64],
        hidden_dim=32, nheads=2, dim_feedforward=64, enc_layers=2, dec_layers=3,
        num_queries=10, num_classes=91, size=(64, 96), seed=1001,
    ),
    # Different counts everywhere, ResNet50-shaped Bottleneck body, square input.
    "tiny2": dict(
        block="bottleneck", layers=[1, 2, 2, 1], widths=[4, 8, 16, 32],
        hidden_dim=48, nheads=3, dim_feedforward=96, enc_layers=1, dec_layers=6,
        num_queries=7, num_classes=20, size=(80, 80), seed=2002,
    ),
    # The real DETR-R50 (torchvision resnet50 body via detr's Backbone). Not committed.
    "r50": dict(
        block="resnet50", hidden_dim=256, nheads=8, dim_feedforward=2048,
        enc_layers=6, dec_layers=6, num_queries=100, num_classes=91,
        size=(800, 800), seed=5050,
    ),
}

COMMITTED = [
    # (config, opset, batch)
    ("tiny", 12, 1), ("tiny", 12, 2), ("tiny", 17, 1), ("tiny", 17, 2),
    ("tiny2", 12, 1), ("tiny2", 12, 2), ("tiny2", 17, 1), ("tiny2", 17, 2),
]
# Traced at batch 2 with a dynamic batch axis, as users export for serving: the declared batch
# is symbolic, but DETR's NestedTensor loop is unrolled over the two traced images.
DYNAMIC = [
    # (config, opset, traced batch)
    ("tiny", 17, 2), ("tiny2", 12, 2),
]
CNN_SEED = 3003
INPUT_SEED = 424242  # seed of the random image used to check torch vs onnxruntime


# --------------------------------------------------------------------------
# Model construction (official DETR code path)
# --------------------------------------------------------------------------
class NarrowResNet(nn.Module):
    """torchvision-ResNet-shaped body (conv1/bn1/relu/maxpool/layer1..layer4)
    with small widths, so detr's BackboneBase/IntermediateLayerGetter can take
    `layer4` exactly as it does for torchvision's resnets."""

    def __init__(self, block, layers, widths, norm_layer=FrozenBatchNorm2d):
        super().__init__()
        self._norm_layer = norm_layer
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.num_channels = widths[3] * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride=1):
        norm_layer = self._norm_layer
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                norm_layer(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample, norm_layer=norm_layer)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            mods.append(block(self.inplanes, planes, norm_layer=norm_layer))
        return nn.Sequential(*mods)


def randomize_nontrivial(model: nn.Module, gen: torch.Generator) -> None:
    """Every bias / norm affine / FrozenBN buffer gets a non-trivial value."""

    def uni(t, lo=0.5, hi=1.5):
        with torch.no_grad():
            t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    def nrm(t, std=0.2):
        with torch.no_grad():
            t.copy_(torch.randn(t.shape, generator=gen) * std)

    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            uni(m.weight)
            nrm(m.bias)
            nrm(m.running_mean)
            uni(m.running_var)  # > 0
        elif isinstance(m, nn.LayerNorm):
            uni(m.weight)
            nrm(m.bias)
        elif isinstance(m, nn.MultiheadAttention):
            if m.in_proj_bias is not None:
                nrm(m.in_proj_bias)
        elif isinstance(m, (nn.Linear, nn.Conv2d)):
            if m.bias is not None:
                nrm(m.bias)
    # Non-trivial query embeddings too (nn.Embedding default is N(0,1) already).


def build_detr(cfg: dict) -> DETR:
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"] % (2**32))
    if cfg["block"] == "resnet50":
        # detr's own Backbone: torchvision resnet50 with FrozenBatchNorm2d.
        # Backbone passes pretrained=is_main_process(); make that False so no
        # weights are downloaded (random init, seeded above).
        orig = detr_backbone.is_main_process
        detr_backbone.is_main_process = lambda: False
        try:
            backbone = Backbone("resnet50", train_backbone=True,
                                return_interm_layers=False, dilation=False)
        finally:
            detr_backbone.is_main_process = orig
    else:
        block = {"basic": BasicBlock, "bottleneck": Bottleneck}[cfg["block"]]
        body = NarrowResNet(block, cfg["layers"], cfg["widths"])
        backbone = BackboneBase(body, train_backbone=True, num_channels=body.num_channels,
                                return_interm_layers=False)
    pos = PositionEmbeddingSine(cfg["hidden_dim"] // 2, normalize=True)
    joiner = Joiner(backbone, pos)
    joiner.num_channels = backbone.num_channels
    transformer = Transformer(
        d_model=cfg["hidden_dim"], nhead=cfg["nheads"],
        num_encoder_layers=cfg["enc_layers"], num_decoder_layers=cfg["dec_layers"],
        dim_feedforward=cfg["dim_feedforward"], dropout=0.1,
        normalize_before=False, return_intermediate_dec=True,
    )
    model = DETR(joiner, transformer, num_classes=cfg["num_classes"],
                 num_queries=cfg["num_queries"], aux_loss=False)
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    randomize_nontrivial(model, gen)
    model.eval()
    return model


class TinyCNN(nn.Module):
    """Plain CNN classifier (not DETR) for negative tests."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


def build_cnn() -> TinyCNN:
    torch.manual_seed(CNN_SEED)
    m = TinyCNN()
    gen = torch.Generator().manual_seed(CNN_SEED + 1)
    with torch.no_grad():
        for bn in (m.bn1, m.bn2):
            n = bn.num_features
            bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(n, generator=gen) * 0.2)
            bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
        for conv in (m.conv1, m.conv2, m.fc):
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.2)
    m.eval()
    return m


# --------------------------------------------------------------------------
# Export + checks
# --------------------------------------------------------------------------
def export(model: nn.Module, x: torch.Tensor, path: Path, opset: int,
           output_names, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model, (x,), str(path), opset_version=opset,
            input_names=["images"], output_names=list(output_names),
            dynamo=False, **kw,  # do_constant_folding left at torch's default (True)
        )


def check_and_run(path: Path, x: torch.Tensor, ref: dict, atol=1e-4) -> dict:
    """onnx.checker + onnxruntime run, compared against the torch outputs."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(path))
    if path.stat().st_size < 2 * 1024**3:
        onnx.checker.check_model(m, full_check=True)
    else:
        onnx.checker.check_model(str(path), full_check=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"images": x.numpy()})
    names = [o.name for o in sess.get_outputs()]
    res = {}
    for n, o in zip(names, outs):
        r = ref[n].detach().numpy()
        if o.shape != r.shape:
            raise SystemExit(f"{path.name}: {n} shape {o.shape} != torch {r.shape}")
        d = float(np.abs(o - r).max())
        if not np.isfinite(o).all() or d > atol * max(1.0, float(np.abs(r).max())):
            raise SystemExit(f"{path.name}: {n} ORT vs torch max abs diff {d}")
        res[n] = d
    return {"nodes": len(m.graph.node),
            "ops": Counter(n.op_type for n in m.graph.node),
            "outputs": {n: list(o.shape) for n, o in zip(names, outs)},
            "max_abs_diff_vs_torch": res,
            "model": m}


def make_input(batch: int, size, seed: int = INPUT_SEED) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, 3, *size), generator=g)


def torch_outputs(model, x) -> dict:
    with torch.no_grad():
        out = model(x)
    if isinstance(out, dict):
        return {k: out[k] for k in ("pred_logits", "pred_boxes")}
    return {"logits": out}


def export_detr(cfg_name: str, opset: int, batch: int, out: Path, size=None,
                model=None, verbose=True, dynamic=False) -> dict:
    cfg = dict(CONFIGS[cfg_name])
    if size is not None:
        cfg["size"] = tuple(size)
    if model is None:
        model = build_detr(cfg)
    x = make_input(batch, cfg["size"])
    ref = torch_outputs(model, x)
    t0 = time.perf_counter()
    kw = {"dynamic_axes": {"images": {0: "batch"}}} if dynamic else {}
    export(model, x, out, opset, ["pred_logits", "pred_boxes"], **kw)
    t_export = time.perf_counter() - t0
    info = check_and_run(out, x, ref)
    info["export_s"] = t_export
    info["cfg"] = cfg
    if verbose:
        print(f"{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}: "
              f"{out.stat().st_size} B, {info['nodes']} nodes, export {t_export:.1f}s, "
              f"outputs {info['outputs']}, ORT-vs-torch {info['max_abs_diff_vs_torch']}")
    return info


def simplify_variants(src: Path) -> list[dict]:
    import onnx
    import onnxsim
    import onnxslim

    entries = []
    m = onnx.load(str(src))
    sim, ok = onnxsim.simplify(m)
    if not ok:
        raise SystemExit("onnxsim check failed")
    p = src.with_suffix(".onnxsim.onnx")
    onnx.save(sim, str(p))
    entries.append((p, "onnxsim", onnxsim.__version__))
    slim = onnxslim.slim(onnx.load(str(src)))
    p2 = src.with_suffix(".onnxslim.onnx")
    onnx.save(slim, str(p2))
    entries.append((p2, "onnxslim", onnxslim.__version__))
    return entries


def run_ort(path: Path, x: np.ndarray):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return {o.name: v for o, v in zip(sess.get_outputs(), sess.run(None, {"images": x}))}


def dynamic_entries(models=None) -> list[dict]:
    """The dynamic-axis exports. Each is checked to run at its traced batch (against torch)
    and recorded with the batch sizes onnxruntime accepts, which is the point: only the traced
    one."""
    models = {} if models is None else models
    entries = []
    for cfg_name, opset, batch in DYNAMIC:
        if cfg_name not in models:
            models[cfg_name] = build_detr(CONFIGS[cfg_name])
        # A folder of their own: the static-shape tests iterate over fixtures/*.onnx.
        out = FIXTURES / "dynamic" / f"detr_{cfg_name}_op{opset}_b{batch}_dyn.onnx"
        info = export_detr(cfg_name, opset, batch, out, model=models[cfg_name], dynamic=True)
        cfg = info["cfg"]
        accepted = []
        for b in (1, 2, 3, 4):
            try:
                run_ort(out, make_input(b, cfg["size"]).numpy())
                accepted.append(b)
            except Exception:  # noqa: BLE001 - onnxruntime raises its own types
                pass
        print(f"  onnxruntime runs it at batch {accepted} of [1, 2, 3, 4]")
        entries.append(dict(
            file=f"fixtures/dynamic/{out.name}", kind="detr", config=cfg_name, opset=opset,
            batch=batch, traced_batch=batch, dynamic_axes={"images": {"0": "batch"}},
            runs_at_batch=accepted, input_name="images",
            input_shape=["batch", 3, *cfg["size"]], output_shapes=info["outputs"],
            decoder_layers=cfg["dec_layers"], encoder_layers=cfg["enc_layers"],
            queries=cfg["num_queries"], classes=cfg["num_classes"] + 1,
            num_classes=cfg["num_classes"], hidden_dim=cfg["hidden_dim"],
            nheads=cfg["nheads"], dim_feedforward=cfg["dim_feedforward"],
            backbone=f"{cfg['block']}{cfg['layers']} widths {cfg['widths']}",
            seed=cfg["seed"], nodes=info["nodes"], size_bytes=out.stat().st_size,
        ))
    return entries


def make_dynamic_only() -> None:
    """Re-exports the dynamic-axis fixtures and replaces their manifest entries."""
    path = FIXTURES / "manifest.json"
    manifest = json.loads(path.read_text())
    new = dynamic_entries()
    names = {e["file"] for e in new}
    manifest["fixtures"] = [e for e in manifest["fixtures"] if e["file"] not in names] + new
    for e in new:
        if e["size_bytes"] > MAX_FIXTURE_BYTES:
            raise SystemExit(f"{e['file']} is {e['size_bytes']} B > 2 MB")
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"updated fixtures/manifest.json ({len(new)} dynamic fixtures)")


def make_all() -> None:
    import onnx
    import onnxruntime
    import onnxsim
    import onnxslim

    FIXTURES.mkdir(exist_ok=True)
    manifest = {
        "generator": "scripts/make_fixtures.py",
        "versions": {
            "torch": torch.__version__, "torchvision": _TV_VERSION,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "onnxsim": onnxsim.__version__, "onnxslim": onnxslim.__version__,
        },
        "input_seed": INPUT_SEED,
        "notes": [
            "classes = width of pred_logits = num_classes + 1 (no-object); "
            "num_classes = DETR's num_classes argument",
            "all fixtures of one config share the same weights (seed), whatever "
            "the opset or batch, so their outputs agree on the same image",
            "DETR: eval, aux_loss=False, return_intermediate_dec=True; TorchScript "
            "exporter (dynamo=False), do_constant_folding=True (torch default)",
            "*.onnxsim.onnx / *.onnxslim.onnx: the named file run through that tool",
        ],
        "fixtures": [],
    }
    models = {}
    for cfg_name, opset, batch in COMMITTED:
        if cfg_name not in models:
            models[cfg_name] = build_detr(CONFIGS[cfg_name])
        out = FIXTURES / f"detr_{cfg_name}_op{opset}_b{batch}.onnx"
        info = export_detr(cfg_name, opset, batch, out, model=models[cfg_name])
        cfg = info["cfg"]
        manifest["fixtures"].append(dict(
            file=f"fixtures/{out.name}", kind="detr", config=cfg_name, opset=opset,
            batch=batch, input_name="images", input_shape=[batch, 3, *cfg["size"]],
            output_shapes=info["outputs"], decoder_layers=cfg["dec_layers"],
            encoder_layers=cfg["enc_layers"], queries=cfg["num_queries"],
            classes=cfg["num_classes"] + 1, num_classes=cfg["num_classes"],
            hidden_dim=cfg["hidden_dim"], nheads=cfg["nheads"],
            dim_feedforward=cfg["dim_feedforward"],
            backbone=f"{cfg['block']}{cfg['layers']} widths {cfg['widths']}",
            seed=cfg["seed"], nodes=info["nodes"], size_bytes=out.stat().st_size,
        ))

    # Simplified variants of detr_tiny_op17_b1.
    base = FIXTURES / "detr_tiny_op17_b1.onnx"
    base_entry = next(e for e in manifest["fixtures"] if e["file"].endswith(base.name))
    x = make_input(1, CONFIGS["tiny"]["size"]).numpy()
    ref = run_ort(base, x)
    for p, tool, ver in simplify_variants(base):
        m = onnx.load(str(p))
        onnx.checker.check_model(m, full_check=True)
        got = run_ort(p, x)
        diffs = {k: float(np.abs(got[k] - ref[k]).max()) for k in ref}
        if max(diffs.values()) > 1e-4:
            raise SystemExit(f"{p.name}: differs from {base.name}: {diffs}")
        print(f"fixtures/{p.name}: {p.stat().st_size} B, {len(m.graph.node)} nodes, "
              f"vs base {diffs}")
        e = dict(base_entry)
        e.update(file=f"fixtures/{p.name}", simplified_by=f"{tool} {ver}",
                 source=f"fixtures/{base.name}", nodes=len(m.graph.node),
                 size_bytes=p.stat().st_size)
        manifest["fixtures"].append(e)

    manifest["fixtures"].extend(dynamic_entries(models))

    # Plain CNN (negative tests). TrainingMode.PRESERVE keeps the
    # BatchNormalization nodes (EVAL would fold them into the Convs); torch
    # asks for constant folding to be off in that mode (nothing to fold here).
    cnn = build_cnn()
    x = make_input(1, (32, 32))
    ref = torch_outputs(cnn, x)
    out = FIXTURES / "cnn_tiny_op17_b1.onnx"
    export(cnn, x, out, 17, ["logits"], training=torch.onnx.TrainingMode.PRESERVE,
           do_constant_folding=False)
    info = check_and_run(out, x, ref)
    print(f"fixtures/{out.name}: {out.stat().st_size} B, {info['nodes']} nodes, "
          f"ops {dict(info['ops'])}")
    manifest["fixtures"].append(dict(
        file=f"fixtures/{out.name}", kind="cnn", config="cnn_tiny", opset=17, batch=1,
        input_name="images", input_shape=[1, 3, 32, 32], output_shapes=info["outputs"],
        decoder_layers=None, queries=None, classes=10, seed=CNN_SEED,
        nodes=info["nodes"], size_bytes=out.stat().st_size,
    ))

    for e in manifest["fixtures"]:
        size = (ROOT / e["file"]).stat().st_size
        if size > MAX_FIXTURE_BYTES:
            raise SystemExit(f"{e['file']} is {size} B > 2 MB")
    (FIXTURES / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote fixtures/manifest.json ({len(manifest['fixtures'])} fixtures)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS),
                    help="export one config on demand (default: all committed fixtures)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                    help="input size (default: the config's; r50: 800 800)")
    ap.add_argument("--out", type=Path, help="output path (default under bench-out/)")
    ap.add_argument("--dynamic-only", action="store_true",
                    help="re-export only the dynamic-batch fixtures (manifest updated)")
    args = ap.parse_args(argv)

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.dynamic_only:
        make_dynamic_only()
        return 0
    if args.config is None:
        if args.out or args.size:
            ap.error("--out/--size need --config")
        make_all()
        return 0
    size = tuple(args.size) if args.size else CONFIGS[args.config]["size"]
    out = args.out or (ROOT / "bench-out" /
                       f"detr_{args.config}_op{args.opset}_b{args.batch}_{size[0]}x{size[1]}.onnx")
    out = out.resolve()
    t0 = time.perf_counter()
    model = build_detr({**CONFIGS[args.config], "size": size})
    t_build = time.perf_counter() - t0
    info = export_detr(args.config, args.opset, args.batch, out, size=size, model=model)
    top = ", ".join(f"{k}:{v}" for k, v in info["ops"].most_common(12))
    print(f"build {t_build:.1f}s, export {info['export_s']:.1f}s, total "
          f"{time.perf_counter() - t0:.1f}s; size {out.stat().st_size / 1e6:.1f} MB; "
          f"{info['nodes']} nodes; top ops {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
