"""detrc.build against the real TensorRT-RTX libraries (CPU-only, ahead-of-time engines)."""

from __future__ import annotations

import json
import os

import pytest

import detrc
from conftest import CNN, DETR, ROOT, required


@pytest.fixture(scope="module")
def trt_dir():
    d = os.environ.get("DETRC_TENSORRT_DIR")
    if not d:
        if required("DETRC_REQUIRE_TENSORRT"):
            pytest.fail("DETRC_REQUIRE_TENSORRT is set but DETRC_TENSORRT_DIR is not")
        pytest.skip("TensorRT-RTX not installed (scripts/install_tensorrt_rtx.sh)")
    return d


def test_build_a_detr_engine(tmp_path, trt_dir):
    out = tmp_path / "detr.engine"
    sc = detrc.build(DETR, out, target="sm86", tensorrt_dir=trt_dir)
    assert out.is_file() and out.stat().st_size == sc["engine"]["bytes"] > 0
    assert json.loads((tmp_path / "detr.engine.json").read_text()) == sc
    assert sc["targets"] == ["sm86"] and sc["precision"] == "fp32"
    assert sc["tensorrt"]["flavor"] == "TensorRT-RTX"
    assert [i["name"] for i in sc["inputs"]] == [
        i["name"] for i in detrc.inspect(DETR)["inputs"]
    ]
    assert sc["source"]["compiled_before"] is False
    info = detrc.inspect(out)
    assert info["kind"] == "engine" and info["engine_check"] == "matches sidecar"


def test_build_from_a_model_proto_in_fp16(tmp_path, trt_dir):
    onnx = pytest.importorskip("onnx")
    compiled, _ = detrc.compile(onnx.load(str(CNN)))
    out = tmp_path / "cnn.plan"
    sc = detrc.build(compiled, out, target=["sm80", "sm89"], precision="fp16", tensorrt_dir=trt_dir)
    assert sc["precision"] == "fp16" and sc["targets"] == ["sm80", "sm89"]
    # detrc compiled it already, so build took it as it is.
    assert sc["source"]["compiled_before"] is True
    assert out.stat().st_size == sc["engine"]["bytes"]


def test_build_usage_errors_write_nothing(tmp_path, trt_dir):
    out = tmp_path / "x.engine"
    with pytest.raises(detrc.UsageError, match="unsupported target"):
        detrc.build(CNN, out, target="sm1", tensorrt_dir=trt_dir)
    with pytest.raises(detrc.UsageError, match="unknown precision"):
        detrc.build(CNN, out, precision="int3", tensorrt_dir=trt_dir)
    with pytest.raises(detrc.UsageError, match="fp16_keep needs"):
        detrc.build(CNN, out, fp16_keep=["Softmax"], tensorrt_dir=trt_dir)
    with pytest.raises(detrc.ModelError):
        detrc.build(b"garbage", out, target="sm86", tensorrt_dir=trt_dir)
    assert list(tmp_path.iterdir()) == []


def test_missing_libraries_are_a_build_error(tmp_path):
    with pytest.raises(detrc.BuildError, match="not found|already loaded"):
        detrc.build(CNN, tmp_path / "x.engine", tensorrt_dir=tmp_path / "no-trt")
    assert list(tmp_path.iterdir()) == []


def test_build_int8_calibrates_on_images(tmp_path, trt_dir):
    out = tmp_path / "detr_int8.engine"
    cal = ROOT / "examples" / "images"
    sc = detrc.build(
        DETR, out, target="sm86", precision="int8", calibration=cal, tensorrt_dir=trt_dir
    )
    assert sc["precision"] == "int8" and out.stat().st_size == sc["engine"]["bytes"] > 0
    q = sc["quantization"]
    assert q["method"] == "mse" and q["images"] == 3 and len(q["scales_sha256"]) == 64
    with pytest.raises(detrc.UsageError, match="calibration needs"):
        detrc.build(DETR, tmp_path / "x.engine", calibration=cal, tensorrt_dir=trt_dir)
    with pytest.raises(detrc.UsageError, match="method="):
        detrc.build(DETR, tmp_path / "x.engine", precision="int8", calibration=cal,
                    method="best", tensorrt_dir=trt_dir)
    # calibration images resized as PIL does: other ranges, so other scales
    pil = detrc.build(DETR, tmp_path / "pil.engine", target="sm86", precision="int8",
                      calibration=cal, resize="pil", tensorrt_dir=trt_dir)
    assert pil["quantization"]["scales_sha256"] != q["scales_sha256"]
    with pytest.raises(detrc.UsageError, match="resize="):
        detrc.build(DETR, tmp_path / "x.engine", precision="int8", calibration=cal,
                    resize="bicubic", tensorrt_dir=trt_dir)
    with pytest.raises(TypeError, match="resize"):
        detrc.build(DETR, tmp_path / "x.engine", resize=2, tensorrt_dir=trt_dir)
