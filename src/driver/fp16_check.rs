//! The fp16 check and guard of `compile --precision fp16`.
//!
//! **Check.** The fp16 graph runs on the CPU reference with fp16 storage emulated (every
//! tensor it keeps in half rounded to half where it is made, see
//! [`crate::passes::precision::fp16_storage`]) and is compared with the fp32 graph on the same
//! inputs: each output's SQNR, the sorted scores (a measure that TopK near-ties in random-weight
//! models do not disturb), the detections as sets (decoded as `detrc run` decodes them), and the
//! first tensors that overflowed.
//!
//! **Guard.** Operators whose fp16 result overflows, or comes within `headroom` of 65504, on
//! those inputs are kept in fp32 and the model is converted again, until none does. An
//! overflow found downstream of another is not a cause of its own: only tensors whose fp16
//! inputs stayed in range are kept. Where the culprit is a Cast that `to-fp16` inserted (a kept
//! fp32 op's large result entering fp16 again), its readers are kept instead.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use ndarray::ArrayD;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::passes::precision::fp16_storage::{self, Probe};
use crate::passes::to_fp16::ToFp16;
use crate::reference::{Model, Purpose, Reference, Runtime};
use crate::run::decode::{self, BatchOutputs, Decode, DecodeOptions};
use crate::run::postprocess::Detection;

/// Largest finite fp16 value.
pub const F16_MAX: f32 = 65504.0;

/// How `--precision fp16` converts and checks.
#[derive(Debug, Clone)]
pub struct Fp16Options {
    /// Op types, node names or tensor names kept in fp32 on top of `to-fp16`'s defaults.
    pub keep: Vec<String>,
    /// Keep overflowing operators in fp32 automatically.
    pub guard: bool,
    /// A tensor larger than `65504 / headroom` counts as overflowing: the check's inputs are
    /// not every input the model will see.
    pub headroom: f32,
    /// Conversions at most (each runs the model once per input set). An overflow hides the
    /// ones after it, so a decoder of N overflowing layers needs about 2N + 1.
    pub max_rounds: usize,
    /// Least SQNR of the sorted scores (or, for a model without detection outputs, of every
    /// output), in dB.
    pub min_sqnr_db: f64,
    /// Least share of the fp32 model's detections the fp16 model must keep (checked from five
    /// detections on).
    pub min_recall: f64,
    /// Score threshold of a detection.
    pub threshold: f32,
}

impl Default for Fp16Options {
    fn default() -> Self {
        Fp16Options {
            keep: Vec::new(),
            guard: true,
            headroom: 4.0,
            max_rounds: 32,
            min_sqnr_db: 30.0,
            min_recall: 0.5,
            threshold: 0.5,
        }
    }
}

/// The inputs the check runs on.
#[derive(Debug, Clone)]
pub enum CheckInputs {
    /// Seeded standard-normal inputs, one set per seed.
    Seeds(Vec<u64>),
    /// Pre-processed as `detrc run` does (resized as given), in batches of the model's batch.
    Images(Vec<PathBuf>, crate::run::preprocess::Resize),
}

/// One output of the fp16 model against the fp32 model's.
#[derive(Debug, Clone, Serialize)]
pub struct OutputCheck {
    pub name: String,
    pub sqnr_db: f64,
    pub max_abs_diff: f32,
    /// Values that are inf or NaN in the fp16 model's output (and finite in the fp32 one's).
    pub non_finite: usize,
}

/// The detections of both models, matched as sets.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionCheck {
    pub decode: String,
    pub threshold: f32,
    /// SQNR of each image's scores sorted in descending order (the top `queries`).
    pub sorted_scores_sqnr_db: f64,
    pub fp32_detections: usize,
    pub fp16_detections: usize,
    /// fp32 detections with an fp16 detection of the same class at IoU >= 0.5 (fp16 scores
    /// down to `threshold - 0.05` count, so a score that moves across the threshold is no loss).
    pub matched: usize,
    pub recall: f64,
}

/// A tensor whose fp16 value overflowed or came near the end of the range.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Overflow {
    pub tensor: String,
    pub node: String,
    pub op_type: String,
    /// Largest |value| before rounding to fp16 (inf: the fp32 arithmetic overflowed too).
    #[serde(serialize_with = "finite_or_string")]
    pub max_abs: f32,
}

/// An operator the guard kept in fp32, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    /// The name `to-fp16` keeps it by (its output tensor).
    pub tensor: String,
    pub node: String,
    pub op_type: String,
    pub round: usize,
    pub reason: String,
}

/// What the check found on the model that is written.
#[derive(Debug, Clone, Serialize)]
pub struct Fp16Report {
    /// What the check ran on, e.g. "seeds 0..2" or "8 calibration images".
    pub inputs: String,
    pub rounds: usize,
    /// The overflows of the plain conversion (the first round), causes only.
    pub first_overflows: Vec<Overflow>,
    /// What the guard kept in fp32.
    pub kept: Vec<Kept>,
    /// Overflows left in the written model (none when the guard succeeded).
    pub overflows: Vec<Overflow>,
    pub outputs: Vec<OutputCheck>,
    pub detections: Option<DetectionCheck>,
    /// `to-fp16`'s summary of the written model.
    pub conversion: String,
    pub passed: bool,
    /// Why the check failed.
    pub failure: Option<String>,
}

fn finite_or_string<S: serde::Serializer>(v: &f32, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f32(*v)
    } else {
        s.serialize_str(&v.to_string())
    }
}

type Outputs = Vec<(String, ArrayD<f32>)>;

/// Converts `fp32` to fp16 (with `to-fp16`), checks it under fp16 storage and, with the guard
/// on, keeps overflowing operators in fp32 until none overflows. Returns the fp16 graph that
/// the report describes; the caller decides what a failed check means.
pub fn convert_checked(
    fp32: &Graph,
    opts: &Fp16Options,
    inputs: &CheckInputs,
    runtime: &Runtime,
    progress: &mut dyn FnMut(String),
) -> Result<(Graph, Fp16Report)> {
    let fp32_model = fp32.export();
    let fp32_bytes = crate::emit::encode(&fp32_model)?;
    // A dynamic batch runs at batch 1, as `--verify` runs it; the emulation has the same inputs.
    let specs = || -> Result<_> {
        let shapes = crate::reference::batch_one_shapes(&fp32_model)?;
        Ok((
            crate::reference::input_specs_with(&fp32_model, &shapes)?,
            crate::reference::output_names(&fp32_model),
        ))
    };
    let reference = Reference::load(
        Model::Bytes(&fp32_bytes),
        runtime,
        Purpose::Verify,
        Some(specs()?),
    )?;
    let (sets, described) = input_sets(&reference, fp32, inputs)?;
    let expected: Vec<Outputs> = sets
        .iter()
        .map(|s| reference.run(s))
        .collect::<Result<_>>()?;
    drop(reference);
    let decode = decode::detect(&fp32_model).ok();
    let fp32_names: HashSet<String> = fp32
        .g
        .node_indices()
        .flat_map(|n| fp32.g[n].outputs.iter().map(|v| v.name.clone()))
        .collect();

    let limit = F16_MAX / opts.headroom.max(1.0);
    let mut kept: Vec<Kept> = Vec::new();
    let mut first_overflows = None;
    let mut round = 0;
    loop {
        round += 1;
        let mut g = fp32.clone();
        let mut pass = ToFp16::default();
        pass.keep.extend(opts.keep.iter().cloned());
        pass.keep.extend(kept.iter().map(|k| k.tensor.clone()));
        let summary = pass.convert(&mut g).map_err(|e| Error::Pass {
            pass: "to-fp16".into(),
            reason: e,
        })?;
        g.fix_output_names();
        g.validate().map_err(|e| Error::Pass {
            pass: "to-fp16".into(),
            reason: e.to_string(),
        })?;
        let emulation = fp16_storage::emulate(&g).map_err(|e| Error::Pass {
            pass: "to-fp16".into(),
            reason: format!("cannot emulate its fp16 storage: {e}"),
        })?;
        let emulation_model = emulation.graph.export();
        let bytes = crate::emit::encode(&emulation_model)?;
        let mut emu_specs = specs()?;
        emu_specs.1 = crate::reference::output_names(&emulation_model);
        let emulated = Reference::load(
            Model::Bytes(&bytes),
            runtime,
            Purpose::Verify,
            Some(emu_specs),
        )?;
        let got: Vec<Outputs> = sets
            .iter()
            .map(|s| emulated.run(s))
            .collect::<Result<_>>()?;
        drop(emulated);
        let peaks = probe_peaks(&emulation.probes, &got);
        let causes = causes(&emulation.probes, &peaks, limit);
        if first_overflows.is_none() {
            first_overflows = Some(causes.clone());
        }
        let keep_now = if opts.guard && round < opts.max_rounds.max(1) {
            to_keep(&g, &causes, &fp32_names, &kept, limit, round)
        } else {
            Vec::new()
        };
        if !causes.is_empty() {
            let what = causes
                .iter()
                .take(3)
                .map(|o| format!("{} {:.3e}", o.tensor, o.max_abs))
                .collect::<Vec<_>>()
                .join(", ");
            progress(if opts.guard {
                format!(
                    "fp16 round {round}: {} tensor(s) overflow or near 65504 ({what}); keeping \
                     {} op(s) in fp32",
                    causes.len(),
                    keep_now.len()
                )
            } else {
                format!(
                    "fp16: {} tensor(s) overflow or near 65504 ({what})",
                    causes.len()
                )
            });
        }
        if keep_now.is_empty() {
            let outputs = compare_outputs(&expected, &got);
            let detections = decode.and_then(|d| detections(d, &expected, &got, opts.threshold));
            let failure = failure(opts, &outputs, detections.as_ref(), &causes);
            let report = Fp16Report {
                inputs: described,
                rounds: round,
                first_overflows: first_overflows.unwrap_or_default(),
                kept,
                overflows: causes,
                outputs,
                detections,
                conversion: format!(
                    "{} ops fp16, {} kept fp32, {} casts",
                    summary.ops_fp16,
                    summary.ops_fp32.values().sum::<usize>(),
                    summary.casts_inserted
                ),
                passed: failure.is_none(),
                failure,
            };
            return Ok((g, report));
        }
        kept.extend(keep_now);
    }
}

/// The input sets and how to say what they are.
fn input_sets(
    reference: &Reference,
    g: &Graph,
    inputs: &CheckInputs,
) -> Result<(Vec<Vec<ArrayD<f32>>>, String)> {
    match inputs {
        CheckInputs::Seeds(seeds) => {
            let sets = seeds.iter().map(|&s| reference.random_inputs(s)).collect();
            let first = seeds.first().copied().unwrap_or(0);
            let desc = if seeds.len() == 1 {
                format!("seeded inputs (seed {first})")
            } else {
                format!(
                    "seeded inputs (seeds {first}..{})",
                    first + seeds.len() as u64
                )
            };
            Ok((sets, desc))
        }
        CheckInputs::Images(files, resize) => {
            let (_, shape) =
                crate::quant::image_input(g).map_err(|e| Error::Runtime(e.to_string()))?;
            let batches = crate::quant::image_batches(files, shape, *resize)
                .map_err(|e| Error::Runtime(e.to_string()))?;
            let sets = batches.into_iter().map(|(a, _)| vec![a]).collect();
            Ok((sets, format!("{} calibration images", files.len())))
        }
    }
}

/// Largest |value| each probe saw over all runs (inf or NaN wins).
fn probe_peaks(probes: &[Probe], got: &[Outputs]) -> HashMap<String, f32> {
    let mut peaks: HashMap<String, f32> = HashMap::new();
    let wanted: HashSet<&str> = probes.iter().map(|p| p.output.as_str()).collect();
    for run in got {
        for (name, a) in run {
            if !wanted.contains(name.as_str()) {
                continue;
            }
            let v = a.iter().copied().next().unwrap_or(0.0);
            let v = if v.is_nan() { f32::INFINITY } else { v };
            let e = peaks.entry(name.clone()).or_insert(0.0);
            *e = e.max(v);
        }
    }
    peaks
}

/// The fp16 tensors past `limit` whose inputs all stayed within it: the causes, not the
/// tensors an overflow reached from upstream. An fp32 tensor counts as reached only when it is
/// inf or NaN (it may exceed fp16's range: that is why it is kept fp32).
fn causes(probes: &[Probe], peaks: &HashMap<String, f32>, limit: f32) -> Vec<Overflow> {
    let peak = |p: &Probe| peaks.get(&p.output).copied().unwrap_or(0.0);
    let over_p = |p: &Probe| {
        if p.fp16 {
            peak(p) > limit
        } else {
            !peak(p).is_finite()
        }
    };
    let over: HashSet<&str> = probes
        .iter()
        .filter(|p| over_p(p))
        .map(|p| p.tensor.as_str())
        .collect();
    probes
        .iter()
        .filter(|p| p.fp16 && over_p(p) && !p.inputs.iter().any(|i| over.contains(i.as_str())))
        .map(|p| Overflow {
            tensor: p.tensor.clone(),
            node: p.producer.clone(),
            op_type: p.op_type.clone(),
            max_abs: peak(p),
        })
        .collect()
}

/// What to keep in fp32 for `causes`: the operator that made the tensor, or, for a Cast that
/// `to-fp16` inserted (its output is no tensor of the fp32 graph), the operators reading it.
fn to_keep(
    g: &Graph,
    causes: &[Overflow],
    fp32_names: &HashSet<String>,
    kept: &[Kept],
    limit: f32,
    round: usize,
) -> Vec<Kept> {
    let already: HashSet<&str> = kept.iter().map(|k| k.tensor.as_str()).collect();
    let by_name: HashMap<&str, crate::ir::Port> =
        g.g.node_indices()
            .flat_map(|n| {
                g.g[n]
                    .outputs
                    .iter()
                    .enumerate()
                    .map(move |(s, v)| (v.name.as_str(), crate::ir::Port::new(n, s)))
            })
            .collect();
    let mut out: Vec<Kept> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for c in causes {
        let why = if c.max_abs.is_finite() {
            format!("reached {:.0}, within {:.0} of 65504", c.max_abs, limit)
        } else {
            "overflowed fp16".to_string()
        };
        let Some(&p) = by_name.get(c.tensor.as_str()) else {
            continue;
        };
        let mut push = |n: crate::ir::NodeId, reason: String| {
            let node = g.node(n);
            let Some(op) = node.op() else { return };
            let tensor = node.outputs[0].name.clone();
            if already.contains(tensor.as_str()) || !seen.insert(tensor.clone()) {
                return;
            }
            out.push(Kept {
                tensor,
                node: node.display_name(),
                op_type: op.op_type.clone(),
                round,
                reason,
            });
        };
        if fp32_names.contains(&c.tensor) {
            push(p.node, format!("its output {why}"));
        } else {
            for (reader, _) in g.consumers(p) {
                push(
                    reader,
                    format!(
                        "reads {}, kept fp32, which {why} when cast to fp16",
                        c.tensor
                    ),
                );
            }
        }
    }
    out
}

fn compare_outputs(expected: &[Outputs], got: &[Outputs]) -> Vec<OutputCheck> {
    let mut out: Vec<OutputCheck> = Vec::new();
    let mut sig: Vec<f64> = Vec::new();
    let mut noise: Vec<f64> = Vec::new();
    for (e_run, g_run) in expected.iter().zip(got) {
        for (i, (name, a)) in e_run.iter().enumerate() {
            let Some((_, b)) = g_run.iter().find(|(n, _)| n == name) else {
                continue;
            };
            if out.len() <= i {
                out.push(OutputCheck {
                    name: name.clone(),
                    sqnr_db: 0.0,
                    max_abs_diff: 0.0,
                    non_finite: 0,
                });
                sig.push(0.0);
                noise.push(0.0);
            }
            for (&x, &y) in a.iter().zip(b.iter()) {
                if !x.is_finite() {
                    continue;
                }
                if !y.is_finite() {
                    out[i].non_finite += 1;
                    continue;
                }
                let d = (x - y) as f64;
                sig[i] += (x as f64) * (x as f64);
                noise[i] += d * d;
                out[i].max_abs_diff = out[i].max_abs_diff.max(d.abs() as f32);
            }
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        o.sqnr_db = crate::quant::sqnr_db(sig[i], noise[i]);
    }
    out
}

/// Scores and detections of both models, decoded as `detrc run` decodes them.
fn detections(
    decode: Decode,
    expected: &[Outputs],
    got: &[Outputs],
    threshold: f32,
) -> Option<DetectionCheck> {
    let (mut sig, mut noise) = (0f64, 0f64);
    let mut check = DetectionCheck {
        decode: decode.name().to_string(),
        threshold,
        sorted_scores_sqnr_db: 0.0,
        fp32_detections: 0,
        fp16_detections: 0,
        matched: 0,
        recall: 1.0,
    };
    for (e, g) in expected.iter().zip(got) {
        let a = assemble(decode, e)?;
        let b = assemble(decode, g)?;
        let batch = match &a {
            BatchOutputs::Heads(o) => o.batch,
            BatchOutputs::Graph(o) => o.batch,
        };
        for img in 0..batch {
            let (sa, sb) = (
                sorted_scores(decode, &a, img),
                sorted_scores(decode, &b, img),
            );
            for (x, y) in sa.iter().zip(&sb) {
                let y = if y.is_finite() { *y } else { 0.0 };
                sig += (*x as f64) * (*x as f64);
                noise += ((x - y) as f64).powi(2);
            }
            let opts = |t: f32| DecodeOptions {
                decode,
                top_k: None,
                threshold: t,
            };
            let da = a.detections(img, "", 1, 1, &opts(threshold));
            let db = b.detections(img, "", 1, 1, &opts((threshold - 0.05).max(0.0)));
            check.fp32_detections += da.len();
            check.fp16_detections += db.iter().filter(|d| d.score >= threshold).count();
            check.matched += matched(&da, &db);
        }
    }
    check.sorted_scores_sqnr_db = crate::quant::sqnr_db(sig, noise);
    if check.fp32_detections > 0 {
        check.recall = check.matched as f64 / check.fp32_detections as f64;
    }
    Some(check)
}

fn assemble(decode: Decode, outputs: &Outputs) -> Option<BatchOutputs> {
    let raw: decode::RawOutputs = outputs
        .iter()
        .map(|(n, a)| {
            (
                n.clone(),
                a.shape().iter().map(|&d| d as i64).collect(),
                a.iter().copied().collect(),
            )
        })
        .collect();
    let batch = raw.first().and_then(|(_, s, _)| s.first()).copied()? as usize;
    decode::assemble(raw, decode, batch).ok()
}

/// One image's scores, best first: each query's best class after softmax, every
/// (query, class) sigmoid, or the graph's own scores; as many as there are queries.
fn sorted_scores(decode: Decode, o: &BatchOutputs, img: usize) -> Vec<f32> {
    let mut s: Vec<f32> = match o {
        BatchOutputs::Heads(h) => {
            let per = h.queries * h.classes;
            let l = &h.logits[img * per..][..per];
            match decode {
                Decode::Softmax => l
                    .chunks(h.classes)
                    .map(|q| crate::run::postprocess::best_class(q).1)
                    .collect(),
                _ => l.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
            }
        }
        BatchOutputs::Graph(g) => g.scores[img * g.k..][..g.k].to_vec(),
    };
    let n = match o {
        BatchOutputs::Heads(h) => h.queries,
        BatchOutputs::Graph(g) => g.k,
    };
    // NaN last: a lost score, not the best one.
    s.sort_by(|a, b| {
        b.partial_cmp(a)
            .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
    });
    s.truncate(n);
    s
}

/// fp32 detections with a same-class fp16 detection at IoU >= 0.5, each fp16 one used once.
fn matched(a: &[Detection], b: &[Detection]) -> usize {
    let mut used = vec![false; b.len()];
    let mut n = 0;
    for d in a {
        let best = b
            .iter()
            .enumerate()
            .filter(|(j, e)| !used[*j] && e.category_id == d.category_id)
            .map(|(j, e)| (j, overlap(d.bbox, e.bbox)))
            .filter(|(_, v)| *v >= 0.5)
            .max_by(|x, y| x.1.total_cmp(&y.1));
        if let Some((j, _)) = best {
            used[j] = true;
            n += 1;
        }
    }
    n
}

/// IoU of two `[x, y, w, h]` boxes; 1 for boxes equal within 1% of their size, which a
/// degenerate box (a self-decoding graph fed a random target size) needs.
fn overlap(a: [f32; 4], b: [f32; 4]) -> f32 {
    let scale = a.iter().chain(&b).fold(1e-6f32, |m, v| m.max(v.abs()));
    if a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 0.01 * scale) {
        return 1.0;
    }
    iou(a, b)
}

/// IoU of two `[x, y, w, h]` boxes.
fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let ih = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 && union.is_finite() {
        inter / union
    } else {
        0.0
    }
}

fn failure(
    opts: &Fp16Options,
    outputs: &[OutputCheck],
    det: Option<&DetectionCheck>,
    overflows: &[Overflow],
) -> Option<String> {
    let bad: Vec<String> = outputs
        .iter()
        .filter(|o| o.non_finite > 0)
        .map(|o| format!("{} ({} inf/NaN)", o.name, o.non_finite))
        .collect();
    let first = || {
        overflows
            .iter()
            .take(3)
            .map(|o| format!("{} (made by {})", o.tensor, o.node))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !bad.is_empty() {
        return Some(format!(
            "fp16 outputs are not finite: {}{}",
            bad.join(", "),
            if overflows.is_empty() {
                String::new()
            } else {
                format!("; first overflow: {}", first())
            }
        ));
    }
    match det {
        Some(d) if d.sorted_scores_sqnr_db < opts.min_sqnr_db => Some(format!(
            "fp16 scores are {:.1} dB from fp32 (at least {:.0} dB needed)",
            d.sorted_scores_sqnr_db, opts.min_sqnr_db
        )),
        // A few detections say little: one TopK near-tie swap in a random-weight model is
        // already a fifth of five.
        Some(d) if d.fp32_detections >= 5 && d.recall < opts.min_recall => Some(format!(
            "fp16 keeps {} of {} fp32 detections at score {} ({:.0}%; {:.0}% needed)",
            d.matched,
            d.fp32_detections,
            d.threshold,
            100.0 * d.recall,
            100.0 * opts.min_recall
        )),
        Some(_) => None,
        None => outputs
            .iter()
            .find(|o| o.sqnr_db < opts.min_sqnr_db)
            .map(|o| {
                format!(
                    "fp16 output {} is {:.1} dB from fp32 (at least {:.0} dB needed)",
                    o.name, o.sqnr_db, opts.min_sqnr_db
                )
            }),
    }
}
