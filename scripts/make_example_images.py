#!/usr/bin/env python3
"""Generate the small synthetic test images in examples/images/ (deterministic).

Coloured rectangles and ellipses on a gradient, drawn with PIL from a fixed
seed. Usage: python scripts/make_example_images.py [--out examples/images]
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
# (file name, width, height, format, seed)
IMAGES = [
    ("synthetic_160x120.png", 160, 120, "PNG", 11),
    ("synthetic_96x64.png", 96, 64, "PNG", 22),
    ("synthetic_200x150.jpg", 200, 150, "JPEG", 33),
]


def draw(w: int, h: int, seed: int) -> Image.Image:
    rng = random.Random(seed)
    c0 = [rng.randrange(256) for _ in range(3)]
    c1 = [rng.randrange(256) for _ in range(3)]
    img = Image.new("RGB", (w, h))
    px = img.load()
    for y in range(h):
        for x in range(w):
            t = (x / max(1, w - 1) + y / max(1, h - 1)) / 2
            px[x, y] = tuple(int(a + (b - a) * t) for a, b in zip(c0, c1))
    d = ImageDraw.Draw(img)
    for k in range(rng.randint(3, 5)):
        x0, y0 = rng.randrange(0, w * 3 // 4), rng.randrange(0, h * 3 // 4)
        x1 = min(w - 1, x0 + rng.randint(w // 8, w // 2))
        y1 = min(h - 1, y0 + rng.randint(h // 8, h // 2))
        fill = tuple(rng.randrange(256) for _ in range(3))
        outline = tuple(rng.randrange(256) for _ in range(3))
        if k % 2 == 0:
            d.rectangle([x0, y0, x1, y1], fill=fill, outline=outline, width=2)
        else:
            d.ellipse([x0, y0, x1, y1], fill=fill, outline=outline, width=2)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "examples" / "images")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, w, h, fmt, seed in IMAGES:
        img = draw(w, h, seed)
        path = args.out / name
        if fmt == "JPEG":
            img.save(path, fmt, quality=85, optimize=True)
        else:
            img.save(path, fmt, optimize=True)
        print(f"{path}: {w}x{h} {fmt} {path.stat().st_size} B")


if __name__ == "__main__":
    main()
