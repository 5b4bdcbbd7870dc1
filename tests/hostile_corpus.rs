//! Every file of the hostile-input corpus (`tests/corpus/bad/`, made by
//! `scripts/make_bad_corpus.py`) through the `detrc` binary: the documented exit code, a clear
//! message naming the problem, never a panic or a hang, and nothing left in the output folder.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{file_names, root, tmpdir};

/// Every model of the corpus: file name, exit code of `compile`, and a phrase its stderr must
/// contain (the message a user would search for). Files that compile are models whose
/// corruption only changed numbers, or whose hostile values sit in nodes detrc can leave alone
/// (see tests/corpus/bad/README.md); they must still produce a complete output and nothing else.
const EXPECTED: &[(&str, i32, &str)] = &[
    (
        "absurd_initializer_dims.onnx",
        1,
        "initializer 'fc.bias' has absurd dimensions",
    ),
    (
        "absurd_input_dim.onnx",
        1,
        "graph input 'images' has absurd dimensions",
    ),
    (
        "absurd_value_info.onnx",
        1,
        "value_info '/pool2/GlobalAveragePool_output_0' has absurd dimensions",
    ),
    ("bitflip_seed1.onnx", 0, "compiled"),
    (
        "bitflip_seed2.onnx",
        1,
        "reads tensor 'conv2.bias', which no node, initializer or graph input defines",
    ),
    ("bitflip_seed3.onnx", 1, "not a valid ONNX protobuf"),
    ("bitflip_seed4.onnx", 1, "not a valid ONNX protobuf"),
    ("concat_rank_mismatch.onnx", 0, "compiled"),
    (
        "concat_no_inputs.onnx",
        1,
        "Concat producing 'c' lacks its input #0: Concat takes at least 1",
    ),
    ("constant_empty_absurd.onnx", 0, "compiled"),
    ("conv_huge_dilation.onnx", 0, "compiled"),
    ("conv_short_strides.onnx", 0, "compiled"),
    ("cycle.onnx", 1, "the graph has a cycle through"),
    (
        "dangling_output.onnx",
        1,
        "graph output 'nobody_makes_this' is not produced",
    ),
    (
        "duplicate_initializer.onnx",
        1,
        "tensor 'fc.bias' is defined twice",
    ),
    (
        "duplicate_node_output.onnx",
        1,
        "tensor '/relu1/Relu_output_0' is defined twice",
    ),
    ("empty.onnx", 1, "is empty (0 bytes)"),
    ("empty_conv_weight.onnx", 0, "compiled"),
    (
        "external_absolute.onnx",
        1,
        "location '/etc/passwd' is absolute",
    ),
    (
        "external_parent_dir.onnx",
        1,
        "location '../../x' escapes the model's folder",
    ),
    (
        "external_past_end.onnx",
        1,
        "offset 32 + length 640 is past the end of 'external_past_end.onnx.data' (64 bytes)",
    ),
    // Found by `cargo fuzz` (fuzz/README.md): a Size node with no input reached fold-constants,
    // which read its first input. Among other damage its Add has one input; arity is now checked
    // on load, so the first short node is named.
    (
        "fuzz_size_no_input.onnx",
        1,
        "Add 'add' lacks its input #1: Add takes at least 2",
    ),
    // Found by `cargo fuzz` after the arity check above: a Conv with no outputs reached
    // fold-batchnorm, which read its output #0.
    (
        "fuzz_conv_no_output.onnx",
        1,
        "Conv '/conv2/Conv' has no output; Conv requires one",
    ),
    ("gather_scalar.onnx", 0, "compiled"),
    ("if_subgraph.onnx", 1, "has a subgraph (control flow)"),
    ("int_overflow_fold.onnx", 0, "compiled"),
    (
        "missing_initializer.onnx",
        1,
        "reads tensor 'conv2.weight', which no node, initializer or graph input defines",
    ),
    (
        "negative_initializer_dims.onnx",
        1,
        "initializer 'fc.weight' has a negative dimension -10",
    ),
    (
        "negative_input_dim.onnx",
        1,
        "graph input 'images' has a negative dimension -3",
    ),
    ("matmul_scalar_fusion.onnx", 0, "compiled"),
    ("no_graph.onnx", 1, "has no graph"),
    ("no_op_type.onnx", 1, "has no op_type"),
    ("no_opset.onnx", 1, "has no opset_import"),
    (
        "overwrite_seed5.onnx",
        1,
        "reads tensor 'bn2.running_var', which no node",
    ),
    ("overwrite_seed6.onnx", 1, "not a valid ONNX protobuf"),
    ("random_4k.onnx", 1, "not a valid ONNX protobuf"),
    ("range_overflow.onnx", 0, "compiled"),
    (
        "raw_data_length_mismatch.onnx",
        1,
        "initializer 'conv1.bias' holds 30 bytes, but f32[8] needs 32",
    ),
    ("resize_empty_axis.onnx", 0, "compiled"),
    ("slice_huge_input.onnx", 0, "compiled"),
    ("text.onnx", 1, "not a valid ONNX protobuf"),
    ("truncated_100.onnx", 1, "not a valid ONNX protobuf"),
    ("truncated_4242.onnx", 1, "not a valid ONNX protobuf"),
    ("truncated_7.onnx", 1, "not a valid ONNX protobuf"),
    ("truncated_8482.onnx", 1, "not a valid ONNX protobuf"),
];

/// A hostile model must not hang the compiler either; a debug build compiles the tiny fixture
/// in well under a second.
const TIMEOUT: Duration = Duration::from_secs(60);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `detrc ARGS` with a deadline; stdout and stderr go to files so a chatty child cannot
/// block on a full pipe while we wait.
fn detrc(args: &[&Path], scratch: &Path) -> Run {
    let out_path = scratch.join("stdout");
    let err_path = scratch.join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_detrc"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("detrc starts");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("detrc {args:?} still running after {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
    Run {
        code: status.code(),
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

fn corpus_dir() -> PathBuf {
    root().join("tests/corpus/bad")
}

/// The models of the corpus (side files such as `*.onnx.data` and the README are not models).
fn corpus_models() -> Vec<String> {
    let mut v: Vec<String> = file_names(&corpus_dir())
        .into_iter()
        .filter(|n| n.ends_with(".onnx"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_corpus_file_is_documented_here() {
    let files = corpus_models();
    assert!(files.len() >= 25, "corpus missing? {files:?}");
    let listed: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
    for f in &files {
        assert!(
            listed.contains(&f.as_str()),
            "{f} is in tests/corpus/bad but not in EXPECTED"
        );
    }
    for l in &listed {
        assert!(
            files.iter().any(|f| f == l),
            "{l} is in EXPECTED but not in tests/corpus/bad"
        );
    }
    for f in &files {
        let size = std::fs::metadata(corpus_dir().join(f)).unwrap().len();
        assert!(
            size < 100_000,
            "{f} is {size} bytes; corpus files stay small"
        );
    }
}

#[test]
fn compile_refuses_each_with_a_clear_message() {
    let mut failures = Vec::new();
    for &(name, want_code, want_msg) in EXPECTED {
        let input = corpus_dir().join(name);
        let scratch = tmpdir();
        let outdir = tmpdir();
        let output = outdir.path().join("out.onnx");
        let r = detrc(
            &[Path::new("compile"), &input, Path::new("-o"), &output],
            scratch.path(),
        );
        let left = file_names(outdir.path());
        let mut problems = Vec::new();
        if r.code != Some(want_code) {
            problems.push(format!("exit code {:?}, expected {want_code}", r.code));
        }
        if r.stderr.contains("panicked") || r.stderr.contains("RUST_BACKTRACE") {
            problems.push("panicked".into());
        }
        if r.stderr.trim().is_empty() {
            problems.push("nothing on stderr".into());
        }
        if !r.stderr.contains(want_msg) {
            problems.push(format!("stderr lacks '{want_msg}'"));
        }
        if want_code == 0 {
            // A compiled model is written whole, with no temporary file beside it.
            if left != ["out.onnx"] {
                problems.push(format!("output folder holds {left:?}, expected [out.onnx]"));
            }
        } else {
            if !r.stderr.contains("detrc: error:") {
                problems.push("no 'detrc: error:' line".into());
            }
            if !left.is_empty() {
                problems.push(format!("left files behind: {left:?}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{name}: {}\n  stderr: {}",
                problems.join("; "),
                r.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn inspect_never_panics() {
    let mut failures = Vec::new();
    for &(name, _, _) in EXPECTED {
        let input = corpus_dir().join(name);
        let scratch = tmpdir();
        let r = detrc(&[Path::new("inspect"), &input], scratch.path());
        let ok = match r.code {
            Some(0) => r.stdout.contains("nodes:"),
            Some(1) => r.stderr.contains("detrc: error: cannot inspect"),
            _ => false,
        };
        if !ok || r.stderr.contains("panicked") {
            failures.push(format!(
                "{name}: exit {:?}\n  stdout: {}\n  stderr: {}",
                r.code,
                r.stdout.trim(),
                r.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
