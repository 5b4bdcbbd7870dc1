//! `fold-batchnorm`: frozen batch norm folded into the convolution before it.
//!
//!   BatchNormalization(Conv(x, W, b), γ, β, μ, σ²)  -> Conv(x, W·k, (b-μ)·k + β), k = γ/√(σ²+ε)
//!   Add(Mul(Conv(x, W, b), s), t)                   -> Conv(x, W·s, b·s + t)
//!   Mul(Conv(x, W, b), s) | Add(Conv(x, W, b), t)   -> the same with t = 0 or s = 1
//! where s and t are per-output-channel constants (DETR's FrozenBatchNorm2d exports as the
//! Mul/Add form). The Conv's output must have no other reader.

use ndarray::{ArrayD, Axis, IxDyn};

use crate::eval::{attrs, Tensor};
use crate::ir::{Graph, NodeId, Port};
use crate::pass::{Context, Outcome, Pass};

pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }
    fn about(&self) -> &'static str {
        "fold frozen batch norm (BatchNormalization or Mul/Add by constants) into Conv"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let mut folded = 0;
        for n in g.topo_ops() {
            if !g.contains(n) || !g.node(n).is("Conv") {
                continue;
            }
            while let Some(()) = try_fold_next(g, n) {
                folded += 1;
            }
        }
        Ok(Outcome::changed(if folded > 0 {
            vec![format!(
                "folded {folded} scale/shift nodes into Conv weights"
            )]
        } else {
            vec![]
        }))
    }
}

fn f32_const(g: &Graph, p: Option<Port>) -> Option<ArrayD<f32>> {
    match Tensor::from_proto(g.const_tensor(p?)?).ok()? {
        Tensor::F32(a) => Some(a),
        _ => None,
    }
}

/// A constant that broadcasts against [N, C, spatial...] along the channel axis only, as a
/// length-C vector.
fn per_channel(a: &ArrayD<f32>, c: usize, out_rank: usize) -> Option<Vec<f32>> {
    let s = a.shape();
    if s.len() > out_rank {
        return None;
    }
    let off = out_rank - s.len();
    let mut len = 1;
    for (i, &d) in s.iter().enumerate() {
        let axis = i + off;
        if axis == 1 {
            if d != c && d != 1 {
                return None;
            }
            len = d;
        } else if d != 1 {
            return None;
        }
    }
    let flat: Vec<f32> = a.iter().copied().collect();
    Some(if len == 1 { vec![flat[0]; c] } else { flat })
}

/// Folds the single reader of the Conv's output into it, if it is a foldable scale or shift.
fn try_fold_next(g: &mut Graph, conv: NodeId) -> Option<()> {
    let out = Port::new(conv, 0);
    if g.is_graph_output(out) {
        return None;
    }
    let users = g.consumers(out);
    let [(user, slot)] = users[..] else {
        return None;
    };
    let ins = g.inputs(conv);
    let w = f32_const(g, ins.get(1).copied().flatten())?;
    let c = *w.shape().first()?;
    let out_rank = w.ndim();
    let b: Vec<f32> = match ins.get(2).copied().flatten() {
        Some(p) => f32_const(g, Some(p))?.iter().copied().collect(),
        None => vec![0.0; c],
    };
    if b.len() != c {
        return None;
    }
    let unode = g.node(user);
    let uins = g.inputs(user);
    let other = |s: usize| uins.get(1 - s).copied().flatten();
    let (scale, shift): (Vec<f32>, Vec<f32>) = if unode.is("BatchNormalization") {
        if slot != 0
            || unode.outputs.len() > 1
                && (1..unode.outputs.len()).any(|k| g.use_count(Port::new(user, k)) > 0)
        {
            return None;
        }
        let eps = attrs::float(&unode.op()?.attrs, "epsilon").unwrap_or(1e-5);
        let get = |i: usize| -> Option<Vec<f32>> {
            per_channel(&f32_const(g, uins.get(i).copied().flatten())?, c, 1 + 1).or_else(|| {
                let v: Vec<f32> = f32_const(g, uins.get(i).copied().flatten())?
                    .iter()
                    .copied()
                    .collect();
                (v.len() == c).then_some(v)
            })
        };
        let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
        let k: Vec<f32> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
        let t: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * k[i]).collect();
        (k, t)
    } else if unode.is("Mul") && uins.len() == 2 {
        let s = per_channel(&f32_const(g, other(slot))?, c, out_rank)?;
        (s, vec![0.0; c])
    } else if unode.is("Add") && uins.len() == 2 {
        let t = per_channel(&f32_const(g, other(slot))?, c, out_rank)?;
        (vec![1.0; c], t)
    } else {
        return None;
    };
    if unode.outputs.is_empty() {
        return None;
    }
    // The result keeps the Conv's type only if the scale/shift does not broadcast it larger.
    if g.ty(Port::new(user, 0)).map(|t| t.static_shape()) != g.ty(out).map(|t| t.static_shape()) {
        return None;
    }
    let mut w2 = w.clone();
    for (i, mut sub) in w2.axis_iter_mut(Axis(0)).enumerate() {
        sub.mapv_inplace(|v| v * scale[i]);
    }
    let b2: Vec<f32> = (0..c).map(|i| b[i] * scale[i] + shift[i]).collect();
    let wname = format!(
        "{}_folded_w",
        g.node(conv).op().map_or("conv", |o| o.name.as_str())
    );
    let bname = format!(
        "{}_folded_b",
        g.node(conv).op().map_or("conv", |o| o.name.as_str())
    );
    let wc = g.add_const(&wname, Tensor::F32(w2).to_proto(""));
    let bc = g.add_const(
        &bname,
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[c]), b2).expect("1-D")).to_proto(""),
    );
    if let Some(op) = g.node_mut(conv).op_mut() {
        op.num_inputs = op.num_inputs.max(3);
    }
    g.set_input(conv, 1, Some(Port::new(wc, 0)));
    g.set_input(conv, 2, Some(Port::new(bc, 0)));
    g.replace_all_uses(Port::new(user, 0), out);
    g.remove_node(user);
    Some(())
}
