//! `fuse-matmul`: linear layers that read the same tensor become one wider layer.
//!
//!   Add(MatMul(x, W1), b1), ..., Add(MatMul(x, Wn), bn)
//!     -> Split(Add(MatMul(x, [W1 .. Wn]), [b1 .. bn]), [N1 .. Nn])
//!
//! In DETR this merges the query and key projections of every self-attention (both read
//! src + pos) and the key (and value) projections of the six decoder layers' cross-attention,
//! which all read the encoder memory: 2n nodes become 3, and one wide GEMM replaces n narrow
//! ones.

use std::collections::BTreeMap;

use ndarray::{concatenate, ArrayD, Axis};

use crate::ir::{DType, Graph, NodeId, Port, TensorType};
use crate::ops::accessors::{self, Place};
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::{attrs, Tensor};

pub struct FuseMatMul;

struct Linear {
    mm: NodeId,
    add: NodeId,
    w: ArrayD<f32>,
    b: ArrayD<f32>,
}

impl Pass for FuseMatMul {
    fn name(&self) -> &'static str {
        "fuse-matmul"
    }
    fn about(&self) -> &'static str {
        "merge MatMul+Add layers that read the same tensor into one wider layer and a Split"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        // Group linear layers by the tensor they read, in a deterministic order.
        // Cheap structural grouping first; weights are decoded only for groups of two or more.
        let mut candidates: BTreeMap<(u64, usize), Vec<NodeId>> = BTreeMap::new();
        for n in g.topo_ops() {
            if let Some(x) = linear_shape(g, n) {
                candidates
                    .entry((g.node(x.node).seq, x.slot))
                    .or_default()
                    .push(n);
            }
        }
        let mut groups: BTreeMap<(u64, usize), Vec<Linear>> = BTreeMap::new();
        for (key, ns) in candidates.into_iter().filter(|(_, v)| v.len() > 1) {
            let lins: Vec<Linear> = ns
                .into_iter()
                .filter_map(|n| linear(g, n).map(|(_, l)| l))
                .collect();
            groups.insert(key, lins);
        }
        let (mut fused, mut layers) = (0, 0);
        for ((_, _), group) in groups {
            if group.len() < 2 {
                continue;
            }
            let x = g.input(group[0].mm, 0).ok_or("lost input")?;
            let k = group[0].w.shape()[0];
            if group.iter().any(|l| l.w.shape()[0] != k) {
                continue;
            }
            let ws: Vec<_> = group.iter().map(|l| l.w.view()).collect();
            let bs: Vec<_> = group.iter().map(|l| l.b.view()).collect();
            let (Ok(w), Ok(b)) = (concatenate(Axis(1), &ws), concatenate(Axis(0), &bs)) else {
                continue;
            };
            let sizes: Vec<i64> = group.iter().map(|l| l.w.shape()[1] as i64).collect();
            let total: i64 = sizes.iter().sum();
            let wc = g.add_const("detrc_fused_w", Tensor::F32(w).to_proto(""));
            let bc = g.add_const("detrc_fused_b", Tensor::F32(b).to_proto(""));
            let mm = g.add_op(
                "MatMul",
                "detrc_fused_matmul",
                &[Some(x), Some(Port::new(wc, 0))],
                vec![],
                1,
            );
            let add = g.add_op(
                "Add",
                "detrc_fused_bias",
                &[Some(Port::new(mm, 0)), Some(Port::new(bc, 0))],
                vec![],
                1,
            );
            let mut out_dims = g.ty(x).and_then(TensorType::static_shape).ok_or("shape")?;
            let last = out_dims.len() - 1;
            out_dims[last] = total;
            for id in [mm, add] {
                g.node_mut(id).outputs[0].ty = Some(TensorType::new(DType::F32, &out_dims));
            }
            let axis_attr = attrs::make_int("axis", -1);
            // Split sizes are an input from opset 13 on, an attribute before.
            let split = if accessors::split_place(g.opset()) == Place::Input(1) {
                let s = g.add_const(
                    "detrc_split_sizes",
                    Tensor::vec_i64(sizes.clone()).to_proto(""),
                );
                g.add_op(
                    "Split",
                    "detrc_fused_split",
                    &[Some(Port::new(add, 0)), Some(Port::new(s, 0))],
                    vec![axis_attr],
                    group.len(),
                )
            } else {
                g.add_op(
                    "Split",
                    "detrc_fused_split",
                    &[Some(Port::new(add, 0))],
                    vec![axis_attr, attrs::make_ints("split", sizes.clone())],
                    group.len(),
                )
            };
            for (i, l) in group.iter().enumerate() {
                let ty = g.ty(Port::new(l.add, 0)).cloned();
                g.node_mut(split).outputs[i].ty = ty;
                g.replace_all_uses(Port::new(l.add, 0), Port::new(split, i));
                g.remove_node(l.add);
                g.remove_node(l.mm);
            }
            fused += 1;
            layers += group.len();
        }
        Ok(Outcome::changed(if fused > 0 {
            vec![format!(
                "merged {layers} linear layers into {fused} wider ones"
            )]
        } else {
            vec![]
        }))
    }
}

/// The input of MatMul `n` if it could be a fusable linear layer (no weights decoded).
fn linear_shape(g: &Graph, n: NodeId) -> Option<Port> {
    if !g.node(n).is("MatMul") {
        return None;
    }
    let x = g.input(n, 0)?;
    let w = g.const_tensor(g.input(n, 1)?)?;
    if w.dims.len() != 2 || w.data_type != Some(DType::F32.0) || g.const_tensor(x).is_some() {
        return None;
    }
    let users = g.consumers(Port::new(n, 0));
    matches!(users[..], [(a, _)] if g.node(a).is("Add")).then_some(x)
}

/// `Add(MatMul(x, W), b)` rooted at MatMul `n`, with 2-D f32 `W`, 1-D `b` of W's width, and
/// the MatMul read only by the Add. Returns `x` and the layer.
fn linear(g: &Graph, n: NodeId) -> Option<(Port, Linear)> {
    if !g.node(n).is("MatMul") {
        return None;
    }
    let x = g.input(n, 0)?;
    // The fused output's type is x's with the last dimension widened, so x needs one (a
    // scalar x is a malformed MatMul).
    if g.const_tensor(x).is_some() || g.ty(x)?.static_shape().is_none_or(|s| s.is_empty()) {
        return None;
    }
    let out = Port::new(n, 0);
    let users = g.consumers(out);
    let [(add, _)] = users[..] else { return None };
    if g.is_graph_output(out) || !g.node(add).is("Add") {
        return None;
    }
    let a_ins = g.inputs(add);
    let b = a_ins.iter().flatten().find(|p| **p != out)?;
    let f32c = |p: Port| match Tensor::from_proto(g.const_tensor(p)?).ok()? {
        Tensor::F32(a) => Some(a),
        _ => None,
    };
    let w = f32c(g.input(n, 1)?)?;
    let bv = f32c(*b)?;
    if w.ndim() != 2 || bv.ndim() != 1 || bv.len() != w.shape()[1] {
        return None;
    }
    // The fused Add keeps the layer's output type only if the bias did not broadcast it.
    if g.ty(Port::new(add, 0)) != g.ty(out) {
        return None;
    }
    Some((
        x,
        Linear {
            mm: n,
            add,
            w,
            b: bv,
        },
    ))
}
