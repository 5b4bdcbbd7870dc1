//! Shared matching helpers for the passes: the questions every pattern asks ("who produces
//! this, and is it an X?", "is this tensor read once?", "is it a constant scalar?") in one
//! place, so each rewrite reads as pattern -> replacement.
//!
//! Every helper answers `None` when the answer is "no" or "not known", so a pattern chains
//! them with `?` and a partial match simply does not fire.

use crate::ir::{Graph, NodeId, Port};
use crate::ops::accessors;
use crate::tensor::Tensor;

/// Constants above this many elements are never decoded for matching: patterns look at
/// shapes, axes and scalars, not at weights.
pub const SMALL_CONST: i64 = 1 << 20;

/// The node behind `p` if it is a standard-domain `op_type`.
pub fn producer_is(g: &Graph, p: Port, op_type: &str) -> Option<NodeId> {
    g.node(p.node).is(op_type).then_some(p.node)
}

/// The single operator reading `p` (and `p` is not a graph output).
pub fn single_consumer(g: &Graph, p: Port) -> Option<(NodeId, usize)> {
    if g.is_graph_output(p) {
        return None;
    }
    match g.consumers(p)[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// The single operator reading `p`, if it is a standard-domain `op_type`.
pub fn consumer_is(g: &Graph, p: Port, op_type: &str) -> Option<NodeId> {
    let (n, _) = single_consumer(g, p)?;
    g.node(n).is(op_type).then_some(n)
}

/// True if only `readers` read `p` and it is not a graph output: the intermediate tensors a
/// fusion removes must not be seen by anybody else.
pub fn used_only_by(g: &Graph, p: Port, readers: &[NodeId]) -> bool {
    !g.is_graph_output(p) && g.consumers(p).iter().all(|(c, _)| readers.contains(c))
}

/// The value of a small initializer or `Constant` node (a pass may run before
/// `fold-constants` has turned the nodes into initializers).
pub fn const_value(g: &Graph, p: Port) -> Option<Tensor> {
    let node = g.node(p.node);
    if node.is("Constant") {
        let op = node.op()?;
        let v = crate::ops::eval_op("Constant", &op.attrs, &[], g.opset()).ok()?;
        return v
            .into_iter()
            .next()
            .filter(|t| t.len() as i64 <= SMALL_CONST);
    }
    let t = g.const_tensor(p)?;
    let n = t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d))?;
    if !(0..=SMALL_CONST).contains(&n) {
        return None;
    }
    Tensor::from_proto(t).ok()
}

/// Integer contents of a small initializer (shapes, axes, indices).
pub fn const_ints(g: &Graph, p: Option<Port>) -> Option<Vec<i64>> {
    const_value(g, p?)?.as_i64_vec()
}

/// The one value every element of a numeric constant has (a scalar, or a splat).
pub fn const_splat(g: &Graph, p: Port) -> Option<f64> {
    let v = const_value(g, p)?.as_f64_vec()?;
    let first = *v.first()?;
    v.iter().all(|&x| x == first).then_some(first)
}

/// For a binary node, (the other input, the splat) when one side is a constant splat; the
/// constant may be on the left only for the commutative Add and Mul.
pub fn binary_with_splat(g: &Graph, n: NodeId) -> Option<(Port, f64)> {
    let (a, b) = (g.input(n, 0)?, g.input(n, 1)?);
    if let Some(v) = const_splat(g, b) {
        return Some((a, v));
    }
    if g.node(n).is("Add") || g.node(n).is("Mul") {
        return const_splat(g, a).map(|v| (b, v));
    }
    None
}

/// For a binary node reading `p`, which slot `p` is in and what the other operand is.
pub fn other_input(g: &Graph, n: NodeId, p: Port) -> Option<(usize, Port)> {
    let (a, b) = (g.input(n, 0)?, g.input(n, 1)?);
    if a == p {
        Some((0, b))
    } else if b == p {
        Some((1, a))
    } else {
        None
    }
}

/// True if both tensors have the same element type and the same fully known shape.
pub fn same_static_type(g: &Graph, a: Port, b: Port) -> bool {
    match (g.ty(a), g.ty(b)) {
        (Some(x), Some(y)) => {
            x.dtype == y.dtype && x.static_shape().is_some() && x.static_shape() == y.static_shape()
        }
        _ => false,
    }
}

/// The rank of `p`, if known.
pub fn rank(g: &Graph, p: Port) -> Option<usize> {
    g.ty(p)?.rank()
}

/// The axes of a Squeeze, Unsqueeze or Reduce* node wherever the model's opset keeps them: an
/// attribute before opset 13 (18 for the reductions other than ReduceSum), the second input
/// from then on. `Some(None)`: the node has no axes (all axes, or every size-1 axis).
pub fn axes_of(g: &Graph, n: NodeId) -> Option<Option<Vec<i64>>> {
    let op = g.node(n).op()?;
    if !crate::ir::is_onnx_domain(&op.domain) {
        return None;
    }
    let place = accessors::axes_place(&op.op_type, g.opset())?;
    accessors::ints_at(place, &op.attrs, |k| match g.input(n, k) {
        None => Some(None),
        Some(p) => Some(Some(const_ints(g, Some(p))?)),
    })
}

/// The axes of an Unsqueeze node (which always has them).
pub fn unsqueeze_axes(g: &Graph, n: NodeId) -> Option<Vec<i64>> {
    if !g.node(n).is("Unsqueeze") {
        return None;
    }
    axes_of(g, n)?
}
