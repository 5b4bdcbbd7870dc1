#!/usr/bin/env python3
"""Synthetic calibration / evaluation images for INT8 quantization (deterministic).

Each image is drawn like examples/images (scripts/make_example_images.py: a colour gradient
with rectangles and ellipses) from its own seed, at one of a few sizes, with mild per-pixel
noise so activations are not piecewise constant. Calibration and held-out sets use disjoint
seed ranges: `--seed 1000` and `--seed 5000` never share an image.

Usage: make_calibration_images.py --out DIR --count N [--seed S]
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_example_images import draw  # noqa: E402

SIZES = [(160, 120), (128, 128), (200, 150), (96, 64), (120, 160)]


def make(seed: int) -> Image.Image:
    rng = random.Random(seed)
    w, h = SIZES[rng.randrange(len(SIZES))]
    img = np.asarray(draw(w, h, seed), dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0.0, 6.0, img.shape)
    return Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1000)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        s = args.seed + i
        make(s).save(args.out / f"synthetic_{s:05d}.png", "PNG")
    print(f"{args.out}: {args.count} images (seeds {args.seed}..{args.seed + args.count - 1})")


if __name__ == "__main__":
    main()
