use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use detrc::run::{Backend, CpuBackend, Labels, RunOptions, TensorRtBackend, TensorRtOptions};

use super::Exit;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// An ONNX model on the CPU (onnxruntime when installed, else tract; see --reference).
    Cpu,
    /// The CPU backend with onnxruntime (as --backend cpu --reference onnxruntime).
    Onnxruntime,
    /// The CPU backend with tract (as --backend cpu --reference tract).
    Tract,
    /// A serialized TensorRT-RTX engine on an NVIDIA GPU.
    Tensorrt,
}

impl BackendKind {
    /// Without `--backend`: `.onnx` files run on the CPU, anything else is taken for an engine.
    pub fn choose(model: &Path, flag: Option<BackendKind>) -> BackendKind {
        flag.unwrap_or_else(|| {
            let onnx = model
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
            if onnx {
                BackendKind::Cpu
            } else {
                BackendKind::Tensorrt
            }
        })
    }
}

/// Options shared by `run` and `bench` for opening a model.
#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// cpu (ONNX; onnxruntime or tract), onnxruntime, tract, or tensorrt (engine); default:
    /// cpu for *.onnx, tensorrt otherwise.
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    #[command(flatten)]
    pub runtime: super::runtime::RuntimeArgs,
    /// Folder holding the TensorRT-RTX libraries (else $DETRC_TENSORRT_DIR, <repo>/.trt, the
    /// system search path).
    #[arg(long)]
    pub tensorrt_dir: Option<PathBuf>,
    /// TensorRT backend: pre-process on the CPU instead of with the CUDA kernel.
    #[arg(long)]
    pub cpu_preprocess: bool,
    /// TensorRT backend: the GPU to use.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
}

/// Loads `model` with the chosen backend; `batch` is for engines with a dynamic batch.
pub fn open_backend(
    model: &Path,
    args: &BackendArgs,
    batch: Option<usize>,
    quiet: bool,
) -> Result<Box<dyn Backend>, Exit> {
    let kind = BackendKind::choose(model, args.backend);
    let mut rt_args = args.runtime.clone();
    let forced = match kind {
        BackendKind::Onnxruntime => Some(super::runtime::ReferenceKind::Onnxruntime),
        BackendKind::Tract => Some(super::runtime::ReferenceKind::Tract),
        _ => None,
    };
    if let Some(f) = forced {
        if rt_args.reference.is_some_and(|r| r != f) {
            return Err(Exit(
                super::EXIT_USAGE,
                anyhow::anyhow!("--backend and --reference name different runtimes"),
            ));
        }
        rt_args.reference = Some(f);
    }
    match kind {
        BackendKind::Cpu | BackendKind::Onnxruntime | BackendKind::Tract => {
            let runtime = rt_args.resolve(quiet)?;
            let b = CpuBackend::load_with(model, &runtime).with_context(|| {
                format!(
                    "cannot load {} with the CPU backend (it runs ONNX models; engines need \
                     --backend tensorrt)",
                    model.display()
                )
            })?;
            if let Some(want) = batch {
                if want != b.shape().batch {
                    return Err(anyhow::anyhow!(
                        "--batch {want}, but {} has a static batch of {}",
                        model.display(),
                        b.shape().batch
                    )
                    .into());
                }
            }
            Ok(Box::new(b))
        }
        BackendKind::Tensorrt => {
            let opts = TensorRtOptions {
                lib_dir: args.tensorrt_dir.clone(),
                batch,
                device: args.device,
                cpu_preprocess: args.cpu_preprocess,
            };
            let b = TensorRtBackend::load(model, &opts).with_context(|| {
                format!("cannot load {} with the TensorRT backend", model.display())
            })?;
            if let (Some(why), false) = (b.gpu_preprocess_unavailable(), quiet) {
                eprintln!("detrc: note: pre-processing on the CPU: {why}");
            }
            Ok(Box::new(b))
        }
    }
}

fn threshold(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not within 0..=1"))
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// An ONNX model (CPU backend) or a TensorRT engine (TensorRT backend).
    model: PathBuf,
    /// Image files, or folders whose *.jpg / *.jpeg / *.png files are taken in name order.
    #[arg(long, required = true, num_args = 1..)]
    images: Vec<PathBuf>,
    /// Output folder: detections.json and one annotated <image stem>.png per image.
    #[arg(short = 'o', long = "output")]
    out_dir: PathBuf,
    /// Keep detections scoring at least this (0..=1).
    #[arg(long, default_value = "0.7", value_parser = threshold)]
    threshold: f32,
    /// Class names: "coco" (DETR's 91 COCO ids) or a file with one name per line.
    /// Default: COCO for 91-class models, class numbers otherwise.
    #[arg(long)]
    labels: Option<String>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<(), Exit> {
    let labels = match &a.labels {
        Some(spec) => Labels::parse(spec)?,
        None => Labels::Auto,
    };
    let files = detrc::run::images::collect(&a.images)?;
    let mut backend = open_backend(&a.model, &a.backend, None, a.quiet)?;
    let opts = RunOptions {
        threshold: a.threshold,
        labels,
        out_dir: a.out_dir.clone(),
    };
    let show_bar = !a.quiet && !a.json && files.len() > 1 && std::io::stderr().is_terminal();
    let mut bar = |done: usize, total: usize| {
        if show_bar {
            const W: usize = 30;
            let fill = done * W / total.max(1);
            eprint!(
                "\r\x1b[2K  [{}{}] {done}/{total} images",
                "#".repeat(fill),
                ".".repeat(W - fill)
            );
        }
    };
    let res = detrc::run::run(backend.as_mut(), &files, &opts, &mut bar);
    if show_bar {
        eprint!("\r\x1b[2K");
    }
    let s = res.with_context(|| format!("cannot run {}", a.model.display()))?;
    if a.json {
        let j = serde_json::json!({
            "model": a.model,
            "backend": backend.name(),
            "images": s.images,
            "detections": s.detections,
            "batches": s.batches,
            "infer_seconds": s.infer_seconds,
            "seconds": s.total_seconds,
            "output": s.detections_path,
        });
        println!("{}", serde_json::to_string(&j)?);
    } else if !a.quiet {
        let n =
            |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        eprintln!(
            "detected {} (score >= {}) in {} with {} ({} of {}) in {:.2}s ({:.2}s inference); \
             wrote {}",
            n(s.detections, "object", "objects"),
            a.threshold,
            n(s.images, "image", "images"),
            backend.name(),
            n(s.batches, "batch", "batches"),
            backend.shape().batch,
            s.total_seconds,
            s.infer_seconds,
            s.detections_path.display()
        );
    }
    Ok(())
}
