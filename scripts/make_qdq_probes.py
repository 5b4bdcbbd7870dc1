#!/usr/bin/env python3
"""Small Q/DQ models that probe what TensorRT-RTX accepts (see docs/int8.md).

Each is Conv -> Relu -> Flatten -> Gemm on a [1, 3, 16, 16] input, written to OUT/<name>.onnx
and marked `detrc.compiled` so `detrc build` takes it as it is:

- int8:          int8 activations and per-channel int8 weights (what `detrc quantize` makes)
- int8_weights:  int8 weights only (DequantizeLinear on the weights, float activations)
- int8_bias32:   int8 as above plus an INT32 bias through DequantizeLinear (what
                 onnxruntime's quantize_static makes by default)
- fp8:           FLOAT8E4M3FN activations and per-channel weights (opset 19)
- fp8_weights:   FLOAT8E4M3FN weights only
- int4_weights:  INT4 per-channel weights only (opset 21)

Usage: make_qdq_probes.py OUT
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
B1 = RNG.standard_normal(8).astype(np.float32) * 0.1
W2 = RNG.standard_normal((10, 8 * 16 * 16)).astype(np.float32) * 0.05
B2 = RNG.standard_normal(10).astype(np.float32) * 0.1


def qtensor(name, w, kind, axis=0):
    """Per-channel symmetric weights: (initializers, the dequantized tensor's name, node)."""
    amax = np.abs(w).reshape(w.shape[axis], -1).max(axis=1) if axis == 0 else \
        np.abs(w).max(axis=0)
    if kind == "int8":
        scale = (amax / 127).astype(np.float32)
        shape = [-1] + [1] * (w.ndim - 1)
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        qt = numpy_helper.from_array(q, name + "_q")
        zp = numpy_helper.from_array(np.zeros(len(scale), np.int8), name + "_zp")
    elif kind == "int4":
        scale = (amax / 7).astype(np.float32)
        shape = [-1] + [1] * (w.ndim - 1)
        q = np.clip(np.round(w / scale.reshape(shape)), -7, 7).astype(np.int8)
        qt = helper.make_tensor(name + "_q", TensorProto.INT4, q.shape, q.flatten().tolist())
        zp = helper.make_tensor(name + "_zp", TensorProto.INT4, [len(scale)], [0] * len(scale))
    else:
        scale = (amax / 448).astype(np.float32)
        shape = [-1] + [1] * (w.ndim - 1)
        v = (w / scale.reshape(shape)).astype(np.float32)
        qt = helper.make_tensor(name + "_q", TensorProto.FLOAT8E4M3FN, v.shape,
                                v.flatten().tolist())
        zp = helper.make_tensor(name + "_zp", TensorProto.FLOAT8E4M3FN, [len(scale)],
                                [0.0] * len(scale))
    st = numpy_helper.from_array(scale, name + "_scale")
    node = helper.make_node("DequantizeLinear", [qt.name, st.name, zp.name], [name + "_dq"],
                            axis=axis)
    return [qt, st, zp], name + "_dq", node


def act_qdq(x, amax, kind):
    """Q/DQ of an activation with a per-tensor scale."""
    if kind == "int8":
        s, zp = amax / 127, numpy_helper.from_array(np.array(0, np.int8), x + "_zp")
    else:
        s = amax / 448
        zp = helper.make_tensor(x + "_zp", TensorProto.FLOAT8E4M3FN, [], [0.0])
    st = numpy_helper.from_array(np.array(s, np.float32), x + "_scale")
    return [st, zp], x + "_dq", [
        helper.make_node("QuantizeLinear", [x, st.name, zp.name], [x + "_q"]),
        helper.make_node("DequantizeLinear", [x + "_q", st.name, zp.name], [x + "_dq"]),
    ]


def model(kind: str, acts: bool, bias32: bool = False):
    inits, nodes = [], []
    x, h = "x", "h"
    if acts:
        i, x, n = act_qdq("x", 3.0, kind)
        inits += i
        nodes += n
    i, w1, n = qtensor("w1", W1, kind)
    inits += i
    nodes.append(n)
    if bias32:
        # onnxruntime's bias quantization: int32 values, scale = input scale * weight scale.
        sw = np.abs(W1).reshape(8, -1).max(axis=1) / 127
        sb = (sw * (3.0 / 127)).astype(np.float32)
        inits += [numpy_helper.from_array(np.round(B1 / sb).astype(np.int32), "b1_q"),
                  numpy_helper.from_array(sb, "b1_scale"),
                  numpy_helper.from_array(np.zeros(8, np.int32), "b1_zp")]
        nodes.append(helper.make_node("DequantizeLinear", ["b1_q", "b1_scale", "b1_zp"],
                                      ["b1"], axis=0))
    else:
        inits.append(numpy_helper.from_array(B1, "b1"))
    nodes += [helper.make_node("Conv", [x, w1, "b1"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("Flatten", ["r"], [h])]
    if acts:
        i, h, n = act_qdq("h", 2.0, kind)
        inits += i
        nodes += n
    i, w2, n = qtensor("w2", W2, kind)
    inits += i
    nodes.append(n)
    inits.append(numpy_helper.from_array(B2, "b2"))
    nodes.append(helper.make_node("Gemm", [h, w2, "b2"], ["y"], transB=1))
    g = helper.make_graph(nodes, "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                          inits)
    opset = 21 if kind == "int4" else (19 if kind == "fp8" else 17)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10 if opset == 21 else 9
    helper.set_model_props(m, {"detrc.compiled": "probe"})
    onnx.checker.check_model(m)
    return m


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, m in [("int8", model("int8", True)),
                    ("int8_weights", model("int8", False)),
                    ("int8_bias32", model("int8", True, bias32=True)),
                    ("fp8", model("fp8", True)),
                    ("fp8_weights", model("fp8", False)),
                    ("int4_weights", model("int4", False))]:
        onnx.save(m, str(out / f"{name}.onnx"))
        print(out / f"{name}.onnx")


if __name__ == "__main__":
    main()
