"""detrc.compile, detrc.inspect and detrc.passes on the real DETR fixture."""

from __future__ import annotations

import collections
import sys
import threading
import time
from pathlib import Path

import pytest

import detrc
import numpy as np

from conftest import CNN, DETR, ROOT, assert_same_outputs, need_ort

onnx = pytest.importorskip("onnx")


def histogram(model) -> dict:
    return dict(collections.Counter(n.op_type for n in model.graph.node))


def test_the_installed_package_is_tested_not_the_checkout():
    here = Path(__file__).resolve().parents[1]
    assert here not in Path(detrc.__file__).resolve().parents, detrc.__file__
    assert Path(sys.prefix) in Path(detrc.__file__).resolve().parents


def test_model_proto_in_model_proto_out_same_outputs_under_onnxruntime():
    original = onnx.load(str(DETR))
    compiled, report = detrc.compile(original)
    assert isinstance(compiled, onnx.ModelProto)
    onnx.checker.check_model(compiled)
    # The report's op counts are the models' own.
    assert report["ops_after"] == histogram(compiled)
    assert report["nodes_after"] == len(compiled.graph.node)
    assert report["ops_before"] == histogram(original)
    assert report["nodes_before"] == len(original.graph.node)
    assert report["nodes_after"] < report["nodes_before"], report
    assert_same_outputs(original.SerializeToString(), compiled.SerializeToString())


def test_bytes_path_and_model_proto_give_the_same_model(tmp_path, detr_bytes):
    from_bytes, r1 = detrc.compile(detr_bytes)
    assert isinstance(from_bytes, bytes)
    out = tmp_path / "out.onnx"
    from_path, r2 = detrc.compile(str(DETR), output=out)
    assert from_path == out
    from_proto, r3 = detrc.compile(onnx.load(str(DETR)))
    assert out.read_bytes() == from_bytes
    assert from_proto.SerializeToString() == onnx.load_from_string(from_bytes).SerializeToString()
    assert r1["ops_after"] == r2["ops_after"] == r3["ops_after"]
    assert r2["input"] == str(DETR) and r2["output"] == str(out)
    assert r1["input"] == "<bytes>"
    # Accepted as bytes too.
    assert detrc.compile(bytearray(detr_bytes)).model == from_bytes
    assert detrc.compile(memoryview(detr_bytes)).model == from_bytes
    # The compiled model carries detrc's mark, which `detrc build` reads.
    meta = {p.key: p.value for p in onnx.load_from_string(from_bytes).metadata_props}
    assert meta.get("detrc.compiled") == detrc.__version__


def test_report_has_the_steps_of_every_pass(detr_bytes):
    _, report = detrc.compile(detr_bytes)
    steps = report["steps"]
    assert steps and [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    default = [p["name"] for p in detrc.passes() if p["default"]]
    assert [s["pass"] for s in steps[: len(default)]] == default
    changed = [s for s in steps if s["status"] == "changed"]
    assert changed and all(s["details"] for s in changed)
    for s in steps:
        assert s["status"] in ("changed", "unchanged", "not-applicable", "rolled-back")
    # Step counts chain: each pass starts from the previous pass's result.
    for a, b in zip(steps, steps[1:]):
        assert b["ops_before"] == a["ops_after"]
    assert steps[0]["ops_before"] == report["nodes_before"]
    assert steps[-1]["ops_after"] == report["nodes_after"]
    assert report["verification"] is None


def test_verify_reports_the_figures(detr_bytes):
    compiled, report = detrc.compile(detr_bytes, verify=True, seed=5, verify_runs=2)
    v = report["verification"]
    assert v["seed"] in (5, 6)
    assert v["outputs"] and all(o["ok"] for o in v["outputs"])
    assert all(o["max_abs"] <= 1e-3 for o in v["outputs"])


def test_passes_and_skip_choose_the_pipeline(detr_bytes):
    _, only = detrc.compile(detr_bytes, passes=["infer-shapes", "dead-code"])
    assert {s["pass"] for s in only["steps"]} == {"infer-shapes", "dead-code"}
    _, comma = detrc.compile(detr_bytes, passes="infer-shapes,dead-code")
    assert comma["ops_after"] == only["ops_after"]
    _, skipped = detrc.compile(detr_bytes, skip=["fold-constants"])
    assert "fold-constants" not in {s["pass"] for s in skipped["steps"]}
    _, bounded = detrc.compile(detr_bytes, max_steps=3)
    assert len(bounded["steps"]) == 3


def test_unknown_pass_is_a_usage_error_listing_the_valid_ones(detr_bytes):
    with pytest.raises(detrc.UsageError, match="unknown pass 'no-such-pass'; valid passes: ") as e:
        detrc.compile(detr_bytes, passes=["no-such-pass"])
    assert "dead-code" in str(e.value)
    assert e.value.category == "usage"
    assert isinstance(e.value, ValueError) and isinstance(e.value, detrc.Error)
    with pytest.raises(detrc.UsageError, match="no-such-pass"):
        detrc.compile(detr_bytes, skip="no-such-pass")


def test_garbage_and_empty_bytes_raise_model_errors_naming_the_problem():
    with pytest.raises(detrc.ModelError, match="not a valid ONNX protobuf") as e:
        detrc.compile(b"garbage")
    assert e.value.category == "model"
    with pytest.raises(detrc.ModelError, match="empty"):
        detrc.compile(b"")
    with pytest.raises(detrc.ModelError, match="not a valid ONNX protobuf"):
        detrc.inspect(b"garbage")


def test_a_missing_file_is_a_file_error_naming_it(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(detrc.FileError, match="cannot read .*nope.onnx") as e:
        detrc.compile(missing, output=tmp_path / "out.onnx")
    assert isinstance(e.value, OSError)
    assert not (tmp_path / "out.onnx").exists()


def test_not_onnx_file_leaves_no_output(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(detrc.ModelError, match="bad.onnx"):
        detrc.compile(bad, output=tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


@pytest.mark.parametrize(
    "call, accepted",
    [
        (lambda: detrc.compile(123), "a path (str or os.PathLike), bytes, or an onnx.ModelProto"),
        (lambda: detrc.compile(None), "a path (str or os.PathLike), bytes, or an onnx.ModelProto"),
        (lambda: detrc.compile(["m.onnx"]), "onnx.ModelProto, not list"),
        (lambda: detrc.compile(b"x", passes=5), "passes must be a list of strings"),
        (lambda: detrc.compile(b"x", passes=[1, 2]), "passes must be a list of strings"),
        (lambda: detrc.compile(b"x", verify="yes"), "verify must be True or False"),
        (lambda: detrc.compile(b"x", atol="big"), "atol must be a number"),
        (lambda: detrc.compile(b"x", seed=1.5), "seed must be an int"),
        (lambda: detrc.compile(b"x", output=3), "output must be a path"),
        (lambda: detrc.inspect(3.0), "model must be a path"),
        (lambda: detrc.build(b"x", None), "output must be a path"),
        (lambda: detrc.build(b"x", "e.engine", shapes=[1]), "shapes must be a dict"),
    ],
)
def test_wrong_argument_types_are_type_errors_saying_what_is_accepted(call, accepted):
    with pytest.raises(TypeError, match=accepted.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_bad_option_values_are_usage_errors(detr_bytes, tmp_path):
    with pytest.raises(detrc.UsageError, match="external_data"):
        detrc.compile(detr_bytes, external_data="sometimes")
    with pytest.raises(detrc.UsageError, match="verify_runs=0"):
        detrc.compile(detr_bytes, verify_runs=0)
    with pytest.raises(detrc.UsageError, match="pass output="):
        detrc.compile(DETR)
    with pytest.raises(detrc.UsageError, match="batch="):
        detrc.compile(detr_bytes, batch="many")
    with pytest.raises(detrc.UsageError, match="input 'nope'"):
        detrc.compile(detr_bytes, input_shapes={"nope": [1, 3, 64, 96]})


def test_batch_dynamic_runs_each_image_as_the_traced_batch_did():
    # facebookresearch/detr traced at batch 2 with a dynamic axis (it runs at batch 2 only)
    src = ROOT / "fixtures" / "dynamic" / "detr_tiny_op17_b2_dyn.onnx"
    model, report = detrc.compile(src.read_bytes(), batch="dynamic", verify=True)
    assert report["batch"]["traced"] == 2
    assert report["verification"]["outputs"], report["verification"]
    ort = need_ort()
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    orig = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 3, 64, 96)).astype(np.float32)
    want = np.concatenate(
        [orig.run(None, {"images": images[i : i + 2]})[0] for i in (0, 2)]
    )
    for b in (1, 3, 4):
        got = np.concatenate(
            [sess.run(None, {"images": images[i : i + b]})[0] for i in range(0, 4, b)]
        )[:4]
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=f"batch {b}")


def test_input_shapes_fix_a_dynamic_batch_before_the_passes():
    src = ROOT / "fixtures" / "dynamic" / "detr_tiny_op17_b2_dyn.onnx"
    _, report = detrc.compile(src.read_bytes(), input_shapes={"images": "2x3x64x96"})
    assert report["ops_after"].get("Where", 0) == 0
    assert report["nodes_after"] < report["nodes_before"]


def test_a_path_output_is_written_atomically_with_external_data_on_request(tmp_path):
    out = tmp_path / "ext.onnx"
    res = detrc.compile(CNN, output=out, external_data="always")
    assert res.model == out and res.report["output"] == str(out)
    assert (tmp_path / "ext.onnx.data").is_file()
    # Read back through the path form (external data beside the file) and through bytes plus
    # base_dir (the data file found relative to it).
    again, _ = detrc.compile(out.read_bytes(), base_dir=tmp_path)
    direct, _ = detrc.compile(CNN.read_bytes())
    assert_same_outputs(direct, again)


def test_inspect_describes_the_model():
    m = onnx.load(str(DETR))
    info = detrc.inspect(m)
    assert info["kind"] == "model"
    assert info["model"] == "<onnx.ModelProto>"
    assert info["opset"] == 17
    assert [i["name"] for i in info["inputs"]] == [
        i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}
    ]
    assert [o["name"] for o in info["outputs"]] == [o.name for o in m.graph.output]
    assert info["inputs"][0]["type"].startswith("f32[")
    by_path = detrc.inspect(DETR)
    assert by_path["ops"] == info["ops"] and by_path["nodes"] == sum(info["ops"].values())
    compiled, report = detrc.compile(m)
    assert detrc.inspect(compiled)["ops"] == report["ops_after"]


def test_passes_lists_every_pass():
    ps = detrc.passes()
    names = [p["name"] for p in ps]
    assert len(names) == len(set(names)) and "dead-code" in names and "to-fp16" in names
    assert all(p["about"] for p in ps)
    assert {p["name"] for p in ps if not p["default"]} >= {"to-fp16"}
    assert any(p["detr_specific"] for p in ps)


def test_help_is_useful():
    doc = detrc.compile.__doc__
    for word in ("ModelProto", "passes", "skip", "verify", "batch", "report", "Raises"):
        assert word in doc, word
    assert detrc.build.__doc__ and "TensorRT-RTX" in detrc.build.__doc__


def test_compile_releases_the_gil(detr_bytes):
    """Another Python thread keeps running while a compile is inside the library."""
    ticks = []
    span = {}
    done = threading.Event()

    def work():
        span["t0"] = time.monotonic()
        detrc.compile(detr_bytes, verify=True)
        span["t1"] = time.monotonic()
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks.append(time.monotonic())
        time.sleep(0.001)
    t.join()
    t0, t1 = span["t0"], span["t1"]
    # Only the middle half: the first and last moments are Python code of the wrapper, which
    # shares the GIL either way.
    lo, hi = t0 + (t1 - t0) / 4, t1 - (t1 - t0) / 4
    inside = [x for x in ticks if lo < x < hi]
    assert len(inside) >= 5, f"{len(inside)} ticks in {hi - lo:.3f}s while compiling"


def test_a_model_error_is_catchable_and_the_interpreter_goes_on(detr_bytes):
    for bad in (b"garbage", b"\x08\x07", detr_bytes[: len(detr_bytes) // 2]):
        with pytest.raises(detrc.Error):
            detrc.compile(bad)
    assert detrc.compile(detr_bytes).report["nodes_after"] > 0


def test_gridsample_gather_rewrites_deformable_attention_with_the_same_outputs():
    rtdetr = ROOT / "fixtures" / "family" / "rtdetr_op17_b1.onnx"
    original = onnx.load(str(rtdetr))
    kept, _ = detrc.compile(original)
    assert histogram(kept).get("GridSample", 0) > 0
    gathered, report = detrc.compile(original, gridsample="gather", verify=True)
    assert "GridSample" not in histogram(gathered)
    assert report["verification"]["outputs"], report["verification"]
    with pytest.raises(detrc.UsageError, match="gridsample"):
        detrc.compile(original, gridsample="bilinear")


def test_precision_fp16_guards_a_planted_overflow(tmp_path):
    planted = ROOT / "fixtures/fp16/rtdetr_planted_op17_b1.onnx"
    # Plain to-fp16 loses every output to inf/NaN under emulated fp16 storage: a verification
    # error carrying the check's figures, and nothing written.
    out = tmp_path / "plain.onnx"
    with pytest.raises(detrc.VerificationError) as e:
        detrc.compile(str(planted), output=out, precision="fp16", fp16_guard=False)
    assert "not finite" in str(e.value)
    assert not out.exists()
    # Guarded: the FFN layers stay fp32, the scores stay close, the trtexec line is there.
    out = tmp_path / "guarded.onnx"
    _, report = detrc.compile(str(planted), output=out, precision="fp16")
    p = report["precision"]
    assert p["precision"] == "fp16"
    f16 = p["fp16"]
    assert f16["passed"] and len(f16["kept"]) >= 3, f16
    assert f16["detections"]["sorted_scores_sqnr_db"] > 30, f16["detections"]
    assert p["trtexec"].startswith("trtexec --onnx=") and "--stronglyTyped" in p["trtexec"]
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    assert {e.key: e.value for e in m.metadata_props}["detrc.precision"] == "fp16"


def test_precision_int8_needs_calibration_images(detr_bytes):
    with pytest.raises(detrc.UsageError, match="calibration"):
        detrc.compile(detr_bytes, precision="int8")
    with pytest.raises(detrc.UsageError, match="precision"):
        detrc.compile(detr_bytes, precision="fp12")
    model, report = detrc.compile(
        detr_bytes, precision="int8", calibration=ROOT / "examples/images"
    )
    ops = histogram(onnx.load_from_string(model))
    assert ops["QuantizeLinear"] > 10 and ops["DequantizeLinear"] > 10, ops
    assert report["precision"]["precision"] == "int8"
