//! `detrc run` end to end on the CPU backend, checked against an independent implementation
//! (scripts/ref_detect.py: onnxruntime + numpy + PIL), plus its error paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use detrc::run::Detection;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn detrc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detrc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("spawn detrc")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed run: exit code 1, the expected message, and no panic.
fn assert_fails_with(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
}

/// $DETRC_PYTHON, else the interpreter CI prepares (.venv, from scripts/requirements-ci.txt),
/// else python3; None (with the reason printed) when it lacks onnxruntime, numpy or PIL, unless
/// DETRC_REQUIRE_ORT is set (CI), where that fails the test.
fn python() -> Option<PathBuf> {
    let venv = root().join(".venv/bin/python");
    let py = match std::env::var_os("DETRC_PYTHON").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None if venv.exists() => venv,
        None => PathBuf::from("python3"),
    };
    let ok = Command::new(&py)
        .args(["-c", "import onnxruntime, numpy, PIL"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("DETRC_REQUIRE_ORT").is_none(),
            "DETRC_REQUIRE_ORT is set but {} cannot import onnxruntime, numpy and PIL \
             (scripts/setup_python.sh installs them)",
            py.display()
        );
        eprintln!(
            "SKIP: {} cannot import onnxruntime, numpy and PIL; the reference comparison needs \
             them (pip install -r scripts/requirements-ci.txt)",
            py.display()
        );
        return None;
    }
    Some(py)
}

fn read_dets(p: &Path) -> Vec<Detection> {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn compare(ours: &[Detection], reference: &[Detection]) {
    assert_eq!(ours.len(), reference.len(), "number of detections");
    for (a, b) in ours.iter().zip(reference) {
        assert_eq!(a.image, b.image);
        assert_eq!(a.category_id, b.category_id, "{a:?} vs {b:?}");
        assert!((a.score - b.score).abs() <= 2e-3, "score: {a:?} vs {b:?}");
        for k in 0..4 {
            assert!((a.bbox[k] - b.bbox[k]).abs() <= 1.0, "bbox: {a:?} vs {b:?}");
        }
    }
}

const IMAGES: &str = "examples/images";

fn run_fixture(model: &str, out: &Path) -> Vec<Detection> {
    let o = detrc(&[
        "run",
        model,
        "--images",
        IMAGES,
        "--threshold",
        "0.0",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "detrc run failed: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("detected 30 objects"), "summary: {err}");
    read_dets(&out.join("detections.json"))
}

fn check_against_reference(model: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let ours = run_fixture(model, &out);
    // 3 images x 10 queries, all kept at threshold 0
    assert_eq!(ours.len(), 30);

    // annotated images: one per input, same size, with something drawn
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(root().join(IMAGES))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(inputs.iter().any(|p| p.ends_with("synthetic_96x64.png")));
    for input in &inputs {
        let stem = input.file_stem().unwrap().to_str().unwrap();
        let annotated = out.join(format!("{stem}.png"));
        let a = image::open(&annotated)
            .unwrap_or_else(|e| panic!("{}: {e}", annotated.display()))
            .into_rgb8();
        let i = image::open(input).unwrap().into_rgb8();
        assert_eq!(a.dimensions(), i.dimensions());
        assert_ne!(a, i, "{} has nothing drawn", annotated.display());
    }

    let Some(py) = python() else { return };
    let ref_json = dir.path().join("ref.json");
    let o = Command::new(py)
        .arg(root().join("scripts/ref_detect.py"))
        .args([model, "--images", IMAGES, "--threshold", "0.0", "-o"])
        .arg(&ref_json)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "ref_detect.py: {}", stderr(&o));
    compare(&ours, &read_dets(&ref_json));
}

#[test]
fn detections_match_reference_batch1() {
    check_against_reference("fixtures/detr_tiny_op17_b1.onnx");
}

#[test]
fn detections_match_reference_batch2_with_padding() {
    // 3 images on a batch-2 model: the second batch is padded with a repeat
    check_against_reference("fixtures/detr_tiny_op17_b2.onnx");
}

#[test]
fn batch_sizes_agree() {
    // the b1 and b2 fixtures share weights (fixtures/manifest.json)
    let dir = tempfile::tempdir().unwrap();
    let b1 = run_fixture("fixtures/detr_tiny_op17_b1.onnx", &dir.path().join("b1"));
    let b2 = run_fixture("fixtures/detr_tiny_op17_b2.onnx", &dir.path().join("b2"));
    compare(&b1, &b2);
}

#[test]
fn threshold_labels_and_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "zero\none\n").unwrap();
    let out = dir.path().join("out");
    let o = detrc(&[
        "run",
        "fixtures/detr_tiny_op17_b1.onnx",
        "--images",
        "examples/images/synthetic_96x64.png",
        "examples/images/synthetic_200x150.jpg",
        "--threshold",
        "0.9",
        "--labels",
        labels.to_str().unwrap(),
        "--json",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["images"], 2);
    assert_eq!(j["backend"], "cpu");
    // random weights: nothing scores 0.9
    assert_eq!(j["detections"], 0);
    assert!(read_dets(&out.join("detections.json")).is_empty());
    assert!(out.join("synthetic_96x64.png").is_file());
    assert!(out.join("synthetic_200x150.png").is_file());
}

#[test]
fn folder_without_images_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "no images here").unwrap();
    let o = detrc(&[
        "run",
        "fixtures/detr_tiny_op17_b1.onnx",
        "--images",
        dir.path().to_str().unwrap(),
        "-o",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_fails_with(&o, "holds no JPEG or PNG images");
}

#[test]
fn corrupt_and_truncated_images_fail_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(root().join("examples/images/synthetic_160x120.png")).unwrap();
    let cases = [
        ("garbage.png", b"definitely not a png".to_vec()),
        ("truncated.png", good[..good.len() / 2].to_vec()),
        ("empty.jpg", Vec::new()),
    ];
    for (name, bytes) in cases {
        let img = dir.path().join(name);
        std::fs::write(&img, bytes).unwrap();
        let out = dir.path().join(format!("out-{name}"));
        let o = detrc(&[
            "run",
            "fixtures/detr_tiny_op17_b1.onnx",
            "--images",
            "examples/images/synthetic_96x64.png",
            img.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_fails_with(&o, name);
        assert!(
            !out.join("detections.json").exists(),
            "{name}: detections.json written despite the error"
        );
    }
    let o = detrc(&[
        "run",
        "fixtures/detr_tiny_op17_b1.onnx",
        "--images",
        dir.path().join("missing.png").to_str().unwrap(),
        "-o",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_fails_with(&o, "missing.png");
}

#[test]
fn non_detr_model_fails() {
    let dir = tempfile::tempdir().unwrap();
    let o = detrc(&[
        "run",
        "fixtures/cnn_tiny_op17_b1.onnx",
        "--images",
        IMAGES,
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    assert_fails_with(&o, "not DETR-shaped");
    assert!(stderr(&o).contains("logits [1, 10]"), "{}", stderr(&o));
}

#[test]
fn tensorrt_backend_without_gpu_fails_cleanly() {
    if detrc::run::cuda::driver_present() {
        eprintln!("SKIP: a CUDA driver is present; this test covers machines without one");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("model.engine");
    std::fs::write(&engine, b"not really an engine").unwrap();
    let out = dir.path().join("out");
    for args in [
        // explicit backend on the ONNX model
        vec!["fixtures/detr_tiny_op17_b1.onnx", "--backend", "tensorrt"],
        // a non-ONNX file picks the TensorRT backend
        vec![engine.to_str().unwrap()],
    ] {
        let mut full = vec!["run"];
        full.extend(args);
        full.extend(["--images", IMAGES, "-o", out.to_str().unwrap()]);
        let o = detrc(&full);
        assert_fails_with(&o, "no CUDA driver found");
        assert!(stderr(&o).contains("compute capability"));
    }
    let o = detrc(&["bench", engine.to_str().unwrap(), "--iters", "1"]);
    assert_fails_with(&o, "no CUDA driver found");
}

#[test]
fn output_over_input_and_bad_threshold_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.png");
    std::fs::copy(root().join("examples/images/synthetic_96x64.png"), &img).unwrap();
    let o = detrc(&[
        "run",
        "fixtures/detr_tiny_op17_b1.onnx",
        "--images",
        img.to_str().unwrap(),
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    assert_fails_with(&o, "would overwrite the input");
    let o = detrc(&[
        "run",
        "fixtures/detr_tiny_op17_b1.onnx",
        "--images",
        IMAGES,
        "--threshold",
        "1.5",
        "-o",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
