use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use detrc::driver::{Output, Progress, Session, SessionError, ShapeOptions, Source, VerifyOptions};
use detrc::emit::ExternalData;
use detrc::pass::{Event, Pipeline, Status};
use detrc::reference::compare::Tolerance;

use super::{Exit, EXIT_USAGE, EXIT_VERIFY};

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to compile.
    input: PathBuf,
    /// Where to write the compiled model.
    #[arg(short, long)]
    output: PathBuf,
    /// Run only these passes, in this order (comma separated; see `detrc passes`).
    #[arg(long, value_delimiter = ',')]
    passes: Option<Vec<String>>,
    /// Leave these passes out of the pipeline (comma separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// GridSample as exported (keep), or rewritten as gathers of the four neighbours (gather)
    /// for TensorRT 10.14/11.1, which miscompile it (NVIDIA/TensorRT#4813). See README.
    #[arg(long, value_name = "keep|gather", default_value = "keep", value_parser = detrc::passes::tensorrt::GridSample::parse)]
    gridsample: detrc::passes::tensorrt::GridSample,
    /// Write a JSON report of every pass step to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Check the result against the input on seeded random inputs with the CPU reference
    /// runtime (--reference); on a mismatch nothing is written and the exit code is 3.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    runtime: super::runtime::RuntimeArgs,
    /// Seed of the first verification input (with --verify).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How many seeded input sets to verify with. Each one more costs an inference of both
    /// models (docs/reference.md).
    #[arg(long, default_value_t = 1)]
    verify_runs: u64,
    /// Absolute tolerance for --verify.
    #[arg(long, default_value_t = 1e-4)]
    atol: f32,
    /// Relative tolerance for --verify.
    #[arg(long, default_value_t = 1e-4)]
    rtol: f32,
    /// Write the IR as text into this folder before the first pass and after every change.
    #[arg(long)]
    dump_ir: Option<PathBuf>,
    /// Fail when a DETR pass does not apply, or when a pass has to be rolled back.
    #[arg(long)]
    strict: bool,
    /// Rounds of the pipeline at most (it stops earlier at a fixed point).
    #[arg(long, default_value_t = 8)]
    max_iterations: usize,
    /// Stop after this many pass executions (to bisect a bad rewrite).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Bytes a folded constant may take beyond the constants it replaces.
    #[arg(long, default_value_t = 1 << 20)]
    fold_budget: usize,
    /// Store weights in `<output>.data`: auto (only past 2 GiB), always, never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    external_data: String,
    /// Write a Make-style dependency file (the output depends on the model and its data).
    #[arg(long)]
    depfile: Option<PathBuf>,
    /// Batch of the result: `dynamic` (symbolic; batch-baked shapes and per-image constants
    /// are generalised) or a size N (static at N). Default: as the model declares it.
    #[arg(long)]
    batch: Option<detrc::driver::Batch>,
    /// Compile a dynamic-batch model with its batch symbolic throughout, not at the batch it
    /// was traced at and generalised (the default, which folds the Shape arithmetic around
    /// the batch; docs/dynamic-batch.md).
    #[arg(long, conflicts_with = "batch")]
    plain_batch: bool,
    /// Fix an input's shape before the passes run, e.g. `images:1x3x800x800` (repeatable), so
    /// all static folding applies. Dimensions the model fixes must match.
    #[arg(long, value_name = "NAME:DIMS")]
    input_shape: Vec<String>,
    /// Batch sizes `--verify` runs a dynamic-batch result at.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    verify_batches: Vec<i64>,
    /// Precision of the written model, for TensorRT builds that take it from the graph
    /// (`trtexec --stronglyTyped`, TensorRT 11, TensorRT-RTX): fp32 (as compiled), fp16
    /// (`to-fp16`, checked under emulated fp16 storage and guarded against overflow), int8 or
    /// fp8 (Q/DQ, calibrated on --calibration images as `detrc quantize` does). Inputs and
    /// outputs stay fp32. The report prints the trtexec command line.
    #[arg(long, value_name = "fp32|fp16|int8|fp8")]
    precision: Option<detrc::build::Precision>,
    #[command(flatten)]
    cal: super::quantize::CalibrationArgs,
    /// Op types, node names or tensor names kept in fp32 by --precision fp16, on top of the
    /// defaults (comma separated).
    #[arg(long, value_delimiter = ',')]
    fp16_keep: Vec<String>,
    /// Do not keep overflowing operators in fp32 automatically (the fp16 check still runs and
    /// a model that loses detections is still not written).
    #[arg(long)]
    no_fp16_guard: bool,
    /// An fp16 tensor larger than 65504 / HEADROOM on the check's inputs counts as overflowing
    /// (real inputs reach further than the check's).
    #[arg(long, default_value_t = 4.0)]
    fp16_headroom: f32,
    /// Least SQNR (dB) of the fp16 model's sorted scores against the fp32 model's.
    #[arg(long, default_value_t = 30.0)]
    fp16_min_sqnr: f64,
    /// Least share of the fp32 model's detections (score >= 0.5) the fp16 model must keep,
    /// checked where the fp32 model has five or more.
    #[arg(long, default_value_t = 0.5)]
    fp16_min_recall: f64,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn pipeline_for(
    only: Option<&[String]>,
    skip: &[String],
) -> Result<Vec<Box<dyn detrc::pass::Pass>>, Exit> {
    detrc::passes::select(only, skip).map_err(|e| Exit(EXIT_USAGE, anyhow!(e)))
}

/// glibc raises its mmap threshold (up to 32 MB) each time a large block is freed, so after
/// the first few activations are freed, later ones come from the heap, which does not shrink:
/// measured on DETR-R50 `--verify`, 150 MB stayed resident after the original's session was
/// dropped, and the peak was 90 MB higher. A fixed threshold keeps every large block a
/// mapping of its own, returned when freed. The cost is a page fault per page of each large
/// allocation, small next to the convolutions that fill it.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

pub fn run(a: Args) -> Result<(), Exit> {
    detrc::phases::end("start");
    let mut passes = pipeline_for(a.passes.as_deref(), &a.skip)?;
    a.gridsample.apply_to(&mut passes);
    let usage = |e: String| Exit(EXIT_USAGE, anyhow!(e));
    let mut shapes = ShapeOptions {
        batch: a.batch.unwrap_or_default(),
        input_shapes: Vec::new(),
        plain: a.plain_batch,
    };
    for s in &a.input_shape {
        shapes
            .input_shapes
            .push(detrc::driver::parse_input_shape(s).map_err(usage)?);
    }
    if a.verify_batches.iter().any(|&b| b < 1) {
        return Err(usage("--verify-batches: batch sizes are at least 1".into()));
    }
    let mut pipeline = Pipeline::new(passes);
    pipeline.max_iterations = a.max_iterations.max(1);
    pipeline.max_steps = a.max_steps;
    pipeline.dump_dir = a.dump_ir.clone();
    pipeline.context.strict = a.strict;
    pipeline.context.fold_budget_bytes = a.fold_budget;

    let quiet = a.quiet || a.json;
    if a.verify {
        fixed_mmap_threshold();
    }
    // Resolved before compiling, so a bad --onnxruntime fails fast.
    let precise = a
        .precision
        .is_some_and(|p| p != detrc::build::Precision::Fp32);
    let runtime = if a.verify || precise {
        Some(a.runtime.resolve(quiet)?)
    } else {
        None
    };
    let precision = match (a.precision, &runtime) {
        (Some(p), Some(rt)) => Some(precision_options(&a, p, rt.clone())?),
        (Some(p), None) => Some(precision_options(&a, p, detrc::reference::Runtime::Tract)?),
        _ => None,
    };
    detrc::phases::end("runtime resolved");
    let tol = Tolerance {
        atol: a.atol,
        rtol: a.rtol,
    };
    let session = Session {
        pipeline,
        shapes,
        verify: runtime.filter(|_| a.verify).map(|rt| VerifyOptions {
            seeds: (0..a.verify_runs.max(1)).map(|i| a.seed + i).collect(),
            tol,
            batches: a.verify_batches.clone(),
            runtime: Some(rt),
        }),
        precision,
    };
    let tty = std::io::stderr().is_terminal();
    let mut on = |p: Progress| match p {
        Progress::Pass(e) if !quiet => match e {
            Event::Start { step, pass } if tty => {
                eprint!("\r\x1b[2K  [{step:>3}] {pass}…");
            }
            // Later rounds only repeat that a DETR pass has nothing left to do.
            Event::Done(r)
                if r.status != Status::Unchanged
                    && !(r.status == Status::NotApplicable && r.iteration > 1) =>
            {
                if tty {
                    eprint!("\r\x1b[2K");
                }
                let detail = r.details.join("; ");
                eprintln!(
                    "  [{:>3}] {:<20} {:<14} {}",
                    r.step, r.pass, r.status, detail
                );
            }
            _ => {}
        },
        Progress::Pass(_) => {}
        Progress::Compiled => {
            if tty && !quiet {
                eprint!("\r\x1b[2K");
            }
        }
        Progress::Phase(name) => detrc::phases::end(name),
        Progress::Precision(line) => {
            if !quiet {
                eprintln!("  {line}");
            }
        }
        Progress::Retrying { failed, tol } => {
            if !a.quiet {
                eprintln!(
                    "note: the model compiled at its traced batch and generalised failed \
                     verification ({}); compiling it with the batch left symbolic",
                    failed.failure_message(tol)
                );
            }
        }
    };
    let mode = match a.external_data.as_str() {
        "always" => ExternalData::Always,
        "never" => ExternalData::Never,
        _ => ExternalData::Auto,
    };
    let output = Output::File {
        path: &a.output,
        mode,
    };
    let outcome = session
        .run(&Source::Path(&a.input), output, &mut on)
        .map_err(|e| failed(e, &a))?;
    let (compiled, compile_s, verification, precision) = (
        outcome.compiled,
        outcome.seconds,
        outcome.verification,
        outcome.precision,
    );
    if let Some(dep) = &a.depfile {
        write_depfile(dep, &a.output, &a.input)?;
    }

    if let Some(r) = verification.as_ref().and_then(|v| v.rewrites.as_ref()) {
        let untrusted = r.untrusted();
        if !untrusted.is_empty() && !a.quiet {
            eprintln!(
                "note: onnxruntime changed the models with {} before running them, which \
                 detrc does not know to compute exactly what the graph says (a library newer \
                 than the 1.31 its list of fusions was made for?); the verification is weaker \
                 for it",
                untrusted.join(", ")
            );
        }
    }
    // A dynamic-batch model the route gave up on is never compiled as declared silently: the
    // pass log says it too, but --json hides the log.
    if let Some(route) = compiled
        .batch_route
        .as_ref()
        .filter(|r| r.status == "gave-up")
    {
        if a.json && !a.quiet {
            eprintln!("warning: {}", route.describe());
        }
    }
    let before: usize = compiled.ops_before.values().sum();
    let after: usize = compiled.ops_after.values().sum();
    if let Some(r) = &a.report {
        let j = serde_json::json!({
            "input": a.input,
            "output": a.output,
            "nodes_before": before,
            "nodes_after": after,
            "ops_before": compiled.ops_before,
            "ops_after": compiled.ops_after,
            "steps": compiled.reports,
            "batch_route": compiled.batch_route,
            "verification": verification,
            "precision": precision,
        });
        detrc::emit::atomic::write_bytes(r, serde_json::to_string_pretty(&j)?.as_bytes())?;
    }
    if a.json {
        let j = serde_json::json!({
            "input": a.input, "output": a.output,
            "nodes_before": before, "nodes_after": after,
            "ops_before": compiled.ops_before, "ops_after": compiled.ops_after,
            "seconds": compile_s,
            "verified": verification.as_ref().map(|v| v.ok()),
            "verified_with": verification.as_ref().map(|v| v.runtime.clone()),
            "runtime_rewrites": verification.as_ref().and_then(|v| v.rewrites.clone()),
            "precision": precision,
            "batch_route": compiled.batch_route,
        });
        println!("{}", serde_json::to_string(&j)?);
    } else if !a.quiet {
        print_table(&compiled.ops_before, &compiled.ops_after);
        eprintln!(
            "compiled {} -> {}: {before} -> {after} nodes in {compile_s:.2}s{}",
            a.input.display(),
            a.output.display(),
            match &verification {
                Some(v) => format!(
                    ", verified with {} (max |diff| {:.2e})",
                    v.runtime,
                    v.outputs.iter().map(|o| o.max_abs).fold(0f32, f32::max)
                ),
                None => String::new(),
            }
        );
        if let Some(p) = &precision {
            print_precision(p);
        }
    }
    Ok(())
}

/// The options of `--precision`, checked before any work: calibration images are read (their
/// headers) so a bad folder fails fast.
fn precision_options(
    a: &Args,
    p: detrc::build::Precision,
    runtime: detrc::reference::Runtime,
) -> Result<detrc::driver::PrecisionOptions, Exit> {
    use detrc::build::Precision;
    let usage = |m: String| Exit(EXIT_USAGE, anyhow!(m));
    let quantized = matches!(p, Precision::Int8 | Precision::Fp8);
    let options = a.cal.options()?;
    if quantized && a.cal.calibration.is_none() && !options.weight_only {
        return Err(usage(format!(
            "--precision {} needs --calibration DIR (images), or --weights-only",
            p.as_str()
        )));
    }
    if a.fp16_headroom.is_nan() || a.fp16_headroom < 1.0 {
        return Err(usage("--fp16-headroom must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&a.fp16_min_recall) {
        return Err(usage("--fp16-min-recall must be within 0..=1".into()));
    }
    let calibration = match &a.cal.calibration {
        Some(dir) => Some(detrc::driver::CalibrationSet {
            files: detrc::quant::image_files(dir, a.cal.max_images)
                .map_err(|e| Exit(super::EXIT_ERROR, anyhow!(e)))?,
            options,
        }),
        None => None,
    };
    Ok(detrc::driver::PrecisionOptions {
        precision: p,
        fp16: detrc::driver::Fp16Options {
            keep: a.fp16_keep.clone(),
            guard: !a.no_fp16_guard,
            headroom: a.fp16_headroom,
            min_sqnr_db: a.fp16_min_sqnr,
            min_recall: a.fp16_min_recall,
            ..Default::default()
        },
        calibration,
        seeds: (0..a.verify_runs.max(1)).map(|i| a.seed + i).collect(),
        runtime,
    })
}

fn print_precision(p: &detrc::driver::PrecisionReport) {
    eprintln!("precision {}:", p.precision);
    for s in &p.steps {
        eprintln!("  {s}");
    }
    if let Some(r) = &p.fp16 {
        print_fp16(r);
    }
    eprintln!("build it with: {}", p.trtexec);
}

fn print_fp16(r: &detrc::driver::Fp16Report) {
    for k in &r.kept {
        eprintln!("  kept fp32: {} ({}): {}", k.node, k.op_type, k.reason);
    }
    if let Some(d) = &r.detections {
        eprintln!(
            "  fp16 check on {}: sorted scores {:.1} dB, {} of {} detections kept ({} decode, \
             score >= {})",
            r.inputs, d.sorted_scores_sqnr_db, d.matched, d.fp32_detections, d.decode, d.threshold
        );
    } else {
        eprintln!("  fp16 check on {}:", r.inputs);
    }
    for o in &r.outputs {
        eprintln!(
            "    {:<24} {:>6.1} dB  max |diff| {:.2e}{}",
            o.name,
            o.sqnr_db,
            o.max_abs_diff,
            if o.non_finite > 0 {
                format!("  {} inf/NaN", o.non_finite)
            } else {
                String::new()
            }
        );
    }
}

/// A failed session as the command line says it: each step with its own context, a bad
/// `--input-shape` or batch a usage error, a mismatch exit code 3.
fn failed(e: SessionError, a: &Args) -> Exit {
    let write_err = || format!("cannot write {}", a.output.display());
    match e {
        SessionError::Compile(e) => {
            let code = match e {
                detrc::Error::InputShape { .. } => EXIT_USAGE,
                _ => super::EXIT_ERROR,
            };
            Exit(
                code,
                anyhow!(e).context(format!("cannot compile {}", a.input.display())),
            )
        }
        SessionError::Original(e) => Exit::from(
            anyhow!(e).context(format!("verification could not run {}", a.input.display())),
        ),
        SessionError::Verify(e) => Exit::from(anyhow!(e).context("verification could not run")),
        SessionError::Write(e) => Exit::from(anyhow!(e).context(write_err())),
        SessionError::ReadBack(e) => {
            Exit::from(anyhow!(e).context(format!("cannot read back {}", a.output.display())))
        }
        e @ SessionError::Mismatch { .. } => Exit(EXIT_VERIFY, anyhow!(e.to_string())),
        SessionError::Precision(e) => {
            use detrc::driver::PrecisionError as P;
            match e {
                P::Fp16Check(r) => {
                    if !a.quiet {
                        print_fp16(&r);
                        for o in r.first_overflows.iter().take(5) {
                            eprintln!(
                                "  first overflow: {} (made by {}), |x| up to {:.3e}",
                                o.tensor, o.node, o.max_abs
                            );
                        }
                    }
                    Exit(
                        EXIT_VERIFY,
                        anyhow!(
                            "{}; nothing written (keep more in fp32 with --fp16-keep, or use \
                             --precision fp32)",
                            r.failure.clone().unwrap_or_default()
                        ),
                    )
                }
                e @ (P::AlreadyFp16(_) | P::AlreadyQuantized(_) | P::NoCalibration(_)) => {
                    Exit(EXIT_USAGE, anyhow!(e))
                }
                e => Exit(
                    super::EXIT_ERROR,
                    anyhow!(e)
                        .context(format!("cannot apply --precision to {}", a.input.display())),
                ),
            }
        }
    }
}

fn print_table(
    before: &std::collections::BTreeMap<String, usize>,
    after: &std::collections::BTreeMap<String, usize>,
) {
    let ops: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut rows: Vec<(&String, usize, usize)> = ops
        .into_iter()
        .map(|o| (o, *before.get(o).unwrap_or(&0), *after.get(o).unwrap_or(&0)))
        .collect();
    rows.sort_by(|x, y| y.1.max(y.2).cmp(&x.1.max(x.2)).then(x.0.cmp(y.0)));
    eprintln!("  {:<24} {:>7} {:>7}", "op", "before", "after");
    for (o, b, a) in rows {
        let mark = if b != a { "" } else { "  =" };
        eprintln!("  {o:<24} {b:>7} {a:>7}{mark}");
    }
    eprintln!(
        "  {:<24} {:>7} {:>7}",
        "total",
        before.values().sum::<usize>(),
        after.values().sum::<usize>()
    );
}

/// `OUT: IN [IN's external data files]`, with spaces escaped as Make expects.
pub fn write_depfile(dep: &Path, output: &Path, input: &Path) -> Result<(), Exit> {
    let esc = |p: &Path| p.display().to_string().replace(' ', "\\ ");
    let mut deps = vec![esc(input)];
    let proto = detrc::load::load_proto(input)?;
    let dir = input.parent().unwrap_or(Path::new(""));
    for loc in detrc::load::external::locations(&proto) {
        deps.push(esc(&dir.join(loc)));
    }
    let text = format!("{}: {}\n", esc(output), deps.join(" "));
    detrc::emit::atomic::write_bytes(dep, text.as_bytes())?;
    Ok(())
}
