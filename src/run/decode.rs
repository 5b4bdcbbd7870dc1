//! How a model's outputs become detections: the three decodes of the DETR family, the check
//! that a decode fits the outputs, and the automatic choice from the model's structure.
//!
//! - `softmax` (facebookresearch/detr, transformers `DetrForObjectDetection`): softmax over
//!   the class logits, the last class is "no object"; best real class per query.
//! - `sigmoid` (the focal-loss families: Conditional, DAB, Deformable DETR, RT-DETR(v2),
//!   D-FINE): sigmoid per (query, class); the `k` best pairs over queries x classes.
//! - `graph` (the official RT-DETR / D-FINE deploy exports): the graph decodes itself and
//!   outputs `labels`, `boxes` (xyxy, pixels of the size fed to `orig_target_sizes`) and
//!   `scores`.
//!
//! The automatic choice ([`detect`]) reads structure only, never node names: see
//! docs/run.md for the rules and why they hold for each family.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::error::{Result, RunError};
use super::postprocess::{self, Detection, DetrOutputs};
use super::preprocess::Normalize;
use crate::load::proto::{GraphProto, ModelProto, NodeProto};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    Softmax,
    Sigmoid,
    Graph,
}

impl Decode {
    pub fn name(self) -> &'static str {
        match self {
            Decode::Softmax => "softmax",
            Decode::Sigmoid => "sigmoid",
            Decode::Graph => "graph",
        }
    }

    /// The pre-processing the family was trained with.
    pub fn default_normalize(self) -> Normalize {
        match self {
            Decode::Graph => Normalize::Unit,
            Decode::Softmax | Decode::Sigmoid => Normalize::ImageNet,
        }
    }
}

impl std::fmt::Display for Decode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Output names of the deploy graphs that decode themselves.
pub const GRAPH_OUTPUTS: [&str; 3] = ["labels", "boxes", "scores"];

/// `name [d0, d1, ...]` for every output, `?` for dimensions known only at run time.
pub fn describe(outputs: &[(String, Vec<i64>)]) -> String {
    outputs
        .iter()
        .map(|(n, s)| {
            let dims: Vec<String> = s
                .iter()
                .map(|&d| {
                    if d < 0 {
                        "?".to_string()
                    } else {
                        d.to_string()
                    }
                })
                .collect();
            format!("{n} [{}]", dims.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the outputs a decode reads are, by index into the model's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Class logits `[B, Q, C]` and boxes `[B, Q, 4]` (normalized cx, cy, w, h).
    Heads { logits: usize, boxes: usize },
    /// `labels [B, K]`, `boxes [B, K, 4]` (xyxy pixels), `scores [B, K]`.
    Graph {
        labels: usize,
        boxes: usize,
        scores: usize,
    },
}

fn mismatch(decode: Decode, outputs: &[(String, Vec<i64>)], why: &str) -> RunError {
    RunError::DecodeMismatch {
        decode: decode.name(),
        why: why.to_string(),
        outputs: describe(outputs),
    }
}

fn by_name(outputs: &[(String, Vec<i64>)], name: &str) -> Option<usize> {
    outputs.iter().position(|(n, _)| n == name)
}

/// True when the outputs are those of a graph that decodes itself.
pub fn has_graph_outputs(outputs: &[(String, Vec<i64>)]) -> bool {
    GRAPH_OUTPUTS.iter().all(|n| by_name(outputs, n).is_some())
}

/// Dimension `d` agrees with `want` or is unknown (-1).
fn fits(d: i64, want: i64) -> bool {
    d < 0 || d == want
}

/// The class-logit and box heads: by name when the model keeps the names of the
/// facebookresearch (`pred_logits`) or transformers (`logits`) exports and `pred_boxes`, or of
/// RF-DETR's own export (`labels`: logits `[B, Q, C]`, `dets`: boxes, in that export's order
/// dets first); else by shape (`[B,Q,4]` are the boxes; when the logits are 4 wide too, DETR's
/// export order decides: logits first).
fn heads(outputs: &[(String, Vec<i64>)]) -> Option<(usize, usize)> {
    let named = by_name(outputs, "pred_logits").or_else(|| by_name(outputs, "logits"));
    if let (Some(l), Some(b)) = (named, by_name(outputs, "pred_boxes")) {
        return Some((l, b));
    }
    // A deploy graph's `labels` are [B, K] class indices; RF-DETR's are rank-3 logits.
    if let (Some(l), Some(b)) = (by_name(outputs, "labels"), by_name(outputs, "dets")) {
        if outputs[l].1.len() == 3 {
            return Some((l, b));
        }
    }
    let rank3: Vec<usize> = (0..outputs.len())
        .filter(|&i| outputs[i].1.len() == 3)
        .collect();
    let boxes: Vec<usize> = rank3
        .iter()
        .copied()
        .filter(|&i| outputs[i].1[2] == 4)
        .collect();
    let bi = match boxes.as_slice() {
        [b] => *b,
        [_, b, ..] => *b,
        [] => return None,
    };
    let li = rank3.iter().copied().find(|&i| i != bi)?;
    Some((li, bi))
}

/// Checks that `decode` fits `outputs` (names and shapes; -1 matches anything) and says where
/// its tensors are. `batch` is checked where the model declares it.
pub fn layout(decode: Decode, outputs: &[(String, Vec<i64>)], batch: usize) -> Result<Layout> {
    let b = batch as i64;
    match decode {
        Decode::Graph => {
            let idx = GRAPH_OUTPUTS.map(|n| by_name(outputs, n));
            let [Some(labels), Some(boxes), Some(scores)] = idx else {
                return Err(mismatch(
                    decode,
                    outputs,
                    "it needs the outputs labels, boxes and scores of a deploy graph that \
                     decodes itself",
                ));
            };
            let (l, x, s) = (&outputs[labels].1, &outputs[boxes].1, &outputs[scores].1);
            let ok = l.len() == 2
                && x.len() == 3
                && s.len() == 2
                && fits(l[0], b)
                && fits(x[0], b)
                && fits(s[0], b)
                && fits(x[2], 4)
                && (l[1] < 0 || x[1] < 0 || l[1] == x[1])
                && (l[1] < 0 || s[1] < 0 || l[1] == s[1]);
            if !ok {
                return Err(mismatch(
                    decode,
                    outputs,
                    &format!("expected labels [{b}, K], boxes [{b}, K, 4] and scores [{b}, K]"),
                ));
            }
            Ok(Layout::Graph {
                labels,
                boxes,
                scores,
            })
        }
        Decode::Softmax | Decode::Sigmoid => {
            let Some((li, bi)) = heads(outputs) else {
                let why = if has_graph_outputs(outputs) {
                    "the model decodes itself (labels, boxes, scores): use --decode graph"
                } else {
                    "it needs class logits [B, Q, C] and boxes [B, Q, 4]"
                };
                return Err(mismatch(decode, outputs, why));
            };
            let (l, x) = (&outputs[li].1, &outputs[bi].1);
            let ok = l.len() == 3
                && x.len() == 3
                && fits(l[0], b)
                && fits(x[0], b)
                && (l[1] < 0 || x[1] < 0 || l[1] == x[1])
                && fits(x[2], 4)
                && l[1] != 0
                && l[2] != 0;
            if !ok {
                return Err(mismatch(
                    decode,
                    outputs,
                    &format!("expected class logits [{b}, Q, C] and boxes [{b}, Q, 4]"),
                ));
            }
            if decode == Decode::Softmax && l[2] >= 0 && l[2] < 2 {
                return Err(mismatch(
                    decode,
                    outputs,
                    "softmax needs at least one class plus the no-object class, and the logits \
                     have one column (a sigmoid-decoded model? try --decode sigmoid)",
                ));
            }
            Ok(Layout::Heads {
                logits: li,
                boxes: bi,
            })
        }
    }
}

/// Self-decoded detections of one batch.
#[derive(Debug, Clone)]
pub struct GraphOutputs {
    pub batch: usize,
    pub k: usize,
    /// `[batch, k]`, class indices as emitted.
    pub labels: Vec<f32>,
    /// `[batch, k, 4]`, x1 y1 x2 y2 in pixels.
    pub boxes: Vec<f32>,
    /// `[batch, k]`
    pub scores: Vec<f32>,
}

/// The outputs of one batch, ready to decode per image.
#[derive(Debug, Clone)]
pub enum BatchOutputs {
    Heads(DetrOutputs),
    Graph(GraphOutputs),
}

/// One inference's outputs as the runtime returned them: (name, shape, values as f32).
pub type RawOutputs = Vec<(String, Vec<i64>, Vec<f32>)>;

fn checked_len(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Picks the tensors `decode` reads from `raw` and checks their shapes and sizes.
pub fn assemble(raw: RawOutputs, decode: Decode, batch: usize) -> Result<BatchOutputs> {
    let shapes: Vec<(String, Vec<i64>)> =
        raw.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect();
    for (n, s, v) in &raw {
        if checked_len(s) != Some(v.len()) {
            return Err(RunError::Options(format!(
                "output {n} has shape {s:?} but {} values",
                v.len()
            )));
        }
    }
    let lay = layout(decode, &shapes, batch)?;
    let mut raw = raw;
    let mut take = |i: usize| std::mem::take(&mut raw[i].2);
    match lay {
        Layout::Heads { logits, boxes } => {
            let (ls, bs) = (&shapes[logits].1, &shapes[boxes].1);
            let (queries, classes) = (ls[1] as usize, ls[2] as usize);
            if ls[0] != batch as i64 || bs[0] != batch as i64 || bs[1] != ls[1] || bs[2] != 4 {
                return Err(mismatch(decode, &shapes, "logits and boxes disagree"));
            }
            if decode == Decode::Softmax && classes < 2 {
                return Err(mismatch(
                    decode,
                    &shapes,
                    "softmax needs at least 2 columns",
                ));
            }
            Ok(BatchOutputs::Heads(DetrOutputs {
                batch,
                queries,
                classes,
                logits: take(logits),
                boxes: take(boxes),
            }))
        }
        Layout::Graph {
            labels,
            boxes,
            scores,
        } => {
            let k = shapes[labels].1[1] as usize;
            let b = batch as i64;
            let want = [vec![b, k as i64], vec![b, k as i64, 4], vec![b, k as i64]];
            let got = [&shapes[labels].1, &shapes[boxes].1, &shapes[scores].1];
            if got.iter().zip(&want).any(|(g, w)| *g != w) {
                return Err(mismatch(
                    decode,
                    &shapes,
                    "labels, boxes and scores disagree",
                ));
            }
            Ok(BatchOutputs::Graph(GraphOutputs {
                batch,
                k,
                labels: take(labels),
                boxes: take(boxes),
                scores: take(scores),
            }))
        }
    }
}

/// How to turn outputs into detections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeOptions {
    pub decode: Decode,
    /// sigmoid: how many (query, class) pairs to keep (default: the number of queries);
    /// graph: keep the first `k` of what the graph emits.
    pub top_k: Option<usize>,
    pub threshold: f32,
}

impl BatchOutputs {
    /// The number of real classes, when the outputs say it (logit width, less the no-object
    /// column for softmax); self-decoded outputs do not.
    pub fn num_classes(&self, decode: Decode) -> Option<usize> {
        match (self, decode) {
            (BatchOutputs::Heads(o), Decode::Softmax) => Some(o.classes - 1),
            (BatchOutputs::Heads(o), _) => Some(o.classes),
            (BatchOutputs::Graph(_), _) => None,
        }
    }

    /// Detections of batch entry `b` for an image `orig_w x orig_h`, in the documented order.
    pub fn detections(
        &self,
        b: usize,
        image: &str,
        orig_w: u32,
        orig_h: u32,
        opts: &DecodeOptions,
    ) -> Vec<Detection> {
        self.detections_with_queries(b, image, orig_w, orig_h, opts)
            .into_iter()
            .map(|(_, d)| d)
            .collect()
    }

    /// [`Self::detections`], each with the query (graph: the slot `0..K`) it came from, which
    /// is where its mask is.
    pub fn detections_with_queries(
        &self,
        b: usize,
        image: &str,
        orig_w: u32,
        orig_h: u32,
        opts: &DecodeOptions,
    ) -> Vec<(usize, Detection)> {
        match self {
            BatchOutputs::Heads(o) if opts.decode == Decode::Softmax => {
                postprocess::decode_queries(o, b, image, orig_w, orig_h, opts.threshold)
            }
            BatchOutputs::Heads(o) => {
                let k = opts.top_k.unwrap_or(o.queries);
                postprocess::decode_sigmoid_queries(o, b, image, orig_w, orig_h, opts.threshold, k)
            }
            BatchOutputs::Graph(g) => graph_detections(g, b, image, opts),
        }
    }

    /// Queries (graph: slots) per batch entry, the second dimension of a mask output.
    pub fn queries(&self) -> usize {
        match self {
            BatchOutputs::Heads(o) => o.queries,
            BatchOutputs::Graph(g) => g.k,
        }
    }
}

/// The graph's detections in the graph's order (its TopK: score descending, ties by the lower
/// flat index, as ONNX specifies), xyxy -> xywh. Labels that are not whole non-negative numbers
/// and NaN scores are dropped.
fn graph_detections(
    g: &GraphOutputs,
    b: usize,
    image: &str,
    opts: &DecodeOptions,
) -> Vec<(usize, Detection)> {
    let k = opts.top_k.unwrap_or(g.k).min(g.k);
    (0..k)
        .filter_map(|j| {
            let i = b * g.k + j;
            let (label, score) = (g.labels[i], g.scores[i]);
            if score.is_nan()
                || score < opts.threshold
                || label.is_nan()
                || label < 0.0
                || label.fract() != 0.0
            {
                return None;
            }
            let x = &g.boxes[i * 4..][..4];
            let d = Detection {
                image: image.to_string(),
                category_id: label as usize,
                score,
                bbox: [x[0], x[1], x[2] - x[0], x[3] - x[1]],
                segmentation: None,
            };
            Some((j, d))
        })
        .collect()
}

/// Why [`detect`] could not decide, with what it saw.
#[derive(Debug, Clone)]
pub struct Undecided(pub String);

/// Output names and shapes as the ONNX graph declares them: -1 for a dimension that is not a
/// number, an empty shape when the rank is unknown.
pub fn declared_outputs(g: &GraphProto) -> Vec<(String, Vec<i64>)> {
    g.output
        .iter()
        .map(|o| {
            let shape = o
                .r#type
                .as_ref()
                .and_then(crate::ir::TensorType::from_proto)
                .and_then(|t| t.shape)
                .map(|dims| dims.iter().map(|d| d.fixed().unwrap_or(-1)).collect())
                .unwrap_or_default();
            (o.name.clone().unwrap_or_default(), shape)
        })
        .collect()
}

/// Output names and shapes: as declared, with what detrc's shape inference finds filled in
/// where the declaration leaves a rank or a dimension open (hand-made and some exporters'
/// graphs declare outputs without shapes, and a decode cannot be checked against those).
pub fn model_outputs(model: &ModelProto) -> Vec<(String, Vec<i64>)> {
    let declared = model
        .graph
        .as_ref()
        .map(declared_outputs)
        .unwrap_or_default();
    if declared
        .iter()
        .all(|(_, s)| !s.is_empty() && s.iter().all(|&d| d >= 0))
    {
        return declared;
    }
    let Ok(mut g) = crate::ir::from_onnx::import(model.clone()) else {
        return declared;
    };
    for n in g.topo_ops() {
        crate::analysis::typing::infer_node(&mut g, n);
    }
    declared
        .into_iter()
        .map(|(name, shape)| {
            let inferred = g
                .outputs
                .iter()
                .find(|o| o.name == name)
                .and_then(|o| g.ty(o.src))
                .and_then(|t| t.shape.as_ref())
                .map(|dims| {
                    dims.iter()
                        .map(|d| d.fixed().unwrap_or(-1))
                        .collect::<Vec<_>>()
                });
            let shape = match inferred {
                Some(i) if shape.is_empty() => i,
                Some(i) if i.len() == shape.len() => shape
                    .iter()
                    .zip(&i)
                    .map(|(&d, &e)| if d < 0 { e } else { d })
                    .collect(),
                _ => shape,
            };
            (name, shape)
        })
        .collect()
}

/// Ops that only move, select or retype values: they do not change what a box head computes.
const LAYOUT_OPS: &[&str] = &[
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Gather",
    "Identity",
    "Cast",
    "Flatten",
    "Split",
    "Slice",
];

/// Chooses the decode from the model's structure (the rules are in docs/run.md):
///
/// - outputs `labels`, `boxes`, `scores`: the graph decodes itself -> graph;
/// - the focal-loss families all refine boxes from reference points or sample deformably:
///   a `GridSample` (deformable attention), a `TopK` (encoder query selection) or a `Log`
///   (inverse sigmoid of reference points) among the heads' ancestors, or a box `Sigmoid`
///   whose input is more than a linear layer (reference points added) -> sigmoid;
/// - DETR's box head is a plain MLP ending in `Sigmoid(Linear(x))`, and DETR has none of the
///   ops above -> softmax;
/// - anything else -> undecided: the caller asks for `--decode`.
pub fn detect(model: &ModelProto) -> std::result::Result<Decode, Undecided> {
    let Some(g) = model.graph.as_ref() else {
        return Err(Undecided("the model has no graph".into()));
    };
    let outputs = model_outputs(model);
    if has_graph_outputs(&outputs) {
        return Ok(Decode::Graph);
    }
    let Some((li, bi)) = heads(&outputs) else {
        return Err(Undecided(format!(
            "its outputs ({}) are neither labels/boxes/scores nor class logits and boxes",
            describe(&outputs)
        )));
    };
    let consts: HashSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let producer: HashMap<&str, &NodeProto> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let is_const =
        |v: &str| consts.contains(v) || producer.get(v).is_some_and(|n| n.op_type() == "Constant");

    let mut seen: HashSet<*const NodeProto> = HashSet::new();
    let mut stack: Vec<&str> = vec![outputs[li].0.as_str(), outputs[bi].0.as_str()];
    // GridSample: deformable attention sampling; TopK: query selection from encoder
    // proposals; Log: the inverse sigmoid of reference points.
    let mut focal = false;
    while let Some(v) = stack.pop() {
        let Some(n) = producer.get(v) else { continue };
        if !seen.insert(*n as *const NodeProto) {
            continue;
        }
        focal |= matches!(n.op_type(), "GridSample" | "TopK" | "Log");
        stack.extend(n.input.iter().map(String::as_str).filter(|s| !s.is_empty()));
    }

    // Walk back from the boxes through layout ops to the op that computes them.
    let mut v = outputs[bi].0.as_str();
    let mut head = None;
    for _ in 0..64 {
        let Some(n) = producer.get(v) else { break };
        if LAYOUT_OPS.contains(&n.op_type()) {
            match n.input.first() {
                Some(i) => v = i.as_str(),
                None => break,
            }
            continue;
        }
        head = Some(*n);
        break;
    }
    // The first op under `v` that is not a layout op.
    let through_layout = |v: &str| -> Option<&NodeProto> {
        let mut v = v;
        for _ in 0..64 {
            let n = producer.get(v).copied()?;
            match (LAYOUT_OPS.contains(&n.op_type()), n.input.first()) {
                (true, Some(x)) => v = x.as_str(),
                (true, None) => return None,
                (false, _) => return Some(n),
            }
        }
        None
    };
    // Add(MatMul(x, W), b), Gemm(x, W, b), or MatMul(x, W): a linear layer with constant
    // weights (a fused, split or reshaped one is still linear).
    let linear = |n: &NodeProto| -> bool {
        match (n.op_type(), n.input.as_slice()) {
            ("Gemm" | "MatMul", [_, w, ..]) => is_const(w),
            ("Add", [a, b]) => {
                let other = match (is_const(a), is_const(b)) {
                    (true, false) => b,
                    (false, true) => a,
                    _ => return false,
                };
                through_layout(other).is_some_and(|m| {
                    m.op_type() == "MatMul" && m.input.get(1).is_some_and(|w| is_const(w))
                })
            }
            _ => false,
        }
    };
    let box_head = match head {
        Some(n) if n.op_type() == "Sigmoid" && !n.input.is_empty() => {
            let inner = through_layout(n.input[0].as_str());
            let dynamic_add =
                |m: &NodeProto| m.op_type() == "Add" && m.input.iter().all(|i| !is_const(i));
            match inner {
                Some(m) if linear(m) => BoxHead::Linear,
                // `tmp[..., :2] += ref` exports as Slice/Add/ScatterND or Concat
                Some(m) if dynamic_add(m) || matches!(m.op_type(), "ScatterND" | "Concat") => {
                    BoxHead::Refined
                }
                Some(m) => BoxHead::Other(format!("a Sigmoid over {}", m.op_type())),
                None => BoxHead::Other("a Sigmoid over a graph input".into()),
            }
        }
        Some(n) => BoxHead::Other(n.op_type().to_string()),
        None => BoxHead::Other("no op".into()),
    };
    let width = outputs[li].1.get(2).copied().unwrap_or(-1);
    match (&box_head, focal) {
        (BoxHead::Linear, false) => {
            if (0..2).contains(&width) {
                Err(Undecided(format!(
                    "it has DETR's structure (softmax with a no-object class) but its logits \
                     have {width} column(s)"
                )))
            } else {
                Ok(Decode::Softmax)
            }
        }
        (BoxHead::Refined, _) | (_, true) => Ok(Decode::Sigmoid),
        (BoxHead::Other(op), false) => Err(Undecided(format!(
            "its boxes come from {op}, which is neither DETR's Sigmoid(Linear) nor reference \
             points refined, and it has none of the ops of the focal-loss families \
             (GridSample, TopK, the Log of an inverse sigmoid)"
        ))),
    }
}

enum BoxHead {
    /// `Sigmoid(Linear(x))`: DETR's MLP.
    Linear,
    /// A Sigmoid over reference points added to a linear layer.
    Refined,
    /// Anything else: what computes the boxes.
    Other(String),
}

/// The decode to use for `model` when `--decode` is not given: [`detect`] on an ONNX model;
/// for an engine, its output names, else [`detect`] on the source model its sidecar
/// (`ENGINE.json`) names, when that file is still there and unchanged.
pub fn detect_for(
    model: &Path,
    outputs: &[(String, Vec<i64>)],
) -> std::result::Result<Decode, Undecided> {
    if has_graph_outputs(outputs) {
        return Ok(Decode::Graph);
    }
    let onnx = model
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    let source = if onnx {
        Some(model.to_path_buf())
    } else {
        sidecar_source(model)
    };
    let Some(src) = source else {
        return Err(Undecided(format!(
            "it is an engine whose outputs ({}) do not say, and no sidecar {}.json names a \
             source model that is still there",
            describe(outputs),
            model.display()
        )));
    };
    let proto = crate::load::load_proto(&src)
        .map_err(|e| Undecided(format!("cannot read {}: {e}", src.display())))?;
    detect(&proto)
}

fn sidecar_source(engine: &Path) -> Option<std::path::PathBuf> {
    let mut name = engine.as_os_str().to_os_string();
    name.push(".json");
    let text = std::fs::read_to_string(name).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let src = v.get("source")?;
    let path = std::path::PathBuf::from(src.get("path")?.as_str()?);
    let want = src.get("sha256")?.as_str()?;
    let bytes = std::fs::read(&path).ok()?;
    (crate::digest::sha256_hex(&bytes) == want).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(n: &str, s: &[i64]) -> (String, Vec<i64>) {
        (n.to_string(), s.to_vec())
    }

    #[test]
    fn heads_by_name_and_by_shape() {
        let named = [o("pred_boxes", &[2, 5, 4]), o("pred_logits", &[2, 5, 92])];
        assert_eq!(
            layout(Decode::Softmax, &named, 2).unwrap(),
            Layout::Heads {
                logits: 1,
                boxes: 0
            }
        );
        let tf = [
            o("logits", &[1, 5, 80]),
            o("pred_boxes", &[1, 5, 4]),
            o("last_hidden_state", &[1, 5, 256]),
        ];
        assert_eq!(
            layout(Decode::Sigmoid, &tf, 1).unwrap(),
            Layout::Heads {
                logits: 0,
                boxes: 1
            }
        );
        // RF-DETR's export with 3 classes: dets first, both 4 wide; the names decide
        let rfdetr = [o("dets", &[1, 5, 4]), o("labels", &[1, 5, 4])];
        assert_eq!(
            layout(Decode::Sigmoid, &rfdetr, 1).unwrap(),
            Layout::Heads {
                logits: 1,
                boxes: 0
            }
        );
        let square = [o("a", &[1, 5, 4]), o("b", &[1, 5, 4])];
        assert_eq!(
            layout(Decode::Softmax, &square, 1).unwrap(),
            Layout::Heads {
                logits: 0,
                boxes: 1
            }
        );
        let dynamic = [o("logits", &[-1, 5, 3]), o("pred_boxes", &[-1, 5, 4])];
        assert!(layout(Decode::Sigmoid, &dynamic, 4).is_ok());
    }

    #[test]
    fn decodes_that_do_not_fit_name_the_outputs() {
        let deploy = [
            o("labels", &[-1, 300]),
            o("boxes", &[-1, 300, 4]),
            o("scores", &[-1, 300]),
        ];
        assert!(layout(Decode::Graph, &deploy, 1).is_ok());
        let e = layout(Decode::Softmax, &deploy, 1).unwrap_err().to_string();
        assert!(
            e.contains("labels [?, 300]") && e.contains("--decode graph"),
            "{e}"
        );
        let heads = [o("logits", &[1, 5, 1]), o("pred_boxes", &[1, 5, 4])];
        let e = layout(Decode::Graph, &heads, 1).unwrap_err().to_string();
        assert!(e.contains("logits [1, 5, 1], pred_boxes [1, 5, 4]"), "{e}");
        let e = layout(Decode::Softmax, &heads, 1).unwrap_err().to_string();
        assert!(e.contains("one column"), "{e}");
        assert!(layout(Decode::Sigmoid, &heads, 1).is_ok());
        for outs in [
            vec![o("logits", &[1, 10])],
            vec![o("pred_logits", &[1, 5, 92]), o("pred_boxes", &[1, 6, 4])],
            vec![o("pred_logits", &[2, 5, 92]), o("pred_boxes", &[2, 5, 4])],
        ] {
            for d in [Decode::Softmax, Decode::Sigmoid] {
                let e = layout(d, &outs, 1).unwrap_err();
                assert!(
                    matches!(e, RunError::DecodeMismatch { .. }),
                    "{outs:?}: {e}"
                );
            }
        }
    }

    #[test]
    fn graph_outputs_become_xywh_in_graph_order() {
        let g = GraphOutputs {
            batch: 1,
            k: 3,
            labels: vec![2.0, 0.0, 7.0],
            boxes: vec![
                10.0, 20.0, 30.0, 60.0, 0.0, 0.0, 1.0, 1.0, 5.0, 5.0, 6.0, 6.0,
            ],
            scores: vec![0.9, 0.5, 0.1],
        };
        let opts = DecodeOptions {
            decode: Decode::Graph,
            top_k: None,
            threshold: 0.2,
        };
        let d = BatchOutputs::Graph(g.clone()).detections(0, "a", 1, 1, &opts);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].category_id, 2);
        assert_eq!(d[0].bbox, [10.0, 20.0, 20.0, 40.0]);
        let top1 = DecodeOptions {
            top_k: Some(1),
            threshold: 0.0,
            ..opts
        };
        assert_eq!(
            BatchOutputs::Graph(g).detections(0, "a", 1, 1, &top1).len(),
            1
        );
    }
}
