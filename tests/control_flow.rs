//! `If` nodes on constant conditions (DINOv3's rotary embedding in DEIMv2 exports): replaced by
//! the branch they take when the model is loaded, so the straight-line IR and every pass see
//! the model; the compiled model computes what the original computes (onnxruntime runs the
//! original with its If). An If on a condition read from the input stays a clear error.

mod common;

use common::*;
use detrc::ir::DType;
use detrc::load::proto::{attr_type, AttributeProto, GraphProto, NodeProto};
use detrc::pass::Pipeline;

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attr_type::GRAPH),
        g: Some(Box::new(g)),
        ..Default::default()
    }
}

fn node(op: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    NodeProto {
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        name: Some(format!("{op}_{}", outs[0])),
        op_type: Some(op.into()),
        ..Default::default()
    }
}

/// A branch reading `x` and `w` from the outer scope.
fn branch(op: &str, out: &str) -> GraphProto {
    let t = format!("{op}_t");
    GraphProto {
        name: Some(format!("{op}_branch")),
        node: vec![node(op, &["x", "w"], &[&t]), node("Neg", &[&t], &[out])],
        output: vec![vi(out, DType::F32, None)],
        ..Default::default()
    }
}

/// DINOv3's pattern in miniature: the condition is `Size(Shape-derived constant) - 1 > 0`,
/// computed from constants (`dims` of the input: `"N"` makes the batch symbolic, and the
/// condition then reads the static height off the input's shape).
fn model(dims: &[&str], from_input: bool) -> M {
    let m = M::new(17)
        .input_dims("x", dims)
        .output("y")
        .rand("w", &[3], 5)
        .i64("one", &[], &[1])
        .i64("two", &[], &[2])
        .f32("half", &[], &[0.5]);
    let m = if from_input {
        // Reads a value of the input: not constant.
        m.node("ReduceMax", &["x"], &["mx"], vec![int_attr("keepdims", 0)])
            .node("Greater", &["mx", "half"], &["cond"], vec![])
    } else {
        m.node("Shape", &["x"], &["shape"], vec![])
            .node(
                "Gather",
                &["shape", "two"],
                &["h"],
                vec![int_attr("axis", 0)],
            )
            .node("Sub", &["h", "one"], &["hm1"], vec![])
            .node("Greater", &["hm1", "one"], &["cond"], vec![])
    };
    let mut m = m.node("Relu", &["x"], &["t"], vec![]);
    m.nodes.push(NodeProto {
        attribute: vec![
            graph_attr("then_branch", branch("Mul", "then_out")),
            graph_attr("else_branch", branch("Add", "else_out")),
        ],
        ..node("If", &["cond"], &["chosen"])
    });
    m.node("Add", &["chosen", "t"], &["y"], vec![])
}

fn compile_bytes(bytes: &[u8]) -> detrc::Result<Vec<u8>> {
    let dir = tmpdir();
    let src = dir.path().join("m.onnx");
    std::fs::write(&src, bytes).unwrap();
    let p = Pipeline::new(detrc::passes::registry());
    let c = detrc::driver::compile(&src, &p, &mut |_| {})?;
    Ok(encode(&c.model))
}

fn ort_same(a: &[u8], b: &[u8]) {
    use detrc::reference::compare::{compare, Tolerance};
    use detrc::reference::{Model, Purpose, Reference};
    let Some(rt) = ort_runtime() else {
        eprintln!("SKIP onnxruntime check: no onnxruntime");
        return;
    };
    let load = |m: &[u8]| Reference::load(Model::Bytes(m), &rt, Purpose::Verify, None).unwrap();
    let (ra, rb) = (load(a), load(b));
    for seed in [0u64, 1] {
        let ins = ra.random_inputs(seed);
        for d in compare(
            &ra.run(&ins).unwrap(),
            &rb.run(&ins).unwrap(),
            Tolerance {
                atol: 1e-6,
                rtol: 1e-6,
            },
        ) {
            assert!(d.ok, "{}: max |diff| {}", d.name, d.max_abs);
        }
    }
}

#[test]
fn constant_if_takes_its_branch_and_computes_the_same() {
    // Height 4: 4 - 1 > 1, the then-branch (Mul); height 2: 2 - 1 > 1 is false, the else (Add).
    for (dims, op, gone) in [
        (["1", "4", "3"], "Mul", "Add_Add_t"),
        (["N", "4", "3"], "Mul", "Add_Add_t"),
        (["1", "2", "3"], "Add", "Mul_Mul_t"),
    ] {
        let m = model(&dims, false);
        let bytes = encode(&m.model());
        let (g, _) = detrc::driver::load_graph_bytes(
            bytes::Bytes::from(bytes.clone()),
            "if.onnx",
            std::path::Path::new("."),
        )
        .expect("loads");
        assert_eq!(op_count(&g, "If"), 0, "{dims:?}");
        assert_eq!(op_count(&g, op), 1, "{dims:?}: the {op} branch is inlined");
        assert!(
            !g.dump().contains(gone),
            "{dims:?}: the other branch is gone"
        );
        if dims[0] == "1" && op == "Mul" {
            insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
                insta::assert_snapshot!("unit__constant_if_inlined", g.dump());
            });
        }
        let compiled = compile_bytes(&bytes).expect("compiles");
        // The reference runtime runs static shapes; the symbolic-batch model is the static
        // one's If with its height read off a partly symbolic shape.
        if dims[0] != "N" {
            ort_same(&bytes, &compiled);
        }
    }
}

#[test]
fn if_on_an_input_value_is_a_clear_error() {
    let bytes = encode(&model(&["1", "4", "3"], true).model());
    let err = compile_bytes(&bytes).expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("If 'If_chosen'") && msg.contains("'cond' is not a constant"),
        "{msg}"
    );
}
