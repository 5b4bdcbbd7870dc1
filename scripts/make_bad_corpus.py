#!/usr/bin/env python3
"""Writes the hostile-input corpus in tests/corpus/bad/ from the small CNN fixture.

Every file is a model (or something posing as one) that detrc must refuse with a clear message,
or, for the few documented in tests/corpus/bad/README.md, compile without harm. Nothing is
random at run time: bit flips and junk bytes come from fixed seeds, so running this script again
reproduces the committed files byte for byte (tests/hostile_corpus.rs holds the expected message
of each file).

Usage: .venv/bin/python scripts/make_bad_corpus.py [--out tests/corpus/bad]
"""

import argparse
import copy
import math
import os
import random

import onnx
from onnx import TensorProto, helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "fixtures", "cnn_tiny_op17_b1.onnx")


def base_model():
    # Parsed from the serialized bytes, never via onnx.load: that would try to resolve external
    # data and run no checks we want anyway.
    m = onnx.ModelProto()
    with open(BASE, "rb") as f:
        m.ParseFromString(f.read())
    return m


def init(m, name):
    return next(t for t in m.graph.initializer if t.name == name)


def set_external(t, entries):
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    for k, v in entries:
        e = t.external_data.add()
        e.key = k
        e.value = v


def tiny_graph_model(nodes, inputs, outputs, initializers=(), opset=17):
    g = helper.make_graph(nodes, "bad", list(inputs), list(outputs), list(initializers))
    # make_model adds opset_import and ir_version; no checker runs.
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def f32_input(name, dims):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def build(out):
    files = {}
    good = open(BASE, "rb").read()

    # --- not protobuf, or not a whole one --------------------------------------------------
    files["empty.onnx"] = b""
    files["text.onnx"] = b"this is not an onnx model\nit is a text file\n"
    rng = random.Random(7)
    files["random_4k.onnx"] = bytes(rng.randrange(256) for _ in range(4096))
    # Cut inside the first field's header, inside the graph, in the middle of the initializers,
    # and inside the trailing opset_import.
    for cut in (7, 100, len(good) // 2, len(good) - 3):
        files[f"truncated_{cut}.onnx"] = good[:cut]

    # Bit flips anywhere in the file (structure or weights), and byte overwrites. Some of these
    # still decode into a valid model: see the README for what each one produces.
    for seed in (1, 2, 3, 4):
        rng = random.Random(seed)
        b = bytearray(good)
        for _ in range(seed * 4):
            pos = rng.randrange(len(b))
            b[pos] ^= 1 << rng.randrange(8)
        files[f"bitflip_seed{seed}.onnx"] = bytes(b)
    for seed in (5, 6):
        rng = random.Random(seed)
        b = bytearray(good)
        for _ in range(8):
            b[rng.randrange(len(b))] = rng.randrange(256)
        files[f"overwrite_seed{seed}.onnx"] = bytes(b)

    # --- model structure -------------------------------------------------------------------
    m = base_model()
    m.ClearField("graph")
    files["no_graph.onnx"] = m.SerializeToString()

    m = base_model()
    del m.opset_import[:]
    files["no_opset.onnx"] = m.SerializeToString()

    m = base_model()
    m.graph.node[2].op_type = ""
    files["no_op_type.onnx"] = m.SerializeToString()

    # A node reads a weight nobody defines (its initializer was dropped).
    m = base_model()
    keep = [t for t in m.graph.initializer if t.name != "conv2.weight"]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    files["missing_initializer.onnx"] = m.SerializeToString()

    m = base_model()
    m.graph.output[0].name = "nobody_makes_this"
    files["dangling_output.onnx"] = m.SerializeToString()

    # Two definitions of one tensor: a second initializer with an existing name, and two nodes
    # writing the same output.
    m = base_model()
    m.graph.initializer.append(copy.deepcopy(init(m, "fc.bias")))
    files["duplicate_initializer.onnx"] = m.SerializeToString()
    m = base_model()
    m.graph.node[3].output[0] = m.graph.node[2].output[0]
    files["duplicate_node_output.onnx"] = m.SerializeToString()

    # A -> B -> A.
    files["cycle.onnx"] = tiny_graph_model(
        [
            helper.make_node("Add", ["x", "b"], ["a"], name="add"),
            helper.make_node("Relu", ["a"], ["b"], name="relu"),
            helper.make_node("Identity", ["b"], ["y"], name="id"),
        ],
        [f32_input("x", [2])],
        [f32_input("y", [2])],
    ).SerializeToString()

    # Control flow: refused as unsupported, not mis-compiled.
    then_g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"])], "then", [], [f32_input("t", [2])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])], "else", [], [f32_input("e", [2])]
    )
    files["if_subgraph.onnx"] = tiny_graph_model(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["c"]),
            helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
        ],
        [f32_input("x", [2])],
        [f32_input("y", [2])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    ).SerializeToString()

    # --- tensor sizes ----------------------------------------------------------------------
    m = base_model()
    t = init(m, "fc.bias")
    del t.dims[:]
    t.dims.extend([10**12, 10**12])
    files["absurd_initializer_dims.onnx"] = m.SerializeToString()

    # A declared graph input of 2^62 rows: no such tensor can exist.
    m = base_model()
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 1 << 62
    files["absurd_input_dim.onnx"] = m.SerializeToString()

    m = base_model()
    t = init(m, "fc.weight")
    del t.dims[:]
    t.dims.extend([-10, -16])
    files["negative_initializer_dims.onnx"] = m.SerializeToString()

    m = base_model()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = -3
    files["negative_input_dim.onnx"] = m.SerializeToString()

    m = base_model()
    t = init(m, "conv1.bias")
    t.raw_data = t.raw_data[:-2]
    files["raw_data_length_mismatch.onnx"] = m.SerializeToString()

    # --- external data -----------------------------------------------------------------------
    m = base_model()
    set_external(init(m, "fc.weight"), [("location", "../../x"), ("offset", "0"), ("length", "640")])
    files["external_parent_dir.onnx"] = m.SerializeToString()

    m = base_model()
    set_external(init(m, "fc.weight"), [("location", "/etc/passwd"), ("length", "640")])
    files["external_absolute.onnx"] = m.SerializeToString()

    # The side file exists and is tiny; the tensor claims bytes far beyond its end.
    files["external_past_end.onnx.data"] = bytes(range(64))
    m = base_model()
    set_external(
        init(m, "fc.weight"),
        [("location", "external_past_end.onnx.data"), ("offset", "32"), ("length", "640")],
    )
    files["external_past_end.onnx"] = m.SerializeToString()

    # --- hostile values the pass pipeline must survive --------------------------------------
    # Each of these made an earlier detrc panic or try to allocate gigabytes; detrc now leaves
    # the odd node alone (no type, no folding) and compiles the model, or refuses it.

    # A strides list shorter than the kernel rank: shape inference indexed past its end.
    m = base_model()
    conv = m.graph.node[0]
    del conv.attribute[[a.name for a in conv.attribute].index("strides")]
    conv.attribute.append(helper.make_attribute("strides", [2]))
    files["conv_short_strides.onnx"] = m.SerializeToString()

    # A dilation of 2^63 - 2: the effective kernel size overflowed.
    m = base_model()
    conv = m.graph.node[4]
    del conv.attribute[[a.name for a in conv.attribute].index("dilations")]
    conv.attribute.append(helper.make_attribute("dilations", [(1 << 63) - 2, 1]))
    files["conv_huge_dilation.onnx"] = m.SerializeToString()

    # i64::MAX + 1 in a foldable Add: integer arithmetic overflowed in the constant folder.
    i64max = helper.make_tensor("big", TensorProto.INT64, [1], [(1 << 63) - 1])
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    files["int_overflow_fold.onnx"] = tiny_graph_model(
        [
            helper.make_node("Add", ["big", "one"], ["s"]),
            helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["x", "sf"], ["y"]),
        ],
        [f32_input("x", [1])],
        [f32_input("y", [1])],
        [i64max, one],
    ).SerializeToString()

    # Range from -2^63 + 1 to 2^63 - 1: its length overflowed.
    lo = helper.make_tensor("lo", TensorProto.INT64, [], [-(1 << 63) + 1])
    hi = helper.make_tensor("hi", TensorProto.INT64, [], [(1 << 63) - 1])
    step = helper.make_tensor("step", TensorProto.INT64, [], [1 << 62])
    files["range_overflow.onnx"] = tiny_graph_model(
        [
            helper.make_node("Range", ["lo", "hi", "step"], ["r"]),
            helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["rf"], ["t"], keepdims=1),
            helper.make_node("Add", ["x", "t"], ["y"]),
        ],
        [f32_input("x", [1])],
        [f32_input("y", [1])],
        [lo, hi, step],
    ).SerializeToString()

    # A Concat with no inputs (here: a Constant whose op type was changed): the folder read
    # its first input.
    files["concat_no_inputs.onnx"] = tiny_graph_model(
        [
            helper.make_node("Concat", [], ["c"], axis=0),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ],
        [f32_input("x", [1])],
        [f32_input("y", [1])],
    ).SerializeToString()

    # A Concat of constants of rank 2 and rank 1 (found by cargo fuzz on a DETR skeleton):
    # the folder handed them to ndarray, which asserts that every input has the axis.
    a = helper.make_tensor("a", TensorProto.FLOAT, [1, 2], [0.5, -1.5])
    b = helper.make_tensor("b", TensorProto.FLOAT, [2], [2.0, 3.0])
    files["concat_rank_mismatch.onnx"] = tiny_graph_model(
        [
            helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ],
        [f32_input("x", [1, 4])],
        [f32_input("y", [1, 4])],
        [a, b],
    ).SerializeToString()

    # Nearest Resize of an empty axis to a non-empty one: the index clamp got an empty range.
    empty = helper.make_tensor("empty", TensorProto.FLOAT, [1, 0], [])
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [2], [1, 4])
    files["resize_empty_axis.onnx"] = tiny_graph_model(
        [
            helper.make_node("Resize", ["empty", "", "", "sizes"], ["r"], mode="nearest"),
            helper.make_node("Add", ["x", "r"], ["y"]),
        ],
        [f32_input("x", [1, 4])],
        [f32_input("y", [1, 4])],
        [empty, sizes],
    ).SerializeToString()

    # Slicing 10 columns of a declared [1, 2^39] input: shape inference built a probe tensor of
    # the input's size (4 TiB).
    files["slice_huge_input.onnx"] = tiny_graph_model(
        [
            helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"]),
        ],
        [f32_input("x", [1, 1 << 39])],
        [f32_input("y", [1, 10])],
        [
            helper.make_tensor("st", TensorProto.INT64, [1], [0]),
            helper.make_tensor("en", TensorProto.INT64, [1], [10]),
            helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
        ],
    ).SerializeToString()

    # A Conv weight of 2^34 x 0 x 1 x 1 (empty, so the file is tiny) followed by a
    # BatchNormalization: fold-batchnorm sized its buffers by the 2^34 channels (64 GiB).
    bn = [helper.make_tensor(n, TensorProto.FLOAT, [1], [v]) for n, v in
          [("g", 1.0), ("b", 0.0), ("mu", 0.0), ("var", 1.0)]]
    files["empty_conv_weight.onnx"] = tiny_graph_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
            helper.make_node("BatchNormalization", ["c", "g", "b", "mu", "var"], ["y"]),
        ],
        [f32_input("x", [1, 0, 1, 1])],
        [f32_input("y", [1, 1 << 34, 1, 1])],
        [helper.make_tensor("w", TensorProto.FLOAT, [1 << 34, 0, 1, 1], [])] + bn,
    ).SerializeToString()

    # A Constant holding an empty tensor of [2^40, 2^20, 0]: folded into an initializer, it
    # made an output that detrc itself refuses to load (absurd dimensions).
    files["constant_empty_absurd.onnx"] = tiny_graph_model(
        [
            helper.make_node(
                "Constant", [], ["c"],
                value=helper.make_tensor("v", TensorProto.FLOAT, [1 << 40, 1 << 20, 0], [])),
            helper.make_node("Shape", ["c"], ["s"]),
            helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["sf"], ["t"], keepdims=1),
            helper.make_node("Add", ["x", "t"], ["y"]),
        ],
        [f32_input("x", [1])],
        [f32_input("y", [1])],
    ).SerializeToString()

    # Gather on a scalar: "axis 0" of a rank-0 tensor indexed past the end of its shape.
    files["gather_scalar.onnx"] = tiny_graph_model(
        [
            helper.make_node("Gather", ["x", "i"], ["g"], axis=0),
            helper.make_node("Add", ["g", "x"], ["y"]),
        ],
        [f32_input("x", [])],
        [f32_input("y", None)],
        [helper.make_tensor("i", TensorProto.INT64, [], [0])],
    ).SerializeToString()

    # Two linear layers reading a scalar: fuse-matmul took the last dimension of a rank-0 shape.
    def w(name, dims, v):
        return helper.make_tensor(name, TensorProto.FLOAT, dims, [v] * math.prod(dims))
    files["matmul_scalar_fusion.onnx"] = tiny_graph_model(
        [
            helper.make_node("MatMul", ["x", "w1"], ["m1"]),
            helper.make_node("Add", ["m1", "b1"], ["a1"]),
            helper.make_node("MatMul", ["x", "w2"], ["m2"]),
            helper.make_node("Add", ["m2", "b2"], ["a2"]),
            helper.make_node("Relu", ["a1"], ["y1"]),
            helper.make_node("Relu", ["a2"], ["y2"]),
        ],
        [f32_input("x", [])],
        [f32_input("y1", None), f32_input("y2", None)],
        [w("w1", [2, 3], 0.5), w("w2", [2, 3], 0.25), w("b1", [3], 0.1), w("b2", [3], 0.2)],
    ).SerializeToString()

    # A declared intermediate shape of 2^62: every size computed from it overflowed.
    m = base_model()
    m.graph.value_info.append(
        helper.make_tensor_value_info(m.graph.node[7].output[0], TensorProto.FLOAT,
                                      [1, 16, 1 << 62, 1]))
    files["absurd_value_info.onnx"] = m.SerializeToString()

    os.makedirs(out, exist_ok=True)
    for name, data in sorted(files.items()):
        assert len(data) < 100_000, name
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(files)} files to {os.path.relpath(out, ROOT)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "corpus", "bad"))
    build(ap.parse_args().out)
