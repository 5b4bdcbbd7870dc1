//! Linear algebra: `MatMul`, `Gemm`, `Einsum`.

use ndarray::Axis;

use super::*;

/// The rules of this family, one per operator.
pub(super) const RULES: &[OpRule] = &[
    OpRule::new("Einsum").infer_static(static_einsum).eval(eval),
    OpRule::new("Gemm").infer(infer).eval(eval),
    OpRule::new("MatMul")
        .infer(infer)
        .infer_static(static_matmul)
        .eval(eval),
];

#[allow(clippy::bool_comparison)]
fn eval(op: &str, at: &[AttributeProto], inputs: &[Option<Tensor>], _opset: i64) -> R<Vec<Tensor>> {
    let x = || input(inputs, 0, op);
    let y = || input(inputs, 1, op);
    match op {
        "Einsum" => {
            let eq = attrs::string(at, "equation")
                .ok_or(EvalError::Invalid("Einsum equation".into()))?;
            let xs: Vec<ArrayD<f64>> = (0..inputs.len())
                .map(|i| match input(inputs, i, op)? {
                    Tensor::F32(a) => Ok(a.mapv(|v| v as f64)),
                    Tensor::F64(a) => Ok(a.clone()),
                    other => unsupported(format!("Einsum of {}", other.dtype())),
                })
                .collect::<R<_>>()?;
            let out = einsum(&eq, &xs)?;
            one(match x()? {
                Tensor::F32(_) => Tensor::F32(out.mapv(|v| v as f32)),
                _ => Tensor::F64(out),
            })
        }
        "MatMul" => one(Tensor::F32(matmul(&f32_of(x()?)?, &f32_of(y()?)?)?)),
        "Gemm" => {
            let mut a = f32_of(x()?)?;
            let mut b = f32_of(y()?)?;
            if a.ndim() != 2 || b.ndim() != 2 {
                return inv("Gemm needs 2-D inputs");
            }
            if attrs::int_or(at, "transA", 0) != 0 {
                a = a.reversed_axes();
            }
            if attrs::int_or(at, "transB", 0) != 0 {
                b = b.reversed_axes();
            }
            let alpha = attrs::float(at, "alpha").unwrap_or(1.0);
            let beta = attrs::float(at, "beta").unwrap_or(1.0);
            let mut out = matmul(&a, &b)?.mapv(|v| v * alpha);
            if let Some(c) = inputs.get(2).and_then(Option::as_ref) {
                let c = f32_of(c)?.mapv(|v| v * beta);
                out = zip2(&out, &c, |p, q| p + q)?;
            }
            one(Tensor::F32(out))
        }
        _ => unsupported(op.to_string()),
    }
}

fn infer(cx: &InferCx) -> Option<Vec<Option<TensorType>>> {
    let InferCx { op, at, tys, .. } = *cx;
    let (_, s0, dt0) = cx.first();
    match op {
        "MatMul" => {
            let a = s0?;
            let b = tys.get(1).cloned().flatten()?.shape?;
            if a.len() < 2 || b.len() < 2 {
                return None;
            }
            let (ab, bb) = (a[..a.len() - 2].to_vec(), b[..b.len() - 2].to_vec());
            let mut out = broadcast(&[&ab, &bb]);
            out.push(a[a.len() - 2].clone());
            out.push(b[b.len() - 1].clone());
            same(Some(out), dt0)
        }
        "Gemm" => {
            let a = s0?;
            let b = tys.get(1).cloned().flatten()?.shape?;
            if a.len() != 2 || b.len() != 2 {
                return None;
            }
            let m = if attrs::int_or(at, "transA", 0) != 0 {
                &a[1]
            } else {
                &a[0]
            };
            let n = if attrs::int_or(at, "transB", 0) != 0 {
                &b[0]
            } else {
                &b[1]
            };
            same(Some(vec![m.clone(), n.clone()]), dt0)
        }
        _ => None,
    }
}

/// Batched matrix product with numpy broadcasting of the leading dimensions.
pub(super) fn matmul(a: &ArrayD<f32>, b: &ArrayD<f32>) -> R<ArrayD<f32>> {
    use ndarray::Ix2;
    if a.ndim() < 2 || b.ndim() < 2 {
        return unsupported("MatMul of 1-D operands");
    }
    let (ra, rb) = (a.ndim(), b.ndim());
    let (m, k) = (a.shape()[ra - 2], a.shape()[ra - 1]);
    let (k2, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
    if k != k2 {
        return inv(format!("MatMul inner dimensions {k} and {k2} differ"));
    }
    // A plain weight matrix (the common case: x @ W) is one GEMM over all rows of x, without
    // materializing W once per batch entry.
    if rb == 2 {
        let rows: usize = a.shape()[..ra - 1].iter().product();
        let mut out_shape = a.shape()[..ra - 1].to_vec();
        out_shape.push(n);
        check_size(&out_shape)?;
        let a2 = reshape_to(a, &[rows, k])?
            .into_dimensionality::<Ix2>()
            .expect("2-D");
        let b2 = b.view().into_dimensionality::<Ix2>().expect("2-D");
        return reshape_to(&a2.dot(&b2).into_dyn(), &out_shape);
    }
    let batch = broadcast_shape(&a.shape()[..ra - 2], &b.shape()[..rb - 2])?;
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    check_size(&out_shape)?;
    let mut a_shape = batch.clone();
    a_shape.extend([m, k]);
    let mut b_shape = batch.clone();
    b_shape.extend([k, n]);
    let av = a
        .broadcast(IxDyn(&a_shape))
        .ok_or(EvalError::Invalid("MatMul broadcast".into()))?;
    let bv = b
        .broadcast(IxDyn(&b_shape))
        .ok_or(EvalError::Invalid("MatMul broadcast".into()))?;
    let nb: usize = batch.iter().product();
    let a3 = av
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&[nb, m, k]))
        .map_err(|e| EvalError::Invalid(e.to_string()))?;
    let b3 = bv
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&[nb, k, n]))
        .map_err(|e| EvalError::Invalid(e.to_string()))?;
    let mut out = ArrayD::<f32>::zeros(IxDyn(&[nb, m, n]));
    for i in 0..nb {
        let x = a3
            .index_axis(Axis(0), i)
            .into_dimensionality::<Ix2>()
            .expect("2-D");
        let y = b3
            .index_axis(Axis(0), i)
            .into_dimensionality::<Ix2>()
            .expect("2-D");
        out.index_axis_mut(Axis(0), i).assign(&x.dot(&y));
    }
    reshape_to(&out, &out_shape)
}
/// Einsum without ellipses, by enumerating every index assignment: for the small constant
/// operands folding sees (position-embedding outer products), never for weights.
pub(super) fn einsum(eq: &str, xs: &[ArrayD<f64>]) -> R<ArrayD<f64>> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    if eq.contains('.') {
        return unsupported("Einsum with an ellipsis");
    }
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<Vec<char>> = lhs.split(',').map(|t| t.chars().collect()).collect();
    if terms.len() != xs.len() {
        return inv("Einsum operand count");
    }
    let mut size: Vec<(char, usize)> = Vec::new();
    for (t, x) in terms.iter().zip(xs) {
        if t.len() != x.ndim() {
            return inv("Einsum term rank");
        }
        for (&c, &d) in t.iter().zip(x.shape()) {
            match size.iter().find(|(k, _)| *k == c) {
                Some(&(_, e)) if e != d => return inv("Einsum sizes differ"),
                Some(_) => {}
                None => size.push((c, d)),
            }
        }
    }
    let out: Vec<char> = match rhs {
        Some(r) => r.chars().collect(),
        None => {
            // Implicit output: the letters used once, in alphabetical order.
            let mut once: Vec<char> = size
                .iter()
                .map(|&(c, _)| c)
                .filter(|c| terms.iter().flatten().filter(|x| *x == c).count() == 1)
                .collect();
            once.sort_unstable();
            once
        }
    };
    let dim = |c: char| size.iter().find(|(k, _)| *k == c).map(|&(_, d)| d);
    let out_shape: Vec<usize> = out
        .iter()
        .map(|&c| dim(c).ok_or(EvalError::Invalid("Einsum output letter".into())))
        .collect::<R<_>>()?;
    let letters: Vec<char> = size.iter().map(|&(c, _)| c).collect();
    let total: usize = size.iter().map(|&(_, d)| d).product();
    if total > 1 << 24 {
        return unsupported("Einsum this large");
    }
    let mut res = ArrayD::<f64>::zeros(IxDyn(&out_shape));
    let mut pos = vec![0usize; letters.len()];
    let at = |pos: &[usize], t: &[char]| -> Vec<usize> {
        t.iter()
            .map(|c| pos[letters.iter().position(|l| l == c).expect("known letter")])
            .collect()
    };
    for _ in 0..total {
        let mut v = 1.0;
        for (t, x) in terms.iter().zip(xs) {
            v *= x[IxDyn(&at(&pos, t))];
        }
        res[IxDyn(&at(&pos, &out))] += v;
        for (i, p) in pos.iter_mut().enumerate().rev() {
            *p += 1;
            if *p < size[i].1 {
                break;
            }
            *p = 0;
        }
    }
    Ok(res)
}
/// The output shape of an Einsum `equation` over inputs of `shapes`. Ellipses are not
/// handled (`None`): no export in the family uses them where the batch analysis looks.
pub(super) fn einsum_shape(equation: &str, shapes: &[Vec<i64>]) -> Option<Vec<i64>> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    if eq.contains('.') {
        return None;
    }
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != shapes.len() {
        return None;
    }
    let mut size: HashMap<char, i64> = HashMap::new();
    let mut count: HashMap<char, usize> = HashMap::new();
    for (term, s) in terms.iter().zip(shapes) {
        if term.chars().count() != s.len() {
            return None;
        }
        for (c, &d) in term.chars().zip(s) {
            *count.entry(c).or_default() += 1;
            match size.get(&c) {
                Some(&e) if e != d && e != 1 && d != 1 => return None,
                Some(&e) if e != 1 => {}
                _ => {
                    size.insert(c, d);
                }
            }
        }
    }
    // Implicit mode: the labels seen once, in alphabetical order.
    let out: Vec<char> = match rhs {
        Some(r) => r.chars().collect(),
        None => {
            let mut v: Vec<char> = count
                .iter()
                .filter(|(_, &k)| k == 1)
                .map(|(&c, _)| c)
                .collect();
            v.sort();
            v
        }
    };
    out.iter().map(|c| size.get(c).copied()).collect()
}

/// A MatMul with a vector operand, which the rule of [`infer`] leaves untyped.
fn static_matmul(cx: &InferCx) -> Types {
    let (x, a, b) = (cx.ty(0)?, cx.st(0)?, cx.st(1)?);
    if b.len() == 1 && a.len() >= 2 {
        Some(vec![Some(TensorType::new(x.dtype, &a[..a.len() - 1]))])
    } else if a.len() == 1 && b.len() >= 2 {
        let mut o = b[..b.len() - 2].to_vec();
        o.push(b[b.len() - 1]);
        Some(vec![Some(TensorType::new(x.dtype, &o))])
    } else {
        None
    }
}

/// transformers RT-DETR / D-FINE build the sine position embedding with an outer product
/// `einsum("i,j->ij")`; without its shape the encoder's `Add` of that embedding cannot be
/// followed.
fn static_einsum(cx: &InferCx) -> Types {
    let eq = attrs::string(cx.at, "equation")?;
    let shapes: Vec<Vec<i64>> = (0..cx.tys.len()).map(|k| cx.st(k)).collect::<Option<_>>()?;
    let s = einsum_shape(&eq, &shapes)?;
    Some(vec![Some(TensorType::new(cx.ty(0)?.dtype, &s))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn einsum_shapes_explicit_and_implicit() {
        assert_eq!(
            einsum_shape("i,j->ij", &[vec![2], vec![3]]),
            Some(vec![2, 3])
        );
        // Implicit output: the labels seen once, alphabetically (i, k).
        assert_eq!(
            einsum_shape("bij,bjk", &[vec![4, 2, 3], vec![4, 3, 5]]),
            Some(vec![2, 5])
        );
        assert_eq!(einsum_shape("...i,i", &[vec![2], vec![2]]), None);
        assert_eq!(einsum_shape("i,i->i", &[vec![2], vec![3]]), None);
    }

    #[test]
    fn matmul_with_a_vector_operand() {
        let tys = [
            Some(TensorType::new(DType::F32, &[5, 3])),
            Some(TensorType::new(DType::F32, &[3])),
        ];
        let cx = InferCx {
            op: "MatMul",
            at: &[],
            tys: &tys,
            vals: &[None, None],
            opset: 17,
        };
        assert_eq!(
            static_matmul(&cx),
            Some(vec![Some(TensorType::new(DType::F32, &[5]))])
        );
    }
}
