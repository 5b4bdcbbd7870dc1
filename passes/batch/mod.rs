//! `generalize-batch`: makes the batch dimension of a static-shape model symbolic.
//!
//! Exports bake the traced batch size B into constants: Reshape targets (`[2, 256, 400]`),
//! Expand/Tile/ConstantOfShape shapes, folded tensors that hold one copy per image (DETR's
//! position embedding after `fold-mask`, the decoder's zero queries). A model compiled at a
//! static batch B therefore holds every batch dependence as a constant, and this pass finds
//! them by following the batch dimension, not by looking at values equal to B:
//!
//! 1. forward: from the graph inputs' axis 0, every operator's rule says which output axis
//!    carries the batch and with what factor m (the attention head split makes `B*heads`, a
//!    merged dimension with the batch as its major factor);
//! 2. backward: where a batch tensor meets one without the batch in an operator that does not
//!    broadcast (a Concat, a MatMul of `heads` against `B*heads`), the other side must carry
//!    it too; the requirement is followed up to its source (a constant, a ConstantOfShape, an
//!    Expand or Tile of a size-1 axis). Both steps repeat until nothing new is found;
//! 3. rewrite: shape constants get 0/-1 or a shape computed from `Shape(input)`, and per-image
//!    constants whose images are identical shrink to one image (broadcast) or are expanded.
//!
//! Every change is checked by evaluating its shape rule at another batch size, and any batch
//! dependence without a rule (an operator that reduces, sorts or indexes over the batch) is an
//! error naming the node: the pass never guesses. The driver verifies the result numerically
//! at several batch sizes.

use std::collections::{HashMap, HashSet};

use crate::ir::{Dim, Graph, NodeId, NodeKind, Port, TensorType};
use crate::ops::{self, Axes};
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::attrs::{self, axis};
use crate::tensor::Tensor;

use crate::analysis::batch::{already_symbolic, batch_inputs, static_batch, BATCH_PARAM};
use crate::analysis::typing::small_const;

pub struct GeneralizeBatch;

impl Pass for GeneralizeBatch {
    fn name(&self) -> &'static str {
        "generalize-batch"
    }
    fn about(&self) -> &'static str {
        "make a static batch symbolic: batch-baked shapes and per-image constants generalised"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        // The pipeline runs to a fixed point: once the batch is symbolic there is nothing
        // left to generalise, which is not the "no static batch" error of a first run.
        if already_symbolic(g) {
            return Ok(Outcome::Unchanged);
        }
        generalize(g).map(Outcome::changed)
    }
}

/// Where a tensor carries the batch: `axis`, whose size is `outer * batch * m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BatchAxis {
    pub axis: usize,
    /// A static factor in front of the batch within the axis (`[L*B]` after attention's
    /// `transpose(0, 1).view(L * B, C)`): the axis size is `outer * batch * m`.
    pub outer: i64,
    pub m: i64,
}

impl BatchAxis {
    fn size(&self, b: i64) -> i64 {
        self.outer * b * self.m
    }
}

/// A rewrite that a shape constant needs, found by the forward rules.
#[derive(Debug, Clone)]
enum Fix {
    /// Reshape whose output axis `j` carries the batch (input axis `i`).
    Reshape {
        node: NodeId,
        from: BatchAxis,
        to: BatchAxis,
    },
    /// Expand whose shape entry `k` must be 1 (the input carries the batch) or N*m (source).
    Expand {
        node: NodeId,
        k: usize,
        m: Option<i64>,
    },
    /// Tile whose repeat at `axis` must be N*m (the input has size 1 there).
    Tile { node: NodeId, axis: usize, m: i64 },
    /// ConstantOfShape whose shape entry `axis` must be N*m.
    ConstantOfShape { node: NodeId, axis: usize, m: i64 },
    /// Slice whose end on the batch axis was the traced batch.
    SliceEnd { node: NodeId, k: usize },
    /// A value without the batch that must carry it (an Unsqueeze of the unit batch axis at
    /// batch 1): expanded to the batch after its producer.
    ExpandOutput { port: Port, ba: BatchAxis },
    /// Resize with `sizes` holding the batch at `axis`.
    ResizeSizes { node: NodeId, axis: usize, m: i64 },
    /// ScatterND whose constant indices address image `b` at batch coordinate `b` and are
    /// otherwise the same for every image.
    /// The batch is on `axis` of the data and `updates_axis` of the updates; the ranks are
    /// read before any rewrite retypes the inputs.
    ScatterNd {
        node: NodeId,
        rank: usize,
        axis: usize,
        updates_rank: usize,
        updates_axis: usize,
    },
}

struct Analysis {
    b: i64,
    batch: HashMap<Port, BatchAxis>,
    fixes: Vec<Fix>,
    /// Required batch axes that could not be derived forward, by the port they start at.
    reqs: Vec<(Port, BatchAxis, String)>,
}

fn shape(g: &Graph, p: Port) -> Option<Vec<i64>> {
    g.ty(p).and_then(TensorType::static_shape)
}

fn name_of(g: &Graph, n: NodeId) -> String {
    g.node(n).display_name()
}

fn ints_input(g: &Graph, n: NodeId, slot: usize) -> Option<Vec<i64>> {
    small_const(g, g.input(n, slot)).and_then(|t| t.as_i64_vec())
}

/// How `op` maps its axes, as the registry says ([`Axes::Other`] for an unknown op).
fn axes(op: &str) -> Axes {
    ops::rule(op).map_or(Axes::Other, |r| r.axes)
}

/// Output axis k of `op` is its input 0's axis k.
fn positional(op: &str) -> bool {
    ops::rule(op).is_some_and(|r| r.positional)
}

fn product(v: &[i64]) -> i64 {
    v.iter().product()
}

/// Where a Reshape from `a` to `out` puts the batch of `ba` (an axis of `a`): the output axis
/// whose row-major span holds the batch factor, as `outer * batch * m`. Candidates with the
/// batch leading their axis win, then an axis of the same size (at batch 1 a unit axis is
/// where the batch was), then one that does not merge it into a row's channels, then the
/// smallest factor.
fn reshape_follow(a: &[i64], out: &[i64], ba: BatchAxis, b: i64) -> Option<BatchAxis> {
    let before = product(&a[..ba.axis]).checked_mul(ba.outer)?;
    let mut cands = Vec::new();
    for j in 0..out.len() {
        let pre = product(&out[..j]);
        if pre == 0 || before % pre != 0 {
            continue;
        }
        let outer = before / pre;
        if out[j] % (outer * b) != 0 || out[j] < outer * b {
            continue;
        }
        cands.push(BatchAxis {
            axis: j,
            outer,
            m: out[j] / (outer * b),
        });
    }
    // At batch 1 several axes fit; the flatten of rows for a Gemm (`[L, B, C] -> [L*B, C]`)
    // keeps everything after the batch intact, the attention head split does not.
    // Merged heads (`[L, B*h, d] -> [L*B, C]`) go back to the channels.
    let rows_kept = |c: &BatchAxis| c.m == 1 && (out[c.axis + 1..] == a[ba.axis + 1..] || ba.m > 1);
    // The batch alone on an axis of the same size stays there.
    let kept = |c: &BatchAxis| out[c.axis] == a[ba.axis] && c.outer == ba.outer && c.outer == 1;
    // At batch 1 `[L, 1, h, d] -> [L, h*d]` fits the batch into the rows (`L*B`, the out-proj
    // of attention) or into the last axis with everything after it; the channels of a row
    // never hold images.
    let into_features = |c: &BatchAxis| {
        c.axis + 1 == out.len()
            && ba.axis + 1 < a.len()
            && c.outer == 1
            && c.m == product(&a[ba.axis + 1..])
    };
    cands.into_iter().min_by_key(|c| {
        (
            !rows_kept(c),
            !kept(c),
            into_features(c),
            c.outer != 1,
            out[c.axis] != a[ba.axis] || c.outer != ba.outer,
            c.m,
            c.axis,
        )
    })
}

impl Analysis {
    fn get(&self, p: Option<Port>) -> Option<BatchAxis> {
        p.and_then(|p| self.batch.get(&p).copied())
    }

    fn require(&mut self, p: Port, ax: BatchAxis, why: String) {
        if !self.batch.contains_key(&p) {
            self.reqs.push((p, ax, why));
        }
    }

    /// Broadcasting rule over `ins` (ports with static shapes) into an output of `out` dims.
    fn broadcast(
        &mut self,
        g: &Graph,
        n: NodeId,
        ins: &[Option<Port>],
        out: &[i64],
    ) -> Result<Option<BatchAxis>, String> {
        let ro = out.len();
        let mut res: Option<BatchAxis> = None;
        for p in ins.iter().flatten() {
            if let Some(ba) = self.batch.get(p) {
                let r = shape(g, *p).map_or(0, |s| s.len());
                let oa = BatchAxis {
                    axis: ba.axis + ro - r,
                    m: ba.m,
                    outer: ba.outer,
                };
                if res.is_some_and(|x| x != oa) {
                    return Err(format!(
                        "{}: its inputs carry the batch on different axes",
                        name_of(g, n)
                    ));
                }
                res = Some(oa);
            }
        }
        let Some(oa) = res else { return Ok(None) };
        for p in ins.iter().flatten() {
            if self.batch.contains_key(p) {
                continue;
            }
            let Some(s) = shape(g, *p) else {
                return Err(format!(
                    "{}: input '{}' meets the batch but has no static shape",
                    name_of(g, n),
                    g.value(*p).name
                ));
            };
            let Some(k) = (oa.axis + s.len()).checked_sub(ro) else {
                continue;
            };
            if s[k] != 1 && s[k] == out[oa.axis] {
                self.require(
                    *p,
                    BatchAxis {
                        axis: k,
                        m: oa.m,
                        outer: oa.outer,
                    },
                    format!("{} broadcasts it against the batch", name_of(g, n)),
                );
            }
        }
        Ok(Some(oa))
    }

    /// Forward rule of one operator: the batch axes of its outputs.
    fn forward(&mut self, g: &Graph, n: NodeId) -> Result<Vec<Option<BatchAxis>>, String> {
        let node = g.node(n);
        let op = node.op().expect("operator");
        let t = op.op_type.as_str();
        let at = &op.attrs;
        let ins = g.inputs(n);
        let nouts = node.outputs.len();
        let in_b: Vec<Option<BatchAxis>> = ins.iter().map(|p| self.get(*p)).collect();
        let outs: Vec<Option<Vec<i64>>> = (0..nouts).map(|s| shape(g, Port::new(n, s))).collect();
        let any = in_b.iter().any(Option::is_some);
        let name = name_of(g, n);
        let b = self.b;
        let fail = |why: &str| Err(format!("{name}: {why}"));
        if !crate::ir::is_onnx_domain(&op.domain) {
            return if any {
                fail("a custom operator reads the batch; no rule to generalise it")
            } else {
                Ok(vec![None; nouts])
            };
        }
        // Sources of a required batch (backward results) come first.
        let src: Vec<Option<BatchAxis>> = (0..nouts)
            .map(|s| self.batch.get(&Port::new(n, s)).copied())
            .collect();
        let out0 = outs.first().cloned().flatten();
        let x0 = in_b.first().copied().flatten();
        let one = |v: Option<BatchAxis>| {
            let mut r = vec![None; nouts];
            if nouts > 0 {
                r[0] = v;
            }
            r
        };
        match t {
            "Constant" | "ConstantOfShape" if src[0].is_some() => {
                if let (Some(ba), "ConstantOfShape") = (src[0], t) {
                    self.fixes.push(Fix::ConstantOfShape {
                        node: n,
                        axis: ba.axis,
                        m: ba.m * ba.outer,
                    });
                }
                Ok(src)
            }
            _ if !any && !["Expand", "Tile"].contains(&t) => Ok(vec![None; nouts]),
            _ if axes(t) == Axes::Elementwise => {
                if in_b.iter().skip(1).any(Option::is_some) && t != "CastLike" {
                    return fail("the batch reaches a parameter input");
                }
                Ok(one(x0))
            }
            _ if axes(t) == Axes::Broadcast => {
                let Some(out) = out0 else {
                    return fail("no static output shape");
                };
                Ok(one(self.broadcast(g, n, &ins, &out)?))
            }
            _ if axes(t) == Axes::Along => {
                let Some(xb) = x0 else {
                    return fail("the batch reaches a parameter input");
                };
                let r = shape(g, ins[0].expect("x")).map_or(0, |s| s.len());
                let axis_input = ints_input(g, n, 1).and_then(|v| v.first().copied());
                let (a, to_end) = ops::accessors::mixed_axes(t, at, axis_input, g.opset())
                    .ok_or_else(|| format!("{name}: axis is not a constant"))?;
                let ax = axis(a, r).ok_or_else(|| format!("{}: axis out of range or rank unknown (generalize-batch runs after infer-shapes and fold-constants)", name_of(g, n)))?;
                // The batch passes an op that mixes `ax` (and every later axis with `to_end`)
                // only if it is not among them.
                let ok = if to_end { xb.axis < ax } else { xb.axis != ax };
                if !ok {
                    return fail(&format!("it normalises over the batch axis {ax}"));
                }
                if in_b.iter().skip(1).any(Option::is_some) {
                    return fail("the batch reaches a parameter input");
                }
                Ok(one(Some(xb)))
            }
            _ if axes(t) == Axes::Leading => {
                if t == "GridSample" {
                    let Some(out) = out0 else {
                        return fail("no static output shape");
                    };
                    let (xb, gb) = (in_b[0], in_b.get(1).copied().flatten());
                    let ba = xb.or(gb).expect("some");
                    if ba.axis != 0 || xb.is_some_and(|x| x != ba) || gb.is_some_and(|x| x != ba) {
                        return fail("the batch is not on axis 0 of both inputs");
                    }
                    for (k, p) in ins.iter().enumerate().take(2) {
                        if in_b[k].is_none() {
                            let p = p.expect("input");
                            self.require(p, ba, format!("{name} needs the same batch"));
                        }
                    }
                    let _ = out;
                    return Ok(one(Some(ba)));
                }
                match x0 {
                    Some(xb) if xb.axis == 0 && in_b.iter().skip(1).all(Option::is_none) => {
                        let mut r = vec![None; nouts];
                        r[0] = Some(xb);
                        if t == "MaxPool" && nouts > 1 {
                            r[1] = Some(xb);
                        }
                        Ok(r)
                    }
                    _ => fail("the batch is not on axis 0 of the data input"),
                }
            }
            "Resize" | "Upsample" => {
                let (Some(xb), Some(out)) = (x0, out0) else {
                    return fail("the batch reaches a parameter input");
                };
                let x = shape(g, ins[0].expect("x"))
                    .ok_or_else(|| format!("{name}: no static input shape"))?;
                if out[xb.axis] != x[xb.axis] {
                    return fail("it resizes the batch axis");
                }
                if ints_input(g, n, 3).is_some_and(|s| s.len() == out.len()) {
                    self.fixes.push(Fix::ResizeSizes {
                        node: n,
                        axis: xb.axis,
                        m: xb.m * xb.outer,
                    });
                }
                Ok(one(Some(xb)))
            }
            "Pad" => {
                let Some(xb) = x0 else {
                    return fail("the batch reaches a parameter input");
                };
                let r = shape(g, ins[0].expect("x")).map_or(0, |s| s.len());
                let pads = if g.opset() >= 11 {
                    ints_input(g, n, 1)
                } else {
                    attrs::ints(at, "pads")
                };
                match pads {
                    Some(p) if p.len() == 2 * r && p[xb.axis] == 0 && p[xb.axis + r] == 0 => {
                        Ok(one(Some(xb)))
                    }
                    _ => fail("it pads the batch axis (or its pads are not constant)"),
                }
            }
            "Transpose" => {
                let Some(xb) = x0 else {
                    return fail("the batch reaches a parameter input");
                };
                let r = shape(g, ins[0].expect("x")).map_or(0, |s| s.len());
                let perm: Vec<usize> = match attrs::ints(at, "perm") {
                    Some(p) => p
                        .iter()
                        .map(|&a| axis(a, r))
                        .collect::<Option<_>>()
                        .ok_or_else(|| format!("{name}: bad perm"))?,
                    None => (0..r).rev().collect(),
                };
                let pos = perm
                    .iter()
                    .position(|&p| p == xb.axis)
                    .ok_or_else(|| format!("{name}: bad perm"))?;
                Ok(one(Some(BatchAxis {
                    axis: pos,
                    m: xb.m,
                    outer: xb.outer,
                })))
            }
            "Reshape" => {
                let Some(xb) = x0 else {
                    return fail("the batch reaches the target shape at run time");
                };
                let (Some(a), Some(out)) = (shape(g, ins[0].expect("x")), out0) else {
                    return fail("no static shapes");
                };
                let Some(ba) = reshape_follow(&a, &out, xb, b) else {
                    return fail(&format!(
                        "the batch (axis {} of {a:?}) is split over several axes of {out:?}",
                        xb.axis
                    ));
                };
                self.fixes.push(Fix::Reshape {
                    node: n,
                    from: xb,
                    to: ba,
                });
                Ok(one(Some(ba)))
            }
            "Flatten" => {
                let Some(xb) = x0 else {
                    return fail("the batch reaches a parameter input");
                };
                let a = shape(g, ins[0].expect("x"))
                    .ok_or_else(|| format!("{name}: no static input shape"))?;
                let out = out0.ok_or_else(|| format!("{name}: no static output shape"))?;
                let ax = axis(attrs::int_or(at, "axis", 1), a.len() + 1).ok_or_else(|| format!("{}: axis out of range or rank unknown (generalize-batch runs after infer-shapes and fold-constants)", name_of(g, n)))?;
                let (lo, j) = if xb.axis < ax { (0, 0) } else { (ax, 1) };
                if product(&a[lo..xb.axis]) != 1 {
                    return fail("the batch is not the leading factor of the flattened axis");
                }
                Ok(one(Some(BatchAxis {
                    axis: j,
                    m: out[j] / b,
                    outer: 1,
                })))
            }
            "Squeeze" | "Unsqueeze" => {
                let Some(xb) = x0 else {
                    return fail("the batch reaches a parameter input");
                };
                let a = shape(g, ins[0].expect("x"))
                    .ok_or_else(|| format!("{name}: no static input shape"))?;
                let out = out0.ok_or_else(|| format!("{name}: no static output shape"))?;
                let axes = if g.opset() >= 13 {
                    ints_input(g, n, 1)
                } else {
                    attrs::ints(at, "axes")
                };
                if t == "Squeeze" {
                    let drop: Vec<usize> = match axes {
                        Some(v) => v.iter().filter_map(|&v| axis(v, a.len())).collect(),
                        None => (0..a.len()).filter(|&i| a[i] == 1).collect(),
                    };
                    if drop.contains(&xb.axis) {
                        return fail("it removes the batch axis (a batch-1 assumption)");
                    }
                    let before = drop.iter().filter(|&&d| d < xb.axis).count();
                    Ok(one(Some(BatchAxis {
                        axis: xb.axis - before,
                        m: xb.m,
                        outer: xb.outer,
                    })))
                } else {
                    let add: Vec<usize> = axes
                        .ok_or_else(|| format!("{name}: axes are not constant"))?
                        .iter()
                        .filter_map(|&v| axis(v, out.len()))
                        .collect();
                    let kept: Vec<usize> = (0..out.len()).filter(|i| !add.contains(i)).collect();
                    let pos = *kept
                        .get(xb.axis)
                        .ok_or_else(|| format!("{name}: bad axes"))?;
                    Ok(one(Some(BatchAxis {
                        axis: pos,
                        m: xb.m,
                        outer: xb.outer,
                    })))
                }
            }
            "Concat" => {
                let r = out0.as_ref().map_or(0, Vec::len);
                let c = axis(attrs::int(at, "axis").unwrap_or(0), r).ok_or_else(|| format!("{}: axis out of range or rank unknown (generalize-batch runs after infer-shapes and fold-constants)", name_of(g, n)))?;
                let ba = in_b.iter().flatten().next().copied().expect("some");
                if in_b.iter().flatten().any(|x| *x != ba) || ba.axis == c {
                    return fail("it concatenates along the batch (or its inputs disagree)");
                }
                for (k, p) in ins.iter().enumerate() {
                    if in_b[k].is_none() {
                        if let Some(p) = p {
                            self.require(*p, ba, format!("{name} joins it with the batch"));
                        }
                    }
                }
                Ok(one(Some(ba)))
            }
            "Split" => {
                let Some(xb) = x0 else {
                    return fail("the batch reaches a parameter input");
                };
                let r = out0.as_ref().map_or(0, Vec::len);
                let s = axis(attrs::int_or(at, "axis", 0), r).ok_or_else(|| format!("{}: axis out of range or rank unknown (generalize-batch runs after infer-shapes and fold-constants)", name_of(g, n)))?;
                if s == xb.axis {
                    return fail(&format!(
                        "it splits the batch into the {nouts} traced images (a per-image loop \
                         that is not an identity)"
                    ));
                }
                Ok(vec![Some(xb); nouts])
            }
            "Slice" => {
                let Some(xb) = x0 else {
                    return fail("the batch reaches the slice bounds");
                };
                let a = shape(g, ins[0].expect("x"))
                    .ok_or_else(|| format!("{name}: no static input shape"))?;
                let (starts, ends, axes, steps) = if g.opset() >= 10 {
                    (
                        ints_input(g, n, 1),
                        ints_input(g, n, 2),
                        ins.get(3)
                            .copied()
                            .flatten()
                            .map(|_| ints_input(g, n, 3))
                            .unwrap_or(Some(vec![])),
                        ins.get(4)
                            .copied()
                            .flatten()
                            .map(|_| ints_input(g, n, 4))
                            .unwrap_or(Some(vec![])),
                    )
                } else {
                    (
                        attrs::ints(at, "starts"),
                        attrs::ints(at, "ends"),
                        Some(attrs::ints(at, "axes").unwrap_or_default()),
                        Some(vec![]),
                    )
                };
                let (Some(starts), Some(ends), Some(mut axes), Some(mut steps)) =
                    (starts, ends, axes, steps)
                else {
                    return fail("slice bounds are not constant");
                };
                if axes.is_empty() {
                    axes = (0..starts.len() as i64).collect();
                }
                if steps.is_empty() {
                    steps = vec![1; starts.len()];
                }
                for k in 0..starts.len().min(axes.len()).min(ends.len()) {
                    if axis(axes[k], a.len()) != Some(xb.axis) {
                        continue;
                    }
                    let d = a[xb.axis];
                    let full = ops::slice_len(starts[k], ends[k], steps[k], d).ok() == Some(d)
                        && steps.get(k) == Some(&1)
                        && (starts[k] == 0 || starts[k] <= -d);
                    if !full {
                        return fail("it selects some of the images");
                    }
                    if ends[k] >= 0 && ends[k] < (b + 1) * xb.m {
                        self.fixes.push(Fix::SliceEnd { node: n, k });
                    }
                }
                Ok(one(Some(xb)))
            }
            "Gather" => {
                let data = shape(g, ins[0].expect("data"))
                    .ok_or_else(|| format!("{name}: no static input shape"))?;
                let idx = ins
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|p| shape(g, p))
                    .ok_or_else(|| format!("{name}: no static index shape"))?;
                let ga = axis(attrs::int_or(at, "axis", 0), data.len()).ok_or_else(|| format!("{}: axis out of range or rank unknown (generalize-batch runs after infer-shapes and fold-constants)", name_of(g, n)))?;
                match (x0, in_b.get(1).copied().flatten()) {
                    (Some(xb), None) if xb.axis != ga => Ok(one(Some(BatchAxis {
                        axis: if xb.axis < ga {
                            xb.axis
                        } else {
                            xb.axis + idx.len() - 1
                        },
                        m: xb.m,
                        outer: xb.outer,
                    }))),
                    (None, Some(ib)) => Ok(one(Some(BatchAxis {
                        axis: ga + ib.axis,
                        m: ib.m,
                        outer: ib.outer,
                    }))),
                    _ => fail("it indexes along the batch"),
                }
            }
            "GatherElements" => {
                let ga_r = shape(g, ins[0].expect("data")).map_or(0, |s| s.len());
                let ga = axis(attrs::int_or(at, "axis", 0), ga_r).ok_or_else(|| format!("{}: axis out of range or rank unknown (generalize-batch runs after infer-shapes and fold-constants)", name_of(g, n)))?;
                let (db, ib) = (x0, in_b.get(1).copied().flatten());
                let ba = db.or(ib).expect("some");
                if ba.axis == ga || db.is_some_and(|x| x != ba) || ib.is_some_and(|x| x != ba) {
                    return fail("it gathers along the batch");
                }
                for (k, p) in ins.iter().enumerate().take(2) {
                    if in_b[k].is_none() {
                        let p = p.expect("input");
                        self.require(p, ba, format!("{name} needs the batch on both inputs"));
                    }
                }
                Ok(one(Some(ba)))
            }
            "TopK" | "ArgMax" | "ArgMin" | "ReduceMax" | "ReduceMin" | "ReduceSum"
            | "ReduceMean" | "ReduceProd" | "ReduceL2" | "ReduceL1" | "ReduceLogSumExp"
            | "ReduceSumSquare" => {
                let Some(xb) = x0 else {
                    return fail("the batch reaches a parameter input");
                };
                let r = shape(g, ins[0].expect("x")).map_or(0, |s| s.len());
                let keep = attrs::int_or(at, "keepdims", 1) != 0;
                let axes: Vec<usize> = if t == "TopK" || t.starts_with("Arg") {
                    let def = if t == "TopK" { -1 } else { 0 };
                    vec![axis(attrs::int_or(at, "axis", def), r).ok_or_else(|| format!("{}: axis out of range or rank unknown (generalize-batch runs after infer-shapes and fold-constants)", name_of(g, n)))?]
                } else {
                    let from_input = g.opset() >= 18 || (t == "ReduceSum" && g.opset() >= 13);
                    let a = if from_input {
                        ints_input(g, n, 1)
                    } else {
                        attrs::ints(at, "axes")
                    };
                    match a {
                        Some(a) if !a.is_empty() => a.iter().filter_map(|&v| axis(v, r)).collect(),
                        _ => (0..r).collect(),
                    }
                };
                if axes.contains(&xb.axis) {
                    return fail("it reduces or sorts over the batch");
                }
                let shift = if t == "TopK" || keep {
                    0
                } else {
                    axes.iter().filter(|&&a| a < xb.axis).count()
                };
                let ba = BatchAxis {
                    axis: xb.axis - shift,
                    m: xb.m,
                    outer: xb.outer,
                };
                Ok(vec![Some(ba); nouts])
            }
            "MatMul" => {
                let (Some(sa), Some(sb), Some(out)) = (
                    shape(g, ins[0].expect("a")),
                    ins.get(1).copied().flatten().and_then(|p| shape(g, p)),
                    out0,
                ) else {
                    return fail("no static shapes");
                };
                let (ra, rb, ro) = (sa.len(), sb.len(), out.len());
                let bb = in_b.get(1).copied().flatten();
                // A vector operand (D-FINE's distribution integral `softmax(x) @ w`, w of
                // rank 1) is contracted whole; the other side keeps its other axes.
                match (x0, bb) {
                    (Some(x), None) if rb == 1 && ra >= 1 && x.axis + 1 < ra => {
                        return Ok(one(Some(x)));
                    }
                    (None, Some(x)) if ra == 1 && rb >= 2 && x.axis + 2 != rb => {
                        return Ok(one(Some(BatchAxis {
                            axis: x.axis.min(rb - 2),
                            ..x
                        })));
                    }
                    _ => {}
                }
                if ra < 2 || rb < 2 {
                    return fail("a vector operand carries the batch");
                }
                let ab = x0;
                let mut res: Option<BatchAxis> = None;
                let mut lead = false;
                if let Some(x) = ab {
                    if x.axis == ra - 1 {
                        return fail("the batch is contracted");
                    }
                    lead |= x.axis < ra - 2;
                    res = Some(BatchAxis {
                        axis: if x.axis == ra - 2 {
                            ro - 2
                        } else {
                            x.axis + ro - ra
                        },
                        m: x.m,
                        outer: x.outer,
                    });
                }
                if let Some(x) = bb {
                    if x.axis == rb - 2 {
                        return fail("the batch is contracted");
                    }
                    lead |= x.axis < rb - 2;
                    let o = BatchAxis {
                        axis: if x.axis == rb - 1 {
                            ro - 1
                        } else {
                            x.axis + ro - rb
                        },
                        m: x.m,
                        outer: x.outer,
                    };
                    if res.is_some_and(|r| r != o) {
                        return fail("its operands carry the batch on different axes");
                    }
                    res = Some(o);
                }
                let ba = res.expect("some");
                if lead {
                    // Leading dimensions broadcast like an element-wise op.
                    for (k, s) in [(0usize, &sa), (1, &sb)] {
                        if in_b[k].is_some() {
                            continue;
                        }
                        let r = s.len();
                        if let Some(kk) = (ba.axis + r).checked_sub(ro) {
                            if kk < r - 2 && s[kk] != 1 && s[kk] == out[ba.axis] {
                                let p = ins[k].expect("operand");
                                self.require(
                                    p,
                                    BatchAxis {
                                        axis: kk,
                                        m: ba.m,
                                        outer: ba.outer,
                                    },
                                    format!("{name} multiplies it with the batch"),
                                );
                            }
                        }
                    }
                }
                Ok(one(Some(ba)))
            }
            "Gemm" => match (x0, in_b.iter().skip(1).any(Option::is_some)) {
                (Some(xb), false) => {
                    let ta = attrs::int_or(at, "transA", 0) != 0;
                    if xb.axis != usize::from(ta) {
                        return fail("the batch is contracted");
                    }
                    Ok(one(Some(BatchAxis {
                        axis: 0,
                        m: xb.m,
                        outer: xb.outer,
                    })))
                }
                _ => fail("the batch reaches the weights"),
            },
            "Expand" => {
                let x = shape(g, ins[0].expect("x"))
                    .ok_or_else(|| format!("{name}: no static input shape"))?;
                let out = out0.ok_or_else(|| format!("{name}: no static output shape"))?;
                let spec = ints_input(g, n, 1)
                    .ok_or_else(|| format!("{name}: its shape is computed at run time"))?;
                let off = out.len() - spec.len();
                match (x0, src[0]) {
                    (Some(xb), s) => {
                        let oa = BatchAxis {
                            axis: xb.axis + out.len() - x.len(),
                            m: xb.m,
                            outer: xb.outer,
                        };
                        if s.is_some_and(|s| s != oa) {
                            return fail("the batch arrives on two axes");
                        }
                        if let Some(k) = oa.axis.checked_sub(off) {
                            if spec[k] != 1 {
                                self.fixes.push(Fix::Expand {
                                    node: n,
                                    k,
                                    m: None,
                                });
                            }
                        }
                        Ok(one(Some(oa)))
                    }
                    (None, Some(s)) => {
                        let k = s.axis.checked_sub(off).ok_or_else(|| format!("{}: axis out of range or rank unknown (generalize-batch runs after infer-shapes and fold-constants)", name_of(g, n)))?;
                        self.fixes.push(Fix::Expand {
                            node: n,
                            k,
                            m: Some(s.m * s.outer),
                        });
                        Ok(src)
                    }
                    (None, None) => Ok(vec![None; nouts]),
                }
            }
            "Tile" => {
                let reps = ints_input(g, n, 1)
                    .ok_or_else(|| format!("{name}: its repeats are computed at run time"))?;
                match (x0, src[0]) {
                    (Some(xb), s) => {
                        if reps.get(xb.axis) != Some(&1) || s.is_some_and(|s| s != xb) {
                            return fail("it repeats along the batch");
                        }
                        Ok(one(Some(xb)))
                    }
                    (None, Some(s)) => {
                        self.fixes.push(Fix::Tile {
                            node: n,
                            axis: s.axis,
                            m: s.m * s.outer,
                        });
                        Ok(src)
                    }
                    (None, None) => Ok(vec![None; nouts]),
                }
            }
            "ScatterND" => {
                let (Some(is), Some(_)) = (
                    ins.get(1).copied().flatten().and_then(|p| shape(g, p)),
                    ins.get(2).copied().flatten().and_then(|p| shape(g, p)),
                ) else {
                    return fail("no static shapes");
                };
                let (ib, ub) = (
                    in_b.get(1).copied().flatten(),
                    in_b.get(2).copied().flatten(),
                );
                let Some(xb) = x0 else {
                    return fail("the batch reaches the indices or updates but not the data");
                };
                if ib.is_some() {
                    return fail("the batch reaches the indices at run time");
                }
                let k = *is
                    .last()
                    .ok_or_else(|| format!("{name}: indices of rank 0"))?
                    as usize;
                if xb.axis >= k {
                    // The indices address leading axes before the batch: the updates carry it
                    // behind the index dimensions.
                    let want = BatchAxis {
                        axis: is.len() - 1 + xb.axis - k,
                        ..xb
                    };
                    if ub != Some(want) {
                        return fail("its updates do not carry the batch where the data does");
                    }
                    return Ok(one(Some(xb)));
                }
                // The indices address the batch axis: only a scatter within each image is
                // generalised, whose index tuples carry the image's own position.
                let Some(ub) = ub else {
                    return fail("it scatters into the batch from updates without it");
                };
                let plain = |x: BatchAxis| x.m == 1 && x.outer == 1;
                if !plain(xb) || !plain(ub) || ub.axis + 1 >= is.len() || k < 2 {
                    return fail("it scatters over the batch");
                }
                let idx = ins[1]
                    .and_then(|p| g.const_tensor(p))
                    .and_then(|t| Tensor::from_proto(t).ok());
                let Some(Tensor::I64(idx)) = idx else {
                    return fail("its indices are computed at run time from the batch");
                };
                if one_image_indices(&idx, ub.axis, xb.axis).is_none() {
                    return fail(
                        "its indices do not address each image at its own batch position \
                         (a scatter across images)",
                    );
                }
                let rank = ins[0].and_then(|p| shape(g, p)).map_or(0, |s| s.len());
                self.fixes.push(Fix::ScatterNd {
                    node: n,
                    rank,
                    axis: xb.axis,
                    updates_rank: is.len() - 1 + rank - k,
                    updates_axis: ub.axis,
                });
                Ok(one(Some(xb)))
            }
            _ => fail("no rule to follow the batch through this operator"),
        }
    }

    /// Follows a required batch axis back to the node that must produce it.
    fn backward(
        &mut self,
        g: &Graph,
        p: Port,
        ba: BatchAxis,
        why: &str,
        seen: &mut HashSet<(Port, usize)>,
        sources: &mut Vec<(Port, BatchAxis)>,
    ) -> Result<(), String> {
        let here = g.node(p.node).display_name();
        if !seen.insert((p, ba.axis)) {
            return Ok(());
        }
        if let Some(have) = self.batch.get(&p) {
            if *have == ba {
                return Ok(());
            }
            return Err(format!(
                "{} carries the batch on axis {} but {why} needs it on axis {}",
                g.value(p).name,
                have.axis,
                ba.axis
            ));
        }
        let n = p.node;
        let s = shape(g, p).ok_or_else(|| format!("{here}: no static shape"))?;
        let b = self.b;
        if s.get(ba.axis) != Some(&ba.size(b)) {
            return Err(format!(
                "'{}' ({s:?}) cannot carry a batch of {b} x {} on axis {} ({why})",
                g.value(p).name,
                ba.m,
                ba.axis
            ));
        }
        let node = g.node(n);
        let stop = |what: &str| {
            Err(format!(
                "{} would need a batch axis ({why}), but {what}",
                node.display_name()
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
                let axes = if g.opset() >= 13 {
                    ints_input(g, n, 1)
                } else {
                    attrs::ints(&op.attrs, "axes")
                };
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
                let from_input = g.opset() >= 18 || (t == "ReduceSum" && g.opset() >= 13);
                let axes = if from_input {
                    ints_input(g, n, 1)
                } else {
                    attrs::ints(&op.attrs, "axes")
                };
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

/// Runs forward and backward to a fixed point on a graph with static shapes at batch `b`.
fn analyse(g: &Graph, b: i64) -> Result<Analysis, String> {
    let mut sources: Vec<(Port, BatchAxis)> = Vec::new();
    for round in 0..64 {
        let mut an = Analysis {
            b,
            batch: HashMap::new(),
            fixes: Vec::new(),
            reqs: Vec::new(),
        };
        for n in batch_inputs(g) {
            an.batch.insert(
                Port::new(n, 0),
                BatchAxis {
                    axis: 0,
                    m: 1,
                    outer: 1,
                },
            );
        }
        for &(p, ba) in &sources {
            an.batch.insert(p, ba);
        }
        for n in g.topo_ops() {
            let outs = an.forward(g, n)?;
            for (s, o) in outs.into_iter().enumerate() {
                let p = Port::new(n, s);
                if o.is_none() {
                    // A source the backward step found in an operator that does not create
                    // the batch itself: its value is the same for every image.
                    if let Some(&ba) = an.batch.get(&p) {
                        if g.node(n).is("Unsqueeze") {
                            an.fixes.push(Fix::ExpandOutput { port: p, ba });
                        }
                    }
                }
                if let Some(o) = o {
                    let p = Port::new(n, s);
                    if shape(g, p).and_then(|v| v.get(o.axis).copied()) != Some(o.size(b)) {
                        return Err(format!(
                            "{}: output '{}' would carry the batch on axis {} but that axis \
                             is not a multiple of {b}",
                            name_of(g, n),
                            g.value(p).name,
                            o.axis
                        ));
                    }
                    an.batch.insert(p, o);
                }
            }
        }
        if an.reqs.is_empty() {
            return Ok(an);
        }
        let reqs = std::mem::take(&mut an.reqs);
        let first = reqs[0].clone();
        let before = sources.len();
        let mut seen = HashSet::new();
        for (p, ba, why) in reqs {
            an.backward(g, p, ba, &why, &mut seen, &mut sources)?;
        }
        sources.sort();
        sources.dedup();
        if sources.len() == before {
            return Err(format!(
                "'{}' must carry the batch ({}), but no source for it was found (round {round})",
                g.value(first.0).name,
                first.2
            ));
        }
    }
    Err("the batch analysis does not converge".into())
}

/// A 1-D int64 tensor `[N * m]` computed from the first batch input's shape.
struct NSource {
    n: Option<Port>,
    input: Port,
}

impl NSource {
    fn get(&mut self, g: &mut Graph, m: i64) -> Port {
        let n = match self.n {
            Some(p) => p,
            None => {
                let sh = g.add_op("Shape", "batch_shape", &[Some(self.input)], vec![], 1);
                let idx = g.add_const("batch_axis", Tensor::vec_i64(vec![0]).to_proto(""));
                let ga = g.add_op(
                    "Gather",
                    "batch_size",
                    &[Some(Port::new(sh, 0)), Some(Port::new(idx, 0))],
                    vec![attrs::make_int("axis", 0)],
                    1,
                );
                let p = Port::new(ga, 0);
                self.n = Some(p);
                p
            }
        };
        if m == 1 {
            return n;
        }
        let c = g.add_const("batch_factor", Tensor::vec_i64(vec![m]).to_proto(""));
        let mul = g.add_op(
            "Mul",
            "batch_times",
            &[Some(n), Some(Port::new(c, 0))],
            vec![],
            1,
        );
        Port::new(mul, 0)
    }

    /// `spec` with entry `k` replaced by N*m, as a Concat of constants and the batch.
    fn shape_with(&mut self, g: &mut Graph, spec: &[i64], k: usize, m: i64) -> Port {
        let nm = self.get(g, m);
        let mut parts = Vec::new();
        if k > 0 {
            let c = g.add_const(
                "shape_head",
                Tensor::vec_i64(spec[..k].to_vec()).to_proto(""),
            );
            parts.push(Some(Port::new(c, 0)));
        }
        parts.push(Some(nm));
        if k + 1 < spec.len() {
            let c = g.add_const(
                "shape_tail",
                Tensor::vec_i64(spec[k + 1..].to_vec()).to_proto(""),
            );
            parts.push(Some(Port::new(c, 0)));
        }
        let cat = g.add_op(
            "Concat",
            "batch_shape_vec",
            &parts,
            vec![attrs::make_int("axis", 0)],
            1,
        );
        Port::new(cat, 0)
    }
}

fn set_const_input(g: &mut Graph, n: NodeId, slot: usize, v: Vec<i64>, hint: &str) {
    let c = g.add_const(hint, Tensor::vec_i64(v).to_proto(""));
    g.set_input(n, slot, Some(Port::new(c, 0)));
}

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
fn one_image_indices(idx: &ndarray::ArrayD<i64>, ia: usize, a: usize) -> Option<Tensor> {
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

/// The whole rewrite. Returns one line per change, saying why.
pub fn generalize(g: &mut Graph) -> Result<Vec<String>, String> {
    let b = static_batch(g)?;
    crate::analysis::typing::type_unruled(g);
    let an = analyse(g, b)?;
    // Each image's outputs must be one contiguous slice (`[B*h, ...]` with the batch as the
    // major factor is). A batch behind another factor (`[1, Q*B, C]`, images interleaved)
    // means the export lost the per-image layout, e.g. a Transpose of the unit batch axis
    // turned into a Reshape at batch 1 (onnxslim does this), which no rewrite brings back.
    for o in &g.outputs {
        if let Some(ba) = an.batch.get(&o.src) {
            if ba.outer != 1 {
                return Err(format!(
                    "{}: output '{}' would hold the batch merged into axis {} with a factor of \
                     {} (images interleaved, not one slice per image): the traced graph lost \
                     its per-image layout at batch {b}",
                    name_of(g, o.src.node),
                    o.name,
                    ba.axis,
                    ba.outer
                ));
            }
        }
    }
    let first_input = *batch_inputs(g).first().ok_or("no batch input")?;
    let input_name = g.node(first_input).outputs[0].name.clone();
    let mut ns = NSource {
        n: None,
        input: Port::new(first_input, 0),
    };
    let mut lines = Vec::new();
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
                    return Err(format!(
                        "{}: its target is computed at run time from the batch",
                        name_of(g, node)
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
                    return Err(format!(
                        "{}: no target {new:?} follows the batch",
                        name_of(g, node)
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
                    return Err(format!("{name}: an input is missing"));
                };
                let idx = g.const_tensor(ip).and_then(|t| Tensor::from_proto(t).ok());
                let Some(Tensor::I64(idx)) = idx else {
                    return Err(format!("{name}: its indices are not a constant"));
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
    // Per-image constants.
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
            return Err(format!(
                "initializer '{name}' {dims:?} holds the batch inside axis {} behind a factor \
                 of {}; no rule to generalise it",
                ba.axis, ba.outer
            ));
        }
        let Some(img) = one_image(&t, ba.axis, ba.m as usize) else {
            return Err(format!(
                "initializer '{name}' {dims:?} holds {b} different images on axis {}: it \
                 depends on the traced inputs and cannot be generalised",
                ba.axis
            ));
        };
        let broadcasts = ba.m == 1 && ba.outer == 1 && broadcast_users(g, &an, p, ba);
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
    // Interface and types: the batch becomes symbolic, inner types are inferred again.
    retype(g, &an)?;
    g.remove_dead();
    if lines.is_empty() {
        lines.push(format!(
            "batch {b} made symbolic; no batch-baked value found"
        ));
    } else {
        lines.insert(
            0,
            format!(
                "batch {b} made symbolic ({} values generalised)",
                lines.len()
            ),
        );
    }
    Ok(lines)
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

fn retype(g: &mut Graph, an: &Analysis) -> Result<(), String> {
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
