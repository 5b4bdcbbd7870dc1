//! `--resize pil` reproduces `PIL.Image.resize(BILINEAR)` bit for bit (PIL itself is the
//! reference, through the test interpreter), and `--resize torch` stays the default; end to end,
//! `detrc run --resize pil` matches scripts/ref_detect.py's PIL pipeline.

mod common;

use std::process::Command;

use common::run::{compare, detrc, ort_python, read_dets, reference, stderr};
use detrc::run::preprocess::{preprocess_batch_with, resize_pil, Resize};
use detrc::run::Normalize;
use image::{Rgb, RgbImage};

/// A seeded noisy image with smooth gradients, so both filter tails and edges matter.
fn image(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = state & 0x3f;
        let g = |a: u32, b: u32| ((a * 255 / w.max(1) + b * 255 / h.max(1)) / 2 + n) as u8;
        Rgb([g(x, y), g(w - 1 - x, y), (state >> 8) as u8])
    })
}

/// (input w, h) -> (output w, h): shrinking by non-integer factors, enlarging, one axis only,
/// 1-pixel sides, and the same size.
type Size = (u32, u32);

const CASES: &[(Size, Size)] = &[
    ((200, 150), (96, 64)),
    ((640, 480), (97, 61)),
    ((96, 64), (96, 64)),
    ((31, 17), (96, 64)),
    ((1, 1), (5, 3)),
    ((300, 7), (32, 7)),
    ((7, 300), (7, 32)),
    ((123, 45), (1, 1)),
    ((1000, 3), (13, 2)),
];

#[test]
fn pil_resize_matches_pil_exactly() {
    let Some(py) = ort_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut script = String::from("from PIL import Image\nimport sys\n");
    for (i, ((w, h), (ow, oh))) in CASES.iter().enumerate() {
        let img = image(*w, *h, i as u32 + 1);
        let src = dir.path().join(format!("in{i}.png"));
        img.save(&src).unwrap();
        script.push_str(&format!(
            "open({out:?}, 'wb').write(Image.open({src:?}).convert('RGB')\
             .resize(({ow}, {oh}), Image.BILINEAR).tobytes())\n",
            out = dir.path().join(format!("out{i}.raw")).to_str().unwrap(),
            src = src.to_str().unwrap(),
        ));
    }
    let o = Command::new(&py).args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "PIL: {}", stderr(&o));
    for (i, ((w, h), (ow, oh))) in CASES.iter().enumerate() {
        let img = image(*w, *h, i as u32 + 1);
        let want = std::fs::read(dir.path().join(format!("out{i}.raw"))).unwrap();
        let got = resize_pil(&img, *ow, *oh);
        let worst = got
            .as_raw()
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max();
        assert_eq!(got.as_raw().len(), want.len(), "case {i}");
        assert_eq!(worst, Some(0), "case {i}: {w}x{h} -> {ow}x{oh}");
    }
}

#[test]
fn pil_and_torch_differ_when_shrinking_and_agree_at_the_same_size() {
    let img = image(200, 150, 9);
    let torch = preprocess_batch_with(&[&img], 64, 96, Resize::Torch.with(Normalize::ImageNet));
    let pil = preprocess_batch_with(&[&img], 64, 96, Resize::Pil.with(Normalize::ImageNet));
    let diff = torch
        .iter()
        .zip(&pil)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff > 0.05,
        "antialiasing changes the input: max diff {diff}"
    );
    let same = image(96, 64, 3);
    assert_eq!(
        preprocess_batch_with(&[&same], 64, 96, Resize::Torch.with(Normalize::Unit)),
        preprocess_batch_with(&[&same], 64, 96, Resize::Pil.with(Normalize::Unit))
    );
}

#[test]
fn run_with_pil_resize_matches_the_reference() {
    // softmax (DETR) and sigmoid (RT-DETR) transformers exports; the examples include a 200x150
    // JPEG shrunk to 96x64, where the two resizes differ
    let dir = tempfile::tempdir().unwrap();
    for (model, decode) in [
        ("fixtures/decode/tf_detr.onnx", "softmax"),
        ("fixtures/decode/tf_rtdetr.onnx", "sigmoid"),
    ] {
        let out = dir.path().join(decode);
        let o = detrc(&[
            "run",
            model,
            "--images",
            "examples/images",
            "--threshold",
            "0",
            "--resize",
            "pil",
            "--json",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["resize"], "pil");
        let pil = read_dets(&out.join("detections.json"));
        let torch_out = dir.path().join(format!("{decode}-torch"));
        let o = detrc(&[
            "run",
            model,
            "--images",
            "examples/images",
            "--threshold",
            "0",
            "-o",
            torch_out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let torch = read_dets(&torch_out.join("detections.json"));
        assert_ne!(pil, torch, "{model}: the resize must change the scores");
        let Some(py) = ort_python() else { continue };
        let want = reference(
            &py,
            model,
            &[
                "--images",
                "examples/images",
                "--threshold",
                "0",
                "--decode",
                decode,
                "--resize",
                "pil",
            ],
            &dir.path().join(format!("{decode}-ref.json")),
        );
        compare(&pil, &want);
    }
}
