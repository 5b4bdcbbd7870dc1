//! `detrc bench` reports; timings themselves are not asserted (no timed tests).

use std::process::Command;

#[test]
fn bench_with_compare_reports_both_and_a_ratio() {
    let o = Command::new(env!("CARGO_BIN_EXE_detrc"))
        .args([
            "bench",
            "fixtures/detr_tiny_op17_b2.onnx",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--compare",
            "fixtures/detr_tiny_op17_b1.onnx",
            "--json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = j["results"].as_array().unwrap();
    // (model, original) on the runtime that ran, then on tract too when that was onnxruntime.
    let rt = r[0]["runtime"].as_str().unwrap();
    let pairs = if rt.starts_with("onnxruntime") { 2 } else { 1 };
    if std::env::var_os("DETRC_REQUIRE_ONNXRUNTIME").is_some() {
        assert!(rt.starts_with("onnxruntime"), "{rt}");
    }
    assert_eq!(r.len(), 2 * pairs);
    for p in r.chunks(2) {
        assert_eq!(p[0]["batch"], 2);
        assert_eq!(p[1]["batch"], 1);
        assert_eq!(p[0]["runtime"], p[1]["runtime"]);
    }
    assert!(r.last().unwrap()["runtime"]
        .as_str()
        .unwrap()
        .starts_with("tract"));
    assert_eq!(j["speedups"].as_array().unwrap().len(), pairs);
    for x in r {
        assert_eq!(x["backend"], "cpu");
        assert_eq!(x["iters"], 2);
        assert!(x["median_ms"].as_f64().unwrap() > 0.0);
        assert!(x["p90_ms"].as_f64().unwrap() >= x["median_ms"].as_f64().unwrap());
    }
    assert!(j["speedup_median"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_rejects_a_batch_the_model_does_not_have() {
    let o = Command::new(env!("CARGO_BIN_EXE_detrc"))
        .args([
            "bench",
            "fixtures/detr_tiny_op17_b1.onnx",
            "--batch",
            "4",
            "--iters",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("static batch of 1"), "{err}");
}
