//! Shape operators: `Shape`, `Size`, `Reshape` and its relatives (`Flatten`, `Squeeze`,
//! `Unsqueeze`), `Expand`, `Tile`, `ConstantOfShape`, `Range`, `Constant`.

use super::*;

/// The rules of this family, one per operator.
pub(super) const RULES: &[OpRule] = &[
    OpRule::new("Constant").eval(eval),
    OpRule::new("ConstantOfShape").infer(infer).eval(eval),
    OpRule::new("Expand").infer(infer).eval(eval),
    OpRule::new("Flatten").infer(infer).eval(eval),
    OpRule::new("Range").eval(eval),
    OpRule::new("Reshape").infer(infer).eval(eval),
    OpRule::new("Shape").infer(infer).eval(eval),
    OpRule::new("Size").infer(infer).eval(eval),
    OpRule::new("Squeeze").infer(infer).eval(eval),
    OpRule::new("Tile").infer(infer).eval(eval),
    OpRule::new("Unsqueeze").infer(infer).eval(eval),
];

#[allow(clippy::bool_comparison)]
fn eval(op: &str, at: &[AttributeProto], inputs: &[Option<Tensor>], opset: i64) -> R<Vec<Tensor>> {
    let x = || input(inputs, 0, op);
    let y = || input(inputs, 1, op);
    match op {
        "Constant" => {
            if let Some(t) = attrs::tensor(at, "value") {
                return one(Tensor::from_proto(t).map_err(EvalError::Invalid)?);
            }
            if let Some(v) = attrs::int(at, "value_int") {
                return one(Tensor::scalar_i64(v));
            }
            if let Some(v) =
                attrs::ints(at, "value_ints").filter(|_| attrs::find(at, "value_ints").is_some())
            {
                return one(Tensor::vec_i64(v));
            }
            if let Some(v) = attrs::float(at, "value_float") {
                return one(Tensor::F32(ArrayD::from_elem(IxDyn(&[]), v)));
            }
            if let Some(v) = attrs::floats(at, "value_floats") {
                let n = v.len();
                return one(Tensor::F32(
                    ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"),
                ));
            }
            unsupported("Constant with this attribute")
        }
        "Shape" => {
            let shape: Vec<i64> = x()?.shape().iter().map(|&d| d as i64).collect();
            let r = shape.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let s = clamp(attrs::int_or(at, "start", 0));
            let e = clamp(attrs::int_or(at, "end", r));
            one(Tensor::vec_i64(shape[s..e.max(s)].to_vec()))
        }
        "Size" => one(Tensor::scalar_i64(x()?.len() as i64)),
        "Reshape" => {
            let data = x()?;
            let spec =
                opt_ints(inputs, 1)?.ok_or(EvalError::Invalid("Reshape without shape".into()))?;
            let allowzero = attrs::int_or(at, "allowzero", 0) != 0;
            let shape = reshape_target(&data.shape(), &spec, allowzero)?;
            one(try_map_any!(data, a => reshape_to(a, &shape)))
        }
        "Flatten" => {
            let data = x()?;
            let s = data.shape();
            let ax = axis(attrs::int_or(at, "axis", 1), s.len() + 1)
                .ok_or(EvalError::Invalid("Flatten axis".into()))?;
            let outer: usize = s[..ax].iter().product();
            let inner: usize = s[ax..].iter().product();
            one(try_map_any!(data, a => reshape_to(a, &[outer, inner])))
        }
        "Unsqueeze" => {
            let data = x()?;
            let axes = eval_ints_at(accessors::axes_place(op, opset), at, inputs)?
                .ok_or(EvalError::Invalid("Unsqueeze without axes".into()))?;
            let r = data.shape().len() + axes.len();
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&a| axis(a, r).ok_or(EvalError::Invalid("Unsqueeze axis".into())))
                .collect::<R<_>>()?;
            axes.sort_unstable();
            let mut shape = data.shape();
            for a in axes {
                if a > shape.len() {
                    return inv("Unsqueeze axis out of range");
                }
                shape.insert(a, 1);
            }
            one(try_map_any!(data, a => reshape_to(a, &shape)))
        }
        "Squeeze" => {
            let data = x()?;
            let s = data.shape();
            let axes = eval_ints_at(accessors::axes_place(op, opset), at, inputs)?;
            let drop: Vec<usize> = match axes {
                Some(ax) => ax
                    .iter()
                    .map(|&a| axis(a, s.len()).ok_or(EvalError::Invalid("Squeeze axis".into())))
                    .collect::<R<_>>()?,
                None => (0..s.len()).filter(|&i| s[i] == 1).collect(),
            };
            if drop.iter().any(|&a| s[a] != 1) {
                return inv("Squeeze of a dimension that is not 1");
            }
            let shape: Vec<usize> = (0..s.len())
                .filter(|i| !drop.contains(i))
                .map(|i| s[i])
                .collect();
            one(try_map_any!(data, a => reshape_to(a, &shape)))
        }
        "Expand" => {
            let data = x()?;
            let spec = to_usize_shape(
                &opt_ints(inputs, 1)?.ok_or(EvalError::Invalid("Expand shape".into()))?,
            )?;
            let shape = broadcast_shape(&data.shape(), &spec)?;
            check_size(&shape)?;
            one(try_map_any!(data, a => a
                .broadcast(IxDyn(&shape))
                .map(|v| v.to_owned())
                .ok_or(EvalError::Invalid("Expand".into()))))
        }
        "Tile" => {
            let data = x()?;
            let reps = to_usize_shape(
                &opt_ints(inputs, 1)?.ok_or(EvalError::Invalid("Tile repeats".into()))?,
            )?;
            let s = data.shape();
            if reps.len() != s.len() {
                return inv("Tile repeats length differs from rank");
            }
            let out: Vec<usize> = s
                .iter()
                .zip(&reps)
                .map(|(a, b)| a.checked_mul(*b))
                .collect::<Option<_>>()
                .ok_or(EvalError::Invalid("Tile result too large".into()))?;
            check_size(&out)?;
            one(
                map_any!(data, a => ArrayD::from_shape_fn(IxDyn(&out), |ix| {
                    let src: Vec<usize> = (0..s.len()).map(|d| ix[d] % s[d]).collect();
                    a[IxDyn(&src)]
                })),
            )
        }
        "ConstantOfShape" => {
            let shape = to_usize_shape(
                &opt_ints(inputs, 0)?.ok_or(EvalError::Invalid("ConstantOfShape shape".into()))?,
            )?;
            check_size(&shape)?;
            let v = match attrs::tensor(at, "value") {
                Some(t) => Tensor::from_proto(t).map_err(EvalError::Invalid)?,
                None => Tensor::F32(ArrayD::from_elem(IxDyn(&[1]), 0.0)),
            };
            if v.len() != 1 {
                return inv("ConstantOfShape value must have one element");
            }
            one(map_any!(&v, a => ArrayD::from_elem(IxDyn(&shape), *a.iter().next().expect("one"))))
        }
        "Range" => {
            let (s, l, d) = (x()?, y()?, input(inputs, 2, op)?);
            match (s, l, d) {
                (Tensor::I64(_), _, _) | (Tensor::I32(_), _, _) => {
                    let (s, l, d) = (
                        s.as_i64_vec().unwrap_or_default(),
                        l.as_i64_vec().unwrap_or_default(),
                        d.as_i64_vec().unwrap_or_default(),
                    );
                    let (&[s], &[l], &[d]) = (&s[..], &l[..], &d[..]) else {
                        return inv("Range needs scalars");
                    };
                    if d == 0 {
                        return inv("Range delta is 0");
                    }
                    // In i128: `l - s` and `s + i * d` overflow i64 for extreme bounds. Every
                    // value produced lies between s and l, so it fits an i64 again.
                    let (s, l, d) = (s as i128, l as i128, d as i128);
                    let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
                    check_size(&[n])?;
                    let v: Vec<i64> = (0..n as i128).map(|i| (s + i * d) as i64).collect();
                    let t = Tensor::vec_i64(v);
                    one(if matches!(x()?, Tensor::I32(_)) {
                        cast(&t, DType::I32)?
                    } else {
                        t
                    })
                }
                _ => {
                    let (s, l, d) = (
                        s.as_f64_vec().unwrap_or_default(),
                        l.as_f64_vec().unwrap_or_default(),
                        d.as_f64_vec().unwrap_or_default(),
                    );
                    let (&[s], &[l], &[d]) = (&s[..], &l[..], &d[..]) else {
                        return inv("Range needs scalars");
                    };
                    if d == 0.0 {
                        return inv("Range delta is 0");
                    }
                    let n = ((l - s) / d).ceil().max(0.0) as usize;
                    check_size(&[n])?;
                    let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
                    let t = Tensor::F64(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"));
                    one(cast(&t, x()?.dtype())?)
                }
            }
        }
        _ => unsupported(op.to_string()),
    }
}

fn infer(cx: &InferCx) -> Option<Vec<Option<TensorType>>> {
    let InferCx {
        op,
        at,
        vals,
        opset,
        ..
    } = *cx;
    let (t0, s0, dt0) = cx.first();
    match op {
        "Flatten" => {
            let x = s0?;
            let ax = axis(attrs::int_or(at, "axis", 1), x.len() + 1)?;
            let prod = |d: &[Dim]| {
                d.iter()
                    .map(Dim::fixed)
                    .try_fold(1i64, |a, v| v.and_then(|v| a.checked_mul(v)))
            };
            let o = |p: Option<i64>| p.map_or(Dim::Unknown, Dim::Fixed);
            same(Some(vec![o(prod(&x[..ax])), o(prod(&x[ax..]))]), dt0)
        }
        "Reshape" => {
            let spec = cx.ints(1)?;
            let x = s0?;
            let allowzero = attrs::int_or(at, "allowzero", 0) != 0;
            if let Some(xs) = t0.as_ref().and_then(TensorType::static_shape) {
                let xs: Vec<usize> = xs
                    .iter()
                    .map(|&d| usize::try_from(d).ok())
                    .collect::<Option<_>>()?;
                let out = super::shape::reshape_target(&xs, &spec, allowzero).ok()?;
                return same(
                    fixed(&out.iter().map(|&d| d as i64).collect::<Vec<_>>()),
                    dt0,
                );
            }
            let out = spec
                .iter()
                .enumerate()
                .map(|(i, &d)| match d {
                    0 if !allowzero => x.get(i).cloned().unwrap_or(Dim::Unknown),
                    d if d > 0 => Dim::Fixed(d),
                    _ => Dim::Unknown,
                })
                .collect();
            same(Some(out), dt0)
        }
        "Squeeze" => {
            let x = s0?;
            let axes = infer_ints_at(accessors::axes_place(op, opset), at, vals);
            let drop: Vec<usize> = match axes {
                Some(a) => a.iter().map(|&v| axis(v, x.len())).collect::<Option<_>>()?,
                None => (0..x.len()).filter(|&i| x[i] == Dim::Fixed(1)).collect(),
            };
            same(
                Some(
                    (0..x.len())
                        .filter(|i| !drop.contains(i))
                        .map(|i| x[i].clone())
                        .collect(),
                ),
                dt0,
            )
        }
        "Unsqueeze" => {
            let x = s0?;
            let axes = infer_ints_at(accessors::axes_place(op, opset), at, vals)?;
            let r = x.len() + axes.len();
            let mut ax: Vec<usize> = axes.iter().map(|&v| axis(v, r)).collect::<Option<_>>()?;
            ax.sort_unstable();
            let mut out = x;
            for a in ax {
                if a > out.len() {
                    return None;
                }
                out.insert(a, Dim::Fixed(1));
            }
            same(Some(out), dt0)
        }
        "Shape" => {
            let r = s0?.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r);
            let s = clamp(attrs::int_or(at, "start", 0));
            let e = clamp(attrs::int_or(at, "end", r));
            same(fixed(&[(e - s).max(0)]), Some(DType::I64))
        }
        "Size" => same(Some(vec![]), Some(DType::I64)),
        "ConstantOfShape" => {
            let shape = cx.ints(0)?;
            let dt =
                attrs::tensor(at, "value").map_or(DType::F32, |t| DType(t.data_type.unwrap_or(1)));
            same(fixed(&shape), Some(dt))
        }
        "Expand" => {
            let x = s0?;
            let spec: Vec<Dim> = cx.ints(1)?.iter().map(|&d| Dim::Fixed(d)).collect();
            same(Some(broadcast(&[&x, &spec])), dt0)
        }
        "Tile" => {
            let x = s0?;
            let reps = cx.ints(1)?;
            if reps.len() != x.len() {
                return None;
            }
            same(
                Some(
                    x.iter()
                        .zip(&reps)
                        .map(|(d, &r)| {
                            d.fixed()
                                .and_then(|v| v.checked_mul(r))
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

pub fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> R<Vec<usize>> {
    // Shape inference calls this with declared shapes, which a corrupt model can make as large
    // as it likes: every product is checked.
    let too_large = || EvalError::Invalid(format!("Reshape of {input:?} to {spec:?} overflows"));
    let total = input
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&t| i64::try_from(t).is_ok())
        .ok_or_else(too_large)?;
    let mut out: Vec<i64> = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            0 if !allowzero => out.push(
                *input
                    .get(i)
                    .ok_or(EvalError::Invalid("Reshape 0 past rank".into()))?
                    as i64,
            ),
            -1 => {
                if infer.replace(i).is_some() {
                    return inv("Reshape with two -1");
                }
                out.push(1);
            }
            d if d < 0 => return inv(format!("Reshape dimension {d}")),
            d => out.push(d),
        }
    }
    let known = out
        .iter()
        .try_fold(1i64, |a, &d| a.checked_mul(d))
        .ok_or_else(too_large)?;
    if let Some(i) = infer {
        if known == 0 || total as i64 % known != 0 {
            return inv(format!("cannot reshape {input:?} to {spec:?}"));
        }
        out[i] = total as i64 / known;
    }
    let out = to_usize_shape(&out)?;
    if out.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(total) {
        return inv(format!("cannot reshape {input:?} to {spec:?}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_target_copies_zero_and_infers_minus_one() {
        assert_eq!(reshape_target(&[2, 3, 4], &[0, -1], false), Ok(vec![2, 12]));
        assert!(reshape_target(&[2, 3, 4], &[0, 0], true).is_err());
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
    }

    #[test]
    fn unsqueeze_axes_are_an_attribute_before_opset_13() {
        let x = Tensor::vec_i64(vec![1, 2]);
        let at = [crate::tensor::attrs::make_ints("axes", vec![0])];
        let old = eval("Unsqueeze", &at, &[Some(x.clone())], 12).unwrap();
        let new = eval(
            "Unsqueeze",
            &[],
            &[Some(x), Some(Tensor::vec_i64(vec![0]))],
            13,
        )
        .unwrap();
        assert_eq!(old[0].shape(), vec![1, 2]);
        assert_eq!(old, new);
    }

    #[test]
    fn shape_of_a_typed_input_is_its_rank() {
        let tys = [Some(TensorType::new(DType::F32, &[2, 3, 5]))];
        let cx = InferCx {
            op: "Shape",
            at: &[],
            tys: &tys,
            vals: &[None],
            opset: 17,
        };
        assert_eq!(
            infer(&cx),
            Some(vec![Some(TensorType::new(DType::I64, &[3]))])
        );
    }
}
