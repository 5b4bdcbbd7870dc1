//! Post-training quantization: calibration on images and accuracy measurement.
//!
//! Calibration runs the float model with the reference runtime (tract) on images pre-processed
//! exactly as `detrc run` does ([`crate::run::preprocess`]). The tensors the `quantize` pass
//! will quantize are exposed as extra graph outputs of a copy of the model; each image's values
//! go into one streaming [`Histogram`] per tensor and are dropped, so memory stays at one
//! image's activations whatever the number of images. The images are taken in file-name order,
//! so the same folder gives the same ranges.
//!
//! Evaluation runs the float and the quantized model on held-out images and reports each
//! output's SQNR and how many detections agree.

pub mod histogram;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

pub use histogram::{Histogram, Method};

use crate::ir::{DType, Graph, GraphOutput, NodeKind};
use crate::load::proto::ValueInfoProto;
use crate::reference::Reference;
use crate::run::backend::ModelShape;
use crate::run::postprocess::{best_class, DetrOutputs};
use crate::run::{images, preprocess, RunError};

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// Image folders and files (names the file).
    #[error(transparent)]
    Images(#[from] RunError),
    #[error(transparent)]
    Model(#[from] crate::Error),
    #[error("the model input is not an image tensor: {0}")]
    NotImage(String),
    #[error("cannot quantize: {0}")]
    Pass(String),
    #[error("invalid option: {0}")]
    Options(String),
}

pub type Result<T, E = QuantError> = std::result::Result<T, E>;

/// The model's single image input: its name and `[B, 3, H, W]`.
pub fn image_input(g: &Graph) -> Result<(String, ModelShape)> {
    let inputs = g.graph_inputs();
    let [one] = inputs.as_slice() else {
        let names: Vec<String> = inputs
            .iter()
            .map(|&n| g.node(n).outputs[0].name.clone())
            .collect();
        return Err(QuantError::NotImage(format!(
            "the model has {} inputs ({}); expected one [B, 3, H, W] image input",
            names.len(),
            names.join(", ")
        )));
    };
    let v = &g.node(*one).outputs[0];
    let ty = v
        .ty
        .as_ref()
        .ok_or_else(|| QuantError::NotImage(format!("input '{}' has no declared type", v.name)))?;
    if ty.dtype != DType::F32 {
        return Err(QuantError::NotImage(format!(
            "input '{}' is {}, expected f32",
            v.name, ty.dtype
        )));
    }
    let dims = ty.static_shape().ok_or_else(|| {
        QuantError::NotImage(format!(
            "input '{}' has shape {ty}; calibration needs a static [B, 3, H, W]",
            v.name
        ))
    })?;
    let shape = ModelShape::from_dims(&v.name, &dims).map_err(|e| match e {
        RunError::BadInput(m) => QuantError::NotImage(m),
        other => other.into(),
    })?;
    Ok((v.name.clone(), shape))
}

/// The JPEG/PNG files of `dir` in file-name order (at most `max`), every one checked by
/// reading its header, so a bad file is reported before any work is done.
pub fn image_files(dir: &Path, max: Option<usize>) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        std::fs::metadata(dir).map_err(|source| RunError::Read {
            path: dir.to_path_buf(),
            cause: source,
        })?;
        return Err(QuantError::Options(format!(
            "{} is not a folder of images",
            dir.display()
        )));
    }
    let mut files = images::collect(&[dir.to_path_buf()])?;
    if let Some(m) = max {
        if m == 0 {
            return Err(QuantError::Options(
                "--max-images must be at least 1".into(),
            ));
        }
        files.truncate(m);
    }
    for f in &files {
        images::probe(f)?;
    }
    Ok(files)
}

/// `files` pre-processed as `detrc run` does, in batches of `shape.batch` (the last one padded
/// with its last image), each with how many of its images are real.
pub fn image_batches(
    files: &[PathBuf],
    shape: ModelShape,
    resize: preprocess::Resize,
) -> Result<Vec<(ArrayD<f32>, usize)>> {
    let mut out = Vec::new();
    for_each_batch(files, shape, resize, |a, real| {
        out.push((a, real));
        Ok(())
    })?;
    Ok(out)
}

/// Decodes and pre-processes `files` in batches of `shape.batch` (the last batch padded by
/// repeating its last image, as `detrc run` does; resized by `resize`, ImageNet-normalized)
/// and calls `each` with every input tensor.
fn for_each_batch(
    files: &[PathBuf],
    shape: ModelShape,
    resize: preprocess::Resize,
    mut each: impl FnMut(ArrayD<f32>, usize) -> Result<()>,
) -> Result<()> {
    for chunk in files.chunks(shape.batch) {
        let decoded = chunk
            .iter()
            .map(|p| images::load(p))
            .collect::<Result<Vec<_>, RunError>>()?;
        let mut refs: Vec<&image::RgbImage> = decoded.iter().collect();
        while refs.len() < shape.batch {
            refs.push(refs[refs.len() - 1]);
        }
        let prep = resize.with(preprocess::Normalize::ImageNet);
        let data = preprocess::preprocess_batch_with(&refs, shape.height, shape.width, prep);
        let arr = ArrayD::from_shape_vec(IxDyn(&[shape.batch, 3, shape.height, shape.width]), data)
            .expect("preprocess_batch returns B*3*H*W values");
        each(arr, chunk.len())?;
    }
    Ok(())
}

/// Histograms of the observed tensors.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    pub histograms: BTreeMap<String, Histogram>,
    pub images: usize,
}

impl Calibration {
    /// The clip value of every tensor under `method`.
    pub fn ranges(&self, method: Method) -> BTreeMap<String, f32> {
        self.histograms
            .iter()
            .map(|(k, h)| (k.clone(), h.amax(method)))
            .collect()
    }
}

/// Runs `g` on `files` and collects a histogram of every tensor in `tensors`.
pub fn calibrate(g: &Graph, tensors: &[String], files: &[PathBuf]) -> Result<Calibration> {
    calibrate_with(g, tensors, files, preprocess::Resize::Torch)
}

/// [`calibrate`] with images resized as `resize` says (`--resize`, as `detrc run`).
pub fn calibrate_with(
    g: &Graph,
    tensors: &[String],
    files: &[PathBuf],
    resize: preprocess::Resize,
) -> Result<Calibration> {
    let (input_name, shape) = image_input(g)?;
    if files.is_empty() {
        return Err(QuantError::Options("no calibration images".into()));
    }
    // Expose every observed tensor as a graph output of a copy of the model.
    let mut obs = g.clone();
    let mut by_name: HashMap<String, crate::ir::Port> = HashMap::new();
    for n in obs.g.node_indices() {
        if matches!(obs.g[n].kind, NodeKind::Op(_)) {
            for (s, v) in obs.g[n].outputs.iter().enumerate() {
                by_name.insert(v.name.clone(), crate::ir::Port::new(n, s));
            }
        }
    }
    let existing: Vec<String> = obs.outputs.iter().map(|o| o.name.clone()).collect();
    for t in tensors {
        if *t == input_name || existing.contains(t) {
            continue;
        }
        let p = *by_name.get(t).ok_or_else(|| {
            QuantError::Pass(format!(
                "tensor '{t}' to observe is not produced by an operator"
            ))
        })?;
        let ty = obs.ty(p).map(|t| t.to_proto());
        obs.outputs.push(GraphOutput {
            name: t.clone(),
            src: p,
            info: ValueInfoProto {
                name: Some(t.clone()),
                r#type: ty,
                doc_string: None,
                metadata_props: vec![],
            },
        });
    }
    let reference = Reference::from_bytes(&crate::emit::encode(&obs.export())?)?;
    let mut cal = Calibration::default();
    for t in tensors {
        cal.histograms.insert(t.clone(), Histogram::default());
    }
    for_each_batch(files, shape, resize, |input, _| {
        if let Some(h) = cal.histograms.get_mut(&input_name) {
            h.add(input.as_slice().expect("standard layout"));
        }
        let outs = reference.run(std::slice::from_ref(&input))?;
        for (name, a) in outs {
            if let Some(h) = cal.histograms.get_mut(&name) {
                match a.as_slice() {
                    Some(s) => h.add(s),
                    None => h.add(&a.iter().copied().collect::<Vec<_>>()),
                }
            }
        }
        Ok(())
    })?;
    cal.images = files.len();
    Ok(cal)
}

/// Signal-to-quantization-noise ratio of one output, over all evaluation images.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutputSqnr {
    pub name: String,
    /// 10·log10(Σ float² / Σ (float − quantized)²); capped at 300 for identical outputs.
    pub sqnr_db: f64,
    pub max_abs_diff: f32,
}

/// How the detections of the quantized model agree with the float model's.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Agreement {
    /// Queries whose best class (no-object included) is the same.
    pub top1_agreement: f64,
    /// Detections at `threshold` in the float and in the quantized model, and how many are the
    /// same query with the same class and an IoU of at least 0.5.
    pub threshold: f32,
    pub float_detections: usize,
    pub quantized_detections: usize,
    pub matched: usize,
    /// Largest difference of a normalized box coordinate.
    pub max_box_diff: f32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evaluation {
    pub images: usize,
    pub outputs: Vec<OutputSqnr>,
    /// Absent for models without DETR-shaped outputs.
    pub detections: Option<Agreement>,
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let corners =
        |[cx, cy, w, h]: [f32; 4]| [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
    let (a, b) = (corners(a), corners(b));
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Runs the float and the quantized model (ONNX bytes) on `files` and compares them.
pub fn evaluate(
    float_model: &[u8],
    quant_model: &[u8],
    shape: ModelShape,
    files: &[PathBuf],
    threshold: f32,
) -> Result<Evaluation> {
    let torch = preprocess::Resize::Torch;
    evaluate_with(float_model, quant_model, shape, files, threshold, torch)
}

/// [`evaluate`] with images resized as `resize` says.
pub fn evaluate_with(
    float_model: &[u8],
    quant_model: &[u8],
    shape: ModelShape,
    files: &[PathBuf],
    threshold: f32,
    resize: preprocess::Resize,
) -> Result<Evaluation> {
    let f = Reference::from_bytes(float_model)?;
    let q = Reference::from_bytes(quant_model)?;
    let mut sig: Vec<f64> = Vec::new();
    let mut noise: Vec<f64> = Vec::new();
    let mut maxd: Vec<f32> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let (mut top1, mut queries) = (0usize, 0usize);
    let mut agree = Agreement {
        top1_agreement: 0.0,
        threshold,
        float_detections: 0,
        quantized_detections: 0,
        matched: 0,
        max_box_diff: 0.0,
    };
    let mut detr = true;
    for_each_batch(files, shape, resize, |input, real| {
        let fo = f.run(std::slice::from_ref(&input))?;
        let qo = q.run(std::slice::from_ref(&input))?;
        if names.is_empty() {
            names = fo.iter().map(|(n, _)| n.clone()).collect();
            sig = vec![0.0; names.len()];
            noise = vec![0.0; names.len()];
            maxd = vec![0.0; names.len()];
        }
        for (i, ((_, a), (_, b))) in fo.iter().zip(&qo).enumerate() {
            if a.shape() != b.shape() {
                return Err(QuantError::Pass(format!(
                    "output '{}' has shape {:?} in the float model and {:?} quantized",
                    names[i],
                    a.shape(),
                    b.shape()
                )));
            }
            // Only the real images of a padded batch count.
            let per = a.len() / shape.batch.max(1);
            for (x, y) in a.iter().zip(b.iter()).take(per * real) {
                let (x, y) = (*x as f64, *y as f64);
                sig[i] += x * x;
                noise[i] += (x - y) * (x - y);
                maxd[i] = maxd[i].max((x - y).abs() as f32);
            }
        }
        let shapes: Vec<(String, Vec<i64>)> = fo
            .iter()
            .map(|(n, a)| (n.clone(), a.shape().iter().map(|&d| d as i64).collect()))
            .collect();
        let Ok((li, bi)) = identify_outputs(&shapes, shape.batch) else {
            detr = false;
            return Ok(());
        };
        let outs = |o: &[(String, ArrayD<f32>)]| DetrOutputs {
            batch: shape.batch,
            queries: shapes[li].1[1] as usize,
            classes: shapes[li].1[2] as usize,
            logits: o[li].1.iter().copied().collect(),
            boxes: o[bi].1.iter().copied().collect(),
        };
        let (a, b) = (outs(&fo), outs(&qo));
        let c = a.classes;
        for bq in 0..real * a.queries {
            let la = &a.logits[bq * c..][..c];
            let lb = &b.logits[bq * c..][..c];
            let argmax = |l: &[f32]| {
                l.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |m, (i, &v)| if v > m.1 { (i, v) } else { m },
                    )
                    .0
            };
            queries += 1;
            top1 += (argmax(la) == argmax(lb)) as usize;
            let ba: [f32; 4] = a.boxes[bq * 4..][..4].try_into().expect("4");
            let bb: [f32; 4] = b.boxes[bq * 4..][..4].try_into().expect("4");
            for k in 0..4 {
                agree.max_box_diff = agree.max_box_diff.max((ba[k] - bb[k]).abs());
            }
            let (ca, sa) = best_class(la);
            let (cb, sb) = best_class(lb);
            let (ka, kb) = (sa >= threshold, sb >= threshold);
            agree.float_detections += ka as usize;
            agree.quantized_detections += kb as usize;
            if ka && kb && ca == cb && iou(ba, bb) >= 0.5 {
                agree.matched += 1;
            }
        }
        Ok(())
    })?;
    agree.top1_agreement = if queries > 0 {
        top1 as f64 / queries as f64
    } else {
        0.0
    };
    let outputs = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| OutputSqnr {
            name,
            sqnr_db: sqnr_db(sig[i], noise[i]),
            max_abs_diff: maxd[i],
        })
        .collect();
    Ok(Evaluation {
        images: files.len(),
        outputs,
        detections: detr.then_some(agree),
    })
}

/// 10·log10(signal / noise), capped at 300 dB (identical outputs).
pub fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise <= 0.0 {
        return 300.0;
    }
    if signal <= 0.0 {
        return -300.0;
    }
    (10.0 * (signal / noise).log10()).min(300.0)
}

pub use crate::passes::quantize::{Format, Quantize, Summary};

/// The whole of `detrc quantize` on a loaded graph: plan, calibrate, insert Q/DQ.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    pub method: Method,
    pub format: Format,
    pub residual: bool,
    pub weight_only: bool,
    /// How calibration images are resized (as `detrc run --resize`).
    pub resize: preprocess::Resize,
}

pub fn quantize_graph(
    g: &mut Graph,
    files: &[PathBuf],
    opts: &QuantizeOptions,
) -> Result<(Summary, BTreeMap<String, f32>, Calibration)> {
    if crate::passes::quantize::has_qdq(g) {
        return Err(QuantError::Pass(
            "the model has QuantizeLinear/DequantizeLinear nodes already".into(),
        ));
    }
    image_input(g)?;
    // Plans read element types and ranks; a model from another tool may not declare them.
    use crate::pass::Pass;
    crate::passes::infer_shapes::InferShapes
        .run(g, &crate::pass::Context::default())
        .map_err(QuantError::Pass)?;
    let plan = crate::passes::quantize::plan(g, opts.residual && !opts.weight_only)
        .map_err(QuantError::Pass)?;
    let cal = if opts.weight_only {
        Calibration::default()
    } else {
        calibrate_with(g, &plan.tensors(), files, opts.resize)?
    };
    let ranges = cal.ranges(opts.method);
    let pass = Quantize {
        ranges: ranges.clone(),
        format: opts.format,
        residual: opts.residual,
        weight_only: opts.weight_only,
        method: if opts.weight_only {
            "weights-only".into()
        } else {
            opts.method.name()
        },
        images: cal.images,
    };
    let summary = pass.apply(g).map_err(QuantError::Pass)?;
    g.fix_output_names();
    g.validate()
        .map_err(|e| QuantError::Pass(format!("left an invalid graph: {e}")))?;
    Ok((summary, ranges, cal))
}

/// ONNX bytes of a graph.
pub fn to_bytes(g: &Graph) -> Result<Vec<u8>> {
    Ok(crate::emit::encode(&g.export())?)
}

/// Which outputs are the class logits and the boxes: `[B, Q, C]` and `[B, Q, 4]` (by name when
/// the export uses the usual ones, else by shape). `Err` when the model has no such pair.
fn identify_outputs(
    outputs: &[(String, Vec<i64>)],
    batch: usize,
) -> std::result::Result<(usize, usize), ()> {
    let by_name = |names: &[&str]| {
        outputs
            .iter()
            .position(|(n, _)| names.contains(&n.as_str()))
    };
    if let (Some(l), Some(b)) = (
        by_name(&["pred_logits", "logits"]),
        by_name(&["pred_boxes", "boxes"]),
    ) {
        return Ok((l, b));
    }
    let rank3 = |i: usize| outputs[i].1.len() == 3 && outputs[i].1[0] == batch as i64;
    let bi = (0..outputs.len())
        .rev()
        .find(|&i| rank3(i) && outputs[i].1[2] == 4)
        .ok_or(())?;
    let li = (0..outputs.len())
        .find(|&i| i != bi && rank3(i) && outputs[i].1[1] == outputs[bi].1[1])
        .ok_or(())?;
    Ok((li, bi))
}
