//! Typed errors of the detrc library. The binary adds context with `anyhow`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is empty (0 bytes): not an ONNX model", path.display())]
    Empty { path: PathBuf },
    #[error("{} is not a valid ONNX protobuf (truncated or corrupt?)", path.display())]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
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
    #[error("reference runtime: {0}")]
    Runtime(String),
    #[error("verification failed: {0}")]
    Verification(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
