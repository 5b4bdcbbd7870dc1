//! `detrc run` and `detrc bench`: object detection with a DETR model on images.
//!
//! images -> [`images`] (decode to RGB) -> [`preprocess`] (resize, normalize; or the GPU kernel
//! in [`cuda`]) -> a [`Backend`] (CPU: tract on ONNX; TensorRT: an engine) -> [`decode`]
//! (softmax, sigmoid top-k or the graph's own decode, threshold, boxes in original pixels;
//! instance masks when the model has a mask output, [`masks`]) -> `detections.json` and
//! annotated PNGs ([`draw`]).
//!
//! Batching: a model of batch B > 1 (static, or dynamic and fixed by `--batch`) is fed B images
//! at a time; the last batch is padded by repeating its last image, and the padding's results
//! are dropped.

pub mod backend;
pub mod bench;
pub mod cuda;
pub mod decode;
pub mod draw;
pub mod error;
pub mod images;
pub mod labels;
pub mod masks;
pub mod postprocess;
pub mod preprocess;
pub mod tensorrt;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use backend::{Backend, CpuBackend, Fix, ModelShape};
pub use decode::{Decode, DecodeOptions};
pub use error::{Result, RunError};
pub use labels::Labels;
pub use postprocess::{Detection, DetrOutputs};
pub use preprocess::{ImagePrep, Normalize, Resize};
pub use tensorrt::{TensorRtBackend, TensorRtOptions};

/// Name of the detections file inside the output folder.
pub const DETECTIONS_JSON: &str = "detections.json";

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Keep detections whose score is at least this.
    pub threshold: f32,
    pub labels: Labels,
    pub out_dir: PathBuf,
    pub decode: Decode,
    /// sigmoid: (query, class) pairs kept per image (default: the number of queries); graph:
    /// the first `k` the graph emits. Not for softmax.
    pub top_k: Option<usize>,
    pub normalize: Normalize,
    /// How images are brought to the model's size.
    pub resize: Resize,
}

/// Checks that `decode` and `top_k` fit the backend's model, before anything runs.
pub fn check_decode(backend: &dyn Backend, decode: Decode, top_k: Option<usize>) -> Result<()> {
    decode::layout(decode, &backend.outputs(), backend.shape().batch)?;
    match (decode, top_k) {
        (_, Some(0)) => Err(RunError::Options("--top-k must be at least 1".into())),
        (Decode::Softmax, Some(_)) => Err(RunError::Options(
            "--top-k applies to --decode sigmoid and graph; softmax keeps one class per query"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// What a finished run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub images: usize,
    pub detections: usize,
    pub batches: usize,
    /// Seconds in `Backend::infer_images` (pre-processing + inference), summed.
    pub infer_seconds: f64,
    /// Seconds for everything (decoding, drawing and writing too).
    pub total_seconds: f64,
    pub detections_path: PathBuf,
    /// The output the instance masks came from, when the model has one.
    pub masks: Option<String>,
    /// What the run could not do as asked but worked around (a mask output of an unknown
    /// layout: boxes only).
    pub warnings: Vec<String>,
}

/// Progress of a run: images finished so far, of the total.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// Runs `backend` on `files` (already expanded, see [`images::collect`]) and writes
/// `detections.json` plus one annotated `<stem>.png` per image into `opts.out_dir`.
///
/// Every input is checked (header read) and every output name decided before anything is
/// written; `detections.json` is written last, atomically, like each PNG.
pub fn run(
    backend: &mut dyn Backend,
    files: &[PathBuf],
    opts: &RunOptions,
    progress: Progress<'_>,
) -> Result<RunSummary> {
    let t0 = Instant::now();
    if files.is_empty() {
        return Err(RunError::NoInputs);
    }
    if !(0.0..=1.0).contains(&opts.threshold) {
        return Err(RunError::Options(format!(
            "threshold {} is not within 0..=1",
            opts.threshold
        )));
    }
    check_decode(backend, opts.decode, opts.top_k)?;
    let dopts = DecodeOptions {
        decode: opts.decode,
        top_k: opts.top_k,
        threshold: opts.threshold,
    };
    for f in files {
        images::probe(f)?;
    }
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| RunError::Write {
        path: opts.out_dir.clone(),
        cause: source,
    })?;
    let outputs = images::annotated_paths(files, &opts.out_dir)?;

    let shape = backend.shape();
    let mut labels: Option<Labels> = None;
    let mut all = Vec::new();
    let mut summary = RunSummary::default();
    let declared = backend.outputs();
    let lay = decode::layout(opts.decode, &declared, shape.batch)?;
    let mut mask_output = match masks::find(&declared, lay, shape.batch) {
        masks::MaskOutput::Found(i) => Some(i),
        masks::MaskOutput::Unknown(why) => {
            summary.warnings.push(why);
            None
        }
        masks::MaskOutput::None => None,
    };
    let mut done = 0;
    progress(0, files.len());
    for (chunk, outs) in files.chunks(shape.batch).zip(outputs.chunks(shape.batch)) {
        let decoded = chunk
            .iter()
            .map(|p| images::load(p))
            .collect::<Result<Vec<_>>>()?;
        let mut refs: Vec<&image::RgbImage> = decoded.iter().collect();
        while refs.len() < shape.batch {
            refs.push(refs[refs.len() - 1]);
        }
        let ti = Instant::now();
        let mut raw = backend.infer_images(&refs, opts.resize.with(opts.normalize))?;
        summary.infer_seconds += ti.elapsed().as_secs_f64();
        summary.batches += 1;
        let mask_logits = match mask_output {
            Some(i) => match masks::MaskLogits::take(&mut raw, i, shape.batch) {
                Ok(m) => Some(m),
                Err(why) => {
                    summary.warnings.push(why);
                    mask_output = None;
                    None
                }
            },
            None => None,
        };
        let out = decode::assemble(raw, opts.decode, shape.batch)?;
        let mask_logits = match mask_logits {
            Some(m) if m.queries != out.queries() => {
                summary.warnings.push(format!(
                    "the mask output has {} queries at run time and the detections {}; \
                     drawing boxes only",
                    m.queries,
                    out.queries()
                ));
                mask_output = None;
                None
            }
            m => m,
        };
        let labels =
            labels.get_or_insert_with(|| opts.labels.clone().resolve(out.num_classes(opts.decode)));
        for (b, ((path, img), out_path)) in chunk.iter().zip(&decoded).zip(outs).enumerate() {
            let name = images::display_name(path);
            let found = out.detections_with_queries(b, &name, img.width(), img.height(), &dopts);
            let mut canvas = None;
            let dets = match &mask_logits {
                Some(m) => {
                    let (dets, painted) = with_masks(found, m, b, img);
                    canvas = Some(painted);
                    dets
                }
                None => found.into_iter().map(|(_, d)| d).collect(),
            };
            let annotated = draw::annotate(canvas.as_ref().unwrap_or(img), &dets, labels);
            let png = draw::png_bytes(&annotated).map_err(|e| RunError::Image {
                path: out_path.clone(),
                reason: format!("cannot encode PNG: {e}"),
            })?;
            write_file(out_path, &png)?;
            summary.detections += dets.len();
            all.extend(dets);
            done += 1;
            progress(done, files.len());
        }
    }
    let json_path = opts.out_dir.join(DETECTIONS_JSON);
    let mut json = serde_json::to_vec_pretty(&all).map_err(|e| RunError::Write {
        path: json_path.clone(),
        cause: std::io::Error::other(e),
    })?;
    json.push(b'\n');
    write_file(&json_path, &json)?;
    summary.images = files.len();
    summary.total_seconds = t0.elapsed().as_secs_f64();
    summary.detections_path = json_path;
    summary.masks = mask_output.map(|i| declared[i].0.clone());
    Ok(summary)
}

/// Each detection's mask: its RLE into the detection, and painted (lowest score first, so the
/// strongest end up on top, as the boxes) onto a copy of the image. One full-size mask at a
/// time, so many detections on a large image do not hold many masks.
fn with_masks(
    found: Vec<(usize, Detection)>,
    m: &masks::MaskLogits,
    b: usize,
    img: &image::RgbImage,
) -> (Vec<Detection>, image::RgbImage) {
    let mut canvas = img.clone();
    let mut order: Vec<usize> = (0..found.len()).collect();
    order.sort_by(|&i, &j| found[i].1.score.total_cmp(&found[j].1.score));
    let mut rles = vec![None; found.len()];
    for i in order {
        let bits = m.bits(b, found[i].0, img.width(), img.height());
        draw::blend_mask(&mut canvas, &bits, draw::instance_colour(i));
        rles[i] = Some(masks::encode(&bits, img.width(), img.height()));
    }
    let dets = found
        .into_iter()
        .zip(rles)
        .map(|((_, mut d), rle)| {
            d.segmentation = rle;
            d
        })
        .collect();
    (dets, canvas)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::emit::atomic::write_bytes(path, bytes).map_err(|e| match e {
        crate::Error::Write { path, cause } => RunError::Write { path, cause },
        other => RunError::Model(other),
    })
}
