//! `detrc._detrc`, the extension module of the Python package: thin calls into the detrc
//! library. The public API, its argument checking and its documentation are in
//! `python/detrc/__init__.py`; this side takes already checked values.
//!
//! Every call releases the GIL for the work, catches panics (a bug must not take the
//! interpreter down) and raises errors as the `detrc.Error` subclasses of `detrc/_errors.py`,
//! picked by category.

use std::ffi::OsString;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use detrc::build::{BuildError, BuildOptions, EngineError, EngineOptions, Precision, ShapeProfile};
use detrc::driver::{Output, Session, SessionError, ShapeOptions, Source, VerifyOptions};
use detrc::emit::ExternalData;
use detrc::pass::Pipeline;
use detrc::reference::compare::Tolerance;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

mod run;

/// Why a call failed, before it becomes a Python exception (which needs the GIL back).
enum Failure {
    /// A category of `detrc._errors.BY_CATEGORY`, the message, and extra data as JSON.
    Categorized {
        category: &'static str,
        message: String,
        data: Option<String>,
    },
    Panic(String),
}

impl Failure {
    fn new(category: &'static str, message: impl Into<String>) -> Failure {
        Failure::Categorized {
            category,
            message: message.into(),
            data: None,
        }
    }

    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let (category, message, data) = match self {
            Failure::Categorized {
                category,
                message,
                data,
            } => (category, message, data),
            Failure::Panic(m) => (
                "internal",
                format!("internal error in detrc (please report it): {m}"),
                None,
            ),
        };
        let made = py
            .import("detrc._errors")
            .and_then(|m| m.getattr("_make"))
            .and_then(|make| make.call1((category, message, data)));
        match made {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    }
}

impl From<detrc::Error> for Failure {
    fn from(e: detrc::Error) -> Failure {
        Failure::new(category(&e), e.to_string())
    }
}

impl From<BuildError> for Failure {
    fn from(e: BuildError) -> Failure {
        let category = match &e {
            BuildError::Model(m) => category(m),
            BuildError::AlreadyFp16 { .. }
            | BuildError::AlreadyQuantized { .. }
            | BuildError::NoCalibration(_)
            | BuildError::Fp8Target(_)
            | BuildError::Engine(
                EngineError::UnsupportedTarget { .. } | EngineError::InvalidOptions(_),
            ) => "usage",
            BuildError::Engine(_) | BuildError::Fp16(_) | BuildError::Quant(_) => "build",
            BuildError::Fp16Check(_) => "verification",
        };
        Failure::new(category, e.to_string())
    }
}

/// The Python exception class of each library error, the same split as the CLI's exit codes
/// (usage 2, verification 3, the rest 1) with the model's own faults told apart.
fn category(e: &detrc::Error) -> &'static str {
    use detrc::Error as E;
    match e {
        E::Read { .. } | E::Write { .. } => "file",
        E::Empty { .. }
        | E::Decode { .. }
        | E::ExternalData { .. }
        | E::Invalid(_)
        | E::Unsupported(_) => "model",
        E::Validation { stage, .. } if stage == "loading" => "model",
        E::Validation { .. } | E::Pass { .. } => "compile",
        E::UnknownPass { .. } | E::InputShape { .. } => "usage",
        E::Runtime(_) | E::OnnxRuntime { .. } => "reference",
        E::Verification(_) => "verification",
    }
}

/// Runs `f` without the GIL, turning a panic into a [`Failure`] instead of an abort or a
/// `PanicException` (a BaseException that `except Exception` would not catch).
fn guarded<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, Failure> + Send) -> PyResult<T> {
    let r = py.detach(|| {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let m = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(Failure::Panic(m))
        })
    });
    r.map_err(|f| f.into_pyerr(py))
}

fn source<'a>(
    path: &'a Option<PathBuf>,
    data: Option<&'a [u8]>,
    label: &'a str,
    base_dir: &'a Option<PathBuf>,
) -> Result<Source<'a>, Failure> {
    match (path, data) {
        (Some(p), None) => Ok(Source::Path(p)),
        (None, Some(data)) => Ok(Source::Bytes {
            data,
            label,
            base_dir: base_dir.as_deref().unwrap_or(Path::new(".")),
        }),
        _ => Err(Failure::new("usage", "give exactly one of a path or bytes")),
    }
}

/// `detrc.compile`'s options, one dict key each (the Python side always passes every key).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct CompileOptions {
    passes: Option<Vec<String>>,
    skip: Vec<String>,
    /// "keep" or "gather" (see `detrc compile --gridsample`).
    gridsample: String,
    verify: bool,
    seed: u64,
    verify_runs: u64,
    atol: f32,
    rtol: f32,
    strict: bool,
    max_iterations: usize,
    max_steps: Option<usize>,
    fold_budget: usize,
    external_data: String,
    dump_ir: Option<PathBuf>,
    output: Option<PathBuf>,
    base_dir: Option<PathBuf>,
    /// Return the compiled model's bytes (in-memory inputs); a path input with `output` does
    /// not need them.
    return_bytes: bool,
    /// `compile --batch`: None, "dynamic" or a size.
    batch: Option<String>,
    /// `compile --input-shape`, each "NAME:DIMS".
    input_shapes: Vec<String>,
    /// `compile --verify-batches`.
    verify_batches: Vec<i64>,
    /// `compile --precision`: None, "fp32", "fp16", "int8" or "fp8".
    precision: Option<String>,
    /// `compile --calibration`: images for int8/fp8, and the fp16 check's inputs.
    calibration: Option<PathBuf>,
    /// `compile --fp16-keep`.
    fp16_keep: Vec<String>,
    /// Not `compile --no-fp16-guard`.
    fp16_guard: bool,
}

/// Compiles a model the way `detrc compile` does; returns (encoded model or None, report JSON).
#[pyfunction]
#[pyo3(signature = (path, data, label, options))]
fn compile<'py>(
    py: Python<'py>,
    path: Option<PathBuf>,
    data: Option<&[u8]>,
    label: &str,
    options: CompileOptions,
) -> PyResult<(Option<Bound<'py, PyBytes>>, String)> {
    let o = &options;
    let (bytes, report) = guarded(py, || {
        let src = source(&path, data, label, &o.base_dir)?;
        compile_impl(&src, o)
    })?;
    Ok((bytes.map(|b| PyBytes::new(py, &b)), report))
}

fn compile_impl(
    src: &Source<'_>,
    o: &CompileOptions,
) -> Result<(Option<Vec<u8>>, String), Failure> {
    let mode = match o.external_data.as_str() {
        "auto" => ExternalData::Auto,
        "always" => ExternalData::Always,
        "never" => ExternalData::Never,
        other => {
            return Err(Failure::new(
                "usage",
                format!("external_data={other:?}: use \"auto\", \"always\" or \"never\""),
            ))
        }
    };
    let mut shapes = ShapeOptions::default();
    if o.batch.as_deref() == Some("plain") {
        shapes.plain = true;
    } else if let Some(b) = &o.batch {
        shapes.batch = b
            .parse()
            .map_err(|e: String| Failure::new("usage", format!("batch={b:?}: {e}")))?;
    }
    for spec in &o.input_shapes {
        let parsed = detrc::driver::parse_input_shape(spec)
            .map_err(|e| Failure::new("usage", format!("input_shapes: {e}")))?;
        shapes.input_shapes.push(parsed);
    }
    if o.verify_batches.iter().any(|&b| b < 1) {
        return Err(Failure::new(
            "usage",
            "verify_batches: batch sizes are at least 1",
        ));
    }
    let mut passes = detrc::passes::select(o.passes.as_deref(), &o.skip)?;
    detrc::passes::tensorrt::GridSample::parse(&o.gridsample)
        .map_err(|e| Failure::new("usage", e))?
        .apply_to(&mut passes);
    let mut pipeline = Pipeline::new(passes);
    pipeline.max_iterations = o.max_iterations.max(1);
    pipeline.max_steps = o.max_steps;
    pipeline.dump_dir = o.dump_ir.clone();
    pipeline.context.strict = o.strict;
    pipeline.context.fold_budget_bytes = o.fold_budget;

    let precision = match &o.precision {
        None => None,
        Some(p) => Some(precision_options(o, p)?),
    };
    let session = Session {
        pipeline,
        shapes,
        precision,
        verify: o.verify.then(|| VerifyOptions {
            seeds: (0..o.verify_runs.max(1)).map(|i| o.seed + i).collect(),
            tol: Tolerance {
                atol: o.atol,
                rtol: o.rtol,
            },
            batches: o.verify_batches.clone(),
            // The default choice (onnxruntime when installed, else tract).
            runtime: None,
        }),
    };
    let output = Output::Memory {
        bytes: o.return_bytes,
    };
    let outcome = session.run(src, output, &mut |_| {}).map_err(|e| match e {
        SessionError::Mismatch { verification, tol } => Failure::Categorized {
            category: "verification",
            message: verification.failure_message(tol),
            data: serde_json::to_string(&verification).ok(),
        },
        SessionError::Precision(e) => {
            use detrc::driver::PrecisionError as P;
            match e {
                P::Fp16Check(r) => Failure::Categorized {
                    category: "verification",
                    message: r.failure.clone().unwrap_or_default(),
                    data: serde_json::to_string(&r).ok(),
                },
                e @ (P::AlreadyFp16(_) | P::AlreadyQuantized(_) | P::NoCalibration(_)) => {
                    Failure::new("usage", e.to_string())
                }
                P::Model(e) => Failure::from(e),
                e => Failure::new("compile", e.to_string()),
            }
        }
        SessionError::Compile(e)
        | SessionError::Original(e)
        | SessionError::Verify(e)
        | SessionError::Write(e)
        | SessionError::ReadBack(e) => Failure::from(e),
    })?;
    let (compiled, seconds, verification, precision) = (
        outcome.compiled,
        outcome.seconds,
        outcome.verification,
        outcome.precision,
    );
    if let Some(out) = &o.output {
        detrc::emit::save(&compiled.model, out, mode)?;
    }
    let report = serde_json::json!({
        "input": src.label(),
        "output": o.output,
        "nodes_before": compiled.ops_before.values().sum::<usize>(),
        "nodes_after": compiled.ops_after.values().sum::<usize>(),
        "ops_before": compiled.ops_before,
        "ops_after": compiled.ops_after,
        "steps": compiled.reports,
        "verification": verification,
        "had_external_data": compiled.had_external_data,
        "batch": compiled.batch,
        "batch_route": compiled.batch_route,
        "seconds": seconds,
        "precision": precision,
    });
    Ok((outcome.bytes, report.to_string()))
}

/// `compile --precision`'s options from the Python ones (the CLI's defaults otherwise).
fn precision_options(
    o: &CompileOptions,
    p: &str,
) -> Result<detrc::driver::PrecisionOptions, Failure> {
    let precision: Precision = p
        .parse()
        .map_err(|e: String| Failure::new("usage", format!("precision={p:?}: {e}")))?;
    let quantized = precision.quant_format().is_some();
    let calibration = match &o.calibration {
        Some(dir) => Some(detrc::driver::CalibrationSet {
            files: detrc::quant::image_files(dir, None)
                .map_err(|e| Failure::new("file", e.to_string()))?,
            options: detrc::quant::QuantizeOptions {
                method: detrc::quant::Method::parse("mse", 99.99)
                    .map_err(|e| Failure::new("usage", e))?,
                format: detrc::quant::Format::Int8,
                residual: true,
                weight_only: false,
                resize: Default::default(),
            },
        }),
        None if quantized => {
            return Err(Failure::new(
                "usage",
                format!("precision={p:?} needs calibration=DIR (a folder of images)"),
            ))
        }
        None => None,
    };
    let runtime = detrc::reference::RuntimeChoice::default()
        .resolve()
        .map_err(Failure::from)?
        .0;
    Ok(detrc::driver::PrecisionOptions {
        precision,
        fp16: detrc::driver::Fp16Options {
            keep: o.fp16_keep.clone(),
            guard: o.fp16_guard,
            ..Default::default()
        },
        calibration,
        seeds: (0..o.verify_runs.max(1)).map(|i| o.seed + i).collect(),
        runtime,
    })
}

/// `detrc inspect --json` of a model (path or bytes) or of an engine's sidecar (path).
#[pyfunction]
#[pyo3(signature = (path, data, label, base_dir))]
fn inspect(
    py: Python<'_>,
    path: Option<PathBuf>,
    data: Option<&[u8]>,
    label: &str,
    base_dir: Option<PathBuf>,
) -> PyResult<String> {
    guarded(py, || {
        let src = source(&path, data, label, &base_dir)?;
        if let Source::Path(p) = src {
            if detrc::build::looks_like_engine(p) {
                return inspect_engine(p);
            }
        }
        match src.load() {
            Ok((g, _)) => {
                let mut j = serde_json::to_value(detrc::driver::summary(&g))
                    .map_err(|e| Failure::new("internal", e.to_string()))?;
                j["model"] = serde_json::json!(src.label());
                j["kind"] = serde_json::json!("model");
                Ok(j.to_string())
            }
            // An engine under another name: its sidecar tells (as the CLI does).
            Err(_) if matches!(src, Source::Path(p) if detrc::build::sidecar_path(p).is_file()) => {
                inspect_engine(path.as_deref().unwrap_or(Path::new("")))
            }
            Err(e) => Err(e.into()),
        }
    })
}

fn inspect_engine(engine: &Path) -> Result<String, Failure> {
    let sc_path = detrc::build::sidecar_path(engine);
    let text = std::fs::read_to_string(&sc_path).map_err(|cause| detrc::Error::Read {
        path: sc_path.clone(),
        cause,
    })?;
    let sc = detrc::build::Sidecar::from_json(&text).map_err(|e| {
        Failure::new(
            "model",
            format!("{} is not a detrc engine sidecar: {e}", sc_path.display()),
        )
    })?;
    let mut j = serde_json::to_value(&sc).map_err(|e| Failure::new("internal", e.to_string()))?;
    j["engine_check"] = serde_json::json!(detrc::build::engine_check(engine, &sc));
    j["kind"] = serde_json::json!("engine");
    Ok(j.to_string())
}

/// One optimization profile entry: (input name, min, opt, max).
type ShapeArg = (String, Vec<i64>, Vec<i64>, Vec<i64>);

/// `detrc.build`'s options, one dict key each.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct BuildArgs {
    target: Vec<String>,
    /// `None`: what the model computes in (see `detrc::build::model_precision`).
    precision: Option<String>,
    fp16_keep: Vec<String>,
    /// "keep" or "gather" (see `detrc build --gridsample`).
    gridsample: String,
    shapes: Vec<ShapeArg>,
    workspace: Option<u64>,
    opt_level: Option<u32>,
    tensorrt_dir: Option<PathBuf>,
    /// precision="int8": calibration images (a model without Q/DQ nodes needs them).
    calibration: Option<PathBuf>,
    /// max, percentile, entropy or mse.
    method: String,
    percentile: f64,
    max_images: Option<usize>,
    /// "torch" or "pil": how calibration images are resized (`detrc build --resize`).
    resize: String,
}

/// Builds a TensorRT-RTX engine like `detrc build`; returns the sidecar JSON.
#[pyfunction]
#[pyo3(signature = (model, output, options))]
fn build(py: Python<'_>, model: PathBuf, output: PathBuf, options: BuildArgs) -> PyResult<String> {
    let a = &options;
    guarded(py, || {
        let precision: Precision = match &a.precision {
            Some(p) => p.parse().map_err(|e| Failure::new("usage", e))?,
            None => detrc::build::model_precision(&model)?.unwrap_or_default(),
        };
        if !a.fp16_keep.is_empty() && precision != Precision::Fp16 {
            return Err(Failure::new("usage", "fp16_keep needs precision=\"fp16\""));
        }
        let method = detrc::quant::Method::parse(&a.method, a.percentile)
            .map_err(|e| Failure::new("usage", format!("method={:?}: {e}", a.method)))?;
        if a.max_images == Some(0) {
            return Err(Failure::new("usage", "max_images must be at least 1"));
        }
        let resize = match a.resize.as_str() {
            "torch" => detrc::run::Resize::Torch,
            "pil" => detrc::run::Resize::Pil,
            other => {
                return Err(Failure::new(
                    "usage",
                    format!("resize={other:?}: expected \"torch\" or \"pil\""),
                ))
            }
        };
        let calibration = match &a.calibration {
            Some(dir) if precision.quant_format().is_some() => Some(detrc::build::Calibration {
                dir: dir.clone(),
                max_images: a.max_images,
                options: detrc::quant::QuantizeOptions {
                    method,
                    format: detrc::quant::Format::Int8,
                    residual: true,
                    weight_only: false,
                    resize,
                },
            }),
            Some(_) => {
                return Err(Failure::new(
                    "usage",
                    "calibration needs precision=\"int8\" or \"fp8\"",
                ))
            }
            None => None,
        };
        let opts = BuildOptions {
            calibration,
            engine: EngineOptions {
                targets: a.target.clone(),
                workspace_mb: a.workspace,
                opt_level: a.opt_level,
                profiles: a
                    .shapes
                    .iter()
                    .map(|(name, min, opt, max)| ShapeProfile {
                        name: name.clone(),
                        min: min.clone(),
                        opt: opt.clone(),
                        max: max.clone(),
                    })
                    .collect(),
            },
            precision,
            fp16_keep: a.fp16_keep.clone(),
            tensorrt_dir: a.tensorrt_dir.clone(),
            gridsample: detrc::passes::tensorrt::GridSample::parse(&a.gridsample)
                .map_err(|e| Failure::new("usage", e))?,
        };
        let sc = detrc::build::build(&model, &output, &opts, &mut |_| {})?;
        Ok(sc.to_json())
    })
}

/// Every pass as (name, about, DETR-specific, in the default pipeline), in default order.
#[pyfunction]
fn passes() -> Vec<(&'static str, &'static str, bool, bool)> {
    let default = detrc::passes::registry();
    detrc::passes::all()
        .iter()
        .map(|p| {
            let in_default = default.iter().any(|d| d.name() == p.name());
            (p.name(), p.about(), p.detr_specific(), in_default)
        })
        .collect()
}

/// Runs the `detrc` command line on `argv` (argv[0] is the program name) in this process and
/// returns its exit code, as the cargo-built binary would exit.
#[pyfunction]
fn cli(py: Python<'_>, argv: Vec<OsString>) -> u8 {
    py.detach(|| {
        let code = catch_unwind(AssertUnwindSafe(|| detrc::cli::run_from(argv)))
            // What a panicking Rust program exits with.
            .unwrap_or(101);
        // A cargo binary flushes stdout when main returns; a library call must do it itself
        // (`build --json` ends without a newline).
        let _ = std::io::stdout().flush();
        code
    })
}

#[pymodule]
fn _detrc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(build, m)?)?;
    m.add_function(wrap_pyfunction!(run::run, m)?)?;
    m.add_function(wrap_pyfunction!(passes, m)?)?;
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_TARGETS", detrc::build::DEFAULT_TARGETS)?;
    Ok(())
}
