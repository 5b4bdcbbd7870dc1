use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::anyhow;
use detrc::build::{BuildError, BuildOptions, EngineError, EngineOptions, Precision, ShapeProfile};
use detrc::pass::{Event, Status};

use super::{Exit, EXIT_USAGE};

use detrc::build::DEFAULT_TARGETS;

#[derive(clap::Args)]
#[command(after_help = "\
Models not compiled by detrc yet (no `detrc.compiled` metadata) go through the default \
compile pipeline in memory first; a model written by `detrc compile` is built as it is.

TensorRT-RTX libraries are looked up in --tensorrt-dir, else $DETRC_TENSORRT_DIR, else the \
repository's .trt folder (where scripts/install_tensorrt_rtx.sh puts them), else the system \
loader path. No GPU is needed: engines are compiled ahead of time for the --target GPUs.")]
pub struct Args {
    /// The ONNX model (compiled by detrc or not).
    model: PathBuf,
    /// Where to write the engine; its description goes to `<output>.json`.
    #[arg(short, long)]
    output: PathBuf,
    /// GPU architectures to build for (comma separated): sm80, sm86, sm89, sm120, sm121
    /// (also `86`, `8.6`, `sm_86`).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_TARGETS)]
    target: Vec<String>,
    /// fp32, fp16 (the model goes through the to-fp16 pass; inputs/outputs stay fp32), int8 or
    /// fp8 (Q/DQ nodes; a model without them is calibrated on --calibration images first;
    /// fp8 needs sm89 or newer). Default: what the model computes in (its Q/DQ nodes, fp16
    /// compute), else fp32.
    #[arg(long)]
    precision: Option<Precision>,
    #[command(flatten)]
    cal: super::quantize::CalibrationArgs,
    /// Op types or node names to keep in fp32 on top of to-fp16's defaults (comma separated).
    #[arg(long, value_delimiter = ',')]
    fp16_keep: Vec<String>,
    /// GridSample as exported (keep), or rewritten as gathers of the four neighbours (gather)
    /// for TensorRT 10.14/11.1, which miscompile it (NVIDIA/TensorRT#4813). See README.
    #[arg(long, value_name = "keep|gather", default_value = "keep", value_parser = detrc::passes::tensorrt::GridSample::parse)]
    gridsample: detrc::passes::tensorrt::GridSample,
    /// Shape range of a dynamic input: `name:MIN/OPT/MAX`, dims joined by x, e.g.
    /// `images:1x3x800x800/2x3x800x800/4x3x800x800`. Repeat for several inputs.
    #[arg(long)]
    shapes: Vec<String>,
    /// Workspace memory limit of the builder in MiB.
    #[arg(long)]
    workspace: Option<u64>,
    /// Builder optimization level 0..=5.
    #[arg(long)]
    opt_level: Option<u32>,
    /// Folder holding the TensorRT-RTX libraries.
    #[arg(long)]
    tensorrt_dir: Option<PathBuf>,
    /// Write a Make-style dependency file (the engine depends on the model and its data).
    #[arg(long)]
    depfile: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Print the engine's sidecar JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Parses `name:1x3x8x8/2x3x8x8/4x3x8x8`. The name is everything before the last colon, so
/// names with colons work.
fn parse_shapes(spec: &str) -> Result<ShapeProfile, String> {
    let (name, ranges) = spec
        .rsplit_once(':')
        .ok_or_else(|| format!("--shapes {spec:?}: expected name:MIN/OPT/MAX"))?;
    let parts: Vec<&str> = ranges.split('/').collect();
    if name.is_empty() || parts.len() != 3 {
        return Err(format!(
            "--shapes {spec:?}: expected name:MIN/OPT/MAX, e.g. images:1x3x800x800/2x3x800x800/4x3x800x800"
        ));
    }
    let dims = |s: &str| -> Result<Vec<i64>, String> {
        s.split(['x', 'X', ','])
            .map(|d| {
                d.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("--shapes {spec:?}: {d:?} is not a dimension"))
            })
            .collect()
    };
    Ok(ShapeProfile {
        name: name.to_string(),
        min: dims(parts[0])?,
        opt: dims(parts[1])?,
        max: dims(parts[2])?,
    })
}

pub fn run(a: Args) -> Result<(), Exit> {
    let usage = |e: String| Exit(EXIT_USAGE, anyhow!(e));
    // Without --precision, the model's own: a quantized or fp16 model builds as it is.
    let precision = match a.precision {
        Some(p) => p,
        None => detrc::build::model_precision(&a.model)
            .map_err(|e| {
                Exit(
                    super::EXIT_ERROR,
                    anyhow!(e).context(format!("cannot build {}", a.model.display())),
                )
            })?
            .unwrap_or_default(),
    };
    let mut profiles = Vec::new();
    for s in &a.shapes {
        profiles.push(parse_shapes(s).map_err(usage)?);
    }
    let calibration = match &a.cal.calibration {
        Some(dir) if precision.quant_format().is_some() => Some(detrc::build::Calibration {
            dir: dir.clone(),
            max_images: a.cal.max_images,
            options: a.cal.options()?,
        }),
        Some(_) => return Err(usage("--calibration needs --precision int8 or fp8".into())),
        None if precision.quant_format().is_some() && a.cal.weights_only => {
            Some(detrc::build::Calibration {
                dir: PathBuf::new(),
                max_images: None,
                options: a.cal.options()?,
            })
        }
        None => None,
    };
    let opts = BuildOptions {
        calibration,
        engine: EngineOptions {
            targets: a.target.clone(),
            workspace_mb: a.workspace,
            opt_level: a.opt_level,
            profiles,
        },
        precision,
        fp16_keep: a.fp16_keep.clone(),
        tensorrt_dir: a.tensorrt_dir.clone(),
        gridsample: a.gridsample,
    };
    if !a.fp16_keep.is_empty() && precision != Precision::Fp16 {
        return Err(usage("--fp16-keep needs --precision fp16".into()));
    }

    let quiet = a.quiet || a.json;
    let tty = std::io::stderr().is_terminal();
    let mut on = |e: Event| {
        if quiet {
            return;
        }
        if let Event::Done(r) = e {
            if r.status != Status::Unchanged {
                eprintln!("  {:<20} {:<14} {}", r.pass, r.status, r.details.join("; "));
            }
        }
    };
    if !quiet {
        eprintln!(
            "building {} -> {} ({}, {})",
            a.model.display(),
            a.output.display(),
            precision.as_str(),
            a.target.join(",")
        );
        if tty {
            eprintln!("  (TensorRT builds take from seconds to minutes)");
        }
    }
    let sc = match detrc::build::build(&a.model, &a.output, &opts, &mut on) {
        Ok(sc) => sc,
        Err(e) => {
            let code = match &e {
                BuildError::Engine(
                    EngineError::UnsupportedTarget { .. } | EngineError::InvalidOptions(_),
                ) => EXIT_USAGE,
                BuildError::AlreadyFp16 { .. }
                | BuildError::AlreadyQuantized { .. }
                | BuildError::NoCalibration(_)
                | BuildError::Fp8Target(_) => EXIT_USAGE,
                BuildError::Fp16Check(_) => super::EXIT_VERIFY,
                _ => super::EXIT_ERROR,
            };
            return Err(Exit(
                code,
                anyhow!(e).context(format!("cannot build {}", a.model.display())),
            ));
        }
    };
    if let Some(dep) = &a.depfile {
        super::compile::write_depfile(dep, &a.output, &a.model)?;
    }
    if a.json {
        print!("{}", sc.to_json());
    } else if !a.quiet {
        for s in &sc.steps {
            eprintln!("  {s}");
        }
        for w in &sc.warnings {
            eprintln!("  warning: {w}");
        }
        eprintln!(
            "built {} ({} bytes, {} for {}, {} {}) in {:.2}s + {:.2}s; sidecar {}",
            a.output.display(),
            sc.engine.bytes,
            sc.precision,
            sc.targets.join(","),
            sc.tensorrt.flavor,
            sc.tensorrt.version,
            sc.timing.prepare_seconds,
            sc.timing.engine_seconds,
            detrc::build::sidecar_path(&a.output).display()
        );
    }
    Ok(())
}
