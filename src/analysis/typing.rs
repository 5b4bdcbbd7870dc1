//! Typing: the element type and shape of each tensor, from the graph inputs forward. One
//! engine, used by the `infer-shapes` pass, by `fold-constants` before it looks at a node, by
//! the batch route and by `detrc run`'s decode probe.
//!
//! Where a shape depends on a tensor's value (Reshape targets, Slice bounds, Expand shapes…)
//! that value must be a constant, so typing and constant folding feed each other until both
//! reach a fixed point.

use crate::ir::{DType, Dim, Graph, NodeId, NodeKind, Port, TensorType};
use crate::ops;

use crate::tensor::Tensor;

/// Types the outputs of one node from its inputs, by the rules of [`infer`] and, for what
/// they leave unknown, from static input shapes ([`type_unruled`]); returns how many values
/// learned more. `fold-constants` calls it on each node just before looking at it, so one
/// sweep folds the Shape arithmetic behind a chain of such operators (D-FINE's decoder layers
/// each had to wait for the next pipeline round otherwise).
pub fn infer_node(g: &mut Graph, n: NodeId) -> usize {
    infer_by_rule(g, n) + type_unruled_node(g, n)
}

fn infer_by_rule(g: &mut Graph, n: NodeId) -> usize {
    let opset = g.opset();
    let (tys, vals) = known_inputs(g, n);
    let node = g.node(n);
    let Some(op) = node.op() else { return 0 };
    if !crate::ir::is_onnx_domain(&op.domain) {
        return 0;
    }
    let cx = ops::InferCx {
        op: &op.op_type,
        at: &op.attrs,
        tys: &tys,
        vals: &vals,
        opset,
    };
    let Some(out) = ops::infer(&cx) else {
        return 0;
    };
    let nouts = node.outputs.len();
    let mut updated = 0;
    for (slot, ty) in out.into_iter().enumerate().take(nouts) {
        let Some(ty) = ty else { continue };
        // A rule fed by a corrupt constant (a Reshape to [-5], a ConstantOfShape of 2^62) must
        // not record a shape no tensor can have: the IR keeps every shape within MAX_ELEMENTS.
        if ty.check_dims().is_err() {
            continue;
        }
        let v = g.value_mut(Port::new(n, slot));
        if v.name.is_empty() {
            continue;
        }
        if more_specific(&ty, v.ty.as_ref()) {
            v.ty = Some(ty);
            updated += 1;
        }
    }
    updated
}

/// What typing knows of a node's inputs: their types, and the values of the small constants.
fn known_inputs(g: &Graph, n: NodeId) -> (Vec<Option<TensorType>>, Vec<Option<Tensor>>) {
    let ins = g.inputs(n);
    let tys = ins
        .iter()
        .map(|p| p.and_then(|p| g.ty(p).cloned()))
        .collect();
    let vals = ins.iter().map(|p| small_const(g, *p)).collect();
    (tys, vals)
}

/// Types every node in topological order, once (no folding); returns how many values learned
/// more.
pub fn type_all(g: &mut Graph) -> usize {
    g.topo_ops().into_iter().map(|n| infer_node(g, n)).sum()
}

/// Small constants are read for shape computations; large weights never are.
pub fn small_const(g: &Graph, p: Option<Port>) -> Option<Tensor> {
    let p = p?;
    let t = g.const_tensor(p)?;
    let n = t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d))?;
    if !(0..=4096).contains(&n) {
        return None;
    }
    Tensor::from_proto(t).ok()
}

fn known_dims(t: &TensorType) -> usize {
    t.shape.as_ref().map_or(0, |s| {
        1 + s.iter().filter(|d| matches!(d, Dim::Fixed(_))).count()
    })
}

/// Replace the recorded type only with one that knows more; never contradict a declared type
/// with a guess.
fn more_specific(new: &TensorType, old: Option<&TensorType>) -> bool {
    match old {
        None => true,
        Some(o) if o.dtype == DType::UNDEFINED => true,
        Some(o) if o.dtype != new.dtype => false,
        Some(o) => known_dims(new) > known_dims(o),
    }
}

/// True if the node is an operator whose output type is fully static.
pub fn is_static(g: &Graph, p: Port) -> bool {
    matches!(
        g.node(p.node).kind,
        NodeKind::Op(_) | NodeKind::Input(_) | NodeKind::Const { .. }
    ) && g.ty(p).and_then(TensorType::static_shape).is_some()
}

/// Static output shapes for operators the rules of [`infer`] do not cover (deformable
/// attention's GridSample, a MatMul with a vector operand, ScatterND/GatherElements, TopK,
/// Einsum, shape-keeping unary ops): typed from their inputs' static shapes only, never from
/// values. A shape known here lets the `Shape` arithmetic behind such an operator fold (the
/// transformers Deformable DETR, DAB-DETR, RT-DETR and D-FINE exports compute their sampling
/// grids, anchors and position embeddings that way); the batch analysis of generalize-batch
/// needs the same shapes. Returns how many outputs it typed.
pub fn type_unruled(g: &mut Graph) -> usize {
    // A declared type without a static shape (a graph output's `f32[?]`) counts as none.
    let known = |v: &crate::ir::Value| v.ty.as_ref().is_some_and(|t| t.static_shape().is_some());
    let mut typed = 0;
    for n in g.topo_ops() {
        let before = g.node(n).outputs.iter().filter(|v| known(v)).count();
        infer_node(g, n);
        let after = g.node(n).outputs.iter().filter(|v| known(v)).count();
        typed += after.saturating_sub(before);
    }
    typed
}

/// The static-shape rules of [`type_unruled`] for one node ([`ops::infer_static`]); returns
/// how many outputs it typed.
fn type_unruled_node(g: &mut Graph, n: NodeId) -> usize {
    let known = |v: &crate::ir::Value| v.ty.as_ref().is_some_and(|t| t.static_shape().is_some());
    let node = g.node(n);
    if node.outputs.iter().all(known) {
        return 0;
    }
    let Some(op) = node.op() else { return 0 };
    let (tys, vals) = known_inputs(g, n);
    let cx = ops::InferCx {
        op: &op.op_type,
        at: &op.attrs,
        tys: &tys,
        vals: &vals,
        opset: g.opset(),
    };
    let Some(outs) = ops::infer_static(&cx) else {
        return 0;
    };
    let mut typed = 0;
    for (slot, ty) in outs.into_iter().enumerate() {
        if slot < g.node(n).outputs.len() && !known(&g.node(n).outputs[slot]) {
            if let Some(ty) = ty {
                typed += 1;
                g.value_mut(Port::new(n, slot)).ty = Some(ty);
            }
        }
    }
    typed
}
