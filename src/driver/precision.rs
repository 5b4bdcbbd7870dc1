//! `compile --precision`: the strongly typed model that TensorRT 10/11 (`trtexec
//! --stronglyTyped`), TensorRT-RTX and Jetson builds take as it is. TensorRT 11 has no
//! precision flags, so the precision must be in the graph: fp16 compute through `to-fp16`
//! (checked under fp16 storage and guarded against overflow, see [`super::fp16_check`]), or
//! explicit INT8/FP8 Q/DQ nodes calibrated exactly as `detrc quantize` does. Inputs and outputs
//! stay fp32.
//!
//! The precision is applied to the compiled fp32 model after it has been verified against the
//! original (when asked), so the equality proof and the precision check are separate steps.

use std::path::PathBuf;

use serde::Serialize;

use super::fp16_check::{self, CheckInputs, Fp16Options, Fp16Report};
use crate::ir::{Dim, Graph};
use crate::passes::precision::Precision;
use crate::quant::QuantizeOptions;
use crate::reference::Runtime;

/// Calibration of an int8/fp8 compile: the images and how ranges are chosen.
#[derive(Debug, Clone)]
pub struct CalibrationSet {
    pub files: Vec<PathBuf>,
    pub options: QuantizeOptions,
}

/// What `--precision` asks for.
#[derive(Debug, Clone)]
pub struct PrecisionOptions {
    pub precision: Precision,
    pub fp16: Fp16Options,
    /// Images: int8/fp8 calibration, and the fp16 check's inputs.
    pub calibration: Option<CalibrationSet>,
    /// Seeds of the fp16 check without images.
    pub seeds: Vec<u64>,
    /// The runtime the fp16 check and the calibration run in.
    pub runtime: Runtime,
}

/// What the precision step did.
#[derive(Debug, Clone, Serialize)]
pub struct PrecisionReport {
    pub precision: &'static str,
    /// One line per change (conversion, quantization).
    pub steps: Vec<String>,
    pub fp16: Option<Fp16Report>,
    /// The `trtexec` command that builds the written model (with its path filled in by the
    /// caller through [`trtexec_command`]).
    pub trtexec: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PrecisionError {
    #[error("the model computes in fp16 already; it cannot be made {0} (compile the fp32 export)")]
    AlreadyFp16(&'static str),
    #[error(
        "the model has {0} Q/DQ nodes already (it is quantized); compile it with --precision \
         {0}, or without --precision"
    )]
    AlreadyQuantized(&'static str),
    #[error("--precision {0} needs --calibration DIR (images) for a model without Q/DQ nodes")]
    NoCalibration(&'static str),
    #[error(transparent)]
    Quant(#[from] crate::quant::QuantError),
    #[error(transparent)]
    Model(#[from] crate::Error),
    /// The fp16 model lost accuracy past the thresholds, even after the guard.
    #[error("{}", .0.failure.clone().unwrap_or_default())]
    Fp16Check(Box<Fp16Report>),
}

/// Applies `opts` to the compiled fp32 graph `g`. A failed fp16 check is an error that carries
/// its report; nothing is to be written then.
pub fn apply(
    g: &mut Graph,
    opts: &PrecisionOptions,
    progress: &mut dyn FnMut(String),
) -> Result<PrecisionReport, PrecisionError> {
    let p = opts.precision;
    let fp16 = crate::passes::to_fp16::is_fp16(g);
    let quantized = crate::passes::quantize::qdq_format(g);
    let mut report = PrecisionReport {
        precision: p.as_str(),
        steps: Vec::new(),
        fp16: None,
        trtexec: String::new(),
    };
    match (p, quantized) {
        (_, Some(q)) if p.quant_format() != Some(q) => {
            return Err(PrecisionError::AlreadyQuantized(q.as_str()))
        }
        (_, Some(_)) => {
            report
                .steps
                .push("the model is quantized already: kept as it is".into());
            return Ok(report);
        }
        _ => {}
    }
    if fp16 && p != Precision::Fp16 {
        return Err(PrecisionError::AlreadyFp16(p.as_str()));
    }
    match p {
        Precision::Fp32 => {}
        Precision::Fp16 if fp16 => {
            report
                .steps
                .push("the model computes in fp16 already: kept as it is".into());
        }
        Precision::Fp16 => {
            let inputs = match &opts.calibration {
                Some(c) => CheckInputs::Images(c.files.clone(), c.options.resize),
                None => CheckInputs::Seeds(opts.seeds.clone()),
            };
            let (converted, r) =
                fp16_check::convert_checked(g, &opts.fp16, &inputs, &opts.runtime, progress)?;
            report.steps.push(format!("to-fp16: {}", r.conversion));
            if !r.kept.is_empty() {
                report.steps.push(format!(
                    "fp16 guard: {} op(s) kept in fp32 in {} round(s)",
                    r.kept.len(),
                    r.rounds
                ));
            }
            if !r.passed {
                return Err(PrecisionError::Fp16Check(Box::new(r)));
            }
            *g = converted;
            report.fp16 = Some(r);
        }
        Precision::Int8 | Precision::Fp8 => {
            let cal = opts
                .calibration
                .as_ref()
                .ok_or(PrecisionError::NoCalibration(p.as_str()))?;
            let options = QuantizeOptions {
                format: p.quant_format().expect("a quantized precision"),
                ..cal.options.clone()
            };
            let files = if options.weight_only {
                Vec::new()
            } else {
                cal.files.clone()
            };
            let (summary, _, _) = crate::quant::quantize_graph(g, &files, &options)?;
            report.steps.extend(
                summary
                    .lines()
                    .into_iter()
                    .map(|l| format!("quantize: {l}")),
            );
        }
    }
    Ok(report)
}

/// The `trtexec` command line that builds `onnx` (the written model, inputs as in `g`): strongly
/// typed, so TensorRT 10 and 11 take the precision from the graph; a dynamic batch gets a
/// profile of batch 1 to 8 (optimised for 4).
pub fn trtexec_command(g: &Graph, onnx: &std::path::Path) -> String {
    let mut cmd = format!(
        "trtexec --onnx={} --stronglyTyped --saveEngine={}",
        shell_word(&onnx.display().to_string()),
        shell_word(&onnx.with_extension("engine").display().to_string())
    );
    let mut shapes: [Vec<String>; 3] = Default::default();
    for n in g.graph_inputs() {
        let v = &g.node(n).outputs[0];
        let Some(dims) = v.ty.as_ref().and_then(|t| t.shape.clone()) else {
            continue;
        };
        if dims.iter().all(|d| matches!(d, Dim::Fixed(_))) {
            continue;
        }
        for (k, batch) in [1i64, 4, 8].into_iter().enumerate() {
            let text: Vec<String> = dims
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Dim::Fixed(v) => v.to_string(),
                    _ if i == 0 => batch.to_string(),
                    _ => "N".to_string(),
                })
                .collect();
            shapes[k].push(format!("{}:{}", v.name, text.join("x")));
        }
    }
    for (flag, list) in ["--minShapes", "--optShapes", "--maxShapes"]
        .iter()
        .zip(&shapes)
    {
        if !list.is_empty() {
            cmd.push_str(&format!(" {flag}={}", shell_word(&list.join(","))));
        }
    }
    cmd
}

/// `s` quoted for a POSIX shell when it needs to be.
fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
