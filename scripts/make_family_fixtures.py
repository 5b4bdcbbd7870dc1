#!/usr/bin/env python3
"""Generate the DETR-family ONNX fixtures (fixtures/family/) used by detrc's tests and benches.

Two kinds of exports, as users make them:

* Hugging Face `transformers` models (DETR, Conditional DETR, DAB-DETR, Deformable DETR,
  RT-DETR, RT-DETRv2, D-FINE, LW-DETR, RF-DETR, DEIMv2, YOLOS, Table Transformer) built from
  SMALL configurations with seeded random weights: no download (backbone configs from
  transformers itself: ResNetConfig, RTDetrResNetConfig, HGNetV2Config, the LW-DETR ViT,
  RF-DETR's DINOv2 and DINOv3 ViT configs; never timm, never pretrained). Input `pixel_values`, outputs `logits`,
  `pred_boxes`. Exported with the TorchScript exporter (`dynamo=False`) at opsets 16 and 17
  (one with a dynamic batch), and with the dynamo exporter (opset 18, weights as external
  data). Where an exporter cannot export a family (RF-DETR's antialiased bicubic resize has no
  TorchScript translation; DEIMv2's `torch.all` check none in the dynamo exporter), the
  manifest's `not_exported` says so with the exporter's reason.
* The official RT-DETRv2 (lyuwenyu/RT-DETR), D-FINE (Peterande/D-FINE), DEIM
  (ShihuaHuang95/DEIM) and DEIMv2 (Intellindust-AI-Lab/DEIMv2) export scripts, run from a
  temporary checkout (`--official-root`, see `official()`), never committed.

Every bias, norm affine and batch-norm running statistic gets a non-trivial seeded value, so no
`x*1` / `x+0` becomes removable by accident. Each export is checked against torch under
onnxruntime (Deformable DETR, whose sampling grid is float64 and which onnxruntime cannot run,
through a copy with its GridSample grids cast to float).

Usage:
    python scripts/make_family_fixtures.py                  # all transformers fixtures
    python scripts/make_family_fixtures.py --only detr,rtdetr
    python scripts/make_family_fixtures.py --official-root /tmp/official   # + official exports
    python scripts/make_family_fixtures.py --family dfine --opset 17 --batch 2 \\
        --size 192 160 --seed 7 --out /tmp/x.onnx           # one hold-out export
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from family_compare import grid_cast_copy  # noqa: E402

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "fixtures" / "family"
INPUT_SEED = 424242
MAX_BYTES = 3 * 1024 * 1024

# --------------------------------------------------------------------------------------------
# Small configurations. Sizes are chosen so each ONNX stays well under 3 MB.
# --------------------------------------------------------------------------------------------
FAMILIES = {
    "detr": dict(arch="DetrForObjectDetection", size=(128, 160), seed=11),
    "conditional_detr": dict(arch="ConditionalDetrForObjectDetection", size=(128, 160), seed=12),
    "dab_detr": dict(arch="DabDetrForObjectDetection", size=(128, 160), seed=13),
    "deformable_detr": dict(arch="DeformableDetrForObjectDetection", size=(128, 160), seed=14),
    "deformable_detr_refine": dict(arch="DeformableDetrForObjectDetection", size=(128, 160),
                                   seed=15, refine=True),
    "rtdetr": dict(arch="RTDetrForObjectDetection", size=(160, 192), seed=16),
    "rtdetr_v2": dict(arch="RTDetrV2ForObjectDetection", size=(160, 192), seed=17),
    "dfine": dict(arch="DFineForObjectDetection", size=(160, 192), seed=18),
    # The newer families (issue 24). Their position embeddings, class/detection tokens and layer
    # scales are parameters of their own (not Linear/Conv/norm): `all_params` perturbs those too
    # (and their dynamo exports lose the per-node stack traces, to stay small).
    # LW-DETR: ViT with windowed blocks (2x2 windows folded into the batch axis), its absolute
    # position embeddings resized bicubic from a 4x4 pretraining grid to the 6x8 input grid;
    # two projector levels, 2x up (ConvTranspose) and 2x down, as LW-DETR's large models.
    "lw_detr": dict(arch="LwDetrForObjectDetection", size=(96, 128), seed=19, all_params=True),
    # RF-DETR: DINOv2 backbone, windowed; position embeddings resized bicubic with antialias,
    # which only the dynamo exporter can write (TorchScript has no aten::_upsample_bicubic2d_aa).
    "rf_detr": dict(arch="RfDetrForObjectDetection", size=(96, 128), seed=20, all_params=True),
    # DEIMv2 with its DINOv3 backbone (RoPE, register tokens) and spatial tuning adapter.
    "deimv2": dict(arch="Deimv2ForObjectDetection", size=(96, 128), seed=21, all_params=True),
    # YOLOS: plain ViT; the position embeddings (initial and per layer) resized bicubic from the
    # 4x6 configured grid to the 6x8 input grid. Softmax classes with a no-object class.
    "yolos": dict(arch="YolosForObjectDetection", size=(96, 128), seed=22, all_params=True),
    "table_transformer": dict(arch="TableTransformerForObjectDetection", size=(96, 128), seed=23,
                              all_params=True),
}

# (opset, batch, exporter); batch None = dynamic batch axis.
VARIANTS = [(16, 1, "torchscript"), (17, 1, "torchscript"), (17, None, "torchscript"),
            (18, 1, "dynamo")]


def resnet_cfg(cls, out_features, **kw):
    return cls(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
               layer_type="basic", out_features=out_features, **kw)


def make_config(family: str, width: int = 32, layers: int = 3, queries: int = 10,
                labels: int = 5):
    import transformers as T

    common_detr = dict(
        d_model=width, encoder_layers=1, decoder_layers=layers, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=2 * width, decoder_ffn_dim=2 * width,
        num_queries=queries, num_labels=labels, dropout=0.0,
    )
    if family == "detr":
        return T.DetrConfig(backbone_config=resnet_cfg(T.ResNetConfig, ["stage4"]),
                            use_timm_backbone=False, use_pretrained_backbone=False,
                            **common_detr)
    if family == "conditional_detr":
        return T.ConditionalDetrConfig(
            backbone_config=resnet_cfg(T.ResNetConfig, ["stage4"]), use_timm_backbone=False,
            use_pretrained_backbone=False, **common_detr)
    if family == "dab_detr":
        c = dict(common_detr)
        c["hidden_size"] = c.pop("d_model")
        return T.DabDetrConfig(backbone_config=resnet_cfg(T.ResNetConfig, ["stage4"]),
                               use_timm_backbone=False, use_pretrained_backbone=False, **c)
    if family.startswith("deformable_detr"):
        refine = family.endswith("refine")
        return T.DeformableDetrConfig(
            backbone_config=resnet_cfg(T.ResNetConfig, ["stage2", "stage3", "stage4"]),
            use_timm_backbone=False, use_pretrained_backbone=False, num_feature_levels=4,
            encoder_n_points=2, decoder_n_points=2, with_box_refine=refine, two_stage=refine,
            two_stage_num_proposals=queries, disable_custom_kernels=True, **common_detr)
    rt = dict(
        d_model=width, encoder_hidden_dim=width, encoder_in_channels=[16, 32, 64],
        decoder_in_channels=[width] * 3, encoder_ffn_dim=2 * width, decoder_ffn_dim=2 * width,
        encoder_attention_heads=2, decoder_attention_heads=2, decoder_layers=layers,
        num_queries=queries, num_labels=labels, decoder_n_points=2, hidden_expansion=0.5,
    )
    if family == "rtdetr":
        return T.RTDetrConfig(
            backbone_config=resnet_cfg(T.RTDetrResNetConfig, ["stage2", "stage3", "stage4"]),
            **rt)
    if family == "rtdetr_v2":
        return T.RTDetrV2Config(
            backbone_config=resnet_cfg(T.RTDetrResNetConfig, ["stage2", "stage3", "stage4"]),
            **rt)
    if family == "dfine":
        bb = T.HGNetV2Config(
            embedding_size=8, stem_channels=[3, 8, 8], stage_in_channels=[8, 16, 16, 32],
            stage_mid_channels=[8, 8, 16, 16], stage_out_channels=[16, 16, 32, 64],
            stage_num_blocks=[1, 1, 1, 1], stage_numb_of_layers=[2, 2, 2, 2],
            hidden_sizes=[16, 16, 32, 64], depths=[1, 1, 1, 1],
            out_features=["stage2", "stage3", "stage4"])
        rt["encoder_in_channels"] = [16, 32, 64]
        return T.DFineConfig(backbone_config=bb, lqe_hidden_dim=16, max_num_bins=8,
                             head_dim=width // 2, **rt)
    return newgen_config(family, width, layers, queries, labels)


def newgen_config(family: str, width: int, layers: int, queries: int, labels: int):
    """LW-DETR, RF-DETR, DEIMv2, YOLOS, Table Transformer: 16-wide ViT backbones of a few
    blocks, `width`-wide decoders."""
    import transformers as T

    decoder = dict(d_model=width, decoder_ffn_dim=2 * width, decoder_n_points=2,
                   decoder_layers=layers, num_queries=queries, num_labels=labels)
    if family == "lw_detr":
        bb = T.LwDetrViTConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                               mlp_ratio=2, image_size=128, pretrain_image_size=64, patch_size=16,
                               window_block_indices=[0, 2], out_indices=[2, 4], num_windows=4)
        return T.LwDetrConfig(backbone_config=bb, projector_scale_factors=[2.0, 0.5],
                              c2f_num_blocks=1,
                              decoder_self_attention_heads=2, decoder_cross_attention_heads=2,
                              group_detr=1, **decoder)
    if family == "rf_detr":
        bb = T.RfDetrDinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                  mlp_ratio=2, image_size=64, patch_size=16, num_windows=2,
                                  out_features=["stage2", "stage4"])
        return T.RfDetrConfig(backbone_config=bb, c2f_num_blocks=1, decoder_self_attention_heads=2,
                              decoder_cross_attention_heads=2, group_detr=1, dropout=0.0,
                              **decoder)
    if family == "deimv2":
        bb = T.DINOv3ViTConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                               num_attention_heads=2, patch_size=16, image_size=128,
                               out_indices=[1, 2, 3], num_register_tokens=2)
        return T.Deimv2Config(
            backbone_config=bb, encoder_hidden_dim=width, encoder_in_channels=[width] * 3,
            decoder_in_channels=[width] * 3, encoder_ffn_dim=2 * width, encoder_attention_heads=2,
            decoder_attention_heads=2, hidden_expansion=0.5, lqe_hidden_dim=16, max_num_bins=8,
            depth_mult=0.34, spatial_tuning_adapter_inplanes=8, **decoder)
    if family == "yolos":
        return T.YolosConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                             intermediate_size=32, image_size=[64, 96], patch_size=16,
                             num_detection_tokens=queries, num_labels=labels)
    if family == "table_transformer":
        return T.TableTransformerConfig(
            backbone_config=resnet_cfg(T.ResNetConfig, ["stage4"]), use_timm_backbone=False,
            use_pretrained_backbone=False, d_model=width, encoder_layers=1, decoder_layers=layers,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * width,
            decoder_ffn_dim=2 * width, num_queries=queries, num_labels=labels, dropout=0.0)
    raise SystemExit(f"unknown family {family}")


def randomize_nontrivial(model: nn.Module, gen: torch.Generator, all_params=False) -> None:
    """Every bias, norm affine and running statistic gets a seeded, non-trivial value; with
    `all_params`, so does every other parameter still at a constant initial value (zero
    position embeddings and tokens, layer scales of 1)."""

    def uni(t, lo=0.5, hi=1.5):
        t.copy_(torch.rand(t.shape, generator=gen, dtype=torch.float32).to(t.dtype) * (hi - lo)
                + lo)

    def nrm(t, std=0.2):  # noqa: E306
        t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.dtype) * std)

    with torch.no_grad():
        for m in model.modules():
            name = type(m).__name__
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) or \
                    "FrozenBatchNorm" in name:
                if getattr(m, "weight", None) is not None:
                    uni(m.weight)
                if getattr(m, "bias", None) is not None:
                    nrm(m.bias)
                if getattr(m, "running_mean", None) is not None:
                    nrm(m.running_mean)
                    uni(m.running_var)
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                # transformers initialises RT-DETR/D-FINE with std 0.01: features shrink to
                # nothing, the encoder scores become near-ties and the query selection (TopK)
                # of the export flips between runtimes. Unit-gain weights keep them apart.
                fan_in = m.weight[0].numel()
                nrm(m.weight, std=fan_in ** -0.5)
                if m.bias is not None:
                    nrm(m.bias)
            elif isinstance(m, nn.MultiheadAttention) and m.in_proj_bias is not None:
                nrm(m.in_proj_bias)
        if all_params:
            for _, p in model.named_parameters():
                flat = p.detach().flatten()
                if flat.numel() > 0 and bool((flat == flat[0]).all()):
                    (uni if float(flat[0]) != 0.0 else nrm)(p)


class Outputs(nn.Module):
    """`pixel_values -> (logits, pred_boxes)`, what optimum and most users export."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values)
        return out.logits, out.pred_boxes


def build(family: str, seed: int, **cfg_kw) -> nn.Module:
    import transformers as T

    torch.manual_seed(seed)
    arch = FAMILIES[family]["arch"]
    cfg = make_config(family, **cfg_kw)
    model = getattr(T, arch)(cfg)
    randomize_nontrivial(model, torch.Generator().manual_seed(seed + 1000),
                         all_params=FAMILIES[family].get("all_params", False))
    model.eval()
    return Outputs(model).eval()


def make_input(batch: int, size, seed: int = INPUT_SEED) -> torch.Tensor:
    return torch.randn((batch, 3, *size), generator=torch.Generator().manual_seed(seed))


def export(model, x, path: Path, opset: int, exporter: str, dynamic: bool,
           names=("pixel_values",), outs=("logits", "pred_boxes"), optimize=True,
           strip_metadata=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_name(path.name + ".data")):
        if p.exists():
            p.unlink()
    args = x if isinstance(x, tuple) else (x,)
    with torch.no_grad():
        if exporter == "dynamo":
            kw = {}
            if dynamic:
                kw["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=64)},)
            prog = torch.onnx.export(model, args, dynamo=True, opset_version=opset,
                                     input_names=list(names), output_names=list(outs),
                                     optimize=optimize, **kw)
            prog.save(str(path), external_data=True)
            if strip_metadata:
                strip_node_metadata(path)
        else:
            kw = {}
            if dynamic:
                kw["dynamic_axes"] = {n: {0: "batch"} for n in list(names) + list(outs)}
            torch.onnx.export(model, args, str(path), opset_version=opset, dynamo=False,
                              input_names=list(names), output_names=list(outs), **kw)


def strip_node_metadata(path: Path) -> None:
    """Drops the dynamo exporter's per-node metadata (each node's Python stack trace: most of
    a small model's file); the graph is unchanged."""
    import onnx

    m = onnx.load(str(path))
    for n in m.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save(m, str(path), save_as_external_data=True, location=data.name, size_threshold=1024)


def ort_run(model_or_path, feeds: dict):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = model_or_path if isinstance(model_or_path, (str, bytes)) else \
        model_or_path.SerializeToString()
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    return [o.name for o in sess.get_outputs()], sess.run(None, feeds)


def check(path: Path, feeds: dict, ref: list, atol=1e-4) -> dict:
    """onnx checker, then onnxruntime against torch; the grid-cast copy if ORT cannot run it."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    m = onnx.load(str(path))
    how = "onnxruntime"
    try:
        _, got = ort_run(str(path), feeds)
    except Exception as e:  # noqa: BLE001 - ORT's NOT_IMPLEMENTED for double grids
        mc, n = grid_cast_copy(m)
        if n == 0:
            raise
        how = f"onnxruntime on a copy with {n} GridSample grids cast to float " \
              f"(original does not run: {str(e).splitlines()[0][:120]})"
        _, got = ort_run(mc, feeds)
    diffs = []
    for o, r in zip(got, ref):
        r = r.detach().numpy()
        if o.shape != r.shape:
            raise SystemExit(f"{path.name}: shape {o.shape} != torch {r.shape}")
        d = float(np.abs(o.astype(np.float64) - r.astype(np.float64)).max())
        if not np.isfinite(o).all() or d > atol * max(1.0, float(np.abs(r).max())):
            raise SystemExit(f"{path.name}: ORT vs torch max abs diff {d}")
        diffs.append(d)
    return {"nodes": len(m.graph.node), "ops": Counter(n.op_type for n in m.graph.node),
            "checked_with": how, "max_abs_diff_vs_torch": diffs,
            "opset": next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))}


def runs_at_batch(model, path: Path, size, batch: int) -> bool:
    """Whether a dynamic-batch export (traced at batch 2) still matches torch at another
    batch: exporters bake traced sizes into Reshape targets, and then it does not."""
    x = make_input(batch, size, seed=INPUT_SEED + batch)
    with torch.no_grad():
        ref = list(model(x))
    try:
        check(path, {"pixel_values": x.numpy()}, ref)
        return True
    except (Exception, SystemExit):  # noqa: BLE001 - a failure is the answer
        return False


def file_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def fixture_name(family: str, opset: int, batch, exporter: str) -> str:
    b = "dyn" if batch is None else f"b{batch}"
    ex = "_dynamo" if exporter == "dynamo" else ""
    return f"{family}_op{opset}{ex}_{b}.onnx"


# Exports an exporter cannot make (written into the manifest's `not_exported`, with the reason).
NOT_EXPORTED: list = []


def export_failure(e: Exception) -> str:
    """The exporter's own reason, without its advice text: the innermost error's first line
    for the dynamo exporter (its ConversionError wraps the op it has no translation for)."""
    inner = e
    while inner.__cause__ is not None:
        inner = inner.__cause__
    lines = [ln for ln in str(inner).splitlines() if ln.strip()]
    return f"{type(inner).__name__}: {lines[0][:300] if lines else ''}"


def make_transformers(only: list[str] | None, entries: list) -> None:
    for fam, spec in FAMILIES.items():
        if only and fam not in only:
            continue
        model = build(fam, spec["seed"])
        for opset, batch, exporter in VARIANTS:
            path = OUT_DIR / fixture_name(fam, opset, batch, exporter)
            x = make_input(batch or 2, spec["size"])
            with torch.no_grad():
                ref = list(model(x))
            t0 = time.perf_counter()
            try:
                export(model, x, path, opset, exporter, dynamic=batch is None,
                       strip_metadata=spec.get("all_params", False))
            except Exception as e:  # noqa: BLE001 - record and go on with the other exports
                why = export_failure(e)
                print(f"{path.name}: export FAILED: {why}", flush=True)
                NOT_EXPORTED.append(dict(file=f"fixtures/family/{path.name}", family=fam,
                                         exporter=exporter, opset=opset,
                                         batch=batch if batch else "dynamic", reason=why))
                continue
            dt = time.perf_counter() - t0
            optimized = exporter == "dynamo"
            try:
                info = check(path, {"pixel_values": x.numpy()}, ref)
            except Exception as e:  # noqa: BLE001
                if exporter != "dynamo":
                    raise
                # torch's ONNX optimizer has left some graphs out of topological order;
                # the unoptimized export is what such a user ends up with.
                print(f"{path.name}: optimized dynamo export invalid ({str(e)[:120]}), "
                      "exporting with optimize=False", flush=True)
                export(model, x, path, opset, exporter, dynamic=batch is None, optimize=False,
                       strip_metadata=spec.get("all_params", False))
                optimized = False
                if file_bytes(path) > MAX_BYTES:
                    print(f"{path.name}: unoptimized export is {file_bytes(path)} bytes, "
                          "too large to commit: skipped", flush=True)
                    for p in (path, path.with_name(path.name + ".data")):
                        p.unlink(missing_ok=True)
                    continue
                info = check(path, {"pixel_values": x.numpy()}, ref)
            size = file_bytes(path)
            if size > MAX_BYTES:
                raise SystemExit(f"{path.name}: {size} bytes > {MAX_BYTES}")
            other_batch = runs_at_batch(model, path, spec["size"], 3) if batch is None else None
            print(f"{path.name}: {size} B, {info['nodes']} nodes, export {dt:.1f}s, "
                  f"{info['checked_with'][:40]}, diff {max(info['max_abs_diff_vs_torch']):.1e}",
                  flush=True)
            entries.append(dict(
                file=f"fixtures/family/{path.name}",
                external_data=(f"fixtures/family/{path.name}.data"
                               if path.with_name(path.name + ".data").exists() else None),
                family=fam, architecture=spec["arch"], source="transformers",
                exporter=exporter + ((f" (torch.onnx.export dynamo=True, optimize={optimized}"
                                      + (", node metadata (stack traces) stripped)"
                                         if spec.get("all_params") else ")"))
                                     if exporter == "dynamo"
                                     else " (torch.onnx.export dynamo=False)"),
                opset=info["opset"], batch=batch if batch else "dynamic",
                inputs={"pixel_values": [batch or "batch", 3, *spec["size"]]},
                outputs=["logits", "pred_boxes"], seed=spec["seed"], config=config_summary(fam),
                nodes=info["nodes"], size_bytes=size, checked_with=info["checked_with"],
                max_abs_diff_vs_torch=info["max_abs_diff_vs_torch"],
                **({} if other_batch is None else {"matches_torch_at_batch_3": other_batch}),
                how=f"scripts/make_family_fixtures.py --only {fam}",
            ))


def config_summary(fam: str) -> dict:
    c = make_config(fam).to_dict()
    keep = ("d_model", "hidden_size", "encoder_layers", "decoder_layers", "num_queries",
            "num_feature_levels", "with_box_refine", "two_stage", "encoder_hidden_dim",
            "decoder_n_points", "num_hidden_layers", "num_detection_tokens", "image_size",
            "projector_scale_factors")
    out = {k: c[k] for k in keep if k in c}
    bb = c.get("backbone_config") or {}
    if bb.get("model_type") in ("lw_detr_vit", "rf_detr_dinov2", "dinov3_vit"):
        out["backbone"] = {k: bb[k] for k in ("model_type", "hidden_size", "num_hidden_layers",
                                              "patch_size", "num_windows", "window_block_indices",
                                              "image_size", "pretrain_image_size",
                                              "num_register_tokens") if k in bb}
    out["num_labels"] = len(c.get("id2label", {}))
    return out


# --------------------------------------------------------------------------------------------
# Official export scripts (RT-DETRv2, D-FINE), run from a temporary checkout.
# --------------------------------------------------------------------------------------------
def official(root: Path, entries: list, only: list[str] | None = None) -> None:
    """Runs `official_export.py` (next to this script) in the checkouts under `root`:
    root/RT-DETR (lyuwenyu/RT-DETR), root/D-FINE (Peterande/D-FINE), root/DEIM
    (ShihuaHuang95/DEIM) and root/DEIMv2 (Intellindust-AI-Lab/DEIMv2); with `only`, the
    exports whose names are listed."""
    helper = Path(__file__).with_name("official_export.py")
    jobs = [
        ("rtdetrv2_official", root / "RT-DETR" / "rtdetrv2_pytorch", "rtdetrv2", False),
        ("dfine_official_raw", root / "D-FINE", "dfine", False),
        ("dfine_official_simplified", root / "D-FINE", "dfine", True),
        ("deim_official", root / "DEIM", "deim", False),
        ("deimv2_official", root / "DEIMv2", "deimv2", False),
    ]
    for name, repo, kind, simplify in jobs:
        if only and name not in only:
            continue
        out = OUT_DIR / f"{name}.onnx"
        cmd = [sys.executable, str(helper), "--repo", str(repo), "--kind", kind, "--out",
               str(out)] + (["--simplify"] if simplify else [])
        print("+", " ".join(cmd), flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stdout[-2000:], res.stderr[-4000:])
            print(f"{name}: FAILED", flush=True)
            continue
        meta = json.loads(res.stdout.strip().splitlines()[-1])
        import onnx
        m = onnx.load(str(out))
        size = file_bytes(out)
        if size > MAX_BYTES:
            raise SystemExit(f"{out.name}: {size} bytes > {MAX_BYTES}")
        print(f"{out.name}: {size} B, {len(m.graph.node)} nodes", flush=True)
        entries.append(dict(
            file=f"fixtures/family/{out.name}",
            external_data=(f"fixtures/family/{out.name}.data"
                           if out.with_name(out.name + ".data").exists() else None),
            family=name, architecture=meta["architecture"], source=meta["source"],
            exporter=meta["exporter"],
            opset=next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
            batch="dynamic", inputs=meta["inputs"], outputs=["labels", "boxes", "scores"],
            seed=meta["seed"], config=meta["config"], nodes=len(m.graph.node), size_bytes=size,
            checked_with=meta["checked_with"], how=meta["how"],
        ))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated families (default: all)")
    ap.add_argument("--official-root", type=Path,
                    help="folder with RT-DETR/, D-FINE/, DEIM/ and DEIMv2/ checkouts: also make "
                    "official exports (--only names them: rtdetrv2_official, deim_official, ...)")
    ap.add_argument("--official-only", action="store_true")
    ap.add_argument("--family", help="one export: family name")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--batch", type=int, default=1, help="0 = dynamic")
    ap.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"])
    ap.add_argument("--size", type=int, nargs=2)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--labels", type=int, default=5)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    if a.family:
        spec = FAMILIES[a.family]
        size = tuple(a.size) if a.size else spec["size"]
        model = build(a.family, a.seed if a.seed is not None else spec["seed"], width=a.width,
                      layers=a.layers, queries=a.queries, labels=a.labels)
        x = make_input(a.batch or 2, size)
        with torch.no_grad():
            ref = list(model(x))
        out = a.out or Path(f"/tmp/{a.family}.onnx")
        export(model, x, out, a.opset, a.exporter, dynamic=a.batch == 0)
        info = check(out, {"pixel_values": x.numpy()}, ref)
        print(f"{out}: {file_bytes(out)} B, {info['nodes']} nodes, {info['checked_with']}")
        return

    import onnx
    import onnxruntime
    import transformers

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    man_path = OUT_DIR / "manifest.json"
    old = json.loads(man_path.read_text())["fixtures"] if man_path.exists() else []
    entries: list = []
    only = a.only.split(",") if a.only else None
    if not a.official_only:
        make_transformers(only, entries)
    if a.official_root:
        official(a.official_root, entries, only)
    made = {e["file"] for e in entries}
    tried = made | {e["file"] for e in NOT_EXPORTED}
    old_skipped = json.loads(man_path.read_text()).get("not_exported", []) \
        if man_path.exists() else []
    not_exported = sorted([e for e in old_skipped if e["file"] not in tried] + NOT_EXPORTED,
                          key=lambda e: e["file"])
    # Keep the entries of fixtures not regenerated this time (--only, --official-only).
    fixtures = [e for e in old if e["file"] not in made and (ROOT / e["file"]).exists()]
    fixtures = sorted(fixtures + entries, key=lambda e: e["file"])
    manifest = {
        "generator": "scripts/make_family_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "input_seed": INPUT_SEED,
        "notes": [
            "transformers models: small configs, seeded random weights, every bias / norm "
            "affine / running stat randomized; pixel_values only (transformers makes the "
            "all-ones pixel_mask inside the graph)",
            "batch 'dynamic': batch axis named 'batch' on input and outputs",
            "checked_with: how the export was compared against torch (atol 1e-4 relative to "
            "the output's magnitude)",
            "not_exported: variants an exporter cannot make, with the exporter's reason (no "
            "fixture is made in their place): RF-DETR only through the dynamo exporter "
            "(TorchScript has no aten::_upsample_bicubic2d_aa), DEIMv2 only through TorchScript "
            "(the dynamo exporter has no aten::_is_all_true)",
        ],
        "fixtures": fixtures,
        "not_exported": not_exported,
    }
    man_path.write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(file_bytes(ROOT / e["file"]) for e in fixtures)
    print(f"{len(fixtures)} fixtures, {total / 1e6:.1f} MB in {OUT_DIR.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
