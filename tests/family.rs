//! DETR-family exports (fixtures/family/: transformers DETR variants, RT-DETR, D-FINE, LW-DETR,
//! RF-DETR, DEIMv2, YOLOS, Table Transformer, the official RT-DETRv2 / D-FINE / DEIM / DEIMv2
//! export scripts) and the passes made for them: each compiled
//! model against its original (onnxruntime through scripts/family_compare.py: TopK outputs as
//! sets of detections, Deformable DETR against a copy with its float64 grid cast to float;
//! tract in-process on the static transformers exports it can run), and the
//! `float64-to-float32` pass on small hand-built graphs with snapshots.

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use common::*;
use detrc::ir::DType;
use detrc::load::proto::TensorProto;
use detrc::pass::{Outcome, Pipeline};
use detrc::passes::*;

fn family_fixtures() -> Vec<PathBuf> {
    let man: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("fixtures/family/manifest.json")).expect("manifest"),
    )
    .expect("manifest is JSON");
    man["fixtures"]
        .as_array()
        .expect("fixtures list")
        .iter()
        .map(|e| root().join(e["file"].as_str().expect("file")))
        .collect()
}

fn family(name: &str) -> PathBuf {
    root().join("fixtures/family").join(name)
}

fn compile(path: &std::path::Path) -> detrc::driver::Compiled {
    let p = Pipeline::new(detrc::passes::registry());
    detrc::driver::compile(path, &p, &mut |_| {}).expect("compiles")
}

fn snap(name: &str, text: String) {
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, text);
    });
}

fn f64_tensor(name: &str, dims: &[i64], vals: &[f64]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DType::F64.0),
        name: Some(name.into()),
        raw_data: Some(Bytes::from(
            vals.iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )),
        ..Default::default()
    }
}

fn count_f64(g: &detrc::ir::Graph) -> usize {
    detrc::passes::to_fp16::infer_dtypes(g)
        .unwrap()
        .values()
        .filter(|d| **d == DType::F64)
        .count()
}

/// Deformable DETR's grid computation in miniature: a float tensor cast to double, double
/// reference points added and a double normalizer divided, then back to float.
fn double_chain(sink_output_is_double: bool) -> M {
    let mut m = M::new(17)
        .input("x", &[1, 3, 4, 2])
        .output("y")
        .node("Cast", &["x"], &["xd"], vec![int_attr("to", 11)])
        .node("Add", &["xd", "refpts"], &["s"], vec![])
        .node("Div", &["s", "norm"], &["grid"], vec![]);
    m.inits.push(f64_tensor(
        "refpts",
        &[1, 3, 4, 2],
        &vals(24, 5).iter().map(|&v| v as f64).collect::<Vec<_>>(),
    ));
    m.inits.push(f64_tensor("norm", &[2], &[7.0, 5.0]));
    if sink_output_is_double {
        m.outputs[0] = vi("grid", DType::F64, None);
        m
    } else {
        m.node("Cast", &["grid"], &["gf"], vec![int_attr("to", 1)])
            .node("Mul", &["gf", "x"], &["y"], vec![])
    }
}

#[test]
fn float64_chain_becomes_float32() {
    let m = double_chain(false);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let before = g.clone();
    assert!(count_f64(&g) > 0);
    let o = apply(&mut g, &float64_to_float32::Float64ToFloat32);
    assert!(matches!(o, Outcome::Changed(_)), "{o:?}");
    assert_eq!(count_f64(&g), 0, "no float64 tensor left");
    // The values are float32's, not float64's: equal within float32 rounding.
    assert_same_outputs(&encode(&before.export()), &encode(&g.export()), 1e-6);
    snap(
        "unit__float64_to_float32",
        format!(
            "--- before\n{}--- after ({o:?})\n{}",
            before.dump(),
            g.dump()
        ),
    );
    // The Casts it leaves between floats are removed by eliminate-noops.
    apply(&mut g, &eliminate_noops::EliminateNoops);
    assert_eq!(op_count(&g, "Cast"), 0);
}

#[test]
fn float64_graph_output_is_left_unchanged_with_the_reason() {
    let m = double_chain(true);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let before = g.dump();
    let o = apply(&mut g, &float64_to_float32::Float64ToFloat32);
    match o {
        Outcome::NotApplicable(why) => assert!(why.contains("graph output 'grid'"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(g.dump(), before);
}

#[test]
fn float64_pass_leaves_float_models_alone() {
    let m = M::new(17)
        .input("x", &[2, 3])
        .output("y")
        .rand("w", &[3, 2], 3)
        .node("MatMul", &["x", "w"], &["y"], vec![]);
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let o = apply(&mut g, &float64_to_float32::Float64ToFloat32);
    assert_eq!(o, Outcome::Unchanged);
}

#[test]
fn compiled_deformable_detr_has_no_float64_and_runs_its_grids_in_float() {
    for f in [
        "deformable_detr_op17_b1.onnx",
        "deformable_detr_refine_op16_b1.onnx",
    ] {
        let c = compile(&family(f));
        let g = detrc::ir::from_onnx::import(c.model).unwrap();
        assert_eq!(count_f64(&g), 0, "{f}: float64 left");
        assert!(op_count(&g, "GridSample") > 0, "{f}: GridSample kept");
        let r = c
            .reports
            .iter()
            .find(|r| r.pass == "float64-to-float32" && r.status == "changed")
            .unwrap_or_else(|| panic!("{f}: float64-to-float32 did not run"));
        assert!(r.details[0].contains("now float32"), "{:?}", r.details);
    }
}

/// The static transformers exports tract can run: compiled == original in-process.
#[test]
fn tract_agrees_on_static_transformers_exports() {
    for f in [
        "detr_op17_b1.onnx",
        "conditional_detr_op16_b1.onnx",
        "rtdetr_op17_b1.onnx",
    ] {
        let src = family(f);
        let c = compile(&src);
        assert_same_outputs(&std::fs::read(&src).unwrap(), &encode(&c.model), 1e-4);
    }
}

/// Every family fixture compiles, and onnxruntime computes the same outputs from the original
/// and the compiled model.
#[test]
fn onnxruntime_agrees_on_every_family_fixture() {
    let Some(py) = python_or_skip() else { return };
    let dir = tmpdir();
    let mut failures = vec![];
    for f in family_fixtures() {
        let c = compile(&f);
        let out = dir.path().join(f.file_name().unwrap());
        detrc::emit::save(&c.model, &out, detrc::emit::ExternalData::Never).unwrap();
        let batch = if f.to_string_lossy().contains("rtdetrv2_official") {
            "1" // that export specializes its batch to 1
        } else {
            "2"
        };
        let o = std::process::Command::new(&py)
            .arg(root().join("scripts/family_compare.py"))
            .arg(&f)
            .arg(&out)
            .args(["--atol", "1e-4", "--batch", batch])
            .output()
            .unwrap();
        if !o.status.success() {
            failures.push(format!(
                "{}: {}{}",
                f.display(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// RT-DETR / D-FINE in miniature: every decoder layer has its own class head, the results
/// are stacked on axis 1 and `[:, -1]` keeps the last. With the shapes unknown (the pass runs
/// before shape inference here, as on decoders behind ops it cannot type), the stack is found
/// by structure; only the last layer's head stays.
fn per_layer_heads(opset: i64) -> M {
    let mut m = M::new(opset)
        .input("x", &[1, 4, 3])
        .output("y")
        .i64("ax1", &[1], &[1])
        .i64("last", &[], &[-1]);
    for i in 0..3 {
        let w = format!("w{i}");
        let c = format!("c{i}");
        let prev = if i == 0 {
            "x".to_string()
        } else {
            format!("h{}", i - 1)
        };
        m = m
            .rand(&c, &[3], 10 + i)
            .rand(&w, &[3, 5], 20 + i)
            .node("Add", &[&prev, &c], &[&format!("h{i}")], vec![])
            .node(
                "MatMul",
                &[&format!("h{i}"), &w],
                &[&format!("logit{i}")],
                vec![],
            );
        m = if opset >= 13 {
            m.node(
                "Unsqueeze",
                &[&format!("logit{i}"), "ax1"],
                &[&format!("u{i}")],
                vec![],
            )
        } else {
            m.node(
                "Unsqueeze",
                &[&format!("logit{i}")],
                &[&format!("u{i}")],
                vec![ints_attr("axes", &[1])],
            )
        };
    }
    m.node(
        "Concat",
        &["u0", "u1", "u2"],
        &["stack"],
        vec![int_attr("axis", 1)],
    )
    .node(
        "Gather",
        &["stack", "last"],
        &["y"],
        vec![int_attr("axis", 1)],
    )
}

#[test]
fn prune_aux_heads_finds_an_untyped_stack_by_structure() {
    for opset in [12, 17] {
        let m = per_layer_heads(opset);
        let mut g = m.graph();
        let before = g.clone();
        let o = apply(&mut g, &prune_aux_heads::PruneAuxHeads);
        assert!(matches!(o, Outcome::Changed(_)), "{o:?}");
        assert_eq!(
            op_count(&g, "MatMul"),
            1,
            "only the last layer's head is left"
        );
        assert_eq!(op_count(&g, "Add"), 3, "the chain through the layers stays");
        assert_eq!(op_count(&g, "Gather") + op_count(&g, "Concat"), 0);
        assert_same_outputs_graph(&before, &g);
        if opset == 17 {
            snap(
                "unit__prune_untyped_stack",
                format!(
                    "--- before\n{}--- after ({o:?})\n{}",
                    before.dump(),
                    g.dump()
                ),
            );
        }
    }
}

#[test]
fn prune_aux_heads_leaves_a_stack_whose_layers_are_read_elsewhere() {
    // The middle layer's Unsqueeze also feeds an output: not a plain stack of layers.
    let mut m = per_layer_heads(17).output("u1");
    m.outputs[1] = vi("u1", DType::F32, None);
    let mut g = m.graph();
    let before = g.dump();
    let o = apply(&mut g, &prune_aux_heads::PruneAuxHeads);
    assert!(matches!(o, Outcome::NotApplicable(_)), "{o:?}");
    assert_eq!(g.dump(), before);
}

/// The compiled family models build TensorRT-RTX engines for sm86 in fp32 and fp16 (real
/// libraries, CPU only). Deformable DETR is the one whose fp16 build failed: GridSample got a
/// half input and a float grid.
#[test]
fn compiled_family_models_build_fp32_and_fp16_engines() {
    let Some(trt) = detrc::build::engine::test_libraries() else {
        assert!(
            std::env::var_os("DETRC_REQUIRE_TENSORRT").is_none(),
            "DETRC_REQUIRE_TENSORRT is set but the TensorRT-RTX libraries are missing"
        );
        eprintln!("SKIP: no TensorRT-RTX libraries (scripts/install_tensorrt_rtx.sh)");
        return;
    };
    let dir = tmpdir();
    for f in [
        "deformable_detr_refine_op17_b1.onnx",
        "rtdetr_op16_b1.onnx",
        "dfine_op17_b1.onnx",
    ] {
        let compiled = dir.path().join(f);
        let c = compile(&family(f));
        detrc::emit::save(&c.model, &compiled, detrc::emit::ExternalData::Never).unwrap();
        for precision in ["fp32", "fp16"] {
            let engine = dir.path().join(format!("{f}.{precision}.engine"));
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_detrc"))
                .env("DETRC_TENSORRT_DIR", &trt)
                .arg("build")
                .arg(&compiled)
                .arg("-o")
                .arg(&engine)
                .args(["--target", "sm86", "--precision", precision, "-q"])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{f} {precision}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(std::fs::metadata(&engine).unwrap().len() > 0);
        }
    }
}

/// In fp16 every GridSample reads its input and its grid in one type (TensorRT's parser
/// rejects a half input with a float grid).
#[test]
fn fp16_gridsample_inputs_share_a_type() {
    for f in [
        "deformable_detr_op17_b1.onnx",
        "deformable_detr_refine_op16_b1.onnx",
        "rtdetr_op17_b1.onnx",
    ] {
        let c = compile(&family(f));
        let mut g = detrc::ir::from_onnx::import(c.model).unwrap();
        apply(&mut g, &infer_shapes::InferShapes);
        apply(&mut g, &to_fp16::ToFp16::default());
        let dts = to_fp16::infer_dtypes(&g).unwrap();
        let mut seen = 0;
        for n in g.topo_ops() {
            if !g.node(n).is("GridSample") {
                continue;
            }
            let (x, grid) = (g.input(n, 0).unwrap(), g.input(n, 1).unwrap());
            assert_eq!(dts[&x], dts[&grid], "{f}: {}", g.node(n).display_name());
            seen += 1;
        }
        assert!(seen > 0, "{f}: no GridSample");
    }
}

/// The newer families (issue 24): transformers LW-DETR, RF-DETR, DEIMv2 (DINOv3), YOLOS,
/// Table Transformer, and the official DEIM / DEIMv2 export scripts.
const NEWGEN: [&str; 7] = [
    "lw_detr",
    "rf_detr",
    "deimv2",
    "yolos",
    "table_transformer",
    "deim_official",
    "deimv2_official",
];

fn newgen_fixtures() -> Vec<PathBuf> {
    family_fixtures()
        .into_iter()
        .filter(|f| {
            let n = f.file_name().unwrap().to_string_lossy().to_string();
            NEWGEN.iter().any(|fam| {
                n.strip_prefix(fam)
                    .is_some_and(|rest| rest.starts_with("_op") || rest == ".onnx")
            })
        })
        .collect()
}

/// Every newer-family fixture compiles to a model without Where, If or a Resize of constants,
/// and (where the exporter wrote the op-16 decomposition) with LayerNorm fused: as many
/// LayerNormalization nodes as the op-17 export of the same model compiles to, and none of
/// its ReduceMean left (DEIMv2's RMSNorm keeps its own).
#[test]
fn newer_families_compile_clean() {
    let fixtures = newgen_fixtures();
    assert!(fixtures.len() >= 17, "{fixtures:?}");
    let mut layernorms = std::collections::HashMap::new();
    for f in &fixtures {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let g = detrc::ir::from_onnx::import(compile(f).model).unwrap();
        for op in ["Where", "If"] {
            assert_eq!(op_count(&g, op), 0, "{name}: {op} left");
        }
        for n in g.topo_ops() {
            if g.node(n).is("Resize") {
                let x = g.input(n, 0).unwrap();
                assert!(
                    g.const_tensor(x).is_none(),
                    "{name}: a Resize of a constant is left"
                );
            }
        }
        if let Some(fam) = name.strip_suffix("_op16_b1.onnx") {
            layernorms.insert((fam.to_string(), 16), op_count(&g, "LayerNormalization"));
            layernorms.insert((fam.to_string(), -16), op_count(&g, "ReduceMean"));
        }
        if let Some(fam) = name.strip_suffix("_op17_b1.onnx") {
            layernorms.insert((fam.to_string(), 17), op_count(&g, "LayerNormalization"));
            layernorms.insert((fam.to_string(), -17), op_count(&g, "ReduceMean"));
        }
    }
    let mut checked = 0;
    for fam in NEWGEN {
        let (Some(l16), Some(l17)) = (
            layernorms.get(&(fam.to_string(), 16)),
            layernorms.get(&(fam.to_string(), 17)),
        ) else {
            continue;
        };
        assert!(*l17 > 0, "{fam}: no LayerNormalization at opset 17");
        assert_eq!(l16, l17, "{fam}: LayerNorms fused at opset 16");
        assert_eq!(
            layernorms[&(fam.to_string(), -16)],
            layernorms[&(fam.to_string(), -17)],
            "{fam}: ReduceMean left at opset 16 beyond opset 17's"
        );
        checked += 1;
    }
    assert_eq!(
        checked, 4,
        "LW-DETR, DEIMv2, YOLOS, Table Transformer at opsets 16 and 17"
    );
}

/// The newer families' dynamic-batch exports (and the official DEIM / DEIMv2 exports, whose
/// batch is symbolic) compile to models equal to the original at batch 1 to 4 under
/// onnxruntime; the official ones' TopK detections as sets.
#[test]
fn newer_dynamic_exports_agree_at_batch_1_to_4() {
    let Some(py) = python_or_skip() else { return };
    let dir = tmpdir();
    let mut failures = vec![];
    let mut runs = 0;
    for f in newgen_fixtures() {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if !(name.ends_with("_dyn.onnx") || name.contains("official")) {
            continue;
        }
        let c = compile(&f);
        let out = dir.path().join(&name);
        detrc::emit::save(&c.model, &out, detrc::emit::ExternalData::Never).unwrap();
        for batch in 1..=4 {
            let o = std::process::Command::new(&py)
                .arg(root().join("scripts/family_compare.py"))
                .arg(&f)
                .arg(&out)
                .args(["--atol", "1e-4", "--batch", &batch.to_string()])
                .output()
                .unwrap();
            runs += 1;
            if !o.status.success() {
                failures.push(format!(
                    "{name} at batch {batch}: {}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
    }
    assert_eq!(runs, 6 * 4, "4 dynamic exports and 2 official ones");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The newer families build TensorRT-RTX engines for sm86 (real libraries, CPU only): the
/// static exports in fp32 and fp16, the dynamic ones in fp16 with a batch 1-4 profile.
#[test]
fn newer_families_build_engines() {
    let Some(trt) = detrc::build::engine::test_libraries() else {
        assert!(
            std::env::var_os("DETRC_REQUIRE_TENSORRT").is_none(),
            "DETRC_REQUIRE_TENSORRT is set but the TensorRT-RTX libraries are missing"
        );
        eprintln!("SKIP: no TensorRT-RTX libraries (scripts/install_tensorrt_rtx.sh)");
        return;
    };
    let dir = tmpdir();
    let build = |compiled: &std::path::Path, precision: &str, shapes: Option<&str>| {
        let engine = compiled.with_extension(format!("{precision}.engine"));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_detrc"));
        cmd.env("DETRC_TENSORRT_DIR", &trt)
            .arg("build")
            .arg(compiled)
            .arg("-o")
            .arg(&engine)
            .args(["--target", "sm86", "--precision", precision, "-q"]);
        if let Some(s) = shapes {
            cmd.args(["--shapes", s]);
        }
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{} {precision}: {}{}",
            compiled.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(std::fs::metadata(&engine).unwrap().len() > 0);
    };
    for f in [
        "lw_detr_op16_b1.onnx",
        "rf_detr_op18_dynamo_b1.onnx",
        "deimv2_op16_b1.onnx",
        "yolos_op17_b1.onnx",
        "table_transformer_op16_b1.onnx",
        "deim_official.onnx",
        "deimv2_official.onnx",
    ] {
        let compiled = dir.path().join(f);
        let c = compile(&family(f));
        detrc::emit::save(&c.model, &compiled, detrc::emit::ExternalData::Never).unwrap();
        for precision in ["fp32", "fp16"] {
            build(&compiled, precision, None);
        }
    }
    for f in [
        "lw_detr_op17_dyn.onnx",
        "deimv2_op17_dyn.onnx",
        "yolos_op17_dyn.onnx",
        "table_transformer_op17_dyn.onnx",
    ] {
        let compiled = dir.path().join(f);
        let c = compile(&family(f));
        detrc::emit::save(&c.model, &compiled, detrc::emit::ExternalData::Never).unwrap();
        build(
            &compiled,
            "fp16",
            Some("pixel_values:1x3x96x128/2x3x96x128/4x3x96x128"),
        );
    }
}
