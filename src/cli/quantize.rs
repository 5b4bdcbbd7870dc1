use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use detrc::emit::ExternalData;
use detrc::pass::{Event, Status};
use detrc::quant::{Format, Method, QuantizeOptions};

use super::{Exit, EXIT_USAGE};

#[derive(clap::Args)]
#[command(after_help = "\
A model not compiled by detrc yet goes through the default compile pipeline in memory first \
(which folds DETR's key-padding mask: no Where is left to quantize around).

Calibration images are pre-processed exactly as `detrc run` does (resize to the model's input \
size as --resize says, torch by default, ImageNet normalization) and taken in file-name order, \
so the same folder gives the same model.")]
pub struct Args {
    /// The ONNX model (compiled by detrc or not).
    input: PathBuf,
    /// Where to write the quantized model.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    cal: CalibrationArgs,
    /// Write a JSON report: what was quantized, the calibrated ranges, and with --eval the
    /// accuracy against the float model.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Held-out images to measure accuracy on (SQNR of every output, detection agreement).
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Score threshold for the detection agreement of --eval.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Q/DQ format: int8, or fp8 (E4M3; the model moves to opset 19; TensorRT builds it for
    /// sm89 and newer).
    #[arg(long, default_value = "int8", value_parser = ["int8", "fp8"])]
    format: String,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Calibration options shared with `detrc build --precision int8`.
#[derive(clap::Args, Clone)]
pub struct CalibrationArgs {
    /// Folder of calibration images (JPEG/PNG).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// How activation ranges are chosen from the calibration histograms: max, percentile,
    /// entropy (KL divergence), mse (least squared error).
    #[arg(long, default_value = "mse", value_parser = ["max", "percentile", "entropy", "mse"])]
    pub method: String,
    /// The percentile of |x| that --method percentile keeps.
    #[arg(long, default_value_t = 99.99)]
    pub percentile: f64,
    /// Use at most this many calibration images (the first ones by file name).
    #[arg(long)]
    pub max_images: Option<usize>,
    /// Do not quantize the skip input of residual Adds.
    #[arg(long)]
    pub no_residual: bool,
    /// Quantize weights only (INT8 weight-only; activations stay float, no calibration).
    #[arg(long)]
    pub weights_only: bool,
    /// How calibration images are resized: torch (bilinear, no antialiasing) or pil (PIL's
    /// antialiased bilinear), as `detrc run --resize`; match the pipeline the model will see.
    #[arg(long, value_enum, default_value = "torch")]
    pub resize: super::run::ResizeArg,
}

impl CalibrationArgs {
    pub fn options(&self) -> Result<QuantizeOptions, Exit> {
        // The percentile is the only method argument clap cannot check.
        let method = Method::parse(&self.method, self.percentile)
            .map_err(|e| Exit(EXIT_USAGE, anyhow!("--{e}")))?;
        if self.max_images == Some(0) {
            return Err(Exit(EXIT_USAGE, anyhow!("--max-images must be at least 1")));
        }
        Ok(QuantizeOptions {
            method,
            format: Format::Int8,
            residual: !self.no_residual,
            weight_only: self.weights_only,
            resize: self.resize.into(),
        })
    }
}

fn images(dir: &Path, max: Option<usize>) -> Result<Vec<PathBuf>, Exit> {
    detrc::quant::image_files(dir, max).map_err(|e| Exit(super::EXIT_ERROR, anyhow!(e)))
}

pub fn run(a: Args) -> Result<(), Exit> {
    let mut opts = a.cal.options()?;
    if a.format == "fp8" {
        opts.format = Format::Fp8;
        // tract, the reference runtime, has no float8 type.
        if a.eval.is_some() {
            return Err(Exit(
                EXIT_USAGE,
                anyhow!(
                    "--eval cannot run an fp8 model: tract, detrc's reference runtime, has no \
                     float8; measure it under onnxruntime with scripts/int8_compare.py \
                     --format fp8"
                ),
            ));
        }
    }
    if !(0.0..=1.0).contains(&a.threshold) {
        return Err(Exit(
            EXIT_USAGE,
            anyhow!("--threshold {} is not within 0..=1", a.threshold),
        ));
    }
    let quiet = a.quiet || a.json;
    // Every image is checked before any work, so a bad file fails fast and writes nothing.
    let cal_files = match (&a.cal.calibration, opts.weight_only) {
        (Some(d), _) => images(d, a.cal.max_images)?,
        (None, true) => Vec::new(),
        (None, false) => {
            return Err(Exit(
                EXIT_USAGE,
                anyhow!("--calibration DIR is required (or --weights-only)"),
            ))
        }
    };
    let eval_files = match &a.eval {
        Some(d) => Some(images(d, None)?),
        None => None,
    };
    let t0 = std::time::Instant::now();
    let mut on = |e: Event| {
        if quiet {
            return;
        }
        if let Event::Done(r) = e {
            if matches!(r.status, Status::Changed | Status::RolledBack) {
                eprintln!("  {:<20} {:<14} {}", r.pass, r.status, r.details.join("; "));
            }
        }
    };
    let (mut g, was_compiled, _) = detrc::build::load_compiled(&a.input, &mut on)
        .with_context(|| format!("cannot load {}", a.input.display()))?;
    let float_bytes = detrc::quant::to_bytes(&g)?;
    let (_, shape) = detrc::quant::image_input(&g)
        .with_context(|| format!("cannot quantize {}", a.input.display()))?;
    if !quiet {
        eprintln!(
            "quantizing {} ({}) on {} calibration images, method {}",
            a.input.display(),
            if was_compiled {
                "compiled"
            } else {
                "compiled in memory"
            },
            cal_files.len(),
            if opts.weight_only {
                "weights-only".to_string()
            } else {
                opts.method.name()
            }
        );
    }
    let (summary, ranges, cal) = detrc::quant::quantize_graph(&mut g, &cal_files, &opts)
        .with_context(|| format!("cannot quantize {}", a.input.display()))?;
    let cal_seconds = t0.elapsed().as_secs_f64();
    let model = g.export();
    let mut quant_bytes = Vec::new();
    detrc::emit::write_model(&model, &mut quant_bytes)?;
    let evaluation = match &eval_files {
        Some(files) => Some(
            detrc::quant::evaluate_with(
                &float_bytes,
                &quant_bytes,
                shape,
                files,
                a.threshold,
                opts.resize,
            )
            .context("cannot evaluate the quantized model")?,
        ),
        None => None,
    };
    detrc::emit::save(&model, &a.output, ExternalData::Auto)
        .with_context(|| format!("cannot write {}", a.output.display()))?;

    let tensors: Vec<serde_json::Value> = ranges
        .iter()
        .map(|(name, amax)| {
            let h = &cal.histograms[name];
            serde_json::json!({"tensor": name, "max": h.max, "amax": amax, "values": h.total})
        })
        .collect();
    let method = if opts.weight_only {
        "weights-only".to_string()
    } else {
        opts.method.name()
    };
    let report = serde_json::json!({
        "input": a.input,
        "output": a.output,
        "format": opts.format.as_str(),
        "method": method,
        "calibration": {
            "folder": a.cal.calibration,
            "images": cal.images,
            "resize": opts.resize.name(),
        },
        "quantized": summary,
        "ranges": tensors,
        "evaluation": evaluation,
        "seconds": cal_seconds,
    });
    if let Some(r) = &a.report {
        detrc::emit::atomic::write_bytes(r, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !a.quiet {
        for l in summary.lines() {
            eprintln!("  {l}");
        }
        if let Some(ev) = &evaluation {
            for o in &ev.outputs {
                eprintln!(
                    "  {}: SQNR {:.2} dB (max |diff| {:.3e}) on {} images",
                    o.name, o.sqnr_db, o.max_abs_diff, ev.images
                );
            }
            if let Some(d) = &ev.detections {
                eprintln!(
                    "  detections: top-1 class agreement {:.1}%, {} of {} float detections matched \
                     (score >= {}, {} quantized), max box diff {:.4}",
                    d.top1_agreement * 100.0,
                    d.matched,
                    d.float_detections,
                    d.threshold,
                    d.quantized_detections,
                    d.max_box_diff
                );
            }
        }
        eprintln!("wrote {} in {:.2}s", a.output.display(), cal_seconds);
    }
    Ok(())
}
