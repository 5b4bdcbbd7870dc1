//! Forward rules of the operators that move, cut or copy axes: Resize, Pad, Transpose,
//! Reshape, Flatten, Squeeze/Unsqueeze, Concat, Split, Slice, Expand and Tile. The batch
//! passes them unless they act on the batch axis itself; the shape constants that baked the
//! traced batch in are recorded as `Fix`es.

use crate::ops;
use crate::pass::pattern::axes_of;
use crate::tensor::attrs::{self, axis};

use super::super::axis::{
    ints_input, name_of, product, reshape_follow, shape, Analysis, BatchAxis, Fix, GiveUp,
};
use super::Site;

impl Analysis {
    /// The rules of this group; any other operator goes on to `Analysis::forward_compute`.
    pub(super) fn forward_shape(&mut self, s: &Site) -> Result<Vec<Option<BatchAxis>>, GiveUp> {
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
        let (src, out0) = (s.src.clone(), s.out0.clone());
        let b = self.b;
        let fail = |why: &str| Err(GiveUp::at(g, n, why));
        let one = |v: Option<BatchAxis>| {
            let mut r = vec![None; nouts];
            if nouts > 0 {
                r[0] = v;
            }
            r
        };
        match t {
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
                let axes = axes_of(g, n).flatten();
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
            _ => self.forward_compute(s),
        }
    }
}
