//! `detrc._detrc.run`: `detrc run` in this process (the CPU backend or a TensorRT-RTX engine),
//! returning the `--json` summary.

use std::path::PathBuf;

use detrc::reference::{RuntimeChoice, RuntimeKind};
use detrc::run::{
    Backend, CpuBackend, Decode, Fix, Labels, Normalize, Resize, RunError, RunOptions,
    TensorRtBackend, TensorRtOptions,
};
use pyo3::prelude::*;

use super::{category, guarded, Failure};

impl From<RunError> for Failure {
    fn from(e: RunError) -> Failure {
        let category = match &e {
            RunError::Model(m) => category(m),
            RunError::Read { .. }
            | RunError::NoImages { .. }
            | RunError::NoInputs
            | RunError::Image { .. }
            | RunError::DuplicateOutput { .. }
            | RunError::OverwritesInput { .. }
            | RunError::Labels { .. }
            | RunError::Write { .. } => "file",
            RunError::BadInput(_) | RunError::NotDetr(_) => "model",
            RunError::DecodeMismatch { .. } | RunError::Undecided(_) | RunError::Options(_) => {
                "usage"
            }
            RunError::NoCudaDriver | RunError::Cuda(_) | RunError::TensorRt(_) => "run",
        };
        Failure::new(category, e.to_string())
    }
}

/// `detrc.run`'s options, one dict key each (checked by `detrc/__init__.py`).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct RunArgs {
    threshold: f32,
    /// "softmax", "sigmoid", "graph" or None (chosen from the model).
    decode: Option<String>,
    /// "imagenet", "none" or None (by decode).
    normalize: Option<String>,
    /// "torch" or "pil".
    resize: String,
    top_k: Option<usize>,
    /// "coco", a file of names, or None (automatic).
    labels: Option<String>,
    /// "cpu", "onnxruntime", "tract", "tensorrt" or None (by the file's extension).
    backend: Option<String>,
    batch: Option<usize>,
    input_size: Option<(usize, usize)>,
    tensorrt_dir: Option<PathBuf>,
}

fn usage(what: &str, got: &str, want: &str) -> Failure {
    Failure::new("usage", format!("{what}={got:?}: expected {want}"))
}

/// Runs `model` on `images` into `output` like `detrc run --json`; returns that summary.
#[pyfunction]
#[pyo3(signature = (model, images, output, options))]
pub(crate) fn run(
    py: Python<'_>,
    model: PathBuf,
    images: Vec<PathBuf>,
    output: PathBuf,
    options: RunArgs,
) -> PyResult<String> {
    let a = &options;
    guarded(py, || {
        let decode = match a.decode.as_deref() {
            None => None,
            Some("softmax") => Some(Decode::Softmax),
            Some("sigmoid") => Some(Decode::Sigmoid),
            Some("graph") => Some(Decode::Graph),
            Some(other) => {
                return Err(usage(
                    "decode",
                    other,
                    "\"softmax\", \"sigmoid\", \"graph\" or None",
                ))
            }
        };
        let normalize = match a.normalize.as_deref() {
            None => None,
            Some("imagenet") => Some(Normalize::ImageNet),
            Some("none") => Some(Normalize::Unit),
            Some(other) => return Err(usage("normalize", other, "\"imagenet\", \"none\" or None")),
        };
        let resize = match a.resize.as_str() {
            "torch" => Resize::Torch,
            "pil" => Resize::Pil,
            other => return Err(usage("resize", other, "\"torch\" or \"pil\"")),
        };
        if !(0.0..=1.0).contains(&a.threshold) {
            return Err(Failure::new(
                "usage",
                format!("threshold={} is not within 0..=1", a.threshold),
            ));
        }
        let labels = match &a.labels {
            Some(spec) => Labels::parse(spec)?,
            None => Labels::Auto,
        };
        let onnx = model
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        let backend_name = a
            .backend
            .as_deref()
            .unwrap_or(if onnx { "cpu" } else { "tensorrt" });
        let fix = Fix {
            batch: a.batch,
            size: a.input_size,
        };
        let files = detrc::run::images::collect(&images)?;
        let mut backend: Box<dyn Backend> = match backend_name {
            "cpu" | "onnxruntime" | "tract" => {
                let kind = match backend_name {
                    "onnxruntime" => Some(RuntimeKind::OnnxRuntime),
                    "tract" => Some(RuntimeKind::Tract),
                    _ => None,
                };
                let choice = RuntimeChoice {
                    kind,
                    library: None,
                };
                let (runtime, _) = choice.resolve()?;
                Box::new(CpuBackend::load_with(&model, &fix, &runtime)?)
            }
            "tensorrt" => Box::new(TensorRtBackend::load(
                &model,
                &TensorRtOptions {
                    lib_dir: a.tensorrt_dir.clone(),
                    fix,
                    device: 0,
                    cpu_preprocess: false,
                },
            )?),
            other => {
                return Err(usage(
                    "backend",
                    other,
                    "\"cpu\", \"onnxruntime\", \"tract\", \"tensorrt\" or None",
                ))
            }
        };
        let decode = match decode {
            Some(d) => d,
            None => detrc::run::decode::detect_for(&model, &backend.outputs())
                .map_err(|u| RunError::Undecided(u.0))?,
        };
        let normalize = normalize.unwrap_or_else(|| decode.default_normalize());
        let opts = RunOptions {
            threshold: a.threshold,
            labels,
            out_dir: output.clone(),
            decode,
            top_k: a.top_k,
            normalize,
            resize,
        };
        let s = detrc::run::run(backend.as_mut(), &files, &opts, &mut |_, _| {})?;
        let j = serde_json::json!({
            "model": model,
            "backend": backend.name(),
            "runtime": backend.runtime(),
            "decode": decode.name(),
            "normalize": match normalize {
                Normalize::ImageNet => "imagenet",
                Normalize::Unit => "none",
            },
            "resize": resize.name(),
            "batch": backend.shape().batch,
            "images": s.images,
            "detections": s.detections,
            "batches": s.batches,
            "infer_seconds": s.infer_seconds,
            "seconds": s.total_seconds,
            "output": s.detections_path,
            "masks": s.masks,
            "warnings": s.warnings,
        });
        Ok(j.to_string())
    })
}
