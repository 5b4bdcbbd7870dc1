//! Building TensorRT engines from ONNX models: prepare the model (compile it if detrc has not,
//! convert it to fp16 if asked), hand it to TensorRT-RTX, and describe the result in a JSON
//! sidecar next to the engine.
//!
//! A model counts as compiled when its `metadata_props` has `detrc.compiled` (set by
//! `detrc compile`, see [`crate::driver::mark_compiled`]). Checking the metadata, rather than
//! running the default pipeline on every model, keeps the user's choices: a model compiled
//! with `--passes` or `--skip` is built as it is, not re-optimized behind their back.

pub mod engine;
pub mod sidecar;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use engine::{BuiltEngine, EngineError, EngineOptions, IoDesc, ShapeProfile};
pub use sidecar::Sidecar;

pub use crate::digest::sha256_hex;
use crate::pass::{Event, Pipeline, Status};
use crate::passes::to_fp16;

/// GPU architectures `detrc build` targets when not told (comma separated).
#[cfg(not(feature = "enterprise"))]
pub const DEFAULT_TARGETS: &str = "sm80,sm86,sm89,sm120";
#[cfg(feature = "enterprise")]
pub const DEFAULT_TARGETS: &str = "current";

pub use crate::passes::precision::Precision;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Model(#[from] crate::Error),
    #[error("cannot convert the model to fp16: {0}")]
    Fp16(String),
    /// The fp16 model loses accuracy past the check's thresholds even with the guard.
    #[error(
        "{}; no engine built (keep more in fp32 with --fp16-keep, or build fp32)",
        .0.failure.clone().unwrap_or_default()
    )]
    Fp16Check(Box<crate::driver::Fp16Report>),
    #[error(
        "{} computes in fp16 already; build it with --precision fp16 (or without --precision), \
         or build the fp32 model",
        path.display()
    )]
    AlreadyFp16 { path: PathBuf },
    #[error(
        "{} has {format} Q/DQ nodes (it is quantized); build it with --precision {format}",
        path.display()
    )]
    AlreadyQuantized { path: PathBuf, format: &'static str },
    #[error("--precision {0} needs --calibration DIR (images) for a model without Q/DQ nodes")]
    NoCalibration(&'static str),
    #[error(
        "--precision fp8 needs Ada (sm89) or a newer GPU; {0} has no FP8 tensor cores and \
         TensorRT-RTX refuses it (use --precision int8 for it)"
    )]
    Fp8Target(String),
    #[error(transparent)]
    Quant(#[from] crate::quant::QuantError),
}

/// Calibration settings of an int8 build.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub dir: PathBuf,
    pub max_images: Option<usize>,
    pub options: crate::quant::QuantizeOptions,
}

/// Everything that decides what engine comes out, besides the model itself.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub engine: EngineOptions,
    pub precision: Precision,
    /// Op types or node names kept in fp32 on top of the `to-fp16` defaults.
    pub fp16_keep: Vec<String>,
    /// Folder with the TensorRT-RTX libraries (see [`engine`] for the search order).
    pub tensorrt_dir: Option<PathBuf>,
    /// For int8 builds of a model without Q/DQ nodes.
    pub calibration: Option<Calibration>,
    /// GridSample kept, or rewritten as gathers before any precision change (so the sampling
    /// coordinates it computes are float32 ops that to-fp16 then decides on like any other).
    pub gridsample: crate::passes::tensorrt::GridSample,
}

/// The ONNX model that goes to TensorRT, and how it came to be.
pub struct Prepared {
    pub onnx: Vec<u8>,
    /// sha256 of the model file as given.
    pub source_sha256: String,
    /// True if the model had been compiled by detrc before; false if it was compiled here.
    pub was_compiled: bool,
    /// One line per pass step that changed something (compile pipeline and fp16).
    pub steps: Vec<String>,
    /// How an int8 model was calibrated (from its metadata).
    pub quantization: Option<sidecar::Quantization>,
    pub seconds: f64,
}

/// Loads `model`, compiles it with the default pipeline unless detrc compiled it already, and
/// applies `to-fp16` for fp16 builds. Returns the encoded ONNX.
/// Loads `model` into the IR, compiled: as it is if detrc compiled it already, else through
/// the default pipeline. Returns the graph, whether it had been compiled, and one line per
/// pass step that changed something.
pub fn load_compiled(
    model: &Path,
    on: &mut dyn FnMut(Event),
) -> Result<(crate::ir::Graph, bool, Vec<String>), crate::Error> {
    let proto = crate::load::load_proto(model)?;
    let was_compiled = crate::driver::compiled_by(&proto).is_some();
    drop(proto);
    let mut steps = Vec::new();
    let g = if was_compiled {
        crate::driver::load_graph(model)?.0
    } else {
        let pipeline = Pipeline::new(crate::passes::registry());
        let c = crate::driver::compile(model, &pipeline, on)?;
        // "not-applicable" is the normal answer of a pass in later rounds or on other models;
        // the sidecar keeps only what changed the model or failed.
        for r in c
            .reports
            .iter()
            .filter(|r| matches!(r.status, Status::Changed | Status::RolledBack))
        {
            steps.push(format!("{}: {} {}", r.pass, r.status, r.details.join("; ")));
        }
        let mut m = c.model;
        crate::driver::mark_compiled(&mut m);
        crate::ir::from_onnx::import(m)?
    };
    Ok((g, was_compiled, steps))
}

/// Loads `model`, compiles it with the default pipeline unless detrc compiled it already, and
/// applies `to-fp16` for fp16 builds, or calibrates and quantizes for int8 builds of a model
/// without Q/DQ nodes. Returns the encoded ONNX.
pub fn prepare(
    model: &Path,
    opts: &BuildOptions,
    on: &mut dyn FnMut(Event),
) -> Result<Prepared, BuildError> {
    let t0 = Instant::now();
    let source_sha256 = sha256_hex(&crate::load::map_file(model)?);
    let (mut g, was_compiled, mut steps) = load_compiled(model, on)?;
    if opts.gridsample == crate::passes::tensorrt::GridSample::Gather {
        let mut passes = Vec::new();
        opts.gridsample.apply_to(&mut passes);
        let c = Pipeline::new(passes).run(&mut g, on)?;
        for r in c
            .iter()
            .filter(|r| matches!(r.status, Status::Changed | Status::RolledBack))
        {
            steps.push(format!("{}: {} {}", r.pass, r.status, r.details.join("; ")));
        }
    }
    let mut quantization = None;
    let quantized = crate::passes::quantize::qdq_format(&g);
    let wanted = opts.precision.quant_format();
    match (wanted, quantized) {
        (Some(format), None) => {
            let cal = opts
                .calibration
                .as_ref()
                .ok_or(BuildError::NoCalibration(opts.precision.as_str()))?;
            let files = if cal.options.weight_only {
                Vec::new()
            } else {
                crate::quant::image_files(&cal.dir, cal.max_images)?
            };
            let options = crate::quant::QuantizeOptions {
                format,
                ..cal.options.clone()
            };
            let (s, _, _) = crate::quant::quantize_graph(&mut g, &files, &options)?;
            steps.extend(s.lines().into_iter().map(|l| format!("quantize: {l}")));
        }
        (Some(w), Some(q)) if w == q => {}
        (_, Some(q)) => {
            return Err(BuildError::AlreadyQuantized {
                path: model.to_path_buf(),
                format: q.as_str(),
            })
        }
        (None, None) => {}
    }
    if wanted.is_some() {
        let meta = |k: &str| crate::passes::quantize::meta(&g, k).map(str::to_string);
        quantization = Some(sidecar::Quantization {
            method: meta(crate::passes::quantize::METHOD_KEY).unwrap_or_else(|| "external".into()),
            images: meta(crate::passes::quantize::IMAGES_KEY)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            scales_sha256: meta(crate::passes::quantize::SCALES_KEY).unwrap_or_default(),
        });
    }
    let already_fp16 = computes_in_fp16(&g);
    match opts.precision {
        Precision::Fp32 if already_fp16 => {
            return Err(BuildError::AlreadyFp16 {
                path: model.to_path_buf(),
            })
        }
        Precision::Fp16 if !already_fp16 => {
            // The same checked conversion as `compile --precision fp16`: fp16 storage emulated
            // on seeded inputs, overflowing operators kept in fp32, and no engine from a model
            // that still loses its detections.
            let fp16 = crate::driver::Fp16Options {
                keep: opts.fp16_keep.clone(),
                ..Default::default()
            };
            let runtime = crate::reference::RuntimeChoice::default().resolve()?.0;
            let mut say = |line: String| steps.push(line);
            let (converted, r) = crate::driver::fp16_convert_checked(
                &g,
                &fp16,
                &crate::driver::CheckInputs::Seeds(vec![0]),
                &runtime,
                &mut say,
            )?;
            if !r.passed {
                return Err(BuildError::Fp16Check(Box::new(r)));
            }
            g = converted;
            steps.push(format!("to-fp16: {}", r.conversion));
            for k in &r.kept {
                steps.push(format!(
                    "fp16 guard kept {} ({}) in fp32: {}",
                    k.node, k.op_type, k.reason
                ));
            }
            if let Some(d) = &r.detections {
                steps.push(format!(
                    "fp16 check on {}: sorted scores {:.1} dB from fp32, {} of {} detections kept",
                    r.inputs, d.sorted_scores_sqnr_db, d.matched, d.fp32_detections
                ));
            }
        }
        _ => {}
    }
    let onnx = crate::emit::encode(&g.export())?;
    Ok(Prepared {
        onnx,
        source_sha256,
        was_compiled,
        steps,
        quantization,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The precision a model states itself, which `detrc build` builds without `--precision`: its
/// Q/DQ nodes (int8 or fp8), or fp16 compute (converted by `to-fp16`, or exported in half as
/// RF-DETR's exporter does for TensorRT 11, which has no precision flags). `None`: fp32, or
/// nothing the graph says.
pub fn model_precision(model: &Path) -> Result<Option<Precision>, BuildError> {
    let (g, _) = crate::driver::load_graph(model)?;
    Ok(match crate::passes::quantize::qdq_format(&g) {
        Some(crate::quant::Format::Int8) => Some(Precision::Int8),
        Some(crate::quant::Format::Fp8) => Some(Precision::Fp8),
        None if computes_in_fp16(&g) => Some(Precision::Fp16),
        None => None,
    })
}

/// The model runs its convolutions and matrix products in fp16: marked by `to-fp16`, or an
/// fp16 input reaches one of them.
fn computes_in_fp16(g: &crate::ir::Graph) -> bool {
    to_fp16::is_fp16(g)
        || g.topo_ops().into_iter().any(|n| {
            ["Conv", "ConvTranspose", "MatMul", "Gemm"]
                .iter()
                .any(|t| g.node(n).is(t))
                && g.inputs(n)
                    .into_iter()
                    .flatten()
                    .any(|p| g.ty(p).is_some_and(|t| t.dtype == crate::ir::DType::F16))
        })
}

/// Where the sidecar of `engine` lives: `<engine file name>.json` beside it.
pub fn sidecar_path(engine: &Path) -> PathBuf {
    let mut name = engine.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    engine.with_file_name(name)
}

/// File extensions TensorRT engines commonly have.
const ENGINE_EXTENSIONS: &[&str] = &["engine", "plan", "trt"];

/// True for the file names engines usually have (`detrc inspect` then reads the sidecar).
pub fn looks_like_engine(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ENGINE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Whether `engine` is still the file `sc` describes. The sidecar may describe an engine that
/// was replaced since; callers say so rather than trust it.
pub fn engine_check(engine: &Path, sc: &Sidecar) -> &'static str {
    match std::fs::read(engine) {
        Ok(bytes) if sha256_hex(&bytes) == sc.engine.sha256 => "matches sidecar",
        Ok(_) => "DIFFERS from the sidecar's sha256 (replaced or corrupted?)",
        Err(_) => "missing",
    }
}

/// The whole `detrc build`: prepare, build, then write the engine and its sidecar. On any
/// error nothing is written; if the sidecar cannot be written the engine is removed again,
/// so an engine on disk always has its description.
pub fn build(
    model: &Path,
    out: &Path,
    opts: &BuildOptions,
    on: &mut dyn FnMut(Event),
) -> Result<Sidecar, BuildError> {
    engine::validate_options(&opts.engine)?;
    if opts.precision == Precision::Fp8 {
        for t in &opts.engine.targets {
            if let engine::Target::Sm(v @ (75 | 80 | 86)) = engine::parse_target(t)? {
                return Err(BuildError::Fp8Target(format!("sm{v}")));
            }
        }
    }
    // Fail on missing libraries before spending minutes compiling a large model.
    engine::tensorrt_version(opts.tensorrt_dir.as_deref())?;
    let prepared = prepare(model, opts, on)?;
    let t = Instant::now();
    let built = engine::build_engine(opts.tensorrt_dir.as_deref(), &prepared.onnx, &opts.engine)?;
    let engine_seconds = t.elapsed().as_secs_f64();
    let sc = Sidecar::new(model, out, opts, &prepared, &built, engine_seconds);
    let json = sc.to_json();
    crate::emit::atomic::write_bytes(out, &built.bytes)?;
    if let Err(e) = crate::emit::atomic::write_bytes(&sidecar_path(out), json.as_bytes()) {
        let _ = std::fs::remove_file(out);
        return Err(e.into());
    }
    Ok(sc)
}
