//! Reductions, arg-reductions, scans (`CumSum`) and `TopK`.

use ndarray::Axis;

use super::elementwise::Arith;
use super::*;

/// The rules of this family, one per operator.
pub(super) const RULES: &[OpRule] = &[
    OpRule::new("CumSum")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Along)
        .positional(),
    OpRule::new("ReduceMax").infer(infer).eval(eval),
    OpRule::new("ReduceMean").infer(infer).eval(eval),
    OpRule::new("ReduceMin").infer(infer).eval(eval),
    OpRule::new("ReduceProd").infer(infer).eval(eval),
    OpRule::new("ReduceSum").infer(infer).eval(eval),
    OpRule::new("ArgMax").infer(infer),
    OpRule::new("ArgMin").infer(infer),
    OpRule::new("ReduceL2").infer(infer),
    OpRule::new("TopK").infer_static(static_topk),
];

#[allow(clippy::bool_comparison)]
fn eval(op: &str, at: &[AttributeProto], inputs: &[Option<Tensor>], opset: i64) -> R<Vec<Tensor>> {
    let x = || input(inputs, 0, op);
    let y = || input(inputs, 1, op);
    match op {
        "CumSum" => {
            let data = x()?;
            let ax = y()?
                .as_i64_vec()
                .and_then(|v| v.first().copied())
                .ok_or(EvalError::Invalid("CumSum axis".into()))?;
            let ax =
                axis(ax, data.shape().len()).ok_or(EvalError::Invalid("CumSum axis".into()))?;
            let exclusive = attrs::int_or(at, "exclusive", 0) != 0;
            let reverse = attrs::int_or(at, "reverse", 0) != 0;
            macro_rules! cs {
                ($a:expr, $zero:expr) => {{
                    let mut out = $a.clone();
                    for mut lane in out.lanes_mut(Axis(ax)) {
                        let n = lane.len();
                        let mut acc = $zero;
                        for k in 0..n {
                            let i = if reverse { n - 1 - k } else { k };
                            let v = lane[i];
                            if exclusive {
                                lane[i] = acc;
                                acc = acc.add_(v);
                            } else {
                                acc = acc.add_(v);
                                lane[i] = acc;
                            }
                        }
                    }
                    out
                }};
            }
            one(match data {
                Tensor::F32(a) => Tensor::F32(cs!(a, 0.0f32)),
                Tensor::F64(a) => Tensor::F64(cs!(a, 0.0f64)),
                Tensor::I64(a) => Tensor::I64(cs!(a, 0i64)),
                Tensor::I32(a) => Tensor::I32(cs!(a, 0i32)),
                other => return inv(format!("CumSum of {}", other.dtype())),
            })
        }
        "ReduceMax" | "ReduceMin" | "ReduceSum" | "ReduceMean" | "ReduceProd" => {
            reduce(op, at, inputs, opset)
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
        "CumSum" => same(s0, dt0),
        "ReduceMax" | "ReduceMin" | "ReduceSum" | "ReduceMean" | "ReduceProd" | "ReduceL2"
        | "ArgMax" | "ArgMin" => {
            let x = s0?;
            let keep = attrs::int_or(at, "keepdims", 1) != 0;
            let axes: Vec<usize> = if op.starts_with("Arg") {
                vec![axis(attrs::int_or(at, "axis", 0), x.len())?]
            } else {
                let place = accessors::axes_place(op, opset);
                let from_input = matches!(place, Some(accessors::Place::Input(_)));
                let a = infer_ints_at(place, at, vals);
                match a {
                    Some(a) if !a.is_empty() => {
                        a.iter().map(|&v| axis(v, x.len())).collect::<Option<_>>()?
                    }
                    Some(_) | None => {
                        if from_input && tys.get(1).cloned().flatten().is_some() {
                            return None;
                        }
                        (0..x.len()).collect()
                    }
                }
            };
            let out = (0..x.len())
                .filter_map(|i| match (axes.contains(&i), keep) {
                    (true, true) => Some(Dim::Fixed(1)),
                    (true, false) => None,
                    _ => Some(x[i].clone()),
                })
                .collect();
            let dt = if op.starts_with("Arg") {
                DType::I64
            } else {
                dt0?
            };
            same(Some(out), Some(dt))
        }
        _ => None,
    }
}

pub(super) fn reduce(
    op: &str,
    at: &[AttributeProto],
    inputs: &[Option<Tensor>],
    opset: i64,
) -> R<Vec<Tensor>> {
    let data = input(inputs, 0, op)?;
    let s = data.shape();
    let axes = eval_ints_at(accessors::axes_place(op, opset), at, inputs)?;
    let keep = attrs::int_or(at, "keepdims", 1) != 0;
    let axes: Vec<usize> = match axes.filter(|a| !a.is_empty()) {
        Some(a) => a
            .iter()
            .map(|&x| axis(x, s.len()).ok_or(EvalError::Invalid(format!("{op} axis"))))
            .collect::<R<_>>()?,
        None if attrs::int_or(at, "noop_with_empty_axes", 0) != 0 => return Ok(vec![data.clone()]),
        None => (0..s.len()).collect(),
    };
    let vals = data
        .as_f64_vec()
        .ok_or(EvalError::Invalid(format!("{op} of bool")))?;
    let arr = ArrayD::from_shape_vec(IxDyn(&s), vals).expect("same len");
    let mut sorted = axes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let mut cur = arr;
    for &a in sorted.iter().rev() {
        let n = cur.shape()[a];
        cur = match op {
            "ReduceMax" => cur.map_axis(Axis(a), |l| {
                l.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            }),
            "ReduceMin" => {
                cur.map_axis(Axis(a), |l| l.iter().copied().fold(f64::INFINITY, f64::min))
            }
            "ReduceSum" => cur.sum_axis(Axis(a)),
            "ReduceProd" => cur.map_axis(Axis(a), |l| l.iter().product()),
            _ => cur.sum_axis(Axis(a)) / n as f64,
        };
    }
    let mut shape: Vec<usize> = (0..s.len())
        .filter(|d| !sorted.contains(d))
        .map(|d| s[d])
        .collect();
    if keep {
        shape = (0..s.len())
            .map(|d| if sorted.contains(&d) { 1 } else { s[d] })
            .collect();
    }
    let res = Tensor::F64(reshape_to(&cur, &shape)?);
    Ok(vec![cast(&res, data.dtype())?])
}

/// The values and int64 indices at the input's shape with `k` on the axis.
fn static_topk(cx: &InferCx) -> Types {
    let (x, mut xs) = (cx.ty(0)?, cx.st(0)?);
    let k = cx
        .vals
        .get(1)
        .cloned()
        .flatten()
        .and_then(|t| t.as_i64_vec())
        .and_then(|v| v.first().copied())?;
    let a = norm_axis(attrs::int_or(cx.at, "axis", -1), xs.len())?;
    xs[a] = k;
    Some(vec![
        Some(TensorType::new(x.dtype, &xs)),
        Some(TensorType::new(DType::I64, &xs)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_keep_or_drop_axes() {
        let tys = [Some(TensorType::new(DType::F32, &[2, 3, 4]))];
        let at = [
            crate::tensor::attrs::make_ints("axes", vec![1]),
            crate::tensor::attrs::make_int("keepdims", 0),
        ];
        let cx = InferCx {
            op: "ReduceMean",
            at: &at,
            tys: &tys,
            vals: &[None],
            opset: 17,
        };
        assert_eq!(
            infer(&cx),
            Some(vec![Some(TensorType::new(DType::F32, &[2, 4]))])
        );
        let cx = InferCx {
            op: "ArgMax",
            at: &at[1..],
            tys: &tys,
            vals: &[None],
            opset: 17,
        };
        assert_eq!(
            infer(&cx),
            Some(vec![Some(TensorType::new(DType::I64, &[3, 4]))])
        );
    }

    #[test]
    fn topk_types_values_and_indices() {
        let tys = [Some(TensorType::new(DType::F32, &[1, 300, 80])), None];
        let vals = [None, Some(Tensor::vec_i64(vec![100]))];
        let at = [crate::tensor::attrs::make_int("axis", 1)];
        let cx = InferCx {
            op: "TopK",
            at: &at,
            tys: &tys,
            vals: &vals,
            opset: 17,
        };
        assert_eq!(
            static_topk(&cx),
            Some(vec![
                Some(TensorType::new(DType::F32, &[1, 100, 80])),
                Some(TensorType::new(DType::I64, &[1, 100, 80])),
            ])
        );
    }
}
