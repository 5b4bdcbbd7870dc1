//! Typed errors of `detrc run` / `detrc bench`. Every message names the file or the condition
//! that a user can act on; the CLI adds the command-level context.

use std::path::PathBuf;

/// The message for a machine without a CUDA driver (shared by the TensorRT backend and the GPU
/// pre-processing check so that both say the same thing).
pub const NO_CUDA_DRIVER: &str = "no CUDA driver found; the TensorRT backend needs an NVIDIA GPU \
    (compute capability 8.0, 8.6, 8.9 or 12.x for TensorRT-RTX)";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    // `cause`, not `source`: the message already says it, and a source would make anyhow's
    // chain print it twice.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} holds no JPEG or PNG images (*.jpg, *.jpeg, *.png)", path.display())]
    NoImages { path: PathBuf },
    #[error("no input images given")]
    NoInputs,
    #[error("cannot decode image {}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    #[error("{} and {} would both be annotated as {}; rename one or run them separately",
        first.display(), second.display(), output.display())]
    DuplicateOutput {
        first: PathBuf,
        second: PathBuf,
        output: PathBuf,
    },
    #[error("the annotated image {} would overwrite the input {}; choose another output folder",
        output.display(), input.display())]
    OverwritesInput { input: PathBuf, output: PathBuf },
    #[error("cannot read labels from {}: {reason}", path.display())]
    Labels { path: PathBuf, reason: String },
    #[error("the model input is not an image batch: {0}")]
    BadInput(String),
    #[error(
        "the model outputs are not DETR-shaped: expected pred_logits [B,Q,C+1] and \
         pred_boxes [B,Q,4], got {0}"
    )]
    NotDetr(String),
    #[error("--decode {decode} does not fit the model's outputs ({outputs}): {why}")]
    DecodeMismatch {
        decode: &'static str,
        why: String,
        outputs: String,
    },
    #[error(
        "cannot tell how this model decodes: {0}; give --decode softmax (DETR: softmax with a \
         trailing no-object class), --decode sigmoid (focal-loss models: Conditional, DAB, \
         Deformable DETR, RT-DETR, D-FINE) or --decode graph (deploy graphs with labels, boxes, \
         scores outputs)"
    )]
    Undecided(String),
    #[error("{0}")]
    Model(#[from] crate::Error),
    #[error("{NO_CUDA_DRIVER}")]
    NoCudaDriver,
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("TensorRT: {0}")]
    TensorRt(String),
    #[error("invalid option: {0}")]
    Options(String),
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

pub type Result<T, E = RunError> = std::result::Result<T, E>;
