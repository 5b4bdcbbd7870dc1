//! `fold-scale`: a constant scalar multiplying the output of a linear layer is folded into the
//! layer's weights. Attention scales the queries this way (q * d^-1/2), after moving them
//! through Reshape and Transpose, which commute with a scalar:
//!
//!   Mul(Transpose*(Reshape*(Add(MatMul(x, W), b))), c) -> Transpose*(Reshape*(Add(MatMul(x, W·c), b·c)))
//!
//! Every tensor on the way must have no other reader, so nothing else sees the scaled values.

use crate::ir::{Graph, NodeId, Port};
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::Tensor;

pub struct FoldScale;

impl Pass for FoldScale {
    fn name(&self) -> &'static str {
        "fold-scale"
    }
    fn about(&self) -> &'static str {
        "fold constant scalar Muls (attention scaling) into the preceding MatMul+Add weights"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let mut folded = 0;
        for n in g.topo_ops() {
            if g.contains(n) && g.node(n).is("Mul") && try_fold(g, n).is_some() {
                folded += 1;
            }
        }
        Ok(Outcome::changed(if folded > 0 {
            vec![format!("folded {folded} scalar scales into linear layers")]
        } else {
            vec![]
        }))
    }
}

/// A constant whose elements are all the same f32 value.
fn scalar(g: &Graph, p: Port) -> Option<f32> {
    match Tensor::from_proto(g.const_tensor(p)?).ok()? {
        Tensor::F32(a) => {
            let v = *a.iter().next()?;
            a.iter().all(|&x| x == v).then_some(v)
        }
        _ => None,
    }
}

fn f32_const(g: &Graph, p: Port) -> Option<ndarray::ArrayD<f32>> {
    match Tensor::from_proto(g.const_tensor(p)?).ok()? {
        Tensor::F32(a) => Some(a),
        _ => None,
    }
}

fn try_fold(g: &mut Graph, mul: NodeId) -> Option<()> {
    let ins = g.inputs(mul);
    let (x, c) = match (
        ins.first().copied().flatten(),
        ins.get(1).copied().flatten(),
    ) {
        (Some(a), Some(b)) if scalar(g, b).is_some() => (a, scalar(g, b)?),
        (Some(a), Some(b)) if scalar(g, a).is_some() => (b, scalar(g, a)?),
        _ => return None,
    };
    // The Mul must not broadcast: its output has the computed input's type.
    if g.ty(x) != g.ty(Port::new(mul, 0)) {
        return None;
    }
    let mut cur = x;
    for _ in 0..8 {
        if g.use_count(cur) != 1 || g.is_graph_output(cur) {
            return None;
        }
        let node = g.node(cur.node);
        if node.is("Reshape") || node.is("Transpose") {
            cur = g.input(cur.node, 0)?;
            continue;
        }
        if !node.is("Add") {
            return None;
        }
        let add = cur.node;
        let a_ins = g.inputs(add);
        let (mm, b) = match (
            a_ins.first().copied().flatten()?,
            a_ins.get(1).copied().flatten()?,
        ) {
            (p, q) if g.node(p.node).is("MatMul") && g.const_tensor(q).is_some() => (p, q),
            (q, p) if g.node(p.node).is("MatMul") && g.const_tensor(q).is_some() => (p, q),
            _ => return None,
        };
        if g.use_count(mm) != 1 {
            return None;
        }
        let w = g.input(mm.node, 1)?;
        let (wv, bv) = (f32_const(g, w)?, f32_const(g, b)?);
        let wc = g.add_const(
            "detrc_scaled_w",
            Tensor::F32(wv.mapv(|v| v * c)).to_proto(""),
        );
        let bc = g.add_const(
            "detrc_scaled_b",
            Tensor::F32(bv.mapv(|v| v * c)).to_proto(""),
        );
        g.set_input(mm.node, 1, Some(Port::new(wc, 0)));
        let bslot = if a_ins[0] == Some(b) { 0 } else { 1 };
        g.set_input(add, bslot, Some(Port::new(bc, 0)));
        g.replace_all_uses(Port::new(mul, 0), x);
        g.remove_node(mul);
        return Some(());
    }
    None
}
