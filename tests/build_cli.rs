//! `detrc build` and `detrc inspect` on engines, end to end, with the real TensorRT-RTX
//! libraries (CPU only). Tests that need the libraries print SKIP and pass when they are not
//! installed, unless DETRC_REQUIRE_TENSORRT is set.
//!
//! Not built with the `enterprise` feature: datacenter TensorRT builds only for the GPU it
//! runs on, and this machine has none.
#![cfg(not(feature = "enterprise"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use detrc::build::Sidecar;
use detrc::load::proto::{NodeProto, StringStringEntryProto};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn fixture(name: &str) -> PathBuf {
    repo("fixtures").join(name)
}

fn trt_dir() -> Option<PathBuf> {
    detrc::build::engine::test_libraries()
}

fn detrc(trt: Option<&Path>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_detrc"));
    c.env_remove("DETRC_TENSORRT_DIR");
    if let Some(d) = trt {
        c.env("DETRC_TENSORRT_DIR", d);
    }
    c
}

fn run(c: &mut Command) -> Output {
    let o = c.output().unwrap();
    eprintln!(
        "$ {:?}\n{}{}",
        c,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn build(trt: &Path, model: &Path, out: &Path, extra: &[&str]) -> Sidecar {
    let o = run(detrc(Some(trt))
        .arg("build")
        .arg(model)
        .arg("-o")
        .arg(out)
        .arg("--json")
        .args(extra));
    assert!(o.status.success(), "build failed");
    let printed = Sidecar::from_json(&String::from_utf8_lossy(&o.stdout)).unwrap();
    let on_disk = sidecar_of(out);
    assert_eq!(printed, on_disk);
    on_disk
}

fn sidecar_of(engine: &Path) -> Sidecar {
    let text = std::fs::read_to_string(detrc::build::sidecar_path(engine)).unwrap();
    Sidecar::from_json(&text).unwrap()
}

fn sha(path: &Path) -> String {
    detrc::build::sha256_hex(&std::fs::read(path).unwrap())
}

/// Everything a rebuild must reproduce: the sidecar without its timing.
fn stable(sc: &Sidecar) -> Sidecar {
    let mut s = sc.clone();
    s.timing.prepare_seconds = 0.0;
    s.timing.engine_seconds = 0.0;
    s
}

#[test]
fn fixtures_build_in_fp32_and_fp16_single_and_multi_target() {
    let Some(trt) = trt_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let four = "sm80,sm86,sm89,sm120";
    for name in ["detr_tiny_op17_b1.onnx", "cnn_tiny_op17_b1.onnx"] {
        let mut sizes = Vec::new();
        for (prec, targets) in [
            ("fp32", "sm86"),
            ("fp16", "sm86"),
            ("fp32", four),
            ("fp16", four),
        ] {
            let out = dir
                .path()
                .join(format!("{name}.{prec}.{}.engine", targets.len()));
            let sc = build(
                &trt,
                &fixture(name),
                &out,
                &["--precision", prec, "--target", targets],
            );
            let bytes = std::fs::metadata(&out).unwrap().len();
            eprintln!(
                "ENGINE {name} {prec} {targets}: {bytes} bytes, prepare {:.2}s, TensorRT {:.2}s",
                sc.timing.prepare_seconds, sc.timing.engine_seconds
            );
            assert_eq!(sc.precision, prec);
            assert_eq!(sc.targets.join(","), targets);
            assert_eq!(sc.engine.bytes, bytes);
            sizes.push(bytes);
        }
        assert!(
            sizes[2] > sizes[0] && sizes[3] > sizes[1],
            "{name}: {sizes:?}"
        );
        // Not asserted: fp16 < fp32. With ~1 MB of weights these engines are mostly kernel
        // code, and fp16 kernels are not smaller (measured: detr_tiny fp16 ~1% larger).
    }
}

/// A model whose engine is mostly weights: two 512x512 projections (2 MiB in fp32) with a
/// layer norm and a softmax, the shape of a transformer block.
fn weight_heavy_model(path: &Path) {
    use detrc::ir::{DType, TensorType};
    use detrc::load::proto::{GraphProto, ModelProto, OperatorSetIdProto, ValueInfoProto};
    use detrc::tensor::Tensor;
    use ndarray::{ArrayD, IxDyn};

    const D: usize = 512;
    let mut rng = detrc::reference::random::Rng::new(7);
    let mut init = |name: &str, shape: &[usize], scale: f64| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()).to_proto(name)
    };
    let initializer = vec![
        init("w1", &[D, D], 0.05),
        init("b1", &[D], 0.1),
        init("w2", &[D, D], 0.05),
        init("b2", &[D], 0.1),
        init("gamma", &[D], 1.0),
        init("beta", &[D], 0.1),
    ];
    let node = |op: &str, ins: &[&str], out: &str| NodeProto {
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.to_string()],
        op_type: Some(op.to_string()),
        name: Some(out.to_string()),
        ..Default::default()
    };
    let mut softmax = node("Softmax", &["n"], "y");
    softmax
        .attribute
        .push(detrc::tensor::attrs::make_int("axis", -1));
    let vi = |name: &str| ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TensorType::new(DType::F32, &[1, 64, D as i64]).to_proto()),
        ..Default::default()
    };
    let m = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("weight_heavy".into()),
            node: vec![
                node("MatMul", &["x", "w1"], "h1"),
                node("Add", &["h1", "b1"], "h1b"),
                node("Relu", &["h1b"], "r"),
                node("MatMul", &["r", "w2"], "h2"),
                node("Add", &["h2", "b2"], "h2b"),
                node("LayerNormalization", &["h2b", "gamma", "beta"], "n"),
                softmax,
            ],
            initializer,
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut bytes = Vec::new();
    detrc::emit::write_model(&m, &mut bytes).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn fp16_engine_is_smaller_when_weights_dominate() {
    let Some(trt) = trt_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("heavy.onnx");
    weight_heavy_model(&model);
    for targets in ["sm86", "sm80,sm86,sm89,sm120"] {
        let size = |prec: &str| {
            let out = dir.path().join(format!("heavy.{prec}.engine"));
            build(
                &trt,
                &model,
                &out,
                &["--precision", prec, "--target", targets],
            );
            std::fs::metadata(&out).unwrap().len()
        };
        let (s32, s16) = (size("fp32"), size("fp16"));
        eprintln!("ENGINE weight-heavy {targets}: fp32 {s32} bytes, fp16 {s16} bytes");
        assert!(s16 < s32, "{targets}: fp16 {s16} >= fp32 {s32}");
    }
}

#[test]
fn sidecar_describes_the_engine() {
    let Some(trt) = trt_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("detr_tiny_op17_b1.onnx");
    let out = dir.path().join("detr.engine");
    let dep = dir.path().join("detr.d");
    let sc = build(
        &trt,
        &model,
        &out,
        &[
            "--precision",
            "fp16",
            "--target",
            "sm86",
            "--workspace",
            "512",
            "--opt-level",
            "3",
            "--depfile",
            dep.to_str().unwrap(),
        ],
    );
    assert_eq!(sc.format, detrc::build::sidecar::FORMAT);
    assert_eq!(sc.detrc_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(sc.tensorrt.flavor, "TensorRT-RTX");
    assert!(
        sc.tensorrt.version.starts_with("1.7.1"),
        "{}",
        sc.tensorrt.version
    );
    assert_eq!(sc.targets, vec!["sm86"]);
    assert_eq!(sc.precision, "fp16");
    assert_eq!(sc.inputs.len(), 1);
    assert_eq!(sc.inputs[0].name, "images");
    assert_eq!(sc.inputs[0].dtype, "float32");
    assert_eq!(sc.inputs[0].shape, vec![1, 3, 64, 96]);
    let mut outs: Vec<_> = sc
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.dtype.as_str(), o.shape.clone()))
        .collect();
    outs.sort();
    assert_eq!(
        outs,
        vec![
            ("pred_boxes", "float32", vec![1, 10, 4]),
            ("pred_logits", "float32", vec![1, 10, 92])
        ]
    );
    assert_eq!(sc.source.sha256, sha(&model));
    assert!(!sc.source.compiled_before);
    assert_eq!(sc.engine.file, "detr.engine");
    assert_eq!(sc.engine.sha256, sha(&out));
    assert_eq!(sc.options.workspace_mb, Some(512));
    assert_eq!(sc.options.opt_level, Some(3));
    assert_eq!(sc.content_key, sc.compute_content_key());
    assert!(
        sc.steps.iter().any(|s| s.starts_with("to-fp16")),
        "{:?}",
        sc.steps
    );
    let d = std::fs::read_to_string(&dep).unwrap();
    assert!(d.starts_with(&format!("{}:", out.display())), "{d}");

    // inspect reads the sidecar, by extension and under another name
    let o = run(detrc(None).arg("inspect").arg(&out));
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "sm86",
        "fp16",
        "pred_boxes",
        "matches sidecar",
        &sc.engine.sha256,
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let other = dir.path().join("detr.bin");
    std::fs::copy(&out, &other).unwrap();
    std::fs::copy(
        detrc::build::sidecar_path(&out),
        detrc::build::sidecar_path(&other),
    )
    .unwrap();
    let o = run(detrc(None).args(["inspect", "--json"]).arg(&other));
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["engine_check"], "matches sidecar");
    assert_eq!(j["precision"], "fp16");

    // without its sidecar an engine cannot be described
    std::fs::remove_file(detrc::build::sidecar_path(&out)).unwrap();
    let o = run(detrc(None).arg("inspect").arg(&out));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sidecar"));
}

#[test]
fn rebuild_gives_the_same_sidecar() {
    let Some(trt) = trt_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (name, single_output) in [
        ("cnn_tiny_op17_b1.onnx", true),
        ("detr_tiny_op17_b1.onnx", false),
    ] {
        let out = dir.path().join("m.engine");
        let args = ["--precision", "fp16", "--target", "sm80,sm86"];
        let a = build(&trt, &fixture(name), &out, &args);
        let bytes_a = std::fs::read(&out).unwrap();
        let b = build(&trt, &fixture(name), &out, &args);
        let bytes_b = std::fs::read(&out).unwrap();
        let identical = bytes_a == bytes_b;
        eprintln!("{name}: engine bytes identical on rebuild: {identical}");
        if single_output {
            assert!(identical, "{name}: single-output engine differs on rebuild");
            assert_eq!(stable(&a), stable(&b));
        } else {
            // Multi-output plans may order their I/O table differently: same size, same
            // description, possibly other bytes.
            assert_eq!(bytes_a.len(), bytes_b.len());
            let (mut a, mut b) = (stable(&a), stable(&b));
            a.engine.sha256.clear();
            b.engine.sha256.clear();
            assert_eq!(a, b);
        }
    }
}

#[test]
fn a_compiled_model_is_built_as_it_is() {
    let Some(trt) = trt_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let compiled = dir.path().join("c.onnx");
    let o = run(detrc(None)
        .args(["compile", "-q", "-o"])
        .arg(&compiled)
        .arg(fixture("cnn_tiny_op17_b1.onnx")));
    assert!(o.status.success());
    let sc = build(
        &trt,
        &compiled,
        &dir.path().join("c.engine"),
        &["--target", "sm86"],
    );
    assert!(sc.source.compiled_before);
    assert!(sc.steps.is_empty(), "{:?}", sc.steps);

    // an fp16 model cannot become an fp32 engine (without --precision it builds as fp16,
    // what the model states: issue 23)
    let c16 = dir.path().join("c16.onnx");
    let o = run(detrc(None)
        .args(["compile", "-q", "--passes", "to-fp16", "-o"])
        .arg(&c16)
        .arg(fixture("cnn_tiny_op17_b1.onnx")));
    assert!(o.status.success());
    let out = dir.path().join("c16.engine");
    let o = run(detrc(Some(&trt))
        .arg("build")
        .arg(&c16)
        .arg("-o")
        .arg(&out)
        .args(["--target", "sm86", "--precision", "fp32"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.exists());
    let sc = build(&trt, &c16, &out, &["--target", "sm86"]);
    assert_eq!(sc.precision, "fp16");
    let sc = build(
        &trt,
        &c16,
        &out,
        &["--target", "sm86", "--precision", "fp16"],
    );
    assert!(sc.steps.is_empty(), "already fp16: {:?}", sc.steps);
}

fn assert_nothing_written(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn missing_libraries_fail_cleanly() {
    let empty = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.engine");
    // through the environment, and through the flag
    for via_flag in [false, true] {
        let mut c = detrc(if via_flag { None } else { Some(empty.path()) });
        c.arg("build")
            .arg(fixture("cnn_tiny_op17_b1.onnx"))
            .arg("-o")
            .arg(&out)
            .arg("--depfile")
            .arg(dir.path().join("x.d"));
        if via_flag {
            c.arg("--tensorrt-dir").arg(empty.path());
        }
        let o = run(&mut c);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("scripts/install_tensorrt_rtx.sh"), "{err}");
        assert!(err.contains("DETRC_TENSORRT_DIR"), "{err}");
        assert_nothing_written(dir.path());
    }
}

#[test]
fn unknown_target_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(detrc(None)
        .arg("build")
        .arg(fixture("cnn_tiny_op17_b1.onnx"))
        .arg("-o")
        .arg(dir.path().join("x.engine"))
        .args(["--target", "sm86,sm90"]));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sm90") && err.contains("sm120"), "{err}");
    assert_nothing_written(dir.path());

    let o = run(detrc(None)
        .arg("build")
        .arg(fixture("cnn_tiny_op17_b1.onnx"))
        .arg("-o")
        .arg(dir.path().join("x.engine"))
        .args(["--shapes", "images:1x3/2x3"]));
    assert_eq!(o.status.code(), Some(2));
    assert_nothing_written(dir.path());
}

#[test]
fn a_model_the_parser_rejects_fails_cleanly() {
    let Some(trt) = trt_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The CNN with an operator no TensorRT importer knows, marked compiled so detrc hands it
    // to TensorRT as it is.
    let mut m = detrc::load::load_proto(&fixture("cnn_tiny_op17_b1.onnx")).unwrap();
    let g = m.graph.as_mut().unwrap();
    let out_name = g.output[0].name.clone().unwrap();
    for n in g.node.iter_mut() {
        for o in n.output.iter_mut() {
            if *o == out_name {
                *o = "before_custom".into();
            }
        }
    }
    g.node.push(NodeProto {
        input: vec!["before_custom".into()],
        output: vec![out_name],
        op_type: Some("NoSuchOp".into()),
        domain: Some("com.example.detrc".into()),
        name: Some("custom".into()),
        ..Default::default()
    });
    m.opset_import.push(detrc::load::proto::OperatorSetIdProto {
        domain: Some("com.example.detrc".into()),
        version: Some(1),
    });
    m.metadata_props.push(StringStringEntryProto {
        key: Some(detrc::driver::COMPILED_KEY.into()),
        value: Some("test".into()),
    });
    let model = dir.path().join("bad.onnx");
    let mut bytes = Vec::new();
    detrc::emit::write_model(&m, &mut bytes).unwrap();
    std::fs::write(&model, bytes).unwrap();
    let outdir = tempfile::tempdir().unwrap();
    let o = run(detrc(Some(&trt))
        .arg("build")
        .arg(&model)
        .arg("-o")
        .arg(outdir.path().join("bad.engine"))
        .args(["--target", "sm86"]));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("parser rejected"), "{err}");
    assert!(err.contains("NoSuchOp"), "{err}");
    assert_nothing_written(outdir.path());
}

/// facebookresearch/detr traced at batch 2 with a dynamic axis, generalised by `compile --batch dynamic`, then built in fp16 for
/// sm86 with the batch profile 1/2/4 (recorded in the sidecar); without `--shapes` the same
/// model is built for batch 1 with a warning naming the flag.
#[test]
fn batch_profile_fp16_engine_of_a_generalised_detr_builds_for_sm86() {
    let Some(trt) = trt_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dynm = dir.path().join("dyn.onnx");
    let o = run(detrc(None)
        .arg("compile")
        .arg(fixture("dynamic/detr_tiny_op17_b2_dyn.onnx"))
        .arg("-o")
        .arg(&dynm)
        .args(["--batch", "dynamic", "-q"]));
    assert!(o.status.success());
    let out = dir.path().join("b124.engine");
    let profile = "images:1x3x64x96/2x3x64x96/4x3x64x96";
    let sc = build(
        &trt,
        &dynm,
        &out,
        &[
            "--precision",
            "fp16",
            "--target",
            "sm86",
            "--shapes",
            profile,
        ],
    );
    assert_eq!(sc.options.shapes, vec![profile.to_string()]);
    assert_eq!(sc.inputs[0].shape, vec![-1, 3, 64, 96]);
    assert_eq!(sc.targets, vec!["sm86".to_string()]);
    assert_eq!(sc.precision, "fp16");

    let out1 = dir.path().join("default.engine");
    let sc = build(&trt, &dynm, &out1, &["--target", "sm86"]);
    assert_eq!(
        sc.options.shapes,
        vec!["images:1x3x64x96/1x3x64x96/1x3x64x96".to_string()]
    );
    assert!(
        sc.warnings
            .iter()
            .any(|w| w.contains("dynamic batch and no --shapes") && w.contains("--shapes images:")),
        "{:?}",
        sc.warnings
    );
}

#[test]
fn deformable_detr_builds_in_fp16_with_grid_sample_in_fp32() {
    // TensorRT rejects a GridSample whose input is half and grid float; to-fp16 keeps it fp32.
    let Some(trt) = trt_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("deformable.engine");
    let sc = build(
        &trt,
        &repo("fixtures/family/deformable_detr_op17_b1.onnx"),
        &out,
        &["--precision", "fp16", "--target", "sm86"],
    );
    assert_eq!(sc.precision, "fp16");
    assert!(
        sc.steps.iter().any(|s| s.starts_with("to-fp16:")),
        "{:?}",
        sc.steps
    );
    assert!(std::fs::metadata(&out).unwrap().len() > 10_000);
}

/// `--gridsample gather` end to end on a dynamic-batch RT-DETR export: compiled and verified
/// at batch 1 and 3 with no GridSample left, its sampling coordinates and indices kept fp32 by
/// to-fp16, and fp32 and fp16 engines with a batch profile built for sm86; `detrc build`
/// rewrites a raw export itself. A value other than keep or gather is a usage error.
#[test]
fn gridsample_gather_compiles_verifies_and_builds_fp32_and_fp16() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rtdetr.onnx");
    let o = run(detrc(None)
        .arg("compile")
        .arg(repo("fixtures/family/rtdetr_op17_dyn.onnx"))
        .arg("-o")
        .arg(&out)
        .args(["--gridsample", "gather", "--verify", "-q"]));
    assert!(o.status.success(), "compile --gridsample gather failed");
    let g = detrc::driver::load_graph(&out).unwrap().0;
    assert!(!g.op_histogram().contains_key("GridSample"));
    assert!(g.op_histogram().contains_key("GatherElements"));

    // fp16: every op of the index arithmetic (Floor, the neighbour clamps) stays fp32.
    let mut h = g.clone();
    detrc::passes::to_fp16::ToFp16::default()
        .convert(&mut h)
        .unwrap();
    let kept = detrc::passes::to_fp16::index_math(&h);
    assert!(
        kept.iter().any(|&n| h.node(n).is("Floor")),
        "Floor not kept"
    );

    let bad = run(detrc(None)
        .arg("compile")
        .arg(repo("fixtures/family/rtdetr_op17_dyn.onnx"))
        .arg("-o")
        .arg(dir.path().join("bad.onnx"))
        .args(["--gridsample", "bilinear"]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(!dir.path().join("bad.onnx").exists());

    let Some(trt) = trt_dir() else { return };
    let profile = "pixel_values:1x3x160x192/2x3x160x192/4x3x160x192";
    for precision in ["fp32", "fp16"] {
        let engine = dir.path().join(format!("{precision}.engine"));
        let sc = build(
            &trt,
            &out,
            &engine,
            &[
                "--precision",
                precision,
                "--target",
                "sm86",
                "--shapes",
                profile,
            ],
        );
        assert_eq!(sc.precision, precision);
    }
    let raw = dir.path().join("raw.engine");
    let sc = build(
        &trt,
        &repo("fixtures/family/rtdetr_op17_b1.onnx"),
        &raw,
        &["--gridsample", "gather", "--target", "sm86"],
    );
    assert!(
        sc.steps.iter().any(|s| s.starts_with("gridsample-gather:")),
        "{:?}",
        sc.steps
    );
}
