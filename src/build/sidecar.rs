//! The JSON description written next to every engine (`OUT.engine.json`).
//!
//! A serialized TensorRT engine cannot be read without the library and a GPU, and says
//! nothing about where it came from. The sidecar records what a deployment needs to check
//! before loading it: targets, precision, I/O bindings, the TensorRT-RTX version, and hashes
//! of the source model and the engine bytes.
//!
//! Everything except `timing` (and, for multi-output engines, `engine.sha256`) is the same on
//! every rebuild of the same inputs: TensorRT-RTX 1.7 orders the output table of a plan by
//! heap address, so engines with two or more outputs are not always byte-identical.
//! `content_key` hashes only the inputs of the build and can serve as a cache key.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{sha256_hex, BuildOptions, BuiltEngine, IoDesc, Prepared};

/// Identifies the sidecar layout; bumped on incompatible changes.
pub const FORMAT: &str = "detrc-engine-sidecar/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    pub format: String,
    pub detrc_version: String,
    pub tensorrt: TensorRt,
    pub targets: Vec<String>,
    pub precision: String,
    /// How an int8 model was calibrated; absent for fp32/fp16 engines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
    pub source: Source,
    /// sha256 of the ONNX model handed to TensorRT (after compile and fp16 conversion).
    pub onnx_sha256: String,
    pub engine: EngineFile,
    pub options: Options,
    /// sha256 over everything that determines the engine: detrc and TensorRT versions,
    /// targets, precision, options and the ONNX handed to TensorRT.
    pub content_key: String,
    /// What detrc did to the model before TensorRT saw it.
    pub steps: Vec<String>,
    /// TensorRT's warnings during parsing and building.
    pub warnings: Vec<String>,
    pub timing: Timing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorRt {
    /// "TensorRT-RTX", or "TensorRT" with the `enterprise` feature.
    pub flavor: String,
    /// Version of the library that built the engine, e.g. "1.7.1.1".
    pub version: String,
    /// Version of the headers detrc was compiled against.
    pub headers: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantization {
    /// Calibration method ("max", "percentile(99.99)", "entropy", "mse", "weights-only"), or
    /// "external" for a model quantized by another tool.
    pub method: String,
    /// Calibration images used.
    pub images: usize,
    /// sha256 over every Q/DQ scale (empty for a model quantized by another tool).
    pub scales_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Io {
    pub name: String,
    pub dtype: String,
    /// -1 marks a dynamic dimension (see `options.shapes`).
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The model path as given on the command line.
    pub path: String,
    /// sha256 of that file (not of external data files it references).
    pub sha256: String,
    /// True if detrc had compiled it before; false if `detrc build` compiled it.
    pub compiled_before: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineFile {
    /// File name of the engine, relative to the sidecar's folder.
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub workspace_mb: Option<u64>,
    pub opt_level: Option<u32>,
    /// One entry per dynamic input: `name:min/opt/max`, dims joined by `x`.
    pub shapes: Vec<String>,
    /// Extra fp32 keep-list entries for fp16 builds.
    pub fp16_keep: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub prepare_seconds: f64,
    pub engine_seconds: f64,
}

fn io(d: &IoDesc) -> Io {
    Io {
        name: d.name.clone(),
        dtype: d.dtype.clone(),
        shape: d.dims.clone(),
    }
}

fn dims(d: &[i64]) -> String {
    d.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

impl Sidecar {
    pub fn new(
        model: &Path,
        out: &Path,
        opts: &BuildOptions,
        prepared: &Prepared,
        built: &BuiltEngine,
        engine_seconds: f64,
    ) -> Sidecar {
        let options = Options {
            workspace_mb: opts.engine.workspace_mb,
            opt_level: opts.engine.opt_level,
            // What the engine was built with, a default batch-1 profile included.
            shapes: built
                .profiles
                .iter()
                .map(|p| {
                    format!(
                        "{}:{}/{}/{}",
                        p.name,
                        dims(&p.min),
                        dims(&p.opt),
                        dims(&p.max)
                    )
                })
                .collect(),
            fp16_keep: opts.fp16_keep.clone(),
        };
        let mut sc = Sidecar {
            format: FORMAT.to_string(),
            detrc_version: env!("CARGO_PKG_VERSION").to_string(),
            tensorrt: TensorRt {
                flavor: super::engine::FLAVOR.to_string(),
                version: built.tensorrt_version.clone(),
                headers: super::engine::compiled_tensorrt_version(),
            },
            targets: built.targets.clone(),
            precision: opts.precision.as_str().to_string(),
            quantization: prepared.quantization.clone(),
            inputs: built.inputs.iter().map(io).collect(),
            outputs: built.outputs.iter().map(io).collect(),
            source: Source {
                path: model.display().to_string(),
                sha256: prepared.source_sha256.clone(),
                compiled_before: prepared.was_compiled,
            },
            onnx_sha256: sha256_hex(&prepared.onnx),
            engine: EngineFile {
                file: out
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                bytes: built.bytes.len() as u64,
                sha256: sha256_hex(&built.bytes),
            },
            options,
            content_key: String::new(),
            steps: prepared.steps.clone(),
            warnings: built.warnings.clone(),
            timing: Timing {
                prepare_seconds: prepared.seconds,
                engine_seconds,
            },
        };
        sc.content_key = sc.compute_content_key();
        sc
    }

    /// Hash of the build's inputs, independent of paths, timing and the engine bytes.
    pub fn compute_content_key(&self) -> String {
        let key = serde_json::json!({
            "format": self.format,
            "detrc_version": self.detrc_version,
            "tensorrt": self.tensorrt,
            "targets": self.targets,
            "precision": self.precision,
            "onnx_sha256": self.onnx_sha256,
            "options": self.options,
        });
        sha256_hex(key.to_string().as_bytes())
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    pub fn from_json(text: &str) -> Result<Sidecar, serde_json::Error> {
        serde_json::from_str(text)
    }
}
