//! Helpers of the `detrc run` tests: the binary, its failures, the independent Python
//! reference (scripts/ref_detect.py) and the detection comparison.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use detrc::run::Detection;

use super::root;

pub fn detrc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detrc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("spawn detrc")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed run: exit code 1, the expected message, and no panic.
pub fn assert_fails_with(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
}

/// $DETRC_PYTHON, else the interpreter CI prepares (.venv, from scripts/requirements-ci.txt),
/// else python3; None (with the reason printed) when it lacks onnxruntime, numpy or PIL, unless
/// DETRC_REQUIRE_ORT is set (CI), where that fails the test.
pub fn ort_python() -> Option<PathBuf> {
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

/// Runs scripts/ref_detect.py on `model` with `args` (after the model) into `out`.
pub fn reference(py: &Path, model: &str, args: &[&str], out: &Path) -> Vec<Detection> {
    let o = Command::new(py)
        .arg(root().join("scripts/ref_detect.py"))
        .arg(model)
        .args(args)
        .arg("-o")
        .arg(out)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "ref_detect.py: {}", stderr(&o));
    read_dets(out)
}

pub fn read_dets(p: &Path) -> Vec<Detection> {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Same detections, in the same order: same image and category, scores within 2e-3, boxes
/// within 1 px.
pub fn compare(ours: &[Detection], reference: &[Detection]) {
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

/// A COCO RLE `counts` string back to run lengths (the inverse of COCO's `rleToString`),
/// written here from the format's description, apart from detrc's encoder.
pub fn rle_decode_counts(s: &str) -> Vec<i64> {
    let bytes = s.as_bytes();
    let (mut counts, mut p) = (Vec::<i64>::new(), 0);
    while p < bytes.len() {
        let (mut x, mut k) = (0i64, 0);
        loop {
            let c = bytes[p] as i64 - 48;
            x |= (c & 0x1f) << (5 * k);
            p += 1;
            k += 1;
            if c & 0x20 == 0 {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
        }
        if counts.len() > 2 {
            x += counts[counts.len() - 2];
        }
        counts.push(x);
    }
    counts
}

/// The mask of a detection's `segmentation`, row-major `height x width`, checking the size is
/// `[height, width]` and the runs add up.
pub fn mask_of(d: &Detection, width: u32, height: u32) -> Vec<bool> {
    let seg = d.segmentation.as_ref().expect("a segmentation");
    assert_eq!(seg.size, [height, width], "{}", d.image);
    let counts = rle_decode_counts(&seg.counts);
    let (w, h) = (width as usize, height as usize);
    assert_eq!(counts.iter().sum::<i64>(), (w * h) as i64, "{}", d.image);
    let mut out = vec![false; w * h];
    let (mut i, mut on) = (0usize, false);
    for c in counts {
        for j in i..i + c as usize {
            // column-major position j -> row j % h, column j / h
            out[(j % h) * w + j / h] = on;
        }
        i += c as usize;
        on = !on;
    }
    out
}

/// Intersection over union of two masks (1 when both are empty).
pub fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}
