//! `detrc compile --precision`: the strongly typed model for TensorRT 10/11 (fp16 checked under
//! emulated fp16 storage and guarded against overflow, int8 as `detrc quantize` makes it), on
//! real family fixtures, among them fixtures/fp16/ whose decoder FFNs overflow fp16 as trained
//! models' do (scripts/make_fp16_fixtures.py).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::run::{detrc, stderr};
use common::{root, tmpdir, M};
use detrc::ir::DType;
use detrc::passes::precision::fp16_storage;
use detrc::reference::{Model, Purpose, Reference, Runtime};
use ndarray::ArrayD;

fn compile(model: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["compile", model, "-o", out.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    detrc(&args)
}

fn report(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("--json prints JSON")
}

/// Runtimes to check the emulation with: tract always, onnxruntime where it is installed
/// (required under the test command).
fn runtimes() -> Vec<Runtime> {
    let mut v = vec![Runtime::Tract];
    v.extend(common::ort_runtime());
    v
}

fn run(bytes: &[u8], rt: &Runtime, inputs: &[ArrayD<f32>]) -> Vec<(String, ArrayD<f32>)> {
    Reference::load(Model::Bytes(bytes), rt, Purpose::Verify, None)
        .unwrap()
        .run(inputs)
        .unwrap()
}

/// The measured fact the check rests on: an fp16 graph computing `x * 1000 * 1000 * 1e-4` is
/// 100 where a runtime keeps the chain in fp32, and inf in real fp16 (the product 1e6 does
/// not fit). The emulation gives inf, under tract and onnxruntime alike, and its probe sees
/// the overflowing tensor.
#[test]
fn emulated_fp16_storage_overflows_where_fp16_does() {
    let h = |v: f32| half::f16::from_f32(v).to_bits() as i32;
    let mut m = M::new(17)
        .input("x", &[1])
        .output("y")
        .node("Cast", &["x"], &["xh"], vec![common::int_attr("to", 10)])
        .node("Mul", &["xh", "k"], &["a"], vec![])
        .node("Mul", &["a", "k"], &["b"], vec![])
        .node("Mul", &["b", "s"], &["c"], vec![])
        .node("Cast", &["c"], &["y"], vec![common::int_attr("to", 1)])
        .model();
    let gp = m.graph.as_mut().unwrap();
    for (name, v) in [("k", 1000.0f32), ("s", 1e-4)] {
        gp.initializer.push(detrc::load::proto::TensorProto {
            name: Some(name.into()),
            data_type: Some(DType::F16.0),
            dims: vec![1],
            int32_data: vec![h(v)],
            ..Default::default()
        });
    }
    let g = detrc::ir::from_onnx::import(m).unwrap();
    let e = fp16_storage::emulate(&g).unwrap();
    let bytes = common::encode(&e.graph.export());
    let x = ArrayD::from_elem(ndarray::IxDyn(&[1]), 1.0f32);
    for rt in runtimes() {
        let out = run(&bytes, &rt, std::slice::from_ref(&x));
        let y = out.iter().find(|(n, _)| n == "y").unwrap().1[[0]];
        assert!(y.is_infinite(), "{}: y = {y}", rt.describe());
        let b = e.probes.iter().find(|p| p.tensor == "b").unwrap();
        let peak = out.iter().find(|(n, _)| *n == b.output).unwrap().1[[]];
        assert_eq!(
            peak,
            1e6,
            "{}: the probe reads b before rounding",
            rt.describe()
        );
        assert!(b.fp16 && b.inputs == ["a"], "{b:?}");
    }
    // Within range, the emulation rounds like fp16: 1/3 stored in half.
    let third = ArrayD::from_elem(ndarray::IxDyn(&[1]), 1.0f32 / 3.0);
    let out = run(&bytes, &Runtime::Tract, &[third]);
    let y = out.iter().find(|(n, _)| n == "y").unwrap().1[[0]];
    let want = half::f16::from_f32(
        half::f16::from_f32(
            half::f16::from_f32(half::f16::from_f32(1.0 / 3.0).to_f32() * 1000.0).to_f32() * 1000.0,
        )
        .to_f32()
            * half::f16::from_f32(1e-4).to_f32(),
    )
    .to_f32();
    assert_eq!(y, want);
}

fn planted() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/fp16"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "{v:?}");
    v
}

/// The written fp16 model, emulated independently of the compile's own check, against the
/// original fp32 export on a seed the compile did not use: finite, and its sorted scores
/// (sigmoid of the logits) within 30 dB.
fn check_written(original: &Path, written: &Path) -> f64 {
    let rt = common::ort_runtime().unwrap_or(Runtime::Tract);
    let (g, _) = detrc::driver::load_graph(written).unwrap();
    assert!(detrc::passes::to_fp16::is_fp16(&g));
    let e = fp16_storage::emulate(&g).unwrap();
    let emulated = common::encode(&e.graph.export());
    let orig_bytes = std::fs::read(original).unwrap();
    let model = detrc::load::decode(original, bytes::Bytes::from(orig_bytes.clone())).unwrap();
    let shapes = detrc::reference::batch_one_shapes(&model).unwrap();
    let specs = || {
        Some((
            detrc::reference::input_specs_with(&model, &shapes).unwrap(),
            detrc::reference::output_names(&model),
        ))
    };
    // Deformable DETR's float64 sampling grids run in tract only.
    let a = Reference::load(Model::Bytes(&orig_bytes), &rt, Purpose::Verify, specs())
        .or_else(|_| {
            Reference::load(
                Model::Bytes(&orig_bytes),
                &Runtime::Tract,
                Purpose::Verify,
                specs(),
            )
        })
        .unwrap();
    let mut s = specs().unwrap();
    s.1 = detrc::reference::output_names(&e.graph.export());
    let b = Reference::load(Model::Bytes(&emulated), &rt, Purpose::Verify, Some(s)).unwrap();
    let x = a.random_inputs(7);
    let (fa, fb) = (a.run(&x).unwrap(), b.run(&x).unwrap());
    let logits = |o: &[(String, ArrayD<f32>)]| -> Vec<f32> {
        let mut v: Vec<f32> = o
            .iter()
            .find(|(n, _)| n == "logits")
            .unwrap()
            .1
            .iter()
            .map(|&x| 1.0 / (1.0 + (-x).exp()))
            .collect();
        v.sort_by(|x, y| y.total_cmp(x));
        v
    };
    let (la, lb) = (logits(&fa), logits(&fb));
    assert!(lb.iter().all(|v| v.is_finite()), "{}", written.display());
    let sig: f64 = la.iter().map(|&v| (v as f64).powi(2)).sum();
    let noise: f64 = la
        .iter()
        .zip(&lb)
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum();
    10.0 * (sig / noise.max(1e-30)).log10()
}

/// The planted fixtures overflow under plain `to-fp16`: the check finds it, names the FFN's
/// first layer, exits 3 and writes nothing. Guarded, the same compile keeps the FFNs' layers in
/// fp32, writes a model whose fp16 storage gives finite outputs within 30 dB of the fp32
/// scores, and reports what it kept and why.
#[test]
fn planted_overflows_are_found_and_guarded() {
    let d = tmpdir();
    for f in planted() {
        let name = f.file_stem().unwrap().to_str().unwrap().to_string();
        let model = f.to_str().unwrap();
        let plain = d.path().join(format!("{name}.plain.onnx"));
        let o = compile(model, &plain, &["--precision", "fp16", "--no-fp16-guard"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{name}: {err}");
        assert!(
            err.contains("inf/NaN") && err.contains("first overflow"),
            "{err}"
        );
        assert!(
            err.contains("/mlp/fc1/MatMul") || err.contains("/mlp/layers.0/MatMul"),
            "{name}: the first overflow is the FFN's first layer: {err}"
        );
        assert!(!plain.exists() && !err.contains("panicked"));

        let out = d.path().join(format!("{name}.fp16.onnx"));
        let r = report(&compile(model, &out, &["--precision", "fp16"]));
        let p = &r["precision"];
        let f16 = &p["fp16"];
        assert_eq!(f16["passed"], true, "{name}: {f16}");
        let kept = f16["kept"].as_array().unwrap();
        assert!(kept.len() >= 3, "{name}: {kept:?}");
        assert!(
            kept.iter().all(
                |k| k["op_type"] == "MatMul" && k["reason"].as_str().unwrap().contains("65504")
            ),
            "{name}: {kept:?}"
        );
        assert_eq!(f16["first_overflows"].as_array().unwrap().len(), 1);
        assert!(f16["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["non_finite"] == 0));
        let det = &f16["detections"];
        assert!(
            det["sorted_scores_sqnr_db"].as_f64().unwrap() > 30.0,
            "{det}"
        );
        assert!(p["trtexec"].as_str().unwrap().contains("--stronglyTyped"));
        let db = check_written(&f, &out);
        assert!(db > 30.0, "{name}: {db:.1} dB");
        eprintln!("{name}: {} kept, {db:.1} dB", kept.len());
    }
}

/// Family fixtures without planted activations: nothing to keep, the scores within 30 dB, fp32
/// inputs and outputs, fp16 weights; the written model passes onnx's strict checker (the
/// dynamo exports annotate every weight); a dynamic batch gets a trtexec profile.
#[test]
fn family_models_convert_clean() {
    let d = tmpdir();
    let py = common::python_or_skip();
    for name in [
        "family/rtdetr_op18_dynamo_b1",
        "family/deformable_detr_op17_b1",
        "family/dfine_op17_dyn",
        "family/detr_op16_b1",
        "family/rtdetrv2_official",
    ] {
        let model = root().join(format!("fixtures/{name}.onnx"));
        let out = d.path().join(format!("{}.onnx", name.replace('/', "_")));
        let r = report(&compile(
            model.to_str().unwrap(),
            &out,
            &["--precision", "fp16"],
        ));
        let f16 = &r["precision"]["fp16"];
        assert_eq!(f16["kept"].as_array().unwrap().len(), 0, "{name}: {f16}");
        assert_eq!(f16["rounds"], 1);
        let det = &f16["detections"];
        assert!(
            det["sorted_scores_sqnr_db"].as_f64().unwrap() > 40.0,
            "{name}: {det}"
        );
        let trtexec = r["precision"]["trtexec"].as_str().unwrap();
        let dynamic = name.ends_with("_dyn") || name.ends_with("official");
        assert_eq!(trtexec.contains("--minShapes="), dynamic, "{trtexec}");
        if name.ends_with("_dyn") {
            assert!(
                trtexec.contains("--maxShapes=pixel_values:8x3x160x192"),
                "{trtexec}"
            );
        }
        let (g, _) = detrc::driver::load_graph(&out).unwrap();
        for n in g.graph_inputs() {
            assert_ne!(g.node(n).outputs[0].ty.as_ref().unwrap().dtype, DType::F16);
        }
        assert!(g
            .outputs
            .iter()
            .all(|o| g.ty(o.src).is_none_or(|t| t.dtype != DType::F16)));
        if let Some(py) = &py {
            let o = std::process::Command::new(py)
                .args([
                    "-c",
                    "import onnx,sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)",
                ])
                .arg(&out)
                .output()
                .unwrap();
            assert!(o.status.success(), "{name}: {}", stderr(&o));
        }
    }
}

/// `--precision int8 --calibration DIR` writes the same model, byte for byte, as `detrc
/// quantize` with the same images; without images it is a usage error that writes nothing.
#[test]
fn int8_is_what_quantize_makes() {
    let d = tmpdir();
    let images = root().join("examples/images");
    let model = root().join("fixtures/detr_tiny_op17_b1.onnx");
    let (a, b) = (d.path().join("q.onnx"), d.path().join("c.onnx"));
    let o = detrc(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        a.to_str().unwrap(),
        "--calibration",
        images.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report(&compile(
        model.to_str().unwrap(),
        &b,
        &[
            "--precision",
            "int8",
            "--calibration",
            images.to_str().unwrap(),
        ],
    ));
    assert_eq!(r["precision"]["precision"], "int8");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // `detrc build` reads the precision from the graph: int8.
    assert_eq!(
        detrc::build::model_precision(&b).unwrap(),
        Some(detrc::build::Precision::Int8)
    );

    let c = d.path().join("none.onnx");
    let o = compile(model.to_str().unwrap(), &c, &["--precision", "int8"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--calibration"), "{}", stderr(&o));
    assert!(!c.exists());
}

/// A model that computes in fp16 already: asked for int8, a usage error; asked for fp16, kept
/// as it is; `detrc build` reads it as fp16.
#[test]
fn an_fp16_model_stays_fp16() {
    let d = tmpdir();
    let model = root().join("fixtures/detr_tiny_op17_b1.onnx");
    let fp16 = d.path().join("h.onnx");
    report(&compile(
        model.to_str().unwrap(),
        &fp16,
        &["--precision", "fp16"],
    ));
    assert_eq!(
        detrc::build::model_precision(&fp16).unwrap(),
        Some(detrc::build::Precision::Fp16)
    );
    let images = root().join("examples/images");
    let q = d.path().join("q.onnx");
    let o = compile(
        fp16.to_str().unwrap(),
        &q,
        &[
            "--precision",
            "int8",
            "--calibration",
            images.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("fp16 already"), "{}", stderr(&o));
    assert!(!q.exists());
    let again = d.path().join("again.onnx");
    let r = report(&compile(
        fp16.to_str().unwrap(),
        &again,
        &["--precision", "fp16"],
    ));
    assert!(
        r["precision"]["steps"][0]
            .as_str()
            .unwrap()
            .contains("fp16 already"),
        "{r}"
    );
}

/// Without `--precision` nothing changes: the same bytes as before the option existed (no
/// precision key, no casts).
#[test]
fn no_precision_no_change() {
    let d = tmpdir();
    let model = root().join("fixtures/family/rtdetr_op17_b1.onnx");
    let (a, b) = (d.path().join("a.onnx"), d.path().join("b.onnx"));
    report(&compile(model.to_str().unwrap(), &a, &[]));
    let r = report(&compile(
        model.to_str().unwrap(),
        &b,
        &["--precision", "fp32"],
    ));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(r["precision"]["trtexec"]
        .as_str()
        .unwrap()
        .starts_with("trtexec --onnx="));
}

/// `detrc build --precision fp16` converts with the same check and guard: the planted RT-DETR
/// builds an sm86 engine with its FFN layers kept in fp32 (the sidecar lists them); the model
/// `compile --precision fp16` wrote builds without `--precision`, as fp16.
#[test]
fn guarded_fp16_engines_build_for_sm86() {
    let Some(trt) = detrc::tensorrt_lib::test_libraries() else {
        eprintln!("SKIP: no TensorRT-RTX libraries");
        return;
    };
    let trt = trt.to_str().unwrap();
    let d = tmpdir();
    let model = root().join("fixtures/fp16/rtdetr_planted_op17_b1.onnx");
    let engine = d.path().join("a.engine");
    let o = detrc(&[
        "build",
        model.to_str().unwrap(),
        "-o",
        engine.to_str().unwrap(),
        "--target",
        "sm86",
        "--precision",
        "fp16",
        "--tensorrt-dir",
        trt,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sc = detrc::build::Sidecar::from_json(&String::from_utf8_lossy(&o.stdout)).unwrap();
    let kept = sc
        .steps
        .iter()
        .filter(|s| s.contains("fp16 guard kept"))
        .count();
    assert!(kept >= 3, "{:?}", sc.steps);

    let fp16 = d.path().join("h.onnx");
    report(&compile(
        model.to_str().unwrap(),
        &fp16,
        &["--precision", "fp16"],
    ));
    let engine = d.path().join("b.engine");
    let o = detrc(&[
        "build",
        fp16.to_str().unwrap(),
        "-o",
        engine.to_str().unwrap(),
        "--target",
        "sm86",
        "--tensorrt-dir",
        trt,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sc = detrc::build::Sidecar::from_json(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert_eq!(sc.precision, "fp16");
}

/// Nothing overflows, yet fp16 ruins the result: `(MatMul(x) + 4000) - 4000` stores the sum
/// where fp16's spacing is 2. Plain `to-fp16` fails the check on the output's SQNR (exit 3);
/// the guard finds by measurement an operator of that sum whose fp32 keeps the output within
/// 30 dB, and says so.
#[test]
fn rounding_costs_are_measured_and_kept() {
    let d = tmpdir();
    let m = M::new(17)
        .input("x", &[4, 32])
        .output("y")
        .rand("w1", &[32, 32], 1)
        .rand("w2", &[32, 16], 2)
        .f32("c", &[1], &[4000.0])
        .node("MatMul", &["x", "w1"], &["h"], vec![])
        .node("Relu", &["h"], &["r"], vec![])
        .node("MatMul", &["r", "w2"], &["m"], vec![])
        .node("Add", &["m", "c"], &["a"], vec![])
        .node("Sub", &["a", "c"], &["y"], vec![]);
    let model = d.path().join("cancel.onnx");
    std::fs::write(&model, common::encode(&m.model())).unwrap();
    let model = model.to_str().unwrap();

    let plain = d.path().join("plain.onnx");
    let o = compile(model, &plain, &["--precision", "fp16", "--no-fp16-guard"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("dB from fp32"), "{}", stderr(&o));
    assert!(!plain.exists());

    let out = d.path().join("guarded.onnx");
    let r = report(&compile(model, &out, &["--precision", "fp16"]));
    let f16 = &r["precision"]["fp16"];
    assert_eq!(f16["passed"], true, "{f16}");
    let kept = f16["kept"].as_array().unwrap();
    assert!(
        !kept.is_empty()
            && kept.iter().all(|k| k["reason"]
                .as_str()
                .unwrap()
                .contains("rounding costs the most")),
        "{kept:?}"
    );
    assert!(f16["first_overflows"].as_array().unwrap().is_empty());
    let y = &f16["outputs"][0];
    assert!(y["sqnr_db"].as_f64().unwrap() > 30.0, "{y}");
}

/// `--gridsample gather` with Q/DQ: the rewritten deformable attention is calibrated and
/// quantized like the rest, no GridSample is left, and the int8 engine builds for sm86 from
/// the precision the graph states.
#[test]
fn gridsample_gather_with_int8_builds() {
    let Some(trt) = detrc::tensorrt_lib::test_libraries() else {
        eprintln!("SKIP: no TensorRT-RTX libraries");
        return;
    };
    let d = tmpdir();
    let model = root().join("fixtures/family/rtdetr_op17_b1.onnx");
    let images = root().join("examples/images");
    let out = d.path().join("q.onnx");
    let r = report(&compile(
        model.to_str().unwrap(),
        &out,
        &[
            "--gridsample",
            "gather",
            "--precision",
            "int8",
            "--calibration",
            images.to_str().unwrap(),
        ],
    ));
    let ops = &r["ops_after"];
    assert!(ops.get("GridSample").is_none(), "{ops}");
    assert!(ops["QuantizeLinear"].as_u64().unwrap() > 20, "{ops}");
    let engine = d.path().join("q.engine");
    let o = detrc(&[
        "build",
        out.to_str().unwrap(),
        "-o",
        engine.to_str().unwrap(),
        "--target",
        "sm86",
        "--tensorrt-dir",
        trt.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sc = detrc::build::Sidecar::from_json(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert_eq!(sc.precision, "int8");
}
