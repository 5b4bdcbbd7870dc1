//! Data movement: `Transpose`, `Concat`, `Split`, `Slice`, `Pad`, and the gathers and
//! scatters.

use ndarray::{Axis, Slice};

use super::*;

/// The rules of this family, one per operator.
pub(super) const RULES: &[OpRule] = &[
    OpRule::new("Concat").infer(infer).eval(eval),
    OpRule::new("Gather").infer(infer).eval(eval),
    OpRule::new("GatherND").eval(eval),
    OpRule::new("Pad").infer(infer).eval(eval).positional(),
    OpRule::new("ScatterND")
        .infer_static(static_scatter)
        .eval(eval),
    OpRule::new("Slice").infer(infer).eval(eval),
    OpRule::new("Split").infer(infer).eval(eval),
    OpRule::new("Transpose").infer(infer).eval(eval),
    OpRule::new("GatherElements").infer_static(static_gather_elements),
    OpRule::new("ScatterElements").infer_static(static_scatter),
];

#[allow(clippy::bool_comparison)]
fn eval(op: &str, at: &[AttributeProto], inputs: &[Option<Tensor>], opset: i64) -> R<Vec<Tensor>> {
    let x = || input(inputs, 0, op);
    let y = || input(inputs, 1, op);
    match op {
        "Transpose" => {
            let data = x()?;
            let r = data.shape().len();
            let perm: Vec<usize> = match attrs::ints(at, "perm") {
                Some(p) => p
                    .iter()
                    .map(|&a| axis(a, r).ok_or(EvalError::Invalid("Transpose perm".into())))
                    .collect::<R<_>>()?,
                None => (0..r).rev().collect(),
            };
            let mut seen = perm.clone();
            seen.sort_unstable();
            if seen != (0..r).collect::<Vec<_>>() {
                return inv("Transpose perm is not a permutation");
            }
            one(
                map_any!(data, a => a.clone().permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned()),
            )
        }
        "Concat" => {
            let ts: Vec<&Tensor> = (0..inputs.len())
                .map(|i| input(inputs, i, op))
                .collect::<R<_>>()?;
            let Some(first) = ts.first() else {
                return inv("Concat without inputs");
            };
            let r = first.shape().len();
            let ax = axis(
                attrs::int(at, "axis").ok_or(EvalError::Invalid("Concat axis".into()))?,
                r,
            )
            .ok_or(EvalError::Invalid("Concat axis".into()))?;
            one(concat(&ts, ax)?)
        }
        "Gather" => {
            let data = x()?;
            let idx = y()?
                .as_i64_vec()
                .ok_or(EvalError::Invalid("Gather indices".into()))?;
            let ishape = y()?.shape();
            let s = data.shape();
            let ax = axis(attrs::int_or(at, "axis", 0), s.len())
                .ok_or(EvalError::Invalid("Gather axis".into()))?;
            let n = s[ax] as i64;
            let idx: Vec<usize> = idx
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + n } else { i };
                    if (0..n).contains(&j) {
                        Ok(j as usize)
                    } else {
                        inv(format!("Gather index {i} out of range {n}"))
                    }
                })
                .collect::<R<_>>()?;
            let mut out_shape: Vec<usize> = s[..ax].to_vec();
            out_shape.extend(&ishape);
            out_shape.extend(&s[ax + 1..]);
            one(try_map_any!(data, a => reshape_to(&a.select(Axis(ax), &idx), &out_shape)))
        }
        "Slice" => {
            let data = x()?;
            let (starts, ends, axes, steps) = if opset >= 10 {
                (
                    opt_ints(inputs, 1)?,
                    opt_ints(inputs, 2)?,
                    opt_ints(inputs, 3)?,
                    opt_ints(inputs, 4)?,
                )
            } else {
                (
                    attrs::ints(at, "starts"),
                    attrs::ints(at, "ends"),
                    attrs::ints(at, "axes"),
                    None,
                )
            };
            let starts = starts.ok_or(EvalError::Invalid("Slice starts".into()))?;
            let ends = ends.ok_or(EvalError::Invalid("Slice ends".into()))?;
            let s = data.shape();
            let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return inv("Slice parameter lengths differ");
            }
            let mut slices: Vec<Slice> = vec![Slice::new(0, None, 1); s.len()];
            for k in 0..starts.len() {
                let a = axis(axes[k], s.len()).ok_or(EvalError::Invalid("Slice axis".into()))?;
                slices[a] = onnx_slice(starts[k], ends[k], steps[k], s[a] as i64)?;
            }
            one(map_any!(data, arr => arr.slice_each_axis(|d| slices[d.axis.index()]).to_owned()))
        }
        "Split" => {
            let data = x()?;
            let s = data.shape();
            let a = axis(attrs::int_or(at, "axis", 0), s.len())
                .ok_or(EvalError::Invalid("Split axis".into()))?;
            let len = s[a] as i64;
            let sizes = eval_ints_at(Some(accessors::split_place(opset)), at, inputs)?;
            // Without sizes the parts are equal, one per output: the caller states how many
            // outputs the node has through `num_outputs` (an attribute from opset 18 on).
            let sizes = match sizes {
                Some(v) => v,
                None => {
                    let n = attrs::int(at, "num_outputs").filter(|&n| n > 0).ok_or(
                        EvalError::Invalid("Split without sizes or num_outputs".into()),
                    )?;
                    let part = (len + n - 1) / n;
                    if opset < 18 && part * n != len {
                        return inv("Split into unequal parts without sizes");
                    }
                    (0..n).map(|i| part.min(len - i * part).max(0)).collect()
                }
            };
            if sizes.iter().any(|&v| v < 0) || sizes.iter().sum::<i64>() != len {
                return inv("Split sizes do not add up to the axis");
            }
            let mut out = Vec::with_capacity(sizes.len());
            let mut start = 0;
            for &n in &sizes {
                let sl = Slice::new(start as isize, Some((start + n) as isize), 1);
                out.push(map_any!(data, arr => arr
                    .slice_each_axis(|d| if d.axis.index() == a { sl } else { Slice::new(0, None, 1) })
                    .to_owned()));
                start += n;
            }
            Ok(out)
        }
        "ScatterND" => {
            if attrs::string(at, "reduction").is_some_and(|r| r != "none") {
                return unsupported("ScatterND with a reduction");
            }
            let idx = match input(inputs, 1, op)? {
                Tensor::I64(a) => a.clone(),
                other => return inv(format!("ScatterND indices of {}", other.dtype())),
            };
            let upd = input(inputs, 2, op)?;
            macro_rules! scatter {
                ($($v:ident),*) => {
                    match (x()?, upd) {
                        $((Tensor::$v(d), Tensor::$v(u)) => Tensor::$v(scatter_nd(d, &idx, u)?),)*
                        (d, u) => return inv(format!("ScatterND of {} and {}", d.dtype(), u.dtype())),
                    }
                };
            }
            one(scatter!(F32, F64, F16, I64, I32, I8, U8, Bool))
        }
        "GatherND" => {
            if attrs::int_or(at, "batch_dims", 0) != 0 {
                return unsupported("GatherND with batch_dims");
            }
            let idx = match input(inputs, 1, op)? {
                Tensor::I64(a) => a.clone(),
                other => return inv(format!("GatherND indices of {}", other.dtype())),
            };
            one(try_map_any!(x()?, d => gather_nd(d, &idx)))
        }
        "Pad" => {
            let data = x()?;
            let mode = attrs::string(at, "mode").unwrap_or_else(|| "constant".into());
            if mode != "constant" {
                return unsupported(format!("Pad mode '{mode}'"));
            }
            let r = data.shape().len();
            let (pads, value, axes) = if opset >= 11 {
                (
                    opt_ints(inputs, 1)?,
                    inputs.get(2).cloned().flatten(),
                    opt_ints(inputs, 3)?,
                )
            } else {
                (
                    attrs::ints(at, "pads"),
                    Some(Tensor::F64(ArrayD::from_elem(
                        IxDyn(&[]),
                        attrs::float(at, "value").unwrap_or(0.0) as f64,
                    ))),
                    None,
                )
            };
            let pads = pads.ok_or(EvalError::Invalid("Pad pads".into()))?;
            let axes: Vec<usize> = match axes {
                Some(ax) => ax
                    .iter()
                    .map(|&a| axis(a, r).ok_or(EvalError::Invalid("Pad axis".into())))
                    .collect::<R<_>>()?,
                None => (0..r).collect(),
            };
            if pads.len() != 2 * axes.len() {
                return inv("Pad pads length");
            }
            let mut before = vec![0i64; r];
            let mut after = vec![0i64; r];
            for (k, &a) in axes.iter().enumerate() {
                before[a] = pads[k];
                after[a] = pads[k + axes.len()];
            }
            if before.iter().chain(&after).any(|&p| p < 0) {
                return unsupported("Pad with negative pads");
            }
            let s = data.shape();
            let out: Vec<usize> = (0..r)
                .map(|d| {
                    s[d].checked_add(usize::try_from(before[d]).ok()?)?
                        .checked_add(usize::try_from(after[d]).ok()?)
                })
                .collect::<Option<_>>()
                .ok_or(EvalError::Invalid("Pad result too large".into()))?;
            check_size(&out)?;
            let fill = match value {
                Some(v) => cast(&v, data.dtype())?,
                None => cast(
                    &Tensor::F64(ArrayD::from_elem(IxDyn(&[]), 0.0)),
                    data.dtype(),
                )?,
            };
            macro_rules! pad {
                ($a:expr, $f:expr) => {{
                    let fv = *$f
                        .iter()
                        .next()
                        .ok_or(EvalError::Invalid("Pad value".into()))?;
                    let mut o = ArrayD::from_elem(IxDyn(&out), fv);
                    o.slice_each_axis_mut(|d| {
                        Slice::from(
                            before[d.axis.index()] as usize
                                ..before[d.axis.index()] as usize + s[d.axis.index()],
                        )
                    })
                    .assign($a);
                    o
                }};
            }
            one(match (data, &fill) {
                (Tensor::F32(a), Tensor::F32(f)) => Tensor::F32(pad!(a, f)),
                (Tensor::F64(a), Tensor::F64(f)) => Tensor::F64(pad!(a, f)),
                (Tensor::F16(a), Tensor::F16(f)) => Tensor::F16(pad!(a, f)),
                (Tensor::I64(a), Tensor::I64(f)) => Tensor::I64(pad!(a, f)),
                (Tensor::I32(a), Tensor::I32(f)) => Tensor::I32(pad!(a, f)),
                (Tensor::Bool(a), Tensor::Bool(f)) => Tensor::Bool(pad!(a, f)),
                (Tensor::U8(a), Tensor::U8(f)) => Tensor::U8(pad!(a, f)),
                (Tensor::I8(a), Tensor::I8(f)) => Tensor::I8(pad!(a, f)),
                _ => return inv("Pad value type"),
            })
        }
        _ => unsupported(op.to_string()),
    }
}

fn infer(cx: &InferCx) -> Option<Vec<Option<TensorType>>> {
    let InferCx {
        op,
        at,
        tys,
        vals,
        opset,
    } = *cx;
    let (_, s0, dt0) = cx.first();
    match op {
        "Transpose" => {
            let x = s0?;
            let perm: Vec<usize> = match attrs::ints(at, "perm") {
                Some(p) => p.iter().map(|&a| axis(a, x.len())).collect::<Option<_>>()?,
                None => (0..x.len()).rev().collect(),
            };
            if perm.len() != x.len() {
                return None;
            }
            same(Some(perm.iter().map(|&p| x[p].clone()).collect()), dt0)
        }
        "Concat" => {
            let shapes: Vec<Vec<Dim>> = tys
                .iter()
                .map(|t| t.as_ref().and_then(|t| t.shape.clone()))
                .collect::<Option<_>>()?;
            let r = shapes.first()?.len();
            let ax = axis(attrs::int(at, "axis")?, r)?;
            let mut out = shapes[0].clone();
            out[ax] = shapes
                .iter()
                .map(|s| s.get(ax).and_then(Dim::fixed))
                .try_fold(0i64, |a, v| v.and_then(|v| a.checked_add(v)))
                .map_or(Dim::Unknown, Dim::Fixed);
            same(Some(out), dt0)
        }
        "Split" => {
            let x = s0?;
            let ax = axis(attrs::int_or(at, "axis", 0), x.len())?;
            let n_out = attrs::int(at, "num_outputs");
            let split = infer_ints_at(Some(accessors::split_place(opset)), at, vals);
            let parts: Vec<i64> = match (split, x[ax].fixed()) {
                (Some(s), _) => s,
                (None, Some(d)) => {
                    // An output count the node cannot have (or a corrupt size): no guess.
                    let k = n_out.filter(|&k| k > 0 && k <= 1 << 16)?;
                    if d < 0 {
                        return None;
                    }
                    let chunk = d / k + i64::from(d % k != 0);
                    (0..k)
                        .map(|i| chunk.min(d.saturating_sub(i.saturating_mul(chunk))))
                        .collect()
                }
                _ => return None,
            };
            Some(
                parts
                    .iter()
                    .map(|&p| {
                        let mut s = x.clone();
                        s[ax] = Dim::Fixed(p);
                        Some(TensorType {
                            dtype: dt0.unwrap_or(DType::UNDEFINED),
                            shape: Some(s),
                        })
                    })
                    .collect(),
            )
        }
        "Gather" => {
            let x = s0?;
            let idx = tys.get(1).cloned().flatten()?.shape?;
            let ax = axis(attrs::int_or(at, "axis", 0), x.len())?;
            let mut out = x[..ax].to_vec();
            out.extend(idx);
            out.extend_from_slice(&x[ax + 1..]);
            same(Some(out), dt0)
        }
        "Slice" => {
            let x = s0?;
            let (starts, ends, axes, steps) = if opset >= 10 {
                (cx.ints(1)?, cx.ints(2)?, cx.ints(3), cx.ints(4))
            } else {
                (
                    attrs::ints(at, "starts")?,
                    attrs::ints(at, "ends")?,
                    attrs::ints(at, "axes"),
                    None,
                )
            };
            let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return None;
            }
            let mut out = x.clone();
            for k in 0..starts.len() {
                let a = axis(axes[k], x.len())?;
                out[a] = match x[a].fixed() {
                    // The evaluator's own slicing rule, computed without a tensor of size d.
                    Some(d) => Dim::Fixed(
                        super::movement::slice_len(starts[k], ends[k], steps[k], d).ok()?,
                    ),
                    None => Dim::Unknown,
                };
            }
            same(Some(out), dt0)
        }
        "Pad" => {
            let x = s0?;
            let pads = if opset >= 11 {
                cx.ints(1)?
            } else {
                attrs::ints(at, "pads")?
            };
            if vals.get(3).cloned().flatten().is_some() || pads.len() != 2 * x.len() {
                return None;
            }
            let r = x.len();
            same(
                Some(
                    (0..r)
                        .map(|i| {
                            x[i].fixed()
                                .and_then(|v| v.checked_add(pads[i])?.checked_add(pads[i + r]))
                                .map_or(Dim::Unknown, Dim::Fixed)
                        })
                        .collect(),
                ),
                dt0,
            )
        }
        _ => None,
    }
}

/// ONNX slice bounds -> an ndarray `Slice` (ONNX clamps; ndarray would panic).
pub(super) fn onnx_slice(start: i64, end: i64, step: i64, dim: i64) -> R<Slice> {
    if step == 0 {
        return inv("Slice step is 0");
    }
    let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    let (s, e) = (norm(start), norm(end));
    if step > 0 {
        let s = s.clamp(0, dim);
        let e = e.clamp(0, dim).max(s);
        Ok(Slice::new(s as isize, Some(e as isize), step as isize))
    } else {
        let s = s.clamp(-1, dim - 1);
        let e = e.clamp(-1, dim - 1);
        // Elements s, s+step, ... > e: the half-open range (e, s] walked backwards.
        let (lo, hi) = (e + 1, (s + 1).max(e + 1));
        Ok(Slice::new(lo as isize, Some(hi as isize), step as isize))
    }
}

/// Length of `onnx_slice(start, end, step, dim)` along an axis of size `dim`: what shape
/// inference needs, without materializing a tensor of that size.
pub fn slice_len(start: i64, end: i64, step: i64, dim: i64) -> R<i64> {
    if dim < 0 {
        return inv(format!("Slice of a negative dimension {dim}"));
    }
    let s = onnx_slice(start, end, step, dim)?;
    let span = (s.end.unwrap_or(dim as isize) - s.start).max(0) as u64;
    Ok(span.div_ceil(step.unsigned_abs()) as i64)
}
pub(super) fn concat(ts: &[&Tensor], ax: usize) -> R<Tensor> {
    macro_rules! cat {
        ($v:ident) => {{
            let arrs: Vec<_> = ts
                .iter()
                .map(|t| match t {
                    Tensor::$v(a) => Ok(a.view()),
                    _ => inv("Concat inputs differ in type"),
                })
                .collect::<R<_>>()?;
            Tensor::$v(
                ndarray::concatenate(Axis(ax), &arrs).or_else(|e| inv(format!("Concat: {e}")))?,
            )
        }};
    }
    let Some(first) = ts.first() else {
        return inv("Concat without inputs");
    };
    // ndarray asserts, rather than reports, that every input has the axis.
    let rank = first.shape().len();
    if ts.iter().any(|t| t.shape().len() != rank) {
        return inv("Concat inputs differ in rank");
    }
    Ok(match first {
        Tensor::F32(_) => cat!(F32),
        Tensor::F64(_) => cat!(F64),
        Tensor::F16(_) => cat!(F16),
        Tensor::I64(_) => cat!(I64),
        Tensor::I32(_) => cat!(I32),
        Tensor::I8(_) => cat!(I8),
        Tensor::U8(_) => cat!(U8),
        Tensor::Bool(_) => cat!(Bool),
    })
}
/// ScatterND without reduction: a copy of `data` with the slices that `idx` (last axis: the
/// leading coordinates) addresses replaced by `upd`'s.
pub(super) fn scatter_nd<T: Copy>(
    data: &ArrayD<T>,
    idx: &ArrayD<i64>,
    upd: &ArrayD<T>,
) -> R<ArrayD<T>> {
    let ds = data.shape();
    let is = idx.shape();
    let Some((&k, lead)) = is.split_last() else {
        return inv("ScatterND indices of rank 0");
    };
    if k == 0 || k > ds.len() {
        return inv("ScatterND index of no coordinates or more than the data's rank");
    }
    let want: Vec<usize> = lead.iter().chain(&ds[k..]).copied().collect();
    if upd.shape() != want.as_slice() {
        return inv(format!(
            "ScatterND updates of shape {:?}, expected {want:?}",
            upd.shape()
        ));
    }
    let slice: usize = ds[k..].iter().product();
    let mut out: Vec<T> = data.iter().copied().collect();
    let ups: Vec<T> = upd.iter().copied().collect();
    let idx: Vec<i64> = idx.iter().copied().collect();
    for (j, coords) in idx.chunks(k).enumerate() {
        let mut off = 0usize;
        for (a, &c) in coords.iter().enumerate() {
            let n = ds[a] as i64;
            let c = if c < 0 { c + n } else { c };
            if !(0..n).contains(&c) {
                return inv("ScatterND index out of range");
            }
            off = off * ds[a] + c as usize;
        }
        let start = off * slice;
        out[start..start + slice].copy_from_slice(&ups[j * slice..(j + 1) * slice]);
    }
    ArrayD::from_shape_vec(IxDyn(ds), out).or_else(|e| inv(format!("ScatterND: {e}")))
}
/// GatherND without batch dimensions: for each coordinate tuple on `idx`'s last axis, the
/// slice of `data` it addresses.
pub(super) fn gather_nd<T: Copy>(data: &ArrayD<T>, idx: &ArrayD<i64>) -> R<ArrayD<T>> {
    let ds = data.shape();
    let Some((&k, lead)) = idx.shape().split_last() else {
        return inv("GatherND indices of rank 0");
    };
    if k == 0 || k > ds.len() {
        return inv("GatherND index of no coordinates or more than the data's rank");
    }
    let slice: usize = ds[k..].iter().product();
    let flat: Vec<T> = data.iter().copied().collect();
    let coords: Vec<i64> = idx.iter().copied().collect();
    let mut out = Vec::with_capacity(lead.iter().product::<usize>() * slice);
    for c in coords.chunks(k) {
        let mut off = 0usize;
        for (a, &v) in c.iter().enumerate() {
            let n = ds[a] as i64;
            let v = if v < 0 { v + n } else { v };
            if !(0..n).contains(&v) {
                return inv("GatherND index out of range");
            }
            off = off * ds[a] + v as usize;
        }
        out.extend_from_slice(&flat[off * slice..(off + 1) * slice]);
    }
    let shape: Vec<usize> = lead.iter().chain(&ds[k..]).copied().collect();
    ArrayD::from_shape_vec(IxDyn(&shape), out).or_else(|e| inv(format!("GatherND: {e}")))
}

/// The data's shape and type, whatever is scattered into it.
fn static_scatter(cx: &InferCx) -> Types {
    let (x, xs) = (cx.ty(0)?, cx.st(0)?);
    Some(vec![Some(TensorType::new(x.dtype, &xs))])
}

/// The data's type at the indices' shape.
fn static_gather_elements(cx: &InferCx) -> Types {
    let (x, is) = (cx.ty(0)?, cx.st(1)?);
    Some(vec![Some(TensorType::new(x.dtype, &is))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_bounds_clamp_like_onnx() {
        assert_eq!(slice_len(0, i64::MAX, 1, 5), Ok(5));
        assert_eq!(slice_len(-2, 100, 1, 5), Ok(2));
        assert_eq!(slice_len(4, -100, -2, 5), Ok(3));
        assert_eq!(slice_len(3, 1, 1, 5), Ok(0));
    }

    #[test]
    fn concat_adds_the_axis_and_keeps_unknown_dims_unknown() {
        let a = TensorType {
            dtype: DType::F32,
            shape: Some(vec![Dim::Param("b".into()), Dim::Fixed(2)]),
        };
        let tys = [Some(a.clone()), Some(a)];
        let at = [crate::tensor::attrs::make_int("axis", 1)];
        let cx = InferCx {
            op: "Concat",
            at: &at,
            tys: &tys,
            vals: &[None, None],
            opset: 17,
        };
        let out = infer(&cx).unwrap()[0].clone().unwrap();
        assert_eq!(out.shape.unwrap()[1], Dim::Fixed(4));
    }

    #[test]
    fn gather_elements_types_from_the_indices() {
        let tys = [
            Some(TensorType::new(DType::F32, &[2, 8])),
            Some(TensorType::new(DType::I64, &[2, 3])),
        ];
        let cx = InferCx {
            op: "GatherElements",
            at: &[],
            tys: &tys,
            vals: &[None, None],
            opset: 17,
        };
        assert_eq!(
            static_gather_elements(&cx),
            Some(vec![Some(TensorType::new(DType::F32, &[2, 3]))])
        );
    }
}
