//! `--batch dynamic` / `--batch N` / `--input-shape`: batch-baked exports generalised, checked
//! image by image against the original at several batch sizes (tract in-process, onnxruntime
//! through scripts/ort_batch_check.py), bad shape options as usage errors, and the small
//! hand-built graphs of `generalize-batch` with snapshots.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use detrc::driver::{compile_with, verify_batches, verify_batches_with, Original};
use detrc::driver::{Batch, ShapeOptions};
use detrc::pass::Pipeline;
use detrc::reference::compare::Tolerance;

fn detrc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detrc"))
        .args(args)
        .output()
        .unwrap()
}

/// The exports whose batch is traced in: the dynamic-axis DETRs and a static batch-1 DETR,
/// plus the family exports when their folder is there (copied from the family fixtures).
fn batch_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/dynamic"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    // A static batch-2 export (batch baked into every shape, no dynamic axis).
    v.push(fixture("detr_tiny_op12_b2.onnx"));
    // Static batch-1 exports, as exported and as onnx-simplifier leaves them.
    v.push(fixture("detr_tiny_op17_b1.onnx"));
    v.push(fixture("detr_tiny_op17_b1.onnxsim.onnx"));
    v
}

/// Splits along axis 0, the batch axis of every tensor the NestedTensor chain splits.
fn batch_splits(g: &detrc::ir::Graph) -> usize {
    g.topo_ops()
        .into_iter()
        .filter(|&n| g.node(n).is("Split"))
        .filter(|&n| {
            let axis = detrc::tensor::attrs::int_or(&g.node(n).op().unwrap().attrs, "axis", 0);
            let rank = g
                .ty(g.input(n, 0).unwrap())
                .and_then(|t| t.shape.as_ref().map(|s| s.len() as i64));
            axis == 0 || rank.is_some_and(|r| axis == -r)
        })
        .count()
}

/// Family fixtures (fixtures/family) whose batch `--batch dynamic` generalises today.
const GENERALISED_FAMILY: &[&str] = &[
    "conditional_detr_op16_b1.onnx",
    "conditional_detr_op17_b1.onnx",
    "conditional_detr_op17_dyn.onnx",
    "conditional_detr_op18_dynamo_b1.onnx",
    "dab_detr_op16_b1.onnx",
    "dab_detr_op17_b1.onnx",
    "dab_detr_op17_dyn.onnx",
    "dab_detr_op18_dynamo_b1.onnx",
    "deformable_detr_op17_dyn.onnx",
    "deformable_detr_refine_op17_dyn.onnx",
    "detr_op16_b1.onnx",
    "detr_op17_b1.onnx",
    "detr_op17_dyn.onnx",
    "detr_op18_dynamo_b1.onnx",
    "deformable_detr_op18_dynamo_b1.onnx",
    "dfine_official_raw.onnx",
    "dfine_official_simplified.onnx",
    "dfine_op16_b1.onnx",
    "dfine_op17_b1.onnx",
    "dfine_op17_dyn.onnx",
    "rtdetr_op16_b1.onnx",
    "rtdetr_op17_b1.onnx",
    "rtdetr_op17_dyn.onnx",
    "rtdetr_op18_dynamo_b1.onnx",
    "rtdetr_v2_op16_b1.onnx",
    "rtdetr_v2_op17_b1.onnx",
    "rtdetr_v2_op17_dyn.onnx",
    "rtdetrv2_official.onnx",
];

/// Family fixtures that generalise but that onnxruntime cannot load (their GridSample takes a
/// float64 grid, for which it has no kernel): checked under tract instead.
const GENERALISED_FAMILY_TRACT_ONLY: &[&str] = &[
    "deformable_detr_op16_b1.onnx",
    "deformable_detr_op17_b1.onnx",
    "deformable_detr_refine_op16_b1.onnx",
    "deformable_detr_refine_op17_b1.onnx",
];

fn dynamic(path: &Path) -> detrc::driver::Compiled {
    let p = Pipeline::new(detrc::passes::registry());
    let shapes = ShapeOptions {
        batch: Batch::Dynamic,
        ..Default::default()
    };
    compile_with(path, &p, &shapes, &mut |_| {})
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn dynamic_batch_matches_the_original_image_by_image_at_batch_1_to_4() {
    for f in batch_fixtures() {
        let c = dynamic(&f);
        let change = c.batch.clone().expect("batch changed");
        let bytes = encode(&c.model);
        let v = verify_batches(
            &f,
            &bytes,
            &change,
            &[1, 2, 3, 4],
            &[0],
            Tolerance {
                atol: 1e-4,
                rtol: 1e-4,
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(v.ok(), "{}: {:?}", f.display(), v.outputs);
        // Every batch size ran: one entry per output and batch.
        assert_eq!(v.outputs.len(), 2 * 4, "{}: {:?}", f.display(), v.outputs);
        let g = detrc::ir::from_onnx::import(c.model).unwrap();
        for op in ["Where", "CumSum", "Not"] {
            assert_eq!(op_count(&g, op), 0, "{}: {op} left", f.display());
        }
        // The NestedTensor Split into single images is gone; fuse-matmul's Splits of a wider
        // linear layer (last axis) are not about the batch and may stay.
        assert_eq!(batch_splits(&g), 0, "{}: batch Split left", f.display());
        let r = c
            .reports
            .iter()
            .find(|r| r.pass == "generalize-batch")
            .expect("generalize-batch ran");
        assert!(
            r.details[0].starts_with(&format!("batch {} made symbolic", change.traced)),
            "{:?}",
            r.details
        );
    }
}

#[test]
fn the_traced_batch_is_found_and_its_reshapes_are_justified() {
    let f = root().join("fixtures/dynamic/detr_tiny_op17_b2_dyn.onnx");
    let c = dynamic(&f);
    assert_eq!(c.batch.as_ref().unwrap().traced, 2);
    let r = c
        .reports
        .iter()
        .find(|r| r.pass == "generalize-batch")
        .unwrap();
    assert!(
        r.details
            .iter()
            .any(|l| l.starts_with("Reshape '") && l.contains(": batch 2 in target [")),
        "{:?}",
        r.details
    );
    // The position embedding folded by fold-mask is one image now, broadcast over the batch.
    assert!(
        r.details
            .iter()
            .any(|l| l.contains("identical images") && l.contains("(broadcast)")),
        "{:?}",
        r.details
    );
    // The NestedTensor Split -> Pad -> Concat over the two traced images went as an identity.
    let ic = c
        .reports
        .iter()
        .find(|r| r.pass == "identity-chains" && r.status == "changed");
    assert!(ic.is_some());
}

#[test]
fn batch_n_is_static_at_n_and_verified_per_image() {
    let dir = tmpdir();
    let f = root().join("fixtures/dynamic/detr_tiny_op17_b2_dyn.onnx");
    let out = dir.path().join("b3.onnx");
    let o = detrc(&[
        "compile",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--batch",
        "3",
        "--verify",
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (g, _) = detrc::driver::load_graph(&out).unwrap();
    let n = g.graph_inputs()[0];
    let ty = g.node(n).outputs[0].ty.clone().unwrap();
    assert_eq!(ty.static_shape(), Some(vec![3, 3, 64, 96]));
    // Static: no shape arithmetic is left to compute the batch at run time.
    assert_eq!(op_count(&g, "Shape"), 0);
}

#[test]
fn verify_runs_a_dynamic_result_at_batch_1_and_3() {
    let dir = tmpdir();
    let f = root().join("fixtures/dynamic/detr_tiny_op17_b2_dyn.onnx");
    let out = dir.path().join("dyn.onnx");
    let rep = dir.path().join("r.json");
    let o = detrc(&[
        "compile",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--batch",
        "dynamic",
        "--verify",
        "--report",
        rep.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    let names: Vec<String> = j["verification"]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect();
    for want in ["pred_logits (batch 1)", "pred_logits (batch 3)"] {
        assert!(names.iter().any(|n| n == want), "{names:?}");
    }
    let (g, _) = detrc::driver::load_graph(&out).unwrap();
    let n = g.graph_inputs()[0];
    let ty = g.node(n).outputs[0].ty.clone().unwrap();
    assert_eq!(ty.to_string(), "f32[batch,3,64,96]");
}

#[test]
fn onnxruntime_runs_every_dynamic_result_at_batch_1_to_4_image_by_image() {
    let Some(py) = python_or_skip() else { return };
    let dir = tmpdir();
    let mut files = batch_fixtures();
    // The family exports generalize-batch handles so far (docs/dynamic-batch.md lists the
    // others and what stops them: ScatterND, Deformable's Shape arithmetic, RT-DETR/D-FINE
    // anchors, the official deploy graphs' traced batch).
    for name in GENERALISED_FAMILY {
        files.push(root().join("fixtures/family").join(name));
    }
    for f in files {
        let out = dir.path().join(f.file_name().unwrap());
        let c = dynamic(&f);
        detrc::emit::save(&c.model, &out, detrc::emit::ExternalData::Never).unwrap();
        let o = Command::new(&py)
            .arg(root().join("scripts/ort_batch_check.py"))
            .arg(&f)
            .arg(&out)
            .args(["--batches", "1,2,3,4", "--atol", "1e-4", "--rtol", "1e-4"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}: {}{}",
            f.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

fn usage_error(input: &Path, extra: &[&str], want: &str) {
    let dir = tmpdir();
    let out = dir.path().join("out.onnx");
    let mut args = vec![
        "compile",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = detrc(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(want), "expected '{want}' in: {err}");
    assert_eq!(file_names(dir.path()), Vec::<String>::new(), "wrote files");
}

#[test]
fn shape_options_that_contradict_the_model_are_usage_errors() {
    let b1 = fixture("detr_tiny_op17_b1.onnx");
    let dynf = root().join("fixtures/dynamic/detr_tiny_op17_b2_dyn.onnx");
    usage_error(
        &b1,
        &["--input-shape", "pixels:1x3x64x96"],
        "input 'pixels': not an input of the model (inputs: images)",
    );
    usage_error(
        &b1,
        &["--input-shape", "images:1x3x64"],
        "input 'images': --input-shape gives rank 3",
    );
    usage_error(
        &b1,
        &["--input-shape", "images:1x3x64x64"],
        "input 'images': dimension 3 is fixed to 96 by the model, not 64",
    );
    usage_error(
        &b1,
        &["--batch", "4"],
        "input 'images': the model fixes the batch to 1, not 4; use --batch dynamic",
    );
    let _ = &dynf;
    usage_error(
        &dynf,
        &["--input-shape", "images:2x3x64x96x1", "--batch", "dynamic"],
        "input 'images': --input-shape gives rank 5",
    );
    usage_error(&b1, &["--batch", "0"], "--batch");
    usage_error(
        &b1,
        &["--input-shape", "images:1x3xAx96"],
        "is not a dimension",
    );
}

#[test]
fn input_shape_fixes_a_dynamic_batch_before_the_passes() {
    let dir = tmpdir();
    let f = root().join("fixtures/dynamic/detr_tiny_op17_b2_dyn.onnx");
    let out = dir.path().join("s.onnx");
    let o = detrc(&[
        "compile",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--input-shape",
        "images:2x3x64x96",
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (g, _) = detrc::driver::load_graph(&out).unwrap();
    // All static folding applied: the mask machinery and the batch loop are gone.
    for op in ["Where", "CumSum", "Shape"] {
        assert_eq!(op_count(&g, op), 0, "{op} left");
    }
    assert_eq!(batch_splits(&g), 0, "batch Split left");
    let orig = std::fs::read(fixture("detr_tiny_op17_b2.onnx")).unwrap();
    // Same weights as the static batch-2 export, so the same outputs on the same inputs.
    assert_same_outputs(&orig, &std::fs::read(&out).unwrap(), 1e-4);
}

// ---------- hand-built graphs ----------

fn generalize(m: &M) -> (detrc::ir::Graph, Vec<String>) {
    let mut g = m.graph();
    let p = Pipeline::new(vec![Box::new(detrc::passes::infer_shapes::InferShapes)]);
    p.run(&mut g, &mut |_| {}).unwrap();
    let lines = detrc::passes::generalize_batch::generalize(&mut g).expect("generalises");
    g.fix_output_names();
    g.validate().unwrap();
    (g, lines)
}

/// Runs `after` at batch `k` and `before` (static batch 1) image by image.
fn same_per_image(before: &M, after: &detrc::ir::Graph, k: usize) {
    let dir = tmpdir();
    let p = dir.path().join("before.onnx");
    std::fs::write(&p, encode(&before.model())).unwrap();
    let g0 = before.graph();
    let shapes = detrc::driver::static_input_shapes(&g0).unwrap();
    let change = detrc::driver::BatchChange {
        traced: shapes[0].1[0] as i64,
        result: None,
        input_shapes: shapes,
    };
    let v = verify_batches(
        &p,
        &encode(&after.export()),
        &change,
        &[k as i64],
        &[0, 1],
        Tolerance::default(),
    )
    .unwrap();
    assert!(v.ok(), "{:?}", v.outputs);
}

#[test]
fn unit_reshape_with_a_baked_batch_follows_the_input() {
    // [1,4,2,3] -> Reshape [1,4,6] (batch 1 baked) -> Relu.
    let m = M::new(17)
        .input("x", &[1, 4, 2, 3])
        .i64("t", &[3], &[1, 4, 6])
        .node("Reshape", &["x", "t"], &["r"], vec![])
        .node("Relu", &["r"], &["y"], vec![])
        .output("y");
    let before = m.graph().dump();
    let (g, lines) = generalize(&m);
    let text = format!("{before}\n----\n{}\n----\n{}", g.dump(), lines.join("\n"));
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("dynamic_batch__reshape", text);
    });
    assert!(lines[1].starts_with("Reshape 'Reshape_0': batch 1 in target [1, 4, 6] -> [0, 4, 6]"));
    same_per_image(&m, &g, 3);
}

#[test]
fn unit_merged_heads_and_a_zero_query_constant_get_the_batch() {
    // The attention pattern of a batch-1 export: the key side [hw, B, C] comes from the image,
    // the query side is a constant [Q, 1, C]; both are split into B*heads and multiplied.
    let (hw, q, c, h) = (5, 3, 4, 2);
    let d = c / h;
    let m = M::new(17)
        .input("x", &[1, c, hw])
        .i64("perm_t", &[3], &[2, 0, 1])
        .node(
            "Transpose",
            &["x"],
            &["k"],
            vec![ints_attr("perm", &[2, 0, 1])],
        )
        .i64("kt", &[3], &[hw, h, d])
        .node("Reshape", &["k", "kt"], &["k2"], vec![])
        .node(
            "Transpose",
            &["k2"],
            &["k3"],
            vec![ints_attr("perm", &[1, 2, 0])],
        )
        .rand("query", &[q, 1, c], 7)
        .i64("qt", &[3], &[q, h, d])
        .node("Reshape", &["query", "qt"], &["q2"], vec![])
        .node(
            "Transpose",
            &["q2"],
            &["q3"],
            vec![ints_attr("perm", &[1, 0, 2])],
        )
        .node("MatMul", &["q3", "k3"], &["s"], vec![])
        .node("Softmax", &["s"], &["p"], vec![int_attr("axis", -1)])
        // The heads apart from the batch again, so each image's output is its own slice.
        .i64("yt", &[4], &[1, h, q, hw])
        .node("Reshape", &["p", "yt"], &["y"], vec![])
        .output("y");
    let (g, lines) = generalize(&m);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("initializer 'query'") && l.contains("expanded")),
        "{lines:?}"
    );
    same_per_image(&m, &g, 3);
}

#[test]
fn unit_a_batch_that_cannot_be_generalised_names_the_node() {
    // ReduceSum over the batch: the result mixes images.
    let m = M::new(13)
        .input("x", &[2, 3])
        .i64("ax", &[1], &[0])
        .node(
            "ReduceSum",
            &["x", "ax"],
            &["y"],
            vec![int_attr("keepdims", 1)],
        )
        .output("y");
    let mut g = m.graph();
    let p = Pipeline::new(vec![Box::new(detrc::passes::infer_shapes::InferShapes)]);
    p.run(&mut g, &mut |_| {}).unwrap();
    let e = detrc::passes::generalize_batch::generalize(&mut g).unwrap_err();
    assert_eq!(
        (e.node.as_deref(), e.op.as_deref()),
        (Some("ReduceSum_0"), Some("ReduceSum"))
    );
    let e = e.to_string();
    assert!(
        e.contains("ReduceSum 'ReduceSum_0'") && e.contains("over the batch"),
        "{e}"
    );
}

/// `tmp[..., :2] += ref` as the legacy exporter traces it at batch 2: one ScatterND over all
/// images whose constant indices hold every (image, query, coordinate) tuple.
fn scatter_model(swap_images: bool) -> M {
    let (b, q) = (2i64, 3i64);
    let mut idx = Vec::new();
    for i in 0..b {
        for k in 0..q {
            for j in 0..2 {
                let img = if swap_images { b - 1 - i } else { i };
                idx.extend([img, k, j]);
            }
        }
    }
    M::new(17)
        .input("x", &[b, q, 4])
        .node("Relu", &["x"], &["data"], vec![])
        .i64("st", &[1], &[0])
        .i64("en", &[1], &[2])
        .i64("ax", &[1], &[2])
        .node("Slice", &["x", "st", "en", "ax"], &["head"], vec![])
        .node("Sigmoid", &["head"], &["upd"], vec![])
        .i64("idx", &[b, q, 2, 3], &idx)
        .node("ScatterND", &["data", "idx", "upd"], &["s"], vec![])
        .node("Tanh", &["s"], &["y"], vec![])
        .output("y")
}

#[test]
fn unit_a_scatter_within_each_image_is_generalised() {
    let m = scatter_model(false);
    let (g, lines) = generalize(&m);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ScatterND 'ScatterND_3'") && l.contains("within each image")),
        "{lines:?}"
    );
    same_per_image(&m, &g, 3);
    same_per_image(&m, &g, 1);
}

#[test]
fn unit_a_scatter_across_images_names_the_node() {
    let mut g = scatter_model(true).graph();
    let p = Pipeline::new(vec![Box::new(detrc::passes::infer_shapes::InferShapes)]);
    p.run(&mut g, &mut |_| {}).unwrap();
    let e = detrc::passes::generalize_batch::generalize(&mut g)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ScatterND 'ScatterND_3'") && e.contains("across images"),
        "{e}"
    );
}

#[test]
fn tract_runs_the_family_results_onnxruntime_cannot_load_at_batch_1_to_4() {
    let dir = root().join("fixtures/family");
    for name in GENERALISED_FAMILY_TRACT_ONLY {
        let f = dir.join(name);
        let c = dynamic(&f);
        let change = c.batch.clone().expect("batch changed");
        // onnxruntime has no GridSample kernel for a float input with a double grid.
        let v = verify_batches_with(
            Original::Path(&f),
            &encode(&c.model),
            &change,
            &[1, 2, 3, 4],
            &[0],
            Tolerance {
                atol: 1e-4,
                rtol: 1e-4,
            },
            &detrc::reference::Runtime::Tract,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(v.ok(), "{}: {:?}", f.display(), v.outputs);
        assert_eq!(v.outputs.len(), 2 * 4, "{}: {:?}", f.display(), v.outputs);
    }
}

#[test]
fn a_batch_1_graph_that_lost_its_per_image_layout_is_refused() {
    // onnxslim turns the decoder's `[Q, 1, C] -> [1, Q, C]` Transpose into a Reshape: at
    // batch B the rows are `Q*B` with the images interleaved, which no rewrite undoes.
    let dir = tmpdir();
    let out = dir.path().join("out.onnx");
    let f = fixture("detr_tiny_op17_b1.onnxslim.onnx");
    let o = detrc(&[
        "compile",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--batch",
        "dynamic",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("output 'pred_logits'") && err.contains("images interleaved"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn unit_an_unsqueezed_unit_batch_axis_is_expanded_where_it_meets_the_batch() {
    // Batch 1: learned queries [Q, C] get their batch axis from an Unsqueeze (the expand to B
    // folded away at B=1) and are concatenated with the image's tokens [1, HW, C].
    let (hw, q, c) = (5, 3, 4);
    let m = M::new(17)
        .input("x", &[1, c, hw])
        .node(
            "Transpose",
            &["x"],
            &["tokens"],
            vec![ints_attr("perm", &[0, 2, 1])],
        )
        .rand("query", &[q, c], 3)
        .i64("ax0", &[1], &[0])
        .node("Unsqueeze", &["query", "ax0"], &["q1"], vec![])
        .node(
            "Concat",
            &["tokens", "q1"],
            &["cat"],
            vec![int_attr("axis", 1)],
        )
        .node("Relu", &["cat"], &["y"], vec![])
        .output("y");
    let (g, lines) = generalize(&m);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Unsqueeze 'Unsqueeze_1'") && l.contains("expanded")),
        "{lines:?}"
    );
    same_per_image(&m, &g, 3);
}

#[test]
fn unit_a_matmul_with_a_vector_keeps_the_batch() {
    // D-FINE's distribution integral: softmax over the bins, then `@ w` with w of rank 1.
    let m = M::new(17)
        .input("x", &[2, 3, 4])
        .node("Softmax", &["x"], &["p"], vec![int_attr("axis", -1)])
        .rand("w", &[4], 5)
        .node("MatMul", &["p", "w"], &["y"], vec![])
        .output("y");
    let (g, lines) = generalize(&m);
    assert!(lines[0].starts_with("batch 2 made symbolic"), "{lines:?}");
    same_per_image(&m, &g, 3);
}

/// The official RT-DETRv2 deploy graph, generalised, builds as an fp16 engine with a batch
/// profile on both inputs (the real TensorRT-RTX libraries; no GPU needed).
#[cfg(not(feature = "enterprise"))]
#[test]
fn batch_profile_fp16_engine_of_the_generalised_official_rtdetrv2_builds_for_sm86() {
    let Some(trt) = detrc::build::engine::test_libraries() else {
        return;
    };
    let dir = tmpdir();
    let dynm = dir.path().join("dyn.onnx");
    let f = root().join("fixtures/family/rtdetrv2_official.onnx");
    let o = detrc(&[
        "compile",
        f.to_str().unwrap(),
        "-o",
        dynm.to_str().unwrap(),
        "--batch",
        "dynamic",
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let engine = dir.path().join("b124.engine");
    let images = "images:1x3x320x320/2x3x320x320/4x3x320x320";
    let sizes = "orig_target_sizes:1x2/2x2/4x2";
    let o = Command::new(env!("CARGO_BIN_EXE_detrc"))
        .env("DETRC_TENSORRT_DIR", &trt)
        .arg("build")
        .arg(&dynm)
        .arg("-o")
        .arg(&engine)
        .args(["-q", "--precision", "fp16", "--target", "sm86"])
        .args(["--shapes", images, "--shapes", sizes])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(detrc::build::sidecar_path(&engine)).unwrap();
    let sc = detrc::build::Sidecar::from_json(&text).unwrap();
    assert_eq!(
        sc.options.shapes,
        vec![images.to_string(), sizes.to_string()]
    );
    assert_eq!(sc.inputs[0].shape, vec![-1, 3, 320, 320]);
    assert_eq!(sc.precision, "fp16");
    assert_eq!(sc.targets, vec!["sm86".to_string()]);
}

// ---------- the default for a dynamic-batch export ----------

fn compile_default(path: &Path, plain: bool) -> detrc::driver::Compiled {
    let p = Pipeline::new(detrc::passes::registry());
    let shapes = ShapeOptions {
        plain,
        ..Default::default()
    };
    compile_with(path, &p, &shapes, &mut |_| {})
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_dynamic_batch_export_compiles_at_its_traced_batch_by_default() {
    // The transformers exports with a dynamic batch leave the Shape arithmetic around the
    // batch when compiled as declared; at the traced batch it folds, and the result is
    // generalised again, without running the model to find the batch.
    // facebookresearch/detr traced at batch 2 runs at batch 2 only as declared (its per-image
    // loop is unrolled), so there the gain is that the result runs at any batch.
    for (name, traced, fewer) in [
        ("fixtures/family/detr_op17_dyn.onnx", 1, true),
        ("fixtures/family/rtdetr_op17_dyn.onnx", 1, true),
        ("fixtures/dynamic/detr_tiny_op17_b2_dyn.onnx", 2, false),
    ] {
        let f = root().join(name);
        let routed = compile_default(&f, false);
        let plain = compile_default(&f, true);
        assert!(plain.batch.is_none(), "{name}");
        assert_eq!(
            routed.batch.as_ref().map(|b| b.traced),
            Some(traced),
            "{name}"
        );
        assert_eq!(routed.batch.as_ref().unwrap().result, None, "{name}");
        let n = |c: &detrc::driver::Compiled, op: &str| c.ops_after.get(op).copied().unwrap_or(0);
        let total = |c: &detrc::driver::Compiled| c.ops_after.values().sum::<usize>();
        assert!(
            !fewer || (total(&routed) < total(&plain) && n(&routed, "Shape") < n(&plain, "Shape")),
            "{name}: {} nodes / {} Shape against {} / {} as declared",
            total(&routed),
            n(&routed, "Shape"),
            total(&plain),
            n(&plain, "Shape")
        );
        assert_eq!(n(&routed, "Where"), 0, "{name}");
        // Image by image against the original at its traced batch.
        let v = verify_batches(
            &f,
            &encode(&routed.model),
            routed.batch.as_ref().unwrap(),
            &[1, 3],
            &[0],
            Tolerance::default(),
        )
        .unwrap();
        assert!(v.ok(), "{name}: {:?}", v.outputs);
    }
}

#[test]
fn the_default_route_keeps_the_batch_name_the_model_declares() {
    // The official RT-DETRv2 export calls its batch `N`.
    let c = compile_default(
        &root().join("fixtures/family/rtdetrv2_official.onnx"),
        false,
    );
    assert!(c.batch.is_some());
    let g = detrc::ir::from_onnx::import(c.model).unwrap();
    for n in g.graph_inputs() {
        let ty = g.node(n).outputs[0].ty.clone().unwrap();
        assert!(
            ty.to_string().starts_with("f32[N,") || ty.to_string().starts_with("i64[N,"),
            "{ty}"
        );
    }
}

#[test]
fn a_batch_generalize_batch_cannot_follow_falls_back_to_the_model_as_declared() {
    // ReduceSum over a dynamic batch: compiled with the batch left symbolic, and a report
    // says why.
    let m = M::new(13)
        .input_dims("x", &["n", "3"])
        .i64("ax", &[1], &[0])
        .node(
            "ReduceSum",
            &["x", "ax"],
            &["s"],
            vec![int_attr("keepdims", 1)],
        )
        .node("Relu", &["s"], &["y"], vec![])
        .output("y");
    let dir = tmpdir();
    let f = dir.path().join("reduce.onnx");
    std::fs::write(&f, encode(&m.model())).unwrap();
    let c = compile_default(&f, false);
    assert!(c.batch.is_none());
    let r = &c.reports[0];
    assert_eq!(
        (r.pass.as_str(), r.status.as_str()),
        ("generalize-batch", "not-applicable")
    );
    assert!(r.details[0].contains("over the batch"), "{:?}", r.details);
    assert!(
        r.details[0].contains("at ReduceSum 'ReduceSum_0'"),
        "{:?}",
        r.details
    );
    // The node and the reason, for --json.
    let route = c.batch_route.as_ref().expect("the route was tried");
    assert_eq!(route.status, "gave-up");
    assert_eq!(route.node.as_deref(), Some("ReduceSum_0"));
    assert_eq!(route.op.as_deref(), Some("ReduceSum"));
    assert!(route.reason.as_deref().unwrap().contains("over the batch"));
    // The command line says it on stderr, also with --json, and puts it in the JSON.
    let out = dir.path().join("reduce_out.onnx");
    let o = detrc(&[
        "compile",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not generalised at ReduceSum 'ReduceSum_0'")
            && err.contains("over the batch"),
        "{err}"
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["batch_route"]["status"], "gave-up");
    assert_eq!(j["batch_route"]["node"], "ReduceSum_0");
    assert_eq!(j["batch_route"]["op"], "ReduceSum");
    assert!(j["batch_route"]["reason"]
        .as_str()
        .unwrap()
        .contains("over the batch"));
    let g = detrc::ir::from_onnx::import(c.model).unwrap();
    let ty = g.node(g.graph_inputs()[0]).outputs[0].ty.clone().unwrap();
    assert_eq!(ty.to_string(), "f32[n,3]");
}

#[test]
fn unit_shape_conflicts_tell_a_wrong_batch() {
    // A Reshape to a baked batch 2 and a Split of the batch into two images, at batch 1.
    for (m, want) in [
        (
            M::new(13)
                .input("x", &[1, 4])
                .i64("t", &[2], &[2, 4])
                .node("Reshape", &["x", "t"], &["y"], vec![])
                .output("y"),
            "cannot reshape [1, 4] to [2, 4]",
        ),
        (
            M::new(13)
                .input("x", &[1, 4])
                .i64("s", &[2], &[1, 1])
                .node("Split", &["x", "s"], &["a", "b"], vec![int_attr("axis", 0)])
                .node("Add", &["a", "b"], &["y"], vec![])
                .output("y"),
            "splits an axis of 1 into [1, 1]",
        ),
    ] {
        let mut g = m.graph();
        detrc::analysis::typing::type_all(&mut g);
        let c = detrc::analysis::batch::shape_conflict(&g);
        assert!(c.as_deref().is_some_and(|c| c.contains(want)), "{c:?}");
    }
    // At the right batch nothing conflicts.
    let mut g = M::new(13)
        .input("x", &[2, 4])
        .i64("t", &[2], &[2, 4])
        .node("Reshape", &["x", "t"], &["y"], vec![])
        .output("y")
        .graph();
    detrc::analysis::typing::type_all(&mut g);
    assert_eq!(detrc::analysis::batch::shape_conflict(&g), None);
}
