//! Moving a graph to a newer default-domain opset, for rewrites that need operators only a
//! newer opset has (FP8 Q/DQ: QuantizeLinear-19). Only the operators whose signature changed
//! incompatibly between the versions are rewritten; every other node means the same thing
//! under the newer opset.

use crate::eval::attrs;
use crate::eval::tensor::Tensor;
use crate::ir::{Graph, Port};

/// Reductions whose `axes` moved from an attribute to an input in opset 18 (ReduceSum did
/// so in 13).
const REDUCE_AXES_18: &[&str] = &[
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
];

/// Raises the default-domain opset from 13..=19 to `to` (at most 19). Returns one line per
/// kind of rewrite. Older models (Squeeze/Split/ReduceSum moved their axes in 13, Softmax
/// changed meaning) are refused: re-export them at opset 13 or later.
pub fn raise(g: &mut Graph, to: i64) -> Result<Vec<String>, String> {
    let from = g.opset();
    if from >= to {
        return Ok(Vec::new());
    }
    if from < 13 || to > 19 {
        return Err(format!(
            "cannot move the model from opset {from} to {to}: detrc raises opsets 13..=19 only \
             (re-export the model at opset 17)"
        ));
    }
    // Checked before anything changes, so a refusal leaves the graph as it was.
    if from < 16 {
        if let Some(n) = g.topo_ops().into_iter().find(|&n| g.node(n).is("RoiAlign")) {
            return Err(format!(
                "cannot move the model from opset {from} to {to}: RoiAlign '{}' changed its \
                 default coordinate transformation in opset 16 (re-export at opset 16 or later)",
                g.node(n).display_name()
            ));
        }
    }
    let mut reduces = 0;
    let mut splits = 0;
    for n in g.topo_ops() {
        let Some(op) = g.node(n).op() else { continue };
        if !crate::ir::is_onnx_domain(&op.domain) {
            continue;
        }
        let t = op.op_type.clone();
        let nouts = g.node(n).outputs.len();
        if from < 18 && to >= 18 && REDUCE_AXES_18.contains(&t.as_str()) {
            let Some(axes) = attrs::ints(&op.attrs, "axes") else {
                continue; // no axes: all of them, the same in 18
            };
            let name = format!("{}_axes", g.value(Port::new(n, 0)).name);
            let len = axes.len();
            let axes = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[len]), axes).expect("1-D");
            let c = g.add_const(&name, Tensor::I64(axes).to_proto(""));
            let op = g.node_mut(n).op_mut().expect("op");
            op.attrs.retain(|a| a.name.as_deref() != Some("axes"));
            op.num_inputs = 2;
            g.set_input(n, 1, Some(Port::new(c, 0)));
            reduces += 1;
        } else if from < 18 && to >= 18 && t == "Split" {
            // Split-18 needs `split` or `num_outputs`; Split-13 without `split` meant equal
            // parts, one per output.
            let has_split = g.input(n, 1).is_some();
            let op = g.node_mut(n).op_mut().expect("op");
            if !has_split && attrs::int(&op.attrs, "num_outputs").is_none() {
                op.attrs.push(attrs::make_int("num_outputs", nouts as i64));
                splits += 1;
            }
        }
    }
    for o in g.carry.model.opset_import.iter_mut() {
        if crate::ir::is_onnx_domain(o.domain.as_deref().unwrap_or("")) {
            o.version = Some(to);
        }
    }
    let mut lines = vec![format!("opset {from} -> {to}")];
    if reduces > 0 {
        lines.push(format!("{reduces} reductions take their axes as an input"));
    }
    if splits > 0 {
        lines.push(format!("{splits} Splits name their number of outputs"));
    }
    Ok(lines)
}
