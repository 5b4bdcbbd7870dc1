//! Finding and loading the TensorRT-RTX libraries, and their version.
//!
//! Engine building (`build`) and engine running (`run`) both need the libraries, and a process
//! loads one copy of them for good (trtx keeps it in a global), so both go through this one
//! loader. It lives below both modules so that `run` does not reach up into `build` for it.
//!
//! Where the libraries are looked for, first match wins:
//!   1. the `lib_dir` argument, when `Some` (only that folder is tried);
//!   2. `$DETRC_TENSORRT_DIR`, when set and non-empty (only that folder is tried);
//!   3. `<crate dir at compile time>/.trt`, when it holds both files (where
//!      `scripts/install_tensorrt_rtx.sh` puts them by default);
//!   4. the dynamic loader's normal search by file name (`LD_LIBRARY_PATH`, ld.so cache).
//!
//! Asking for a different folder once a library is loaded yields [`LibError::Conflict`].

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Environment variable naming the folder holding the TensorRT-RTX libraries.
pub const ENV_TENSORRT_DIR: &str = "DETRC_TENSORRT_DIR";
/// File name of the TensorRT-RTX builder/runtime library trtx was compiled against.
#[cfg(not(feature = "enterprise"))]
pub const TENSORRT_LIB: &str = "libtensorrt_rtx.so.1.7.1";
/// File name of the TensorRT-RTX ONNX parser library.
#[cfg(not(feature = "enterprise"))]
pub const ONNXPARSER_LIB: &str = "libtensorrt_onnxparser_rtx.so.1.7.1";

/// Product name, for messages and the sidecar.
#[cfg(not(feature = "enterprise"))]
pub const FLAVOR: &str = "TensorRT-RTX";
#[cfg(not(feature = "enterprise"))]
pub(crate) const INSTALL_HINT: &str = "Run scripts/install_tensorrt_rtx.sh [DIR] and pass \
     that folder with --tensorrt-dir (default: .trt in the repo) or set DETRC_TENSORRT_DIR=DIR; \
     needed: libtensorrt_rtx.so.1.7.1, libtensorrt_onnxparser_rtx.so.1.7.1";

#[cfg(feature = "enterprise")]
pub const FLAVOR: &str = "TensorRT";
#[cfg(feature = "enterprise")]
pub(crate) const INSTALL_HINT: &str = "Install TensorRT 11 from NVIDIA (this build uses the \
     `enterprise` feature; scripts/install_tensorrt_rtx.sh installs TensorRT-RTX, which it does \
     not use) and pass its lib folder with --tensorrt-dir or set DETRC_TENSORRT_DIR=DIR; \
     needed: libnvinfer.so.11, libnvonnxparser.so.11";

// Datacenter TensorRT 11.4 (trtx feature `enterprise`; compile-checked only).
#[cfg(feature = "enterprise")]
pub const TENSORRT_LIB: &str = "libnvinfer.so.11";
#[cfg(feature = "enterprise")]
pub const ONNXPARSER_LIB: &str = "libnvonnxparser.so.11";

/// Why the libraries could not be used. `build::EngineError` has a variant for each, with the
/// same message.
#[derive(Debug, thiserror::Error)]
pub enum LibError {
    #[error("{FLAVOR} libraries not found ({detail}). {INSTALL_HINT}")]
    NotFound { detail: String },

    #[error(
        "TensorRT-RTX is already loaded in this process from {loaded}; cannot switch to {requested}"
    )]
    Conflict { loaded: String, requested: String },

    /// A symbol the library should export is missing.
    #[error("TensorRT error: {0}")]
    Symbol(String),
}

// ---------------------------------------------------------------------------------------------
// Library location and loading
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum LibSource {
    Dir(PathBuf),
    System,
}

impl LibSource {
    fn describe(&self) -> String {
        match self {
            LibSource::Dir(d) => d.display().to_string(),
            LibSource::System => "the system library search path".to_string(),
        }
    }
}

struct Loaded {
    source: LibSource,
    /// None while the parser library failed to load.
    version: Option<String>,
}

static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn check_dir(dir: &Path, origin: &str) -> Result<LibSource, LibError> {
    let missing: Vec<&str> = [TENSORRT_LIB, ONNXPARSER_LIB]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(LibError::NotFound {
            detail: format!(
                "{} missing in {} ({origin})",
                missing.join(" and "),
                dir.display()
            ),
        });
    }
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    Ok(LibSource::Dir(dir))
}

fn resolve(lib_dir: Option<&Path>) -> Result<LibSource, LibError> {
    if let Some(dir) = lib_dir {
        return check_dir(dir, "given folder");
    }
    if let Some(dir) = std::env::var_os(ENV_TENSORRT_DIR).filter(|v| !v.is_empty()) {
        return check_dir(Path::new(&dir), ENV_TENSORRT_DIR);
    }
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join(".trt");
    if let Ok(src) = check_dir(&dev, "repo .trt") {
        return Ok(src);
    }
    Ok(LibSource::System)
}

/// Test support shared by the unit and integration suites: the folder holding the
/// TensorRT-RTX libraries ($DETRC_TENSORRT_DIR, else the repo's .trt), or `None` after a SKIP
/// line when they are not there. With `DETRC_REQUIRE_TENSORRT` set (as `scripts/test.sh` does),
/// missing libraries panic instead, so CI cannot pass by skipping the engine tests.
#[doc(hidden)]
#[cfg(not(feature = "enterprise"))]
pub fn test_libraries() -> Option<PathBuf> {
    let dir = std::env::var_os(ENV_TENSORRT_DIR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".trt"));
    let missing = match check_dir(&dir, "$DETRC_TENSORRT_DIR, else the repo's .trt") {
        Ok(_) => return Some(dir),
        Err(e) => e,
    };
    if std::env::var_os("DETRC_REQUIRE_TENSORRT").is_some_and(|v| !v.is_empty()) {
        panic!("DETRC_REQUIRE_TENSORRT is set, but: {missing}");
    }
    eprintln!("SKIP: {missing}");
    None
}

fn lib_path(source: &LibSource, file: &str) -> PathBuf {
    match source {
        LibSource::Dir(d) => d.join(file),
        LibSource::System => PathBuf::from(file),
    }
}

/// Reads `getInferLibVersion` and `getInferLibBuildVersion` from the builder library.
/// dlopen of an already-loaded library just bumps its reference count.
fn read_version(path: &Path) -> Result<String, LibError> {
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| LibError::NotFound {
            detail: format!("cannot load {}: {}", path.display(), chain(&e)),
        })?;
        let ver: libloading::Symbol<unsafe extern "C" fn() -> i32> = lib
            .get(b"getInferLibVersion\0")
            .map_err(|e| LibError::Symbol(format!("getInferLibVersion: {e}")))?;
        let v = ver();
        let build = lib
            .get::<unsafe extern "C" fn() -> i32>(b"getInferLibBuildVersion\0")
            .map(|f| f())
            .ok();
        let mut s = format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100);
        if let Some(b) = build {
            s.push_str(&format!(".{b}"));
        }
        Ok(s)
    }
}

/// Loads both libraries (once per process) and returns the library version.
pub(crate) fn ensure_loaded(lib_dir: Option<&Path>) -> Result<String, LibError> {
    let source = resolve(lib_dir)?;
    let mut loaded = lock(&LOADED);
    if let Some(l) = loaded.as_ref() {
        // An explicit folder or $DETRC_TENSORRT_DIR must match what is loaded; a fallback
        // (system search) is satisfied by whatever is loaded.
        if l.source != source && source != LibSource::System {
            return Err(LibError::Conflict {
                loaded: l.source.describe(),
                requested: source.describe(),
            });
        }
        if let Some(v) = &l.version {
            return Ok(v.clone());
        }
    }
    // From here on: nothing loaded yet, or the builder library is loaded from `source` (or the
    // system path) but the parser failed to load last time.
    let source = loaded.as_ref().map_or(source, |l| l.source.clone());
    let trt = lib_path(&source, TENSORRT_LIB);
    let parser = lib_path(&source, ONNXPARSER_LIB);
    let not_found = |what: &Path, e: trtx::Error| LibError::NotFound {
        detail: format!(
            "cannot load {} from {}: {}",
            what.display(),
            source.describe(),
            chain(&e)
        ),
    };
    // trtx keeps the first successfully loaded library forever; later calls are no-ops.
    trtx::dynamically_load_tensorrt(Some(&trt)).map_err(|e| not_found(&trt, e))?;
    *loaded = Some(Loaded {
        source: source.clone(),
        version: None,
    });
    trtx::dynamically_load_tensorrt_onnxparser(Some(&parser)).map_err(|e| not_found(&parser, e))?;
    let version = read_version(&trt)?;
    *loaded = Some(Loaded {
        source,
        version: Some(version.clone()),
    });
    Ok(version)
}

/// Version of the TensorRT-RTX library ("1.7.1.1"), loading the libraries if needed.
pub fn tensorrt_version(lib_dir: Option<&Path>) -> Result<String, LibError> {
    ensure_loaded(lib_dir)
}

/// The TensorRT-RTX version trtx was compiled against (from its headers), e.g. "1.7.1".
pub fn compiled_tensorrt_version() -> String {
    unsafe {
        format!(
            "{}.{}.{}",
            trtx::trtx_sys::get_tensorrt_major_version(),
            trtx::trtx_sys::get_tensorrt_minor_version(),
            trtx::trtx_sys::get_tensorrt_patch_version()
        )
    }
}

/// An error with its sources ("dlopen failed: ...: invalid ELF header").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
