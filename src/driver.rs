//! The compile pipeline end to end: load -> IR -> passes -> export, plus verification.

use std::path::Path;

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::load::proto::ModelProto;
use crate::pass::{Event, Pipeline, Report};
use crate::reference::compare::{compare, OutputDiff, Tolerance};
use crate::reference::Reference;
use crate::shapes::{Batch, ShapeOptions};

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
        reports = pipeline.run(&mut g, on)?;
    } else {
        let declared = crate::shapes::declared_batch(&g)?;
        if let (Batch::Static(n), Some(b)) = (shapes.batch, declared) {
            if n != b {
                let first = crate::passes::generalize_batch::batch_inputs(&g)[0];
                return Err(Error::InputShape {
                    input: g.node(first).outputs[0].name.clone(),
                    reason: format!(
                        "the model fixes the batch to {b}, not {n}; use --batch dynamic to \
                         generalise a batch-{b} export"
                    ),
                });
            }
        }
        let traced = match declared {
            Some(b) => b,
            None => crate::shapes::find_traced_batch(&g)?,
        };
        crate::shapes::set_batch(&mut g, traced);
        if declared.is_none() {
            crate::shapes::forget_declared_types(&mut g);
        }
        let input_shapes = crate::shapes::static_input_shapes(&g)?;
        reports.extend(pipeline.run(&mut g, on)?);
        // Operators infer-shapes has no rule for (Einsum in RT-DETR's position embedding)
        // leave the Shape arithmetic behind them unfolded, which the batch analysis cannot
        // follow: typing them lets another round fold it. Each round can expose the next
        // layer's such operator, hence the loop (bounded: a graph has few of them in a row).
        for _ in 0..32 {
            if crate::passes::infer_shapes::type_unruled(&mut g) == 0 {
                break;
            }
            let mut more = pipeline.run(&mut g, on)?;
            let base = reports.len();
            for r in &mut more {
                r.step += base;
            }
            reports.extend(more);
        }
        let result = match shapes.batch {
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
                status: "changed".into(),
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
        batch = Some(BatchChange {
            traced,
            result,
            input_shapes,
        });
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
    let proto = crate::load::load_proto(original)?;
    let shapes = crate::reference::batch_one_shapes(&proto)?;
    let specs = crate::reference::input_specs_with(&proto, &shapes)?;
    drop(proto);
    let a = Reference::from_path_with_inputs(original, specs)?;
    let b = Reference::from_bytes_with(candidate, &shapes)?;
    verify_with(&a, &b, seeds, tol)
}

/// [`verify`] for an original held in memory (encoded ONNX, external data inlined).
pub fn verify_bytes(
    original: &[u8],
    candidate: &[u8],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    let shapes = {
        let proto = crate::load::decode(
            Path::new("<memory>"),
            bytes::Bytes::copy_from_slice(original),
        )?;
        crate::reference::batch_one_shapes(&proto)?
    };
    let a = Reference::from_bytes_with(original, &shapes)?;
    let b = Reference::from_bytes_with(candidate, &shapes)?;
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
    let a = Reference::from_path_with(original, &change.input_shapes)?;
    verify_batches_with(&a, candidate, change, batches, seeds, tol)
}

/// [`verify_batches`] for an original held in memory (encoded ONNX, external data inlined).
pub fn verify_batches_bytes(
    original: &[u8],
    candidate: &[u8],
    change: &BatchChange,
    batches: &[i64],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    let a = Reference::from_bytes_with(original, &change.input_shapes)?;
    verify_batches_with(&a, candidate, change, batches, seeds, tol)
}

fn verify_batches_with(
    a: &Reference,
    candidate: &[u8],
    change: &BatchChange,
    batches: &[i64],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    use ndarray::{Axis, Slice};
    let t = change.traced as usize;
    let batched = |k: usize| -> Vec<(String, Vec<usize>)> {
        change
            .input_shapes
            .iter()
            .map(|(n, s)| {
                let mut s = s.clone();
                if !s.is_empty() {
                    s[0] = k;
                }
                (n.clone(), s)
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
        let b = Reference::from_bytes_with(candidate, &batched(k))?;
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
