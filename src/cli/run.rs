use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use detrc::run::{
    Backend, CpuBackend, Decode, Fix, Labels, Normalize, Resize, RunOptions, TensorRtBackend,
    TensorRtOptions,
};

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
    /// Images per inference for a model with a dynamic batch (default 1); must match a static
    /// batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// HxW for a model with a dynamic image height and width (e.g. 640x640).
    #[arg(long, value_parser = input_size)]
    pub input_size: Option<(usize, usize)>,
}

fn input_size(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    match s.split_once(['x', 'X']) {
        Some((h, w)) => match (parse(h), parse(w)) {
            (Some(h), Some(w)) => Ok((h, w)),
            _ => Err(format!(
                "{s:?} is not HxW with positive numbers (e.g. 640x640)"
            )),
        },
        None => Err(format!("{s:?} is not HxW (e.g. 640x640)")),
    }
}

/// How the model's outputs become detections (see docs/run.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DecodeArg {
    /// Softmax over classes with a trailing no-object class (DETR).
    Softmax,
    /// Sigmoid per (query, class), top-k over queries x classes (focal-loss models).
    Sigmoid,
    /// The graph decodes itself: outputs labels, boxes, scores (official RT-DETR/D-FINE).
    Graph,
}

/// Pixel normalization after the resize and /255.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NormalizeArg {
    /// ImageNet mean/std (DETR, the transformers exports).
    Imagenet,
    /// [0, 1] only (the official RT-DETR / D-FINE deploy graphs).
    None,
}

/// How images are resized to the model's input (see docs/run.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ResizeArg {
    /// Bilinear without antialiasing, as torch's interpolate, OpenCV and GPU pipelines.
    Torch,
    /// PIL's antialiased bilinear (Image.resize BILINEAR), as transformers' image processors
    /// and the official PIL pipelines (runs on the CPU).
    Pil,
}

impl From<ResizeArg> for Resize {
    fn from(r: ResizeArg) -> Resize {
        match r {
            ResizeArg::Torch => Resize::Torch,
            ResizeArg::Pil => Resize::Pil,
        }
    }
}

/// Options shared by `run` and `bench` for decoding.
#[derive(clap::Args, Debug, Clone)]
pub struct DecodeArgs {
    /// softmax, sigmoid or graph; default: chosen from the model's structure (refused, with
    /// the reason, when it cannot tell).
    #[arg(long, value_enum)]
    pub decode: Option<DecodeArg>,
    /// Pixel normalization; default: none for --decode graph, imagenet otherwise.
    #[arg(long, value_enum)]
    pub normalize: Option<NormalizeArg>,
}

/// The decode and normalization for `model`: the flags, else the model's structure.
pub fn choose_decode(
    model: &Path,
    backend: &dyn Backend,
    args: &DecodeArgs,
) -> anyhow::Result<(Decode, Normalize)> {
    let decode = match args.decode {
        Some(DecodeArg::Softmax) => Decode::Softmax,
        Some(DecodeArg::Sigmoid) => Decode::Sigmoid,
        Some(DecodeArg::Graph) => Decode::Graph,
        None => detrc::run::decode::detect_for(model, &backend.outputs())
            .map_err(|u| detrc::run::RunError::Undecided(u.0))
            .with_context(|| format!("cannot run {}", model.display()))?,
    };
    let norm = match args.normalize {
        Some(NormalizeArg::Imagenet) => Normalize::ImageNet,
        Some(NormalizeArg::None) => Normalize::Unit,
        None => decode.default_normalize(),
    };
    Ok((decode, norm))
}

pub fn normalize_name(n: Normalize) -> &'static str {
    match n {
        Normalize::ImageNet => "imagenet",
        Normalize::Unit => "none",
    }
}

/// Loads `model` with the chosen backend, dynamic dimensions fixed by `--batch` and
/// `--input-size`.
pub fn open_backend(
    model: &Path,
    args: &BackendArgs,
    quiet: bool,
) -> Result<Box<dyn Backend>, Exit> {
    let fix = Fix {
        batch: args.batch,
        size: args.input_size,
    };
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
            let b = CpuBackend::load_with(model, &fix, &runtime).with_context(|| {
                format!(
                    "cannot load {} with the CPU backend (it runs ONNX models; engines need \
                     --backend tensorrt)",
                    model.display()
                )
            })?;
            Ok(Box::new(b))
        }
        BackendKind::Tensorrt => {
            let opts = TensorRtOptions {
                lib_dir: args.tensorrt_dir.clone(),
                fix,
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
    /// Class names: "coco" (91-class models: COCO ids; 80-class models and deploy graphs:
    /// the 80 contiguous COCO labels) or a file with one name per line.
    /// Default: COCO for 91- and 80-class models, class numbers otherwise.
    #[arg(long)]
    labels: Option<String>,
    #[command(flatten)]
    decode: DecodeArgs,
    /// sigmoid: (query, class) pairs kept per image (default: the number of queries);
    /// graph: keep the first K the graph emits.
    #[arg(long)]
    top_k: Option<usize>,
    /// Resize convention: torch (bilinear, no antialiasing; the GPU kernel's) or pil (PIL's
    /// antialiased bilinear, as transformers' processors; pre-processes on the CPU).
    #[arg(long, value_enum, default_value = "torch")]
    resize: ResizeArg,
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
    let mut backend = open_backend(&a.model, &a.backend, a.quiet)?;
    let (decode, normalize) = choose_decode(&a.model, backend.as_ref(), &a.decode)?;
    if a.resize == ResizeArg::Pil && backend.name() == "tensorrt" && !a.quiet {
        eprintln!("detrc: note: --resize pil pre-processes on the CPU (the GPU kernel resizes the torch way)");
    }
    let opts = RunOptions {
        threshold: a.threshold,
        labels,
        out_dir: a.out_dir.clone(),
        decode,
        top_k: a.top_k,
        normalize,
        resize: a.resize.into(),
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
    if !a.quiet {
        for w in &s.warnings {
            eprintln!("detrc: warning: {w}");
        }
    }
    if a.json {
        let j = serde_json::json!({
            "model": a.model,
            "backend": backend.name(),
            "decode": decode.name(),
            "normalize": normalize_name(normalize),
            "resize": opts.resize.name(),
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
        println!("{}", serde_json::to_string(&j)?);
    } else if !a.quiet {
        let n =
            |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        eprintln!(
            "detected {}{} (score >= {}) in {} with {}, {} decode ({} of {}) in {:.2}s ({:.2}s \
             inference); wrote {}",
            n(s.detections, "object", "objects"),
            if s.masks.is_some() { " with masks" } else { "" },
            a.threshold,
            n(s.images, "image", "images"),
            backend.name(),
            decode.name(),
            n(s.batches, "batch", "batches"),
            backend.shape().batch,
            s.total_seconds,
            s.infer_seconds,
            s.detections_path.display()
        );
    }
    Ok(())
}
