//! INT8 quantization: the `quantize` pass on hand-built graphs (where Q/DQ go, what stays
//! float, exact numerics against a hand computation, snapshots), calibration and evaluation on
//! a DETR fixture, `detrc quantize` error paths, onnxruntime on the Q/DQ model, and int8
//! engines for sm86 and sm89.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use detrc::ir::Graph;
use detrc::pass::Outcome;
use detrc::passes::infer_shapes::InferShapes;
use detrc::passes::quantize::{self, Quantize};
use detrc::quant::{Method, QuantizeOptions};
use detrc::reference::Reference;
use ndarray::{ArrayD, IxDyn};

fn snap(name: &str, text: String) {
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, text);
    });
}

fn pass(ranges: &[(&str, f32)]) -> Quantize {
    Quantize {
        ranges: ranges.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        residual: true,
        method: "max".into(),
        images: 1,
        ..Default::default()
    }
}

fn sqnr(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    let s: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum();
    let n: f64 = a
        .iter()
        .zip(b.iter())
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    detrc::quant::sqnr_db(s, n)
}

/// Outputs of the graph before and after on seeded inputs: (min SQNR over outputs).
fn min_sqnr(before: &Graph, after: &Graph) -> f64 {
    let a = Reference::from_bytes(&encode(&before.export())).unwrap();
    let b = Reference::from_bytes(&encode(&after.export())).unwrap();
    let inputs = a.random_inputs(7);
    let (oa, ob) = (a.run(&inputs).unwrap(), b.run(&inputs).unwrap());
    oa.iter()
        .zip(&ob)
        .map(|((_, x), (_, y))| sqnr(x, y))
        .fold(f64::INFINITY, f64::min)
}

fn quantized(m: &M, q: &Quantize) -> (Graph, Graph, Outcome) {
    let mut g = m.graph();
    apply(&mut g, &InferShapes);
    let before = g.clone();
    let o = apply(&mut g, q);
    (before, g, o)
}

/// The structural promises to TensorRT: zero points 0 and int8, no INT32 dequantization.
fn assert_trt_friendly(g: &Graph) {
    for n in g.g.node_indices() {
        let node = g.node(n);
        if !(node.is("QuantizeLinear") || node.is("DequantizeLinear")) {
            continue;
        }
        let ins = g.inputs(n);
        let zp = ins[2].expect("explicit zero point");
        let t = g.const_tensor(zp).expect("constant zero point");
        assert_eq!(t.data_type, Some(detrc::ir::DType::I8.0));
        assert!(t.raw_data.as_ref().unwrap().iter().all(|&b| b == 0));
        if node.is("DequantizeLinear") {
            let x = ins[0].unwrap();
            assert_ne!(
                g.ty(x).map(|t| t.dtype),
                Some(detrc::ir::DType::I32),
                "INT32 DequantizeLinear"
            );
        }
    }
    assert_eq!(op_count(g, "Where"), 0);
}

#[test]
fn gemm_matches_a_hand_computed_fake_quantization() {
    let (k, n) = (5usize, 3usize);
    let w = vals(n * k, 3);
    let b = vals(n, 4);
    let m = M::new(17)
        .input("x", &[2, k as i64])
        .output("y")
        .f32("w", &[n as i64, k as i64], &w)
        .f32("b", &[n as i64], &b)
        .node(
            "Gemm",
            &["x", "w", "b"],
            &["y"],
            vec![int_attr("transB", 1)],
        );
    let amax = 1.5f32;
    let (before, g, o) = quantized(&m, &pass(&[("x", amax)]));
    assert!(matches!(o, Outcome::Changed(_)), "{o:?}");
    assert_trt_friendly(&g);
    assert_eq!(op_count(&g, "QuantizeLinear"), 1);
    assert_eq!(op_count(&g, "DequantizeLinear"), 2);

    let x: Vec<f32> = vals(2 * k, 5).iter().map(|v| v * 2.0).collect();
    let fq = |v: f32, s: f32, lo: f32| (v / s).round_ties_even().clamp(lo, 127.0) * s;
    let sx = amax / 127.0;
    let mut want = vec![0f32; 2 * n];
    for r in 0..2 {
        for c in 0..n {
            let row = &w[c * k..][..k];
            let sw = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            let mut acc = 0f32;
            for j in 0..k {
                acc += fq(x[r * k + j], sx, -128.0) * fq(row[j], sw, -127.0);
            }
            want[r * n + c] = acc + b[c];
        }
    }
    let input = ArrayD::from_shape_vec(IxDyn(&[2, k]), x).unwrap();
    let got = Reference::from_bytes(&encode(&g.export()))
        .unwrap()
        .run(std::slice::from_ref(&input))
        .unwrap();
    for (g, w) in got[0].1.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
    // Clipping at 1.5 what reaches ±4 costs accuracy, but the result is still close.
    let float = Reference::from_bytes(&encode(&before.export()))
        .unwrap()
        .run(&[input])
        .unwrap();
    assert!(sqnr(&float[0].1, &got[0].1) > 10.0);
}

fn conv_block() -> M {
    // Conv -> Relu -> Conv, plus the Relu output as the skip input of a residual Add; a final
    // Conv whose weight is computed (not a constant) stays float.
    M::new(17)
        .input("x", &[1, 3, 8, 8])
        .output("y")
        .output("z")
        .rand("w1", &[4, 3, 3, 3], 1)
        .rand("b1", &[4], 2)
        .rand("w2", &[4, 4, 1, 1], 3)
        .rand("w3", &[4, 4, 1, 1], 4)
        .node(
            "Conv",
            &["x", "w1", "b1"],
            &["c1"],
            vec![ints_attr("pads", &[1, 1, 1, 1])],
        )
        .node("Relu", &["c1"], &["r"], vec![])
        .node("Conv", &["r", "w2"], &["c2"], vec![])
        .node("Add", &["c2", "r"], &["y"], vec![])
        .node("Abs", &["w3"], &["w3abs"], vec![])
        .node("Conv", &["y", "w3abs"], &["z"], vec![])
}

#[test]
fn conv_block_quantizes_inputs_weights_and_the_residual_skip() {
    let (before, g, o) = quantized(&conv_block(), &pass(&[("x", 4.0), ("r", 6.0)]));
    let Outcome::Changed(lines) = &o else {
        panic!("{o:?}")
    };
    assert!(
        lines[0].starts_with("2 activation tensors and 2 weights"),
        "{lines:?}"
    );
    assert!(lines[0].contains("1 residual Adds"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("weight is not a float constant")),
        "{lines:?}"
    );
    assert_trt_friendly(&g);
    // r is read by Conv 2 and by the Add through one shared pair; no bias Q/DQ.
    assert_eq!(op_count(&g, "QuantizeLinear"), 2);
    assert_eq!(op_count(&g, "DequantizeLinear"), 4);
    assert!(min_sqnr(&before, &g) > 25.0);
    snap(
        "unit__quantize_conv_block",
        format!(
            "--- before\n{}--- after ({o:?})\n{}",
            before.dump(),
            g.dump()
        ),
    );
}

#[test]
fn attention_matmuls_norms_softmax_and_box_sigmoid_stay_float() {
    let m = M::new(17)
        .input("x", &[1, 6, 8])
        .output("boxes")
        .rand("s", &[8], 1)
        .rand("bias", &[8], 2)
        .rand("wq", &[8, 8], 3)
        .rand("wk", &[8, 8], 4)
        .rand("wo", &[8, 4], 5)
        .node(
            "LayerNormalization",
            &["x", "s", "bias"],
            &["ln"],
            vec![int_attr("axis", -1)],
        )
        .node("MatMul", &["ln", "wq"], &["q"], vec![])
        .node("MatMul", &["ln", "wk"], &["k"], vec![])
        .node(
            "Transpose",
            &["k"],
            &["kt"],
            vec![ints_attr("perm", &[0, 2, 1])],
        )
        .node("MatMul", &["q", "kt"], &["scores"], vec![])
        .node("Softmax", &["scores"], &["p"], vec![int_attr("axis", -1)])
        .node("MatMul", &["p", "ln"], &["ctx"], vec![])
        .node("MatMul", &["ctx", "wo"], &["o"], vec![])
        .node("Sigmoid", &["o"], &["boxes"], vec![]);
    let (before, g, o) = quantized(&m, &pass(&[("ln", 4.0), ("ctx", 4.0)]));
    let Outcome::Changed(lines) = &o else {
        panic!("{o:?}")
    };
    let text = lines.join("\n");
    for want in [
        "MatMul×2 (attention score/value MatMul: both inputs are activations)",
        "LayerNormalization×1 (normalization statistics stay float)",
        "Softmax×1 (softmax stays float)",
        "Sigmoid×1 (box head sigmoid stays float)",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    // ln feeds two weight MatMuls (one pair) and the value MatMul (stays float).
    assert_eq!(op_count(&g, "QuantizeLinear"), 2);
    assert_trt_friendly(&g);
    assert!(min_sqnr(&before, &g) > 25.0);
    snap(
        "unit__quantize_attention",
        format!(
            "--- before\n{}--- after ({o:?})\n{}",
            before.dump(),
            g.dump()
        ),
    );
}

#[test]
fn missing_range_old_opset_and_existing_qdq_are_refused() {
    let mut g = conv_block().graph();
    apply(&mut g, &InferShapes);
    let e = pass(&[("x", 1.0)]).apply(&mut g.clone()).unwrap_err();
    assert!(e.contains("no calibrated range for tensor 'r'"), "{e}");
    let mut old = conv_block();
    old.opset = 12;
    let e = pass(&[]).apply(&mut old.graph()).unwrap_err();
    assert!(e.contains("opset 13"), "{e}");
    apply(&mut g, &pass(&[("x", 1.0), ("r", 1.0)]));
    let o = apply(&mut g, &pass(&[("x", 1.0), ("r", 1.0)]));
    assert!(matches!(o, Outcome::NotApplicable(_)), "{o:?}");
}

// ---------- images, calibration and evaluation on a DETR fixture ----------

/// Deterministic synthetic RGB images: gradients with rectangles, sizes varying by seed.
fn write_images(dir: &Path, count: usize, seed: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count as u32 {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(i * 40503) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        let (w, h) = (64 + next() % 96, 48 + next() % 96);
        let (c0, c1) = (next(), next());
        let mut img = image::RgbImage::from_fn(w, h, |x, y| {
            let t = (x + y) as f32 / (w + h) as f32;
            let ch = |c: u32, k: u32| {
                let a = ((c >> (8 * k)) & 255) as f32;
                let b = ((c1 >> (8 * k)) & 255) as f32;
                (a + (b - a) * t) as u8
            };
            image::Rgb([ch(c0, 0), ch(c0, 1), ch(c0, 2)])
        });
        for _ in 0..4 {
            let (x0, y0) = (next() % w, next() % h);
            let (rw, rh) = (8 + next() % (w / 2), 8 + next() % (h / 2));
            let col = next();
            for y in y0..(y0 + rh).min(h) {
                for x in x0..(x0 + rw).min(w) {
                    img.put_pixel(
                        x,
                        y,
                        image::Rgb([col as u8, (col >> 8) as u8, (col >> 16) as u8]),
                    );
                }
            }
        }
        img.save(dir.join(format!("img_{seed}_{i:03}.png")))
            .unwrap();
    }
    dir.to_path_buf()
}

fn options(method: Method) -> QuantizeOptions {
    QuantizeOptions {
        method,
        format: detrc::quant::Format::Int8,
        residual: true,
        weight_only: false,
        resize: Default::default(),
    }
}

fn quantize_fixture(name: &str, cal: &Path, method: Method) -> (Graph, Graph) {
    let (g, _, _) = detrc::build::load_compiled(&fixture(name), &mut |_| {}).unwrap();
    let files = detrc::quant::image_files(cal, None).unwrap();
    let mut q = g.clone();
    detrc::quant::quantize_graph(&mut q, &files, &options(method)).unwrap();
    (g, q)
}

#[test]
fn detr_fixture_quantizes_deterministically_and_stays_accurate() {
    let d = tmpdir();
    let cal = write_images(&d.path().join("cal"), 8, 1);
    let held = write_images(&d.path().join("held"), 4, 2);
    let (float, q) = quantize_fixture("detr_tiny_op17_b1.onnx", &cal, Method::Mse);
    assert_trt_friendly(&q);
    assert!(
        op_count(&q, "QuantizeLinear") > 20,
        "{:?}",
        q.op_histogram()
    );
    assert_eq!(op_count(&q, "Where"), 0);
    assert!(quantize::meta(&q, quantize::SCALES_KEY).is_some_and(|h| h.len() == 64));
    assert_eq!(quantize::meta(&q, quantize::IMAGES_KEY), Some("8"));
    // Same images, same model, byte for byte.
    let (_, again) = quantize_fixture("detr_tiny_op17_b1.onnx", &cal, Method::Mse);
    assert_eq!(encode(&q.export()), encode(&again.export()));

    let (_, shape) = detrc::quant::image_input(&float).unwrap();
    let files = detrc::quant::image_files(&held, None).unwrap();
    let ev = detrc::quant::evaluate(
        &encode(&float.export()),
        &encode(&q.export()),
        shape,
        &files,
        0.5,
    )
    .unwrap();
    let by = |n: &str| ev.outputs.iter().find(|o| o.name == n).unwrap().sqnr_db;
    eprintln!("{ev:?}");
    assert!(by("pred_boxes") >= 40.0, "{ev:?}");
    assert!(by("pred_logits") >= 20.0, "{ev:?}");
    // 4 held-out images x 10 queries of a random-weight model whose class scores are close
    // together: measured 0.8 (32 of 40 best classes the same as the float model's).
    assert!(
        ev.detections.as_ref().unwrap().top1_agreement >= 0.75,
        "{ev:?}"
    );
}

#[test]
fn calibration_methods_differ_only_in_clipping() {
    let d = tmpdir();
    let cal = write_images(&d.path().join("cal"), 4, 3);
    let (g, _, _) =
        detrc::build::load_compiled(&fixture("detr_tiny_op17_b1.onnx"), &mut |_| {}).unwrap();
    let plan = quantize::plan(&g, true).unwrap();
    let files = detrc::quant::image_files(&cal, None).unwrap();
    let c = detrc::quant::calibrate(&g, &plan.tensors(), &files).unwrap();
    assert_eq!(c.images, 4);
    let max = c.ranges(Method::Max);
    assert_eq!(max.len(), plan.activations.len());
    for m in [Method::Percentile(99.9), Method::Entropy, Method::Mse] {
        let r: BTreeMap<String, f32> = c.ranges(m);
        for (k, v) in &r {
            assert!(*v > 0.0 && *v <= max[k], "{m:?} {k}: {v} vs max {}", max[k]);
        }
    }
}

#[test]
fn calibration_resizes_as_asked() {
    // Calibration images are 64..160 wide, the model's input 64x96 (and so on): PIL's
    // antialiased filter feeds the model other values than the torch resize, and so other ranges.
    use detrc::run::Resize;
    let d = tmpdir();
    let cal = write_images(&d.path().join("cal"), 3, 5);
    let (g, _, _) =
        detrc::build::load_compiled(&fixture("detr_tiny_op17_b1.onnx"), &mut |_| {}).unwrap();
    let plan = quantize::plan(&g, true).unwrap();
    let files = detrc::quant::image_files(&cal, None).unwrap();
    let torch = detrc::quant::calibrate_with(&g, &plan.tensors(), &files, Resize::Torch).unwrap();
    let default = detrc::quant::calibrate(&g, &plan.tensors(), &files).unwrap();
    let pil = detrc::quant::calibrate_with(&g, &plan.tensors(), &files, Resize::Pil).unwrap();
    assert_eq!(torch.ranges(Method::Mse), default.ranges(Method::Mse));
    let (t, p) = (torch.ranges(Method::Mse), pil.ranges(Method::Mse));
    assert_eq!(t.len(), p.len());
    assert!(
        t.iter().any(|(k, v)| p[k] != *v),
        "pil and torch calibrate alike"
    );
}

// ---------- the CLI ----------

fn detrc_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_detrc"))
}

fn fails_naming(args: &[&std::ffi::OsStr], out: &Path, needle: &str) {
    let o = detrc_cmd().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "{} was written", out.display());
}

#[test]
fn cli_bad_calibration_input_names_the_file_and_writes_nothing() {
    let d = tmpdir();
    let out = d.path().join("q.onnx");
    let model = fixture("detr_tiny_op17_b1.onnx");
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let q = |cal: &Path| {
        vec![
            "quantize".as_ref(),
            model.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--calibration".as_ref(),
            cal.as_os_str().to_owned().leak() as &std::ffi::OsStr,
        ]
    };
    fails_naming(&q(&empty), &out, &empty.display().to_string());
    let missing = d.path().join("nope");
    fails_naming(&q(&missing), &out, &missing.display().to_string());
    let bad = d.path().join("bad");
    write_images(&bad, 2, 9);
    let junk = bad.join("img_9_001.png");
    std::fs::write(&junk, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    fails_naming(&q(&bad), &out, &junk.display().to_string());
    // A held-out folder is checked the same way, before anything is written.
    let good = write_images(&d.path().join("good"), 2, 10);
    let mut args = q(&good);
    args.extend(["--eval".as_ref(), empty.as_os_str()]);
    fails_naming(&args, &out, &empty.display().to_string());

    // A model whose input is not an image batch.
    let m = M::new(17)
        .input("x", &[2, 5])
        .output("y")
        .rand("w", &[5, 3], 1)
        .node("MatMul", &["x", "w"], &["y"], vec![]);
    let mpath = d.path().join("notimage.onnx");
    std::fs::write(&mpath, encode(&m.model())).unwrap();
    let o = detrc_cmd()
        .arg("quantize")
        .arg(&mpath)
        .arg("-o")
        .arg(&out)
        .arg("--calibration")
        .arg(&good)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not an image tensor") && err.contains("'x'"),
        "{err}"
    );
    assert!(err.contains(&mpath.display().to_string()), "{err}");
    assert!(!out.exists());
}

#[test]
fn cli_quantize_writes_the_model_and_a_report() {
    let d = tmpdir();
    let cal = write_images(&d.path().join("cal"), 4, 4);
    let held = write_images(&d.path().join("held"), 2, 5);
    let out = d.path().join("q.onnx");
    let rep = d.path().join("r.json");
    let o = detrc_cmd()
        .arg("quantize")
        .arg(fixture("detr_tiny_op17_b1.onnx"))
        .arg("-o")
        .arg(&out)
        .args(["--calibration".as_ref(), cal.as_os_str()])
        .args(["--eval".as_ref(), held.as_os_str()])
        .args(["--method", "entropy", "--report"])
        .arg(&rep)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("pred_boxes: SQNR"), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert_eq!(r["method"], "entropy");
    assert_eq!(r["calibration"]["images"], 4);
    assert!(r["quantized"]["activations_quantized"].as_u64().unwrap() > 10);
    let outs = r["evaluation"]["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), 2);
    // Entropy is the weakest method on these models (docs/int8.md: 13-17 dB on the logits,
    // where max and mse reach 31-36 dB); this checks the report, not the method.
    assert!(
        outs.iter().all(|o| o["sqnr_db"].as_f64().unwrap() > 10.0),
        "{outs:?}"
    );
    let kept = r["quantized"]["kept_float"].as_array().unwrap();
    assert!(kept
        .iter()
        .any(|k| k.as_str().unwrap().contains("LayerNormalization")));

    // onnxruntime runs it, and finds what TensorRT-RTX needs (scripts/int8_compare.py's checks).
    let Some(j) = qdq_check(&out, &held) else {
        return;
    };
    assert_eq!(j["images"], 2);
    // onnxruntime measures what detrc's own evaluation (tract) measured.
    for o in outs {
        let name = o["name"].as_str().unwrap();
        let ours = o["sqnr_db"].as_f64().unwrap();
        let theirs = j["sqnr_db"][name].as_f64().unwrap();
        assert!(
            (ours - theirs).abs() < 1.0,
            "{name}: tract {ours} dB, onnxruntime {theirs} dB"
        );
    }
}

/// scripts/qdq_check.py on a Q/DQ model of detr_tiny_op17_b1 (onnxruntime runs it, and finds
/// the structure TensorRT-RTX needs: no Where, no INT32 DequantizeLinear, zero points 0, Q/DQ
/// present); the script's JSON, or None when there is no .venv and none is required.
fn qdq_check(model: &Path, held: &Path) -> Option<serde_json::Value> {
    let py = python_or_skip()?;
    let o = Command::new(py)
        .arg(root().join("scripts/qdq_check.py"))
        .arg(model)
        .arg("--float")
        .arg(fixture("detr_tiny_op17_b1.onnx"))
        .args(["--images".as_ref(), held.as_os_str()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["where"], 0);
    assert_eq!(j["int32_dequantize"], 0);
    assert_eq!(j["nonzero_zero_points"], 0);
    assert!(j["quantize_linear"].as_u64().unwrap() > 10);
    Some(j)
}

#[cfg(not(feature = "enterprise"))]
#[test]
fn int8_engines_build_for_sm86_and_sm89() {
    let Some(trt) = detrc::build::engine::test_libraries() else {
        return;
    };
    let d = tmpdir();
    let cal = write_images(&d.path().join("cal"), 4, 6);
    let out = d.path().join("m.engine");
    let o = detrc_cmd()
        .env("DETRC_TENSORRT_DIR", &trt)
        .arg("build")
        .arg(fixture("detr_tiny_op17_b1.onnx"))
        .arg("-o")
        .arg(&out)
        .args(["--precision", "int8", "--target", "sm86,sm89", "--json"])
        .args(["--calibration".as_ref(), cal.as_os_str()])
        .args(["--method", "entropy"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sc = detrc::build::Sidecar::from_json(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert_eq!(sc.precision, "int8");
    assert_eq!(sc.targets, ["sm86", "sm89"]);
    let q = sc.quantization.expect("quantization recorded");
    assert_eq!(q.method, "entropy");
    assert_eq!(q.images, 4);
    assert_eq!(q.scales_sha256.len(), 64);
    assert!(
        sc.steps.iter().any(|s| s.starts_with("quantize: ")),
        "{:?}",
        sc.steps
    );
    assert!(std::fs::metadata(&out).unwrap().len() > 10_000);

    // Without calibration images: a usage error, nothing written.
    let out2 = d.path().join("n.engine");
    let o = detrc_cmd()
        .env("DETRC_TENSORRT_DIR", &trt)
        .arg("build")
        .arg(fixture("detr_tiny_op17_b1.onnx"))
        .arg("-o")
        .arg(&out2)
        .args(["--precision", "int8", "--target", "sm86"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--calibration"));
    assert!(!out2.exists());
}

#[test]
fn raising_to_opset_19_moves_reduction_axes_to_inputs_and_keeps_outputs() {
    // LayerNorm as opset-17 exports decompose it (ReduceMean with an `axes` attribute) and a
    // Split into equal parts without sizes: the two signatures opset 18 changed.
    let m = M::new(17)
        .input("x", &[1, 4, 6])
        .node(
            "ReduceMean",
            &["x"],
            &["mu"],
            vec![ints_attr("axes", &[-1])],
        )
        .node("Sub", &["x", "mu"], &["d"], vec![])
        .node(
            "Split",
            &["d"],
            &["a", "b"],
            vec![common::int_attr("axis", 2)],
        )
        .node("Mul", &["a", "b"], &["y"], vec![])
        .output("y");
    let before = encode(&m.model());
    let mut g = m.graph();
    apply(&mut g, &InferShapes);
    let lines = detrc::ir::opset::raise(&mut g, 19).unwrap();
    assert_eq!(g.opset(), 19);
    assert!(
        lines.iter().any(|l| l.contains("1 reductions")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("1 Splits")), "{lines:?}");
    g.validate().unwrap();
    let after = encode(&g.export());
    assert_same_outputs(&before, &after, 1e-6);
    // Models older than opset 11 are refused, unchanged.
    let mut old = M::new(10)
        .input("x", &[2])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y")
        .graph();
    assert!(detrc::ir::opset::raise(&mut old, 19)
        .unwrap_err()
        .contains("11..=19"));
    assert_eq!(old.opset(), 10);
}

#[test]
fn fp8_quantization_is_opset_19_e4m3_and_onnxruntime_runs_it() {
    let d = tmpdir();
    let cal = write_images(&d.path().join("cal"), 6, 1);
    let held = write_images(&d.path().join("held"), 2, 2);
    let out = d.path().join("fp8.onnx");
    let o = detrc_cmd()
        .arg("quantize")
        .arg(fixture("detr_tiny_op17_b1.onnx"))
        .arg("-o")
        .arg(&out)
        .args(["--calibration".as_ref(), cal.as_os_str()])
        .args(["--format", "fp8"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (g, _) = detrc::driver::load_graph(&out).unwrap();
    assert_eq!(g.opset(), 19);
    assert_eq!(quantize::qdq_format(&g), Some(quantize::Format::Fp8));
    assert_eq!(
        quantize::meta(&g, detrc::passes::to_fp16::PRECISION_KEY),
        Some("fp8")
    );
    // --eval needs a runtime with float8, which tract is not: a usage error naming the way out
    let o = detrc_cmd()
        .arg("quantize")
        .arg(fixture("detr_tiny_op17_b1.onnx"))
        .arg("-o")
        .arg(d.path().join("x.onnx"))
        .args(["--calibration".as_ref(), cal.as_os_str()])
        .args(["--eval".as_ref(), held.as_os_str()])
        .args(["--format", "fp8"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("int8_compare.py --format fp8"));
    assert!(!d.path().join("x.onnx").exists());

    let Some(j) = qdq_check(&out, &held) else {
        return;
    };
    // E4M3 keeps 3 mantissa bits: below int8's 31 dB on these logits, measured 23-27 dB
    let s = |n: &str| j["sqnr_db"][n].as_f64().unwrap();
    assert!(s("pred_logits") > 15.0 && s("pred_boxes") > 35.0, "{j}");
}

#[cfg(not(feature = "enterprise"))]
#[test]
fn fp8_engines_build_for_sm89_and_sm120_and_are_refused_for_ampere() {
    let Some(trt) = detrc::build::engine::test_libraries() else {
        return;
    };
    let d = tmpdir();
    let cal = write_images(&d.path().join("cal"), 4, 6);
    let build = |out: &Path, target: &str| {
        detrc_cmd()
            .env("DETRC_TENSORRT_DIR", &trt)
            .arg("build")
            .arg(fixture("detr_tiny_op17_b1.onnx"))
            .arg("-o")
            .arg(out)
            .args(["--precision", "fp8", "--target", target, "--json"])
            .args(["--calibration".as_ref(), cal.as_os_str()])
            .output()
            .unwrap()
    };
    let out = d.path().join("m.engine");
    let o = build(&out, "sm89,sm120");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sc = detrc::build::Sidecar::from_json(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert_eq!(sc.precision, "fp8");
    assert_eq!(sc.targets, ["sm89", "sm120"]);
    let q = sc.quantization.expect("quantization recorded");
    assert_eq!((q.method.as_str(), q.images), ("mse", 4));
    assert!(std::fs::metadata(&out).unwrap().len() > 10_000);
    // Ampere: refused before any work, nothing written
    let out2 = d.path().join("a.engine");
    let o = build(&out2, "sm86");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sm89"));
    assert!(!out2.exists());
}

/// A model that states its precision builds without `--precision`: a Q/DQ model from `detrc
/// quantize` as int8, a `to-fp16` model as fp16. A flag that contradicts the graph stays a
/// usage error, with nothing written.
#[cfg(not(feature = "enterprise"))]
#[test]
fn build_reads_the_precision_of_quantized_and_fp16_models() {
    let Some(trt) = detrc::build::engine::test_libraries() else {
        return;
    };
    let d = tmpdir();
    let cal = write_images(&d.path().join("cal"), 4, 6);
    let qdq = d.path().join("q.onnx");
    let o = detrc_cmd()
        .arg("quantize")
        .arg(fixture("detr_tiny_op17_b1.onnx"))
        .arg("-o")
        .arg(&qdq)
        .args(["--calibration".as_ref(), cal.as_os_str()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let half = d.path().join("h.onnx");
    let o = detrc_cmd()
        .arg("compile")
        .arg(fixture("detr_tiny_op17_b1.onnx"))
        .arg("-o")
        .arg(&half)
        .args(["--passes", "infer-shapes,fold-constants,to-fp16", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (model, want, wrong) in [(&qdq, "int8", "fp16"), (&half, "fp16", "fp32")] {
        let out = d.path().join(format!("{want}.engine"));
        let o = detrc_cmd()
            .env("DETRC_TENSORRT_DIR", &trt)
            .arg("build")
            .arg(model)
            .arg("-o")
            .arg(&out)
            .args(["--target", "sm86", "--json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let sc = detrc::build::Sidecar::from_json(&String::from_utf8_lossy(&o.stdout)).unwrap();
        assert_eq!(sc.precision, want);
        let bad = d.path().join(format!("{want}-as-{wrong}.engine"));
        let o = detrc_cmd()
            .env("DETRC_TENSORRT_DIR", &trt)
            .arg("build")
            .arg(model)
            .arg("-o")
            .arg(&bad)
            .args(["--target", "sm86", "--precision", wrong])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!bad.exists());
    }
}
