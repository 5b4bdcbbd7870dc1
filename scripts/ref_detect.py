#!/usr/bin/env python3
"""Independent reference for `detrc run`: the same detection pipeline with onnxruntime,
numpy and PIL, written separately from the Rust code, for tests/run_detect.rs.

Pre-processing (documented in src/run/preprocess.rs): decode with PIL, RGB, bilinear resize
to the model's static H x W with half-pixel centers and no antialiasing (as
torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False); NOT
PIL's resize, which antialiases when shrinking), /255, ImageNet mean/std, NCHW float32.
Batches of the model's static batch B; the last one is padded by repeating its last image.

Post-processing: softmax over the logits, drop the last (no-object) class, best class per
query, keep score >= threshold, boxes (cx, cy, w, h) normalized -> (x, y, w, h) pixels of the
original image. Detections are listed per image in query order.

Usage: ref_detect.py MODEL --images PATH... [--threshold 0.7] -o detections.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
EXTS = {".jpg", ".jpeg", ".png"}


def collect(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted((q for q in p.iterdir() if q.suffix.lower() in EXTS and q.is_file()),
                           key=lambda q: q.name.encode())
            if not found:
                sys.exit(f"{p}: no images")
            out.extend(found)
        else:
            out.append(p)
    return out


def source_coords(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel source taps (i0, i1, frac) in float32, clamped like torch's bilinear."""
    scale = np.float32(n_in) / np.float32(n_out)
    dst = np.arange(n_out, dtype=np.float32)
    src = (dst + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, frac


def preprocess(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    """uint8 HWC -> float32 CHW, resized and normalized."""
    src = rgb.astype(np.float32)
    y0, y1, fy = source_coords(rgb.shape[0], h)
    x0, x1, fx = source_coords(rgb.shape[1], w)
    fx = fx[None, :, None]
    fy = fy[:, None, None]
    one = np.float32(1.0)
    top = (one - fx) * src[y0][:, x0] + fx * src[y0][:, x1]
    bot = (one - fx) * src[y1][:, x0] + fx * src[y1][:, x1]
    v = (one - fy) * top + fy * bot
    v = (v / np.float32(255.0) - MEAN) / STD
    return np.ascontiguousarray(v.transpose(2, 0, 1), dtype=np.float32)


def postprocess(logits: np.ndarray, boxes: np.ndarray, name: str, w: int, h: int,
                threshold: float) -> list[dict]:
    lg = logits.astype(np.float64)
    e = np.exp(lg - lg.max(axis=-1, keepdims=True))
    prob = e / e.sum(axis=-1, keepdims=True)
    real = prob[:, :-1]
    cls = real.argmax(axis=-1)
    score = real.max(axis=-1)
    dets = []
    for q in range(logits.shape[0]):
        if not score[q] >= threshold:
            continue
        cx, cy, bw, bh = (float(v) for v in boxes[q])
        dets.append({
            "image": name,
            "category_id": int(cls[q]),
            "score": float(score[q]),
            "bbox": [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h],
        })
    return dets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--images", type=Path, nargs="+", required=True)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()

    sess = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    b, c, h, w = inp.shape
    assert c == 3 and all(isinstance(d, int) for d in (b, h, w)), inp.shape
    out_names = [o.name for o in sess.get_outputs()]
    assert "pred_logits" in out_names and "pred_boxes" in out_names, out_names

    files = collect(args.images)
    dets: list[dict] = []
    for start in range(0, len(files), b):
        chunk = files[start:start + b]
        imgs = [np.asarray(Image.open(p).convert("RGB")) for p in chunk]
        batch = [preprocess(im, h, w) for im in imgs]
        while len(batch) < b:
            batch.append(batch[-1])
        logits, boxes = sess.run(["pred_logits", "pred_boxes"], {inp.name: np.stack(batch)})
        for i, (p, im) in enumerate(zip(chunk, imgs)):
            dets.extend(postprocess(logits[i], boxes[i], p.name, im.shape[1], im.shape[0],
                                    args.threshold))
    args.output.write_text(json.dumps(dets, indent=1) + "\n")
    print(f"{args.output}: {len(dets)} detections in {len(files)} images")


if __name__ == "__main__":
    main()
