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

mod compare;
mod sensitivity;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use ndarray::ArrayD;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::passes::precision::fp16_storage::{self, Probe};
use crate::passes::to_fp16::ToFp16;
use crate::reference::{Model, Purpose, Reference, Runtime};
use crate::run::decode;

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

pub(super) type Outputs = Vec<(String, ArrayD<f32>)>;

/// Converts `fp32` to fp16 (with `to-fp16`), checks it under fp16 storage and, with the guard
/// on, keeps overflowing operators in fp32 until none overflows; where the check still fails
/// without an overflow, keeps the operators whose rounding costs the scores most, measured one
/// at a time ([`sensitivity`]). Returns the fp16 graph that the report describes; the caller
/// decides what a failed check means.
pub fn convert_checked(
    fp32: &Graph,
    opts: &Fp16Options,
    inputs: &CheckInputs,
    runtime: &Runtime,
    progress: &mut dyn FnMut(String),
) -> Result<(Graph, Fp16Report)> {
    let (checker, described) = Checker::new(fp32, opts, inputs, runtime)?;
    let limit = F16_MAX / opts.headroom.max(1.0);
    let mut kept: Vec<Kept> = Vec::new();
    let mut first_overflows = None;
    let mut round = 0;
    loop {
        round += 1;
        let keep = checker.keep_list(&kept);
        let trial = checker.trial(&keep)?;
        let peaks = probe_peaks(&trial.probes, &trial.got);
        let causes = causes(&trial.probes, &peaks, limit);
        if first_overflows.is_none() {
            first_overflows = Some(causes.clone());
        }
        let more_rounds = opts.guard && round < opts.max_rounds.max(1);
        let keep_now = if more_rounds {
            to_keep(
                &trial.graph,
                &causes,
                &checker.fp32_names,
                &kept,
                limit,
                round,
            )
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
        if !keep_now.is_empty() {
            kept.extend(keep_now);
            continue;
        }
        let outputs = compare::compare_outputs(&checker.expected, &trial.got);
        let detections = checker
            .decode
            .and_then(|d| compare::detections(d, &checker.expected, &trial.got, opts.threshold));
        let failure = compare::failure(opts, &outputs, detections.as_ref(), &causes);
        // Nothing overflows, yet fp16 costs too much: measure which operator's rounding does.
        if failure.is_some() && causes.is_empty() && more_rounds {
            let found = sensitivity::most_costly(&checker, &keep, &trial, round, progress)?;
            if let Some(k) = found {
                kept.push(k);
                continue;
            }
        }
        let summary = &trial.summary;
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
        return Ok((trial.graph, report));
    }
}

/// The fp32 model's run, kept for every conversion tried against it.
struct Checker<'a> {
    fp32: &'a Graph,
    opts: &'a Fp16Options,
    runtime: &'a Runtime,
    /// The runtime's input specs (a dynamic batch at 1) and the fp32 model's output names.
    specs: (Vec<crate::reference::InputSpec>, Vec<String>),
    sets: Vec<Vec<ArrayD<f32>>>,
    expected: Vec<Outputs>,
    decode: Option<decode::Decode>,
    fp32_names: HashSet<String>,
}

/// One conversion, emulated and run on every input set.
struct Trial {
    graph: Graph,
    summary: crate::passes::to_fp16::Summary,
    probes: Vec<Probe>,
    got: Vec<Outputs>,
}

impl<'a> Checker<'a> {
    fn new(
        fp32: &'a Graph,
        opts: &'a Fp16Options,
        inputs: &CheckInputs,
        runtime: &'a Runtime,
    ) -> Result<(Checker<'a>, String)> {
        let model = fp32.export();
        let bytes = crate::emit::encode(&model)?;
        // A dynamic batch runs at batch 1, as `--verify` runs it.
        let shapes = crate::reference::batch_one_shapes(&model)?;
        let specs = (
            crate::reference::input_specs_with(&model, &shapes)?,
            crate::reference::output_names(&model),
        );
        let reference = Reference::load(
            Model::Bytes(&bytes),
            runtime,
            Purpose::Verify,
            Some(specs.clone()),
        )?;
        let (sets, described) = input_sets(&reference, fp32, inputs)?;
        let expected: Vec<Outputs> = sets
            .iter()
            .map(|s| reference.run(s))
            .collect::<Result<_>>()?;
        let fp32_names = fp32
            .g
            .node_indices()
            .flat_map(|n| fp32.g[n].outputs.iter().map(|v| v.name.clone()))
            .collect();
        let checker = Checker {
            fp32,
            opts,
            runtime,
            specs,
            sets,
            expected,
            decode: decode::detect(&model).ok(),
            fp32_names,
        };
        Ok((checker, described))
    }

    /// What `to-fp16` keeps: the caller's list and the guard's.
    fn keep_list(&self, kept: &[Kept]) -> Vec<String> {
        let mut keep = self.opts.keep.clone();
        keep.extend(kept.iter().map(|k| k.tensor.clone()));
        keep
    }

    /// Converts with `keep` kept in fp32 (on top of `to-fp16`'s defaults), emulates its fp16
    /// storage and runs it on every input set.
    fn trial(&self, keep: &[String]) -> Result<Trial> {
        let pass_err = |reason: String| Error::Pass {
            pass: "to-fp16".into(),
            reason,
        };
        let mut graph = self.fp32.clone();
        let mut pass = ToFp16::default();
        pass.keep.extend(keep.iter().cloned());
        let summary = pass.convert(&mut graph).map_err(pass_err)?;
        graph.fix_output_names();
        graph.validate().map_err(|e| pass_err(e.to_string()))?;
        let emulation = fp16_storage::emulate(&graph)
            .map_err(|e| pass_err(format!("cannot emulate its fp16 storage: {e}")))?;
        let model = emulation.graph.export();
        let bytes = crate::emit::encode(&model)?;
        let specs = (self.specs.0.clone(), crate::reference::output_names(&model));
        let emulated = Reference::load(
            Model::Bytes(&bytes),
            self.runtime,
            Purpose::Verify,
            Some(specs),
        )?;
        let got = self
            .sets
            .iter()
            .map(|s| emulated.run(s))
            .collect::<Result<_>>()?;
        Ok(Trial {
            graph,
            summary,
            probes: emulation.probes,
            got,
        })
    }

    /// How close a trial comes to fp32, in dB: the sorted scores' SQNR for a detection model,
    /// else the worst output's; minus infinity for an output that is not finite.
    fn score(&self, got: &[Outputs]) -> f64 {
        let outputs = compare::compare_outputs(&self.expected, got);
        if outputs.iter().any(|o| o.non_finite > 0) {
            return f64::NEG_INFINITY;
        }
        let det = self
            .decode
            .and_then(|d| compare::detections(d, &self.expected, got, self.opts.threshold));
        match det {
            Some(d) => d.sorted_scores_sqnr_db,
            None => outputs
                .iter()
                .map(|o| o.sqnr_db)
                .fold(f64::INFINITY, f64::min),
        }
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
