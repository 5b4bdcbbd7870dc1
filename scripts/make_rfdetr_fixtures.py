#!/usr/bin/env python3
"""Generate the windowed-attention fixtures (fixtures/rfdetr/): RF-DETR through its own exporter,
and transformers' LW-DETR with a dynamic batch.

RF-DETR (PyPI `rfdetr`, pinned in `REQUIRED_RFDETR`) is built with `pretrain_weights=None`, so
nothing is downloaded, and exported with ITS OWN `RFDETR.export()`: once at batch 1 and once
with `dynamic_batch=True`, which is how its users get a multi-camera model. The DINOv2 backbone
partitions the image into `num_windows**2` windows and folds them into the batch axis
(`[B*W, tokens, C]`), repeats the class token once per window (`repeat(W, 1, 1)`), and undoes
the windows for the global-attention blocks (`[B, W*tokens, C]`): the patterns
`generalize-batch` must follow.

To keep each file at a few hundred KB the architecture is shrunk, not changed: the backbone
config that rfdetr reads from its package (`get_config`) gets a narrower, shallower ViT, the
decoder a smaller width and feed-forward dimension; patch size, window count, register
tokens, projector, two-stage query selection and heads stay as the variant defines them. The
resolution is a multiple of `patch_size * num_windows`, as `export()` requires.

transformers' `LwDetrForObjectDetection` (the same windowing, in its ViT backbone) is exported
with the TorchScript exporter at opset 17 with a dynamic batch axis on `pixel_values`.

Every bias, norm affine, batch-norm statistic and layer scale gets a seeded non-trivial value
(set on the torch model before export, so no `x*1` / `x+0` becomes removable by accident).
Each export is checked against torch under onnxruntime, the dynamic ones image by image at
batch 1-4.

Usage:
    /work/venv-fix/bin/python scripts/make_rfdetr_fixtures.py            # all
    /work/venv-fix/bin/python scripts/make_rfdetr_fixtures.py --only nano,lwdetr
    /work/venv-fix/bin/python scripts/make_rfdetr_fixtures.py --only nano --seed 7 \\
        --resolution 192 --out /tmp/holdout                                # a hold-out export
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "fixtures" / "rfdetr"
REQUIRED_RFDETR = "1.11.2"
INPUT_SEED = 424242
MAX_BYTES = 3 * 1024 * 1024

# The shrunk backbone: what `get_config` hands the windowed DINOv2 instead of ViT-S.
VIT = dict(hidden_size=48, num_attention_heads=2, num_hidden_layers=4)

# Variant -> (class name, constructor overrides). `out_feature_indexes` [2, 4] over 4 layers
# makes blocks 0, 1 and 3 windowed and 2 global (rfdetr derives the windowed blocks as the
# complement), so both the window partition and its inverse are exercised.
RFDETR = {
    "nano": ("RFDETRNano", dict(resolution=128, seed=21)),
    "small": ("RFDETRSmall", dict(resolution=160, seed=22, dec_layers=3)),
    "seg_nano": ("RFDETRSegNano", dict(resolution=96, seed=23)),
    # Hold-out variants (not committed): --only small,medium,seg_small,base,large,nano_registers
    # --out DIR.
    "medium": ("RFDETRMedium", dict(resolution=192, seed=24, dec_layers=4)),
    "seg_small": ("RFDETRSegSmall", dict(resolution=144, seed=25)),
    "base": ("RFDETRBase", dict(resolution=224, seed=26)),
    "large": ("RFDETRLarge", dict(resolution=192, seed=27)),
    # DINOv2 with register tokens (inserted after the class token, expanded to B*W windows).
    "nano_registers": ("RFDETRNano", dict(resolution=128, seed=28,
                                          encoder="dinov2_registers_windowed_small")),
}
COMMON = dict(hidden_dim=64, out_feature_indexes=[2, 4], num_queries=30, num_select=30,
              num_classes=5, sa_nheads=4, ca_nheads=4, dec_n_points=2)


def randomize_nontrivial(model: nn.Module, gen: torch.Generator) -> None:
    """Every bias, norm affine, running statistic and layer scale gets a seeded value."""

    def uni(t, lo=0.5, hi=1.5):
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    def nrm(t, std=0.2):
        t.copy_(torch.randn(t.shape, generator=gen) * std)

    with torch.no_grad():
        for name, p in model.named_parameters():
            # DINOv2's / LW-DETR's layer scale (lambda1) and the learned tokens.
            if name.endswith("lambda1") or name.endswith(".lambda"):
                uni(p)
            elif name.endswith(("cls_token", "register_tokens", "mask_token")):
                nrm(p, 0.5)
        for m in model.modules():
            kind = type(m).__name__
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) or "Norm" in kind:
                if getattr(m, "weight", None) is not None and m.weight.dim() == 1:
                    uni(m.weight)
                if getattr(m, "bias", None) is not None and m.bias.dim() == 1:
                    nrm(m.bias)
                if getattr(m, "running_mean", None) is not None:
                    nrm(m.running_mean)
                    uni(m.running_var)
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                nrm(m.weight, std=fan_in ** -0.5)
                if m.bias is not None:
                    nrm(m.bias)


SHRINK = [True]


def shrink_rfdetr() -> None:
    """Narrows the backbone and decoder of every rfdetr variant built after this call."""
    import rfdetr.models.backbone.dinov2 as d2
    from rfdetr.models._defaults import MODEL_DEFAULTS

    if not SHRINK[0] or getattr(d2, "_detrc_shrunk", False):
        return
    orig = d2.get_config

    def small_config(size, use_registers):
        c = orig(size, use_registers)
        c.update(VIT)
        # The registers config names its 12 stages; rfdetr sets out_features itself.
        for k in ("out_indices", "stage_names"):
            c.pop(k, None)
        return c

    d2.get_config = small_config
    for k in list(d2.size_to_width):
        d2.size_to_width[k] = VIT["hidden_size"]
    # A frozen-looking dataclass instance read at model build time.
    object.__setattr__(MODEL_DEFAULTS, "dim_feedforward", 128)
    d2._detrc_shrunk = True


def build_rfdetr(variant: str, seed: int, resolution: int):
    import rfdetr

    shrink_rfdetr()
    cls_name, cfg = RFDETR[variant]
    cfg = {k: v for k, v in cfg.items() if k not in ("seed", "resolution")}
    cls = getattr(rfdetr, cls_name)
    torch.manual_seed(seed)
    import rfdetr.config

    # RFDETRLarge builds its config in get_model_config, not from _model_config_class.
    cfg_cls = getattr(rfdetr.config, f"{cls_name}Config", cls._model_config_class)
    patch = cfg_cls.model_fields["patch_size"].default
    kw = dict(COMMON, **cfg)
    if not SHRINK[0]:
        kw = {k: v for k, v in kw.items() if k != "dec_layers"}
    model = cls(pretrain_weights=None, device="cpu", resolution=resolution,
                positional_encoding_size=resolution // patch, **kw)
    gen = torch.Generator().manual_seed(seed)
    randomize_nontrivial(model.model.model, gen)
    return model, patch


def export_rfdetr(model, out: Path, dynamic: bool) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="rfdetr_export_"))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            p = model.export(output_dir=str(tmp), verbose=False, dynamic_batch=dynamic,
                             output_name=out.stem)
        shutil.move(str(p), out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def torch_reference(model, x: np.ndarray) -> list[np.ndarray]:
    """What the exported graph computes, from the module rfdetr exported (its export mode)."""
    m = model.model.model
    m.eval()
    if hasattr(m, "export"):
        m.export()
    with torch.no_grad():
        out = m(torch.from_numpy(x))
    if isinstance(out, dict):
        out = list(out.values())
    return [o.numpy() for o in out]


def images(n: int, c: int, h: int, w: int, seed: int = INPUT_SEED) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)


STRICT = [True]


def check_ort(path: Path, ref_fn, batches, shape) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    worst = 0.0
    for b in batches:
        x = images(b, *shape)
        got = sess.run(None, {name: x})
        want = ref_fn(x)
        assert len(got) == len(want), (len(got), len(want))
        for g, w in zip(got, want):
            assert g.shape == w.shape, (path, g.shape, w.shape)
            worst = max(worst, float(np.abs(g - w).max()))
    if worst > 1e-3:
        # Full-size hold-outs: 300 queries of random weights select near-tied proposals
        # (two-stage TopK) that can flip between torch and onnxruntime.
        if STRICT[0]:
            raise SystemExit(f"{path}: onnxruntime differs from torch by {worst}")
        print(f"warning: {path}: onnxruntime differs from torch by {worst}")
    return worst


def lwdetr_model(seed: int, size: int):
    from transformers import LwDetrConfig, LwDetrForObjectDetection, LwDetrViTConfig

    bb = LwDetrViTConfig(hidden_size=48, num_hidden_layers=4, num_attention_heads=2,
                         image_size=size, pretrain_image_size=size, patch_size=16,
                         window_block_indices=[0, 1, 3], out_indices=[2, 4], num_windows=4,
                         mlp_ratio=2)
    cfg = LwDetrConfig(backbone_config=bb, projector_scale_factors=[1.0], d_model=64,
                       decoder_ffn_dim=128, decoder_layers=2, decoder_self_attention_heads=4,
                       decoder_cross_attention_heads=4, decoder_n_points=2, num_queries=30,
                       num_labels=5, c2f_num_blocks=1)
    torch.manual_seed(seed)
    model = LwDetrForObjectDetection(cfg).eval()
    randomize_nontrivial(model, torch.Generator().manual_seed(seed))
    return model


class Outputs(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        o = self.model(pixel_values=pixel_values)
        return o.logits, o.pred_boxes


def export_lwdetr(seed: int, size: int, out: Path) -> tuple[Path, float]:
    wrapped = Outputs(lwdetr_model(seed, size)).eval()
    x = torch.from_numpy(images(2, 3, size, size))
    with torch.no_grad():
        torch.onnx.export(wrapped, (x,), str(out), opset_version=17, dynamo=False,
                          input_names=["pixel_values"], output_names=["logits", "pred_boxes"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"},
                                        "pred_boxes": {0: "batch"}})

    def ref(xs):
        with torch.no_grad():
            return [t.numpy() for t in wrapped(torch.from_numpy(xs))]

    return out, check_ort(out, ref, [1, 2, 3, 4], (3, size, size))


def peers(path: Path) -> dict:
    """What onnx-simplifier and onnxslim leave of the export: the bar detrc's tests hold it to."""
    import onnx

    def counts(m):
        ops = Counter(n.op_type for n in m.graph.node)
        return dict(nodes=len(m.graph.node), Gather=ops["Gather"], Shape=ops["Shape"],
                    Where=ops["Where"])

    out = {}
    try:
        import onnxsim

        with contextlib.redirect_stdout(io.StringIO()):
            m, ok = onnxsim.simplify(onnx.load(str(path)))
        out[f"onnxsim {onnxsim.__version__}"] = counts(m)
    except ImportError:
        pass
    try:
        import onnxslim

        with contextlib.redirect_stdout(io.StringIO()):
            m = onnxslim.slim(onnx.load(str(path)))
        out[f"onnxslim {onnxslim.__version__}"] = counts(m)
    except ImportError:
        pass
    return out


def describe(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path))
    ops = Counter(n.op_type for n in m.graph.node)
    inp = m.graph.input[0]
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    return dict(file=str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
                bytes=path.stat().st_size, opset=m.opset_import[0].version,
                input_name=inp.name, input_shape=dims,
                outputs=[o.name for o in m.graph.output], nodes=len(m.graph.node),
                ops=dict(sorted(ops.items())), peers=peers(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="nano,seg_nano,lwdetr")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--seed", type=int, default=None, help="override every variant's seed")
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--full-size", action="store_true",
                    help="the variant's own backbone and decoder widths (a hold-out export of "
                         "~100 MB; never committed)")
    a = ap.parse_args()
    if a.full_size:
        if a.out == OUT_DIR:
            raise SystemExit("--full-size exports are too large for fixtures/: give --out")
        COMMON.clear()
        COMMON.update(num_classes=5)
        SHRINK[0] = False
        STRICT[0] = False
    from importlib.metadata import version

    rfdetr_version = version("rfdetr")
    if rfdetr_version != REQUIRED_RFDETR and a.out == OUT_DIR:
        raise SystemExit(f"rfdetr {REQUIRED_RFDETR} makes the committed fixtures, "
                         f"found {rfdetr_version}")
    a.out.mkdir(parents=True, exist_ok=True)
    entries = []
    for variant in a.only.split(","):
        if variant == "lwdetr":
            seed, size = a.seed or 31, a.resolution or 128
            p, err = export_lwdetr(seed, size, a.out / "lwdetr_hf_op17_dyn.onnx")
            e = describe(p)
            e.update(kind="transformers LwDetrForObjectDetection", seed=seed, batch="dynamic",
                     traced_batch=2, max_abs_vs_torch=err,
                     config="ViT 48x4 (windowed blocks 0,1,3; 4x4 windows of 2x2 patches), "
                            "d_model 64, 2 decoder layers, 30 queries, 5 labels")
            entries.append(e)
            print(f"{p.name}: {e['bytes']} bytes, {e['nodes']} nodes, |torch-ort| {err:.1e}")
            continue
        seed = a.seed or RFDETR[variant][1]["seed"]
        res = a.resolution or RFDETR[variant][1]["resolution"]
        model, patch = build_rfdetr(variant, seed, res)
        for dynamic in (False, True):
            out = a.out / f"rfdetr_{variant}_{'dyn' if dynamic else 'b1'}.onnx"
            export_rfdetr(model, out, dynamic)
            err = check_ort(out, lambda x: torch_reference(model, x),
                            [1, 2, 3, 4] if dynamic else [1], (3, res, res))
            if a.out == OUT_DIR and out.stat().st_size > MAX_BYTES:
                raise SystemExit(f"{out}: {out.stat().st_size} bytes, over the limit")
            e = describe(out)
            cfg = model.model_config
            e.update(kind=f"rfdetr {RFDETR[variant][0]} export()", seed=seed,
                     batch="dynamic" if dynamic else 1, resolution=res, patch_size=patch,
                     num_windows=cfg.num_windows, max_abs_vs_torch=err,
                     config=f"ViT {VIT['hidden_size']}x{VIT['num_hidden_layers']} "
                            f"(out_feature_indexes {cfg.out_feature_indexes}), hidden_dim "
                            f"{cfg.hidden_dim}, {cfg.dec_layers} decoder layers, "
                            f"{cfg.num_queries} queries, {cfg.num_classes} classes")
            entries.append(e)
            print(f"{out.name}: {e['bytes']} bytes, {e['nodes']} nodes, |torch-ort| {err:.1e}")
    if a.out == OUT_DIR:
        import onnx
        import onnxruntime

        manifest = dict(
            generator="scripts/make_rfdetr_fixtures.py",
            versions=dict(rfdetr=rfdetr_version, torch=torch.__version__,
                          onnx=onnx.__version__, onnxruntime=onnxruntime.__version__),
            input_seed=INPUT_SEED,
            notes=[
                "RF-DETR: rfdetr's own export() (pretrain_weights=None), batch 1 and "
                "dynamic_batch=True; backbone narrowed (ViT width 48, 4 layers, 2 heads), "
                "decoder width 64, feed-forward 128; patch size and window count as the variant",
                "inputs are standard-normal images (seed input_seed), dynamic exports checked "
                "against torch image by image at batch 1-4",
            ],
            fixtures=entries,
        )
        (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
