//! The compile pipeline end to end: load -> IR -> passes -> export, plus verification.

use std::path::Path;

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::load::proto::ModelProto;
use crate::pass::{Event, Pipeline, Report};
use crate::reference::compare::{compare, OutputDiff, Tolerance};
use crate::reference::Reference;

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
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.outputs.iter().all(|o| o.ok)
    }
}

/// Runs `original` and `candidate` (encoded ONNX) on the same seeded random inputs.
pub fn verify(
    original: &Path,
    candidate: &[u8],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    let a = Reference::from_path(original)?;
    let b = Reference::from_bytes(candidate)?;
    let mut worst: Option<Verification> = None;
    for &seed in seeds {
        let inputs = a.random_inputs(seed);
        let ra = a.run(&inputs)?;
        let rb = b.run(&inputs)?;
        let v = Verification {
            seed,
            outputs: compare(&ra, &rb, tol),
        };
        if !v.ok() {
            return Ok(v);
        }
        worst = Some(v);
    }
    worst.ok_or_else(|| Error::Verification("no seed given".into()))
}
