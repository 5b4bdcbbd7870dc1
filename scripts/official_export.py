#!/usr/bin/env python3
"""Run an official DETR export script (RT-DETRv2, D-FINE, DEIM, DEIMv2) on a small
random-weight model.

Called by scripts/make_family_fixtures.py (--official-root); usable alone:

    python scripts/official_export.py --repo /tmp/official/RT-DETR/rtdetrv2_pytorch \\
        --kind rtdetrv2 --out /tmp/rtdetrv2.onnx
    python scripts/official_export.py --repo /tmp/official/D-FINE --kind dfine \\
        --out /tmp/dfine.onnx [--simplify]
    python scripts/official_export.py --repo /tmp/official/DEIM --kind deim --out /tmp/deim.onnx
    python scripts/official_export.py --repo /tmp/official/DEIMv2 --kind deimv2 \\
        --out /tmp/deimv2.onnx          # DINOv3 backbone; --kind deimv2_hgnet: Atto-style

`--repo` is a checkout of lyuwenyu/RT-DETR (its rtdetrv2_pytorch/ folder), Peterande/D-FINE,
ShihuaHuang95/DEIM or Intellindust-AI-Lab/DEIMv2; nothing from it is copied here. What this
does, in the checkout's own code:

1. A small YAML config that includes the official one (rtdetrv2_hgnetv2_l_6x_coco.yml,
   dfine_hgnetv2_n_coco.yml, deim_hgnetv2_n_coco.yml, deimv2_dinov3_s_coco.yml,
   deimv2_hgnetv2_atto_coco.yml) and overrides widths, layer and query counts; the HGNetv2
   backbone's `arch_configs` entry is replaced in-process by a tiny one (the config cannot
   change the backbone's widths), `pretrained: False`.
2. The model is built from it with the repository's YAMLConfig, every bias, norm affine and
   running statistic is randomized (seeded), and its state dict saved as a checkpoint.
3. The repository's own export script (`tools/export_onnx.py`, `tools/deployment/export_onnx.py`)
   runs its `main()` with `--resume` on that checkpoint: the deploy-mode model + postprocessor
   (TopK inside), inputs `images`, `orig_target_sizes`, dynamic N, torch's default exporter
   (the dynamo exporter from torch 2.9: opset 18 whatever the script asks, as its users get).
   D-FINE's script simplifies with onnx-simplifier unless told not to (`--simplify`: as
   shipped).
4. onnxruntime runs the export and is compared with the torch model as sets of detections.

Prints one JSON line describing the export (read by make_family_fixtures.py).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from family_compare import detections_match  # noqa: E402
from make_family_fixtures import randomize_nontrivial  # noqa: E402

SEED = 31
INPUT_SEED = 424242

TINY_HGNET = {
    "stem_channels": [3, 8, 8],
    "stage_config": {
        # in, mid, out, blocks, downsample, light_block, kernel, layers
        "stage1": [8, 8, 16, 1, False, False, 3, 2],
        "stage2": [16, 8, 32, 1, True, False, 3, 2],
        "stage3": [32, 16, 64, 1, True, True, 5, 2],
        "stage4": [64, 16, 64, 1, True, True, 5, 2],
    },
    "url": "",
}

CONFIGS = {
    "rtdetrv2": dict(
        package="src",
        base="configs/rtdetrv2/rtdetrv2_hgnetv2_l_6x_coco.yml",
        export="tools/export_onnx.py",
        backbone_name="L",
        input_size=320,
        yaml="""
HGNetv2: {{name: 'L', return_idx: [1, 2, 3], freeze_at: -1, freeze_norm: True, pretrained: False}}
HybridEncoder: {{in_channels: [32, 64, 64], hidden_dim: 32, dim_feedforward: 64, nhead: 2,
                expansion: 0.5, depth_mult: 0.34}}
RTDETRTransformerv2: {{feat_channels: [32, 32, 32], hidden_dim: 32, num_layers: 3,
                      num_queries: 20, dim_feedforward: 64, nhead: 2, num_points: [2, 2, 2]}}
RTDETRPostProcessor: {{num_top_queries: 20}}
num_classes: 7
eval_spatial_size: [{s}, {s}]
""",
    ),
    "dfine": dict(
        package="src",
        base="configs/dfine/dfine_hgnetv2_n_coco.yml",
        export="tools/deployment/export_onnx.py",
        backbone_name="B0",
        input_size=640,  # D-FINE's export script fixes 640x640
        yaml="""
HGNetv2: {{name: 'B0', return_idx: [2, 3], freeze_at: -1, freeze_norm: False, use_lab: True,
          pretrained: False}}
HybridEncoder: {{in_channels: [64, 64], hidden_dim: 32, dim_feedforward: 64, nhead: 2,
                expansion: 0.34, depth_mult: 0.34}}
DFINETransformer: {{feat_channels: [32, 32], hidden_dim: 32, num_layers: 3, num_queries: 20,
                   dim_feedforward: 64, nhead: 2, num_points: [3, 3], reg_max: 8}}
DFINEPostProcessor: {{num_top_queries: 20}}
DFINECriterion: {{reg_max: 8}}
num_classes: 7
eval_spatial_size: [{s}, {s}]
""",
    ),
    # DEIM (ShihuaHuang95/DEIM): D-FINE's model trained the DEIM way; its package is `engine`,
    # its export script fixes 640x640 and opset 16 like D-FINE's.
    "deim": dict(
        package="engine",
        base="configs/deim_dfine/deim_hgnetv2_n_coco.yml",
        export="tools/deployment/export_onnx.py",
        backbone_name="B0",
        input_size=640,
        yaml="""
HGNetv2: {{name: 'B0', return_idx: [2, 3], freeze_at: -1, freeze_norm: False, use_lab: True,
          pretrained: False}}
HybridEncoder: {{in_channels: [64, 64], hidden_dim: 32, dim_feedforward: 64, nhead: 2,
                expansion: 0.34, depth_mult: 0.34}}
DFINETransformer: {{feat_channels: [32, 32], hidden_dim: 32, num_layers: 3, num_queries: 20,
                   dim_feedforward: 64, nhead: 2, num_points: [3, 3], reg_max: 8}}
PostProcessor: {{num_top_queries: 20}}
DEIMCriterion: {{reg_max: 8}}
num_classes: 7
eval_spatial_size: [{s}, {s}]
""",
    ),
    # DEIMv2's smallest models (Atto/Femto/Pico): HGNetv2 backbone, one backbone level into its
    # LiteEncoder (no attention), two decoder levels, a shared box head.
    "deimv2_hgnet": dict(
        package="engine",
        base="configs/deimv2/deimv2_hgnetv2_atto_coco.yml",
        export="tools/deployment/export_onnx.py",
        backbone_name="Atto",
        input_size=256,
        yaml="""
HGNetv2: {{name: 'Atto', return_idx: [2], freeze_at: -1, freeze_norm: False, use_lab: True,
          pretrained: False}}
LiteEncoder: {{in_channels: [64], feat_strides: [16], hidden_dim: 32, expansion: 0.34,
              depth_mult: 0.5}}
DEIMTransformer: {{feat_channels: [32, 32], feat_strides: [16, 32], hidden_dim: 32,
                  num_levels: 2, num_layers: 3, num_queries: 20, dim_feedforward: 48, nhead: 2,
                  num_points: [3, 2], reg_max: 8, share_bbox_head: True, use_gateway: False}}
PostProcessor: {{num_top_queries: 20}}
DEIMCriterion: {{reg_max: 8}}
num_classes: 7
eval_spatial_size: [{s}, {s}]
""",
    ),
    # DEIMv2 (Intellindust-AI-Lab/DEIMv2) with its DINOv3 backbone: the S config's ViT-Tiny
    # path (DINOv3STAs: RoPE ViT + spatial tuning adapter) at width 16; its 12 blocks are fixed
    # by the code. No `weights_path` file: built "from scratch", no download. Its export
    # script takes the input size from the config and the opset from the command line (17).
    "deimv2": dict(
        package="engine",
        base="configs/deimv2/deimv2_dinov3_s_coco.yml",
        export="tools/deployment/export_onnx.py",
        backbone_name=None,
        input_size=256,
        strip_node_metadata=True,
        yaml="""
DINOv3STAs: {{name: vit_tiny, embed_dim: 16, num_heads: 2, interaction_indexes: [3, 7, 11],
             weights_path: null, conv_inplane: 8, hidden_dim: 32}}
HybridEncoder: {{in_channels: [32, 32, 32], hidden_dim: 32, dim_feedforward: 64, nhead: 2,
                expansion: 0.34, depth_mult: 0.34}}
DEIMTransformer: {{feat_channels: [32, 32, 32], hidden_dim: 32, num_layers: 3, num_queries: 20,
                  dim_feedforward: 64, nhead: 2, num_points: [2, 2, 2], reg_max: 8}}
PostProcessor: {{num_top_queries: 20}}
DEIMCriterion: {{reg_max: 8}}
num_classes: 7
eval_spatial_size: [{s}, {s}]
""",
    ),
}


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--kind", choices=sorted(CONFIGS), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--simplify", action="store_true", help="D-FINE: simplify as it ships")
    a = ap.parse_args()
    spec = CONFIGS[a.kind]
    repo = a.repo.resolve()
    out = a.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    os.chdir(repo)
    sys.path.insert(0, str(repo))

    # The checkout's own modules (package `src` in RT-DETR / D-FINE, `engine` in DEIM /
    # DEIMv2). The HGNetv2 widths live in a class table, not the config.
    pkg = spec["package"]
    YAMLConfig = importlib.import_module(f"{pkg}.core").YAMLConfig  # noqa: N806
    if spec["backbone_name"]:
        hg = importlib.import_module(f"{pkg}.nn.backbone.hgnetv2" if pkg == "src"
                                     else f"{pkg}.backbone.hgnetv2")
        hg.HGNetv2.arch_configs[spec["backbone_name"]] = TINY_HGNET

    tmp = Path(tempfile.mkdtemp(prefix="detrc_official_"))
    cfg_path = tmp / f"{a.kind}_tiny.yml"
    cfg_path.write_text(f"__include__: ['{repo / spec['base']}']\n"
                        + spec["yaml"].format(s=spec["input_size"]))
    torch.manual_seed(SEED)
    cfg = YAMLConfig(str(cfg_path))
    model = cfg.model
    randomize_nontrivial(model, torch.Generator().manual_seed(SEED + 1000))
    ckpt = out.with_suffix(".pth")
    torch.save({"model": model.state_dict()}, ckpt)

    # Their export script, unchanged, through its main().
    for p in (out, out.with_name(out.name + ".data")):
        if p.exists():
            p.unlink()
    exp = load_module(repo / spec["export"], f"official_export_{a.kind}")
    if a.kind == "rtdetrv2":
        args = argparse.Namespace(config=str(cfg_path), resume=str(ckpt), output_file=str(out),
                                  input_size=spec["input_size"], check=True, simplify=False,
                                  update=None)
    elif a.kind.startswith("deimv2"):
        args = argparse.Namespace(config=str(cfg_path), resume=str(ckpt), check=True,
                                  simplify=a.simplify, opset=17)
    else:
        args = argparse.Namespace(config=str(cfg_path), resume=str(ckpt), check=True,
                                  simplify=a.simplify)
    exp.main(args)
    ckpt.unlink()
    if not out.exists():
        raise SystemExit(f"the export script did not write {out}")

    import onnx
    data = out.with_name(out.name + ".data")
    if spec.get("strip_node_metadata"):
        # The dynamo exporter records each node's Python stack trace in its metadata_props:
        # 2.5 MB of text for DEIMv2's 1,550 nodes. Dropped to keep the fixture small; nothing
        # in the graph changes.
        full = onnx.load(str(out))
        for n in full.graph.node:
            del n.metadata_props[:]
            n.doc_string = ""
        data.unlink(missing_ok=True)
        onnx.save(full, str(out), save_as_external_data=True, location=data.name,
                  size_threshold=1024)
    m = onnx.load(str(out), load_external_data=False)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    if data.exists() and not external:
        data.unlink()  # onnxsim rewrote the model inline; the old weights file is stale

    # Reference: the same deploy model + postprocessor in torch, on seeded images.
    cfg2 = YAMLConfig(str(cfg_path))
    cfg2.model.load_state_dict(model.state_dict())
    dm, pp = cfg2.model.deploy().eval(), cfg2.postprocessor.deploy()
    s = spec["input_size"]
    g = torch.Generator().manual_seed(INPUT_SEED)
    # RT-DETRv2's script traces a batch-1 example; torch.export specializes that size, so its
    # "dynamic" N only runs at 1. D-FINE's traces 32 images and runs at any N.
    n = 1 if a.kind == "rtdetrv2" else 2
    images = torch.rand((n, 3, s, s), generator=g)
    sizes = torch.tensor([[s, s], [s // 2, s]][:n], dtype=torch.int64)
    with torch.no_grad():
        ref = [t.numpy() for t in pp(dm(images), sizes)]
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    got = sess.run(["labels", "boxes", "scores"],
                   {"images": images.numpy(), "orig_target_sizes": sizes.numpy()})
    diff = detections_match(ref, got)
    ops = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    print(json.dumps(dict(
        architecture={"rtdetrv2": "RT-DETRv2 (lyuwenyu/RT-DETR rtdetrv2_pytorch)",
                      "dfine": "D-FINE (Peterande/D-FINE)",
                      "deim": "DEIM D-FINE (ShihuaHuang95/DEIM)",
                      "deimv2": "DEIMv2 (Intellindust-AI-Lab/DEIMv2)",
                      "deimv2_hgnet": "DEIMv2 Atto-style (Intellindust-AI-Lab/DEIMv2)"}[a.kind]
        + (", DINOv3STAs ViT-Tiny backbone at width 16" if a.kind == "deimv2"
           else ", HGNetv2 backbone at tiny width"),
        source="official export script",
        exporter=f"{spec['export']} main() (torch.onnx.export defaults: torch "
                 f"{torch.__version__}), opsets {ops}"
        + (", simplified by the script (onnxsim)" if a.simplify else ", not simplified")
        + (", node metadata (stack traces) stripped" if spec.get("strip_node_metadata")
           else ""),
        inputs={"images": ["N", 3, s, s], "orig_target_sizes": ["N", 2]},
        seed=SEED, config=spec["yaml"].format(s=s).strip(),
        checked_with=f"onnxruntime vs torch as sets of detections, max diff {diff:.1e}",
        how=f"scripts/official_export.py --kind {a.kind}"
            + (" --simplify" if a.simplify else "") + " (from make_family_fixtures.py "
            "--official-root)",
    )))


if __name__ == "__main__":
    main()
