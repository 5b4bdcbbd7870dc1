//! The compile session: compile, verify the result against the original, and when the batch
//! route's result fails verification, compile again with the model as declared. `detrc compile`
//! and the Python package's `detrc.compile` both run a [`Session`], so that loop exists once;
//! they differ only in where the result goes ([`Output`]) and in what they show of the
//! progress ([`Progress`]).

use std::path::Path;
use std::time::Instant;

use super::compile::{compile_graph_with, Compiled};
use super::input_shapes::{Batch, ShapeOptions};
use super::precision::{PrecisionError, PrecisionOptions, PrecisionReport};
use super::verify::{self, Candidate, Expected, Verification};
use super::Source;
use crate::emit::{ExternalData, Staged};
use crate::error::{Error, Result};
use crate::load::proto::ModelProto;
use crate::pass::{Event, Pipeline};
use crate::reference::compare::Tolerance;
use crate::reference::{Runtime, RuntimeChoice};

/// Everything a compile is asked to do: the passes, the input shapes and batch, and whether
/// (and how) to check the result.
pub struct Session {
    pub pipeline: Pipeline,
    pub shapes: ShapeOptions,
    /// Check the result against the original before it is written or returned.
    pub verify: Option<VerifyOptions>,
    /// The precision of the written model (`None`: fp32, as compiled). Applied once the fp32
    /// result is verified.
    pub precision: Option<PrecisionOptions>,
}

/// How a session verifies.
pub struct VerifyOptions {
    /// One seeded random input set each.
    pub seeds: Vec<u64>,
    pub tol: Tolerance,
    /// Batch sizes a result whose batch the compile made symbolic runs at.
    pub batches: Vec<i64>,
    /// The runtime both models run in; `None`: the default choice, resolved when verification
    /// runs.
    pub runtime: Option<Runtime>,
}

/// Where the compiled model goes.
#[derive(Clone, Copy)]
pub enum Output<'a> {
    /// A file, written only once verified. Memory is what this route minimises: the original
    /// runs and is dropped before compiling where it can, and the result is staged beside
    /// `path` and checked from the written files, so it is not held in memory meanwhile.
    File { path: &'a Path, mode: ExternalData },
    /// Kept in memory, encoded once for verification; `bytes`: the caller wants the encoding.
    Memory { bytes: bool },
}

/// What a session produced.
pub struct Outcome {
    /// The model (empty where it was checked from the written files), reports and histograms.
    pub compiled: Compiled,
    /// Seconds the last compile took, loading included.
    pub seconds: f64,
    pub verification: Option<Verification>,
    /// The encoded model, with `Output::Memory { bytes: true }`.
    pub bytes: Option<Vec<u8>>,
    /// What `--precision` did.
    pub precision: Option<PrecisionReport>,
}

/// What a session tells its caller as it goes.
pub enum Progress<'a> {
    /// A pass started or finished.
    Pass(Event<'a>),
    /// A line about the precision step (the fp16 guard's rounds).
    Precision(String),
    /// A compile finished (the pass lines are done).
    Compiled,
    /// A phase of the work ended, for `DETRC_PHASES` (see [`crate::phases`]).
    Phase(&'static str),
    /// The batch route's result failed verification; the model is compiled again as declared.
    Retrying {
        failed: &'a Verification,
        tol: Tolerance,
    },
}

/// Why a session failed, by the step that failed (the command line words each differently).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Loading or compiling the model.
    #[error(transparent)]
    Compile(Error),
    /// Running the original before compiling.
    #[error(transparent)]
    Original(Error),
    /// Running either model for verification.
    #[error(transparent)]
    Verify(Error),
    /// Writing (or encoding) the result.
    #[error(transparent)]
    Write(Error),
    /// Reading the written result back to verify it.
    #[error(transparent)]
    ReadBack(Error),
    /// Applying `--precision`, or its fp16 check failing.
    #[error(transparent)]
    Precision(PrecisionError),
    /// The result's outputs differ from the original's.
    #[error("{}", verification.failure_message(*tol))]
    Mismatch {
        verification: Box<Verification>,
        tol: Tolerance,
    },
}

/// A verified result, not yet where it goes: it goes there only once verification passed.
enum Pending {
    /// Staged beside the destination file.
    Staged(Staged),
    /// Still in `Compiled::model`, to be saved.
    Save,
    /// Encoded.
    Bytes(Vec<u8>),
}

impl Session {
    /// Compiles `source`, verifies the result (with [`Session::verify`]) and puts it where
    /// `output` says. A model compiled by the batch route (at its traced batch, then
    /// generalised) whose result fails verification is compiled again with its batch left
    /// symbolic, unless the caller asked for a batch or for the plain route.
    pub fn run(
        &self,
        source: &Source<'_>,
        output: Output<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Outcome, SessionError> {
        let mut shapes = self.shapes.clone();
        // With a precision to apply, the fp32 result is verified in memory and only the
        // converted model goes where `output` says.
        let final_output = output;
        let output = if self.precision.is_some() {
            Output::Memory { bytes: false }
        } else {
            output
        };
        let expected = self.original_first(source, output, &shapes)?;
        // Why the batch route's result was dropped, once it failed verification.
        let mut dropped: Option<super::RouteStatus> = None;
        loop {
            let t0 = Instant::now();
            let (g, had_external_data) = source.load().map_err(SessionError::Compile)?;
            let mut on = |e: Event| progress(Progress::Pass(e));
            let mut compiled =
                compile_graph_with(g, had_external_data, &self.pipeline, &shapes, &mut on)
                    .map_err(SessionError::Compile)?;
            if dropped.is_some() {
                compiled.batch_route = dropped.clone();
            }
            super::mark_compiled(&mut compiled.model);
            progress(Progress::Phase("compiled"));
            progress(Progress::Compiled);
            let seconds = t0.elapsed().as_secs_f64();

            let Some(vo) = &self.verify else {
                let precision = self.apply_precision(&mut compiled, final_output, progress)?;
                let bytes = match final_output {
                    Output::File { path, mode } => {
                        crate::emit::save(&compiled.model, path, mode)
                            .map_err(SessionError::Write)?;
                        None
                    }
                    Output::Memory { bytes: false } => None,
                    Output::Memory { bytes: true } => {
                        Some(crate::emit::encode(&compiled.model).map_err(SessionError::Write)?)
                    }
                };
                return Ok(Outcome {
                    compiled,
                    seconds,
                    verification: None,
                    bytes,
                    precision,
                });
            };
            let (v, pending) = match output {
                Output::File { path, mode } => self.check_file(
                    source,
                    &mut compiled,
                    path,
                    mode,
                    expected.as_ref(),
                    progress,
                )?,
                Output::Memory { .. } => {
                    let encoded =
                        crate::emit::encode(&compiled.model).map_err(SessionError::Write)?;
                    let v = check_encoded(vo, source, &compiled, &encoded)
                        .map_err(SessionError::Verify)?;
                    (v, Pending::Bytes(encoded))
                }
            };
            progress(Progress::Phase("candidate runs"));
            if !v.ok() {
                if shapes.batch == Batch::Keep && !shapes.plain && compiled.batch.is_some() {
                    // The generalised result is wrong: the model as declared may still compile.
                    progress(Progress::Retrying {
                        failed: &v,
                        tol: vo.tol,
                    });
                    dropped = Some(super::RouteStatus::gave_up(
                        None,
                        format!(
                            "the model compiled at its traced batch and generalised failed \
                             verification: {}",
                            v.failure_message(vo.tol)
                        ),
                    ));
                    shapes.plain = true;
                    continue;
                }
                return Err(SessionError::Mismatch {
                    verification: Box::new(v),
                    tol: vo.tol,
                });
            }
            let precision = self.apply_precision(&mut compiled, final_output, progress)?;
            let bytes = match (pending, final_output) {
                (Pending::Staged(s), _) => {
                    s.commit().map_err(SessionError::Write)?;
                    None
                }
                (_, Output::File { path, mode }) => {
                    crate::emit::save(&compiled.model, path, mode).map_err(SessionError::Write)?;
                    None
                }
                (Pending::Bytes(b), Output::Memory { bytes: true }) if precision.is_none() => {
                    Some(b)
                }
                (_, Output::Memory { bytes: true }) => {
                    Some(crate::emit::encode(&compiled.model).map_err(SessionError::Write)?)
                }
                _ => None,
            };
            return Ok(Outcome {
                compiled,
                seconds,
                verification: Some(v),
                bytes,
                precision,
            });
        }
    }

    /// Applies `--precision` to the verified fp32 result in `compiled.model`. `None` when no
    /// precision was asked for.
    fn apply_precision(
        &self,
        compiled: &mut Compiled,
        output: Output<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<PrecisionReport>, SessionError> {
        let Some(po) = &self.precision else {
            return Ok(None);
        };
        let model = std::mem::take(&mut compiled.model);
        let mut g = crate::ir::from_onnx::import(model).map_err(SessionError::Compile)?;
        let mut say = |line: String| progress(Progress::Precision(line));
        let mut report =
            super::precision::apply(&mut g, po, &mut say).map_err(SessionError::Precision)?;
        let path = match output {
            Output::File { path, .. } => path.to_path_buf(),
            Output::Memory { .. } => std::path::PathBuf::from("model.onnx"),
        };
        report.trtexec = super::precision::trtexec_command(&g, &path);
        compiled.ops_after = g.op_histogram();
        compiled.model = g.export();
        Ok(Some(report))
    }

    /// The original's outputs, computed before compiling so that the two models are never in
    /// memory together: for a file written to a file, unless the compile changes the batch
    /// (then the original runs at its traced batch, known only after compiling).
    fn original_first(
        &self,
        source: &Source<'_>,
        output: Output<'_>,
        shapes: &ShapeOptions,
    ) -> Result<Option<Expected>, SessionError> {
        let (Some(vo), Source::Path(path), Output::File { .. }) = (&self.verify, source, output)
        else {
            return Ok(None);
        };
        // The batch route is decided by compiling, except for what the declared inputs tell;
        // where it may be taken, verification waits for the compile.
        if shapes.batch != Batch::Keep
            || (!shapes.plain
                && shapes.input_shapes.is_empty()
                && super::batch_route::may_route_batch(path))
        {
            return Ok(None);
        }
        let runtime = runtime(vo).map_err(SessionError::Original)?;
        verify::run_original(super::Original::Path(path), &vo.seeds, &runtime)
            .map(Some)
            .map_err(SessionError::Original)
    }

    /// Verifies a result headed for a file. One whose batch changed is checked from its
    /// encoding at several batch sizes; any other is staged beside `path` first, dropped from
    /// memory, and checked from the written files (onnxruntime maps their weights).
    fn check_file(
        &self,
        source: &Source<'_>,
        compiled: &mut Compiled,
        path: &Path,
        mode: ExternalData,
        expected: Option<&Expected>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Verification, Pending), SessionError> {
        let Some(vo) = &self.verify else {
            unreachable!("check_file runs only with verification");
        };
        if let Some(change) = &compiled.batch {
            let bytes = crate::emit::encode(&compiled.model).map_err(SessionError::Write)?;
            let v = runtime(vo)
                .and_then(|rt| {
                    verify::verify_batches_with(
                        source.original(),
                        &bytes,
                        change,
                        &vo.batches,
                        &vo.seeds,
                        vo.tol,
                        &rt,
                    )
                })
                .map_err(SessionError::Verify)?;
            return Ok((v, Pending::Save));
        }
        // The input's pages that a pass read, and writing touches, stay resident otherwise:
        // released before and after writing.
        crate::load::release_mapped_pages();
        let staged =
            crate::emit::stage(&compiled.model, path, mode).map_err(SessionError::Write)?;
        compiled.model = ModelProto::default();
        crate::load::release_mapped_pages();
        progress(Progress::Phase("staged"));
        let written = crate::load::load(&staged.path()).map_err(SessionError::ReadBack)?;
        progress(Progress::Phase("candidate decoded"));
        let candidate = Candidate::Model(&written.proto);
        let v = runtime(vo)
            .and_then(|rt| match expected {
                Some(expected) => verify::check_candidate(expected, candidate, vo.tol, &rt),
                None => verify::verify_with(source.original(), candidate, &vo.seeds, vo.tol, &rt),
            })
            .map_err(SessionError::Verify)?;
        Ok((v, Pending::Staged(staged)))
    }
}

/// Verifies an encoded result: at several batch sizes where the compile changed the batch.
fn check_encoded(
    vo: &VerifyOptions,
    source: &Source<'_>,
    compiled: &Compiled,
    encoded: &[u8],
) -> Result<Verification> {
    let rt = runtime(vo)?;
    match &compiled.batch {
        None => verify::verify_with(
            source.original(),
            Candidate::Bytes(encoded),
            &vo.seeds,
            vo.tol,
            &rt,
        ),
        Some(change) => verify::verify_batches_with(
            source.original(),
            encoded,
            change,
            &vo.batches,
            &vo.seeds,
            vo.tol,
            &rt,
        ),
    }
}

fn runtime(vo: &VerifyOptions) -> Result<Runtime> {
    match &vo.runtime {
        Some(rt) => Ok(rt.clone()),
        None => Ok(RuntimeChoice::default().resolve()?.0),
    }
}
