//! Step 2, backward: where a batch tensor meets one without the batch in an operator that does
//! not broadcast, the other side must carry it too. `Analysis::backward` follows that
//! requirement up to its source (a constant, a ConstantOfShape, an Expand or Tile of a size-1
//! axis, an Unsqueeze of the unit batch axis at batch 1).

use std::collections::HashSet;

use crate::ir::{Graph, NodeKind, Port};
use crate::ops::Axes;
use crate::pass::pattern::axes_of;
use crate::tensor::attrs::{self, axis};

use super::axis::{axes, positional, reshape_follow, shape, Analysis, BatchAxis, GiveUp};

impl Analysis {
    /// Follows a required batch axis back to the node that must produce it.
    pub(super) fn backward(
        &mut self,
        g: &Graph,
        p: Port,
        ba: BatchAxis,
        why: &str,
        seen: &mut HashSet<(Port, usize)>,
        sources: &mut Vec<(Port, BatchAxis)>,
    ) -> Result<(), GiveUp> {
        let here = g.node(p.node).display_name();
        if !seen.insert((p, ba.axis)) {
            return Ok(());
        }
        if let Some(have) = self.batch.get(&p) {
            if *have == ba {
                return Ok(());
            }
            return Err(GiveUp::about(
                g,
                p.node,
                format!(
                    "{} carries the batch on axis {} but {why} needs it on axis {}",
                    g.value(p).name,
                    have.axis,
                    ba.axis
                ),
            ));
        }
        let n = p.node;
        let s = shape(g, p).ok_or_else(|| format!("{here}: no static shape"))?;
        let b = self.b;
        if s.get(ba.axis) != Some(&ba.size(b)) {
            return Err(GiveUp::about(
                g,
                n,
                format!(
                    "'{}' ({s:?}) cannot carry a batch of {b} x {} on axis {} ({why})",
                    g.value(p).name,
                    ba.m,
                    ba.axis
                ),
            ));
        }
        let node = g.node(n);
        let stop = |what: &str| {
            Err(GiveUp::at(
                g,
                n,
                format!("it would need a batch axis ({why}), but {what}"),
            ))
        };
        let op = match &node.kind {
            NodeKind::Input(_) => return stop("it is a graph input"),
            NodeKind::Const { .. } => {
                sources.push((p, ba));
                return Ok(());
            }
            NodeKind::Op(op) => op,
        };
        let t = op.op_type.as_str();
        let ins = g.inputs(n);
        // The (input, axis) pairs the requirement moves to; empty with a source recorded.
        let next: Vec<(Option<Port>, usize)> = match t {
            "ConstantOfShape" | "Constant" => {
                sources.push((p, ba));
                vec![]
            }
            "Expand" | "Tile" => {
                let x = ins[0].ok_or_else(|| format!("{here}: no input"))?;
                let xs = shape(g, x).ok_or_else(|| format!("{here}: no static shape"))?;
                let k = (ba.axis + xs.len())
                    .checked_sub(s.len())
                    .ok_or_else(|| format!("{here}: bad rank"))?;
                if xs[k] == 1 {
                    sources.push((p, ba));
                    vec![]
                } else {
                    vec![(Some(x), k)]
                }
            }
            _ if positional(t) => {
                vec![(ins[0], ba.axis)]
            }
            _ if axes(t) == Axes::Broadcast => {
                let mut v = Vec::new();
                for q in ins.iter().flatten() {
                    let Some(qs) = shape(g, *q) else { continue };
                    let Some(k) = (ba.axis + qs.len()).checked_sub(s.len()) else {
                        continue;
                    };
                    if qs[k] == s[ba.axis] {
                        v.push((Some(*q), k));
                    }
                }
                if v.is_empty() {
                    return stop("no input has that axis");
                }
                v
            }
            "Transpose" => {
                let r = s.len();
                let perm: Vec<usize> = match attrs::ints(&op.attrs, "perm") {
                    Some(v) => v.iter().filter_map(|&a| axis(a, r)).collect(),
                    None => (0..r).rev().collect(),
                };
                vec![(
                    ins[0],
                    *perm
                        .get(ba.axis)
                        .ok_or_else(|| format!("{here}: bad perm"))?,
                )]
            }
            "Reshape" => {
                let a = ins[0]
                    .and_then(|q| shape(g, q))
                    .ok_or_else(|| format!("{here}: no static shape"))?;
                let Some(x) = ins[0] else { return Ok(()) };
                let Some(inb) = reshape_follow(&s, &a, ba, b) else {
                    return stop("the batch would be split over several input axes");
                };
                return self.backward(g, x, inb, why, seen, sources);
            }
            "Squeeze" | "Unsqueeze" => {
                let a = ins[0]
                    .and_then(|q| shape(g, q))
                    .ok_or_else(|| format!("{here}: no static shape"))?;
                let axes = axes_of(g, n).flatten();
                if t == "Unsqueeze" {
                    let add: Vec<usize> = axes
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|&v| axis(v, s.len()))
                        .collect();
                    if add.contains(&ba.axis) {
                        // A batch-1 export inserts the batch axis of a value that is the same
                        // for every image (learned queries, their reference points) and lets
                        // it broadcast, or expands it to B, which folds away at B=1. Each
                        // image gets a copy: the value is expanded to the batch here.
                        if ba.size(b) == 1 {
                            sources.push((p, ba));
                            return Ok(());
                        }
                        return stop("that axis is inserted by it");
                    }
                    let before = add.iter().filter(|&&d| d < ba.axis).count();
                    vec![(ins[0], ba.axis - before)]
                } else {
                    let drop: Vec<usize> = match axes {
                        Some(v) => v.iter().filter_map(|&v| axis(v, a.len())).collect(),
                        None => (0..a.len()).filter(|&i| a[i] == 1).collect(),
                    };
                    let kept: Vec<usize> = (0..a.len()).filter(|i| !drop.contains(i)).collect();
                    vec![(
                        ins[0],
                        *kept
                            .get(ba.axis)
                            .ok_or_else(|| format!("{here}: bad axes"))?,
                    )]
                }
            }
            "Concat" => {
                let c = axis(attrs::int(&op.attrs, "axis").unwrap_or(0), s.len())
                    .ok_or_else(|| format!("{here}: axis"))?;
                if c == ba.axis {
                    return stop("it concatenates along that axis");
                }
                ins.iter().map(|q| (*q, ba.axis)).collect()
            }
            "Split" => vec![(ins[0], ba.axis)],
            // LayerNorm as opset 16 exports it (`ReduceMean` over the channels): the batch
            // axis is one it does not reduce.
            _ if t.starts_with("Reduce") => {
                let a = ins[0]
                    .and_then(|q| shape(g, q))
                    .ok_or_else(|| format!("{here}: no static shape"))?;
                let axes = axes_of(g, n).flatten();
                let axes: Vec<usize> = match axes {
                    Some(v) if !v.is_empty() => {
                        v.iter().filter_map(|&v| axis(v, a.len())).collect()
                    }
                    _ => return stop("it reduces every axis"),
                };
                let keep = attrs::int_or(&op.attrs, "keepdims", 1) != 0;
                let ia = if keep {
                    ba.axis
                } else {
                    let kept: Vec<usize> = (0..a.len()).filter(|i| !axes.contains(i)).collect();
                    *kept
                        .get(ba.axis)
                        .ok_or_else(|| format!("{here}: bad axes"))?
                };
                if axes.contains(&ia) {
                    return stop("it reduces that axis");
                }
                vec![(ins[0], ia)]
            }
            // Deformable attention picks a level from the sampling locations (`[..., L, ...]`
            // at a constant index): the batch axis is one of the data's other axes.
            "Gather" => {
                let a = ins[0]
                    .and_then(|q| shape(g, q))
                    .ok_or_else(|| format!("{here}: no static shape"))?;
                let ga = axis(attrs::int_or(&op.attrs, "axis", 0), a.len())
                    .ok_or_else(|| format!("{here}: axis out of range"))?;
                let ri = ins
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|q| shape(g, q))
                    .ok_or_else(|| format!("{here}: no static index shape"))?
                    .len();
                if ba.axis < ga {
                    vec![(ins[0], ba.axis)]
                } else if ba.axis >= ga + ri {
                    vec![(ins[0], ba.axis + 1 - ri)]
                } else {
                    return stop("that axis comes from its indices");
                }
            }
            "MatMul" => {
                let sa = ins[0]
                    .and_then(|q| shape(g, q))
                    .ok_or_else(|| format!("{here}: no static shape"))?;
                let sb = ins
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|q| shape(g, q))
                    .ok_or_else(|| format!("{here}: no static shape"))?;
                let ro = s.len();
                if ba.axis + 2 == ro {
                    vec![(ins[0], sa.len() - 2)]
                } else if ba.axis + 1 == ro {
                    vec![(ins[1], sb.len() - 1)]
                } else {
                    let mut v = Vec::new();
                    for (k, qs) in [(0usize, &sa), (1, &sb)] {
                        if let Some(kk) = (ba.axis + qs.len()).checked_sub(ro) {
                            if kk + 2 < qs.len() && qs[kk] == s[ba.axis] {
                                v.push((ins[k], kk));
                            }
                        }
                    }
                    if v.is_empty() {
                        return stop("no operand has that axis");
                    }
                    v
                }
            }
            "Gemm" if ba.axis == 0 => {
                let ta = attrs::int_or(&op.attrs, "transA", 0) != 0;
                vec![(ins[0], usize::from(ta))]
            }
            _ if axes(t) == Axes::Leading && ba.axis == 0 => vec![(ins[0], 0)],
            _ => return stop("no rule gives it one"),
        };
        for (q, axis) in next {
            let Some(q) = q else { continue };
            // The factor changes where a Reshape merges or splits the batch axis.
            let size = shape(g, q).and_then(|v| v.get(axis).copied()).unwrap_or(0);
            let unit = ba.outer * b;
            if size < unit || size % unit != 0 {
                return stop(&format!(
                    "its input '{}' has no axis of the batch",
                    g.value(q).name
                ));
            }
            let next = BatchAxis {
                axis,
                m: size / unit,
                outer: ba.outer,
            };
            self.backward(g, q, next, why, seen, sources)?;
        }
        Ok(())
    }
}
