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

Usage: /work/venv-fix/bin/python scripts/make_decode_fixtures.py [OUTDIR]
Needs torch and transformers (scripts/requirements-fixtures.txt plus transformers).
"""
from __future__ import annotations

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


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("fixtures/decode")
    out.mkdir(parents=True, exist_ok=True)
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(SEED))
    manifest = []
    for name, make, decode in [
        ("tf_detr", tiny_detr, "softmax"),
        ("tf_conditional", tiny_conditional, "sigmoid"),
        ("tf_rtdetr", tiny_rtdetr, "sigmoid"),
    ]:
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
    versions = {"torch": torch.__version__, "transformers": tf.__version__}
    (out / "manifest.json").write_text(json.dumps(
        {"generator": "scripts/make_decode_fixtures.py", "seed": SEED, "versions": versions,
         "fixtures": manifest}, indent=1) + "\n")
    for f in manifest:
        print(f["file"], f["decode"])


if __name__ == "__main__":
    main()
