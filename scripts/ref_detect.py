#!/usr/bin/env python3
"""Independent reference for `detrc run`: the same detection pipeline with onnxruntime,
numpy and PIL, written separately from the Rust code, for tests/run_detect.rs and
tests/run_decode.rs.

Pre-processing (documented in src/run/preprocess.rs): decode with PIL, RGB, resize to the
model's H x W: --resize torch (default) is bilinear with half-pixel centers and no antialiasing
(as torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False)),
written here in numpy; --resize pil is PIL's own Image.resize(BILINEAR) (antialiased), then
/255, then ImageNet mean/std
(--normalize imagenet, the default for softmax and sigmoid) or nothing (--normalize none,
the default for graph), NCHW float32. Batches of the model's batch B (a dynamic batch is
--batch, default 1); the last one is padded by repeating its last image. A second input of
shape [B, 2] gets each image's [width, height] in its own element type.

Post-processing (--decode):
- softmax: softmax over the logits, drop the last (no-object) class, best class per query, in
  query order;
- sigmoid: sigmoid of every (query, class) logit, the --top-k (default: number of queries)
  best pairs by logit, descending, ties by the lower index query * classes + class;
- graph: the model's labels, boxes (x1, y1, x2, y2 pixels) and scores, in the model's order,
  the first --top-k of them.
Then score >= threshold; boxes (cx, cy, w, h) normalized -> (x, y, w, h) pixels of the
original image (graph: xyxy -> xywh).

Class logits and boxes are the outputs named pred_logits or logits and pred_boxes, or RF-DETR's
labels and dets. Masks: a rank-4 output [B, Q, h, w] whose Q is the logits' (K for graph) gives
each detection the mask of its query: the mask logits resized to the image with the torch
bilinear formula above, > 0 (sigmoid > 0.5), written as COCO RLE {"size": [h, w], "counts":
string} (column-major runs, starting with zeros, in COCO's compressed string form), encoded
here in numpy.

Usage: ref_detect.py MODEL --images PATH... [--threshold 0.7] [--decode softmax|sigmoid|graph]
       [--top-k K] [--normalize imagenet|none] [--resize torch|pil] [--batch N]
       -o detections.json
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


def preprocess(rgb: np.ndarray, h: int, w: int, imagenet: bool) -> np.ndarray:
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
    v = v / np.float32(255.0)
    if imagenet:
        v = (v - MEAN) / STD
    return np.ascontiguousarray(v.transpose(2, 0, 1), dtype=np.float32)


def resize_pil(img: Image.Image, h: int, w: int, imagenet: bool) -> np.ndarray:
    """PIL's antialiased bilinear, then the same /255 and normalization."""
    v = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32) / np.float32(255.0)
    if imagenet:
        v = (v - MEAN) / STD
    return np.ascontiguousarray(v.transpose(2, 0, 1), dtype=np.float32)


def mask_bits(logits: np.ndarray, h: int, w: int) -> np.ndarray:
    """Mask logits (mh, mw) -> bool (h, w): torch bilinear (half-pixel, no antialias) in
    float32, then > 0."""
    y0, y1, fy = source_coords(logits.shape[0], h)
    x0, x1, fx = source_coords(logits.shape[1], w)
    m = logits.astype(np.float32)
    fx = fx[None, :]
    fy = fy[:, None]
    one = np.float32(1.0)
    top = (one - fx) * m[y0][:, x0] + fx * m[y0][:, x1]
    bot = (one - fx) * m[y1][:, x0] + fx * m[y1][:, x1]
    return ((one - fy) * top + fy * bot) > 0


def rle_counts(bits: np.ndarray) -> list[int]:
    """Column-major run lengths, the first run of zeros (possibly empty)."""
    flat = bits.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] == 1 else runs


def rle_string(counts: list[int]) -> str:
    """COCO's compressed counts: each count (from the third on, less the count two before) in
    5-bit groups, low first, 0x20 marking "more", plus 48."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        while True:
            c5 = x & 0x1F
            x >>= 5  # arithmetic shift, as C's on a signed long
            more = (x != -1) if (c5 & 0x10) else (x != 0)
            if more:
                c5 |= 0x20
            out.append(chr(c5 + 48))
            if not more:
                break
    return "".join(out)


def segmentation(logits: np.ndarray, h: int, w: int) -> dict:
    return {"size": [h, w], "counts": rle_string(rle_counts(mask_bits(logits, h, w)))}


def xywh_pixels(box, w: int, h: int) -> list[float]:
    cx, cy, bw, bh = (float(v) for v in box)
    return [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]


def softmax_dets(logits: np.ndarray, boxes: np.ndarray, name: str, w: int, h: int,
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
        dets.append({"image": name, "category_id": int(cls[q]), "score": float(score[q]),
                     "bbox": xywh_pixels(boxes[q], w, h), "_query": q})
    return dets


def sigmoid_dets(logits: np.ndarray, boxes: np.ndarray, name: str, w: int, h: int,
                 threshold: float, k: int | None) -> list[dict]:
    classes = logits.shape[1]
    flat = logits.astype(np.float64).ravel()
    keep = np.flatnonzero(~np.isnan(flat))
    # stable sort on the negated logit: descending, equal logits in index order
    order = keep[np.argsort(-flat[keep], kind="stable")]
    order = order[:logits.shape[0] if k is None else k]
    dets = []
    for i in order:
        score = 1.0 / (1.0 + np.exp(-flat[i]))
        if not score >= threshold:
            continue
        dets.append({"image": name, "category_id": int(i % classes), "score": float(score),
                     "bbox": xywh_pixels(boxes[i // classes], w, h),
                     "_query": int(i // classes)})
    return dets


def graph_dets(labels: np.ndarray, boxes: np.ndarray, scores: np.ndarray, name: str,
               threshold: float, k: int | None) -> list[dict]:
    dets = []
    n = len(scores) if k is None else min(k, len(scores))
    for j in range(n):
        s, lab = float(scores[j]), labels[j]
        if not s >= threshold or lab < 0:
            continue
        x1, y1, x2, y2 = (float(v) for v in boxes[j])
        dets.append({"image": name, "category_id": int(lab), "score": s,
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "_query": j})
    return dets


NP_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--images", type=Path, nargs="+", required=True)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--decode", choices=["softmax", "sigmoid", "graph"], default="softmax")
    ap.add_argument("--top-k", type=int)
    ap.add_argument("--normalize", choices=["imagenet", "none"])
    ap.add_argument("--batch", type=int)
    ap.add_argument("--resize", choices=["torch", "pil"], default="torch")
    args = ap.parse_args()
    imagenet = (args.normalize or ("none" if args.decode == "graph" else "imagenet")) == "imagenet"

    sess = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    ins = sess.get_inputs()
    img_in = next(i for i in ins if len(i.shape) == 4)
    size_in = next((i for i in ins if len(i.shape) == 2), None)
    assert len(ins) == (2 if size_in else 1), [i.name for i in ins]
    b, c, h, w = img_in.shape
    if not isinstance(b, int):
        b = args.batch or 1
    assert c == 3 and isinstance(h, int) and isinstance(w, int), img_in.shape
    out_names = [o.name for o in sess.get_outputs()]
    if args.decode == "graph":
        wanted = ["labels", "boxes", "scores"]
    elif "dets" in out_names and "labels" in out_names:
        wanted = ["labels", "dets"]  # RF-DETR's export
    else:
        wanted = ["pred_logits" if "pred_logits" in out_names else "logits", "pred_boxes"]
    assert all(n in out_names for n in wanted), out_names
    shapes = {o.name: o.shape for o in sess.get_outputs()}
    q = shapes[wanted[0]][1]
    # a symbolic dimension (a dynamic export's) fits any count
    masks = [o.name for o in sess.get_outputs()
             if o.name not in wanted and len(o.shape) == 4
             and (not isinstance(o.shape[1], int) or not isinstance(q, int) or o.shape[1] == q)]
    assert len(masks) <= 1, masks
    wanted += masks

    files = collect(args.images)
    dets: list[dict] = []
    for start in range(0, len(files), b):
        chunk = files[start:start + b]
        imgs = [np.asarray(Image.open(p).convert("RGB")) for p in chunk]
        if args.resize == "pil":
            batch = [resize_pil(Image.open(p).convert("RGB"), h, w, imagenet) for p in chunk]
        else:
            batch = [preprocess(im, h, w, imagenet) for im in imgs]
        sizes = [[im.shape[1], im.shape[0]] for im in imgs]
        while len(batch) < b:
            batch.append(batch[-1])
            sizes.append(sizes[-1])
        feed = {img_in.name: np.stack(batch)}
        if size_in is not None:
            feed[size_in.name] = np.array(sizes, dtype=NP_TYPES[size_in.type])
        outs = sess.run(wanted, feed)
        for i, (p, im) in enumerate(zip(chunk, imgs)):
            iw, ih = im.shape[1], im.shape[0]
            if args.decode == "softmax":
                found = softmax_dets(outs[0][i], outs[1][i], p.name, iw, ih, args.threshold)
            elif args.decode == "sigmoid":
                found = sigmoid_dets(outs[0][i], outs[1][i], p.name, iw, ih, args.threshold,
                                     args.top_k)
            else:
                found = graph_dets(outs[0][i], outs[1][i], outs[2][i], p.name, args.threshold,
                                   args.top_k)
            for d in found:
                query = d.pop("_query")
                if masks:
                    d["segmentation"] = segmentation(outs[-1][i][query], ih, iw)
            dets.extend(found)
    args.output.write_text(json.dumps(dets, indent=1) + "\n")
    print(f"{args.output}: {len(dets)} detections in {len(files)} images")


if __name__ == "__main__":
    main()
