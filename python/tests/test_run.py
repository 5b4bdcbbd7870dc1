"""detrc.run: detrc run in this process, equal to the command line's output."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import detrc
from conftest import FIXTURES, ROOT

IMAGES = ROOT / "examples" / "images"
SEG = FIXTURES / "decode" / "rfdetr_seg_nano.onnx"


def cargo_bin() -> str:
    p = os.environ.get("DETRC_CARGO_BIN")
    if not p:
        pytest.skip("DETRC_CARGO_BIN is not set (scripts/test_python.sh sets it)")
    return p


def test_run_matches_the_command_line_with_masks_and_pil_resize(tmp_path):
    s = detrc.run(SEG, IMAGES, tmp_path / "py", threshold=0.0, resize="pil")
    assert (s["decode"], s["resize"], s["masks"], s["warnings"]) == ("sigmoid", "pil", "masks", [])
    assert s["images"] == 3 and s["detections"] == 30
    dets = json.loads((tmp_path / "py" / "detections.json").read_text())
    assert all(d["segmentation"]["size"][0] > 0 for d in dets)
    assert sorted(p.name for p in (tmp_path / "py").glob("*.png")) == sorted(
        p.with_suffix(".png").name for p in IMAGES.iterdir()
    )
    o = subprocess.run(
        [cargo_bin(), "run", str(SEG), "--images", str(IMAGES), "--threshold", "0",
         "--resize", "pil", "-q", "-o", str(tmp_path / "cli")],
        capture_output=True, text=True,
    )
    assert o.returncode == 0, o.stderr
    assert json.loads((tmp_path / "cli" / "detections.json").read_text()) == dets
    torch = detrc.run(SEG, [IMAGES / "synthetic_200x150.jpg"], tmp_path / "torch", threshold=0.0)
    assert torch["resize"] == "torch"


def test_run_errors(tmp_path):
    with pytest.raises(detrc.UsageError, match="resize="):
        detrc.run(SEG, IMAGES, tmp_path / "x", resize="bicubic")
    with pytest.raises(TypeError, match="resize"):
        detrc.run(SEG, IMAGES, tmp_path / "x", resize=1)
    with pytest.raises(detrc.UsageError, match="decode="):
        detrc.run(SEG, IMAGES, tmp_path / "x", decode="argmax")
    with pytest.raises(detrc.UsageError, match="softmax"):
        detrc.run(SEG, IMAGES, tmp_path / "x", decode="softmax", top_k=3)
    with pytest.raises(detrc.FileError):
        detrc.run(SEG, tmp_path / "no-such-folder", tmp_path / "x")
    with pytest.raises(detrc.UsageError, match="cannot tell how this model decodes"):
        detrc.run(FIXTURES / "cnn_tiny_op17_b1.onnx", IMAGES, tmp_path / "x")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    # no GPU here: no CUDA driver; with one, the engine itself is refused
    with pytest.raises((detrc.RunError, detrc.ModelError)):
        detrc.run(engine, IMAGES, tmp_path / "x", decode="sigmoid")
    assert not (tmp_path / "x" / "detections.json").exists()
