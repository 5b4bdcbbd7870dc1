//! Moving a graph to a newer default-domain opset, for rewrites that need operators only a
//! newer opset has (LayerNormalization: 17; FP8 Q/DQ: QuantizeLinear-19). Only the operators
//! whose signature or meaning changed between the versions are rewritten; every other node
//! means the same thing under the newer opset.
//!
//! | opset | operator | change | here |
//! |---|---|---|---|
//! | 13 | Squeeze, Unsqueeze, ReduceSum | `axes` attribute -> input | moved |
//! | 13 | Split | `split` attribute -> input | moved |
//! | 13 | Softmax, LogSoftmax, Hardmax | flatten from `axis` -> one axis; default 1 -> -1 | written as the last axis when it is the last, refused otherwise |
//! | 13 | Resize | mode `tf_half_pixel_for_nn` removed | refused |
//! | 14 | BatchNormalization | training outputs redefined | refused with more than one output |
//! | 16 | RoiAlign | default coordinate transformation | refused |
//! | 18 | ReduceMean, ReduceMax, ... | `axes` attribute -> input | moved |
//! | 18 | Split | needs `split` or `num_outputs` | `num_outputs` written |
//!
//! Nodes with subgraphs (If, Loop, Scan) are refused: their bodies would need the same
//! rewrite. A refusal is decided before anything changes and names the node in the way.

use crate::ir::{Graph, NodeId, Port};
use crate::tensor::attrs;
use crate::tensor::Tensor;

/// Reductions whose `axes` moved from an attribute to an input in opset 18 (ReduceSum did
/// so in 13).
const REDUCE_AXES_18: &[&str] = &[
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
];

/// The oldest opset `raise` starts from: before 11, Pad, Slice, Clip and Resize took
/// attributes that later became inputs.
pub const OLDEST: i64 = 11;
/// The newest opset `raise` goes to.
pub const NEWEST: i64 = 19;

/// What raising does to one node.
enum Fix {
    /// An integer-list attribute becomes a constant input at `slot`.
    AttrToInput { attr: &'static str, slot: usize },
    /// Softmax-like: the axis written out as the last one.
    LastAxis,
    /// Split-18: the number of equal parts written out.
    NumOutputs(usize),
}

/// The fixes node `n` needs to mean the same under opset `to`, or why it cannot.
fn plan(g: &Graph, n: NodeId, from: i64, to: i64) -> Result<Vec<Fix>, String> {
    let node = g.node(n);
    let Some(op) = node.op() else {
        return Ok(vec![]);
    };
    if !crate::ir::is_onnx_domain(&op.domain) {
        return Ok(vec![]);
    }
    let who = || node.display_name();
    let refuse = |why: String| {
        Err(format!(
            "cannot move the model from opset {from} to {to}: {why}"
        ))
    };
    if op
        .attrs
        .iter()
        .any(|a| a.g.is_some() || !a.graphs.is_empty())
    {
        return refuse(format!("{} has a subgraph", who()));
    }
    let t = op.op_type.as_str();
    let has = |a: &str| attrs::find(&op.attrs, a).is_some();
    let crosses = |v: i64| from < v && to >= v;
    let mut fixes = vec![];
    if crosses(13) {
        match t {
            "Squeeze" | "Unsqueeze" | "ReduceSum" if has("axes") => fixes.push(Fix::AttrToInput {
                attr: "axes",
                slot: 1,
            }),
            "Split" if has("split") => fixes.push(Fix::AttrToInput {
                attr: "split",
                slot: 1,
            }),
            "Softmax" | "LogSoftmax" | "Hardmax" => {
                let Some(rank) = g.input(n, 0).and_then(|p| g.ty(p)).and_then(|t| t.rank()) else {
                    return refuse(format!("{}: the rank of its input is unknown", who()));
                };
                let a = attrs::axis(attrs::int_or(&op.attrs, "axis", 1), rank);
                // Before 13 the op normalizes the flattened axes a.. together: one axis only
                // when a is the last.
                if a != Some(rank.saturating_sub(1)) {
                    return refuse(format!(
                        "{} normalizes over several axes of a rank-{rank} tensor",
                        who()
                    ));
                }
                fixes.push(Fix::LastAxis);
            }
            "Resize"
                if attrs::string(&op.attrs, "coordinate_transformation_mode").as_deref()
                    == Some("tf_half_pixel_for_nn") =>
            {
                return refuse(format!("{} uses tf_half_pixel_for_nn", who()));
            }
            "Upsample" => return refuse(format!("{} no longer exists", who())),
            _ => {}
        }
    }
    if crosses(14) && t == "BatchNormalization" && node.outputs.len() > 1 {
        return refuse(format!("{} has training outputs", who()));
    }
    if crosses(16) && t == "RoiAlign" {
        return refuse(format!(
            "RoiAlign '{}' changed its default coordinate transformation in opset 16 \
             (re-export at opset 16 or later)",
            op.name
        ));
    }
    if crosses(18) {
        if REDUCE_AXES_18.contains(&t) && has("axes") {
            fixes.push(Fix::AttrToInput {
                attr: "axes",
                slot: 1,
            });
        }
        // Split-18 needs `split` or `num_outputs`; without sizes the parts were equal, one
        // per output.
        let sizes = g.input(n, 1).is_some() || (crosses(13) && has("split"));
        if t == "Split" && !sizes && !has("num_outputs") {
            fixes.push(Fix::NumOutputs(node.outputs.len()));
        }
    }
    Ok(fixes)
}

/// The IR version a model at opset `v` needs at least (ONNX's version table).
fn min_ir_version(v: i64) -> i64 {
    match v {
        ..=14 => 7,
        15..=18 => 8,
        _ => 9,
    }
}

/// Raises the default-domain opset from `OLDEST..` to `to` (at most `NEWEST`). Returns one
/// line per kind of rewrite; `Err` (the graph untouched) names what is in the way.
pub fn raise(g: &mut Graph, to: i64) -> Result<Vec<String>, String> {
    let from = g.opset();
    if from >= to {
        return Ok(Vec::new());
    }
    if from < OLDEST || to > NEWEST {
        return Err(format!(
            "cannot move the model from opset {from} to {to}: detrc raises opsets \
             {OLDEST}..={NEWEST} only (re-export the model at opset 17)"
        ));
    }
    let mut planned = Vec::new();
    for n in g.topo_ops() {
        for f in plan(g, n, from, to)? {
            planned.push((n, f));
        }
    }
    let (mut reduces, mut moved, mut softmaxes, mut splits) = (0, 0, 0, 0);
    // Node ids stay valid: this loop only adds constants.
    for (n, f) in planned {
        match f {
            Fix::AttrToInput { attr, slot } => {
                let op = g.node_mut(n).op_mut().expect("planned on an operator");
                let Some(pos) = op
                    .attrs
                    .iter()
                    .position(|a| a.name.as_deref() == Some(attr))
                else {
                    continue;
                };
                let vals = op.attrs.remove(pos).ints;
                op.num_inputs = op.num_inputs.max(slot + 1);
                let name = format!("{}_{attr}", g.value(Port::new(n, 0)).name);
                let c = g.add_const(&name, Tensor::vec_i64(vals).to_proto(""));
                g.set_input(n, slot, Some(Port::new(c, 0)));
                if g.node(n).op_type().starts_with("Reduce") {
                    reduces += 1;
                } else {
                    moved += 1;
                }
            }
            Fix::LastAxis => {
                let op = g.node_mut(n).op_mut().expect("planned on an operator");
                op.attrs.retain(|a| a.name.as_deref() != Some("axis"));
                op.attrs.push(attrs::make_int("axis", -1));
                softmaxes += 1;
            }
            Fix::NumOutputs(k) => {
                let op = g.node_mut(n).op_mut().expect("planned on an operator");
                op.attrs.push(attrs::make_int("num_outputs", k as i64));
                splits += 1;
            }
        }
    }
    for o in g.carry.model.opset_import.iter_mut() {
        if crate::ir::is_onnx_domain(o.domain.as_deref().unwrap_or("")) {
            o.version = Some(to);
        }
    }
    let ir = g.carry.model.ir_version.unwrap_or(0);
    g.carry.model.ir_version = Some(ir.max(min_ir_version(to)));
    let mut lines = vec![format!("opset {from} -> {to}")];
    if reduces > 0 {
        lines.push(format!("{reduces} reductions take their axes as an input"));
    }
    if moved > 0 {
        lines.push(format!(
            "{moved} Squeeze/Unsqueeze/Split take their axes or sizes as an input"
        ));
    }
    if softmaxes > 0 {
        lines.push(format!("{softmaxes} Softmax-like ops name their last axis"));
    }
    if splits > 0 {
        lines.push(format!("{splits} Splits name their number of outputs"));
    }
    Ok(lines)
}
