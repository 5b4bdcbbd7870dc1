//! The generic simplification passes on hand-built graphs: where each must fire, where it must
//! not, outputs equal under the reference runtime, and the IR before and after as insta
//! snapshots (snapshots/unit__*.snap).

mod common;

use common::*;
use detrc::ir::Dim;
use detrc::pass::Outcome;
use detrc::passes::*;

fn changed(o: &Outcome) -> bool {
    matches!(o, Outcome::Changed(_))
}

/// LayerNorm as torch exports it below opset 17 (over the last axis of [2, 5, 8]).
fn decomposed_layernorm(opset: i64, variant: &str) -> M {
    let mean_attrs = || {
        if opset >= 18 {
            vec![]
        } else {
            vec![ints_attr("axes", &[-1])]
        }
    };
    let mut m = M::new(opset)
        .input("x", &[2, 5, 8])
        .output("y")
        .f32("two", &[], &[2.0])
        .f32("eps", &[], &[1e-5])
        .rand("gamma", &[8], 1)
        .rand("beta", &[8], 2)
        .node("ReduceMean", &["x"], &["mean"], mean_attrs())
        .node("Sub", &["x", "mean"], &["d"], vec![]);
    m = if variant == "mul" {
        m.node("Mul", &["d", "d"], &["sq"], vec![])
    } else {
        m.node("Pow", &["d", "two"], &["sq"], vec![])
    };
    m = m
        .node("ReduceMean", &["sq"], &["var"], mean_attrs())
        .node("Add", &["eps", "var"], &["ve"], vec![])
        .node("Sqrt", &["ve"], &["std"], vec![]);
    m = if variant == "mul" {
        m.node("Reciprocal", &["std"], &["inv"], vec![])
            .node("Mul", &["inv", "d"], &["n"], vec![])
    } else {
        m.node("Div", &["d", "std"], &["n"], vec![])
    };
    m.node("Mul", &["gamma", "n"], &["s"], vec![])
        .node("Add", &["s", "beta"], &["y0"], vec![])
        .node("Relu", &["y0"], &["y"], vec![])
}

#[test]
fn fuse_layernorm_fuses_the_opset_12_export_and_raises_the_opset() {
    // A Squeeze with its axes as an attribute and a last-axis Softmax: both must be rewritten
    // (or kept meaning the same) when the opset goes from 12 to 17.
    let m = decomposed_layernorm(12, "pow")
        .output("z")
        .output("w")
        .node("Squeeze", &["mean"], &["z0"], vec![ints_attr("axes", &[2])])
        .node("Softmax", &["z0"], &["z"], vec![int_attr("axis", 1)])
        .node("Softmax", &["x"], &["w"], vec![int_attr("axis", 2)]);
    // The mean is read outside the norm here: no fusion may happen, and nothing changes.
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let before = g.dump();
    assert_eq!(
        apply(&mut g, &fuse_layernorm::FuseLayerNorm),
        Outcome::Unchanged
    );
    assert_eq!(g.dump(), before);

    let m = decomposed_layernorm(12, "pow")
        .output("w")
        .i64("ax", &[1], &[0])
        .node("Unsqueeze", &["y"], &["w0"], vec![ints_attr("axes", &[0])])
        .node("Softmax", &["w0"], &["w"], vec![int_attr("axis", 3)]);
    let (g, o) = check_snap("fuse_layernorm_op12", &m, &fuse_layernorm::FuseLayerNorm);
    assert!(changed(&o), "{o:?}");
    assert_eq!(g.opset(), 17);
    assert_eq!(op_count(&g, "LayerNormalization"), 1);
    for op in ["ReduceMean", "Pow", "Sqrt", "Div", "Sub"] {
        assert_eq!(op_count(&g, op), 0, "{op} left:\n{}", g.dump());
    }
}

#[test]
fn fuse_layernorm_fuses_the_reciprocal_and_square_by_mul_variant() {
    let (g, o) = check_snap(
        "fuse_layernorm_reciprocal",
        &decomposed_layernorm(17, "mul"),
        &fuse_layernorm::FuseLayerNorm,
    );
    assert!(changed(&o), "{o:?}");
    assert_eq!(op_count(&g, "LayerNormalization"), 1);
    assert_eq!(g.num_ops(), 2, "the norm and the Relu:\n{}", g.dump());
}

#[test]
fn fuse_layernorm_refuses_to_raise_an_opset_that_would_change_a_softmax() {
    // Before opset 13, Softmax(axis=1) of a rank-3 tensor normalizes over axes 1 and 2.
    let m = decomposed_layernorm(12, "pow").output("w").node(
        "Softmax",
        &["x"],
        &["w"],
        vec![int_attr("axis", 1)],
    );
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let before = g.dump();
    let o = apply(&mut g, &fuse_layernorm::FuseLayerNorm);
    match &o {
        Outcome::NotApplicable(why) => assert!(why.contains("Softmax"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(g.dump(), before);
    assert_eq!(g.opset(), 12);
}

#[test]
fn fold_constants_folds_static_dims_of_a_dynamic_batch_shape() {
    // Reshape(x, [Shape(x)[0], -1]) of x: [batch, 3, 4]: the batch stays symbolic, the rest
    // is known, and the output type is [batch, 12].
    let m = M::new(17)
        .input_dims("x", &["batch", "3", "4"])
        .output("y")
        .output("c")
        .i64("i0", &[], &[0])
        .i64("i1", &[1], &[1])
        .i64("ax", &[1], &[0])
        .i64("m1", &[1], &[-1])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Gather", &["s", "i0"], &["b"], vec![int_attr("axis", 0)])
        .node("Gather", &["s", "i1"], &["c0"], vec![int_attr("axis", 0)])
        .node("Cast", &["c0"], &["c"], vec![int_attr("to", 1)])
        .node("Unsqueeze", &["b", "ax"], &["b1"], vec![])
        .node(
            "Concat",
            &["b1", "m1"],
            &["shape"],
            vec![int_attr("axis", 0)],
        )
        .node("Reshape", &["x", "shape"], &["y"], vec![]);
    let (g, o) = check_snap("fold_dynamic_batch", &m, &fold_constants::FoldConstants);
    assert!(changed(&o));
    let dump = g.dump();
    // The channel count became a constant; the batch still comes from Shape.
    assert_eq!(op_count(&g, "Gather"), 1, "{dump}");
    assert!(dump.contains("y: f32[batch,12]"), "{dump}");
}

#[test]
fn infer_shapes_types_the_detr_family_ops() {
    let m = M::new(17)
        .input("x", &[1, 4, 6, 8])
        .input("grid", &[1, 10, 3, 2])
        .input("s", &[1, 300, 80])
        .output("gs")
        .output("tv")
        .output("ti")
        .output("ge")
        .output("e")
        .i64("k", &[1], &[20])
        .i64("gi", &[1, 20, 80], &[0; 1600])
        .node("GridSample", &["x", "grid"], &["gs"], vec![])
        .node(
            "TopK",
            &["s", "k"],
            &["tv", "ti"],
            vec![int_attr("axis", 1)],
        )
        .node(
            "GatherElements",
            &["s", "gi"],
            &["ge"],
            vec![int_attr("axis", 1)],
        )
        .node(
            "Einsum",
            &["s", "s"],
            &["e"],
            vec![detrc::eval::attrs::make_string("equation", "bqc,bkc->bqk")],
        );
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let dump = g.dump();
    for want in [
        "gs: f32[1,4,10,3]",
        "tv: f32[1,20,80]",
        "ti: i64[1,20,80]",
        "ge: f32[1,20,80]",
        "e: f32[1,300,300]",
    ] {
        assert!(dump.contains(want), "{want} in\n{dump}");
    }
}

#[test]
fn fold_constants_evaluates_scatter_gather_and_friends() {
    let m = M::new(17)
        .input("x", &[2, 3])
        .output("y")
        .rand("data", &[2, 3], 1)
        .i64("nd_idx", &[1, 1], &[1])
        .rand("nd_upd", &[1, 3], 2)
        .i64("ge_idx", &[2, 3], &[2, 0, 1, 1, 2, 0])
        .i64("mod_a", &[2, 3], &[-7, 7, 5, -5, 9, 10])
        .i64("mod_b", &[], &[3])
        .f32("lo", &[], &[-0.2])
        .f32("hi", &[], &[0.3])
        .node("ScatterND", &["data", "nd_idx", "nd_upd"], &["a"], vec![])
        .node(
            "GatherElements",
            &["a", "ge_idx"],
            &["b"],
            vec![int_attr("axis", 1)],
        )
        .node("Trilu", &["b"], &["c"], vec![int_attr("upper", 1)])
        .node("Clip", &["c", "lo", "hi"], &["d"], vec![])
        .node("Mod", &["mod_a", "mod_b"], &["m"], vec![])
        .node("Cast", &["m"], &["mf"], vec![int_attr("to", 1)])
        .node("ArgMax", &["d"], &["am"], vec![int_attr("axis", 1)])
        .node("Cast", &["am"], &["amf"], vec![int_attr("to", 1)])
        .node("Add", &["d", "mf"], &["e"], vec![])
        .node("Add", &["e", "amf"], &["f"], vec![])
        .node("Add", &["x", "f"], &["y"], vec![]);
    let (g, o) = check_snap("fold_scatter_gather", &m, &fold_constants::FoldConstants);
    assert!(changed(&o));
    assert_eq!(g.num_ops(), 1, "only the last Add stays:\n{}", g.dump());
}

#[test]
fn merge_reshapes_makes_one_reshape_of_a_chain() {
    let m = M::new(17)
        .input("x", &[2, 3, 4])
        .output("y")
        .i64("s1", &[2], &[6, 4])
        .i64("ax", &[1], &[0])
        .i64("s2", &[3], &[0, 4, 6])
        .node("Reshape", &["x", "s1"], &["a"], vec![])
        .node("Unsqueeze", &["a", "ax"], &["b"], vec![])
        .node("Flatten", &["b"], &["c"], vec![int_attr("axis", 2)])
        .node("Reshape", &["c", "s2"], &["d"], vec![])
        .node("Relu", &["d"], &["y"], vec![]);
    let (mut g, o) = check_snap("merge_reshapes", &m, &merge_reshapes::MergeReshapes);
    assert!(changed(&o));
    apply(&mut g, &dead_code::DeadCode);
    assert_eq!(op_count(&g, "Reshape"), 1, "{}", g.dump());
    assert_eq!(g.num_ops(), 2);
}

#[test]
fn merge_transposes_composes_permutations() {
    let m = M::new(17)
        .input("x", &[2, 3, 4, 5])
        .output("y")
        .output("z")
        .node(
            "Transpose",
            &["x"],
            &["a"],
            vec![ints_attr("perm", &[0, 2, 1, 3])],
        )
        .node(
            "Transpose",
            &["a"],
            &["b"],
            vec![ints_attr("perm", &[0, 1, 3, 2])],
        )
        .node("Relu", &["b"], &["y"], vec![])
        .node(
            "Transpose",
            &["a"],
            &["z"],
            vec![ints_attr("perm", &[0, 2, 1, 3])],
        );
    let (g, o) = check_snap("merge_transposes", &m, &merge_transposes::MergeTransposes);
    assert!(changed(&o));
    // z = x (the identity permutation is left for eliminate-noops).
    assert!(g.dump().contains("perm=[0,1,2,3]"), "{}", g.dump());
}

#[test]
fn simplify_where_turns_constant_masks_into_arithmetic() {
    let m = M::new(17)
        .input("x", &[2, 3])
        .output("a")
        .output("b")
        .output("c")
        .bools("all", &[2, 3], &[true; 6])
        .bools("some", &[1, 3], &[true, false, false])
        .f32("zero", &[], &[0.0])
        .f32("ninf", &[], &[f32::NEG_INFINITY])
        .f32("one", &[], &[1.0])
        .node("Where", &["all", "x", "one"], &["a"], vec![])
        .node("Where", &["some", "zero", "x"], &["b"], vec![])
        .node("Where", &["some", "x", "ninf"], &["c0"], vec![])
        .node("Softmax", &["c0"], &["c"], vec![int_attr("axis", -1)]);
    let (g, o) = check_snap("simplify_where", &m, &simplify_where::SimplifyWhere);
    assert!(changed(&o));
    assert_eq!(op_count(&g, "Where"), 0, "{}", g.dump());
}

#[test]
fn simplify_where_removes_the_softmax_nan_guard_only_without_a_dead_row() {
    let guard = |mask_rows: &[f32]| {
        M::new(17)
            .input("q", &[1, 2, 4])
            .input("k", &[1, 4, 3])
            .output("y")
            .f32("mask", &[1, 2, 3], mask_rows)
            .f32("zero", &[], &[0.0])
            .node("MatMul", &["q", "k"], &["s"], vec![])
            .node("Add", &["s", "mask"], &["sm"], vec![])
            .node("Softmax", &["sm"], &["p"], vec![int_attr("axis", -1)])
            .node("IsNaN", &["p"], &["nan"], vec![])
            .node("Where", &["nan", "zero", "p"], &["y"], vec![])
    };
    let ninf = f32::NEG_INFINITY;
    let (g, o) = check_snap(
        "simplify_where_guard",
        &guard(&[0.0, ninf, 0.0, ninf, 0.0, 0.0]),
        &simplify_where::SimplifyWhere,
    );
    assert!(changed(&o));
    assert_eq!(op_count(&g, "Where"), 0);
    // A fully masked row gives NaN, which the guard turns into 0: it must stay.
    let mut g = guard(&[0.0, 0.0, 0.0, ninf, ninf, ninf]).graph();
    apply(&mut g, &infer_shapes::InferShapes);
    assert_eq!(
        apply(&mut g, &simplify_where::SimplifyWhere),
        Outcome::Unchanged
    );
    let _ = Dim::Unknown;
}
