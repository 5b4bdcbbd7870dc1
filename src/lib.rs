//! detrc: prepares DETR-family detection transformers for NVIDIA TensorRT.
//!
//! Data flows `load -> ir -> passes -> emit -> build -> run`, one module each:
//! - [`load`]: ONNX protobuf (memory-mapped, zero-copy) and external data;
//! - [`ir`]: the petgraph IR, its validator and text dump;
//! - [`pass`]: the pass manager; the passes themselves live in the top-level `passes/` folder;
//! - [`tensor`]: element types, dense tensors and attributes (the bottom layer);
//! - [`ops`]: the op registry: what each operator means (types, evaluation, axes);
//! - [`analysis`]: typing and batch facts over the IR;
//! - [`emit`]: streamed, atomic ONNX writing;
//! - [`build`]: TensorRT-RTX engine building (fp32/fp16) and the engine's JSON sidecar;
//! - [`reference`]: the CPU reference runtime used by `--verify`, tests and `detrc run`;
//! - [`run`]: `detrc run` / `detrc bench`: pre-processing, CPU and TensorRT backends,
//!   post-processing, annotated images;
//! - [`tensorrt_lib`]: finding and loading the TensorRT-RTX libraries, for `build` and `run`;
//! - [`digest`]: the SHA-256 spelling the engine sidecar and `detrc run` share.

// The CLI's code says `detrc::…` like any user of the library; this lets it live in here.
extern crate self as detrc;

pub mod analysis;
pub mod build;
/// The `detrc` command line. It is in the library, not the binary, so that the Python
/// package's `detrc` command (python/) runs this very code in-process.
#[doc(hidden)]
pub mod cli;
pub mod digest;
pub mod driver;
pub mod emit;
pub mod error;
pub mod ir;
pub mod load;
pub mod ops;
pub mod pass;
#[path = "../passes/mod.rs"]
pub mod passes;
pub mod phases;
pub mod quant;
pub mod reference;
pub mod run;
pub mod tensor;
pub mod tensorrt_lib;

pub use error::{Error, Result};
