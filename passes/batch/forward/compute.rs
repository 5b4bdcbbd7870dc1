//! Forward rules of the operators that index, reduce or contract: Gather, GatherElements,
//! TopK/ArgMax/ArgMin and the reductions, MatMul, Gemm and ScatterND. Each may consume the
//! batch (a reduction over it, a contraction of it, a gather along it), which is an error
//! naming the node; an operator without any rule ends here too.

use crate::pass::pattern::axes_of;
use crate::tensor::attrs::{self, axis};
use crate::tensor::Tensor;

use super::super::axis::{name_of, shape, Analysis, BatchAxis, Fix, GiveUp};
use super::super::per_image::one_image_indices;
use super::Site;

impl Analysis {
    /// The rules of this group, and the error for an operator no rule covers.
    pub(super) fn forward_compute(&mut self, s: &Site) -> Result<Vec<Option<BatchAxis>>, GiveUp> {
        let Site {
            g,
            n,
            t,
            at,
            nouts,
            x0,
            ..
        } = *s;
        let (ins, in_b, name) = (&s.ins, &s.in_b, &s.name);
        let out0 = s.out0.clone();
        let fail = |why: &str| Err(GiveUp::at(g, n, why));
        let one = |v: Option<BatchAxis>| {
            let mut r = vec![None; nouts];
            if nouts > 0 {
                r[0] = v;
            }
            r
        };
        match t {
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
                    let a = axes_of(g, n).flatten();
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
}
