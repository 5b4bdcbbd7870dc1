//! Raising the default-domain opset a model imports, so a rewrite may use an operator that
//! only exists in a newer opset (LayerNormalization: 17).
//!
//! Raising the version changes what every node of the default domain means. Between opset 11
//! and 17 the operators that changed meaning or form (not just gained element types) are:
//!
//! | opset | operator | change | here |
//! |---|---|---|---|
//! | 13 | Squeeze, Unsqueeze, ReduceSum | `axes` attribute -> input | converted |
//! | 13 | Split | `split` attribute -> input | converted |
//! | 13 | Softmax, LogSoftmax, Hardmax | flatten-from-`axis` -> one axis; default axis 1 -> -1 | converted when `axis` is the last axis, refused otherwise |
//! | 13 | Resize | mode `tf_half_pixel_for_nn` removed | refused |
//! | 14 | BatchNormalization | training outputs redefined | refused if more than one output |
//! | 13-16 | If, Loop, Scan | subgraph rules | refused (any node with a subgraph) |
//!
//! Older models (before opset 11: Pad, Slice, Clip, Resize and others took attributes) are
//! refused as a whole. A refusal changes nothing and says which node stands in the way.

use super::{is_onnx_domain, Graph, NodeId, Port};
use crate::eval::{attrs, Tensor};

/// What raising would do to node `n`, or why it cannot be raised.
enum Fix {
    Keep,
    /// Move an integer-list attribute to a new constant input at `slot`.
    AttrToInput {
        attr: &'static str,
        slot: usize,
    },
    /// Write the (last) axis explicitly.
    SetAxis(i64),
}

fn plan(g: &Graph, n: NodeId, from: i64) -> Result<Fix, String> {
    let node = g.node(n);
    let Some(op) = node.op() else {
        return Ok(Fix::Keep);
    };
    if !is_onnx_domain(&op.domain) {
        return Ok(Fix::Keep);
    }
    let who = || node.display_name();
    if op
        .attrs
        .iter()
        .any(|a| a.g.is_some() || !a.graphs.is_empty())
    {
        return Err(format!("{} has a subgraph", who()));
    }
    let t = op.op_type.as_str();
    if from < 13 {
        match t {
            "Squeeze" | "Unsqueeze" | "ReduceSum" => {
                return Ok(if attrs::find(&op.attrs, "axes").is_some() {
                    Fix::AttrToInput {
                        attr: "axes",
                        slot: 1,
                    }
                } else {
                    Fix::Keep
                })
            }
            "Split" => {
                return Ok(if attrs::find(&op.attrs, "split").is_some() {
                    Fix::AttrToInput {
                        attr: "split",
                        slot: 1,
                    }
                } else {
                    Fix::Keep
                })
            }
            "Softmax" | "LogSoftmax" | "Hardmax" => {
                let rank = g
                    .input(n, 0)
                    .and_then(|p| g.ty(p))
                    .and_then(|t| t.rank())
                    .ok_or_else(|| format!("{}: input rank unknown", who()))?;
                let a = attrs::int_or(&op.attrs, "axis", 1);
                let a = attrs::axis(a, rank).ok_or_else(|| format!("{}: bad axis", who()))?;
                // Before 13 the op flattens [d0..d(a-1)] x [da..]: the same as one axis only
                // when that axis is the last.
                if a + 1 != rank {
                    return Err(format!(
                        "{} normalizes over axes {a}.. of a rank-{rank} tensor",
                        who()
                    ));
                }
                return Ok(Fix::SetAxis(-1));
            }
            "Resize"
                if attrs::string(&op.attrs, "coordinate_transformation_mode").as_deref()
                    == Some("tf_half_pixel_for_nn") =>
            {
                return Err(format!("{} uses tf_half_pixel_for_nn", who()));
            }
            "Upsample" => return Err(format!("{} is removed in later opsets", who())),
            _ => {}
        }
    }
    if from < 14 && t == "BatchNormalization" && node.outputs.len() > 1 {
        return Err(format!("{} has training outputs", who()));
    }
    Ok(Fix::Keep)
}

/// Raises the default-domain opset import to `to`, rewriting the nodes whose form changed.
/// Returns a line per kind of change; `Err` (with the graph untouched) names the first node
/// whose meaning would change.
pub fn raise(g: &mut Graph, to: i64) -> Result<Vec<String>, String> {
    let from = g.opset();
    if from >= to {
        return Ok(vec![]);
    }
    if from < 11 {
        return Err(format!(
            "opset {from} is older than 11 (Pad, Slice, Clip, Resize took attributes)"
        ));
    }
    let mut fixes = Vec::new();
    for n in g.topo_ops() {
        match plan(g, n, from)? {
            Fix::Keep => {}
            f => fixes.push((n, f)),
        }
    }
    let mut moved = 0;
    for (n, f) in fixes {
        match f {
            Fix::Keep => {}
            Fix::AttrToInput { attr, slot } => {
                let op = g.node_mut(n).op_mut().expect("an operator");
                let pos = op
                    .attrs
                    .iter()
                    .position(|a| a.name.as_deref() == Some(attr))
                    .expect("planned");
                let vals = op.attrs.remove(pos).ints;
                op.num_inputs = op.num_inputs.max(slot + 1);
                let hint = format!("{}_{attr}", g.node(n).op().expect("op").name);
                let c = g.add_const(&hint, Tensor::vec_i64(vals).to_proto(""));
                g.set_input(n, slot, Some(Port::new(c, 0)));
                moved += 1;
            }
            Fix::SetAxis(a) => {
                let op = g.node_mut(n).op_mut().expect("an operator");
                op.attrs.retain(|x| x.name.as_deref() != Some("axis"));
                op.attrs.push(attrs::make_int("axis", a));
            }
        }
    }
    for o in &mut g.carry.model.opset_import {
        if is_onnx_domain(o.domain.as_deref().unwrap_or("")) {
            o.version = Some(to);
        }
    }
    // Opset 17 needs IR version 8 (ONNX's version table); older files say 7 or less.
    let min_ir = if to >= 17 { 8 } else { 7 };
    let ir = g.carry.model.ir_version.unwrap_or(min_ir);
    g.carry.model.ir_version = Some(ir.max(min_ir));
    let mut lines = vec![format!("raised the opset import from {from} to {to}")];
    if moved > 0 {
        lines.push(format!("moved {moved} axes/split attributes to inputs"));
    }
    Ok(lines)
}
