//! Operators `to-fp16` keeps in fp32 because of what they compute, found by pattern: an
//! opset-12 layer norm, the box sigmoid, the float math behind integer indices.

use std::collections::HashSet;

use super::PASS_THROUGH;
use crate::ir::{DType, Graph, NodeId, Port};
use crate::tensor::attrs;

/// The producer of `p`, if it is an operator of `op_type`.
pub(super) fn producer_is(g: &Graph, p: Option<Port>, op_type: &str) -> Option<NodeId> {
    let p = p?;
    g.node(p.node).is(op_type).then_some(p.node)
}

/// Ops of `Div(Sub(x, ReduceMean(x)), Sqrt(Add(ReduceMean(Pow(Sub, 2)), eps)))`: the layer norm
/// that exporters emit for opsets without LayerNormalization.
pub fn layernorm_patterns(g: &Graph) -> Vec<NodeId> {
    let mut found = Vec::new();
    for div in g.topo_ops() {
        if !g.node(div).is("Div") {
            continue;
        }
        let Some(sub) = producer_is(g, g.input(div, 0), "Sub") else {
            continue;
        };
        let Some(mean1) = producer_is(g, g.input(sub, 1), "ReduceMean") else {
            continue;
        };
        if g.input(mean1, 0) != g.input(sub, 0) {
            continue;
        }
        let Some(sqrt) = producer_is(g, g.input(div, 1), "Sqrt") else {
            continue;
        };
        let Some(add) = producer_is(g, g.input(sqrt, 0), "Add") else {
            continue;
        };
        let mean2 = [0, 1]
            .into_iter()
            .find_map(|s| producer_is(g, g.input(add, s), "ReduceMean"));
        let Some(mean2) = mean2 else { continue };
        let Some(pow) = producer_is(g, g.input(mean2, 0), "Pow")
            .or_else(|| producer_is(g, g.input(mean2, 0), "Mul"))
        else {
            continue;
        };
        if g.input(pow, 0) != Some(Port::new(sub, 0)) {
            continue;
        }
        found.extend([mean1, sub, pow, mean2, add, sqrt, div]);
    }
    found
}

/// Sigmoids whose output reaches a graph output through data movement only (DETR's
/// `pred_boxes`): box coordinates are compared against fixed thresholds and image sizes, so
/// they keep full precision.
pub fn output_sigmoids(g: &Graph) -> Vec<NodeId> {
    let mut found = Vec::new();
    for n in g.topo_ops() {
        if !g.node(n).is("Sigmoid") {
            continue;
        }
        let mut stack = vec![Port::new(n, 0)];
        let mut seen = HashSet::new();
        let mut reaches = false;
        while let Some(p) = stack.pop() {
            if !seen.insert(p) {
                continue;
            }
            if g.is_graph_output(p) {
                reaches = true;
                break;
            }
            for (c, _) in g.consumers(p) {
                if PASS_THROUGH.iter().any(|t| g.node(c).is(t)) {
                    stack.extend((0..g.node(c).outputs.len()).map(|s| Port::new(c, s)));
                }
            }
        }
        if reaches {
            found.push(n);
        }
    }
    found
}

/// Float operators whose results become integer indices: the element-wise arithmetic and data
/// movement behind a Cast to an integer type (gridsample-gather's neighbour indices computed
/// from the sampling grid). fp16 holds integers exactly only up to 2048 and its spacing is 0.5
/// from 1024 on, so an index into a 64x64 feature map would already be wrong.
pub fn index_math(g: &Graph) -> Vec<NodeId> {
    use crate::ops::{rule, Axes};
    let mut found = HashSet::new();
    let mut stack: Vec<NodeId> = Vec::new();
    for n in g.topo_ops() {
        let Some(op) = g.node(n).op() else { continue };
        let to = attrs::int(&op.attrs, "to").map(|t| DType(t as i32));
        if op.op_type == "Cast" && to.is_some_and(|t| !t.is_float() && t != DType::BOOL) {
            stack.extend(g.input(n, 0).map(|p| p.node));
        }
    }
    while let Some(n) = stack.pop() {
        let node = g.node(n);
        let Some(op) = node.op() else { continue };
        let elementwise = rule(&op.op_type)
            .is_some_and(|r| matches!(r.axes, Axes::Elementwise | Axes::Broadcast));
        let moves = PASS_THROUGH.contains(&op.op_type.as_str());
        if !(elementwise || moves) || !found.insert(n) {
            continue;
        }
        stack.extend(g.inputs(n).into_iter().flatten().map(|p| p.node));
    }
    let mut v: Vec<NodeId> = found.into_iter().collect();
    v.sort();
    v
}
