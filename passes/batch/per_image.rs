//! Step 3 for the constants that hold one copy per image (folded position embeddings, zero
//! queries): identical images shrink to one image that broadcasts, or one image expanded to
//! the batch at run time; images that differ are an error. Also what a per-image ScatterND's
//! indices look like, which the forward rule checks and the rewrite uses.

use crate::ir::{Graph, NodeKind, Port};
use crate::ops::Axes;
use crate::tensor::Tensor;

use super::axis::{axes, shape, Analysis, BatchAxis, GiveUp};
use super::batch_size::NSource;

/// True if every consumer of `p` broadcasts it against another input that carries the batch
/// on the aligned axis, so a one-image version of `p` gives the same result.
fn broadcast_users(g: &Graph, an: &Analysis, p: Port, ba: BatchAxis) -> bool {
    let r = shape(g, p).map_or(0, |s| s.len());
    if g.is_graph_output(p) {
        return false;
    }
    g.consumers(p).iter().all(|&(c, slot)| {
        let node = g.node(c);
        let Some(op) = node.op() else { return false };
        let Some(out) = an.batch.get(&Port::new(c, 0)) else {
            return false;
        };
        let ro = shape(g, Port::new(c, 0)).map_or(0, |s| s.len());
        let ok_op =
            axes(&op.op_type) == Axes::Broadcast || (op.op_type == "MatMul" && ba.axis + 2 < r);
        ok_op
            && (ba.axis + ro).checked_sub(r) == Some(out.axis)
            && g.inputs(c).iter().enumerate().any(|(k, q)| {
                k != slot
                    && q.and_then(|q| an.batch.get(&q))
                        .is_some_and(|qb| qb.m == ba.m && qb.outer == ba.outer)
            })
    })
}

/// Constant ScatterND indices whose image `i` (position `i` on the index axis `ia`) holds
/// tuples with `i` at component `a` and image 0's tuples elsewhere: the per-image write
/// pattern of an in-place update such as `tmp[..., :2] += ref`, traced as one scatter over
/// all images. Returns image 0's tuples without component `a`.
pub(super) fn one_image_indices(idx: &ndarray::ArrayD<i64>, ia: usize, a: usize) -> Option<Tensor> {
    use ndarray::Axis;
    let r = idx.ndim();
    if r < 2 || ia + 1 >= r || a >= idx.shape()[r - 1] {
        return None;
    }
    let keep: Vec<usize> = (0..idx.shape()[r - 1]).filter(|&c| c != a).collect();
    let rest = |v: ndarray::ArrayViewD<i64>| v.select(Axis(v.ndim() - 1), &keep);
    let first = rest(idx.index_axis(Axis(ia), 0));
    for i in 0..idx.shape()[ia] {
        let img = idx.index_axis(Axis(ia), i);
        let own = img
            .index_axis(Axis(img.ndim() - 1), a)
            .iter()
            .all(|&v| v == i as i64);
        if !own || rest(img) != first {
            return None;
        }
    }
    Some(Tensor::I64(first))
}

/// The images of `t` along `axis` (`m` rows each) are all equal: returns the first.
fn one_image(t: &Tensor, axis: usize, m: usize) -> Option<Tensor> {
    use ndarray::{Axis, Slice};
    let n = t.shape()[axis];
    if m == 0 || !n.is_multiple_of(m) {
        return None;
    }
    let rows = |k: usize| Slice::from(k * m..(k + 1) * m);
    let first = crate::map_any!(t, a => a.slice_axis(Axis(axis), rows(0)).to_owned());
    let same = crate::with_any!(t, a => (1..n / m)
        .all(|k| a.slice_axis(Axis(axis), rows(k)) == a.slice_axis(Axis(axis), rows(0))));
    same.then_some(first)
}

/// Rewrites the per-image constants the walks found, adding one line per change to `lines`.
pub(super) fn per_image_constants(
    g: &mut Graph,
    an: &Analysis,
    ns: &mut NSource,
    input_name: &str,
    lines: &mut Vec<String>,
) -> Result<(), GiveUp> {
    let b = an.b;
    let mut consts: Vec<(Port, BatchAxis)> = an
        .batch
        .iter()
        .filter(|(p, _)| matches!(g.node(p.node).kind, NodeKind::Const { .. }))
        .map(|(p, ba)| (*p, *ba))
        .collect();
    consts.sort();
    for (p, ba) in consts {
        let name = g.value(p).name.clone();
        let t = Tensor::from_proto(g.const_tensor(p).expect("const"))
            .map_err(|e| format!("initializer '{name}': {e}"))?;
        let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        if ba.outer != 1 {
            return Err(GiveUp::at(
                g,
                p.node,
                format!(
                    "{dims:?} holds the batch inside axis {} behind a factor of {}; no rule \
                     to generalise it",
                    ba.axis, ba.outer
                ),
            ));
        }
        let Some(img) = one_image(&t, ba.axis, ba.m as usize) else {
            return Err(GiveUp::at(
                g,
                p.node,
                format!(
                    "{dims:?} holds {b} different images on axis {}: it depends on the \
                     traced inputs and cannot be generalised",
                    ba.axis
                ),
            ));
        };
        let broadcasts = ba.m == 1 && ba.outer == 1 && broadcast_users(g, an, p, ba);
        if b == 1 && broadcasts {
            continue;
        }
        if broadcasts {
            let small = g.add_const(&format!("{name}_one_image"), img.to_proto(""));
            lines.push(format!(
                "initializer '{name}' {dims:?}: {b} identical images on axis {} -> 1 (broadcast)",
                ba.axis
            ));
            g.replace_all_uses(p, Port::new(small, 0));
            continue;
        }
        // One image with a unit axis in front of its m rows: Expand that axis to the batch,
        // then merge it with the m rows again (the batch is the major factor).
        let a = ba.axis;
        let mut split: Vec<i64> = dims[..a].to_vec();
        split.push(1);
        split.push(ba.m);
        split.extend_from_slice(&dims[a + 1..]);
        let img = crate::map_any!(img, x => x
            .into_shape_with_order(split.iter().map(|&d| d as usize).collect::<Vec<_>>())
            .expect("same size")
            .into_dyn());
        let small = g.add_const(&format!("{name}_one_image"), img.to_proto(""));
        let v = ns.shape_with(g, &split, a, 1);
        let e = g.add_op(
            "Expand",
            &format!("{name}_per_image"),
            &[Some(Port::new(small, 0)), Some(v)],
            vec![],
            1,
        );
        let mut out = Port::new(e, 0);
        if ba.m > 1 {
            let mut target = dims.clone();
            target[a] = -1;
            let tc = g.add_const(
                &format!("{name}_merge"),
                Tensor::vec_i64(target).to_proto(""),
            );
            let r = g.add_op(
                "Reshape",
                &format!("{name}_merge"),
                &[Some(out), Some(Port::new(tc, 0))],
                vec![],
                1,
            );
            out = Port::new(r, 0);
        } else {
            let sq = g.add_squeeze(out, a + 1, &format!("{name}_rows"));
            out = Port::new(sq, 0);
        }
        lines.push(format!(
            "initializer '{name}' {dims:?}: {b} identical images on axis {a}{} -> one image \
             expanded to Shape('{input_name}')[0]",
            if ba.m > 1 {
                format!(" ({} rows each)", ba.m)
            } else {
                String::new()
            }
        ));
        g.replace_all_uses(p, out);
    }
    Ok(())
}
