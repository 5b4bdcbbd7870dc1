//! `fuse-layernorm`: exporters below opset 17 write LayerNorm out in elementwise ops; this pass
//! puts it back into one `LayerNormalization`. TensorRT keeps that node's statistics in fp32,
//! where the decomposed form overflows in fp16 (the squares of activations exceed 65504), and
//! it is seven to nine nodes fewer per norm.
//!
//!   mean = ReduceMean(x, axes=A)            A: the last k axes of x, keepdims
//!   d    = Sub(x, mean)
//!   var  = ReduceMean(Pow(d, 2) | Mul(d, d), axes=A)
//!   r    = Sqrt(Add(var, eps))
//!   n    = Div(d, r) | Mul(d, Reciprocal(r))
//!   y    = Add(Mul(n, gamma), beta)         gamma, beta: constants over A (each optional)
//!   ->
//!   y    = LayerNormalization(x, gamma, beta, axis=-k, epsilon=eps)
//!
//! Add and Mul operands may come in either order. No intermediate tensor may have a reader
//! outside the pattern. LayerNormalization needs opset 17: the model's opset import is raised
//! (`ir::opset::raise`, which says what it cannot raise) when there is something to fuse. A
//! norm over other than the last axes (channels-first LayerNorm) has no LayerNormalization
//! form and stays as it is; a chain that starts like a LayerNorm and then departs from it is
//! reported with the step where it does.

use std::collections::HashMap;

use crate::ir::{opset, DType, Dim, Graph, NodeId, Port};
use crate::ops::cast;
use crate::ops::eval_op;
use crate::pass::pattern::{
    axes_of, binary_with_splat, const_splat, const_value, consumer_is, other_input, rank,
    single_consumer, used_only_by,
};
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::{attrs, Tensor};

pub struct FuseLayerNorm;

impl Pass for FuseLayerNorm {
    fn name(&self) -> &'static str {
        "fuse-layernorm"
    }
    fn about(&self) -> &'static str {
        "decomposed LayerNorm (ReduceMean, Sub, Pow, Sqrt, Div, Mul, Add) -> LayerNormalization, raising the opset to 17 when needed"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let mut found = Vec::new();
        let mut partial = Vec::new();
        for n in g.topo_ops() {
            if !g.node(n).is("ReduceMean") {
                continue;
            }
            match match_layernorm(g, n) {
                Ok(m) => found.push(m),
                Err(Some(why)) => {
                    partial.push(format!("{}: {why}", g.node(n).display_name()));
                }
                Err(None) => {}
            }
        }
        if found.is_empty() {
            return Ok(if partial.is_empty() {
                Outcome::Unchanged
            } else {
                Outcome::NotApplicable(format!(
                    "left unchanged, not a LayerNorm: {}",
                    partial.join("; ")
                ))
            });
        }
        let mut lines = Vec::new();
        if g.opset() < 17 {
            match opset::raise(g, 17) {
                Ok(l) => lines.extend(l),
                Err(why) => {
                    return Ok(Outcome::NotApplicable(format!(
                        "{} decomposed LayerNorms left unchanged: {why}",
                        found.len()
                    )))
                }
            }
        }
        // Raising the opset only adds constants, so the matched ids are still the matched
        // nodes. Matched nodes are removed only after every fusion is wired: a removed slot
        // may be reused by the next fusion's new nodes.
        let fused = found.len();
        let mut replaced: HashMap<Port, Port> = HashMap::new();
        let mut dead = Vec::new();
        for m in found {
            let x = *replaced.get(&m.x).unwrap_or(&m.x);
            let ln = fuse(g, &m, x);
            replaced.insert(m.out, ln);
            dead.extend(m.nodes);
        }
        for n in dead {
            g.remove_node(n);
        }
        lines.push(format!("fused {fused} LayerNorms into LayerNormalization"));
        if !partial.is_empty() {
            lines.push(format!(
                "also left unchanged, not a LayerNorm: {}",
                partial.join("; ")
            ));
        }
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
    bias: Tensor,
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
/// LayerNormalization's scale and bias have.
fn per_feature(c: &Tensor, x_rank: usize, norm_shape: &[i64], dtype: DType) -> Option<Tensor> {
    let s = c.shape();
    let k = norm_shape.len();
    let lead = s.len().saturating_sub(k);
    if s.len() > x_rank || s[..lead].iter().any(|&d| d != 1) {
        return None;
    }
    let tail: Vec<i64> = s[lead..].iter().map(|&d| d as i64).collect();
    let c = cast(c, dtype).ok()?;
    let c = eval_op("Reshape", &[], &[Some(c), Some(Tensor::vec_i64(tail))], 17)
        .ok()?
        .pop()?;
    let full = eval_op(
        "Expand",
        &[],
        &[Some(c), Some(Tensor::vec_i64(norm_shape.to_vec()))],
        17,
    )
    .ok()?
    .pop()?;
    let want: Vec<usize> = norm_shape.iter().map(|&d| d as usize).collect();
    (full.shape() == want).then_some(full)
}

/// `Err(None)`: `mean1` does not start a LayerNorm. `Err(Some(why))`: the chain of a LayerNorm
/// starts at `mean1` (mean, centre, square, mean of squares) but departs from it.
fn match_layernorm(g: &Graph, mean1: NodeId) -> Result<Match, Option<String>> {
    let no = || None;
    let x = g.input(mean1, 0).ok_or_else(no)?;
    let r = rank(g, x).ok_or_else(no)?;
    let axes = axes_of(g, mean1).flatten().ok_or_else(no)?;
    if !keepdims(g, mean1) {
        return Err(None);
    }
    // d = Sub(x, mean)
    let (sub, 1) = single_consumer(g, Port::new(mean1, 0)).ok_or_else(no)? else {
        return Err(None);
    };
    if !g.node(sub).is("Sub") || g.input(sub, 0) != Some(x) {
        return Err(None);
    }
    let d = Port::new(sub, 0);
    // var = ReduceMean(Pow(d, 2) | Mul(d, d))
    let square = g
        .consumers(d)
        .iter()
        .map(|&(c, _)| c)
        .find(|&c| {
            let ins = (g.input(c, 0), g.input(c, 1));
            (g.node(c).is("Pow")
                && ins.0 == Some(d)
                && ins.1.and_then(|p| const_splat(g, p)) == Some(2.0))
                || (g.node(c).is("Mul") && ins == (Some(d), Some(d)))
        })
        .ok_or_else(no)?;
    let mean2 = consumer_is(g, Port::new(square, 0), "ReduceMean").ok_or_else(no)?;
    if axes_of(g, mean2).flatten() != Some(axes.clone()) || !keepdims(g, mean2) {
        return Err(None);
    }
    // From here on it is a variance computation: a departure is worth reporting.
    let why = |s: &str| Some(s.to_string());
    let axis = trailing_axes(&axes, r).ok_or_else(|| {
        why("it normalizes over axes that are not the last ones (no LayerNormalization form)")
    })?;
    let ty = g.ty(x).ok_or_else(no)?;
    let dtype = ty.dtype;
    if !matches!(dtype, DType::F32 | DType::F16 | DType::F64) {
        return Err(why("its input is not floating point"));
    }
    let norm_shape: Vec<i64> = ty.shape.as_ref().ok_or_else(no)?[r - (-axis) as usize..]
        .iter()
        .map(Dim::fixed)
        .collect::<Option<_>>()
        .ok_or_else(|| why("the normalized dimensions are not static"))?;
    let mut nodes = vec![mean1, sub, square, mean2];

    // r = Sqrt(Add(var, eps))
    let add_eps = consumer_is(g, Port::new(mean2, 0), "Add")
        .ok_or_else(|| why("the variance is not only read by an Add of epsilon"))?;
    let (var, eps) = binary_with_splat(g, add_eps)
        .filter(|(v, e)| *v == Port::new(mean2, 0) && (0.0..1.0).contains(e))
        .ok_or_else(|| why("the variance is not increased by a constant epsilon in [0, 1)"))?;
    let _ = var;
    let sqrt = consumer_is(g, Port::new(add_eps, 0), "Sqrt")
        .ok_or_else(|| why("variance + epsilon is not only read by a Sqrt"))?;
    nodes.extend([add_eps, sqrt]);

    // n = Div(d, r) | Mul(d, Reciprocal(r))
    let std = Port::new(sqrt, 0);
    let normed = if let Some(div) = consumer_is(g, std, "Div") {
        (g.input(div, 0) == Some(d) && g.input(div, 1) == Some(std))
            .then_some(div)
            .ok_or_else(|| why("the Div by the deviation does not divide x - mean"))?
    } else {
        let rec = consumer_is(g, std, "Reciprocal")
            .ok_or_else(|| why("the deviation is not only read by a Div or Reciprocal"))?;
        let mul = consumer_is(g, Port::new(rec, 0), "Mul")
            .filter(|&m| other_input(g, m, Port::new(rec, 0)).map(|o| o.1) == Some(d))
            .ok_or_else(|| why("1 / deviation does not multiply x - mean"))?;
        nodes.push(rec);
        mul
    };
    nodes.push(normed);
    if !used_only_by(g, d, &[square, normed]) || !used_only_by(g, Port::new(mean1, 0), &[sub]) {
        return Err(why("x - mean is read outside the norm"));
    }

    // y = Add(Mul(n, gamma), beta), each optional: a Mul or Add by anything else (a computed
    // modulation) stays after the fused node.
    let mut out = Port::new(normed, 0);
    let mut affine = |op: &str, out: &mut Port| -> Result<Option<Tensor>, Option<String>> {
        let Some(n) = consumer_is(g, *out, op) else {
            return Ok(None);
        };
        let Some(c) = other_input(g, n, *out).and_then(|(_, c)| const_value(g, c)) else {
            return Ok(None);
        };
        let Some(t) = per_feature(&c, r, &norm_shape, dtype) else {
            return Ok(None);
        };
        *out = Port::new(n, 0);
        nodes.push(n);
        Ok(Some(t))
    };
    let scale = affine("Mul", &mut out)?;
    let bias = affine("Add", &mut out)?;
    // Both written out when the export has none: tract's LayerNormalization wants all
    // three inputs, although the bias is optional in ONNX.
    let splat = |v: f32| {
        let t = Tensor::F32(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[]), v));
        per_feature(&t, r, &norm_shape, dtype)
    };
    let scale = match scale {
        Some(s) => s,
        None => splat(1.0).ok_or_else(no)?,
    };
    let bias = match bias {
        Some(b) => b,
        None => splat(0.0).ok_or_else(no)?,
    };
    // LayerNormalization's output has x's type; the replaced tensor must have it too.
    if let Some(t) = g.ty(out) {
        if t.dtype != dtype || t.rank() != Some(r) {
            return Err(why("the result is not of x's type"));
        }
    }
    Ok(Match {
        x,
        out,
        axis,
        eps: eps as f32,
        scale,
        bias,
        name: g
            .node(mean1)
            .op()
            .map(|o| o.name.clone())
            .unwrap_or_default(),
        nodes,
    })
}

/// Adds the fused node reading `x` and points the readers of the norm's result at it.
fn fuse(g: &mut Graph, m: &Match, x: Port) -> Port {
    let hint = match m.name.rsplit_once('/') {
        Some((scope, _)) if !scope.is_empty() => format!("{scope}/LayerNormalization"),
        _ => "layernorm".to_string(),
    };
    let scale = g.add_const(&format!("{hint}_scale"), m.scale.to_proto(""));
    let bias = g.add_const(&format!("{hint}_bias"), m.bias.to_proto(""));
    let ln = g.add_op(
        "LayerNormalization",
        &hint,
        &[Some(x), Some(Port::new(scale, 0)), Some(Port::new(bias, 0))],
        vec![
            attrs::make_int("axis", m.axis),
            attrs::make_float("epsilon", m.eps),
        ],
        1,
    );
    let out = Port::new(ln, 0);
    // The fused output has exactly x's type (the matched result's annotation may be missing
    // or less specific).
    g.value_mut(out).ty = g.ty(x).cloned();
    g.replace_all_uses(m.out, out);
    out
}
