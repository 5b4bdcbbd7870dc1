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
    import_validated(loaded.proto, loaded.had_external_data)
}

/// Loads encoded ONNX held in memory. `label` names it in error messages (there is no path);
/// external data, if the model refers to any, is read relative to `base_dir`.
pub fn load_graph_bytes(
    bytes: bytes::Bytes,
    label: &str,
    base_dir: &Path,
) -> Result<(Graph, bool)> {
    let mut proto = crate::load::decode(Path::new(label), bytes)?;
    let had_external = crate::load::external::resolve(&mut proto, base_dir)?;
    import_validated(proto, had_external)
}

fn import_validated(proto: ModelProto, had_external: bool) -> Result<(Graph, bool)> {
    let g = crate::ir::from_onnx::import(proto)?;
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
    let (g, had_external_data) = load_graph(path)?;
    compile_graph(g, had_external_data, pipeline, on)
}

/// Runs `pipeline` on a loaded graph (see [`load_graph`], [`load_graph_bytes`]) and exports it.
pub fn compile_graph(
    mut g: Graph,
    had_external_data: bool,
    pipeline: &Pipeline,
    on: &mut dyn FnMut(Event),
) -> Result<Compiled> {
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

    /// What `detrc compile --verify` says on a mismatch: the seed, the tolerance, and one line
    /// per output with its largest difference.
    pub fn failure_message(&self, tol: Tolerance) -> String {
        let lines: Vec<String> = self
            .outputs
            .iter()
            .map(|o| {
                format!(
                    "{}: max |diff| {:.3e}{}{}",
                    o.name,
                    o.max_abs,
                    if o.ok { "" } else { " FAIL" },
                    o.note
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        format!(
            "outputs differ from the original (seed {}, atol {}, rtol {}); nothing written:\n  {}",
            self.seed,
            tol.atol,
            tol.rtol,
            lines.join("\n  ")
        )
    }
}

/// What `detrc inspect` shows of a model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub opset: i64,
    pub nodes: usize,
    pub inputs: Vec<IoSummary>,
    pub outputs: Vec<IoSummary>,
    /// Operator histogram: op type -> count.
    pub ops: std::collections::BTreeMap<String, usize>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct IoSummary {
    pub name: String,
    /// e.g. `f32[1,3,800,800]`; `?` when the model does not say.
    #[serde(rename = "type")]
    pub ty: String,
}

pub fn summary(g: &Graph) -> Summary {
    let inputs = g
        .graph_inputs()
        .into_iter()
        .map(|n| {
            let v = &g.node(n).outputs[0];
            IoSummary {
                name: v.name.clone(),
                ty: v.ty.as_ref().map_or("?".into(), |t| t.to_string()),
            }
        })
        .collect();
    let outputs = g
        .outputs
        .iter()
        .map(|o| IoSummary {
            name: o.name.clone(),
            ty: o
                .info
                .r#type
                .as_ref()
                .and_then(crate::ir::TensorType::from_proto)
                .map_or("?".into(), |t| t.to_string()),
        })
        .collect();
    Summary {
        opset: g.opset(),
        nodes: g.num_ops(),
        inputs,
        outputs,
        ops: g.op_histogram(),
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
    verify_with(&a, &b, seeds, tol)
}

/// [`verify`] for an original held in memory (encoded ONNX, external data inlined).
pub fn verify_bytes(
    original: &[u8],
    candidate: &[u8],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    let a = Reference::from_bytes(original)?;
    let b = Reference::from_bytes(candidate)?;
    verify_with(&a, &b, seeds, tol)
}

fn verify_with(
    a: &Reference,
    b: &Reference,
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
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
