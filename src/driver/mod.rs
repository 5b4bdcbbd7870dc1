//! The compile driver: load -> IR -> passes -> export, verification, and the session that
//! ties them together for the command line and the Python package.
//!
//! Read from the top: [`Session`] (`session.rs`) is what a front end calls; [`compile()`]
//! (`compile.rs`) is one compile, by the batch route (`batch_route.rs`) where it applies;
//! [`verify()`] (`verify.rs`) checks a result against its original. `--input-shape` and
//! `--batch` are in `input_shapes.rs`, what `detrc inspect` shows in `summary.rs`.

mod batch_route;
mod compile;
mod control_flow;
mod fp16_check;
mod input_shapes;
mod precision;
mod session;
mod summary;
mod verify;

use std::path::Path;

pub use batch_route::{BatchChange, RouteStatus};
pub use compile::{compile, compile_with, Compiled};
pub use fp16_check::{
    convert_checked as fp16_convert_checked, CheckInputs, DetectionCheck, Fp16Options, Fp16Report,
    Kept, OutputCheck, Overflow,
};
pub use input_shapes::{parse_input_shape, static_input_shapes, Batch, ShapeOptions};
pub use precision::{
    trtexec_command, CalibrationSet, PrecisionError, PrecisionOptions, PrecisionReport,
};
pub use session::{Outcome, Output, Progress, Session, SessionError, VerifyOptions};
pub use summary::{summary, IoSummary, Summary};
pub use verify::{
    verify, verify_batches, verify_batches_with, verify_bytes, verify_with, Candidate, Expected,
    Original, Verification,
};

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::load::proto::ModelProto;

/// A model given as a file or as encoded ONNX in memory.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// A file (external data beside it).
    Path(&'a Path),
    /// Encoded ONNX. `label` names it in messages; external data, if the model refers to any,
    /// is read relative to `base_dir`.
    Bytes {
        data: &'a [u8],
        label: &'a str,
        base_dir: &'a Path,
    },
}

impl Source<'_> {
    /// Loads the model into the IR (see [`load_graph`], [`load_graph_bytes`]).
    pub fn load(&self) -> Result<(Graph, bool)> {
        match self {
            Source::Path(p) => load_graph(p),
            Source::Bytes {
                data,
                label,
                base_dir,
            } => load_graph_bytes(bytes::Bytes::copy_from_slice(data), label, base_dir),
        }
    }

    /// The model's name in reports: its path, or the label of bytes.
    pub fn label(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Bytes { label, .. } => label.to_string(),
        }
    }

    /// The same model as the original of a verification.
    fn original(&self) -> Original<'_> {
        match self {
            Source::Path(p) => Original::Path(p),
            Source::Bytes { data, .. } => Original::Bytes(data),
        }
    }
}

/// Loads a model file into the IR (external data resolved, structure validated).
pub fn load_graph(path: &Path) -> Result<(Graph, bool)> {
    let loaded = crate::load::load(path)?;
    let g = import_validated(loaded.proto, loaded.had_external_data);
    // Decoding touched every tensor's header, and the kernel mapped the pages around each
    // touch: most of the file counted as this process's memory while nothing reads it.
    crate::load::release_mapped_pages();
    g
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

fn import_validated(mut proto: ModelProto, had_external: bool) -> Result<(Graph, bool)> {
    // Exporters' If nodes on constant conditions take their branch first: the IR is
    // straight-line.
    control_flow::inline_constant_ifs(&mut proto)?;
    let g = crate::ir::from_onnx::import(proto)?;
    g.validate().map_err(|reason| Error::Validation {
        stage: "loading".into(),
        reason,
    })?;
    Ok((g, had_external))
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
