//! Step 3 for shape constants: each `Fix` the walks recorded becomes 0/-1 in a Reshape
//! target or a shape computed from `Shape(input)` (`NSource`), checked at another batch
//! size; then the interface gets its symbolic batch and inner types are inferred again
//! (`retype`).

use crate::ir::{Dim, Graph, NodeId, NodeKind, Port, TensorType};
use crate::ops;
use crate::tensor::attrs;
use crate::tensor::Tensor;

use crate::analysis::batch::{batch_inputs, BATCH_PARAM};

use super::axis::{ints_input, name_of, shape, Analysis, BatchAxis, Fix, GiveUp};
use super::batch_size::NSource;
use super::per_image::one_image_indices;

fn set_const_input(g: &mut Graph, n: NodeId, slot: usize, v: Vec<i64>, hint: &str) {
    let c = g.add_const(hint, Tensor::vec_i64(v).to_proto(""));
    g.set_input(n, slot, Some(Port::new(c, 0)));
}

/// Applies the fixes of shape constants, adding one line per change to `lines`.
pub(super) fn apply_fixes(
    g: &mut Graph,
    an: &Analysis,
    ns: &mut NSource,
    input_name: &str,
    lines: &mut Vec<String>,
) -> Result<(), GiveUp> {
    let b = an.b;
    let nb = b + 1; // a batch size the rewritten shapes are checked at
    for fix in an.fixes.clone() {
        match fix {
            Fix::Reshape { node, from, to } => {
                let (i, j) = (from.axis, to.axis);
                let x = g
                    .input(node, 0)
                    .ok_or_else(|| format!("{}: no input", name_of(g, node)))?;
                let a = shape(g, x).ok_or_else(|| format!("{}: no shape", name_of(g, node)))?;
                let out = shape(g, Port::new(node, 0))
                    .ok_or_else(|| format!("{}: no shape", name_of(g, node)))?;
                let Some(old) = ints_input(g, node, 1) else {
                    return Err(GiveUp::at(
                        g,
                        node,
                        "its target is computed at run time from the batch",
                    ));
                };
                let allowzero =
                    attrs::int_or(&g.node(node).op().expect("op").attrs, "allowzero", 0) != 0;
                let mut an_ = a.clone();
                an_[i] = from.size(nb);
                let mut want = out.clone();
                want[j] = to.size(nb);
                let to_usize = |v: &[i64]| v.iter().map(|&d| d as usize).collect::<Vec<_>>();
                let works = ops::reshape_target(&to_usize(&an_), &old, allowzero).ok()
                    == Some(to_usize(&want));
                if works {
                    continue;
                }
                let mut new = out.clone();
                new[j] = if from == to && i == j && !allowzero {
                    0
                } else {
                    -1
                };
                if ops::reshape_target(&to_usize(&an_), &new, allowzero).ok()
                    != Some(to_usize(&want))
                {
                    return Err(GiveUp::at(
                        g,
                        node,
                        format!("no target {new:?} follows the batch"),
                    ));
                }
                lines.push(format!(
                    "{}: batch {b} in target {old:?} -> {new:?} (axis {j} follows input axis {i})",
                    name_of(g, node)
                ));
                set_const_input(g, node, 1, new, "reshape_target");
            }
            Fix::Expand { node, k, m } => {
                let old = ints_input(g, node, 1)
                    .ok_or_else(|| format!("{}: no shape", name_of(g, node)))?;
                let mut new = old.clone();
                match m {
                    None => {
                        new[k] = 1;
                        lines.push(format!(
                            "{}: batch {b} in shape {old:?} -> {new:?} (the input carries the batch)",
                            name_of(g, node)
                        ));
                        set_const_input(g, node, 1, new, "expand_shape");
                    }
                    Some(m) => {
                        let v = ns.shape_with(g, &old, k, m);
                        lines.push(format!(
                            "{}: batch {b} in shape {old:?} at {k} -> Shape('{input_name}')[0]{}",
                            name_of(g, node),
                            if m > 1 {
                                format!(" * {m}")
                            } else {
                                String::new()
                            }
                        ));
                        g.set_input(node, 1, Some(v));
                    }
                }
            }
            Fix::Tile { node, axis, m } => {
                let old = ints_input(g, node, 1)
                    .ok_or_else(|| format!("{}: no repeats", name_of(g, node)))?;
                let v = ns.shape_with(g, &old, axis, m);
                lines.push(format!(
                    "{}: batch {b} in repeats {old:?} at {axis} -> Shape('{input_name}')[0]",
                    name_of(g, node)
                ));
                g.set_input(node, 1, Some(v));
            }
            Fix::ConstantOfShape { node, axis, m } => {
                let old = ints_input(g, node, 0)
                    .ok_or_else(|| format!("{}: no shape", name_of(g, node)))?;
                let v = ns.shape_with(g, &old, axis, m);
                lines.push(format!(
                    "{}: batch {b} in shape {old:?} at {axis} -> Shape('{input_name}')[0]",
                    name_of(g, node)
                ));
                g.set_input(node, 0, Some(v));
            }
            Fix::SliceEnd { node, k } => {
                let mut ends = ints_input(g, node, 2)
                    .ok_or_else(|| format!("{}: ends are not constant", name_of(g, node)))?;
                let old = ends[k];
                ends[k] = i64::MAX;
                lines.push(format!(
                    "{}: end {old} on the batch axis (the traced batch) -> to the end",
                    name_of(g, node)
                ));
                set_const_input(g, node, 2, ends, "slice_ends");
            }
            Fix::ScatterNd {
                node,
                rank: r,
                axis: a,
                updates_rank: ru,
                updates_axis: ua,
            } => {
                let name = name_of(g, node);
                let (Some(data), Some(ip), Some(upd)) =
                    (g.input(node, 0), g.input(node, 1), g.input(node, 2))
                else {
                    return Err(GiveUp::at(g, node, "an input is missing"));
                };
                let idx = g.const_tensor(ip).and_then(|t| Tensor::from_proto(t).ok());
                let Some(Tensor::I64(idx)) = idx else {
                    return Err(GiveUp::at(g, node, "its indices are not a constant"));
                };
                let is = idx.shape().to_vec();
                let rest = one_image_indices(&idx, ua, a)
                    .ok_or_else(|| format!("{name}: its indices changed"))?;
                let rest_shape = rest.shape();
                // The batch moved behind the axes the indices address: each image's scatter
                // is then the same, and the indices lose their batch coordinate.
                let to_last = |n: usize, x: usize| -> Vec<i64> {
                    (0..n as i64)
                        .filter(|&d| d != x as i64)
                        .chain([x as i64])
                        .collect()
                };
                let back: Vec<i64> = {
                    let mut v: Vec<i64> = (0..r as i64 - 1).collect();
                    v.insert(a, r as i64 - 1);
                    v
                };
                let hint = g
                    .node(node)
                    .op()
                    .map(|o| o.name.clone())
                    .unwrap_or_default();
                let td = g.add_op(
                    "Transpose",
                    &format!("{hint}_batch_last"),
                    &[Some(data)],
                    vec![attrs::make_ints("perm", to_last(r, a))],
                    1,
                );
                let tu = g.add_op(
                    "Transpose",
                    &format!("{hint}_updates_batch_last"),
                    &[Some(upd)],
                    vec![attrs::make_ints("perm", to_last(ru, ua))],
                    1,
                );
                let ic = g.add_const(&format!("{hint}_indices_one_image"), rest.to_proto(""));
                let sc_attrs = g.node(node).op().expect("op").attrs.clone();
                let sc = g.add_op(
                    "ScatterND",
                    &format!("{hint}_per_image"),
                    &[
                        Some(Port::new(td, 0)),
                        Some(Port::new(ic, 0)),
                        Some(Port::new(tu, 0)),
                    ],
                    sc_attrs,
                    1,
                );
                let tb = g.add_op(
                    "Transpose",
                    &format!("{hint}_batch_back"),
                    &[Some(Port::new(sc, 0))],
                    vec![attrs::make_ints("perm", back)],
                    1,
                );
                lines.push(format!(
                    "{name}: indices {is:?} address image i at batch coordinate i (component \
                     {a}) and are the same for every image -> batch moved last on data and \
                     updates, indices of one image {rest_shape:?} (a scatter within each image)"
                ));
                g.replace_all_uses(Port::new(node, 0), Port::new(tb, 0));
            }
            Fix::ExpandOutput { port, ba } => {
                let node = port.node;
                let dims = shape(g, port)
                    .ok_or_else(|| format!("{}: no static shape", name_of(g, node)))?;
                let readers = g.consumers(port);
                let outputs: Vec<usize> = (0..g.outputs.len())
                    .filter(|&i| g.outputs[i].src == port)
                    .collect();
                let ones = vec![1; dims.len()];
                let v = ns.shape_with(g, &ones, ba.axis, ba.m * ba.outer);
                let hint = g.value(port).name.clone();
                let e = g.add_op(
                    "Expand",
                    &format!("{hint}_per_image"),
                    &[Some(port), Some(v)],
                    vec![],
                    1,
                );
                for (c, slot) in readers {
                    g.set_input(c, slot, Some(Port::new(e, 0)));
                }
                for i in outputs {
                    g.outputs[i].src = Port::new(e, 0);
                }
                lines.push(format!(
                    "{}: output '{hint}' {dims:?} inserts the unit batch axis {} of a value the \
                     same for every image -> expanded to Shape('{input_name}')[0]",
                    name_of(g, node),
                    ba.axis
                ));
            }
            Fix::ResizeSizes { node, axis, m } => {
                let old = ints_input(g, node, 3)
                    .ok_or_else(|| format!("{}: sizes are not constant", name_of(g, node)))?;
                let v = ns.shape_with(g, &old, axis, m);
                lines.push(format!(
                    "{}: batch {b} in sizes {old:?} -> Shape('{input_name}')[0]",
                    name_of(g, node)
                ));
                g.set_input(node, 3, Some(v));
            }
        }
    }
    Ok(())
}

fn with_batch_dim(ty: &TensorType, ba: BatchAxis) -> TensorType {
    let mut t = ty.clone();
    if let Some(s) = t.shape.as_mut() {
        if ba.axis < s.len() {
            s[ba.axis] = if ba.m == 1 && ba.outer == 1 {
                Dim::Param(BATCH_PARAM.into())
            } else {
                Dim::Unknown
            };
        }
    }
    t
}

pub(super) fn retype(g: &mut Graph, an: &Analysis) -> Result<(), GiveUp> {
    for n in batch_inputs(g) {
        let ba = BatchAxis {
            axis: 0,
            m: 1,
            outer: 1,
        };
        let ty = g.node(n).outputs[0].ty.clone().ok_or("untyped input")?;
        let ty = with_batch_dim(&ty, ba);
        g.node_mut(n).outputs[0].ty = Some(ty.clone());
        if let NodeKind::Input(vi) = &mut g.node_mut(n).kind {
            vi.r#type = Some(ty.to_proto());
        }
    }
    for i in 0..g.outputs.len() {
        let src = g.outputs[i].src;
        let Some(ty) = g.ty(src).cloned() else {
            continue;
        };
        let ty = match an.batch.get(&src) {
            Some(ba) => with_batch_dim(&ty, *ba),
            None => ty,
        };
        g.outputs[i].info.r#type = Some(ty.to_proto());
    }
    let ops = g.topo_ops();
    for &n in &ops {
        for v in g.node_mut(n).outputs.iter_mut() {
            v.ty = None;
            v.info = None;
        }
    }
    for &n in &ops {
        crate::analysis::typing::infer_node(g, n);
    }
    Ok(())
}
