//! Batch facts: which graph inputs carry the batch, its static size, whether it is already
//! symbolic. Read by the batch route of the driver and by `generalize-batch`.

use crate::ir::{Graph, NodeId, TensorType};

/// Name of the symbolic batch dimension written into inputs and outputs.
pub const BATCH_PARAM: &str = "batch";

/// The graph inputs the batch is read from: every non-initializer input of rank >= 1.
pub fn batch_inputs(g: &Graph) -> Vec<NodeId> {
    g.graph_inputs()
        .into_iter()
        .filter(|&n| {
            g.node(n).outputs[0]
                .ty
                .as_ref()
                .and_then(TensorType::rank)
                .is_some_and(|r| r >= 1)
        })
        .collect()
}

/// Every batch input has a named symbolic batch (what `generalize-batch` leaves).
pub fn already_symbolic(g: &Graph) -> bool {
    let inputs = batch_inputs(g);
    !inputs.is_empty()
        && inputs.iter().all(|&n| {
            g.node(n).outputs[0]
                .ty
                .as_ref()
                .and_then(|t| t.shape.as_ref()?.first().cloned())
                .is_some_and(|d| matches!(d, crate::ir::Dim::Param(_)))
        })
}

/// The static batch of the graph inputs (their common axis-0 size).
pub fn static_batch(g: &Graph) -> Result<i64, String> {
    let mut b = None;
    for n in batch_inputs(g) {
        let v = &g.node(n).outputs[0];
        let d =
            v.ty.as_ref()
                .and_then(|t| t.shape.as_ref()?.first()?.fixed());
        let Some(d) = d else {
            return Err(format!(
                "input '{}' has no static batch; give --input-shape or --batch",
                v.name
            ));
        };
        if *b.get_or_insert(d) != d {
            return Err(format!(
                "inputs disagree on the batch size: '{}' has {d}, another input {}",
                v.name,
                b.unwrap_or(0)
            ));
        }
    }
    b.ok_or_else(|| "the model has no input with a batch dimension".to_string())
}

/// The name of the symbolic batch dimension the inputs declare (`N` in the official RT-DETR
/// exports), if they agree on one.
pub fn batch_param(g: &Graph) -> Option<String> {
    let mut name = None;
    for n in batch_inputs(g) {
        match g.node(n).outputs[0].ty.as_ref()?.shape.as_ref()?.first()? {
            crate::ir::Dim::Param(p) if name.as_ref().is_none_or(|q| q == p) => {
                name = Some(p.clone())
            }
            _ => return None,
        }
    }
    name
}

/// The first operator whose static input shapes contradict each other, described; `None` if
/// none does. A dynamic-batch export traced at batch B and fixed to another batch shows it:
/// its unrolled per-image loop splits a batch axis into B parts, a Reshape to a baked `[B,
/// ...]` does not hold the elements, a per-image constant does not broadcast. Used to find
/// the traced batch without running the model (the driver's batch route).
pub fn shape_conflict(g: &Graph) -> Option<String> {
    use crate::analysis::typing::small_const;
    use crate::tensor::attrs;
    let shape = |p: Option<crate::ir::Port>| p.and_then(|p| g.ty(p)?.static_shape());
    let ints = |p| small_const(g, p).and_then(|t| t.as_i64_vec());
    for n in g.topo_ops() {
        let Some(op) = g.node(n).op() else { continue };
        if !crate::ir::is_onnx_domain(&op.domain) {
            continue;
        }
        let ins = g.inputs(n);
        let arg = |i: usize| ins.get(i).copied().flatten();
        let why = match op.op_type.as_str() {
            "Reshape" => match (shape(arg(0)), ints(arg(1))) {
                (Some(x), Some(t)) => {
                    let total: i64 = x.iter().product();
                    let allow_zero = attrs::int_or(&op.attrs, "allowzero", 0) != 0;
                    let mut known = 1i64;
                    let mut free = 0;
                    for (i, &d) in t.iter().enumerate() {
                        match d {
                            -1 => free += 1,
                            0 if !allow_zero => known *= x.get(i).copied().unwrap_or(0),
                            d => known *= d,
                        }
                    }
                    let fits = match free {
                        0 => known == total,
                        1 => known != 0 && total % known == 0,
                        _ => false,
                    };
                    (!fits).then(|| format!("cannot reshape {x:?} to {t:?}"))
                }
                _ => None,
            },
            "Split" => {
                let axis = attrs::int_or(&op.attrs, "axis", 0);
                let sizes = ints(arg(1)).or_else(|| attrs::ints(&op.attrs, "split"));
                match (shape(arg(0)), sizes) {
                    (Some(x), Some(s)) => {
                        let a = if axis < 0 {
                            axis + x.len() as i64
                        } else {
                            axis
                        };
                        let d = usize::try_from(a).ok().and_then(|a| x.get(a).copied());
                        let sum: i64 = s.iter().sum();
                        d.filter(|&d| d != sum)
                            .map(|d| format!("splits an axis of {d} into {s:?}"))
                    }
                    _ => None,
                }
            }
            "Concat" => {
                let axis = attrs::int_or(&op.attrs, "axis", 0);
                let shapes: Option<Vec<Vec<i64>>> = ins.iter().map(|&p| shape(p)).collect();
                shapes.and_then(|s| {
                    let r = s.first()?.len() as i64;
                    let a = if axis < 0 { axis + r } else { axis };
                    s.iter()
                        .any(|x| {
                            x.len() as i64 != r
                                || x.iter()
                                    .zip(&s[0])
                                    .enumerate()
                                    .any(|(i, (u, v))| i as i64 != a && u != v)
                        })
                        .then(|| format!("concatenates {s:?} on axis {axis}"))
                })
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Where" | "Equal" | "Less" | "Greater"
            | "And" | "Or" | "Max" | "Min" => {
                let shapes: Option<Vec<Vec<i64>>> = ins.iter().map(|&p| shape(p)).collect();
                shapes.and_then(|s| {
                    let r = s.iter().map(Vec::len).max()?;
                    let clash = (0..r).any(|k| {
                        let dims: Vec<i64> = s
                            .iter()
                            .filter_map(|x| (k + x.len()).checked_sub(r).map(|i| x[i]))
                            .filter(|&d| d != 1)
                            .collect();
                        dims.windows(2).any(|w| w[0] != w[1])
                    });
                    clash.then(|| format!("cannot broadcast {s:?}"))
                })
            }
            "MatMul" => match (shape(arg(0)), shape(arg(1))) {
                (Some(a), Some(b)) if a.len() >= 2 && b.len() >= 2 => {
                    (a[a.len() - 1] != b[b.len() - 2]).then(|| format!("multiplies {a:?} by {b:?}"))
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(why) = why {
            return Some(format!("{}: {why}", g.node(n).display_name()));
        }
    }
    None
}
