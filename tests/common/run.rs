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
