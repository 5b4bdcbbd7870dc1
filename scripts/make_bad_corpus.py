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
