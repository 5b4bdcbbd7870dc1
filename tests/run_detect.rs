//! `detrc run` end to end on the CPU backend, checked against an independent implementation
//! (scripts/ref_detect.py: onnxruntime + numpy + PIL), plus its error paths.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::root;
use common::run::{assert_fails_with, compare, detrc, ort_python as python, read_dets, stderr};
use detrc::run::Detection;

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
    assert_fails_with(&o, "cannot tell how this model decodes");
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
