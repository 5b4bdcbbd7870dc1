//! `fuse-layernorm`: below opset 17 exporters write LayerNorm out in elementwise ops; this pass
//! puts it back into one `LayerNormalization`, the form TensorRT keeps in fp32 (the decomposed
//! form overflows in fp16: the squares of activations exceed 65504).
//!
//!   mean = ReduceMean(x, axes=A)            A: the last k axes of x
//!   d    = Sub(x, mean)
//!   var  = ReduceMean(Pow(d, 2) | Mul(d, d), axes=A)
//!   r    = Sqrt(Add(var, eps))
//!   n    = Div(d, r) | Mul(d, Reciprocal(r))
//!   y    = Add(Mul(n, gamma), beta)         gamma, beta: constants over A (each optional)
//!   ->
//!   y    = LayerNormalization(x, gamma, beta, axis=-k, epsilon=eps)
//!
//! Both operands of Add and Mul may come in either order. Every intermediate tensor must have
//! no reader outside the pattern. LayerNormalization needs opset 17: the model's opset import
//! is raised (see `ir::opset` for what that checks) when there is something to fuse; a model
//! that cannot be raised keeps its decomposed norms and the report says why.

use crate::eval::ops::cast;
use crate::eval::{attrs, eval_op, Tensor};
use crate::ir::{opset, DType, Dim, Graph, NodeId, Port};
use crate::pass::pattern::{
    axes_of, binary_with_splat, const_splat, const_value, consumer_is, other_input, rank,
    single_consumer, used_only_by,
};
use crate::pass::{Context, Outcome, Pass};

pub struct FuseLayerNorm;

impl Pass for FuseLayerNorm {
    fn name(&self) -> &'static str {
        "fuse-layernorm"
    }
    fn about(&self) -> &'static str {
        "decomposed LayerNorm (ReduceMean, Sub, Pow, Sqrt, Div, Mul, Add) -> LayerNormalization"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let found: Vec<Match> = g
            .topo_ops()
            .into_iter()
            .filter(|&n| g.node(n).is("ReduceMean"))
            .filter_map(|n| match_layernorm(g, n))
            .collect();
        if found.is_empty() {
            return Ok(Outcome::Unchanged);
        }
        let mut lines = Vec::new();
        if g.opset() < 17 {
            match opset::raise(g, 17) {
                Ok(l) => lines.extend(l),
                Err(why) => {
                    return Ok(Outcome::NotApplicable(format!(
                        "{} decomposed LayerNorms left: the opset cannot be raised to 17: {why}",
                        found.len()
                    )))
                }
            }
        }
        // Raising the opset adds constants but never removes or rewires the matched nodes,
        // so the matches stay valid; each fusion only removes its own nodes.
        let n = found.len();
        for m in found {
            replace(g, m);
        }
        lines.push(format!("fused {n} LayerNorms"));
        Ok(Outcome::Changed(lines))
    }
}

struct Match {
    x: Port,
    /// The tensor the fused node replaces.
    out: Port,
    /// First normalized axis, counted from the end (-k).
    axis: i64,
    eps: f32,
    scale: Tensor,
    bias: Option<Tensor>,
    name: String,
    /// The matched operators, removed once the fused node has taken over.
    nodes: Vec<NodeId>,
}

/// The normalized axes as `-k` if they are exactly the last k axes of a rank-r tensor.
fn trailing_axes(axes: &[i64], r: usize) -> Option<i64> {
    let mut norm: Vec<usize> = axes
        .iter()
        .map(|&a| attrs::axis(a, r))
        .collect::<Option<_>>()?;
    norm.sort_unstable();
    norm.dedup();
    let k = norm.len();
    (k > 0 && norm == (r - k..r).collect::<Vec<_>>()).then_some(-(k as i64))
}

fn keepdims(g: &Graph, n: NodeId) -> bool {
    g.node(n)
        .op()
        .is_some_and(|o| attrs::int_or(&o.attrs, "keepdims", 1) != 0)
}

/// A constant that an elementwise op applies along the normalized axes only (right-aligned
/// against x, 1 on every axis before them), broadcast to exactly `norm_shape`: the form
/// LayerNormalization's scale and bias must have.
fn per_feature(c: &Tensor, x_rank: usize, norm_shape: &[i64], dtype: DType) -> Option<Tensor> {
    let s = c.shape();
    let k = norm_shape.len();
    if s.len() > x_rank || s[..s.len().saturating_sub(k)].iter().any(|&d| d != 1) {
        return None;
    }
    let tail: Vec<i64> = s[s.len().saturating_sub(k)..]
        .iter()
        .map(|&d| d as i64)
        .collect();
    let c = cast(c, dtype).ok()?;
    let c = eval_op("Reshape", &[], &[Some(c), Some(Tensor::vec_i64(tail))], 17).ok()?;
    let full = eval_op(
        "Expand",
        &[],
        &[
            c.into_iter().next(),
            Some(Tensor::vec_i64(norm_shape.to_vec())),
        ],
        17,
    )
    .ok()?
    .remove(0);
    let want: Vec<usize> = norm_shape.iter().map(|&d| d as usize).collect();
    (full.shape() == want).then_some(full)
}

/// A tensor of `shape` filled with ones of `dtype` (the scale of a norm without gamma).
fn ones(shape: &[i64], dtype: DType) -> Option<Tensor> {
    let one = Tensor::F32(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[]), 1.0));
    per_feature(&one, shape.len(), shape, dtype)
}

fn match_layernorm(g: &Graph, mean1: NodeId) -> Option<Match> {
    let x = g.input(mean1, 0)?;
    let r = rank(g, x)?;
    let axis = trailing_axes(&axes_of(g, mean1)??, r)?;
    let dtype = g.ty(x)?.dtype;
    if !keepdims(g, mean1) || !matches!(dtype, DType::F32 | DType::F16 | DType::F64) {
        return None;
    }
    let norm_shape: Vec<i64> = g.ty(x)?.shape.as_ref()?[r - (-axis) as usize..]
        .iter()
        .map(Dim::fixed)
        .collect::<Option<_>>()?;
    let mut nodes = vec![mean1];

    // d = Sub(x, mean)
    let (sub, 1) = single_consumer(g, Port::new(mean1, 0))? else {
        return None;
    };
    (g.node(sub).is("Sub") && g.input(sub, 0)? == x).then_some(())?;
    let d = Port::new(sub, 0);
    nodes.push(sub);

    // var = ReduceMean(Pow(d, 2) | Mul(d, d)) over the same axes
    let readers: Vec<NodeId> = g.consumers(d).iter().map(|&(c, _)| c).collect();
    let square = readers.iter().copied().find(|&c| {
        let ins = (g.input(c, 0), g.input(c, 1));
        (g.node(c).is("Pow")
            && ins.0 == Some(d)
            && ins.1.and_then(|p| const_splat(g, p)) == Some(2.0))
            || (g.node(c).is("Mul") && ins == (Some(d), Some(d)))
    })?;
    let mean2 = consumer_is(g, Port::new(square, 0), "ReduceMean")?;
    (keepdims(g, mean2) && trailing_axes(&axes_of(g, mean2)??, r)? == axis).then_some(())?;
    nodes.extend([square, mean2]);

    // r = Sqrt(Add(var, eps))
    let add_eps = consumer_is(g, Port::new(mean2, 0), "Add")?;
    let (var, eps) = binary_with_splat(g, add_eps)?;
    (var == Port::new(mean2, 0) && (0.0..1.0).contains(&eps)).then_some(())?;
    let sqrt = consumer_is(g, Port::new(add_eps, 0), "Sqrt")?;
    nodes.extend([add_eps, sqrt]);

    // n = Div(d, r) | Mul(d, Reciprocal(r))
    let normed = if let Some(div) = consumer_is(g, Port::new(sqrt, 0), "Div") {
        (g.input(div, 0)? == d && g.input(div, 1)? == Port::new(sqrt, 0)).then_some(div)?
    } else {
        let rec = consumer_is(g, Port::new(sqrt, 0), "Reciprocal")?;
        let mul = consumer_is(g, Port::new(rec, 0), "Mul")?;
        nodes.push(rec);
        (other_input(g, mul, Port::new(rec, 0))?.1 == d).then_some(mul)?
    };
    nodes.push(normed);
    used_only_by(g, d, &[square, normed]).then_some(())?;

    // y = Add(Mul(n, gamma), beta), each optional
    let mut out = Port::new(normed, 0);
    let mut affine = |op: &str, out: &mut Port| -> Option<Option<Tensor>> {
        let Some(n) = consumer_is(g, *out, op) else {
            return Some(None);
        };
        let Some(c) = other_input(g, n, *out).and_then(|(_, c)| const_value(g, c)) else {
            return Some(None);
        };
        let t = per_feature(&c, r, &norm_shape, dtype)?;
        *out = Port::new(n, 0);
        nodes.push(n);
        Some(Some(t))
    };
    let scale = affine("Mul", &mut out)?;
    let bias = affine("Add", &mut out)?;
    // The result must have x's rank: a gamma that broadcasts x up is not a LayerNorm.
    (g.ty(out)?.rank()? == r).then_some(())?;
    Some(Match {
        x,
        out,
        axis,
        eps: eps as f32,
        scale: match scale {
            Some(s) => s,
            None => ones(&norm_shape, dtype)?,
        },
        bias,
        name: g.node(mean1).op()?.name.clone(),
        nodes,
    })
}

fn replace(g: &mut Graph, m: Match) {
    let hint = if m.name.is_empty() {
        "layernorm".to_string()
    } else {
        format!("{}_layernorm", m.name.trim_end_matches("/ReduceMean"))
    };
    let scale = g.add_const(&format!("{hint}_scale"), m.scale.to_proto(""));
    let bias = m
        .bias
        .map(|b| Port::new(g.add_const(&format!("{hint}_bias"), b.to_proto("")), 0));
    let ln = g.add_op(
        "LayerNormalization",
        &hint,
        &[Some(m.x), Some(Port::new(scale, 0)), bias],
        vec![
            attrs::make_int("axis", m.axis),
            attrs::make_float("epsilon", m.eps),
        ],
        1,
    );
    g.value_mut(Port::new(ln, 0)).ty = g.ty(m.out).cloned();
    g.replace_all_uses(m.out, Port::new(ln, 0));
    for n in m.nodes {
        g.remove_node(n);
    }
}
