//! Each pass on tiny hand-built graphs: where it must fire, where it must not, that the
//! outputs stay the same, and what the IR looks like after (insta snapshots in snapshots/).

mod common;

use common::*;
use detrc::pass::{Outcome, Pass};
use detrc::passes::*;

fn snap(name: &str, text: String) {
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, text);
    });
}

/// Runs `pass` after shape inference; checks validity and numerics; snapshots before/after.
fn check(name: &str, m: &M, pass: &dyn Pass) -> (detrc::ir::Graph, Outcome) {
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let before = g.clone();
    let o = apply(&mut g, pass);
    assert_same_outputs_graph(&before, &g);
    snap(
        &format!("unit__{name}"),
        format!(
            "--- before\n{}--- after ({o:?})\n{}",
            before.dump(),
            g.dump()
        ),
    );
    (g, o)
}

fn changed(o: &Outcome) -> bool {
    matches!(o, Outcome::Changed(_))
}

#[test]
fn fold_constants_folds_shape_arithmetic_of_static_inputs() {
    let m = M::new(17)
        .input("x", &[2, 3, 4])
        .output("y")
        .i64("idx", &[], &[-1])
        .i64("ax", &[1], &[0])
        .node("Shape", &["x"], &["s"], vec![])
        .node(
            "Gather",
            &["s", "idx"],
            &["last"],
            vec![int_attr("axis", 0)],
        )
        .node("Unsqueeze", &["last", "ax"], &["last1"], vec![])
        .i64("minus1", &[1], &[-1])
        .node(
            "Concat",
            &["minus1", "last1"],
            &["shape"],
            vec![int_attr("axis", 0)],
        )
        .node("Reshape", &["x", "shape"], &["y"], vec![]);
    let (g, o) = check("fold_shape_arith", &m, &fold_constants::FoldConstants);
    assert!(changed(&o));
    assert_eq!(g.num_ops(), 1, "only the Reshape stays");
}

#[test]
fn fold_constants_leaves_computed_values_and_respects_the_budget() {
    // Expand of a scalar to 4 MB would inflate the model: over the 1 MiB budget.
    let m = M::new(17)
        .input("x", &[1024, 1024])
        .output("y")
        .f32("one", &[], &[1.5])
        .i64("shape", &[2], &[1024, 1024])
        .node("Expand", &["one", "shape"], &["big"], vec![])
        .node("Mul", &["x", "big"], &["y"], vec![]);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let o = apply(&mut g, &fold_constants::FoldConstants);
    assert_eq!(o, Outcome::Unchanged);
    assert_eq!(op_count(&g, "Expand"), 1);
}

#[test]
fn fold_constants_leaves_ops_it_cannot_evaluate() {
    let m = M::new(17)
        .input("x", &[2])
        .output("y")
        .rand("a", &[2, 2], 1)
        .rand("b", &[2, 2], 2)
        .node("Einsum", &["a", "b"], &["c"], vec![])
        .node("Add", &["x", "c"], &["y"], vec![]);
    let mut g = m.graph();
    let o = apply(&mut g, &fold_constants::FoldConstants);
    assert_eq!(o, Outcome::Unchanged);
    assert_eq!(op_count(&g, "Einsum"), 1);
}

#[test]
fn eliminate_noops_removes_identity_mul_one_add_zero_same_shape_reshape() {
    let m = M::new(17)
        .input("x", &[2, 3])
        .output("y")
        .f32("ones", &[3], &[1.0, 1.0, 1.0])
        .f32("zero", &[], &[0.0])
        .i64("shape", &[2], &[2, 3])
        .node("Identity", &["x"], &["a"], vec![])
        .node("Mul", &["a", "ones"], &["b"], vec![])
        .node("Add", &["zero", "b"], &["c"], vec![])
        .node("Reshape", &["c", "shape"], &["d"], vec![])
        .node("Relu", &["d"], &["y"], vec![]);
    let (g, o) = check("noops", &m, &eliminate_noops::EliminateNoops);
    assert!(changed(&o));
    assert_eq!(g.num_ops(), 1);
}

#[test]
fn eliminate_noops_resolves_a_where_on_a_uniform_constant_condition() {
    // masked_fill(x, mask, 0) with a mask of nothing to mask (all false) is x; all true picks
    // the other branch; a mixed mask, or a branch the condition would broadcast, stays.
    let m = M::new(17)
        .input("x", &[1, 4, 3])
        .output("y")
        .output("z")
        .output("w")
        .output("v")
        .bool("none", &[1, 4, 1], &[false; 4])
        .bool("all", &[1, 4, 1], &[true; 4])
        .bool("some", &[1, 4, 1], &[true, false, false, false])
        .f32("zero", &[], &[0.0])
        .rand("b", &[1, 1, 3], 3)
        .node("Relu", &["x"], &["r"], vec![])
        .node("Where", &["none", "zero", "r"], &["p"], vec![])
        .node("Where", &["all", "r", "zero"], &["q"], vec![])
        .node("Mul", &["p", "q"], &["y"], vec![])
        .node("Sub", &["p", "q"], &["z"], vec![])
        .node("Where", &["some", "zero", "r"], &["w"], vec![])
        .node("Where", &["none", "r", "b"], &["v"], vec![]);
    let (g, o) = check("noops_uniform_where", &m, &eliminate_noops::EliminateNoops);
    assert!(changed(&o));
    // Two picked x; the mixed mask and the broadcast [1,1,3] branch stay.
    assert_eq!(op_count(&g, "Where"), 2);
}

#[test]
fn eliminate_noops_keeps_broadcasting_mul_by_one_and_real_scales() {
    // x*1 that broadcasts [3] up to [2,3] changes the shape: not a no-op.
    let m = M::new(17)
        .input("x", &[3])
        .output("y")
        .output("z")
        .f32("ones", &[2, 3], &[1.0; 6])
        .f32("half", &[], &[0.5])
        .node("Mul", &["x", "ones"], &["y"], vec![])
        .node("Mul", &["x", "half"], &["z"], vec![]);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let o = apply(&mut g, &eliminate_noops::EliminateNoops);
    assert_eq!(o, Outcome::Unchanged);
    assert_eq!(op_count(&g, "Mul"), 2);
}

#[test]
fn cse_merges_twins_but_not_different_attributes() {
    let m = M::new(17)
        .input("x", &[2, 3])
        .output("y")
        .node("Relu", &["x"], &["a"], vec![])
        .node("Relu", &["x"], &["b"], vec![])
        .node("Softmax", &["x"], &["c"], vec![int_attr("axis", 0)])
        .node("Softmax", &["x"], &["d"], vec![int_attr("axis", 1)])
        .node("Sum", &["a", "b", "c", "d"], &["y"], vec![]);
    let (g, o) = check("cse", &m, &cse::Cse);
    assert!(changed(&o));
    assert_eq!(op_count(&g, "Relu"), 1);
    assert_eq!(op_count(&g, "Softmax"), 2);
}

#[test]
fn dead_code_removes_unused_nodes_and_initializers() {
    let m = M::new(17)
        .input("x", &[2])
        .output("y")
        .rand("unused", &[4], 3)
        .node("Relu", &["x"], &["y"], vec![])
        .node("Sigmoid", &["x"], &["dead"], vec![]);
    let (g, o) = check("dead_code", &m, &dead_code::DeadCode);
    assert!(changed(&o));
    assert_eq!(g.num_ops(), 1);
    assert_eq!(g.export().graph.unwrap().initializer.len(), 0);
}

fn conv_bn(extra: &str) -> M {
    let m = M::new(17)
        .input("x", &[1, 2, 5, 5])
        .output("y")
        .rand("w", &[3, 2, 3, 3], 10)
        .rand("b", &[3], 11)
        .node(
            "Conv",
            &["x", "w", "b"],
            &["c"],
            vec![ints_attr("pads", &[1, 1, 1, 1])],
        );
    match extra {
        "bn" => m
            .rand("g", &[3], 12)
            .rand("beta", &[3], 13)
            .rand("mean", &[3], 14)
            .f32("var", &[3], &[0.5, 1.5, 2.0])
            .node(
                "BatchNormalization",
                &["c", "g", "beta", "mean", "var"],
                &["y"],
                vec![],
            ),
        "frozen" => m
            .rand("s", &[1, 3, 1, 1], 15)
            .rand("t", &[1, 3, 1, 1], 16)
            .node("Mul", &["c", "s"], &["m"], vec![])
            .node("Add", &["m", "t"], &["y"], vec![]),
        _ => m
            .rand("s", &[1, 1, 5, 1], 15)
            .node("Mul", &["c", "s"], &["y"], vec![]),
    }
}

#[test]
fn fold_batchnorm_folds_batchnormalization_and_frozen_mul_add() {
    for kind in ["bn", "frozen"] {
        let (g, o) = check(
            &format!("fold_bn_{kind}"),
            &conv_bn(kind),
            &fold_batchnorm::FoldBatchNorm,
        );
        assert!(changed(&o), "{kind}");
        assert_eq!(g.num_ops(), 1, "{kind}: only the Conv stays");
    }
}

#[test]
fn fold_batchnorm_does_not_fold_a_spatially_varying_scale() {
    let mut g = conv_bn("spatial").graph();
    apply(&mut g, &infer_shapes::InferShapes);
    assert_eq!(
        apply(&mut g, &fold_batchnorm::FoldBatchNorm),
        Outcome::Unchanged
    );
}

#[test]
fn canonicalize_gather_makes_negative_indices_positive() {
    let m = M::new(17)
        .input("x", &[4, 3])
        .output("y")
        .i64("k", &[2], &[-1, -4])
        .node("Gather", &["x", "k"], &["y"], vec![int_attr("axis", 0)]);
    let (g, o) = check("canon_gather", &m, &canonicalize_gather::CanonicalizeGather);
    assert!(changed(&o));
    let dump = g.dump();
    assert!(dump.contains("= [3,0]"), "{dump}");
}

/// A miniature of DETR's head: 3 decoder outputs stacked, heads on the stack, Gather(-1).
fn mini_detr(opset: i64, gather_index: i64) -> M {
    let unsq = |m: M, i: &str, o: &str| {
        if opset >= 13 {
            m.node("Unsqueeze", &[i, "ax0"], &[o], vec![])
        } else {
            m.node("Unsqueeze", &[i], &[o], vec![ints_attr("axes", &[0])])
        }
    };
    let mut m = M::new(opset)
        .input("x", &[5, 1, 4])
        .output("logits")
        .output("boxes")
        .i64("ax0", &[1], &[0])
        .i64("k", &[], &[gather_index])
        .rand("w1", &[4, 4], 1)
        .rand("w2", &[4, 4], 2)
        .rand("wc", &[4, 7], 3)
        .rand("bc", &[7], 4)
        .rand("wb", &[4, 4], 5)
        .rand("bb", &[4], 6)
        .rand("ln_s", &[4], 7)
        .rand("ln_b", &[4], 8)
        .node("MatMul", &["x", "w1"], &["l0"], vec![])
        .node("MatMul", &["l0", "w2"], &["l1"], vec![])
        .node("Relu", &["l1"], &["l2"], vec![]);
    for i in 0..3 {
        let (src, n, u) = (format!("l{i}"), format!("n{i}"), format!("u{i}"));
        m = m.node(
            "LayerNormalization",
            &[&src, "ln_s", "ln_b"],
            &[&n],
            vec![int_attr("axis", -1)],
        );
        m = unsq(m, &n, &u);
    }
    m.node(
        "Concat",
        &["u0", "u1", "u2"],
        &["stack"],
        vec![int_attr("axis", 0)],
    )
    .node(
        "Transpose",
        &["stack"],
        &["st"],
        vec![ints_attr("perm", &[0, 2, 1, 3])],
    )
    .node("MatMul", &["st", "wc"], &["cm"], vec![])
    .node("Add", &["bc", "cm"], &["cls"], vec![])
    .node("MatMul", &["st", "wb"], &["bm"], vec![])
    .node("Add", &["bm", "bb"], &["ba"], vec![])
    .node("Sigmoid", &["ba"], &["box"], vec![])
    .node(
        "Gather",
        &["cls", "k"],
        &["logits"],
        vec![int_attr("axis", 0)],
    )
    .node(
        "Gather",
        &["box", "k"],
        &["boxes"],
        vec![int_attr("axis", 0)],
    )
}

#[test]
fn prune_aux_heads_on_a_miniature_detr() {
    for (opset, k) in [(17, -1), (12, 2)] {
        let (g, o) = check(
            &format!("prune_mini_op{opset}"),
            &mini_detr(opset, k),
            &prune_aux_heads::PruneAuxHeads,
        );
        assert!(changed(&o), "{o:?}");
        assert_eq!(op_count(&g, "Gather"), 0);
        assert_eq!(op_count(&g, "Concat"), 0);
        assert_eq!(
            op_count(&g, "LayerNormalization"),
            1,
            "dead layer norms stay: {}",
            g.dump()
        );
    }
}

#[test]
fn prune_aux_heads_selecting_a_middle_layer_keeps_the_right_layer() {
    let (g, o) = check(
        "prune_mini_middle",
        &mini_detr(17, 1),
        &prune_aux_heads::PruneAuxHeads,
    );
    assert!(changed(&o));
    assert_eq!(op_count(&g, "Gather"), 0);
}

#[test]
fn a_gather_minus_one_that_does_not_select_a_decoder_layer_stays() {
    let m = M::new(17)
        .input("x", &[3, 4])
        .output("y")
        .i64("k", &[], &[-1])
        .node("Relu", &["x"], &["r"], vec![])
        .node("Gather", &["r", "k"], &["y"], vec![int_attr("axis", 0)]);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let o = apply(&mut g, &prune_aux_heads::PruneAuxHeads);
    assert!(matches!(o, Outcome::NotApplicable(_)), "{o:?}");
    assert_eq!(op_count(&g, "Gather"), 1);
}

#[test]
fn heads_that_mix_layers_are_left_unchanged_with_a_reason() {
    // Softmax over the layer axis couples the layers: selecting one first would change it.
    let mut m = mini_detr(17, -1);
    let gi = m
        .nodes
        .iter()
        .position(|n| n.op_type.as_deref() == Some("Sigmoid"))
        .unwrap();
    m.nodes[gi].op_type = Some("Softmax".into());
    m.nodes[gi].attribute = vec![int_attr("axis", 0)];
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let before = g.dump();
    let o = apply(&mut g, &prune_aux_heads::PruneAuxHeads);
    match &o {
        Outcome::Changed(_) => {
            // The class head is still prunable; the box head must stay stacked.
            assert_eq!(op_count(&g, "Gather"), 1, "{}", g.dump());
        }
        Outcome::NotApplicable(why) => {
            assert!(why.contains("Softmax"), "{why}");
            assert_eq!(g.dump(), before);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn identity_chains_remove_split_concat_round_trips() {
    let m = M::new(17)
        .input("x", &[2, 3])
        .output("y")
        .i64("ax", &[1], &[0])
        .node(
            "Split",
            &["x"],
            &["a", "b"],
            vec![int_attr("axis", 0), int_attr("num_outputs", 2)],
        )
        .node("Squeeze", &["a", "ax"], &["a1"], vec![])
        .node("Squeeze", &["b", "ax"], &["b1"], vec![])
        .node("Unsqueeze", &["a1", "ax"], &["a2"], vec![])
        .node("Unsqueeze", &["b1", "ax"], &["b2"], vec![])
        .node("Concat", &["a2", "b2"], &["c"], vec![int_attr("axis", 0)])
        .node("Relu", &["c"], &["y"], vec![]);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let o = apply(&mut g, &identity_chains::IdentityChains);
    assert!(changed(&o));
    apply(&mut g, &dead_code::DeadCode);
    assert_eq!(g.num_ops(), 1, "{}", g.dump());
}

#[test]
fn identity_chains_keep_reordering_concats() {
    let m = M::new(17)
        .input("x", &[2, 3])
        .output("y")
        .node(
            "Split",
            &["x"],
            &["a", "b"],
            vec![int_attr("axis", 0), int_attr("num_outputs", 2)],
        )
        .node("Concat", &["b", "a"], &["y"], vec![int_attr("axis", 0)]);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    assert_eq!(
        apply(&mut g, &identity_chains::IdentityChains),
        Outcome::Unchanged
    );
}

#[test]
fn fold_mask_folds_a_where_over_a_shape_derived_mask() {
    let m = M::new(17)
        .input("x", &[1, 4])
        .output("y")
        .f32("ninf", &[], &[f32::NEG_INFINITY])
        .f32("zero", &[], &[0.0])
        .node("Shape", &["x"], &["s"], vec![])
        .node("ConstantOfShape", &["s"], &["m0"], vec![])
        .node("Cast", &["m0"], &["mask"], vec![int_attr("to", 9)])
        .node("Where", &["mask", "ninf", "zero"], &["bias"], vec![])
        .node("Add", &["x", "bias"], &["y"], vec![]);
    let (g, o) = check("fold_mask", &m, &fold_mask::FoldMask);
    assert!(changed(&o));
    // Only the Identity that carries the output name from the input remains.
    assert_eq!(
        g.op_histogram().keys().collect::<Vec<_>>(),
        vec!["Identity"],
        "{}",
        g.dump()
    );
}

#[test]
fn detr_passes_are_not_applicable_to_a_plain_cnn_and_change_nothing() {
    let f = fixture("cnn_tiny_op17_b1.onnx");
    let (g0, _) = detrc::driver::load_graph(&f).unwrap();
    for p in [
        &fold_mask::FoldMask as &dyn Pass,
        &prune_aux_heads::PruneAuxHeads,
    ] {
        let mut g = g0.clone();
        apply(&mut g, &infer_shapes::InferShapes);
        let before = g.dump();
        let o = apply(&mut g, p);
        assert!(
            matches!(o, Outcome::NotApplicable(_)),
            "{}: {o:?}",
            p.name()
        );
        assert_eq!(g.dump(), before);
    }
}

#[test]
fn infer_shapes_types_einsum_grid_sample_and_topk_so_their_shapes_fold() {
    // The ops infer-shapes has no value rule for, as the transformers exports use them: an
    // outer-product Einsum (RT-DETR's position embedding), deformable attention's GridSample
    // and query selection's TopK. With their outputs typed, the Shape ops behind them fold.
    let eq = str_attr("equation", "bi,j->bij");
    let m = M::new(17)
        .input("x", &[1, 4])
        .input("img", &[1, 2, 3, 3])
        .input("grid", &[1, 2, 2, 2])
        .rand("c", &[5], 1)
        .i64("k", &[1], &[2])
        .node("Einsum", &["x", "c"], &["e"], vec![eq])
        .node("GridSample", &["img", "grid"], &["gs"], vec![])
        .node("TopK", &["x", "k"], &["tv", "ti"], vec![])
        .node("Shape", &["e"], &["se"], vec![])
        .node("Shape", &["gs"], &["sg"], vec![])
        .node("Shape", &["tv"], &["st"], vec![])
        .node(
            "Concat",
            &["se", "sg", "st"],
            &["shapes"],
            vec![int_attr("axis", 0)],
        )
        .output("e")
        .output("gs")
        .output("tv")
        .output_of("shapes", detrc::ir::DType::I64);
    let (g, o) = check(
        "infer_shapes_types_unruled_ops",
        &m,
        &fold_constants::FoldConstants,
    );
    assert!(changed(&o));
    assert_eq!(op_count(&g, "Shape"), 0);
}

/// Attention probabilities as torch exports them: `Softmax(scores)` behind the NaN guard
/// `Where(IsNaN(p), 0, p)`; `masked` adds a constant key-padding mask to the scores first.
fn nan_guarded_softmax(masked: bool) -> M {
    let m = M::new(17)
        .input("q", &[1, 3, 4])
        .rand("k", &[1, 4, 5], 1)
        .f32("scale", &[], &[0.5])
        .f32("zero", &[], &[0.0])
        .node("MatMul", &["q", "k"], &["qk"], vec![])
        .node("Mul", &["qk", "scale"], &["scaled"], vec![]);
    let m = if masked {
        m.f32("mask", &[1, 1, 5], &[0.0, 0.0, 0.0, f32::NEG_INFINITY, 0.0])
            .node("Add", &["scaled", "mask"], &["scores"], vec![])
    } else {
        m.node("Identity", &["scaled"], &["scores"], vec![])
    };
    m.node("Softmax", &["scores"], &["p"], vec![int_attr("axis", -1)])
        .node("IsNaN", &["p"], &["nan"], vec![])
        .node("Where", &["nan", "zero", "p"], &["y"], vec![])
        .output("y")
}

#[test]
fn eliminate_noops_drops_the_softmax_nan_guard_only_without_a_mask() {
    let (g, o) = check(
        "eliminate_noops_softmax_nan_guard",
        &nan_guarded_softmax(false),
        &eliminate_noops::EliminateNoops,
    );
    assert!(changed(&o));
    assert_eq!(op_count(&g, "Where"), 0);
    // With a mask a row can be all -inf: the guard stays.
    let mut g = nan_guarded_softmax(true).graph();
    apply(&mut g, &infer_shapes::InferShapes);
    apply(&mut g, &eliminate_noops::EliminateNoops);
    assert_eq!(op_count(&g, "Where"), 1);
}

#[test]
fn fold_constants_folds_clip_and_split_of_constants() {
    // Conditional / DAB-DETR's inverse sigmoid of learned reference points: Clip of a
    // constant, then a Split of the (x, y) pair; everything before the input's Mul is known.
    let m = M::new(17)
        .input("x", &[1, 3, 1])
        .output("y")
        .rand("ref", &[1, 3, 2], 7)
        .f32("lo", &[], &[0.0])
        .f32("hi", &[], &[0.4])
        .i64("halves", &[2], &[1, 1])
        .node("Clip", &["ref", "lo", "hi"], &["c"], vec![])
        .node("Clip", &["c", "", "hi"], &["c2"], vec![])
        .node(
            "Split",
            &["c2", "halves"],
            &["a", "b"],
            vec![int_attr("axis", -1)],
        )
        .node("Split", &["c2"], &["p", "q"], vec![int_attr("axis", 2)])
        .node("Sub", &["a", "q"], &["d"], vec![])
        .node("Add", &["b", "p"], &["e"], vec![])
        .node("Mul", &["d", "e"], &["f"], vec![])
        .node("Mul", &["x", "f"], &["y"], vec![]);
    let (g, o) = check("fold_clip_split", &m, &fold_constants::FoldConstants);
    assert!(changed(&o));
    assert_eq!(g.num_ops(), 1, "only the Mul by the input stays");
    // Opset 12: Split sizes and Clip bounds are attributes (Clip-11 already took inputs, so
    // the attribute form is opset 6-10).
    let m = M::new(10)
        .input("x", &[1, 4])
        .output("y")
        .rand("c", &[1, 4], 8)
        .node(
            "Clip",
            &["c"],
            &["cl"],
            vec![detrc::tensor::attrs::make_float("max", 0.1)],
        )
        .node(
            "Split",
            &["cl"],
            &["a", "b"],
            vec![int_attr("axis", 1), ints_attr("split", &[3, 1])],
        )
        .node("ReduceSum", &["a"], &["s"], vec![ints_attr("axes", &[1])])
        .node("Mul", &["s", "b"], &["t"], vec![])
        .node("Add", &["x", "t"], &["y"], vec![]);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let before = g.clone();
    let o = apply(&mut g, &fold_constants::FoldConstants);
    assert!(changed(&o), "{o:?}");
    assert_eq!(g.num_ops(), 1, "{:?}", g.op_histogram());
    assert_same_outputs_graph(&before, &g);
}

#[test]
fn fold_constants_folds_scatternd_and_einsum_of_constants() {
    // RT-DETR / D-FINE build their anchors by ScatterND into a constant grid and their sine
    // position embedding by an outer-product Einsum of two constant ranges.
    let m = M::new(17)
        .input("x", &[3, 2])
        .output("y")
        .rand("grid", &[3, 2], 9)
        .i64("idx", &[2, 1], &[2, 0])
        .rand("upd", &[2, 2], 10)
        .rand("u", &[3], 11)
        .rand("v", &[2], 12)
        .node("ScatterND", &["grid", "idx", "upd"], &["g2"], vec![])
        .node(
            "Einsum",
            &["u", "v"],
            &["outer"],
            vec![detrc::tensor::attrs::make_string("equation", "i,j->ij")],
        )
        .node("Mul", &["g2", "outer"], &["k"], vec![])
        .node("Add", &["x", "k"], &["y"], vec![]);
    let (g, o) = check("fold_scatternd_einsum", &m, &fold_constants::FoldConstants);
    assert!(changed(&o));
    assert_eq!(g.num_ops(), 1, "{:?}", g.op_histogram());
    // A contraction with an implicit output and a repeated letter, against the reference.
    let m = M::new(17)
        .input("x", &[2, 4])
        .output("y")
        .rand("a", &[2, 3], 13)
        .rand("b", &[3, 4], 14)
        .node(
            "Einsum",
            &["a", "b"],
            &["ab"],
            vec![detrc::tensor::attrs::make_string("equation", "ij,jk")],
        )
        .node("Add", &["x", "ab"], &["y"], vec![]);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let before = g.clone();
    assert!(changed(&apply(&mut g, &fold_constants::FoldConstants)));
    assert_eq!(op_count(&g, "Einsum"), 0);
    assert_same_outputs_graph(&before, &g);
    // An index past the data stays in the graph (the evaluator refuses it; no panic).
    let m = M::new(17)
        .input("x", &[3, 2])
        .output("y")
        .rand("grid", &[3, 2], 9)
        .i64("idx", &[1, 1], &[3])
        .rand("upd", &[1, 2], 10)
        .node("ScatterND", &["grid", "idx", "upd"], &["g2"], vec![])
        .node("Add", &["x", "g2"], &["y"], vec![]);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    assert_eq!(
        apply(&mut g, &fold_constants::FoldConstants),
        Outcome::Unchanged
    );
    assert_eq!(op_count(&g, "ScatterND"), 1);
}

#[test]
fn eliminate_noops_removes_unit_affines_on_symbolic_shapes() {
    // HGNetv2's learnable affine block at its initial value, `x * [1] + [0]`, on a
    // dynamic-batch activation: the size-1 constants cannot broadcast x up, whatever N is.
    let m = M::new(17)
        .input_dims("x", &["N", "3", "4", "4"])
        .output("y")
        .output("z")
        .f32("one", &[1], &[1.0])
        .f32("zero", &[1], &[0.0])
        .f32("one5", &[1, 1, 1, 1, 1], &[1.0])
        .node("Relu", &["x"], &["r"], vec![])
        .node("Mul", &["one", "r"], &["s"], vec![])
        .node("Add", &["s", "zero"], &["y"], vec![])
        // A unit constant of a higher rank adds an axis: kept.
        .node("Mul", &["r", "one5"], &["z"], vec![]);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let before = g.clone();
    let o = apply(&mut g, &eliminate_noops::EliminateNoops);
    assert!(changed(&o), "{o:?}");
    assert_eq!(op_count(&g, "Add"), 0);
    assert_eq!(op_count(&g, "Mul"), 1, "the rank-raising Mul stays");
    assert_eq!(g.num_ops(), 2);
    // --verify's check, which runs a symbolic batch at 1.
    let v = detrc::driver::verify_bytes(
        &encode(&before.export()),
        &encode(&g.export()),
        &[0, 1],
        Default::default(),
    )
    .unwrap();
    assert!(v.ok(), "{:?}", v.outputs);
}

#[test]
fn fold_constants_folds_gathernd_of_constants() {
    // The dynamo exports of DETR build the key-padding mask with a GatherND of the constant
    // all-ones pixel mask; folded, the mask's Where goes and with it torch's softmax NaN guards.
    let m = M::new(18)
        .input("x", &[2, 3])
        .output("y")
        .rand("data", &[2, 3, 2], 15)
        .i64("idx", &[2, 3, 2], &[1, 0, 0, 2, 1, 1, 1, 2, 0, 0, 1, 2])
        .node("GatherND", &["data", "idx"], &["picked"], vec![])
        .node("ReduceSum", &["picked"], &["s"], vec![])
        .node("Mul", &["x", "s"], &["y"], vec![]);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let before = g.clone();
    assert!(changed(&apply(&mut g, &fold_constants::FoldConstants)));
    assert_eq!(op_count(&g, "GatherND"), 0, "{:?}", g.op_histogram());
    assert_same_outputs_graph(&before, &g);
}

/// Deformable attention's sampler: `GridSample(value [2, 3, 5, 6], grid [2, 4, 3, 2])` with
/// seeded grids of N(0, 1), so many samples fall outside [-1, 1] and padding matters.
fn grid_sample(align: i64, padding: &str, mode: &str) -> M {
    M::new(17)
        .input("value", &[2, 3, 5, 6])
        .input("grid", &[2, 4, 3, 2])
        .node(
            "GridSample",
            &["value", "grid"],
            &["y"],
            vec![
                int_attr("align_corners", align),
                str_attr("padding_mode", padding),
                str_attr("mode", mode),
            ],
        )
        .output("y")
}

#[test]
fn gridsample_gather_equals_grid_sample_for_each_padding_and_alignment() {
    for (align, padding) in [(0, "zeros"), (1, "zeros"), (0, "border"), (1, "border")] {
        let name = format!("gridsample_gather_align{align}_{padding}");
        let (g, o) = if (align, padding) == (0, "zeros") {
            // The PyTorch default, as deformable attention exports it: snapshotted.
            check(
                &name,
                &grid_sample(align, padding, "bilinear"),
                &gridsample_gather::GridSampleGather,
            )
        } else {
            let mut g = grid_sample(align, padding, "bilinear").graph();
            apply(&mut g, &infer_shapes::InferShapes);
            let before = g.clone();
            let o = apply(&mut g, &gridsample_gather::GridSampleGather);
            assert_same_outputs_graph(&before, &g);
            (g, o)
        };
        assert!(changed(&o), "{name}: {o:?}");
        assert_eq!(op_count(&g, "GridSample"), 0, "{name}");
        assert_eq!(op_count(&g, "Where"), 0, "{name}");
        assert_eq!(op_count(&g, "GatherElements"), 1, "{name}");
    }
}

#[test]
fn gridsample_gather_leaves_other_modes_with_a_reason() {
    for (mode, padding) in [
        ("nearest", "zeros"),
        ("bicubic", "zeros"),
        ("bilinear", "reflection"),
    ] {
        let mut g = grid_sample(0, padding, mode).graph();
        apply(&mut g, &infer_shapes::InferShapes);
        let o = apply(&mut g, &gridsample_gather::GridSampleGather);
        let Outcome::NotApplicable(why) = &o else {
            panic!("{mode}/{padding}: no reason given: {o:?}")
        };
        assert!(
            why.contains("kept") && why.contains(if padding == "zeros" { mode } else { padding }),
            "{why}"
        );
        assert_eq!(op_count(&g, "GridSample"), 1);
    }
}

/// ConvTranspose (LW-DETR's 2x upsampling projector) has a type rule: its output shape, for
/// strides, pads, output_padding, dilations, groups and SAME padding, is what onnxruntime
/// computes, so the Shape arithmetic after it folds.
#[test]
fn conv_transpose_output_shape_is_onnxruntimes_and_its_shape_arithmetic_folds() {
    let Some(rt) = ort_runtime() else { return };
    let cases: Vec<(&str, [i64; 4], Vec<detrc::load::proto::AttributeProto>)> = vec![
        ("k2s2", [4, 3, 2, 2], vec![ints_attr("strides", &[2, 2])]),
        (
            "k3s2p1op1",
            [4, 3, 3, 3],
            vec![
                ints_attr("strides", &[2, 2]),
                ints_attr("pads", &[1, 1, 1, 1]),
                ints_attr("output_padding", &[1, 0]),
            ],
        ),
        (
            "k3d2g2",
            [4, 3, 3, 3],
            vec![ints_attr("dilations", &[2, 1]), int_attr("group", 2)],
        ),
        (
            "same",
            [4, 3, 3, 3],
            vec![
                ints_attr("strides", &[2, 3]),
                str_attr("auto_pad", "SAME_UPPER"),
            ],
        ),
    ];
    for (name, w, at) in cases {
        let m = M::new(17)
            .input("x", &[1, 4, 5, 6])
            .output("y")
            .output("n")
            .rand("w", &w, 3)
            .node("ConvTranspose", &["x", "w"], &["y"], at)
            .node("Shape", &["y"], &["s"], vec![])
            .node("ReduceProd", &["s"], &["p"], vec![int_attr("keepdims", 0)])
            .node("Cast", &["p"], &["n"], vec![int_attr("to", 1)]);
        let mut g = m.graph();
        apply(&mut g, &infer_shapes::InferShapes);
        let y = g.outputs[0].src;
        let typed = g.ty(y).and_then(|t| t.static_shape()).expect("typed");
        let bytes = encode(&m.model());
        let r = detrc::reference::Reference::load(
            detrc::reference::Model::Bytes(&bytes),
            &rt,
            detrc::reference::Purpose::Verify,
            None,
        )
        .unwrap();
        let out = r.run(&r.random_inputs(0)).unwrap();
        let got: Vec<i64> = out[0].1.shape().iter().map(|&d| d as i64).collect();
        assert_eq!(typed, got, "{name}");
        if name == "k3s2p1op1" {
            let (g2, o) = check(
                "conv_transpose_shape_folds",
                &m,
                &fold_constants::FoldConstants,
            );
            assert!(changed(&o));
            assert_eq!(op_count(&g2, "Shape"), 0, "{name}");
        }
    }
}
