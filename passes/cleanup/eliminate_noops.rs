//! `eliminate-noops`: removes operators that return their input unchanged.
//!
//! Each rule reads as pattern -> replacement:
//!   Identity(x) | Dropout(x) (mask unused)   -> x
//!   Cast(x: T, to=T)                          -> x
//!   Reshape(x, s) | Expand(x, s), same shape  -> x
//!   Mul(x, 1) | Div(x, 1) | Add(x, 0) | Sub(x, 0), result shape = x shape -> x
//!   Pad(x, zeros) | Slice(x, whole range) | Transpose(x, identity perm) -> x
//!   Concat(x) (one input)                     -> x
//!   Split(x) (one output)                     -> x
//!   Squeeze(Unsqueeze(x)) | Unsqueeze(Squeeze(x)), same type -> x
//!   Where(IsNaN(s), 0, s), s = Softmax(scores) with no additive mask on the scores -> s
//!   Where(c, a, b), c a constant all true | all false -> a | b (a masked_fill whose mask
//!     folded to nothing to mask: Deformable DETR's value padding mask)
//! A rewrite needs the result's type to equal the input's, so it never changes a shape or
//! element type that a consumer sees.

use crate::ir::{Graph, NodeId, NodeKind, Port};
use crate::pass::pattern::{const_value, same_static_type};
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::{attrs, Tensor};

pub struct EliminateNoops;

impl Pass for EliminateNoops {
    fn name(&self) -> &'static str {
        "eliminate-noops"
    }
    fn about(&self) -> &'static str {
        "remove Identity, Dropout, same-type Cast, same-shape Reshape/Expand, x*1, x+0, zero Pad, ..."
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for n in g.topo_ops() {
            if !g.contains(n) {
                continue;
            }
            let Some(src) = noop_source(g, n) else {
                continue;
            };
            let out = Port::new(n, 0);
            // Removing an Identity between a graph input and a graph output would only make the
            // emitter put it back.
            if g.is_graph_output(out)
                && (!matches!(g.node(src.node).kind, NodeKind::Op(_)) || g.is_graph_output(src))
            {
                continue;
            }
            let op = g.node(n).op_type().to_string();
            g.replace_all_uses(out, src);
            g.remove_node(n);
            *counts.entry(op).or_default() += 1;
        }
        let lines: Vec<String> = counts
            .iter()
            .map(|(op, c)| format!("removed {c} no-op {op}"))
            .collect();
        Ok(Outcome::changed(lines))
    }
}

/// True if a constant of only size-1 dimensions, applied elementwise to `x`, leaves x's shape
/// as it is even where x's dimensions are symbolic or unknown: x has at least its rank, and
/// they share the element type (HGNetv2's learnable affine blocks at their initial `x * 1 + 0`,
/// in the dynamic-batch official D-FINE export).
fn no_broadcast(g: &Graph, c: &Tensor, x: Port) -> bool {
    let Some(t) = g.ty(x) else { return false };
    c.shape().iter().all(|&d| d == 1)
        && t.dtype == c.dtype()
        && (c.shape().is_empty() || t.rank().is_some_and(|r| r >= c.shape().len()))
}

/// `Where(c, a, b)` whose condition is a constant of one value picks one branch everywhere;
/// that branch, when it already has the result's type (the condition and the other branch do
/// not broadcast it).
fn uniform_choice(g: &Graph, ins: &[Option<Port>], out: Port) -> Option<Port> {
    let [Some(c), Some(a), Some(b)] = ins else {
        return None;
    };
    let Tensor::Bool(cond) = const_value(g, *c)? else {
        return None;
    };
    let first = *cond.iter().next()?;
    if cond.iter().any(|&v| v != first) {
        return None;
    }
    let pick = if first { *a } else { *b };
    same_static_type(g, pick, out).then_some(pick)
}

/// `Where(IsNaN(s), 0, s)` with `s = Softmax(scores)`: torch's guard for a row of attention
/// scores masked entirely (all -inf, so softmax computes 0/0). Without an additive mask on the
/// scores (fold-mask removes the constant key-padding mask of a static export), every row has
/// finite entries and the guard never fires, so it is `s`. (A NaN already in the scores would
/// give NaN instead of 0: the guard is kept wherever a mask or any other addition reaches the
/// scores, since then a fully masked row is possible.)
fn nan_guard_source(g: &Graph, ins: &[Option<Port>], out: Port) -> Option<Port> {
    let [Some(cond), Some(zero), Some(s)] = ins else {
        return None;
    };
    let guarded = g.node(cond.node).is("IsNaN") && g.input(cond.node, 0) == Some(*s);
    let zero = const_value(g, *zero).is_some_and(|c| c.all_equal(0.0));
    if !(guarded && zero && g.node(s.node).is("Softmax") && same_static_type(g, *s, out)) {
        return None;
    }
    let scores = g.input(s.node, 0)?;
    (!may_be_masked(g, scores)).then_some(*s)
}

/// Whether an addition can reach `scores` through the ops between attention's MatMul and its
/// softmax (layout ops, a constant scale): any Add, Sub or Where on the way may be a mask.
fn may_be_masked(g: &Graph, mut p: Port) -> bool {
    for _ in 0..16 {
        let n = g.node(p.node);
        let next = match n.op_type() {
            "Reshape" | "Transpose" | "Squeeze" | "Unsqueeze" | "Identity" | "Cast" => 0,
            "Mul" | "Div" => match (g.input(p.node, 0), g.input(p.node, 1)) {
                (Some(a), Some(b))
                    if g.const_tensor(b).is_some() && g.const_tensor(a).is_none() =>
                {
                    0
                }
                (Some(a), Some(b))
                    if g.const_tensor(a).is_some() && g.const_tensor(b).is_none() =>
                {
                    1
                }
                _ => return true,
            },
            "MatMul" | "Gemm" | "Einsum" => return false,
            _ => return true,
        };
        match g.input(p.node, next) {
            Some(q) => p = q,
            None => return true,
        }
    }
    true
}

/// If node `n` passes one of its inputs through unchanged, that input.
pub fn noop_source(g: &Graph, n: NodeId) -> Option<Port> {
    let node = g.node(n);
    let op = node.op()?;
    if !crate::ir::is_onnx_domain(&op.domain) {
        return None;
    }
    let ins = g.inputs(n);
    let x = (*ins.first()?)?;
    let out = Port::new(n, 0);
    // Every extra output must be unused (Dropout's mask, Split's others).
    for slot in 1..node.outputs.len() {
        if g.use_count(Port::new(n, slot)) > 0 {
            return None;
        }
    }
    let keeps_type = || same_static_type(g, x, out);
    let pass = match op.op_type.as_str() {
        "Identity" => true,
        "Dropout" => true,
        "Cast" => g
            .ty(x)
            .is_some_and(|t| Some(t.dtype.0 as i64) == attrs::int(&op.attrs, "to")),
        "Reshape" | "Expand" | "Squeeze" | "Unsqueeze" | "Flatten" => keeps_type(),
        "Mul" | "Div" | "Add" | "Sub" => {
            let unit = if matches!(op.op_type.as_str(), "Mul" | "Div") {
                1.0
            } else {
                0.0
            };
            let c = ins
                .get(1)
                .copied()
                .flatten()
                .and_then(|p| const_value(g, p));
            let rhs =
                c.is_some_and(|c| c.all_equal(unit) && (keeps_type() || no_broadcast(g, &c, x)));
            // Add(0, x) and Mul(1, x) are commutative forms of the same no-op.
            let lhs_commutes = matches!(op.op_type.as_str(), "Mul" | "Add")
                && ins.get(1).copied().flatten().is_some_and(|y| {
                    const_value(g, x).is_some_and(|c| {
                        c.all_equal(unit) && (same_static_type(g, y, out) || no_broadcast(g, &c, y))
                    })
                });
            if lhs_commutes && !rhs {
                return ins.get(1).copied().flatten();
            }
            rhs
        }
        "Pad" => {
            let pads = match ins.get(1).copied().flatten() {
                Some(p) => const_value(g, p).and_then(|t| t.as_i64_vec()),
                None => attrs::ints(&op.attrs, "pads"),
            };
            pads.is_some_and(|p| p.iter().all(|&v| v == 0)) && keeps_type()
        }
        // Same shape is not enough: a step of -1 over the whole axis reverses it.
        "Slice" => {
            let steps = match ins.get(4).copied().flatten() {
                None => Some(vec![1]),
                Some(p) => const_value(g, p).and_then(|t| t.as_i64_vec()),
            };
            steps.is_some_and(|s| s.iter().all(|&v| v == 1)) && keeps_type()
        }
        "Transpose" => attrs::ints(&op.attrs, "perm")
            .is_some_and(|p| p.iter().enumerate().all(|(i, &v)| v == i as i64)),
        "Concat" => ins.len() == 1,
        "Where" => return uniform_choice(g, &ins, out).or_else(|| nan_guard_source(g, &ins, out)),
        "Split" => node.outputs.len() == 1 && keeps_type(),
        _ => false,
    };
    if pass {
        return Some(x);
    }
    // Squeeze(Unsqueeze(y)) and Unsqueeze(Squeeze(y)) give back y when the types agree.
    if op.op_type == "Squeeze" || op.op_type == "Unsqueeze" {
        let inverse = if op.op_type == "Squeeze" {
            "Unsqueeze"
        } else {
            "Squeeze"
        };
        let inner = g.node(x.node);
        if inner.is(inverse) {
            let y = g.input(x.node, 0)?;
            if same_static_type(g, y, out) {
                return Some(y);
            }
        }
    }
    None
}
