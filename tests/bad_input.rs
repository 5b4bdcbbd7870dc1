//! Bad input: clear messages, non-zero exit, never a panic, never a partial output.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use detrc::ir::DType;

fn detrc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detrc"))
        .args(args)
        .output()
        .unwrap()
}

/// `detrc compile INPUT -o OUT EXTRA...`
fn compile(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "compile",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    detrc(&args)
}

fn compile_fails(input: &Path, want: &str) {
    let dir = tmpdir();
    let out = dir.path().join("out.onnx");
    let o = compile(input, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}: {err}", input.display());
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(want), "expected '{want}' in: {err}");
    assert_eq!(
        file_names(dir.path()),
        Vec::<String>::new(),
        "left files behind"
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn missing_file() {
    compile_fails(
        Path::new("/nonexistent/model.onnx"),
        "cannot read /nonexistent/model.onnx",
    );
}

#[test]
fn empty_file() {
    let d = tmpdir();
    compile_fails(&write(d.path(), "e.onnx", b""), "is empty");
}

#[test]
fn truncated_model() {
    let d = tmpdir();
    let full = std::fs::read(fixture("detr_tiny_op17_b1.onnx")).unwrap();
    for cut in [7, 1000, full.len() / 2, full.len() - 3] {
        let p = write(d.path(), "t.onnx", &full[..cut]);
        let dir = tmpdir();
        let out = dir.path().join("o.onnx");
        let o = compile(&p, &out, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "cut {cut}: {err}");
        assert!(!err.contains("panicked"));
        assert!(!out.exists());
    }
}

#[test]
fn random_bytes() {
    let d = tmpdir();
    let mut r = detrc::reference::random::Rng::new(7);
    let junk: Vec<u8> = (0..4096).map(|_| r.next_u64() as u8).collect();
    compile_fails(&write(d.path(), "r.onnx", &junk), "");
    compile_fails(
        &write(d.path(), "t.onnx", b"this is not an onnx model\n"),
        "",
    );
}

#[test]
fn cycle_is_reported_with_a_node_name() {
    let m = M::new(17)
        .input("x", &[2])
        .output("y")
        .node("Add", &["x", "b"], &["a"], vec![])
        .node("Relu", &["a"], &["b"], vec![])
        .node("Identity", &["b"], &["y"], vec![]);
    let d = tmpdir();
    let p = write(d.path(), "c.onnx", &encode(&m.model()));
    compile_fails(&p, "cycle");
}

#[test]
fn dangling_tensor_name_is_named() {
    let m = M::new(17)
        .input("x", &[2])
        .output("y")
        .node("Add", &["x", "ghost"], &["y"], vec![]);
    let d = tmpdir();
    let p = write(d.path(), "d.onnx", &encode(&m.model()));
    compile_fails(&p, "ghost");
}

#[test]
fn initializer_with_wrong_byte_count_is_rejected() {
    let mut m = M::new(17)
        .input("x", &[2])
        .output("y")
        .node("Add", &["x", "w"], &["y"], vec![]);
    let mut t = f32_tensor("w", &[1_000_000_000, 1_000_000], &[1.0]);
    t.data_type = Some(DType::F32.0);
    m.inits.push(t);
    let d = tmpdir();
    let p = write(d.path(), "a.onnx", &encode(&m.model()));
    compile_fails(&p, "initializer 'w'");
}

#[test]
fn unknown_ops_are_kept_not_fatal() {
    let m = M::new(17)
        .input("x", &[2])
        .output("y")
        .node("FancyCustomOp", &["x"], &["y"], vec![]);
    let g = m.graph();
    let d = tmpdir();
    let p = write(d.path(), "u.onnx", &encode(&g.export()));
    let out = d.path().join("o.onnx");
    // The reference runtime cannot run it, so --verify fails cleanly; plain compile keeps it.
    let o = compile(&p, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = compile(&p, &d.path().join("v.onnx"), &["--verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!d.path().join("v.onnx").exists());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
}

#[test]
fn unknown_pass_name_lists_valid_ones_with_usage_exit_code() {
    let f = fixture("cnn_tiny_op17_b1.onnx");
    let d = tmpdir();
    let o = compile(
        &f,
        &d.path().join("o.onnx"),
        &["--passes", "fold-constants,frobnicate"],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("frobnicate") && err.contains("prune-aux-heads"),
        "{err}"
    );
}

#[test]
fn strict_refuses_a_model_that_is_not_detr() {
    let f = fixture("cnn_tiny_op17_b1.onnx");
    let d = tmpdir();
    let out = d.path().join("o.onnx");
    let o = compile(&f, &out, &["--strict"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not applicable"));
    assert!(!out.exists());
    // Without --strict the same model compiles.
    let o = compile(&f, &out, &[]);
    assert!(o.status.success());
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(detrc(&["compile"]).status.code(), Some(2));
    assert_eq!(detrc(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(detrc(&["--help"]).status.code(), Some(0));
}

#[test]
fn verification_failure_exits_3_and_writes_nothing() {
    // Folding reorders float arithmetic (differences ~1e-7): with zero tolerance that is a
    // mismatch, which must stop the write.
    let f = fixture("detr_tiny_op17_b1.onnx");
    let d = tmpdir();
    let out = d.path().join("o.onnx");
    let o = compile(&f, &out, &["--verify", "--atol", "0", "--rtol", "0"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("outputs differ"));
    assert_eq!(file_names(d.path()), Vec::<String>::new());
    let o = compile(&f, &out, &["--verify"]);
    assert!(o.status.success());
    // Verified from the files it wrote beside the output, then moved there: nothing else left.
    assert_eq!(file_names(d.path()), vec!["o.onnx".to_string()]);
    let o = compile(&f, &out, &["--verify", "--external-data", "always"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        file_names(d.path()),
        vec!["o.onnx".to_string(), "o.onnx.data".to_string()]
    );
    let o = compile(
        &f,
        &out,
        &[
            "--verify",
            "--external-data",
            "always",
            "--atol",
            "0",
            "--rtol",
            "0",
        ],
    );
    assert_eq!(o.status.code(), Some(3));
    // The earlier result stays as it was.
    assert_eq!(
        file_names(d.path()),
        vec!["o.onnx".to_string(), "o.onnx.data".to_string()]
    );
}

#[test]
fn depfile_lists_the_model() {
    let f = fixture("cnn_tiny_op17_b1.onnx");
    let d = tmpdir();
    let (out, dep) = (d.path().join("o.onnx"), d.path().join("o.d"));
    let o = compile(&f, &out, &["--depfile", dep.to_str().unwrap()]);
    assert!(o.status.success());
    let text = std::fs::read_to_string(dep).unwrap();
    assert_eq!(text, format!("{}: {}\n", out.display(), f.display()));
}
