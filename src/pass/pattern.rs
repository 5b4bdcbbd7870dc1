//! Shared matching helpers for the passes: the questions every pattern asks ("who produces
//! input i, and is it an X?", "is this tensor read once?", "is it a constant scalar?"), in one
//! place so that each rewrite reads as pattern -> replacement.
//!
//! Every helper answers `None` when the answer is "no" or "not known", so patterns chain with
//! `?` and a partial match simply does not fire.

use ndarray::ArrayD;

use crate::eval::{attrs, Tensor};
use crate::ir::{Graph, NodeId, Port, TensorType};

/// Constants above this many elements are never decoded for matching: patterns look at shapes,
/// axes and scalars, not at weights.
pub const SMALL_CONST: i64 = 1 << 20;

/// The producer of input `slot` of `n`.
pub fn input(g: &Graph, n: NodeId, slot: usize) -> Option<Port> {
    g.input(n, slot)
}

/// The node behind `p` if it is a standard-domain `op_type`.
pub fn producer_is(g: &Graph, p: Port, op_type: &str) -> Option<NodeId> {
    g.node(p.node).is(op_type).then_some(p.node)
}

/// The producer of input `slot` of `n`, if it is a standard-domain `op_type` read through its
/// first output.
pub fn input_is(g: &Graph, n: NodeId, slot: usize, op_type: &str) -> Option<NodeId> {
    let p = g.input(n, slot)?;
    (p.slot == 0).then_some(())?;
    producer_is(g, p, op_type)
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

/// True if only `readers` read `p` and it is not a graph output: the intermediate
/// tensors a fusion removes must not be seen by anybody else.
pub fn used_only_by(g: &Graph, p: Port, readers: &[NodeId]) -> bool {
    !g.is_graph_output(p) && g.consumers(p).iter().all(|(c, _)| readers.contains(c))
}

/// The value of a small initializer.
pub fn const_value(g: &Graph, p: Port) -> Option<Tensor> {
    let t = g.const_tensor(p)?;
    let n = t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d))?;
    if !(0..=SMALL_CONST).contains(&n) {
        return None;
    }
    Tensor::from_proto(t).ok()
}

/// The value of the small initializer feeding input `slot` of `n`.
pub fn input_value(g: &Graph, n: NodeId, slot: usize) -> Option<Tensor> {
    const_value(g, g.input(n, slot)?)
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

/// The f32 contents of an initializer of any size (weights).
pub fn f32_const(g: &Graph, p: Option<Port>) -> Option<ArrayD<f32>> {
    match Tensor::from_proto(g.const_tensor(p?)?).ok()? {
        Tensor::F32(a) => Some(a),
        _ => None,
    }
}

/// For a commutative binary node, (the other input, the constant splat) when one side is a
/// constant splat; the non-constant side comes first.
pub fn binary_with_splat(g: &Graph, n: NodeId) -> Option<(Port, f64)> {
    let (a, b) = (g.input(n, 0)?, g.input(n, 1)?);
    if let Some(v) = const_splat(g, b) {
        return Some((a, v));
    }
    let commutes = g.node(n).is("Add") || g.node(n).is("Mul");
    if commutes {
        return const_splat(g, a).map(|v| (b, v));
    }
    None
}

/// For a binary node, which input slot is `p` and which port is the other one.
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

/// The fully known shape of `p`.
pub fn static_shape(g: &Graph, p: Port) -> Option<Vec<i64>> {
    g.ty(p)?.static_shape()
}

/// The rank of `p`, if known.
pub fn rank(g: &Graph, p: Port) -> Option<usize> {
    g.ty(p)?.rank()
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

/// True if both tensors have the same element type and equal shapes, symbolic dimensions
/// compared by name (`batch` equals `batch`; unknown dimensions never compare equal).
pub fn same_type(g: &Graph, a: Port, b: Port) -> bool {
    match (g.ty(a), g.ty(b)) {
        (Some(x), Some(y)) => same_tensor_type(x, y),
        _ => false,
    }
}

pub fn same_tensor_type(x: &TensorType, y: &TensorType) -> bool {
    use crate::ir::Dim;
    x.dtype == y.dtype
        && match (&x.shape, &y.shape) {
            (Some(a), Some(b)) => {
                a.len() == b.len()
                    && a.iter().zip(b).all(|(p, q)| match (p, q) {
                        (Dim::Fixed(u), Dim::Fixed(v)) => u == v,
                        (Dim::Param(u), Dim::Param(v)) => u == v,
                        _ => false,
                    })
            }
            _ => false,
        }
}

/// The axes of a Squeeze, Unsqueeze or Reduce* node, wherever the model's opset keeps them
/// (an attribute before opset 13, or 18 for the Reduce ops other than ReduceSum; the second
/// input after). `Some(None)`: the node has no axes (all axes, or every size-1 axis).
pub fn axes_of(g: &Graph, n: NodeId) -> Option<Option<Vec<i64>>> {
    let node = g.node(n);
    let op = node.op()?;
    let opset = g.opset();
    let from_input = match op.op_type.as_str() {
        "Squeeze" | "Unsqueeze" | "ReduceSum" => opset >= 13,
        t if t.starts_with("Reduce") => opset >= 18,
        _ => return None,
    };
    if from_input {
        match g.input(n, 1) {
            None => Some(None),
            Some(p) => Some(Some(const_ints(g, Some(p))?)),
        }
    } else {
        Some(attrs::ints(&op.attrs, "axes"))
    }
}

/// True if every output but the first is unread.
pub fn only_first_output_used(g: &Graph, n: NodeId) -> bool {
    (1..g.node(n).outputs.len()).all(|s| g.use_count(Port::new(n, s)) == 0)
}
