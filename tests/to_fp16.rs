//! The to-fp16 pass on the repo fixtures, checked numerically against fp32 with the tract
//! reference runtime on seeded inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use detrc::ir::{DType, Graph, Port};
use detrc::pass::{Context, Outcome, Pass};
use detrc::passes::to_fp16::{self, ToFp16};
use detrc::reference::Reference;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn load(name: &str) -> Graph {
    detrc::driver::load_graph(&fixture(name)).unwrap().0
}

fn convert_with(name: &str, pass: &ToFp16) -> (Graph, Vec<u8>) {
    let mut g = load(name);
    pass.convert(&mut g).unwrap();
    g.fix_output_names();
    g.validate().unwrap();
    let mut bytes = Vec::new();
    detrc::emit::write_model(&g.export(), &mut bytes).unwrap();
    (g, bytes)
}

/// tract 0.23 cannot evaluate an fp16 Gemm that has a C input: it multiplies C by an fp32
/// constant holding `beta` ("tensor is F16, accessed as F32"). ONNX Runtime and TensorRT take
/// the model as it is; for tract, `Gemm(A, B, C)` becomes the equivalent `Add(Gemm(A, B), C)`.
fn for_tract(fp16: &[u8]) -> Vec<u8> {
    let mut m =
        detrc::load::decode(Path::new("<fp16>"), bytes::Bytes::copy_from_slice(fp16)).unwrap();
    let g = m.graph.as_mut().unwrap();
    let mut nodes = Vec::new();
    for mut n in std::mem::take(&mut g.node) {
        let beta = n
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some("beta"))
            .and_then(|a| a.f)
            .unwrap_or(1.0);
        if n.op_type.as_deref() == Some("Gemm") && n.input.len() == 3 && !n.input[2].is_empty() {
            assert_eq!(beta, 1.0, "only beta = 1 is rewritten");
            let c = n.input.pop().unwrap();
            let out = std::mem::take(&mut n.output[0]);
            let ab = format!("{out}__ab");
            n.output[0] = ab.clone();
            nodes.push(n);
            nodes.push(detrc::load::proto::NodeProto {
                input: vec![ab, c],
                output: vec![out],
                op_type: Some("Add".into()),
                ..Default::default()
            });
        } else {
            nodes.push(n);
        }
    }
    g.node = nodes;
    let mut v = Vec::new();
    detrc::emit::write_model(&m, &mut v).unwrap();
    v
}

/// Largest |fp32 - fp16| per output over two seeds.
fn max_diffs(name: &str, fp16: &[u8]) -> Vec<(String, f32)> {
    let a = Reference::from_path(&fixture(name)).unwrap();
    let b = Reference::from_bytes(&for_tract(fp16)).unwrap();
    let mut worst: HashMap<String, f32> = HashMap::new();
    for seed in [0, 1] {
        let inputs = a.random_inputs(seed);
        let ra = a.run(&inputs).unwrap();
        let rb = b.run(&inputs).unwrap();
        for ((n, x), (m, y)) in ra.iter().zip(&rb) {
            assert_eq!(n, m);
            assert_eq!(x.shape(), y.shape(), "{n}");
            let d = x
                .iter()
                .zip(y.iter())
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(d.is_finite(), "{name} {n}: non-finite difference");
            let e = worst.entry(n.clone()).or_insert(0.0);
            *e = e.max(d);
        }
    }
    let mut v: Vec<_> = worst.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Worst max |diff| measured with tract on seeds 0 and 1 (docs/build.md): 4.5e-3 for logits,
/// 1.6e-4 for boxes. The bounds leave about 4x headroom.
fn tolerance(output: &str) -> f32 {
    match output {
        "pred_boxes" => 1e-3,
        _ => 2e-2,
    }
}

#[test]
fn fixtures_match_fp32_within_tolerance() {
    for name in [
        "detr_tiny_op17_b1.onnx",
        "detr_tiny_op12_b1.onnx",
        "detr_tiny2_op17_b2.onnx",
        "cnn_tiny_op17_b1.onnx",
    ] {
        let (_, bytes) = convert_with(name, &ToFp16::default());
        for (out, d) in max_diffs(name, &bytes) {
            eprintln!("{name} {out}: max |fp32 - fp16| = {d:.3e}");
            assert!(
                d <= tolerance(&out),
                "{name} {out}: {d} > {}",
                tolerance(&out)
            );
        }
    }
}

/// What `detrc build --precision fp16` does to a model detrc has not compiled: the default
/// pipeline, then to-fp16.
#[test]
fn compiled_then_converted_matches_fp32() {
    for name in ["detr_tiny_op17_b1.onnx", "detr_tiny_op12_b1.onnx"] {
        let mut g = load(name);
        let pipeline = detrc::pass::Pipeline::new(detrc::passes::registry());
        pipeline.run(&mut g, &mut |_| {}).unwrap();
        ToFp16::default().convert(&mut g).unwrap();
        g.fix_output_names();
        g.validate().unwrap();
        let mut bytes = Vec::new();
        detrc::emit::write_model(&g.export(), &mut bytes).unwrap();
        for (out, d) in max_diffs(name, &bytes) {
            eprintln!("{name} compiled+fp16 {out}: max |fp32 - fp16| = {d:.3e}");
            assert!(
                d <= tolerance(&out),
                "{name} {out}: {d} > {}",
                tolerance(&out)
            );
        }
    }
}

fn float_types(g: &Graph) -> HashMap<Port, DType> {
    to_fp16::infer_dtypes(g).unwrap()
}

#[test]
fn interface_stays_fp32_and_weights_become_fp16() {
    let (g, bytes) = convert_with("detr_tiny_op17_b1.onnx", &ToFp16::default());
    let m = detrc::load::decode(Path::new("<fp16>"), bytes::Bytes::from(bytes)).unwrap();
    let gp = m.graph.as_ref().unwrap();
    for vi in gp.input.iter().chain(&gp.output) {
        let ty = detrc::ir::TensorType::from_proto(vi.r#type.as_ref().unwrap()).unwrap();
        assert_eq!(ty.dtype, DType::F32, "{:?}", vi.name);
    }
    let (mut f16, mut f32) = (0usize, 0usize);
    for t in &gp.initializer {
        let n = t.raw_data.as_ref().map_or(0, |r| r.len()) + 4 * t.float_data.len();
        match DType(t.data_type.unwrap_or(0)) {
            DType::F16 => f16 += n,
            DType::F32 => f32 += n,
            _ => {}
        }
    }
    eprintln!("initializer bytes: fp16 {f16}, fp32 {f32}");
    assert!(f16 > 20 * f32, "fp16 {f16} vs fp32 {f32}");
    assert!(m
        .metadata_props
        .iter()
        .any(|e| e.key.as_deref() == Some(to_fp16::PRECISION_KEY)));

    // Every graph output is produced by a Cast to fp32 or by a kept fp32 op.
    let dt = float_types(&g);
    for o in &g.outputs {
        assert_eq!(dt[&o.src], DType::F32, "{}", o.name);
    }
}

/// Ops of a kind, and the element types of their first inputs.
fn input_types(g: &Graph, op: &str) -> Vec<DType> {
    let dt = float_types(g);
    g.topo_ops()
        .into_iter()
        .filter(|&n| g.node(n).is(op))
        .map(|n| dt[&g.input(n, 0).unwrap()])
        .collect()
}

#[test]
fn fragile_ops_stay_fp32() {
    let (g, _) = convert_with("detr_tiny_op17_b1.onnx", &ToFp16::default());
    for op in ["LayerNormalization", "Softmax", "CumSum", "Sigmoid"] {
        let t = input_types(&g, op);
        assert!(!t.is_empty(), "{op}");
        assert!(t.iter().all(|&d| d == DType::F32), "{op}: {t:?}");
    }
    for op in ["MatMul", "Conv", "Gemm"] {
        let t = input_types(&g, op);
        assert!(t.iter().all(|&d| d == DType::F16), "{op}: {t:?}");
    }
    // opset 12 spells layer norm out: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div.
    let (g, _) = convert_with("detr_tiny_op12_b1.onnx", &ToFp16::default());
    for op in ["Pow", "Sqrt", "ReduceMean"] {
        let t = input_types(&g, op);
        assert!(!t.is_empty(), "{op}");
        assert!(t.iter().all(|&d| d == DType::F32), "{op}: {t:?}");
    }
}

#[test]
fn keep_list_is_configurable() {
    let mut pass = ToFp16::default();
    pass.keep.push("MatMul".into());
    let (g, _) = convert_with("detr_tiny_op17_b1.onnx", &pass);
    let t = input_types(&g, "MatMul");
    assert!(t.iter().all(|&d| d == DType::F32), "{t:?}");
    // and with an empty list, layer norm goes fp16 too
    let pass = ToFp16 {
        keep: vec![],
        keep_layernorm_pattern: false,
        keep_output_sigmoid: false,
        keep_index_math: false,
    };
    let (g, _) = convert_with("detr_tiny_op17_b1.onnx", &pass);
    let t = input_types(&g, "LayerNormalization");
    assert!(t.iter().all(|&d| d == DType::F16), "{t:?}");
}

#[test]
fn second_run_changes_nothing() {
    let mut g = load("detr_tiny_op17_b1.onnx");
    let p = ToFp16::default();
    let cx = Context::default();
    assert!(matches!(p.run(&mut g, &cx), Ok(Outcome::Changed(_))));
    let before = g.dump();
    assert_eq!(p.run(&mut g, &cx), Ok(Outcome::Unchanged));
    assert_eq!(g.dump(), before);
}

#[test]
fn shape_arithmetic_is_untouched() {
    let g0 = load("detr_tiny_op17_b1.onnx");
    let (g, _) = convert_with("detr_tiny_op17_b1.onnx", &ToFp16::default());
    let count = |g: &Graph, d: DType| float_types(g).values().filter(|t| **t == d).count();
    // integer and boolean tensors: as many before as after
    assert_eq!(count(&g0, DType::I64), count(&g, DType::I64));
    assert_eq!(count(&g0, DType::BOOL), count(&g, DType::BOOL));
}

#[test]
fn compile_cli_runs_to_fp16_when_named() {
    let exe = env!("CARGO_BIN_EXE_detrc");
    let out = Command::new(exe).arg("passes").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("to-fp16") && l.contains("[opt-in]")),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("m16.onnx");
    let st = Command::new(exe)
        .args(["compile", "-q", "--passes", "to-fp16", "-o"])
        .arg(&dst)
        .arg(fixture("cnn_tiny_op17_b1.onnx"))
        .status()
        .unwrap();
    assert!(st.success());
    let m = detrc::load::load_proto(&dst).unwrap();
    let keys: Vec<_> = m
        .metadata_props
        .iter()
        .filter_map(|e| e.key.clone())
        .collect();
    assert!(
        keys.contains(&to_fp16::PRECISION_KEY.to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&detrc::driver::COMPILED_KEY.to_string()),
        "{keys:?}"
    );
    // the default pipeline leaves precision alone
    let dst32 = dir.path().join("m32.onnx");
    let st = Command::new(exe)
        .args(["compile", "-q", "-o"])
        .arg(&dst32)
        .arg(fixture("cnn_tiny_op17_b1.onnx"))
        .status()
        .unwrap();
    assert!(st.success());
    let m = detrc::load::load_proto(&dst32).unwrap();
    assert!(!m
        .metadata_props
        .iter()
        .any(|e| e.key.as_deref() == Some(to_fp16::PRECISION_KEY)));
}

/// The dynamo exporter annotates every weight with a `value_info` entry. A converted weight's
/// entry must follow it to fp16: strict shape inference (`onnx.checker` with `full_check`, and
/// TensorRT's parser after it) rejects a model whose declared and actual types differ.
#[test]
fn weight_annotations_follow_the_converted_weights() {
    for name in [
        "family/rtdetr_op18_dynamo_b1.onnx",
        "family/deformable_detr_op18_dynamo_b1.onnx",
    ] {
        let (_, bytes) = convert_with(name, &ToFp16::default());
        let m = detrc::load::decode(Path::new("<fp16>"), bytes::Bytes::from(bytes)).unwrap();
        let gp = m.graph.as_ref().unwrap();
        let weights: HashMap<&str, i32> = gp
            .initializer
            .iter()
            .map(|t| (t.name.as_deref().unwrap(), t.data_type.unwrap()))
            .collect();
        let (mut annotated, mut fp16) = (0, 0);
        for vi in &gp.value_info {
            let Some(&dt) = weights.get(vi.name.as_deref().unwrap_or("")) else {
                continue;
            };
            let ty = detrc::ir::TensorType::from_proto(vi.r#type.as_ref().unwrap()).unwrap();
            assert_eq!(ty.dtype, DType(dt), "{name}: {:?}", vi.name);
            annotated += 1;
            fp16 += (DType(dt) == DType::F16) as usize;
        }
        assert!(
            annotated > 50 && fp16 > 50,
            "{name}: {annotated} annotated weights, {fp16} fp16"
        );
    }
}
