//! `slice-concat`: a Slice that reads back one part of a Concat reads that part.
//!
//!   Slice(f(Concat_k(a, b, ...)), k, [lo, hi)) -> f'(Slice(b, k, [lo - off_b, hi - off_b]))
//! when `[lo, hi)` lies within one part, where f is a chain of elementwise operators whose
//! other operands are constants or broadcast along k (f' slices the constants the same way).
//!
//! Vision transformers put a class token in front of the patch tokens, add the position
//! embedding, and take the token back (`embeddings[:, :1]`, `embeddings[:, 1:]`): DINOv2 in
//! RF-DETR does this to repeat the class token once per attention window. Read back, the
//! class token is the learned constant plus its position embedding, which folds; through the
//! Concat it would stay an input-dependent value that the batch follows, and its per-window
//! `Tile` would repeat the batch instead of a constant.

use crate::analysis::typing::small_const;
use crate::ir::{Graph, NodeId, Port, TensorType};
use crate::ops::{self, Axes};
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::{attrs, Tensor};

pub struct SliceConcat;

impl Pass for SliceConcat {
    fn name(&self) -> &'static str {
        "slice-concat"
    }
    fn about(&self) -> &'static str {
        "a Slice that reads one part of a Concat (through elementwise ops with constant operands) reads that part"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        if g.opset() < 10 {
            return Ok(Outcome::Unchanged);
        }
        let mut done = 0;
        for n in g.topo_ops() {
            if !g.contains(n) || !g.node(n).is("Slice") {
                continue;
            }
            let Some(plan) = plan(g, n) else { continue };
            let out = rebuild(g, n, &plan);
            g.replace_all_uses(Port::new(n, 0), out);
            done += 1;
        }
        Ok(Outcome::changed(if done > 0 {
            vec![format!("{done} Slices read one part of a Concat directly")]
        } else {
            vec![]
        }))
    }
}

/// What a Slice reads: part `part` of `concat` on `axis`, rows `[lo, hi)` of it, through
/// `chain` (elementwise nodes from the Slice's input up to the Concat, with the slot the
/// chain enters each by).
struct Plan {
    axis: usize,
    lo: i64,
    hi: i64,
    part: Port,
    part_lo: i64,
    part_len: i64,
    /// (node, slot of the chain operand), nearest the Slice first.
    chain: Vec<(NodeId, usize)>,
}

fn static_shape(g: &Graph, p: Port) -> Option<Vec<i64>> {
    g.ty(p).and_then(TensorType::static_shape)
}

/// The one axis a Slice narrows, with unit steps, as `(axis, lo, hi)` on its input's shape.
fn slice_range(g: &Graph, n: NodeId, dims: &[i64]) -> Option<(usize, i64, i64)> {
    let ints = |slot: usize| small_const(g, g.input(n, slot)).and_then(|t| t.as_i64_vec());
    let starts = ints(1)?;
    let ends = ints(2)?;
    let axes = match g.input(n, 3) {
        Some(_) => ints(3)?,
        None => (0..starts.len() as i64).collect(),
    };
    if g.input(n, 4).is_some() && ints(4)?.iter().any(|&s| s != 1) {
        return None;
    }
    if starts.len() != 1 || ends.len() != 1 || axes.len() != 1 {
        return None;
    }
    let axis = attrs::axis(axes[0], dims.len())?;
    let d = dims[axis];
    let norm = |v: i64| (if v < 0 { v.saturating_add(d) } else { v }).clamp(0, d);
    let (lo, hi) = (norm(starts[0]), norm(ends[0]));
    (lo < hi && (lo, hi) != (0, d)).then_some((axis, lo, hi))
}

fn plan(g: &Graph, n: NodeId) -> Option<Plan> {
    let x = g.input(n, 0)?;
    let dims = static_shape(g, x)?;
    let (axis, lo, hi) = slice_range(g, n, &dims)?;
    let mut chain = Vec::new();
    let mut p = x;
    for _ in 0..8 {
        let node = g.node(p.node);
        let op = node.op()?;
        if op.op_type == "Concat" {
            let k = attrs::axis(attrs::int(&op.attrs, "axis")?, dims.len())?;
            if k != axis {
                return None;
            }
            let mut off = 0;
            for q in g.inputs(p.node) {
                let q = q?;
                let len = *static_shape(g, q)?.get(axis)?;
                if off <= lo && hi <= off + len {
                    // Worth it when the part folds, or when the Concat and the chain die
                    // once their Slices read the parts: else the chain's ops would run twice.
                    let folds = g.const_tensor(q).is_some();
                    if !folds && !only_sliced(g, p.node, &chain) {
                        return None;
                    }
                    return Some(Plan {
                        axis,
                        lo,
                        hi,
                        part: q,
                        part_lo: off,
                        part_len: len,
                        chain,
                    });
                }
                off += len;
            }
            return None;
        }
        let kind = ops::rule(&op.op_type).map(|r| r.axes)?;
        if node.outputs.len() != 1 || static_shape(g, p)? != dims {
            return None;
        }
        let ins = g.inputs(p.node);
        let slot = match kind {
            Axes::Elementwise => 0,
            Axes::Broadcast => {
                // The chain goes through the one operand of the output's shape; every other
                // operand is a constant, or broadcast along the sliced axis.
                let full: Vec<usize> = (0..ins.len())
                    .filter(|&s| ins[s].and_then(|q| static_shape(g, q)).as_ref() == Some(&dims))
                    .collect();
                let slot = *full
                    .iter()
                    .find(|&&s| ins[s].is_some_and(|q| g.const_tensor(q).is_none()))?;
                for (s, q) in ins.iter().enumerate() {
                    let q = (*q)?;
                    let qd = static_shape(g, q)?;
                    let k = (axis + qd.len()).checked_sub(dims.len());
                    let broadcast = k.is_none_or(|k| qd[k] == 1);
                    if s != slot && !broadcast && g.const_tensor(q).is_none() {
                        return None;
                    }
                }
                slot
            }
            _ => return None,
        };
        chain.push((p.node, slot));
        p = ins[slot]?;
        if static_shape(g, p)? != dims {
            return None;
        }
    }
    None
}

/// Every reader of the Concat and of the chain's ops is the next op of the chain or a Slice.
fn only_sliced(g: &Graph, concat: NodeId, chain: &[(NodeId, usize)]) -> bool {
    let mut path: Vec<NodeId> = chain.iter().map(|&(n, _)| n).rev().collect();
    path.insert(0, concat);
    path.iter().enumerate().all(|(i, &n)| {
        let next = path.get(i + 1).copied();
        !g.is_graph_output(Port::new(n, 0))
            && g.consumers(Port::new(n, 0))
                .iter()
                .all(|&(c, _)| Some(c) == next || g.node(c).is("Slice"))
    })
}

/// A Slice of `x` to `[lo, hi)` on `axis`.
fn add_slice(g: &mut Graph, x: Port, axis: usize, lo: i64, hi: i64, hint: &str) -> Port {
    let c = |g: &mut Graph, v: i64, what: &str| {
        let t = Tensor::vec_i64(vec![v]).to_proto("");
        Some(Port::new(g.add_const(&format!("{hint}_{what}"), t), 0))
    };
    let (s, e, a) = (
        c(g, lo, "start"),
        c(g, hi, "end"),
        c(g, axis as i64, "axis"),
    );
    Port::new(g.add_op("Slice", hint, &[Some(x), s, e, a], vec![], 1), 0)
}

fn rebuild(g: &mut Graph, n: NodeId, plan: &Plan) -> Port {
    let hint = match g.node(n).op().map(|op| op.name.as_str()) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => "slice_concat".to_string(),
    };
    let out_ty = g.ty(Port::new(n, 0)).cloned();
    let out_dims = out_ty.as_ref().and_then(TensorType::static_shape);
    let (lo, hi) = (plan.lo - plan.part_lo, plan.hi - plan.part_lo);
    let mut cur = if (lo, hi) == (0, plan.part_len) {
        plan.part
    } else {
        let p = add_slice(g, plan.part, plan.axis, lo, hi, &format!("{hint}_part"));
        let dt = g.ty(plan.part).map(|t| t.dtype);
        if let (Some(dt), Some(d)) = (dt, &out_dims) {
            g.value_mut(p).ty = Some(TensorType::new(dt, d));
        }
        p
    };
    for &(node, slot) in plan.chain.iter().rev() {
        let op = g.node(node).op().expect("op").clone();
        let rank = out_dims.as_ref().map_or(0, Vec::len);
        let mut ins = g.inputs(node);
        for (s, q) in ins.iter_mut().enumerate() {
            if s == slot {
                *q = Some(cur);
                continue;
            }
            let Some(qp) = *q else { continue };
            let qd = static_shape(g, qp).unwrap_or_default();
            if let Some(k) = (plan.axis + qd.len()).checked_sub(rank) {
                if qd.get(k).is_some_and(|&d| d != 1) {
                    // A constant the size of the output along the axis: sliced the same way
                    // (fold-constants computes it).
                    *q = Some(add_slice(
                        g,
                        qp,
                        k,
                        plan.lo,
                        plan.hi,
                        &format!("{hint}_operand"),
                    ));
                }
            }
        }
        let id = g.add_op(&op.op_type, &op.name, &ins, op.attrs.clone(), 1);
        let dt = g.ty(Port::new(node, 0)).map(|t| t.dtype);
        if let (Some(dt), Some(d)) = (dt, &out_dims) {
            g.node_mut(id).outputs[0].ty = Some(TensorType::new(dt, d));
        }
        cur = Port::new(id, 0);
    }
    cur
}
