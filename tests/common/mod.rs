//! Shared test helpers: a small builder for hand-made ONNX graphs, fixture discovery, and
//! numerical equivalence through the reference runtime.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use detrc::ir::{DType, Graph, TensorType};
use detrc::load::proto::*;
use detrc::pass::{Context, Outcome, Pass};
use detrc::reference::compare::{compare, Tolerance};
use detrc::reference::Reference;
use detrc::tensor::attrs;

pub mod run;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every committed ONNX fixture.
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures"))
        .expect("fixtures folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    v
}

pub fn detr_fixtures() -> Vec<PathBuf> {
    fixtures()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("detr_")
        })
        .collect()
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures").join(name)
}

/// A hand-built model.
pub struct M {
    pub opset: i64,
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    pub inputs: Vec<ValueInfoProto>,
    pub outputs: Vec<ValueInfoProto>,
}

pub fn vi(name: &str, dtype: DType, dims: Option<&[i64]>) -> ValueInfoProto {
    let ty = TensorType {
        dtype,
        shape: dims.map(|d| d.iter().map(|&x| detrc::ir::Dim::Fixed(x)).collect()),
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(ty.to_proto()),
        doc_string: None,
        metadata_props: vec![],
    }
}

pub fn f32_tensor(name: &str, dims: &[i64], vals: &[f32]) -> TensorProto {
    le_tensor(
        name,
        dims,
        DType::F32,
        vals.iter().flat_map(|v| v.to_le_bytes()),
    )
}

pub fn i64_tensor(name: &str, dims: &[i64], vals: &[i64]) -> TensorProto {
    le_tensor(
        name,
        dims,
        DType::I64,
        vals.iter().flat_map(|v| v.to_le_bytes()),
    )
}

fn le_tensor(name: &str, dims: &[i64], dt: DType, bytes: impl Iterator<Item = u8>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(dt.0),
        name: Some(name.into()),
        raw_data: Some(Bytes::from(bytes.collect::<Vec<u8>>())),
        ..Default::default()
    }
}

/// Deterministic, non-trivial values (so no constant is accidentally 0 or 1).
pub fn vals(n: usize, seed: u64) -> Vec<f32> {
    let mut r = detrc::reference::random::Rng::new(seed);
    (0..n).map(|_| (r.normal() * 0.5 + 0.1) as f32).collect()
}

pub fn int_attr(name: &str, v: i64) -> AttributeProto {
    attrs::make_int(name, v)
}

/// A string attribute (GridSample's mode, Einsum's equation): `attrs::make_string`.
pub fn str_attr(name: &str, v: &str) -> AttributeProto {
    attrs::make_string(name, v)
}

pub fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    attrs::make_ints(name, v.to_vec())
}

impl M {
    pub fn new(opset: i64) -> Self {
        M {
            opset,
            nodes: vec![],
            inits: vec![],
            inputs: vec![],
            outputs: vec![],
        }
    }
    pub fn input(mut self, name: &str, dims: &[i64]) -> Self {
        self.inputs.push(vi(name, DType::F32, Some(dims)));
        self
    }
    /// An f32 input with named (symbolic) dimensions where `dims` are not numbers.
    pub fn input_dims(mut self, name: &str, dims: &[&str]) -> Self {
        let ty = TensorType {
            dtype: DType::F32,
            shape: Some(
                dims.iter()
                    .map(|d| match d.parse() {
                        Ok(v) => detrc::ir::Dim::Fixed(v),
                        Err(_) => detrc::ir::Dim::Param(d.to_string()),
                    })
                    .collect(),
            ),
        };
        let mut v = vi(name, DType::F32, None);
        v.r#type = Some(ty.to_proto());
        self.inputs.push(v);
        self
    }
    pub fn output(mut self, name: &str) -> Self {
        self.outputs.push(vi(name, DType::F32, None));
        self
    }
    /// An output of another type than float (onnxruntime refuses a model whose declared
    /// output type contradicts the node's).
    pub fn output_of(mut self, name: &str, dtype: DType) -> Self {
        self.outputs.push(vi(name, dtype, None));
        self
    }
    pub fn f32(mut self, name: &str, dims: &[i64], v: &[f32]) -> Self {
        self.inits.push(f32_tensor(name, dims, v));
        self
    }
    pub fn rand(self, name: &str, dims: &[i64], seed: u64) -> Self {
        let n = dims.iter().product::<i64>() as usize;
        let v = vals(n, seed);
        self.f32(name, dims, &v)
    }
    pub fn i64(mut self, name: &str, dims: &[i64], v: &[i64]) -> Self {
        self.inits.push(i64_tensor(name, dims, v));
        self
    }
    pub fn bool(mut self, name: &str, dims: &[i64], v: &[bool]) -> Self {
        self.inits.push(le_tensor(
            name,
            dims,
            DType::BOOL,
            v.iter().map(|&b| b as u8),
        ));
        self
    }
    pub fn node(
        mut self,
        op: &str,
        ins: &[&str],
        outs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Self {
        let k = self.nodes.len();
        self.nodes.push(NodeProto {
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: outs.iter().map(|s| s.to_string()).collect(),
            name: Some(format!("{op}_{k}")),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
        self
    }
    pub fn model(&self) -> ModelProto {
        ModelProto {
            ir_version: Some(8),
            producer_name: Some("detrc-tests".into()),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(GraphProto {
                name: Some("test".into()),
                node: self.nodes.clone(),
                initializer: self.inits.clone(),
                input: self.inputs.clone(),
                output: self.outputs.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
    pub fn graph(&self) -> Graph {
        detrc::ir::from_onnx::import(self.model()).expect("builds")
    }
}

pub fn encode(m: &ModelProto) -> Vec<u8> {
    let mut v = Vec::new();
    detrc::emit::write_model(m, &mut v).expect("encodes");
    v
}

/// Runs one pass the way the manager does (validated, output names fixed) and returns what
/// it reported.
pub fn apply(g: &mut Graph, p: &dyn Pass) -> Outcome {
    let o = p.run(g, &Context::default()).expect("pass runs");
    g.fix_output_names();
    g.validate().expect("valid after pass");
    o
}

/// onnxruntime for the cross-checks: $DETRC_ONNXRUNTIME, else <repo>/.ort
/// (scripts/install_onnxruntime.sh). `None` when it is absent, which is a failure when
/// DETRC_REQUIRE_ONNXRUNTIME is set (scripts/test.sh sets it).
pub fn ort_runtime() -> Option<detrc::reference::Runtime> {
    let lib = std::env::var_os("DETRC_ONNXRUNTIME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".ort/libonnxruntime.so.1.31.1"));
    if !lib.exists() {
        assert!(
            std::env::var_os("DETRC_REQUIRE_ONNXRUNTIME").is_none(),
            "DETRC_REQUIRE_ONNXRUNTIME is set but {} is missing",
            lib.display()
        );
        return None;
    }
    let lib = detrc::reference::onnxruntime::check_file(&lib).expect("onnxruntime is usable");
    Some(detrc::reference::Runtime::OnnxRuntime(lib))
}

/// Asserts two encoded models compute the same outputs on seeded random inputs, with tract and,
/// when it is installed, onnxruntime.
pub fn assert_same_outputs(a: &[u8], b: &[u8], tol: f32) {
    let ra = Reference::from_bytes(a).expect("original runs");
    let rb = Reference::from_bytes(b).expect("rewritten runs");
    assert_same_with(&ra, &rb, tol);
    if let Some(rt) = ort_runtime() {
        use detrc::reference::{Model, Purpose};
        let load = |m: &[u8]| Reference::load(Model::Bytes(m), &rt, Purpose::Verify, None);
        let oa = load(a).expect("original runs in onnxruntime");
        let ob = load(b).expect("rewritten runs in onnxruntime");
        assert_same_with(&oa, &ob, tol);
    }
}

fn assert_same_with(ra: &Reference, rb: &Reference, tol: f32) {
    for seed in [0u64, 1] {
        let inputs = ra.random_inputs(seed);
        let oa = ra.run(&inputs).expect("runs");
        let ob = rb.run(&inputs).expect("runs");
        for d in compare(
            &oa,
            &ob,
            Tolerance {
                atol: tol,
                rtol: tol,
            },
        ) {
            assert!(
                d.ok,
                "output {} differs: max |diff| {} {:?}",
                d.name, d.max_abs, d.note
            );
        }
    }
}

pub fn assert_same_outputs_graph(before: &Graph, after: &Graph) {
    assert_same_outputs(&encode(&before.export()), &encode(&after.export()), 1e-5);
}

pub fn python() -> Option<PathBuf> {
    let venv = root().join(".venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    None
}

/// The venv's Python for the onnxruntime cross-checks, or `None` with a SKIP line; with
/// `DETRC_REQUIRE_ORT` set (the test command sets it) a missing venv fails the test instead.
pub fn python_or_skip() -> Option<PathBuf> {
    let py = python();
    if py.is_none() {
        assert!(
            std::env::var_os("DETRC_REQUIRE_ORT").is_none(),
            "DETRC_REQUIRE_ORT is set but .venv is missing"
        );
        eprintln!("SKIP: no .venv with onnxruntime (scripts/setup_python.sh makes it)");
    }
    py
}

/// Asserts that onnxruntime (from Python, `scripts/ort_compare.py`, within 1e-4) computes the
/// same outputs from `original` and `compiled`; `label` names the case in the failure.
pub fn assert_ort_agrees(py: &Path, original: &Path, compiled: &Path, label: &str) {
    let o = std::process::Command::new(py)
        .arg(root().join("scripts/ort_compare.py"))
        .arg(original)
        .arg(compiled)
        .args(["--atol", "1e-4", "--rtol", "1e-4"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{label}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

pub fn op_count(g: &Graph, op: &str) -> usize {
    *g.op_histogram().get(op).unwrap_or(&0)
}

pub fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
