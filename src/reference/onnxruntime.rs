//! onnxruntime as a reference runtime, through the `ort` crate with the shared library loaded at
//! run time (`libonnxruntime.so` from the PyPI wheel, installed by
//! `scripts/install_onnxruntime.sh` into `<repo>/.ort`). Nothing is linked at build time, so
//! detrc builds and starts without it; Python is never involved at run time.
//!
//! The library is found, in order, at
//!   1. an explicit path (`--onnxruntime PATH`: a file, or a folder holding one);
//!   2. `$DETRC_ONNXRUNTIME` when set and non-empty (a file or a folder);
//!   3. the folder of the running executable, then `<crate dir at compile time>/.ort`;
//!   4. the loader's folders (`$LD_LIBRARY_PATH`, `/usr/local/lib`, `/usr/lib`, ...).
//!
//! 1 and 2 are the user asking for onnxruntime: a missing or unusable file there is an error.
//! A candidate from 3 or 4 that is unusable is reported and skipped.
//!
//! Every candidate is checked before `dlopen`: an ELF shared object for this machine whose
//! segments are all inside the file (a truncated library would otherwise be mapped and fault
//! while relocating), exporting `OrtGetApiBase`, with a version at least [`MIN_VERSION`]. Only
//! then is it handed to `ort`, which can load one library per process and panics on failures.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ndarray::{ArrayD, IxDyn};
use ort::logging::LogLevel;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

use super::ort_rewrites::{disabled_list, Applied, Record};
use super::InputSpec;
use crate::error::{Error, Result};
use crate::ir::DType;

/// The environment variable naming the library (a file or a folder).
pub const ENV_LIBRARY: &str = "DETRC_ONNXRUNTIME";
/// The file `scripts/install_onnxruntime.sh` installs.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";
/// The oldest onnxruntime whose C API (version 31) `ort` is built against here.
pub const MIN_VERSION: (u32, u32) = (1, ort::MINOR_VERSION);

/// What to do about a library that cannot be used.
pub(crate) fn needed() -> String {
    format!(
        "detrc needs onnxruntime {}.{} or newer (scripts/install_onnxruntime.sh installs 1.31.1 into \
         .ort/)",
        MIN_VERSION.0, MIN_VERSION.1
    )
}

fn lib_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::OnnxRuntime {
        path: path.to_path_buf(),
        reason: format!("{}; {}", reason.into(), needed()),
    }
}

/// A checked onnxruntime library file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    pub path: PathBuf,
    /// As the library reports it, e.g. "1.31.1".
    pub version: String,
}

/// Where a library came from; decides whether a failure is an error or a reason to fall back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    Default,
}

/// The result of looking for a library.
#[derive(Debug)]
pub struct Lookup {
    pub found: Option<(Library, Source)>,
    /// Default-place candidates that exist but cannot be used, and why.
    pub skipped: Vec<String>,
}

/// Looks for a usable library (see the module docs for the order). An explicit path or
/// `$DETRC_ONNXRUNTIME` that is unusable is an error, never skipped.
pub fn find(explicit: Option<&Path>) -> Result<Lookup> {
    let found = |l: Library, s: Source| Lookup {
        found: Some((l, s)),
        skipped: Vec::new(),
    };
    if let Some(p) = explicit {
        return Ok(found(check_spec(p)?, Source::Flag));
    }
    if let Some(v) = std::env::var_os(ENV_LIBRARY).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        return check_spec(&p)
            .map(|l| found(l, Source::Env))
            .map_err(|e| match e {
                Error::OnnxRuntime { path, reason } => Error::OnnxRuntime {
                    path,
                    reason: format!("(from ${ENV_LIBRARY}) {reason}"),
                },
                other => other,
            });
    }
    let mut skipped = Vec::new();
    for dir in default_dirs() {
        for name in [LIBRARY_FILE, "libonnxruntime.so.1", "libonnxruntime.so"] {
            let p = dir.join(name);
            if !p.exists() {
                continue;
            }
            match check_file(&p) {
                Ok(l) => {
                    return Ok(Lookup {
                        found: Some((l, Source::Default)),
                        skipped,
                    })
                }
                Err(e) => skipped.push(e.to_string()),
            }
        }
    }
    Ok(Lookup {
        found: None,
        skipped,
    })
}

fn default_dirs() -> Vec<PathBuf> {
    // Next to the binary first: an installed detrc ships its library there.
    let mut dirs: Vec<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .into_iter()
        .collect();
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ort"));
    if let Some(v) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
    }
    for d in [
        "/usr/local/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// A file, or a folder holding [`LIBRARY_FILE`] (or `libonnxruntime.so.1`/`.so`).
fn check_spec(p: &Path) -> Result<Library> {
    if p.is_dir() {
        for name in [LIBRARY_FILE, "libonnxruntime.so.1", "libonnxruntime.so"] {
            let f = p.join(name);
            if f.exists() {
                return check_file(&f);
            }
        }
        return Err(lib_err(
            p,
            format!("the folder holds no {LIBRARY_FILE} (nor libonnxruntime.so.1 / .so)"),
        ));
    }
    check_file(p)
}

/// Checks one library file without handing it to `ort`: ELF sanity, then `dlopen` and the
/// version it reports. The handle is dropped again; [`environment`] loads it for good.
pub fn check_file(path: &Path) -> Result<Library> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            lib_err(path, "not found")
        } else {
            lib_err(path, format!("cannot read it: {e}"))
        }
    })?;
    if !meta.is_file() {
        return Err(lib_err(path, "not a file"));
    }
    check_elf(path, meta.len())?;
    let version = unsafe { read_version(path) }?;
    let (major, minor) = parse_version(&version).ok_or_else(|| {
        lib_err(
            path,
            format!("it reports an unreadable version '{version}'"),
        )
    })?;
    if major != MIN_VERSION.0 || minor < MIN_VERSION.1 {
        return Err(lib_err(
            path,
            format!("it is onnxruntime {version}, which is too old"),
        ));
    }
    Ok(Library {
        path: path.to_path_buf(),
        version,
    })
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim().split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

#[cfg(target_arch = "x86_64")]
const ELF_MACHINE: u16 = 62;
#[cfg(target_arch = "aarch64")]
const ELF_MACHINE: u16 = 183;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ELF_MACHINE: u16 = 0;

/// An ELF64 little-endian shared object for this machine, with its program headers and every
/// loadable segment inside the file.
fn check_elf(path: &Path, len: u64) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |why: String| lib_err(path, why);
    let mut f = std::fs::File::open(path).map_err(|e| bad(format!("cannot open it: {e}")))?;
    let mut h = [0u8; 64];
    let n = f
        .read(&mut h)
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if n < 64 || &h[..4] != b"\x7fELF" {
        return Err(bad(format!(
            "not a shared library (no ELF header; {len} bytes)"
        )));
    }
    let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
    if h[4] != 2 || h[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF file".into()));
    }
    if u16_at(18) != ELF_MACHINE {
        return Err(bad(format!(
            "built for another processor (ELF machine {}, this one is {ELF_MACHINE})",
            u16_at(18)
        )));
    }
    if u16_at(16) != 3 {
        return Err(bad("an ELF file but not a shared library".into()));
    }
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54) as u64, u16_at(56) as u64);
    let (shoff, shentsize, shnum) = (u64_at(40), u16_at(58) as u64, u16_at(60) as u64);
    let truncated = |need: u64| {
        bad(format!(
            "truncated or corrupt: the file has {len} bytes, its ELF headers need {need}"
        ))
    };
    let ph_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
    if phentsize < 56 || ph_end > len {
        return Err(truncated(ph_end));
    }
    let sh_end = shoff.saturating_add(shentsize.saturating_mul(shnum));
    if sh_end > len {
        return Err(truncated(sh_end));
    }
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    f.seek(SeekFrom::Start(phoff))
        .and_then(|_| f.read_exact(&mut ph))
        .map_err(|e| bad(format!("cannot read its program headers: {e}")))?;
    for e in ph.chunks_exact(phentsize as usize) {
        let p_type = u32::from_le_bytes(e[0..4].try_into().expect("4 bytes"));
        let offset = u64::from_le_bytes(e[8..16].try_into().expect("8 bytes"));
        let filesz = u64::from_le_bytes(e[32..40].try_into().expect("8 bytes"));
        // PT_LOAD: mapped from the file, so it must be in the file
        if p_type == 1 && offset.saturating_add(filesz) > len {
            return Err(truncated(offset.saturating_add(filesz)));
        }
    }
    Ok(())
}

/// `dlopen`s the file and asks it for its version and for the C API `ort` uses.
///
/// # Safety
/// Loading a library runs its initialisers; callers have checked it is a well-formed ELF file.
unsafe fn read_version(path: &Path) -> Result<String> {
    let lib = libloading::Library::new(path)
        .map_err(|e| lib_err(path, format!("the loader refused it: {e}")))?;
    type GetBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    let get: libloading::Symbol<GetBase> = lib.get(b"OrtGetApiBase\0").map_err(|_| {
        lib_err(
            path,
            "not an onnxruntime library (it exports no OrtGetApiBase)",
        )
    })?;
    let base = get();
    if base.is_null() {
        return Err(lib_err(path, "OrtGetApiBase returned nothing"));
    }
    let v = ((*base).GetVersionString)();
    if v.is_null() {
        return Err(lib_err(path, "it reports no version"));
    }
    let version = CStr::from_ptr(v).to_string_lossy().into_owned();
    if let Some((1, minor)) = parse_version(&version) {
        if minor >= MIN_VERSION.1 && ((*base).GetApi)(ort::sys::ORT_API_VERSION).is_null() {
            return Err(lib_err(
                path,
                format!(
                    "onnxruntime {version} does not provide C API version {}",
                    ort::sys::ORT_API_VERSION
                ),
            ));
        }
    }
    // Not unloaded: a library that registered thread-local destructors must stay mapped, and
    // `ort` will open the same file again (the loader shares the handle).
    std::mem::forget(lib);
    Ok(version)
}

static ENV: OnceLock<(ort::environment::Environment, Library)> = OnceLock::new();
static ENV_INIT: Mutex<()> = Mutex::new(());

/// The process's onnxruntime environment, loading `lib` on first use. `ort` can hold one
/// library per process: asking for another file later is an error that names both.
pub fn environment(lib: &Library) -> Result<&'static ort::environment::Environment> {
    let _guard = ENV_INIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((env, loaded)) = ENV.get() {
        let same = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if same(&loaded.path) != same(&lib.path) {
            return Err(lib_err(
                &lib.path,
                format!(
                    "this process already loaded onnxruntime from {}",
                    loaded.path.display()
                ),
            ));
        }
        return Ok(env);
    }
    let builder = ort::init_from(&lib.path).map_err(|e| lib_err(&lib.path, e.to_string()))?;
    let env = builder
        .with_name("detrc")
        .with_telemetry(false)
        .build()
        .map_err(|e| lib_err(&lib.path, format!("cannot create an environment: {e}")))?;
    let _ = ENV.set((env, lib.clone()));
    Ok(&ENV.get().expect("just set").0)
}

/// How a session is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    pub level: OptLevel,
    /// Intra-op threads; `None`: the CPUs this process may use.
    pub threads: Option<usize>,
    /// Memory over speed: no CPU arena, no memory pattern, no pre-packed weight copies.
    pub lean: bool,
    /// onnxruntime's fusions on; off: every transformer in [`super::ort_rewrites::DISABLED`]
    /// switched off by name.
    pub fusions: bool,
    /// Record the transformers that changed the graph ([`OrtModel::applied`]).
    pub record: bool,
}

/// The graph optimisation level of `--verify` and the tests, with fusions off (docs/reference.md
/// says why).
pub const VERIFY_LEVEL: OptLevel = OptLevel::Layout;

impl SessionOptions {
    /// Verification: [`VERIFY_LEVEL`], lean memory. Inference: onnxruntime's defaults (all
    /// optimisations, arena, memory pattern), as its Python API has them.
    pub fn for_purpose(purpose: super::Purpose) -> SessionOptions {
        let level = std::env::var("DETRC_ORT_LEVEL")
            .ok()
            .and_then(|s| OptLevel::parse(&s));
        match purpose {
            super::Purpose::Verify => SessionOptions {
                level: level.unwrap_or(VERIFY_LEVEL),
                threads: None,
                lean: true,
                fusions: false,
                record: true,
            },
            super::Purpose::Inference => SessionOptions {
                level: level.unwrap_or(OptLevel::All),
                threads: None,
                lean: false,
                fusions: true,
                record: false,
            },
        }
    }

    /// How the graph is optimised, e.g. "layout, fusions off".
    pub fn describe(&self) -> String {
        if !self.fusions && self.level != OptLevel::Disabled {
            format!("{}, fusions off", self.level.name())
        } else {
            self.level.name().to_string()
        }
    }
}

/// onnxruntime's graph optimisation levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptLevel {
    Disabled,
    Basic,
    Extended,
    /// Extended and the NCHWc layout (`ORT_ENABLE_LAYOUT`).
    Layout,
    All,
}

impl OptLevel {
    pub fn name(self) -> &'static str {
        match self {
            OptLevel::Disabled => "disabled",
            OptLevel::Basic => "basic",
            OptLevel::Extended => "extended",
            OptLevel::Layout => "layout",
            OptLevel::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<OptLevel> {
        Some(match s {
            "disabled" | "0" => OptLevel::Disabled,
            "basic" | "1" => OptLevel::Basic,
            "extended" | "2" => OptLevel::Extended,
            "layout" | "3" => OptLevel::Layout,
            "all" | "99" => OptLevel::All,
            _ => return None,
        })
    }

    fn ort(self) -> GraphOptimizationLevel {
        match self {
            OptLevel::Disabled => GraphOptimizationLevel::Disable,
            OptLevel::Basic => GraphOptimizationLevel::Level1,
            OptLevel::Extended => GraphOptimizationLevel::Level2,
            OptLevel::Layout => GraphOptimizationLevel::Level3,
            OptLevel::All => GraphOptimizationLevel::All,
        }
    }
}

/// The CPUs this process may run on (cgroup and affinity aware), at least 1.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A model loaded into an onnxruntime session on the CPU.
pub struct OrtModel {
    // `Session::run` needs `&mut`; the reference API runs through `&self`.
    // Declared before `_weights`: the session, which reads them, is dropped first.
    session: Mutex<Session>,
    /// Weights onnxruntime uses in place (see [`ModelSource::Proto`]).
    _weights: Vec<bytes::Bytes>,
    /// With [`SessionOptions::record`]: what onnxruntime's graph optimisation changed.
    pub applied: Option<Applied>,
}

/// The model, from a file, from encoded bytes, or decoded.
pub enum ModelSource<'a> {
    Path(&'a Path),
    Bytes(&'a [u8]),
    /// A decoded model (external data resolved). Its large initializers are handed to
    /// onnxruntime as tensors over their bytes, where they are (a memory-mapped file, or what a
    /// pass computed), instead of being copied into the session: onnxruntime gets the graph
    /// with those initializers marked external, and the tensors through
    /// `AddExternalInitializers`.
    Proto(&'a crate::load::proto::ModelProto),
}

/// Initializers at least this large are used in place; smaller ones are copied as usual.
const IN_PLACE_BYTES: usize = 4096;

/// An initializer onnxruntime gets as a tensor over its bytes: name, element type, dims, bytes.
type InPlaceWeight = (String, TensorElementType, Vec<i64>, bytes::Bytes);

/// How the large initializers of a decoded model reach onnxruntime.
struct Split {
    /// The graph, those initializers marked external (no bytes).
    skeleton: crate::load::proto::ModelProto,
    /// The folder of the model files the graph's external data now points into: onnxruntime
    /// maps those files itself and uses the weights where they lie, without a copy.
    folder: Option<PathBuf>,
    /// The rest (weights a pass computed), handed over as tensors: onnxruntime 1.31 copies
    /// those into the session (measured: the session grows by their size).
    handed: Vec<InPlaceWeight>,
}

/// Marks the large raw initializers of `m` external: those whose bytes lie in a mapped model
/// file (see [`crate::load::mapped_origin`]) at their place in that file, the others as
/// tensors handed over in memory.
fn split_weights(m: &crate::load::proto::ModelProto) -> Split {
    use crate::load::proto::StringStringEntryProto;
    let mut skeleton = m.clone();
    let mut handed = Vec::new();
    let mut folder: Option<PathBuf> = None;
    let Some(g) = skeleton.graph.as_mut() else {
        return Split {
            skeleton,
            folder,
            handed,
        };
    };
    for t in g.initializer.iter_mut() {
        let (Some(raw), Some(name)) = (t.raw_data.as_ref(), t.name.as_ref()) else {
            continue;
        };
        let Some(ty) = t.data_type.and_then(element_type) else {
            continue;
        };
        let elems = t.dims.iter().try_fold(1usize, |n, &d| {
            usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
        });
        let size_ok = elems
            .and_then(|n| n.checked_mul(ty.byte_size(1).unwrap_or(0)))
            .is_some_and(|b| b == raw.len());
        if raw.len() < IN_PLACE_BYTES || !size_ok || t.data_location == Some(1) {
            continue;
        }
        let kv = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        // One folder per session: files elsewhere are handed over like computed weights.
        let in_file = crate::load::mapped_origin(raw).and_then(|(path, offset)| {
            let (dir, file) = (path.parent()?, path.file_name()?.to_str()?);
            let same = folder.as_deref().is_none_or(|f| f == dir);
            same.then(|| (dir.to_path_buf(), file.to_string(), offset))
        });
        t.external_data = match in_file {
            Some((dir, file, offset)) => {
                folder = Some(dir);
                vec![
                    kv("location", file),
                    kv("offset", offset.to_string()),
                    kv("length", raw.len().to_string()),
                ]
            }
            None => {
                handed.push((name.clone(), ty, t.dims.clone(), raw.clone()));
                vec![
                    kv("location", "detrc-in-memory".into()),
                    kv("offset", "0".into()),
                    kv("length", raw.len().to_string()),
                ]
            }
        };
        t.data_location = Some(1);
        t.raw_data = None;
    }
    Split {
        skeleton,
        folder,
        handed,
    }
}

fn element_type(onnx: i32) -> Option<TensorElementType> {
    Some(match onnx {
        1 => TensorElementType::Float32,
        2 => TensorElementType::Uint8,
        3 => TensorElementType::Int8,
        5 => TensorElementType::Int16,
        6 => TensorElementType::Int32,
        7 => TensorElementType::Int64,
        10 => TensorElementType::Float16,
        11 => TensorElementType::Float64,
        _ => return None,
    })
}

/// A CPU tensor over `bytes` without a copy. The caller keeps `bytes` alive while the value
/// (and any session it is given to) lives.
fn tensor_over(ty: TensorElementType, dims: &[i64], bytes: &bytes::Bytes) -> Result<DynValue> {
    use ort::AsPointer;
    let info = ort::memory::MemoryInfo::default();
    let mut value: *mut ort::sys::OrtValue = std::ptr::null_mut();
    // SAFETY: the pointer and length describe `bytes`, which outlives the value (see above);
    // onnxruntime only reads initializers. Unaligned data is fine for its CPU kernels on the
    // platforms the wheel exists for.
    let status = unsafe {
        (ort::api().CreateTensorWithDataAsOrtValue)(
            info.ptr(),
            bytes.as_ptr() as *mut std::ffi::c_void,
            bytes.len(),
            dims.as_ptr(),
            dims.len(),
            ty.into(),
            &mut value,
        )
    };
    unsafe { ort::Error::result_from_status(status) }
        .map_err(|e| Error::Runtime(format!("onnxruntime: cannot wrap a weight: {e}")))?;
    let value = std::ptr::NonNull::new(value)
        .ok_or_else(|| Error::Runtime("onnxruntime: no tensor created".into()))?;
    // SAFETY: a valid tensor value just created, with the default CPU allocator's memory info.
    Ok(unsafe { DynValue::from_ptr(value, Some(&ort::memory::Allocator::default())) })
}

impl OrtModel {
    pub fn load(lib: &Library, model: ModelSource<'_>, opts: SessionOptions) -> Result<OrtModel> {
        let env = environment(lib)?;
        let what = match model {
            ModelSource::Path(p) => p.display().to_string(),
            ModelSource::Bytes(_) | ModelSource::Proto(_) => "the model".to_string(),
        };
        let e = |stage: &str, err: String| Error::Runtime(format!("onnxruntime: {stage}: {err}"));
        let threads = opts.threads.unwrap_or_else(default_threads).max(1);
        let ep = ort::ep::CPU::default()
            .with_arena_allocator(!opts.lean)
            .build();
        let so = |x: &dyn std::fmt::Display| e("session options", x.to_string());
        let mut b = Session::builder(env).map_err(|x| so(&x))?;
        b = b
            .with_optimization_level(opts.level.ort())
            .map_err(|x| so(&x))?;
        b = b.with_intra_threads(threads).map_err(|x| so(&x))?;
        b = b.with_inter_threads(1).map_err(|x| so(&x))?;
        b = b.with_memory_pattern(!opts.lean).map_err(|x| so(&x))?;
        b = b.with_execution_providers([ep]).map_err(|x| so(&x))?;
        if opts.lean {
            b = b
                .with_prepacking(false)
                .map_err(|x| e("session options", x.to_string()))?;
        }
        if !opts.fusions {
            b = b
                .with_disabled_optimizers(disabled_list())
                .map_err(|x| so(&x))?;
        }
        let record = opts.record.then(Record::default);
        if let Some(r) = &record {
            // Info is the level of the "GraphTransformer ... modified" lines; what the default
            // logger would print (warnings and worse) still goes to stderr.
            let r = r.clone();
            b = b
                .with_log_level(LogLevel::Info)
                .map_err(|x| so(&x))?
                .with_logger(Arc::new(move |level, _, _, _, msg: &str| {
                    r.observe(msg);
                    if level >= LogLevel::Warning {
                        eprintln!("onnxruntime: {msg}");
                    }
                }))
                .map_err(|x| so(&x))?;
        }
        let mut weights = Vec::new();
        let session = match model {
            ModelSource::Path(p) => b.commit_from_file(p),
            ModelSource::Bytes(bytes) => b.commit_from_memory(bytes),
            ModelSource::Proto(m) => {
                let Split {
                    skeleton,
                    folder,
                    handed,
                } = split_weights(m);
                if let Some(dir) = folder {
                    let dir = dir.to_str().ok_or_else(|| {
                        e("weights", format!("folder {} is not UTF-8", dir.display()))
                    })?;
                    b = b
                        .with_config_entry(
                            "session.model_external_initializers_file_folder_path",
                            dir,
                        )
                        .map_err(|x| e("session options", x.to_string()))?;
                }
                for (name, ty, dims, bytes) in handed {
                    let v = tensor_over(ty, &dims, &bytes)?;
                    b = b
                        .with_external_initializer(&name, v)
                        .map_err(|x| e("weight", format!("'{name}': {x}")))?;
                    weights.push(bytes);
                }
                let mut encoded = Vec::new();
                crate::emit::write_model(&skeleton, &mut encoded)
                    .map_err(|x| e("encoding the graph", x.to_string()))?;
                drop(skeleton);
                b.commit_from_memory(&encoded)
            }
        }
        .map_err(|x| Error::Runtime(format!("onnxruntime cannot load {what}: {x}")))?;
        Ok(OrtModel {
            session: Mutex::new(session),
            _weights: weights,
            applied: record.map(|r| r.take()),
        })
    }

    /// Runs on f32 inputs converted to each input's type; outputs converted to f32, in the
    /// model's output order.
    pub fn run(
        &self,
        specs: &[InputSpec],
        inputs: &[ArrayD<f32>],
    ) -> Result<Vec<(String, ArrayD<f32>)>> {
        let mut feeds: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
        for (a, s) in inputs.iter().zip(specs) {
            feeds.push((s.name.clone(), to_value(a, s)?));
        }
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let names: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let outs = session
            .run(feeds)
            .map_err(|x| Error::Runtime(format!("onnxruntime: {x}")))?;
        let mut res = Vec::with_capacity(names.len());
        for name in names {
            let v = outs
                .get(&name)
                .ok_or_else(|| Error::Runtime(format!("onnxruntime returned no '{name}'")))?;
            res.push((name.clone(), to_f32(&name, v)?));
        }
        Ok(res)
    }
}

fn to_value(a: &ArrayD<f32>, s: &InputSpec) -> Result<DynValue> {
    let shape: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    let e = |x: ort::Error| Error::Runtime(format!("input '{}': {x}", s.name));
    fn t<T: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static>(
        shape: Vec<i64>,
        v: Vec<T>,
    ) -> ort::Result<DynValue> {
        Ok(Tensor::from_array((shape, v))?.into_dyn())
    }
    let it = a.iter().copied();
    match s.dtype {
        DType::F32 => t(shape, it.collect::<Vec<f32>>()),
        DType::F64 => t(shape, it.map(f64::from).collect::<Vec<f64>>()),
        DType::F16 => t(shape, it.map(half::f16::from_f32).collect::<Vec<_>>()),
        DType::I64 => t(shape, it.map(|x| x as i64).collect::<Vec<i64>>()),
        DType::I32 => t(shape, it.map(|x| x as i32).collect::<Vec<i32>>()),
        DType::I8 => t(shape, it.map(|x| x as i8).collect::<Vec<i8>>()),
        DType::U8 => t(shape, it.map(|x| x as u8).collect::<Vec<u8>>()),
        DType::BOOL => t(shape, it.map(|x| x != 0.0).collect::<Vec<bool>>()),
        other => {
            return Err(Error::Unsupported(format!(
                "input '{}' of element type {other}",
                s.name
            )))
        }
    }
    .map_err(e)
}

fn to_f32(name: &str, v: &DynValue) -> Result<ArrayD<f32>> {
    let e = |x: ort::Error| Error::Runtime(format!("output '{name}': {x}"));
    let ty = match v.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => {
            return Err(Error::Unsupported(format!(
                "output '{name}' is not a tensor ({other})"
            )))
        }
    };
    macro_rules! conv {
        ($t:ty, $f:expr) => {{
            let (shape, data) = v.try_extract_tensor::<$t>().map_err(e)?;
            let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let data: Vec<f32> = data.iter().map($f).collect();
            ArrayD::from_shape_vec(IxDyn(&dims), data)
                .map_err(|x| Error::Runtime(format!("output '{name}': {x}")))?
        }};
    }
    Ok(match ty {
        TensorElementType::Float32 => conv!(f32, |&x| x),
        TensorElementType::Float64 => conv!(f64, |&x| x as f32),
        TensorElementType::Float16 => conv!(half::f16, |&x| x.to_f32()),
        TensorElementType::Int64 => conv!(i64, |&x| x as f32),
        TensorElementType::Int32 => conv!(i32, |&x| x as f32),
        TensorElementType::Int8 => conv!(i8, |&x| x as f32),
        TensorElementType::Uint8 => conv!(u8, |&x| x as f32),
        TensorElementType::Bool => conv!(bool, |&x| if x { 1.0 } else { 0.0 }),
        other => {
            return Err(Error::Unsupported(format!(
                "output '{name}' of element type {other}"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.31.1"), Some((1, 31)));
        assert_eq!(parse_version("1.9"), Some((1, 9)));
        assert_eq!(parse_version("x"), None);
    }
}
