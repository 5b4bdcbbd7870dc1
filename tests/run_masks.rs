//! Instance masks in `detrc run` (issue 24): a mask output found by structure, decoded the way
//! the families do (bilinear resize of the mask logits to the image, sigmoid > 0.5), drawn on
//! the PNG and written as COCO RLE, checked against scripts/ref_detect.py (onnxruntime + numpy,
//! its own resize and RLE encoder) on DETR's `DetrForSegmentation` (softmax, `pred_masks`) and
//! RF-DETR-Seg's own export (sigmoid, `dets`/`labels`/`masks`), before and after
//! `detrc compile`; a mask output of an unknown layout runs boxes only, with a warning.

mod common;

use std::path::Path;

use common::run::{compare, detrc, iou, mask_of, ort_python, read_dets, reference, stderr};
use detrc::run::Detection;

const IMAGES: &str = "examples/images";

fn run(model: &str, out: &Path, extra: &[&str]) -> (Vec<Detection>, serde_json::Value) {
    let mut args = vec![
        "run",
        model,
        "--images",
        IMAGES,
        "--threshold",
        "0",
        "--json",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let o = detrc(&args);
    assert!(o.status.success(), "detrc run {model}: {}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (read_dets(&out.join("detections.json")), j)
}

fn image_size(name: &str) -> (u32, u32) {
    image::image_dimensions(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(IMAGES)
            .join(name),
    )
    .unwrap()
}

/// Runs `model`, checks the decode and mask output it chose, the masks' sizes and that they are
/// drawn, and compares detections and masks (IoU) with the reference. Returns the smallest IoU.
fn check(model: &str, decode: &str, mask_output: &str, per_image: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (dets, j) = run(model, &out, &[]);
    assert_eq!(j["decode"], decode, "{model}");
    assert_eq!(j["masks"], mask_output, "{model}");
    assert_eq!(j["warnings"], serde_json::json!([]), "{model}");
    assert_eq!(dets.len(), 3 * per_image, "{model}");
    let mut covered = 0.0;
    for d in &dets {
        let (w, h) = image_size(&d.image);
        let m = mask_of(d, w, h);
        covered += m.iter().filter(|&&v| v).count() as f64 / m.len() as f64;
    }
    covered /= dets.len() as f64;
    // random weights still give masks that are neither empty nor full
    assert!(
        (0.01..0.99).contains(&covered),
        "{model}: mean coverage {covered}"
    );
    // the masks are painted: most pixels of a masked image change
    let input = image::open(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(IMAGES)
            .join("synthetic_160x120.png"),
    )
    .unwrap()
    .into_rgb8();
    let drawn = image::open(out.join("synthetic_160x120.png"))
        .unwrap()
        .into_rgb8();
    let changed = input
        .pixels()
        .zip(drawn.pixels())
        .filter(|(a, b)| a != b)
        .count();
    assert!(changed > 0, "{model}: nothing drawn");

    let Some(py) = ort_python() else { return 1.0 };
    let want = reference(
        &py,
        model,
        &["--images", IMAGES, "--threshold", "0", "--decode", decode],
        &dir.path().join("ref.json"),
    );
    compare(&dets, &want);
    let mut worst = 1.0f64;
    for (a, b) in dets.iter().zip(&want) {
        let (w, h) = image_size(&a.image);
        let v = iou(&mask_of(a, w, h), &mask_of(b, w, h));
        assert!(v >= 0.99, "{model}: mask IoU {v} for {a:?}");
        worst = worst.min(v);
    }
    eprintln!(
        "{model}: {} detections, smallest mask IoU {worst}",
        dets.len()
    );
    worst
}

#[test]
fn detr_segmentation_masks_match_the_reference() {
    // softmax: one detection per query, 10 queries, masks [1, 10, 16, 24]
    check(
        "fixtures/decode/tf_detr_seg.onnx",
        "softmax",
        "pred_masks",
        10,
    );
}

#[test]
fn rfdetr_seg_own_export_masks_match_the_reference() {
    // sigmoid top-k over 10 queries x 5 classes; dets/labels/masks [1, 10, 18, 24]
    check(
        "fixtures/decode/rfdetr_seg_nano.onnx",
        "sigmoid",
        "masks",
        10,
    );
}

#[test]
fn compiled_segmentation_models_keep_their_masks() {
    let dir = tempfile::tempdir().unwrap();
    for (model, decode, masks) in [
        ("fixtures/decode/tf_detr_seg.onnx", "softmax", "pred_masks"),
        ("fixtures/decode/rfdetr_seg_nano.onnx", "sigmoid", "masks"),
    ] {
        let name = Path::new(model).file_name().unwrap().to_str().unwrap();
        let c = dir.path().join(name.replace(".onnx", ".compiled.onnx"));
        let o = detrc(&["compile", model, "-o", c.to_str().unwrap()]);
        assert!(o.status.success(), "compile {model}: {}", stderr(&o));
        check(c.to_str().unwrap(), decode, masks, 10);
    }
}

#[test]
fn unknown_mask_layout_runs_boxes_only_with_a_warning() {
    // DETR-seg with its masks transposed to [1, 16, 24, 10] (channels last): not [B, Q, h, w]
    use detrc::load::proto::{NodeProto, TypeProto};
    let src = "fixtures/decode/tf_detr_seg.onnx";
    let mut m = detrc::load::load_proto(&Path::new(env!("CARGO_MANIFEST_DIR")).join(src)).unwrap();
    let g = m.graph.as_mut().unwrap();
    let out = g
        .output
        .iter_mut()
        .find(|o| o.name.as_deref() == Some("pred_masks"))
        .unwrap();
    out.name = Some("masks_hwq".into());
    out.r#type = Some(TypeProto::default());
    g.node.push(NodeProto {
        input: vec!["pred_masks".into()],
        output: vec!["masks_hwq".into()],
        name: Some("to_channels_last".into()),
        op_type: Some("Transpose".into()),
        attribute: vec![common::ints_attr("perm", &[0, 2, 3, 1])],
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("detr_seg_hwq.onnx");
    let mut bytes = Vec::new();
    detrc::emit::write_model(&m, &mut bytes).unwrap();
    std::fs::write(&model, bytes).unwrap();

    let out = dir.path().join("out");
    let (dets, j) = run(model.to_str().unwrap(), &out, &[]);
    assert_eq!(j["masks"], serde_json::Value::Null);
    let warning = j["warnings"][0].as_str().unwrap_or_default().to_string();
    assert!(
        warning.contains("masks_hwq") && warning.contains("boxes only"),
        "{warning}"
    );
    assert!(dets.iter().all(|d| d.segmentation.is_none()));
    // the boxes are those of the unchanged model
    let (plain, _) = run(src, &dir.path().join("plain"), &[]);
    let strip: Vec<Detection> = plain
        .into_iter()
        .map(|d| Detection {
            segmentation: None,
            ..d
        })
        .collect();
    compare(&dets, &strip);
    // without --json the warning goes to stderr
    let o = detrc(&[
        "run",
        model.to_str().unwrap(),
        "--images",
        IMAGES,
        "-o",
        dir.path().join("quietless").to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("detrc: warning: output masks_hwq"),
        "{}",
        stderr(&o)
    );
}

/// A hand-made segmentation head on a dynamic batch: masks from a pooled 1x1 convolution of the
/// image, logits and boxes from its channel means, so every image gets its own masks.
fn dynamic_seg_model(path: &Path) {
    use common::{encode, ints_attr, M};
    let (q, c) = (4i64, 3i64);
    let m = M::new(17)
        .input_dims("pixel_values", &["N", "3", "64", "96"])
        .rand("wm", &[q, 3, 1, 1], 11)
        .rand("bm", &[q], 12)
        .rand("wl", &[3, q * c], 13)
        .rand("wb", &[3, q * 4], 14)
        .i64("shape_l", &[3], &[-1, q, c])
        .i64("shape_b", &[3], &[-1, q, 4])
        .node(
            "AveragePool",
            &["pixel_values"],
            &["pooled"],
            vec![
                ints_attr("kernel_shape", &[4, 4]),
                ints_attr("strides", &[4, 4]),
            ],
        )
        .node("Conv", &["pooled", "wm", "bm"], &["masks"], vec![])
        .node("GlobalAveragePool", &["pixel_values"], &["gap"], vec![])
        .node("Flatten", &["gap"], &["flat"], vec![])
        .node("MatMul", &["flat", "wl"], &["l2"], vec![])
        .node("Reshape", &["l2", "shape_l"], &["logits"], vec![])
        .node("MatMul", &["flat", "wb"], &["b2"], vec![])
        .node("Reshape", &["b2", "shape_b"], &["b3"], vec![])
        .node("Sigmoid", &["b3"], &["pred_boxes"], vec![])
        .output("logits")
        .output("pred_boxes")
        .output("masks");
    std::fs::write(path, encode(&m.model())).unwrap();
}

#[test]
fn batched_masks_belong_to_their_image() {
    // 3 images in batches of 2 (the last padded) give the masks of batches of 1, and the
    // reference's at batch 2
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("seg_dynamic.onnx");
    dynamic_seg_model(&model);
    let m = model.to_str().unwrap();
    let (one, j1) = run(m, &dir.path().join("b1"), &["--decode", "sigmoid"]);
    let (two, j2) = run(
        m,
        &dir.path().join("b2"),
        &["--decode", "sigmoid", "--batch", "2"],
    );
    assert_eq!(
        (j1["masks"].as_str(), j2["batch"].as_u64()),
        (Some("masks"), Some(2))
    );
    assert_eq!(one.len(), 12);
    compare(&two, &one);
    for (a, b) in one.iter().zip(&two) {
        assert_eq!(a.segmentation, b.segmentation, "{}", a.image);
    }
    // the images' masks differ from each other: a mix-up would show
    let first: Vec<_> = one.iter().map(|d| d.segmentation.clone()).collect();
    assert_ne!(first[0], first[4]);
    let Some(py) = ort_python() else { return };
    let want = reference(
        &py,
        m,
        &[
            "--images",
            IMAGES,
            "--threshold",
            "0",
            "--decode",
            "sigmoid",
            "--batch",
            "2",
        ],
        &dir.path().join("ref.json"),
    );
    compare(&two, &want);
    for (a, b) in two.iter().zip(&want) {
        let (w, h) = image_size(&a.image);
        assert!(iou(&mask_of(a, w, h), &mask_of(b, w, h)) >= 0.99, "{a:?}");
    }
}
