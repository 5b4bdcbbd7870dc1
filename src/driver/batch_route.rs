//! The batch route: how a model whose batch is symbolic, or is to change, gets compiled. It is
//! compiled at the batch it was traced at (declared, found from its static shapes, or found by
//! running it), where every static fold applies, and the result is then made symbolic by
//! `generalize-batch` or static at another size. [`super::compile_with`] takes this route by
//! default for a symbolic-batch model; the session falls back to the model as declared when the
//! route's result fails verification.

use std::path::Path;

use super::input_shapes;
use super::input_shapes::Batch;
use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::pass::{Event, Pipeline, Report};
use crate::passes::generalize_batch::GiveUp;

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

/// How the batch route ended, for the compile report and `--json`: a model it gave up on is
/// compiled as declared, and the node and reason say why, never silently.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteStatus {
    /// `generalised`: compiled at the traced batch and made symbolic again; `gave-up`:
    /// compiled as declared.
    pub status: &'static str,
    /// The node the route stopped at (name, operator type), where one is to blame.
    pub node: Option<String>,
    pub op: Option<String>,
    pub reason: Option<String>,
}

impl RouteStatus {
    pub(super) fn generalised() -> Self {
        Self {
            status: "generalised",
            node: None,
            op: None,
            reason: None,
        }
    }

    pub(super) fn gave_up(at: Option<&GiveUp>, reason: String) -> Self {
        Self {
            status: "gave-up",
            node: at.and_then(|g| g.node.clone()),
            op: at.and_then(|g| g.op.clone()),
            reason: Some(reason),
        }
    }

    /// One line for stderr.
    pub fn describe(&self) -> String {
        match (&self.node, &self.op) {
            (Some(n), Some(op)) => format!(
                "the dynamic batch was not generalised at {op} '{n}' ({}); compiled with the \
                 batch as declared",
                self.reason.as_deref().unwrap_or("")
            ),
            _ => format!(
                "the dynamic batch was not generalised ({}); compiled with the batch as declared",
                self.reason.as_deref().unwrap_or("")
            ),
        }
    }
}

/// Whether the model's batch is symbolic and everything else about its inputs static: the
/// models [`super::compile_with`] compiles at their traced batch by default.
pub fn symbolic_batch_only(g: &Graph) -> bool {
    matches!(input_shapes::declared_batch(g), Ok(None))
        && input_shapes::static_input_shapes(&{
            let mut h = g.clone();
            input_shapes::set_batch(&mut h, 1);
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
        && super::import_validated(loaded.proto, loaded.had_external_data)
            .is_ok_and(|(g, _)| symbolic_batch_only(&g))
}

/// Compiles at the batch the model was traced at (declared, found from its shapes, or with
/// `run_probe` found by running it), then makes the batch symbolic (`Batch::Dynamic`) or
/// static at another size. Where `generalize-batch` gives up, `gave_up` says at which node.
pub(super) fn compile_at_batch(
    mut g: Graph,
    pipeline: &Pipeline,
    want: Batch,
    run_probe: bool,
    on: &mut dyn FnMut(Event),
    gave_up: &mut Option<GiveUp>,
) -> Result<(Graph, Vec<Report>, BatchChange)> {
    let mut reports: Vec<Report>;
    let declared = input_shapes::declared_batch(&g)?;
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
        (None, None) if run_probe => find_traced_batch(&g)?,
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
            input_shapes = input_shapes::static_input_shapes(&g)?;
            for r in &done {
                on(Event::Done(r));
            }
            reports = done;
        }
        None => {
            input_shapes::set_batch(&mut g, traced);
            if declared.is_none() {
                input_shapes::forget_declared_types(&mut g);
            }
            input_shapes = input_shapes::static_input_shapes(&g)?;
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
                g.validate().map(|_| l).map_err(GiveUp::from)
            })
            .map_err(|e| {
                let reason = e.to_string();
                *gave_up = Some(e);
                Error::Pass {
                    pass: pass.into(),
                    reason,
                }
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
            input_shapes::set_batch(&mut g, n);
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

/// Batches tried without running the model, before [`find_traced_batch`]
/// runs it: exports are traced at one of these.
const SHAPE_PROBE: &[i64] = &[1, 2, 3, 4];

/// The batch a dynamic-batch export was traced at, found by compiling it at each of
/// [`SHAPE_PROBE`] until every static shape agrees with every other
/// ([`crate::analysis::batch::shape_conflict`]); with the compiled graph and its reports. Compiling
/// costs far less than loading an uncompiled export into a runtime (half a second for a
/// small D-FINE), and the compiled graph is needed anyway. `None`: no such batch, the
/// runtime probe decides.
fn traced_batch_by_shapes(g: &Graph, pipeline: &Pipeline) -> Option<(i64, Graph, Vec<Report>)> {
    for &b in SHAPE_PROBE {
        let mut h = g.clone();
        input_shapes::set_batch(&mut h, b);
        input_shapes::forget_declared_types(&mut h);
        crate::analysis::typing::type_all(&mut h);
        if crate::analysis::batch::shape_conflict(&h).is_some() {
            continue;
        }
        let Ok(reports) = run_rounds(&mut h, pipeline, &mut |_| {}) else {
            continue;
        };
        if crate::analysis::batch::shape_conflict(&h).is_none() {
            return Some((b, h, reports));
        }
    }
    None
}

/// Batch sizes tried when a dynamic-batch export does not say at which batch it was traced.
const TRACE_CANDIDATES: &[i64] = &[1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64];

/// The batch a dynamic-batch export was traced at: the first size at which the reference
/// runtime accepts its shapes (an unrolled per-image loop or a baked Reshape fits one batch).
///
/// Only the inputs' shapes are given: exporters write value_info and output shapes at the
/// trace batch (`[64, 32, 160, 160]`) or with their own symbols (`N`, `2*N`), and the probe
/// must test what the operators accept, not what the declarations claim.
fn find_traced_batch(g: &Graph) -> Result<i64> {
    input_shapes::static_input_shapes(&{
        let mut h = g.clone();
        input_shapes::set_batch(&mut h, 1);
        h
    })?;
    let mut last = String::new();
    for &b in TRACE_CANDIDATES {
        let mut h = g.clone();
        input_shapes::set_batch(&mut h, b);
        let shapes = input_shapes::static_input_shapes(&h)?;
        let bytes = crate::emit::encode(&h.export())?;
        // Given shapes make the reference drop value_info and output shapes.
        match crate::reference::Reference::from_bytes_with(&bytes, &shapes).and_then(|r| {
            let x = r.random_inputs(0);
            r.run(&x).map(|_| ())
        }) {
            Ok(()) => return Ok(b),
            Err(e) => last = format!("{e}"),
        }
    }
    let first = crate::analysis::batch::batch_inputs(g)
        .first()
        .map(|&n| g.node(n).outputs[0].name.clone())
        .unwrap_or_else(|| "*".into());
    Err(input_shapes::usage(
        &first,
        format!(
            "the model runs at none of the batch sizes {TRACE_CANDIDATES:?} (last error: \
             {last}); give the traced shape with --input-shape"
        ),
    ))
}
