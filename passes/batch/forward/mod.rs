//! Step 1, forward: from the graph inputs' axis 0, each operator's rule says which output axis
//! carries the batch. `Analysis::forward` reads the operator once into a `Site` and
//! applies the rules the op registry's axis classes give (element-wise, broadcasting, along
//! an axis, leading); the operators with rules of their own follow in two groups, one file
//! each: `shape` (those that move, cut or copy axes) and `compute` (those that index,
//! reduce or contract, where the batch may be consumed).

mod compute;
mod shape;

use crate::ir::{Graph, NodeId, Port};
use crate::load::proto::AttributeProto;
use crate::ops::{self, Axes};
use crate::tensor::attrs::axis;

use super::axis::{axes, ints_input, name_of, shape, Analysis, BatchAxis, Fix, GiveUp};

/// One operator as the forward rules read it, gathered once by `Analysis::forward` and
/// handed to the rules of `shape` and `compute`.
pub(super) struct Site<'g> {
    g: &'g Graph,
    n: NodeId,
    t: &'g str,
    at: &'g Vec<AttributeProto>,
    ins: Vec<Option<Port>>,
    in_b: Vec<Option<BatchAxis>>,
    nouts: usize,
    name: String,
    /// The outputs' batch axes the backward step found (sources of a required batch).
    src: Vec<Option<BatchAxis>>,
    out0: Option<Vec<i64>>,
    x0: Option<BatchAxis>,
}

impl Analysis {
    /// Broadcasting rule over `ins` (ports with static shapes) into an output of `out` dims.
    fn broadcast(
        &mut self,
        g: &Graph,
        n: NodeId,
        ins: &[Option<Port>],
        out: &[i64],
    ) -> Result<Option<BatchAxis>, GiveUp> {
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
                    return Err(GiveUp::at(
                        g,
                        n,
                        "its inputs carry the batch on different axes",
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
                return Err(GiveUp::at(
                    g,
                    n,
                    format!(
                        "input '{}' meets the batch but has no static shape",
                        g.value(*p).name
                    ),
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
    pub(super) fn forward(
        &mut self,
        g: &Graph,
        n: NodeId,
    ) -> Result<Vec<Option<BatchAxis>>, GiveUp> {
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
        let fail = |why: &str| Err(GiveUp::at(g, n, why));
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
            // The operators with rules of their own: shape.rs's group, then compute.rs's.
            _ => self.forward_shape(&Site {
                g,
                n,
                t,
                at,
                ins,
                in_b,
                nouts,
                name,
                src,
                out0,
                x0,
            }),
        }
    }
}
