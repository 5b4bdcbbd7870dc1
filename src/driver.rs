//! The compile pipeline end to end: load -> IR -> passes -> export, plus verification.

use std::path::Path;

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::load::proto::ModelProto;
use crate::pass::{Event, Pipeline, Report};
use crate::reference::compare::{compare, OutputDiff, Tolerance};
use crate::reference::{
    output_names, InputSpec, Model as ModelRef, Purpose, Reference, Runtime, RuntimeChoice,
};
use crate::shapes::{Batch, ShapeOptions};

/// Loads a model file into the IR (external data resolved, structure validated).
pub fn load_graph(path: &Path) -> Result<(Graph, bool)> {
    let loaded = crate::load::load(path)?;
    let g = import_validated(loaded.proto, loaded.had_external_data);
    // Decoding touched every tensor's header, and the kernel mapped the pages around each
    // touch: most of the file counted as this process's memory while nothing reads it.
    crate::load::release_mapped_pages();
    g
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
    /// Set when `--batch` changed the batch: how, for verification at several batch sizes.
    pub batch: Option<BatchChange>,
    pub reports: Vec<Report>,
    pub ops_before: std::collections::BTreeMap<String, usize>,
    pub ops_after: std::collections::BTreeMap<String, usize>,
    pub had_external_data: bool,
}

/// How the batch of a compiled model relates to the original's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchChange {
    /// The batch the original runs at (declared, or found: the batch it was traced at).
    pub traced: i64,
    /// The result's batch: `None` for a symbolic one.
    pub result: Option<i64>,
    /// Every input's shape at the traced batch (the original runs with these).
    pub input_shapes: Vec<(String, Vec<usize>)>,
}

pub fn compile(path: &Path, pipeline: &Pipeline, on: &mut dyn FnMut(Event)) -> Result<Compiled> {
    compile_with(path, pipeline, &ShapeOptions::default(), on)
}

/// `compile` with input shapes and a batch chosen by the caller (`--input-shape`, `--batch`).
///
/// For a symbolic batch the model is first compiled at the batch it was traced at, so every
/// static fold applies (the mask, the position embedding, shape arithmetic), and the result is
/// then generalised by `generalize-batch`.
pub fn compile_with(
    path: &Path,
    pipeline: &Pipeline,
    shapes: &ShapeOptions,
    on: &mut dyn FnMut(Event),
) -> Result<Compiled> {
    let (g, had_external_data) = load_graph(path)?;
    compile_graph_with(g, had_external_data, pipeline, shapes, on)
}

/// Runs `pipeline` on a loaded graph (see [`load_graph`], [`load_graph_bytes`]) and exports it.
pub fn compile_graph(
    g: Graph,
    had_external_data: bool,
    pipeline: &Pipeline,
    on: &mut dyn FnMut(Event),
) -> Result<Compiled> {
    compile_graph_with(g, had_external_data, pipeline, &ShapeOptions::default(), on)
}

/// [`compile_graph`] with input shapes and a batch chosen by the caller.
///
/// A model whose batch is symbolic and whose other input dimensions are static is compiled
/// the `--batch dynamic` way by default (at the batch it was traced at, then generalised):
/// the Shape arithmetic around a symbolic batch does not fold otherwise, and the result keeps
/// the model's symbolic batch either way. Where that route fails (no batch it runs at, a batch
/// dependence `generalize-batch` has no rule for), the plain pipeline runs on the model as
/// declared, and a report says why. `shapes.plain` turns the route off.
pub fn compile_graph_with(
    mut g: Graph,
    had_external_data: bool,
    pipeline: &Pipeline,
    shapes: &ShapeOptions,
    on: &mut dyn FnMut(Event),
) -> Result<Compiled> {
    let ops_before = g.op_histogram();
    crate::shapes::apply_input_shapes(&mut g, &shapes.input_shapes)?;
    let mut batch = None;
    let mut reports = Vec::new();
    if shapes.batch == Batch::Keep {
        let mut routed = None;
        if !shapes.plain && shapes.input_shapes.is_empty() && symbolic_batch_only(&g) {
            let t0 = std::time::Instant::now();
            let name = crate::shapes::batch_param(&g);
            // Unasked, the route never runs the model: no size of SHAPE_PROBE that fits means
            // the model as declared.
            match compile_at_batch(g.clone(), pipeline, Batch::Dynamic, false, on) {
                Ok(mut done) => {
                    if let Some(name) = name {
                        let ours = crate::analysis::batch::BATCH_PARAM;
                        crate::shapes::rename_dim_param(&mut done.0, ours, &name);
                    }
                    routed = Some(done)
                }
                Err(e) => reports.push(Report {
                    step: 1,
                    iteration: 1,
                    pass: "generalize-batch".into(),
                    status: crate::pass::Status::NotApplicable,
                    details: vec![format!(
                        "compiled with the batch left symbolic instead of at the traced batch \
                         and generalised: {e}"
                    )],
                    ops_before: g.num_ops(),
                    ops_after: g.num_ops(),
                    millis: t0.elapsed().as_secs_f64() * 1e3,
                }),
            }
        }
        match routed {
            Some((h, r, change)) => {
                g = h;
                reports = r;
                batch = Some(change);
            }
            None => {
                // Shapes given for a dynamic model: the original runs at them for verification.
                if !shapes.input_shapes.is_empty() {
                    if let (Ok(input_shapes), Ok(Some(b))) = (
                        crate::shapes::static_input_shapes(&g),
                        crate::shapes::declared_batch(&g),
                    ) {
                        batch = Some(BatchChange {
                            traced: b,
                            result: Some(b),
                            input_shapes,
                        });
                    }
                }
                let base = reports.len();
                let mut more = pipeline.run(&mut g, on)?;
                for r in &mut more {
                    r.step += base;
                }
                reports.extend(more);
            }
        }
    } else {
        let (h, r, change) = compile_at_batch(g, pipeline, shapes.batch, true, on)?;
        g = h;
        reports = r;
        batch = Some(change);
    }
    g.fix_output_names();
    g.validate().map_err(|reason| Error::Validation {
        stage: "the pipeline".into(),
        reason,
    })?;
    let ops_after = g.op_histogram();
    Ok(Compiled {
        model: g.export(),
        batch,
        reports,
        ops_before,
        ops_after,
        had_external_data,
    })
}

/// Whether the model's batch is symbolic and everything else about its inputs static: the
/// models [`compile_graph_with`] compiles at their traced batch by default.
pub fn symbolic_batch_only(g: &Graph) -> bool {
    matches!(crate::shapes::declared_batch(g), Ok(None))
        && crate::shapes::static_input_shapes(&{
            let mut h = g.clone();
            crate::shapes::set_batch(&mut h, 1);
            h
        })
        .is_ok()
}

/// [`symbolic_batch_only`] for a model file, cheaply: a model whose inputs all fix axis 0 (the
/// common static export, on the `--verify` hot path) is answered from the decoded inputs
/// without building the IR.
pub fn may_route_batch(path: &Path) -> bool {
    let Ok(loaded) = crate::load::load(path) else {
        return false;
    };
    let Some(graph) = loaded.proto.graph.as_ref() else {
        return false;
    };
    let inits: std::collections::HashSet<&str> = graph
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let open_batch = graph.input.iter().any(|vi| {
        !inits.contains(vi.name.as_deref().unwrap_or(""))
            && vi
                .r#type
                .as_ref()
                .and_then(crate::ir::TensorType::from_proto)
                .and_then(|t| t.shape?.first().cloned())
                .is_some_and(|d| d.fixed().is_none())
    });
    open_batch
        && import_validated(loaded.proto, loaded.had_external_data)
            .is_ok_and(|(g, _)| symbolic_batch_only(&g))
}

/// Compiles at the batch the model was traced at (declared, found from its shapes, or with
/// `run_probe` found by running it), then makes the batch symbolic (`Batch::Dynamic`) or
/// static at another size.
fn compile_at_batch(
    mut g: Graph,
    pipeline: &Pipeline,
    want: Batch,
    run_probe: bool,
    on: &mut dyn FnMut(Event),
) -> Result<(Graph, Vec<Report>, BatchChange)> {
    let mut reports: Vec<Report>;
    let declared = crate::shapes::declared_batch(&g)?;
    if let (Batch::Static(n), Some(b)) = (want, declared) {
        if n != b {
            let first = crate::analysis::batch::batch_inputs(&g)[0];
            return Err(Error::InputShape {
                input: g.node(first).outputs[0].name.clone(),
                reason: format!(
                    "the model fixes the batch to {b}, not {n}; use --batch dynamic to \
                     generalise a batch-{b} export"
                ),
            });
        }
    }
    let probed = match declared {
        Some(_) => None,
        None => traced_batch_by_shapes(&g, pipeline),
    };
    let traced = match (&probed, declared) {
        (Some((b, _, _)), _) => *b,
        (None, Some(b)) => b,
        (None, None) if run_probe => crate::shapes::find_traced_batch(&g)?,
        (None, None) => {
            return Err(Error::Pass {
                pass: "generalize-batch".into(),
                reason: format!(
                    "the shapes fit none of the batch sizes {SHAPE_PROBE:?} (--batch dynamic \
                     also tries running the model at other sizes)"
                ),
            })
        }
    };
    let input_shapes;
    match probed {
        Some((_, h, done)) => {
            g = h;
            input_shapes = crate::shapes::static_input_shapes(&g)?;
            for r in &done {
                on(Event::Done(r));
            }
            reports = done;
        }
        None => {
            crate::shapes::set_batch(&mut g, traced);
            if declared.is_none() {
                crate::shapes::forget_declared_types(&mut g);
            }
            input_shapes = crate::shapes::static_input_shapes(&g)?;
            reports = run_rounds(&mut g, pipeline, on)?;
        }
    }
    let result = match want {
        Batch::Static(n) => Some(n),
        _ => None,
    };
    if result != Some(traced) {
        let t0 = std::time::Instant::now();
        let ops_before = g.num_ops();
        let pass = "generalize-batch";
        on(Event::Start {
            step: reports.len() + 1,
            pass,
        });
        let lines = crate::passes::generalize_batch::generalize(&mut g)
            .and_then(|l| {
                g.fix_output_names();
                g.validate().map(|_| l)
            })
            .map_err(|reason| Error::Pass {
                pass: pass.into(),
                reason,
            })?;
        let r = Report {
            step: reports.len() + 1,
            iteration: 1,
            pass: pass.into(),
            status: crate::pass::Status::Changed,
            details: lines,
            ops_before,
            ops_after: g.num_ops(),
            millis: t0.elapsed().as_secs_f64() * 1e3,
        };
        on(Event::Done(&r));
        reports.push(r);
        if let Some(n) = result {
            // Static again at the new size: the batch shape arithmetic folds away.
            crate::shapes::set_batch(&mut g, n);
            let mut more = pipeline.run(&mut g, on)?;
            let base = reports.len();
            for r in &mut more {
                r.step += base;
            }
            reports.extend(more);
        }
    }
    let change = BatchChange {
        traced,
        result,
        input_shapes,
    };
    Ok((g, reports, change))
}

/// The pipeline, then again while operators without a shape rule get typed from their
/// static inputs: they (the Einsum of RT-DETR's position embedding) leave the Shape arithmetic
/// behind them unfolded, which the batch analysis cannot follow, and each round can expose the
/// next layer's such operator (bounded: a graph has few of them in a row).
fn run_rounds(
    g: &mut Graph,
    pipeline: &Pipeline,
    on: &mut dyn FnMut(Event),
) -> Result<Vec<Report>> {
    let mut reports = pipeline.run(g, on)?;
    for _ in 0..32 {
        if crate::analysis::typing::type_unruled(g) == 0 {
            break;
        }
        let mut more = pipeline.run(g, on)?;
        let base = reports.len();
        for r in &mut more {
            r.step += base;
        }
        reports.extend(more);
    }
    Ok(reports)
}

/// Batches tried without running the model, before [`crate::shapes::find_traced_batch`]
/// runs it: exports are traced at one of these.
const SHAPE_PROBE: &[i64] = &[1, 2, 3, 4];

/// The batch a dynamic-batch export was traced at, found by compiling it at each of
/// [`SHAPE_PROBE`] until every static shape agrees with every other
/// ([`crate::shapes::shape_conflict`]); with the compiled graph and its reports. Compiling
/// costs far less than loading an uncompiled export into a runtime (half a second for a
/// small D-FINE), and the compiled graph is needed anyway. `None`: no such batch, the
/// runtime probe decides.
fn traced_batch_by_shapes(g: &Graph, pipeline: &Pipeline) -> Option<(i64, Graph, Vec<Report>)> {
    for &b in SHAPE_PROBE {
        let mut h = g.clone();
        crate::shapes::set_batch(&mut h, b);
        crate::shapes::forget_declared_types(&mut h);
        crate::analysis::typing::type_all(&mut h);
        if crate::shapes::shape_conflict(&h).is_some() {
            continue;
        }
        let Ok(reports) = run_rounds(&mut h, pipeline, &mut |_| {}) else {
            continue;
        };
        if crate::shapes::shape_conflict(&h).is_none() {
            return Some((b, h, reports));
        }
    }
    None
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
    /// onnxruntime: the graph transformers that changed either model before it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrites: Option<crate::reference::ort_rewrites::Applied>,
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
            "outputs differ from the original (seed {}, atol {}, rtol {}, {}); nothing written:\n  {}",
            self.seed,
            tol.atol,
            tol.rtol,
            self.runtime,
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

/// Runs `original` and `candidate` (encoded ONNX) on the same seeded random inputs, with the
/// default runtime choice (onnxruntime when installed, else tract).
pub fn verify(
    original: &Path,
    candidate: &[u8],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    verify_default(Original::Path(original), candidate, seeds, tol)
}

/// [`verify`] for an original held in memory (encoded ONNX, external data inlined).
pub fn verify_bytes(
    original: &[u8],
    candidate: &[u8],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    verify_default(Original::Bytes(original), candidate, seeds, tol)
}

fn verify_default(
    original: Original<'_>,
    candidate: &[u8],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    let (runtime, _) = RuntimeChoice::default().resolve()?;
    let candidate = Candidate::Bytes(candidate);
    verify_with(original, candidate, seeds, tol, &runtime)
}

/// The model verification starts from.
#[derive(Clone, Copy)]
pub enum Original<'a> {
    /// A file (external data beside it).
    Path(&'a Path),
    /// Encoded ONNX, external data inlined.
    Bytes(&'a [u8]),
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
    original: Original<'_>,
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
    /// What onnxruntime changed in the original before running it.
    pub rewrites: Option<crate::reference::ort_rewrites::Applied>,
}

fn decode_original(original: Original<'_>) -> Result<ModelProto> {
    match original {
        // The weights stay in the file's memory map; onnxruntime reads them in place.
        Original::Path(p) => Ok(crate::load::load(p)?.proto),
        Original::Bytes(b) => {
            crate::load::decode(Path::new("<memory>"), bytes::Bytes::copy_from_slice(b))
        }
    }
}

/// The original in `runtime`: onnxruntime from `decoded` (its weights mapped from the file, see
/// [`crate::reference::onnxruntime`]), tract from the file or bytes it parses itself.
fn load_original(
    original: Original<'_>,
    decoded: &ModelProto,
    runtime: &Runtime,
    specs: Vec<InputSpec>,
    names: Vec<String>,
) -> Result<Reference> {
    let model = match (runtime, original) {
        (Runtime::OnnxRuntime(_), _) => ModelRef::Proto(decoded),
        (Runtime::Tract, Original::Path(p)) => ModelRef::Path(p),
        (Runtime::Tract, Original::Bytes(b)) => ModelRef::Bytes(b),
    };
    Reference::load(model, runtime, Purpose::Verify, Some((specs, names)))
}

/// Loads `original` once, runs it on every seed and drops it. A batch left dynamic runs at 1
/// (see [`crate::reference::batch_one_shapes`]).
pub fn run_original(original: Original<'_>, seeds: &[u64], runtime: &Runtime) -> Result<Expected> {
    if seeds.is_empty() {
        return Err(Error::Verification("no seed given".into()));
    }
    crate::phases::end("before the original");
    let loaded = decode_original(original)?;
    crate::phases::end("original decoded");
    let shapes = crate::reference::batch_one_shapes(&loaded)?;
    let specs = crate::reference::input_specs_with(&loaded, &shapes)?;
    let names = output_names(&loaded);
    let inputs: Vec<Vec<ndarray::ArrayD<f32>>> = seeds
        .iter()
        .map(|&s| crate::reference::random::inputs(&specs, s))
        .collect();
    crate::phases::end("inputs generated");
    let a = load_original(original, &loaded, runtime, specs.clone(), names)?;
    crate::phases::end("original session");
    let outputs = inputs
        .iter()
        .map(|i| a.run(i))
        .collect::<Result<Vec<_>>>()?;
    crate::phases::end("original runs");
    let rewrites = a.rewrites().cloned();
    drop(a);
    drop(loaded);
    crate::phases::end("original dropped");
    Ok(Expected {
        seeds: seeds.to_vec(),
        specs,
        inputs,
        outputs,
        rewrites,
    })
}

/// Loads `candidate` to run at the shapes of `specs`: its declared inputs must be the same
/// names and types, with every static dimension agreeing.
fn load_candidate(
    candidate: Candidate<'_>,
    specs: &[InputSpec],
    runtime: &Runtime,
) -> Result<Reference> {
    let decoded;
    let proto = match candidate {
        Candidate::Bytes(b) => {
            decoded = crate::load::decode(Path::new("<memory>"), bytes::Bytes::copy_from_slice(b))?;
            &decoded
        }
        Candidate::Model(m) => m,
    };
    let declared = crate::reference::declared_inputs(proto)?;
    let fixed = declared
        .iter()
        .zip(specs)
        .filter(|(d, s)| d.name == s.name && d.dtype == s.dtype)
        .map(|(d, s)| d.fix(s.shape.clone()))
        .collect::<Result<Vec<_>>>();
    match fixed {
        Ok(f) if f.len() == specs.len() && declared.len() == specs.len() => {}
        _ => {
            let mine: Vec<InputSpec> = declared
                .iter()
                .map(|d| InputSpec {
                    name: d.name.clone(),
                    dtype: d.dtype,
                    shape: d.dims.iter().map(|v| v.unwrap_or(0)).collect(),
                })
                .collect();
            return Err(inputs_differ(specs, &mine));
        }
    }
    let names = output_names(proto);
    let model = match candidate {
        Candidate::Bytes(b) => ModelRef::Bytes(b),
        Candidate::Model(m) => ModelRef::Proto(m),
    };
    Reference::load(
        model,
        runtime,
        Purpose::Verify,
        Some((specs.to_vec(), names)),
    )
}

/// Runs `candidate` on the inputs of `expected` and compares: the worst seed's result (the
/// first failing one, else the last).
pub fn check_candidate(
    expected: &Expected,
    candidate: Candidate<'_>,
    tol: Tolerance,
    runtime: &Runtime,
) -> Result<Verification> {
    let r = load_candidate(candidate, &expected.specs, runtime)?;
    crate::phases::end("candidate session");
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
            rewrites: merged_rewrites(&[expected.rewrites.as_ref(), r.rewrites()]),
        };
        if !v.ok() {
            return Ok(v);
        }
        last = Some(v);
    }
    last.ok_or_else(|| Error::Verification("no seed given".into()))
}

/// The rewrites of both sessions of a verification, `None` when neither recorded any (tract).
fn merged_rewrites(
    parts: &[Option<&crate::reference::ort_rewrites::Applied>],
) -> Option<crate::reference::ort_rewrites::Applied> {
    parts.iter().flatten().fold(None, |acc, p| {
        let mut acc = acc.unwrap_or_default();
        acc.merge(p);
        Some(acc)
    })
}

fn inputs_differ(want: &[InputSpec], got: &[InputSpec]) -> Error {
    // A dimension shown as 0 is dynamic.
    let show = |v: &[InputSpec]| {
        v.iter()
            .map(|s| format!("{} {}{:?}", s.name, s.dtype, s.shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Error::Verification(format!(
        "the compiled model's inputs ({}) differ from the original's ({})",
        show(got),
        show(want)
    ))
}

/// Verifies a model whose batch `change` changed: the candidate runs at each of `batches`
/// (its own batch if static), the original at its traced batch on the same images, a chunk of
/// images at a time (the last chunk padded by repeating its last image), and every image's
/// outputs are compared. Outputs without a batch axis are compared whole.
pub fn verify_batches(
    original: &Path,
    candidate: &[u8],
    change: &BatchChange,
    batches: &[i64],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    let (runtime, _) = RuntimeChoice::default().resolve()?;
    verify_batches_with(
        Original::Path(original),
        candidate,
        change,
        batches,
        seeds,
        tol,
        &runtime,
    )
}

/// [`verify_batches`] with a chosen runtime, for an original in a file or in memory.
pub fn verify_batches_with(
    original: Original<'_>,
    candidate: &[u8],
    change: &BatchChange,
    batches: &[i64],
    seeds: &[u64],
    tol: Tolerance,
    runtime: &Runtime,
) -> Result<Verification> {
    use ndarray::{Axis, Slice};
    let t = change.traced as usize;
    let a = {
        let loaded = decode_original(original)?;
        let specs = crate::reference::input_specs_with(&loaded, &change.input_shapes)?;
        let names = output_names(&loaded);
        load_original(original, &loaded, runtime, specs, names)?
    };
    // The candidate's inputs at batch k: the original's, with the batch axis resized.
    let batched = |k: usize| -> Vec<InputSpec> {
        a.inputs
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if !s.shape.is_empty() {
                    s.shape[0] = k;
                }
                s
            })
            .collect()
    };
    let batches: Vec<i64> = match change.result {
        Some(n) => vec![n],
        None => batches.to_vec(),
    };
    let mut last: Option<Verification> = None;
    for &k in &batches {
        let k = k as usize;
        let b = load_candidate(Candidate::Bytes(candidate), &batched(k), runtime)?;
        for &seed in seeds {
            let inputs = b.random_inputs(seed);
            let rb = b.run(&inputs)?;
            let mut diffs: Vec<OutputDiff> = Vec::new();
            for c in (0..k).step_by(t) {
                let chunk: Vec<ndarray::ArrayD<f32>> = inputs
                    .iter()
                    .map(|x| {
                        if x.ndim() == 0 {
                            return x.clone();
                        }
                        let rows: Vec<usize> = (c..c + t).map(|i| i.min(k - 1)).collect();
                        x.select(Axis(0), &rows)
                    })
                    .collect();
                let ra = a.run(&chunk)?;
                let valid = t.min(k - c);
                let mut pa = Vec::new();
                let mut pb = Vec::new();
                for (name, x) in &ra {
                    let Some((_, y)) = rb.iter().find(|(n, _)| n == name) else {
                        continue;
                    };
                    let per_image = x.ndim() > 0 && x.shape()[0] == t && y.shape()[0] == k;
                    if per_image {
                        pa.push((
                            name.clone(),
                            x.slice_axis(Axis(0), Slice::from(0..valid)).to_owned(),
                        ));
                        pb.push((
                            name.clone(),
                            y.slice_axis(Axis(0), Slice::from(c..c + valid)).to_owned(),
                        ));
                    } else if c == 0 {
                        pa.push((name.clone(), x.clone()));
                        pb.push((name.clone(), y.clone()));
                    }
                }
                for mut d in compare(&pa, &pb, tol) {
                    d.name = format!("{} (batch {k})", d.name);
                    match diffs.iter_mut().find(|e| e.name == d.name) {
                        Some(e) => {
                            e.max_abs = e.max_abs.max(d.max_abs);
                            e.ok &= d.ok;
                            if e.note.is_none() {
                                e.note = d.note;
                            }
                        }
                        None => diffs.push(d),
                    }
                }
            }
            let v = Verification {
                seed,
                outputs: diffs,
                runtime: runtime.describe_for(Purpose::Verify),
                rewrites: merged_rewrites(&[a.rewrites(), b.rewrites()]),
            };
            if !v.ok() {
                return Ok(v);
            }
            match &mut last {
                Some(l) => l.outputs.extend(v.outputs),
                None => last = Some(v),
            }
        }
    }
    last.ok_or_else(|| Error::Verification("no seed or batch given".into()))
}
