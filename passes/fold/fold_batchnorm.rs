//! `fold-batchnorm`: frozen batch norm folded into the convolution before it.
//!
//!   BatchNormalization(Conv(x, W, b), γ, β, μ, σ²)  -> Conv(x, W·k, (b-μ)·k + β), k = γ/√(σ²+ε)
//!   Add(Mul(Conv(x, W, b), s), t)                   -> Conv(x, W·s, b·s + t)
//!   Mul(Conv(x, W, b), s) | Add(Conv(x, W, b), t)   -> the same with t = 0 or s = 1
//! where s and t are per-output-channel constants (DETR's FrozenBatchNorm2d exports as the
//! Mul/Add form). The Conv's output must have no other reader.

use ndarray::{ArrayD, IxDyn};

use crate::ir::{Graph, NodeId, Port};
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::{attrs, Tensor};

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
            folded += try_fold_chain(g, n);
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

/// The single reader of `p`, if it is an operator and `p` is not a graph output.
fn only_reader(g: &Graph, p: Port) -> Option<(NodeId, usize)> {
    if g.is_graph_output(p) {
        return None;
    }
    match g.consumers(p)[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// The scale/shift that node `user` applies per channel to its input at `slot`, if it is a
/// foldable BatchNormalization, Mul or Add by constants.
fn scale_shift(
    g: &Graph,
    user: NodeId,
    slot: usize,
    c: usize,
    rank: usize,
) -> Option<(Vec<f32>, Vec<f32>)> {
    let unode = g.node(user);
    let uins = g.inputs(user);
    let other = |s: usize| uins.get(1 - s).copied().flatten();
    if unode.is("BatchNormalization") {
        if slot != 0 || (1..unode.outputs.len()).any(|k| g.use_count(Port::new(user, k)) > 0) {
            return None;
        }
        let eps = attrs::float(&unode.op()?.attrs, "epsilon").unwrap_or(1e-5);
        let get = |i: usize| -> Option<Vec<f32>> {
            let v: Vec<f32> = f32_const(g, uins.get(i).copied().flatten())?
                .iter()
                .copied()
                .collect();
            (v.len() == c).then_some(v)
        };
        let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
        let k: Vec<f32> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
        let t: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * k[i]).collect();
        Some((k, t))
    } else if unode.is("Mul") && uins.len() == 2 {
        Some((
            per_channel(&f32_const(g, other(slot))?, c, rank)?,
            vec![0.0; c],
        ))
    } else if unode.is("Add") && uins.len() == 2 {
        Some((
            vec![1.0; c],
            per_channel(&f32_const(g, other(slot))?, c, rank)?,
        ))
    } else {
        None
    }
}

/// Folds the chain of scale/shift nodes after a Conv into its weights, in one pass over the
/// weight bytes (R50 has ~90 MB of conv weights; no intermediate copies).
fn try_fold_chain(g: &mut Graph, conv: NodeId) -> usize {
    let out = Port::new(conv, 0);
    let ins = g.inputs(conv);
    let Some(wp) = ins.get(1).copied().flatten() else {
        return 0;
    };
    let Some(wt) = g.const_tensor(wp) else {
        return 0;
    };
    if wt.data_type != Some(crate::ir::DType::F32.0) || wt.dims.len() < 2 {
        return 0;
    }
    // Buffers below are sized by the channel count; an empty weight (a dimension of 0, which
    // the loader allows next to any other dimension) has nothing to fold, and for a non-empty
    // one the channel count is bounded by the weight's actual bytes.
    let Ok(c) = usize::try_from(wt.dims[0]) else {
        return 0;
    };
    if c == 0 || wt.dims.contains(&0) {
        return 0;
    }
    let rank = wt.dims.len();
    let Some(out_ty) = g.ty(out).cloned() else {
        return 0;
    };
    let mut scale = vec![1f32; c];
    let mut shift = vec![0f32; c];
    let mut chain: Vec<NodeId> = Vec::new();
    let mut cur = out;
    while let Some((user, slot)) = only_reader(g, cur) {
        let Some((k, t)) = scale_shift(g, user, slot, c, rank) else {
            break;
        };
        // The result keeps the Conv's type only if the scale/shift does not broadcast it.
        if g.ty(Port::new(user, 0)) != Some(&out_ty) {
            break;
        }
        for i in 0..c {
            scale[i] *= k[i];
            shift[i] = shift[i] * k[i] + t[i];
        }
        chain.push(user);
        cur = Port::new(user, 0);
    }
    if chain.is_empty() {
        return 0;
    }
    let b: Vec<f32> = match ins.get(2).copied().flatten() {
        Some(p) => match f32_const(g, Some(p)) {
            Some(v) if v.len() == c => v.iter().copied().collect(),
            _ => return 0,
        },
        None => vec![0.0; c],
    };
    let Some(w2) = scaled_weights(g.const_tensor(wp).expect("checked"), &scale) else {
        return 0;
    };
    let b2: Vec<f32> = (0..c).map(|i| b[i] * scale[i] + shift[i]).collect();
    let base = g.node(conv).op().map_or(String::new(), |o| o.name.clone());
    let wc = g.add_const(&format!("{base}_folded_w"), w2);
    let bc = g.add_const(
        &format!("{base}_folded_b"),
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[c]), b2).expect("1-D")).to_proto(""),
    );
    if let Some(op) = g.node_mut(conv).op_mut() {
        op.num_inputs = op.num_inputs.max(3);
    }
    g.set_input(conv, 1, Some(Port::new(wc, 0)));
    g.set_input(conv, 2, Some(Port::new(bc, 0)));
    g.replace_all_uses(cur, out);
    for n in &chain {
        g.remove_node(*n);
    }
    chain.len()
}

/// W[c, ...] * scale[c], straight from the stored little-endian bytes to new ones.
fn scaled_weights(
    t: &crate::load::proto::TensorProto,
    scale: &[f32],
) -> Option<crate::load::proto::TensorProto> {
    let c = scale.len();
    let n: usize = t.dims.iter().product::<i64>() as usize;
    let per = n / c.max(1);
    let mut raw: Vec<u8> = Vec::with_capacity(n * 4);
    match &t.raw_data {
        Some(r) if r.len() == n * 4 => {
            for (i, chunk) in r.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes(chunk.try_into().expect("4 bytes")) * scale[i / per];
                raw.extend_from_slice(&v.to_le_bytes());
            }
        }
        None if t.float_data.len() == n => {
            for (i, v) in t.float_data.iter().enumerate() {
                raw.extend_from_slice(&(v * scale[i / per]).to_le_bytes());
            }
        }
        _ => return None,
    }
    Some(crate::load::proto::TensorProto {
        dims: t.dims.clone(),
        data_type: t.data_type,
        raw_data: Some(bytes::Bytes::from(raw)),
        ..Default::default()
    })
}
