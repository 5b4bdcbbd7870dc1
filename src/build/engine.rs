//! Build NVIDIA TensorRT-RTX engines from ONNX bytes, ahead of time, on a CPU-only machine.
//!
//! Uses the `trtx` crate (TensorRT-RTX 1.7 bindings), which `dlopen`s two shared libraries at
//! run time:
//!   * `libtensorrt_rtx.so.1.7.1`            (builder)
//!   * `libtensorrt_onnxparser_rtx.so.1.7.1` (ONNX parser)
//!
//! They are found and loaded by [`crate::tensorrt_lib`] (the same loader `detrc run` uses):
//! once per process and never unloaded; asking for a different folder afterwards yields
//! [`EngineError::LibraryConflict`].
//!
//! No GPU, CUDA driver or CUDA runtime is needed: TensorRT-RTX compiles for the requested
//! compute capabilities (`sm80`, `sm86`, `sm89`, `sm120`, `sm121`, and `sm75` for networks without
//! FP32 GEMMs). Networks are strongly typed: an fp16 engine comes from an fp16 ONNX model.
//! Builds are serialized inside the process (one global lock) so TensorRT's log messages can be
//! attributed to the build that produced them.
//!
//! Reproducibility (TensorRT-RTX 1.7.1, measured): single-output models rebuild byte-identically,
//! in-process and across processes. Multi-output models (DETR: pred_logits + pred_boxes) may
//! not: the order of the output entries inside the plan follows heap addresses, so a rebuild can
//! differ (same size, a few hundred bytes). Bind engine I/O by name, never by index. A failed
//! build leaks state into the next build of the process; [`build_engine`] runs a throwaway
//! build after a failure to clear it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use trtx::{
    Builder, DataType, LogHandler, Logger, MemoryPoolType, OnnxParser, OptProfileSelector, Severity,
};

#[doc(hidden)]
#[cfg(not(feature = "enterprise"))]
pub use crate::tensorrt_lib::test_libraries;
pub use crate::tensorrt_lib::{
    compiled_tensorrt_version, ENV_TENSORRT_DIR, FLAVOR, ONNXPARSER_LIB, TENSORRT_LIB,
};
use crate::tensorrt_lib::{lock, LibError, INSTALL_HINT};

/// Names accepted in [`EngineOptions::targets`] (besides the `sm_86` / `8.6` / `86` spellings).
#[cfg(not(feature = "enterprise"))]
pub const VALID_TARGETS: &[&str] = &["sm75", "sm80", "sm86", "sm89", "sm120", "sm121", "current"];
// Datacenter TensorRT 11.4 (trtx feature `enterprise`; compile-checked only): no compute
// capability API, engines are built by and for the GPU present.
#[cfg(feature = "enterprise")]
pub const VALID_TARGETS: &[&str] = &["current"];

/// Shape range of one dynamic input. All entries of [`EngineOptions::profiles`] form ONE
/// TensorRT optimization profile (one entry per dynamic input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeProfile {
    /// ONNX graph input name.
    pub name: String,
    pub min: Vec<i64>,
    pub opt: Vec<i64>,
    pub max: Vec<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Compute capabilities to compile for, e.g. `["sm86"]` or `["sm80","sm86","sm89","sm120"]`.
    /// Must not be empty. `"current"` means the GPU of this machine (needs a GPU).
    pub targets: Vec<String>,
    /// Workspace memory pool limit in MiB (`None`: TensorRT default).
    pub workspace_mb: Option<u64>,
    /// Builder optimization level 0..=5 (`None`: TensorRT default). With TensorRT-RTX 1.7.1 AOT
    /// builds, 0..5 produced the same plan for every model tried (kernels are JIT-compiled on
    /// the target GPU at load time).
    pub opt_level: Option<u32>,
    /// Shape ranges for inputs with dynamic (-1) dimensions; required for each such input.
    pub profiles: Vec<ShapeProfile>,
}

/// One network input or output, as seen by the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoDesc {
    pub name: String,
    /// "float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool", "fp8", ...
    pub dtype: String,
    /// -1 marks a dynamic dimension.
    pub dims: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct BuiltEngine {
    /// The serialized engine (plan).
    pub bytes: Vec<u8>,
    pub inputs: Vec<IoDesc>,
    pub outputs: Vec<IoDesc>,
    /// Version of the loaded library, e.g. "1.7.1.1".
    pub tensorrt_version: String,
    /// Targets it was built for, normalized ("sm86", ...).
    pub targets: Vec<String>,
    /// TensorRT warnings emitted during parse and build, and detrc's own (a default profile).
    pub warnings: Vec<String>,
    /// The optimization profile the engine was built with: the options' entries plus a
    /// batch-1 default for a dynamic batch that had none.
    pub profiles: Vec<ShapeProfile>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{FLAVOR} libraries not found ({detail}). {INSTALL_HINT}")]
    LibraryNotFound { detail: String },

    #[error(
        "TensorRT-RTX is already loaded in this process from {loaded}; cannot switch to {requested}"
    )]
    LibraryConflict { loaded: String, requested: String },

    #[error("unsupported target {name:?}; valid targets: {}", VALID_TARGETS.join(", "))]
    UnsupportedTarget { name: String },

    #[error("invalid engine options: {0}")]
    InvalidOptions(String),

    #[error("the TensorRT ONNX parser rejected the model:\n{}", messages.join("\n"))]
    ParseFailed { messages: Vec<String> },

    #[error("TensorRT engine build failed:\n{}", messages.join("\n"))]
    BuildFailed { messages: Vec<String> },

    #[error("TensorRT error: {0}")]
    Trt(String),
}

impl From<LibError> for EngineError {
    fn from(e: LibError) -> EngineError {
        match e {
            LibError::NotFound { detail } => EngineError::LibraryNotFound { detail },
            LibError::Conflict { loaded, requested } => {
                EngineError::LibraryConflict { loaded, requested }
            }
            LibError::Symbol(m) => EngineError::Trt(m),
        }
    }
}

/// Version of the TensorRT-RTX library ("1.7.1.1"), loading the libraries if needed.
pub fn tensorrt_version(lib_dir: Option<&Path>) -> Result<String, EngineError> {
    Ok(crate::tensorrt_lib::tensorrt_version(lib_dir)?)
}

// ---------------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------------

/// Messages of the build in progress (builds are serialized by BUILD_LOCK).
#[derive(Default)]
struct Captured {
    errors: Vec<String>,
    warnings: Vec<String>,
}

struct CaptureLog(Arc<Mutex<Captured>>);

impl LogHandler for CaptureLog {
    fn log(&self, severity: Severity, message: &str) {
        match severity {
            Severity::InternalError | Severity::Error => {
                lock(&self.0).errors.push(message.to_string());
            }
            Severity::Warning => lock(&self.0).warnings.push(message.to_string()),
            // Info and verbose messages are build chatter (timings, tactic counts); keeping
            // them would only grow memory on large models.
            Severity::Info | Severity::Verbose => {}
        }
    }
}

/// TensorRT keeps the first logger it sees as its process-wide logger, so there is exactly one,
/// and it lives for the whole process.
fn logger() -> Result<(&'static Logger, Arc<Mutex<Captured>>), EngineError> {
    static LOGGER: OnceLock<(Logger, Arc<Mutex<Captured>>)> = OnceLock::new();
    if let Some((l, c)) = LOGGER.get() {
        return Ok((l, c.clone()));
    }
    let cap = Arc::new(Mutex::new(Captured::default()));
    let l = Logger::new(CaptureLog(cap.clone())).map_err(|e| EngineError::Trt(e.to_string()))?;
    let (l, c) = LOGGER.get_or_init(|| (l, cap));
    Ok((l, c.clone()))
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// A compute capability to build for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// SM version times ten plus minor, e.g. 86 for sm86.
    Sm(u32),
    /// The GPU of this machine (needs a GPU).
    Current,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sm(v) => write!(f, "sm{v}"),
            Target::Current => f.write_str("current"),
        }
    }
}

/// Parses "sm86", "SM_86", "86", "8.6", "current" into one of [`VALID_TARGETS`].
pub fn parse_target(name: &str) -> Result<Target, EngineError> {
    let t = name.trim().to_ascii_lowercase();
    let digits = t
        .strip_prefix("sm")
        .map(|s| s.trim_start_matches('_'))
        .unwrap_or(&t)
        .replace('.', "");
    let target = match digits.parse::<u32>() {
        Ok(v) => Target::Sm(v),
        Err(_) if digits == "current" => Target::Current,
        Err(_) => {
            return Err(EngineError::UnsupportedTarget {
                name: name.to_string(),
            })
        }
    };
    if VALID_TARGETS.contains(&target.to_string().as_str()) {
        Ok(target)
    } else {
        Err(EngineError::UnsupportedTarget {
            name: name.to_string(),
        })
    }
}

#[cfg(not(feature = "enterprise"))]
fn compute_capability(t: Target) -> Result<trtx::ComputeCapability, EngineError> {
    use trtx::ComputeCapability as C;
    Ok(match t {
        Target::Current => C::kCURRENT,
        Target::Sm(75) => C::kSM75,
        Target::Sm(80) => C::kSM80,
        Target::Sm(86) => C::kSM86,
        Target::Sm(89) => C::kSM89,
        Target::Sm(120) => C::kSM120,
        Target::Sm(121) => C::kSM121,
        other => {
            return Err(EngineError::UnsupportedTarget {
                name: other.to_string(),
            })
        }
    })
}

fn dtype_name(dt: DataType) -> String {
    match dt {
        DataType::kFLOAT => "float32",
        DataType::kHALF => "float16",
        DataType::kBF16 => "bfloat16",
        DataType::kINT8 => "int8",
        DataType::kUINT8 => "uint8",
        DataType::kINT32 => "int32",
        DataType::kINT64 => "int64",
        DataType::kBOOL => "bool",
        DataType::kFP8 => "fp8",
        DataType::kINT4 => "int4",
        other => {
            return format!("{other:?}")
                .trim_start_matches('k')
                .to_ascii_lowercase()
        }
    }
    .to_string()
}

/// Checks options without loading any library: targets, ranges, profile shapes.
pub fn validate_options(opts: &EngineOptions) -> Result<Vec<Target>, EngineError> {
    if opts.targets.is_empty() {
        return Err(EngineError::InvalidOptions(format!(
            "no target given; choose one or more of: {}",
            VALID_TARGETS.join(", ")
        )));
    }
    let mut ccs = Vec::new();
    for t in &opts.targets {
        let cc = parse_target(t)?;
        if !ccs.contains(&cc) {
            ccs.push(cc);
        }
    }
    if ccs.contains(&Target::Current) && ccs.len() > 1 {
        return Err(EngineError::InvalidOptions(
            "\"current\" cannot be combined with other targets".into(),
        ));
    }
    if let Some(l) = opts.opt_level {
        if l > 5 {
            return Err(EngineError::InvalidOptions(format!(
                "opt_level {l} out of range 0..=5"
            )));
        }
    }
    if let Some(mb) = opts.workspace_mb {
        if mb == 0
            || mb
                .checked_mul(1 << 20)
                .is_none_or(|b| usize::try_from(b).is_err())
        {
            return Err(EngineError::InvalidOptions(format!(
                "workspace_mb {mb} out of range"
            )));
        }
    }
    for p in &opts.profiles {
        if p.name.contains('\0') {
            return Err(EngineError::InvalidOptions(format!(
                "profile input name {:?} contains NUL",
                p.name
            )));
        }
        let n = p.min.len();
        if n == 0 || n > 8 || p.opt.len() != n || p.max.len() != n {
            return Err(EngineError::InvalidOptions(format!(
                "profile {:?}: min/opt/max must have the same rank (1..=8)",
                p.name
            )));
        }
        for i in 0..n {
            if !(1 <= p.min[i] && p.min[i] <= p.opt[i] && p.opt[i] <= p.max[i]) {
                return Err(EngineError::InvalidOptions(format!(
                    "profile {:?}: need 1 <= min <= opt <= max in every dimension (dim {i}: {} {} {})",
                    p.name, p.min[i], p.opt[i], p.max[i]
                )));
            }
        }
    }
    Ok(ccs)
}

// ---------------------------------------------------------------------------------------------
// Build
// ---------------------------------------------------------------------------------------------

/// Parses `onnx_bytes` with the TensorRT-RTX ONNX parser and builds a serialized engine for
/// `opts.targets`, without a GPU. Never panics on missing libraries or bad input.
pub fn build_engine(
    lib_dir: Option<&Path>,
    onnx_bytes: &[u8],
    opts: &EngineOptions,
) -> Result<BuiltEngine, EngineError> {
    let ccs = validate_options(opts)?;
    let version = crate::tensorrt_lib::ensure_loaded(lib_dir)?;
    let (logger, captured) = logger()?;
    let _guard = lock(&BUILD_LOCK);
    *lock(&captured) = Captured::default();
    let result = catch_unwind(AssertUnwindSafe(|| {
        build_locked(logger, &captured, onnx_bytes, opts, &ccs, version)
    }))
    .unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(EngineError::Trt(format!("internal panic in trtx: {msg}")))
    });
    if let Err(EngineError::BuildFailed { .. }) = &result {
        // all TensorRT objects of the failed build are gone by now
        flush_after_failure(logger);
    }
    *lock(&captured) = Captured::default();
    result
}

fn build_locked(
    logger: &'static Logger,
    captured: &Mutex<Captured>,
    onnx_bytes: &[u8],
    opts: &EngineOptions,
    ccs: &[Target],
    tensorrt_version: String,
) -> Result<BuiltEngine, EngineError> {
    let trt = |e: trtx::Error| EngineError::Trt(e.to_string());
    let errors = || lock(captured).errors.clone();

    if onnx_bytes.is_empty() {
        return Err(EngineError::ParseFailed {
            messages: vec!["empty ONNX input".into()],
        });
    }

    let mut builder = Builder::new(logger).map_err(trt)?;
    // Network flags: 0. TensorRT-RTX networks are always explicit-batch and strongly typed.
    let network = builder.create_network(0).map_err(trt)?;
    let mut parser = OnnxParser::new(network, logger).map_err(trt)?;
    if let Err(e) = parser.parse(onnx_bytes) {
        // trtx returns only the parser's first error; the logger saw all of them (with more
        // context), so prefer those.
        let first = strip_runtime(&e);
        let mut messages = errors();
        if !messages.iter().any(|m| m.contains(&first)) {
            messages.insert(0, first);
        }
        return Err(EngineError::ParseFailed { messages });
    }
    let network = parser.network_mut();
    // protobuf is lenient: arbitrary bytes can decode as an empty ModelProto
    if network.nb_outputs() == 0 {
        let mut messages = vec![
            "the parsed model has no outputs (not an ONNX model, or an empty graph)".to_string(),
        ];
        messages.extend(errors());
        return Err(EngineError::ParseFailed { messages });
    }

    let describe = |t: trtx::Tensor<'_>| -> Result<IoDesc, EngineError> {
        Ok(IoDesc {
            name: t.name(network).map_err(trt)?,
            dtype: dtype_name(t.data_type(network)),
            dims: t.dimensions(network).map_err(trt)?,
        })
    };
    let mut inputs = Vec::new();
    for i in 0..network.nb_inputs() {
        inputs.push(describe(network.input(i).map_err(trt)?)?);
    }
    let mut outputs = Vec::new();
    for i in 0..network.nb_outputs() {
        outputs.push(describe(network.output(i).map_err(trt)?)?);
    }

    // Every dynamic input needs a profile entry, and every entry must name a dynamic input of
    // the same rank whose fixed dimensions it respects. A dynamic batch (axis 0) alone gets
    // batch 1 with a warning, as trtexec does; other dynamic dimensions have no safe default.
    let mut profiles = opts.profiles.clone();
    let mut notes = Vec::new();
    for inp in &inputs {
        let p = opts.profiles.iter().find(|p| p.name == inp.name);
        match p {
            None if inp.dims.first() == Some(&-1) && !inp.dims[1..].contains(&-1) => {
                let mut one = inp.dims.clone();
                one[0] = 1;
                let dims = |v: &[i64]| {
                    v.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("x")
                };
                let mut four = inp.dims.clone();
                four[0] = 4;
                notes.push(format!(
                    "input {:?} has a dynamic batch and no --shapes: built for batch 1 only \
                     (for a range give e.g. --shapes {}:{}/{}/{})",
                    inp.name,
                    inp.name,
                    dims(&one),
                    dims(&four),
                    dims(&four)
                ));
                profiles.push(ShapeProfile {
                    name: inp.name.clone(),
                    min: one.clone(),
                    opt: one.clone(),
                    max: one,
                });
            }
            None if inp.dims.contains(&-1) => {
                let example: Vec<String> = inp
                    .dims
                    .iter()
                    .map(|&d| if d < 0 { "N".into() } else { d.to_string() })
                    .collect();
                return Err(EngineError::InvalidOptions(format!(
                    "input {:?} has dynamic shape {:?}; give a shape profile for it: --shapes \
                     {}:MIN/OPT/MAX with every N a number, e.g. {}",
                    inp.name,
                    inp.dims,
                    inp.name,
                    example.join("x")
                )));
            }
            None => {}
            Some(p) => {
                if p.min.len() != inp.dims.len() {
                    return Err(EngineError::InvalidOptions(format!(
                        "profile {:?} has rank {} but the input has shape {:?}",
                        p.name,
                        p.min.len(),
                        inp.dims
                    )));
                }
                for (i, &d) in inp.dims.iter().enumerate() {
                    if d >= 0 && (p.min[i] != d || p.max[i] != d) {
                        return Err(EngineError::InvalidOptions(format!(
                            "profile {:?} dim {i}: the model fixes it to {d}",
                            p.name
                        )));
                    }
                }
            }
        }
    }
    for p in &opts.profiles {
        if !inputs.iter().any(|i| i.name == p.name) {
            return Err(EngineError::InvalidOptions(format!(
                "profile names {:?}, which is not an input of the model (inputs: {})",
                p.name,
                inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }

    let mut config = builder.create_config().map_err(trt)?;
    if let Some(mb) = opts.workspace_mb {
        config.set_memory_pool_limit(MemoryPoolType::kWORKSPACE, (mb << 20) as usize);
    }
    if let Some(level) = opts.opt_level {
        config.set_builder_optimization_level(level as i32);
    }
    #[cfg(not(feature = "enterprise"))]
    {
        config
            .set_nb_compute_capabilities(ccs.len() as i32)
            .map_err(trt)?;
        for (i, cc) in ccs.iter().enumerate() {
            config
                .set_compute_capability(compute_capability(*cc)?, i as i32)
                .map_err(trt)?;
        }
    }

    if !profiles.is_empty() {
        let mut profile = builder.creata_optimization_profile().map_err(trt)?;
        for p in &profiles {
            for (sel, dims) in [
                (OptProfileSelector::kMIN, &p.min),
                (OptProfileSelector::kOPT, &p.opt),
                (OptProfileSelector::kMAX, &p.max),
            ] {
                profile
                    .set_dimensions(&p.name, sel, &trtx::trtx_sys::Dims64::from_slice(dims))
                    .map_err(|e| {
                        EngineError::InvalidOptions(format!("profile {:?}: {e}", p.name))
                    })?;
            }
        }
        config
            .add_optimization_profile(&mut profile)
            .map_err(|e| EngineError::BuildFailed {
                messages: std::iter::once(e.to_string()).chain(errors()).collect(),
            })?;
        // The IOptimizationProfile is owned by the C++ builder. trtx's Drop does drop_in_place
        // on it (a no-op today: autocxx generates no destructor for that type); forget it so a
        // future trtx cannot double-free it.
        std::mem::forget(profile);
    }

    let plan = builder.build_serialized_network(network, &mut config);
    let plan = match plan {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            return Err(EngineError::BuildFailed {
                messages: std::iter::once("empty engine".to_string())
                    .chain(errors())
                    .collect(),
            })
        }
        Err(e) => {
            let mut messages = errors();
            if messages.is_empty() {
                messages.push(strip_runtime(&e));
            }
            return Err(EngineError::BuildFailed { messages });
        }
    };
    let bytes = plan.to_vec();
    drop(plan);
    let mut warnings = notes;
    warnings.extend(lock(captured).warnings.iter().cloned());
    Ok(BuiltEngine {
        bytes,
        inputs,
        outputs,
        tensorrt_version,
        targets: ccs.iter().map(|c| c.to_string()).collect(),
        warnings,
        profiles,
    })
}

/// TensorRT-RTX 1.7.1 keeps state from a FAILED build that leaks into the next build of the
/// process (observed: after a failed sm75 build, the next sm86 build carries sm75 code).
/// One throwaway build of a tiny GEMM network clears it. Errors here are ignored.
fn flush_after_failure(logger: &'static Logger) {
    let r = (|| -> trtx::Result<()> {
        let mut builder = Builder::new(logger)?;
        let mut network = builder.create_network(0)?;
        let x = network.add_input("x", DataType::kFLOAT, &[1, 16, 16])?;
        let mm = network.add_matrix_multiply(
            &x,
            trtx::MatrixOperation::kNONE,
            &x,
            trtx::MatrixOperation::kNONE,
        )?;
        let y = mm.output(&network, 0)?;
        network.mark_output(&y);
        let mut config = builder.create_config()?;
        #[cfg(not(feature = "enterprise"))]
        {
            config.set_nb_compute_capabilities(1)?;
            config.set_compute_capability(trtx::ComputeCapability::kSM86, 0)?;
        }
        builder
            .build_serialized_network(&mut network, &mut config)
            .map(drop)
    })();
    // The flush only matters for the next build; if it fails, that build reports its own error.
    let _ = r;
}

fn strip_runtime(e: &trtx::Error) -> String {
    match e {
        trtx::Error::Runtime(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(all(test, not(feature = "enterprise")))]
#[path = "engine_tests.rs"]
mod tests;
