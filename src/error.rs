//! Typed errors of the detrc library. The binary adds context with `anyhow`.

use std::path::PathBuf;

// The I/O and decode variants print their cause in their own message and so do not also report
// it as `source()` (the field is named `cause`, not `source`, for that reason): the CLI prints
// the whole chain with `{:#}`, which would otherwise show every cause twice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is empty (0 bytes): not an ONNX model", path.display())]
    Empty { path: PathBuf },
    #[error("{} is not a valid ONNX protobuf (truncated or corrupt?): {cause}", path.display())]
    Decode {
        path: PathBuf,
        cause: prost::DecodeError,
    },
    #[error("external data of tensor '{tensor}': {reason}")]
    ExternalData { tensor: String, reason: String },
    #[error("invalid model: {0}")]
    Invalid(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("IR check failed after {stage}: {reason}")]
    Validation { stage: String, reason: String },
    #[error("pass '{pass}' failed: {reason}")]
    Pass { pass: String, reason: String },
    #[error("unknown pass '{name}'; valid passes: {valid}")]
    UnknownPass { name: String, valid: String },
    /// A `--batch` / `--input-shape` that contradicts the model: a usage error.
    #[error("input '{input}': {reason}")]
    InputShape { input: String, reason: String },
    #[error("reference runtime: {0}")]
    Runtime(String),
    #[error("onnxruntime library {}: {reason}", path.display())]
    OnnxRuntime { path: PathBuf, reason: String },
    #[error("verification failed: {0}")]
    Verification(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
