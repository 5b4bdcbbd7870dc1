//! Dynamic batch through windowed attention: RF-DETR (its own `export()`, batch 1 and
//! `dynamic_batch=True`) and transformers' LW-DETR fold the attention windows into the batch
//! axis (`[B*W, tokens, C]`), repeat the class token once per window and undo the windows for
//! the global blocks. The batch route follows that: the dynamic export compiles as clean as
//! the static one, and both run at any batch, equal image by image to the original.
//! Fixtures: `fixtures/rfdetr/` (scripts/make_rfdetr_fixtures.py; the peers' counts are in
//! its manifest).

mod common;

use std::path::Path;

use common::*;
use detrc::driver::{compile_with, verify_batches, Batch, Compiled, ShapeOptions};
use detrc::pass::Pipeline;
use detrc::reference::compare::Tolerance;

fn snap(name: &str, text: String) {
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, text);
    });
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("fixtures/rfdetr/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn compile(path: &Path, batch: Batch) -> Compiled {
    let p = Pipeline::new(detrc::passes::registry());
    let shapes = ShapeOptions {
        batch,
        ..Default::default()
    };
    compile_with(path, &p, &shapes, &mut |_| {})
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn count(c: &Compiled, op: &str) -> usize {
    c.ops_after.get(op).copied().unwrap_or(0)
}

fn nodes(c: &Compiled) -> usize {
    c.ops_after.values().sum()
}

/// The fewest the peers leave of `what` on this export (from the fixture manifest).
fn best_peer(entry: &serde_json::Value, what: &str) -> usize {
    entry["peers"]
        .as_object()
        .expect("peers measured")
        .values()
        .map(|p| p[what].as_u64().unwrap() as usize)
        .min()
        .unwrap()
}

/// Each image's outputs equal the original's, at batch 1 to 4.
fn equal_at_batch_1_to_4(original: &Path, c: &Compiled) {
    let v = verify_batches(
        original,
        &encode(&c.model),
        c.batch.as_ref().expect("the batch route was taken"),
        &[1, 2, 3, 4],
        &[0],
        Tolerance::default(),
    )
    .unwrap();
    assert!(v.ok(), "{}: {:?}", original.display(), v.outputs);
}

#[test]
fn dynamic_exports_compile_as_clean_as_static_ones_and_run_at_any_batch() {
    let m = manifest();
    for entry in m["fixtures"].as_array().unwrap() {
        if entry["batch"] != "dynamic" {
            continue;
        }
        let file = entry["file"].as_str().unwrap();
        let f = root().join(file);
        // The default for a dynamic-batch export: compiled at its traced batch, generalised.
        let c = compile(&f, Batch::Keep);
        let route = c.batch_route.as_ref().expect("the route was tried");
        assert_eq!(route.status, "generalised", "{file}: {route:?}");
        assert_eq!(c.batch.as_ref().unwrap().result, None, "{file}");
        assert_eq!(count(&c, "Where"), 0, "{file}");
        for what in ["Gather", "Shape"] {
            assert!(
                count(&c, what) <= best_peer(entry, what),
                "{file}: {} {what} against the peers' {}",
                count(&c, what),
                best_peer(entry, what)
            );
        }
        assert!(
            nodes(&c) <= best_peer(entry, "nodes"),
            "{file}: {} nodes against the best peer's {}",
            nodes(&c),
            best_peer(entry, "nodes")
        );
        equal_at_batch_1_to_4(&f, &c);
        // As clean as the static export of the same model: the batch costs the Shape and
        // Gather of the run-time batch size, and the Expands of the per-window constants.
        let stat = root().join(file.replace("_dyn.onnx", "_b1.onnx"));
        if stat.exists() {
            let s = compile(&stat, Batch::Keep);
            assert!(s.batch.is_none());
            assert!(count(&c, "Shape") <= 1, "{file}");
            assert!(count(&c, "Gather") <= count(&s, "Gather") + 1, "{file}");
            assert!(
                nodes(&c) <= nodes(&s) + 12,
                "{file}: {} vs {}",
                nodes(&c),
                nodes(&s)
            );
        }
    }
}

#[test]
fn batch_dynamic_generalises_the_static_windowed_exports() {
    // The class token repeated per window (`Tile`) read the batch before `slice-concat`
    // folded it: "Tile ... it repeats along the batch".
    let m = manifest();
    let mut seen = 0;
    for entry in m["fixtures"].as_array().unwrap() {
        if entry["batch"] != 1 {
            continue;
        }
        let file = entry["file"].as_str().unwrap();
        let f = root().join(file);
        let c = compile(&f, Batch::Dynamic);
        assert_eq!(
            c.batch_route.as_ref().map(|r| r.status),
            Some("generalised")
        );
        assert_eq!(count(&c, "Where"), 0, "{file}");
        assert!(count(&c, "Shape") <= 1, "{file}");
        equal_at_batch_1_to_4(&f, &c);
        seen += 1;
    }
    assert!(seen >= 2, "static RF-DETR fixtures: {seen}");
}

/// The window partition of a batch-1 ViT, by hand: `[1, 4, 4, C]` patches into 2x2 windows
/// of 2x2 (`[B*2, 2, 2, 2, C]`, transpose, `[B*4, 4, C]`), the class token `[1, 1, C]`
/// tiled once per window (`[4, 1, C]`) in front, a token mix, the windows undone for a global
/// block (`[B, 4*5, C]`).
fn windowed_vit(c: i64) -> M {
    M::new(17)
        .input("x", &[1, 4, 4, c])
        .i64("t1", &[5], &[2, 2, 2, 2, c])
        .node("Reshape", &["x", "t1"], &["w1"], vec![])
        .node(
            "Transpose",
            &["w1"],
            &["w2"],
            vec![ints_attr("perm", &[0, 2, 1, 3, 4])],
        )
        .i64("t2", &[3], &[4, 4, c])
        .node("Reshape", &["w2", "t2"], &["win"], vec![])
        .rand("cls", &[1, 1, c], 3)
        .i64("reps", &[3], &[4, 1, 1])
        .node("Tile", &["cls", "reps"], &["cls_w"], vec![])
        .node(
            "Concat",
            &["cls_w", "win"],
            &["tok"],
            vec![int_attr("axis", 1)],
        )
        .rand("wq", &[c, c], 4)
        .node("MatMul", &["tok", "wq"], &["h"], vec![])
        .node("Softmax", &["h"], &["p"], vec![int_attr("axis", 1)])
        .i64("t3", &[3], &[1, 20, c])
        .node("Reshape", &["p", "t3"], &["glob"], vec![])
        .node("Relu", &["glob"], &["y"], vec![])
        .output("y")
}

fn generalize(m: &M) -> (detrc::ir::Graph, Vec<String>) {
    let mut g = m.graph();
    apply(&mut g, &detrc::passes::infer_shapes::InferShapes);
    let lines =
        detrc::passes::generalize_batch::generalize(&mut g).unwrap_or_else(|e| panic!("{e}"));
    g.fix_output_names();
    g.validate().unwrap();
    (g, lines)
}

/// `after` at batch `k`, image by image against `before` (static batch 1).
fn same_per_image(before: &M, after: &detrc::ir::Graph, k: i64) {
    let dir = tmpdir();
    let p = dir.path().join("before.onnx");
    std::fs::write(&p, encode(&before.model())).unwrap();
    let shapes = detrc::driver::static_input_shapes(&before.graph()).unwrap();
    let change = detrc::driver::BatchChange {
        traced: 1,
        result: None,
        input_shapes: shapes,
    };
    let v = verify_batches(
        &p,
        &encode(&after.export()),
        &change,
        &[k],
        &[0, 1],
        Tolerance::default(),
    )
    .unwrap();
    assert!(v.ok(), "batch {k}: {:?}", v.outputs);
}

#[test]
fn unit_windows_folded_into_the_batch_follow_it() {
    let m = windowed_vit(6);
    let before = {
        let mut g = m.graph();
        apply(&mut g, &detrc::passes::infer_shapes::InferShapes);
        g.dump()
    };
    let (g, lines) = generalize(&m);
    snap(
        "windowed_batch__partition",
        format!(
            "--- before\n{before}--- after\n{}--- report\n{}\n",
            g.dump(),
            lines.join("\n")
        ),
    );
    // The partition `[B*2, ...]`, `[B*4, ...]` and its inverse `[B, 20, C]` follow the batch;
    // the class token, one per window, is tiled to B*4.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Reshape") && l.contains("[2, 2, 2, 2, 6]")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Tile") || l.contains("'cls")),
        "{lines:?}"
    );
    for k in [2, 3, 4] {
        same_per_image(&m, &g, k);
    }
}

#[test]
fn unit_slice_concat_reads_the_class_token_back_as_a_constant() {
    // DINOv2's embeddings: the class token in front of the patch tokens, the position
    // embedding added, the class token and the patch tokens taken back apart.
    let (n, c) = (4, 3);
    let m = M::new(17)
        .input("x", &[1, n, c])
        .rand("cls", &[1, 1, c], 5)
        .node("Concat", &["cls", "x"], &["e"], vec![int_attr("axis", 1)])
        .rand("pos", &[1, n + 1, c], 6)
        .node("Add", &["e", "pos"], &["ep"], vec![])
        .i64("s0", &[1], &[0])
        .i64("s1", &[1], &[1])
        .i64("end", &[1], &[i64::MAX])
        .i64("ax", &[1], &[1])
        .node("Slice", &["ep", "s0", "s1", "ax"], &["tok"], vec![])
        .node("Slice", &["ep", "s1", "end", "ax"], &["patches"], vec![])
        .i64("reps", &[3], &[4, 1, 1])
        .node("Tile", &["tok", "reps"], &["tok4"], vec![])
        .node("Relu", &["patches"], &["y"], vec![])
        .output("tok4")
        .output("y");
    let mut g = m.graph();
    apply(&mut g, &detrc::passes::infer_shapes::InferShapes);
    let before = g.clone();
    let o = apply(&mut g, &detrc::passes::slice_concat::SliceConcat);
    assert!(matches!(o, detrc::pass::Outcome::Changed(_)), "{o:?}");
    apply(&mut g, &detrc::passes::fold_constants::FoldConstants);
    apply(&mut g, &detrc::passes::dead_code::DeadCode);
    assert_same_outputs_graph(&before, &g);
    // The class token's chain and its Tile are constants now; the patches read the input.
    assert_eq!(op_count(&g, "Concat"), 0, "{}", g.dump());
    assert_eq!(op_count(&g, "Tile"), 0, "{}", g.dump());
    snap(
        "windowed_batch__slice_concat",
        format!("--- before\n{}--- after\n{}", before.dump(), g.dump()),
    );
}

#[test]
fn unit_slice_concat_leaves_slices_across_parts_and_input_dependent_operands() {
    let m = M::new(17)
        .input("x", &[1, 4, 3])
        .input("z", &[1, 5, 3])
        .rand("cls", &[1, 1, 3], 5)
        .node("Concat", &["cls", "x"], &["e"], vec![int_attr("axis", 1)])
        // An operand from the input, as large as the output: slicing it would add work.
        .node("Add", &["e", "z"], &["ez"], vec![])
        .i64("s0", &[1], &[0])
        .i64("s2", &[1], &[2])
        .i64("ax", &[1], &[1])
        .node("Slice", &["ez", "s0", "s2", "ax"], &["a"], vec![])
        // Across the two parts.
        .node("Slice", &["e", "s0", "s2", "ax"], &["b"], vec![])
        // Within the input's part, but the Concat is read whole too: rewritten, the Add of
        // the tokens would run twice.
        .i64("s3", &[1], &[3])
        .node("Slice", &["e", "s2", "s3", "ax"], &["c"], vec![])
        .node("Relu", &["e"], &["d"], vec![])
        .output("a")
        .output("b")
        .output("c")
        .output("d");
    let mut g = m.graph();
    apply(&mut g, &detrc::passes::infer_shapes::InferShapes);
    let o = apply(&mut g, &detrc::passes::slice_concat::SliceConcat);
    assert!(matches!(o, detrc::pass::Outcome::Unchanged), "{o:?}");
}

#[test]
fn batch_profile_fp16_engine_of_the_generalised_rfdetr_builds_for_sm86() {
    // The multi-camera case: RF-DETR's dynamic export compiled by default, then an engine
    // with the batch profile 1/2/4 (CPU-only build with the real TensorRT-RTX libraries).
    let Some(trt) = detrc::build::engine::test_libraries() else {
        return;
    };
    let dir = tmpdir();
    let dynm = dir.path().join("dyn.onnx");
    let f = root().join("fixtures/rfdetr/rfdetr_nano_dyn.onnx");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_detrc"))
        .args([
            "compile",
            f.to_str().unwrap(),
            "-o",
            dynm.to_str().unwrap(),
            "-q",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let engine = dir.path().join("b124.engine");
    let shapes = "input:1x3x128x128/2x3x128x128/4x3x128x128";
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_detrc"))
        .env("DETRC_TENSORRT_DIR", &trt)
        .arg("build")
        .arg(&dynm)
        .arg("-o")
        .arg(&engine)
        .args(["-q", "--precision", "fp16", "--target", "sm86"])
        .args(["--shapes", shapes])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(detrc::build::sidecar_path(&engine)).unwrap();
    let sc = detrc::build::Sidecar::from_json(&text).unwrap();
    assert_eq!(sc.options.shapes, vec![shapes.to_string()]);
    assert_eq!(sc.inputs[0].shape, vec![-1, 3, 128, 128]);
    assert_eq!(sc.precision, "fp16");
}

#[test]
fn windows_mixed_across_the_batch_are_compiled_as_declared_with_the_node_named() {
    // A window pattern matched only in part: the windows are folded into the batch, then a
    // reduction runs over that axis, mixing the windows of every image. The route gives up
    // at that node, says so, and the model is compiled as declared.
    let m = M::new(17)
        .input_dims("x", &["n", "4", "4", "6"])
        .i64("t1", &[5], &[2, 2, 2, 2, 6])
        .node("Reshape", &["x", "t1"], &["w1"], vec![])
        .node(
            "Transpose",
            &["w1"],
            &["w2"],
            vec![ints_attr("perm", &[0, 2, 1, 3, 4])],
        )
        .i64("t2", &[3], &[4, 4, 6])
        .node("Reshape", &["w2", "t2"], &["win"], vec![])
        .i64("ax", &[1], &[0])
        .node(
            "ReduceMax",
            &["win", "ax"],
            &["y"],
            vec![int_attr("keepdims", 1)],
        )
        .output("y");
    let dir = tmpdir();
    let f = dir.path().join("windows_mixed.onnx");
    std::fs::write(&f, encode(&m.model())).unwrap();
    let c = compile(&f, Batch::Keep);
    assert!(c.batch.is_none());
    let route = c.batch_route.as_ref().expect("the route was tried");
    assert_eq!(route.status, "gave-up");
    assert_eq!(route.op.as_deref(), Some("ReduceMax"), "{route:?}");
    assert!(
        route
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("over the batch")),
        "{route:?}"
    );
    let g = detrc::ir::from_onnx::import(c.model).unwrap();
    let ty = g.node(g.graph_inputs()[0]).outputs[0].ty.clone().unwrap();
    assert_eq!(ty.to_string(), "f32[n,4,4,6]");
}
