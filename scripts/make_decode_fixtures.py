#!/usr/bin/env python3
"""Small DETR-family fixtures for the decode tests of `detrc run` (tests/run_decode.rs).

Randomly initialised (seeded) transformers models, tiny, exported with the TorchScript
exporter the way a user exports them (input `pixel_values`, outputs `logits`, `pred_boxes`):

- tf_detr:        DetrForObjectDetection (softmax, trailing no-object class)
- tf_conditional: ConditionalDetrForObjectDetection (sigmoid / focal loss)
- tf_rtdetr:      RTDetrForObjectDetection (sigmoid / focal loss, GridSample, TopK)
- deploy_rtdetr:  the RT-DETR model above wrapped in a deploy-style post-processor with the
                  conventions of the official RT-DETR / D-FINE export scripts: inputs `images`
                  (N, 3, H, W) and `orig_target_sizes` (N, 2) int64 holding [w, h]; outputs
                  `labels`, `boxes` (xyxy pixels), `scores`; sigmoid, top-k over
                  queries x classes; dynamic N. (Written here from those facts; no code taken.)

The newer families (issue 24), every bias and norm perturbed (make_family_fixtures'
randomize_nontrivial) so no head is trivially flat:

- tf_yolos:       YolosForObjectDetection (softmax: no-object class, DETR-style MLP box head)
- tf_table:       TableTransformerForObjectDetection (softmax, as DETR)
- tf_lwdetr:      LwDetrForObjectDetection (sigmoid, two-stage query selection)
- tf_rfdetr:      RfDetrForObjectDetection (sigmoid; its antialiased bicubic position-embedding
                  resize exports only through the dynamo exporter, opset 18)
- tf_deimv2:      Deimv2ForObjectDetection (sigmoid)
- tf_detr_seg:    DetrForSegmentation: logits, pred_boxes and pred_masks [B, Q, H/4, W/4]
- rfdetr_nano, rfdetr_seg_nano: RF-DETR's own `export()` (PyPI rfdetr, `pretrain_weights=None`,
                  the DINOv2 backbone and decoder shrunk by overriding the package's size tables
                  and defaults so the file stays small), outputs `dets` [B, Q, 4] (normalized
                  cxcywh), `labels` [B, Q, C] (logits) and, for Seg, `masks` [B, Q, H/4, W/4]
                  (logits); non-square input so a transposed mask would show.

Usage: /work/venv-fix/bin/python scripts/make_decode_fixtures.py [OUTDIR] [--only a,b,...]
(`--only` remakes those fixtures and keeps the other manifest entries.)
Needs torch and transformers (scripts/requirements-fixtures.txt plus transformers); the rfdetr_*
fixtures need `pip install rfdetr`.
"""
from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import torch
import transformers as tf

H, W = 64, 96
SEED = 1234


def resnet_backbone(out_features):
    return tf.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
        layer_type="basic", out_features=out_features,
    )


def tiny_detr():
    cfg = tf.DetrConfig(
        backbone_config=resnet_backbone(["stage4"]), use_timm_backbone=False,
        use_pretrained_backbone=False, num_queries=10, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, d_model=16, num_labels=6,
    )
    return tf.DetrForObjectDetection(cfg)


def tiny_conditional():
    cfg = tf.ConditionalDetrConfig(
        backbone_config=resnet_backbone(["stage4"]), use_timm_backbone=False,
        use_pretrained_backbone=False, num_queries=10, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, d_model=16, num_labels=6,
    )
    return tf.ConditionalDetrForObjectDetection(cfg)


def tiny_rtdetr():
    cfg = tf.RTDetrConfig(
        backbone_config=tf.RTDetrResNetConfig(
            num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16, 16],
            depths=[1, 1, 1, 1], layer_type="basic", out_features=["stage2", "stage3", "stage4"],
        ),
        use_pretrained_backbone=False, encoder_in_channels=[16, 16, 16], encoder_hidden_dim=16,
        encoder_ffn_dim=32, encoder_attention_heads=2, d_model=16, decoder_in_channels=[16] * 3,
        decoder_ffn_dim=32, decoder_attention_heads=2, decoder_layers=2, decoder_n_points=2,
        num_queries=12, num_denoising=0, num_labels=5, anchor_image_size=None,
    )
    return tf.RTDetrForObjectDetection(cfg)


class HeadOutputs(torch.nn.Module):
    """Only logits and boxes, as an export for inference keeps them."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values)
        return out.logits, out.pred_boxes


class DeployStyle(torch.nn.Module):
    """Sigmoid, top-k over queries x classes, labels = index mod classes, boxes cxcywh ->
    xyxy scaled by [w, h, w, h] of orig_target_sizes."""

    def __init__(self, model, k):
        super().__init__()
        self.model = model
        self.k = k

    def forward(self, images, orig_target_sizes):
        out = self.model(pixel_values=images)
        logits, boxes = out.logits, out.pred_boxes
        classes = logits.shape[-1]
        cx, cy, bw, bh = boxes.unbind(-1)
        xyxy = torch.stack([cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh], -1)
        xyxy = xyxy * orig_target_sizes.repeat(1, 2).unsqueeze(1)
        scores, index = torch.topk(torch.sigmoid(logits).flatten(1), self.k, dim=-1)
        labels = index - index // classes * classes
        query = index // classes
        picked = xyxy.gather(1, query.unsqueeze(-1).repeat(1, 1, 4))
        return labels, picked, scores


def export(module, args, path, input_names, output_names, dynamic_axes=None):
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module, args, str(path), input_names=input_names, output_names=output_names,
            dynamic_axes=dynamic_axes, opset_version=17, do_constant_folding=True, dynamo=False,
        )


def perturbed(model, seed):
    """Every bias and norm parameter non-trivial (seeded), as for fixtures/family."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_family_fixtures import randomize_nontrivial

    randomize_nontrivial(model, torch.Generator().manual_seed(seed + 1000))
    return model.eval()


def tiny_yolos():
    cfg = tf.YolosConfig(image_size=[H, W], patch_size=16, hidden_size=16, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=32, num_detection_tokens=10,
                         num_labels=6)
    return tf.YolosForObjectDetection(cfg)


def tiny_table():
    cfg = tf.TableTransformerConfig(
        backbone_config=resnet_backbone(["stage4"]), use_timm_backbone=False,
        use_pretrained_backbone=False, num_queries=10, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, d_model=16, num_labels=6, dropout=0.0,
    )
    return tf.TableTransformerForObjectDetection(cfg)


def tiny_lwdetr():
    bb = tf.LwDetrViTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            mlp_ratio=2, image_size=128, pretrain_image_size=96, patch_size=16,
                            window_block_indices=[0, 2], out_indices=[2, 4], num_windows=4)
    cfg = tf.LwDetrConfig(backbone_config=bb, projector_scale_factors=[1.0], d_model=32,
                          c2f_num_blocks=1, decoder_ffn_dim=64, decoder_n_points=2,
                          decoder_layers=2, decoder_self_attention_heads=2,
                          decoder_cross_attention_heads=2, num_queries=10, group_detr=1,
                          num_labels=5)
    return tf.LwDetrForObjectDetection(cfg)


def tiny_rfdetr():
    bb = tf.RfDetrDinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                               mlp_ratio=2, image_size=64, patch_size=16,
                               out_features=["stage2", "stage4"], num_windows=2)
    cfg = tf.RfDetrConfig(backbone_config=bb, d_model=32, c2f_num_blocks=1, decoder_ffn_dim=64,
                          decoder_n_points=2, decoder_layers=2, decoder_self_attention_heads=2,
                          decoder_cross_attention_heads=2, num_queries=10, group_detr=1,
                          num_labels=5, dropout=0.0)
    return tf.RfDetrForObjectDetection(cfg)


def tiny_deimv2():
    bb = tf.HGNetV2Config(
        embedding_size=8, stem_channels=[3, 8, 8], stage_in_channels=[8, 16, 16, 32],
        stage_mid_channels=[8, 8, 16, 16], stage_out_channels=[16, 16, 32, 64],
        stage_num_blocks=[1, 1, 1, 1], stage_numb_of_layers=[2, 2, 2, 2],
        hidden_sizes=[16, 16, 32, 64], depths=[1, 1, 1, 1],
        out_features=["stage2", "stage3", "stage4"])
    cfg = tf.Deimv2Config(backbone_config=bb, d_model=32, encoder_hidden_dim=32,
                          encoder_in_channels=[16, 32, 64], decoder_in_channels=[32] * 3,
                          encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2,
                          decoder_attention_heads=2, decoder_layers=3, num_queries=10,
                          num_labels=5, decoder_n_points=2, hidden_expansion=0.5,
                          lqe_hidden_dim=16, max_num_bins=8, depth_mult=0.34)
    return tf.Deimv2ForObjectDetection(cfg)


def tiny_detr_seg():
    # The mask head's GroupNorms need d_model + heads divisible by 8 and d_model / 16 >= 1.
    cfg = tf.DetrConfig(
        backbone_config=resnet_backbone(["stage1", "stage2", "stage3", "stage4"]),
        use_timm_backbone=False, use_pretrained_backbone=False, num_queries=10,
        encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=8, decoder_attention_heads=8, d_model=64, num_labels=6,
        dropout=0.0,
    )
    return tf.DetrForSegmentation(cfg)


class MaskOutputs(torch.nn.Module):
    """Logits, boxes and mask logits, as a segmentation export for inference keeps them."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values)
        return out.logits, out.pred_boxes, out.pred_masks


def strip_metadata(path):
    """The dynamo exporter annotates every node with its Python stack (two thirds of the
    file); the graph is unchanged without it."""
    import onnx

    m = onnx.load(str(path))
    for n in m.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    onnx.save(m, str(path))


def check_ort(path, x, want):
    import numpy as np
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = s.run(None, {s.get_inputs()[0].name: x.numpy()})
    for g, w in zip(got, want):
        err = float(np.abs(g - w.numpy()).max())
        assert err < 1e-3, (path, err)


def export_transformers(name, make, decode, x, out, seg=False, dynamo=False):
    torch.manual_seed(SEED)
    m = perturbed(make(), SEED)
    wrap = (MaskOutputs(m) if seg else HeadOutputs(m)).eval()
    names = ["logits", "pred_boxes"] + (["pred_masks"] if seg else [])
    path = out / f"{name}.onnx"
    with torch.no_grad():
        want = wrap(x)
        if dynamo:
            torch.onnx.export(wrap, (x,), dynamo=True, opset_version=18,
                              input_names=["pixel_values"], output_names=names).save(str(path))
            strip_metadata(path)
        else:
            export(wrap, (x,), path, ["pixel_values"], names)
    check_ort(path, x, want)
    entry = {"file": str(path), "decode": decode, "model": type(m).__name__,
             "logits_shape": list(want[0].shape), "input_shape": [1, 3, H, W],
             "exporter": "dynamo opset 18" if dynamo else "torchscript opset 17"}
    if seg:
        entry["masks_shape"] = list(want[2].shape)
    return entry


def rfdetr_official(name, seg, out):
    """RF-DETR's own export(), shrunk: the package sizes its DINOv2 from JSON tables and its
    decoder FFN from MODEL_DEFAULTS; both are overridden before the model is built."""
    import shutil
    import tempfile

    import rfdetr
    import rfdetr.models.backbone.dinov2 as dino
    from rfdetr.models._defaults import MODEL_DEFAULTS

    get_config = dino.get_config

    def tiny(size, use_registers):
        c = get_config(size, use_registers)
        c.update(hidden_size=32, num_attention_heads=2, mlp_ratio=2)
        return c

    dino.get_config = tiny
    dino.size_to_width["small"] = 32
    object.__setattr__(MODEL_DEFAULTS, "dim_feedforward", 64)
    cls = rfdetr.RFDETRSegNano if seg else rfdetr.RFDETRNano
    # Nano: patch 16, 2 windows (sides divisible by 32); Seg Nano: patch 12, 1 window
    shape = (72, 96) if seg else (64, 96)
    torch.manual_seed(SEED)
    m = cls(pretrain_weights=None, resolution=96, hidden_dim=32, sa_nheads=2, ca_nheads=2,
            dec_n_points=2, num_queries=10, num_select=10, num_classes=4, device="cpu")
    perturbed(m.model.model, SEED)
    with tempfile.TemporaryDirectory() as tmp:
        got = Path(m.export(output_dir=tmp, verbose=False, shape=shape))
        path = out / f"{name}.onnx"
        shutil.copyfile(got, path)
    strip_metadata(path)
    import onnx

    g = onnx.load(str(path)).graph
    dims = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]
            for o in g.output}
    return {"file": str(path), "decode": "sigmoid", "model": f"rfdetr {cls.__name__} export()",
            "rfdetr": importlib.metadata.version("rfdetr"),
            "outputs": dims, "input_shape": [1, 3, *shape]}


NEW = {
    "tf_yolos": lambda x, o: export_transformers("tf_yolos", tiny_yolos, "softmax", x, o),
    "tf_table": lambda x, o: export_transformers("tf_table", tiny_table, "softmax", x, o),
    "tf_lwdetr": lambda x, o: export_transformers("tf_lwdetr", tiny_lwdetr, "sigmoid", x, o),
    "tf_rfdetr": lambda x, o: export_transformers("tf_rfdetr", tiny_rfdetr, "sigmoid", x, o,
                                                  dynamo=True),
    "tf_deimv2": lambda x, o: export_transformers("tf_deimv2", tiny_deimv2, "sigmoid", x, o),
    "tf_detr_seg": lambda x, o: export_transformers("tf_detr_seg", tiny_detr_seg, "softmax", x,
                                                    o, seg=True),
    "rfdetr_nano": lambda x, o: rfdetr_official("rfdetr_nano", False, o),
    "rfdetr_seg_nano": lambda x, o: rfdetr_official("rfdetr_seg_nano", True, o),
}


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--only")]
    only = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--only=")), None)
    out = Path(args[0]) if args else Path("fixtures/decode")
    out.mkdir(parents=True, exist_ok=True)
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(SEED))
    wanted = set(only.split(",")) if only else None
    manifest_path = out / "manifest.json"
    old = json.loads(manifest_path.read_text())["fixtures"] if manifest_path.exists() else []
    manifest = []
    for name, make, decode in [
        ("tf_detr", tiny_detr, "softmax"),
        ("tf_conditional", tiny_conditional, "sigmoid"),
        ("tf_rtdetr", tiny_rtdetr, "sigmoid"),
    ]:
        if wanted is not None and name not in wanted:
            continue
        torch.manual_seed(SEED)
        m = make().eval()
        path = out / f"{name}.onnx"
        export(HeadOutputs(m), (x,), path, ["pixel_values"], ["logits", "pred_boxes"])
        with torch.no_grad():
            lg = m(pixel_values=x).logits
        manifest.append({"file": str(path), "decode": decode, "model": type(m).__name__,
                         "logits_shape": list(lg.shape), "input_shape": [1, 3, H, W]})
        if name == "tf_rtdetr":
            path = out / "deploy_rtdetr.onnx"
            k = 8
            size = torch.tensor([[W, H]], dtype=torch.int64)
            export(DeployStyle(m, k), (x, size), path, ["images", "orig_target_sizes"],
                   ["labels", "boxes", "scores"],
                   {"images": {0: "N"}, "orig_target_sizes": {0: "N"}})
            manifest.append({"file": str(path), "decode": "graph", "model": "deploy-style "
                             + type(m).__name__, "top_k": k, "input_shape": ["N", 3, H, W]})
    for name, make in NEW.items():
        if wanted is None or name in wanted:
            manifest.append(make(x, out))
    made = {f["file"] for f in manifest}
    manifest = [f for f in old if f["file"] not in made] + manifest
    versions = {"torch": torch.__version__, "transformers": tf.__version__}
    manifest_path.write_text(json.dumps(
        {"generator": "scripts/make_decode_fixtures.py", "seed": SEED, "versions": versions,
         "fixtures": manifest}, indent=1) + "\n")
    for f in manifest:
        print(f["file"], f["decode"], Path(f["file"]).stat().st_size)


if __name__ == "__main__":
    main()
