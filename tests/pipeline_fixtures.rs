//! The default pipeline and every single pass on the committed DETR exports: outputs equal
//! to the original (tract, and onnxruntime when available), what must disappear does, and
//! the IR before and after each pass is snapshotted.

mod common;

use common::*;
use detrc::ir::DType;
use detrc::pass::{Pipeline, Report};

fn compile(path: &std::path::Path) -> (detrc::load::proto::ModelProto, Vec<Report>) {
    let p = Pipeline::new(detrc::passes::registry());
    let c = detrc::driver::compile(path, &p, &mut |_| {}).unwrap();
    (c.model, c.reports)
}

#[test]
fn full_pipeline_preserves_outputs_on_every_fixture() {
    for f in fixtures() {
        let (m, _) = compile(&f);
        assert_same_outputs(&std::fs::read(&f).unwrap(), &encode(&m), 1e-4);
    }
}

#[test]
fn compiled_detr_has_no_gather_where_cumsum_or_boolean_tensor() {
    for f in detr_fixtures() {
        let (m, reports) = compile(&f);
        let g = detrc::ir::from_onnx::import(m).unwrap();
        for op in ["Gather", "Where", "CumSum", "Not", "Equal", "Pad", "Shape"] {
            assert_eq!(op_count(&g, op), 0, "{}: {op} left", f.display());
        }
        // The batch round trip in front of the backbone is gone (onnxsim's fused q/k/v
        // projection is a real Split and stays).
        for n in g.graph_inputs() {
            for (c, _) in g.consumers(detrc::ir::Port::new(n, 0)) {
                assert!(!g.node(c).is("Split"), "{}: input Split left", f.display());
            }
        }
        for n in g.g.node_weights() {
            for v in &n.outputs {
                assert!(
                    v.ty.as_ref().is_none_or(|t| t.dtype != DType::BOOL),
                    "{}: bool {}",
                    f.display(),
                    v.name
                );
            }
        }
        let pruned = reports
            .iter()
            .find(|r| r.pass == "prune-aux-heads" && r.status == "changed")
            .unwrap_or_else(|| panic!("{}: heads not pruned", f.display()));
        assert!(
            pruned.details[0].starts_with("pruned "),
            "{:?}",
            pruned.details
        );
    }
}

#[test]
fn the_stacked_decoder_norms_and_the_constant_first_norm_are_gone() {
    // tiny: 2 encoder layers x 2 norms + 3 decoder layers x 3 norms + 1 final norm = 14,
    // less the first decoder layer's norm1: its self-attention reads only the learned queries
    // and a zero target, so it is a constant.
    let (m, _) = compile(&fixture("detr_tiny_op17_b1.onnx"));
    let g = detrc::ir::from_onnx::import(m).unwrap();
    assert_eq!(op_count(&g, "LayerNormalization"), 13);
    let before = detrc::driver::load_graph(&fixture("detr_tiny_op17_b1.onnx"))
        .unwrap()
        .0;
    assert_eq!(op_count(&before, "LayerNormalization"), 16);
}

#[test]
fn every_pass_alone_preserves_outputs() {
    let files = [
        "detr_tiny_op17_b1.onnx",
        "detr_tiny_op12_b2.onnx",
        "detr_tiny2_op17_b2.onnx",
        "detr_tiny_op17_b1.onnxsim.onnx",
        "cnn_tiny_op17_b1.onnx",
    ];
    for name in files {
        let f = fixture(name);
        let original = std::fs::read(&f).unwrap();
        // to-fp16 changes numerics on purpose; tests/to_fp16.rs checks it with its own bounds.
        // generalize-batch changes the interface (a symbolic batch) and needs the folded
        // pipeline before it: tests/dynamic_batch.rs checks it image by image.
        for p in detrc::passes::all()
            .into_iter()
            .filter(|p| !["to-fp16", "generalize-batch"].contains(&p.name()))
        {
            let (mut g, _) = detrc::driver::load_graph(&f).unwrap();
            apply(&mut g, &detrc::passes::infer_shapes::InferShapes);
            apply(&mut g, p.as_ref());
            let out = encode(&g.export());
            assert_same_outputs(&original, &out, 1e-4);
        }
    }
}

#[test]
fn compiling_twice_gives_identical_bytes() {
    for f in [
        fixture("detr_tiny_op17_b2.onnx"),
        fixture("detr_tiny2_op12_b1.onnx"),
    ] {
        let a = encode(&compile(&f).0);
        let b = encode(&compile(&f).0);
        assert_eq!(a, b, "{}", f.display());
    }
}

#[test]
fn snapshots_of_the_ir_before_and_after_each_pass() {
    let f = fixture("detr_tiny_op17_b1.onnx");
    let (mut g, _) = detrc::driver::load_graph(&f).unwrap();
    let snap = |name: String, text: String| {
        insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(name, text);
        });
    };
    snap("pipeline__detr_tiny_op17_b1__00_input".into(), g.dump());
    // One round of the default order; each pass's effect is the diff between neighbours.
    for (i, p) in detrc::passes::registry().iter().enumerate() {
        let o = apply(&mut g, p.as_ref());
        snap(
            format!("pipeline__detr_tiny_op17_b1__{:02}_{}", i + 1, p.name()),
            format!("# {o:?}\n{}", g.dump()),
        );
    }
}

#[test]
fn onnxruntime_agrees_with_the_compiled_models() {
    let Some(py) = python_or_skip() else { return };
    let dir = tmpdir();
    for f in fixtures() {
        let out = dir.path().join(f.file_name().unwrap());
        detrc::emit::save(&compile(&f).0, &out, detrc::emit::ExternalData::Never).unwrap();
        assert_ort_agrees(&py, &f, &out, &f.display().to_string());
    }
}

#[test]
fn verify_runs_dynamic_batch_exports_at_batch_1() {
    // The official RT-DETRv2 / D-FINE deploy graphs declare `images: [N, 3, H, W]` and
    // `orig_target_sizes: [N, 2]`; --verify runs both models at N = 1.
    for name in ["rtdetrv2_official.onnx", "dfine_official_raw.onnx"] {
        let f = root().join("fixtures/family").join(name);
        let c = detrc::driver::compile_with(
            &f,
            &Pipeline::new(detrc::passes::registry()),
            &Default::default(),
            &mut |_| {},
        )
        .unwrap();
        let v = detrc::driver::verify(
            &f,
            &encode(&c.model),
            &[0, 1],
            detrc::reference::compare::Tolerance {
                atol: 1e-4,
                rtol: 1e-4,
            },
        )
        .unwrap();
        assert!(v.ok(), "{name}: {:?}", v.outputs);
        assert_eq!(v.outputs.len(), 3, "{name}: labels, boxes, scores");
    }
    // A dynamic dimension other than the batch has no default: the error says what to give.
    let m = M::new(17)
        .input_dims("x", &["N", "C"])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y");
    let e = detrc::driver::verify_bytes(
        &encode(&m.model()),
        &encode(&m.model()),
        &[0],
        Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--input-shape x:DIMS"), "{e}");
}
