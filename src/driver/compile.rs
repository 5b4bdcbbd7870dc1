//! One compile of a model: input shapes applied, the pipeline run (by the batch route where it
//! applies, see `batch_route.rs`), the result validated and exported. Verification and the
//! fallback when the route's result fails it are the session's ([`super::Session`]).

use std::path::Path;

use super::batch_route::{self, BatchChange, RouteStatus};
use super::input_shapes::{self, Batch, ShapeOptions};
use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::load::proto::ModelProto;
use crate::pass::{Event, Pipeline, Report};

/// A compiled model and what compiling it did.
pub struct Compiled {
    pub model: ModelProto,
    /// Set when `--batch` changed the batch: how, for verification at several batch sizes.
    pub batch: Option<BatchChange>,
    pub reports: Vec<Report>,
    /// How the batch route went, for a model it was tried on (`None`: not tried).
    pub batch_route: Option<RouteStatus>,
    pub ops_before: std::collections::BTreeMap<String, usize>,
    pub ops_after: std::collections::BTreeMap<String, usize>,
    pub had_external_data: bool,
}

/// Loads the model at `path` and compiles it with `pipeline`, its shapes as declared.
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
    let (g, had_external_data) = super::load_graph(path)?;
    compile_graph_with(g, had_external_data, pipeline, shapes, on)
}

/// Runs `pipeline` on a loaded graph (see [`super::load_graph`], [`super::load_graph_bytes`])
/// with input shapes and a batch chosen by the caller, and exports it.
///
/// A model whose batch is symbolic and whose other input dimensions are static is compiled
/// the `--batch dynamic` way by default (at the batch it was traced at, then generalised):
/// the Shape arithmetic around a symbolic batch does not fold otherwise, and the result keeps
/// the model's symbolic batch either way. Where that route fails (no batch it runs at, a batch
/// dependence `generalize-batch` has no rule for), the plain pipeline runs on the model as
/// declared, and a report says why. `shapes.plain` turns the route off.
pub(super) fn compile_graph_with(
    mut g: Graph,
    had_external_data: bool,
    pipeline: &Pipeline,
    shapes: &ShapeOptions,
    on: &mut dyn FnMut(Event),
) -> Result<Compiled> {
    let ops_before = g.op_histogram();
    input_shapes::apply_input_shapes(&mut g, &shapes.input_shapes)?;
    let mut batch = None;
    let mut reports = Vec::new();
    let mut route = None;
    if shapes.batch == Batch::Keep {
        let mut routed = None;
        if !shapes.plain && shapes.input_shapes.is_empty() && batch_route::symbolic_batch_only(&g) {
            let t0 = std::time::Instant::now();
            let name = crate::analysis::batch::batch_param(&g);
            // Unasked, the route never runs the model: no size of SHAPE_PROBE that fits means
            // the model as declared.
            let mut at = None;
            let mut quiet = |_: Event| {};
            // The route's own steps are reported only when it succeeds: a model it gives up
            // on is compiled again as declared, and that compile's steps are the report.
            match batch_route::compile_at_batch(
                g.clone(),
                pipeline,
                Batch::Dynamic,
                false,
                &mut quiet,
                &mut at,
            ) {
                Ok(mut done) => {
                    if let Some(name) = name {
                        let ours = crate::analysis::batch::BATCH_PARAM;
                        input_shapes::rename_dim_param(&mut done.0, ours, &name);
                    }
                    for r in &done.1 {
                        on(Event::Done(r));
                    }
                    route = Some(RouteStatus::generalised());
                    routed = Some(done)
                }
                Err(e) => {
                    let reason = match (&at, e) {
                        (Some(at), _) => at.reason.clone(),
                        (None, e) => e.to_string(),
                    };
                    let status = RouteStatus::gave_up(at.as_ref(), reason);
                    let r = Report {
                        step: 1,
                        iteration: 1,
                        pass: "generalize-batch".into(),
                        status: crate::pass::Status::NotApplicable,
                        details: vec![status.describe()],
                        ops_before: g.num_ops(),
                        ops_after: g.num_ops(),
                        millis: t0.elapsed().as_secs_f64() * 1e3,
                    };
                    on(Event::Done(&r));
                    reports.push(r);
                    route = Some(status);
                }
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
                        input_shapes::static_input_shapes(&g),
                        input_shapes::declared_batch(&g),
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
        let mut at = None;
        let (h, r, change) =
            batch_route::compile_at_batch(g, pipeline, shapes.batch, true, on, &mut at)?;
        if shapes.batch == Batch::Dynamic {
            route = Some(RouteStatus::generalised());
        }
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
        batch_route: route,
        ops_before,
        ops_after,
        had_external_data,
    })
}
