"""Shared helpers of the Python package's tests (run by scripts/test_python.sh).

The tests run against the installed wheel, never the source tree: the checkout's python/
folder is not on sys.path (see pytest.ini's rootdir handling in test_python.sh), so
`import detrc` is the package pip installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
DETR = FIXTURES / "detr_tiny_op17_b1.onnx"
CNN = FIXTURES / "cnn_tiny_op17_b1.onnx"


def required(var: str) -> bool:
    return os.environ.get(var, "") not in ("", "0")


def need_ort():
    """onnxruntime, or a failure when DETRC_REQUIRE_ORT says the cross-checks must run."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if required("DETRC_REQUIRE_ORT"):
            pytest.fail("onnxruntime is not installed but DETRC_REQUIRE_ORT is set")
        pytest.skip("onnxruntime is not installed")
    import onnxruntime

    return onnxruntime


_NP = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def ort_run(model: bytes, seed: int, feeds=None):
    """Runs encoded ONNX on onnxruntime's CPU provider with its own graph optimizations off
    (so it rewrites nothing); returns (feeds, {output name: array})."""
    ort = need_ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    if feeds is None:
        rng = np.random.default_rng(seed)
        feeds = {}
        for i in sess.get_inputs():
            assert all(isinstance(d, int) for d in i.shape), f"{i.name}: dynamic shape {i.shape}"
            dt = _NP[i.type]
            if np.issubdtype(dt, np.floating):
                feeds[i.name] = rng.standard_normal(i.shape).astype(dt)
            elif dt is np.bool_:
                feeds[i.name] = rng.integers(0, 2, i.shape).astype(bool)
            else:
                feeds[i.name] = rng.integers(0, 10, i.shape).astype(dt)
    names = [o.name for o in sess.get_outputs()]
    return feeds, dict(zip(names, sess.run(names, feeds)))


def assert_same_outputs(original: bytes, compiled: bytes, seeds=(0, 1), atol=1e-4, rtol=1e-4):
    """Every output of `original` is in `compiled` with the same shape and values within
    |a - b| <= atol + rtol * |a|, on each seeded input set."""
    for seed in seeds:
        feeds, a = ort_run(original, seed)
        _, b = ort_run(compiled, seed, feeds)
        assert a, "the original model has no outputs"
        for name, x in a.items():
            assert name in b, f"output {name!r} missing from the compiled model"
            y = b[name]
            assert x.shape == y.shape, f"{name}: shape {x.shape} vs {y.shape}"
            np.testing.assert_allclose(y, x, atol=atol, rtol=rtol, err_msg=f"{name} seed {seed}")


@pytest.fixture(scope="session")
def detr_bytes() -> bytes:
    return DETR.read_bytes()
