//! The compile pipeline end to end: load -> IR -> passes -> export, plus verification.

use std::path::Path;

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::load::proto::ModelProto;
use crate::pass::{Event, Pipeline, Report};
use crate::reference::compare::{compare, OutputDiff, Tolerance};
use crate::reference::{
    input_specs, output_names, InputSpec, Model as ModelRef, Purpose, Reference, Runtime,
    RuntimeChoice,
};

/// Loads a model file into the IR (external data resolved, structure validated).
pub fn load_graph(path: &Path) -> Result<(Graph, bool)> {
    let loaded = crate::load::load(path)?;
    let had_external = loaded.had_external_data;
    let g = crate::ir::from_onnx::import(loaded.proto)?;
    g.validate().map_err(|reason| Error::Validation {
        stage: "loading".into(),
        reason,
    })?;
    Ok((g, had_external))
}

pub struct Compiled {
    pub model: ModelProto,
    pub reports: Vec<Report>,
    pub ops_before: std::collections::BTreeMap<String, usize>,
    pub ops_after: std::collections::BTreeMap<String, usize>,
    pub had_external_data: bool,
}

pub fn compile(path: &Path, pipeline: &Pipeline, on: &mut dyn FnMut(Event)) -> Result<Compiled> {
    let (mut g, had_external_data) = load_graph(path)?;
    let ops_before = g.op_histogram();
    let reports = pipeline.run(&mut g, on)?;
    g.fix_output_names();
    g.validate().map_err(|reason| Error::Validation {
        stage: "the pipeline".into(),
        reason,
    })?;
    let ops_after = g.op_histogram();
    Ok(Compiled {
        model: g.export(),
        reports,
        ops_before,
        ops_after,
        had_external_data,
    })
}

/// Metadata key `detrc compile` sets on the models it writes; the value is detrc's version.
/// `detrc build` reads it to decide whether a model still needs compiling.
pub const COMPILED_KEY: &str = "detrc.compiled";

/// Marks `model` as compiled by this version of detrc (replacing an older mark).
pub fn mark_compiled(model: &mut ModelProto) {
    use crate::load::proto::StringStringEntryProto;
    model
        .metadata_props
        .retain(|e| e.key.as_deref() != Some(COMPILED_KEY));
    model.metadata_props.push(StringStringEntryProto {
        key: Some(COMPILED_KEY.into()),
        value: Some(env!("CARGO_PKG_VERSION").into()),
    });
}

/// The detrc version that compiled `model`, if any did.
pub fn compiled_by(model: &ModelProto) -> Option<String> {
    model
        .metadata_props
        .iter()
        .find(|e| e.key.as_deref() == Some(COMPILED_KEY))
        .map(|e| e.value.clone().unwrap_or_default())
}

/// Result of running two models on the same seeded inputs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub seed: u64,
    pub outputs: Vec<OutputDiff>,
    /// The runtime that ran both models and its version, e.g. "onnxruntime 1.31.1 (...)".
    pub runtime: String,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.outputs.iter().all(|o| o.ok)
    }
}

/// Runs `original` and `candidate` (encoded ONNX) on the same seeded random inputs, with the
/// default runtime choice (onnxruntime when installed, else tract).
pub fn verify(
    original: &Path,
    candidate: &[u8],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    let (runtime, _) = RuntimeChoice::default().resolve()?;
    verify_with(original, Candidate::Bytes(candidate), seeds, tol, &runtime)
}

/// The model to check against the original.
#[derive(Clone, Copy)]
pub enum Candidate<'a> {
    /// Encoded ONNX.
    Bytes(&'a [u8]),
    /// A model in memory (what `compile` returned): onnxruntime uses its weights where they
    /// are, nothing is encoded or copied.
    Model(&'a ModelProto),
}

/// [`verify`] with a chosen runtime: [`run_original`] then [`check_candidate`].
pub fn verify_with(
    original: &Path,
    candidate: Candidate<'_>,
    seeds: &[u64],
    tol: Tolerance,
    runtime: &Runtime,
) -> Result<Verification> {
    let expected = run_original(original, seeds, runtime)?;
    check_candidate(&expected, candidate, tol, runtime)
}

/// The original's outputs on seeded inputs: the first half of a verification. Holding this
/// instead of the model lets a caller run the original before compiling, so the two models are
/// never in memory together.
pub struct Expected {
    pub seeds: Vec<u64>,
    pub specs: Vec<InputSpec>,
    /// One input set per seed, generated once for both models.
    pub inputs: Vec<Vec<ndarray::ArrayD<f32>>>,
    pub outputs: Vec<Vec<(String, ndarray::ArrayD<f32>)>>,
}

/// Loads `original` once, runs it on every seed and drops it.
pub fn run_original(original: &Path, seeds: &[u64], runtime: &Runtime) -> Result<Expected> {
    if seeds.is_empty() {
        return Err(Error::Verification("no seed given".into()));
    }
    // onnxruntime reads the weights in place from the file's memory map; tract from the file.
    let loaded = crate::load::load(original)?.proto;
    let specs = input_specs(&loaded)?;
    let names = output_names(&loaded);
    let inputs: Vec<Vec<ndarray::ArrayD<f32>>> = seeds
        .iter()
        .map(|&s| crate::reference::random::inputs(&specs, s))
        .collect();
    let model = match runtime {
        Runtime::OnnxRuntime(_) => ModelRef::Proto(&loaded),
        Runtime::Tract => ModelRef::Path(original),
    };
    let a = Reference::load(
        model,
        runtime,
        Purpose::Verify,
        Some((specs.clone(), names)),
    )?;
    let outputs = inputs
        .iter()
        .map(|i| a.run(i))
        .collect::<Result<Vec<_>>>()?;
    Ok(Expected {
        seeds: seeds.to_vec(),
        specs,
        inputs,
        outputs,
    })
}

/// Runs `candidate` on the inputs of `expected` and compares: the worst seed's result (the
/// first failing one, else the last).
pub fn check_candidate(
    expected: &Expected,
    candidate: Candidate<'_>,
    tol: Tolerance,
    runtime: &Runtime,
) -> Result<Verification> {
    let r = match candidate {
        Candidate::Bytes(b) => Reference::load(ModelRef::Bytes(b), runtime, Purpose::Verify, None)?,
        Candidate::Model(m) => {
            let specs = (input_specs(m)?, output_names(m));
            check_same_inputs(&expected.specs, &specs.0)?;
            Reference::load(ModelRef::Proto(m), runtime, Purpose::Verify, Some(specs))?
        }
    };
    check_same_inputs(&expected.specs, &r.inputs)?;
    let mut last = None;
    for ((&seed, inputs), want) in expected
        .seeds
        .iter()
        .zip(&expected.inputs)
        .zip(&expected.outputs)
    {
        let got = r.run(inputs)?;
        let v = Verification {
            seed,
            outputs: compare(want, &got, tol),
            runtime: runtime.describe_for(Purpose::Verify),
        };
        if !v.ok() {
            return Ok(v);
        }
        last = Some(v);
    }
    last.ok_or_else(|| Error::Verification("no seed given".into()))
}

fn check_same_inputs(a: &[InputSpec], b: &[InputSpec]) -> Result<()> {
    let same = a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.dtype == y.dtype && x.shape == y.shape);
    if same {
        return Ok(());
    }
    let show = |v: &[InputSpec]| {
        v.iter()
            .map(|s| format!("{} {}{:?}", s.name, s.dtype, s.shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(Error::Verification(format!(
        "the compiled model's inputs ({}) differ from the original's ({})",
        show(b),
        show(a)
    )))
}
