//! Element-wise operators: unary math and activations, arithmetic, comparison and logic with
//! numpy broadcasting, `Where`, `Clip` and casts.

use super::*;

macro_rules! num_binary {
    ($a:expr, $b:expr, $name:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (Tensor::F32(p), Tensor::F32(q)) => Tensor::F32(zip2(p, q, |$x, $y| $body)?),
            (Tensor::F64(p), Tensor::F64(q)) => Tensor::F64(zip2(p, q, |$x, $y| $body)?),
            (Tensor::F16(p), Tensor::F16(q)) => Tensor::F16(zip2(p, q, |$x, $y| $body)?),
            (Tensor::I64(p), Tensor::I64(q)) => Tensor::I64(zip2(p, q, |$x, $y| $body)?),
            (Tensor::I32(p), Tensor::I32(q)) => Tensor::I32(zip2(p, q, |$x, $y| $body)?),
            (Tensor::I8(p), Tensor::I8(q)) => Tensor::I8(zip2(p, q, |$x, $y| $body)?),
            (Tensor::U8(p), Tensor::U8(q)) => Tensor::U8(zip2(p, q, |$x, $y| $body)?),
            (p, q) => return inv(format!("{} of {} and {}", $name, p.dtype(), q.dtype())),
        }
    };
}

macro_rules! cmp_binary {
    ($a:expr, $b:expr, $name:expr, |$x:ident, $y:ident| $body:expr) => {
        Tensor::Bool(match ($a, $b) {
            (Tensor::F32(p), Tensor::F32(q)) => zip2(p, q, |$x, $y| $body)?,
            (Tensor::F64(p), Tensor::F64(q)) => zip2(p, q, |$x, $y| $body)?,
            (Tensor::F16(p), Tensor::F16(q)) => zip2(p, q, |$x, $y| $body)?,
            (Tensor::I64(p), Tensor::I64(q)) => zip2(p, q, |$x, $y| $body)?,
            (Tensor::I32(p), Tensor::I32(q)) => zip2(p, q, |$x, $y| $body)?,
            (Tensor::I8(p), Tensor::I8(q)) => zip2(p, q, |$x, $y| $body)?,
            (Tensor::U8(p), Tensor::U8(q)) => zip2(p, q, |$x, $y| $body)?,
            (Tensor::Bool(p), Tensor::Bool(q)) => zip2(p, q, |$x, $y| $body)?,
            (p, q) => return inv(format!("{} of {} and {}", $name, p.dtype(), q.dtype())),
        })
    };
}

/// The rules of this family, one per operator.
pub(super) const RULES: &[OpRule] = &[
    OpRule::new("Abs")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Add")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("And")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Cast")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Ceil")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Clip")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Cos")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Div")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Equal")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Exp")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Floor")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Greater")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("GreaterOrEqual")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Identity")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Less")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("LessOrEqual")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Log")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Max")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Mean")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Min")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Mul")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Neg")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Not")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Or")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Pow")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Reciprocal")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Relu")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Round")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Sigmoid")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Sin")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Sqrt")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Sub")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Sum")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Tanh")
        .infer(infer)
        .infer_static(super::same_static)
        .eval(eval)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Where")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Xor")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Broadcast),
    OpRule::new("Acos")
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Asin")
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Atan")
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("BitShift").axes(Axes::Broadcast),
    OpRule::new("CastLike")
        .infer(infer)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Dropout")
        .infer(infer)
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Elu")
        .infer(infer)
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Erf")
        .infer(infer)
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Gelu")
        .infer(infer)
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("HardSigmoid")
        .infer(infer)
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("HardSwish")
        .infer(infer)
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("IsInf")
        .infer(infer)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("IsNaN")
        .infer(infer)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("LeakyRelu")
        .infer(infer)
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Mish")
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Mod").infer(infer).axes(Axes::Broadcast),
    OpRule::new("PRelu").infer(infer).axes(Axes::Broadcast),
    OpRule::new("Selu")
        .infer(infer)
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Sign")
        .infer(infer)
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
    OpRule::new("Softplus")
        .infer(infer)
        .infer_static(super::same_static)
        .axes(Axes::Elementwise)
        .positional(),
];

#[allow(clippy::bool_comparison)]
fn eval(op: &str, at: &[AttributeProto], inputs: &[Option<Tensor>], opset: i64) -> R<Vec<Tensor>> {
    let x = || input(inputs, 0, op);
    let y = || input(inputs, 1, op);
    match op {
        "Identity" => one(x()?.clone()),
        "Add" => one(num_binary!(x()?, y()?, op, |a, b| a.add_(b))),
        "Sub" => one(num_binary!(x()?, y()?, op, |a, b| a.sub_(b))),
        "Mul" => one(num_binary!(x()?, y()?, op, |a, b| a.mul_(b))),
        "Div" => {
            let (a, b) = (x()?, y()?);
            if !b.dtype().is_float() && b.as_i64_vec().is_some_and(|v| v.contains(&0)) {
                return inv("integer division by zero");
            }
            one(num_binary!(a, b, op, |p, q| p.div_(q)))
        }
        "Min" | "Max" | "Sum" | "Mean" => {
            let mut acc = x()?.clone();
            for i in 1..inputs.len() {
                let b = input(inputs, i, op)?;
                acc = match op {
                    "Min" => num_binary!(&acc, b, op, |p, q| if q < p { q } else { p }),
                    "Max" => num_binary!(&acc, b, op, |p, q| if q > p { q } else { p }),
                    _ => num_binary!(&acc, b, op, |p, q| p.add_(q)),
                };
            }
            if op == "Mean" {
                let n = inputs.len() as f64;
                acc = float_unary(&acc, op, |v| v / n)?;
            }
            one(acc)
        }
        "Clip" => {
            // Bounds are inputs from opset 11, attributes before; either may be absent.
            let bound = |slot: usize, attr: &str| -> R<Option<Tensor>> {
                if opset >= 11 {
                    return Ok(inputs.get(slot).cloned().flatten());
                }
                match attrs::float(at, attr) {
                    Some(v) => Ok(Some(cast(
                        &Tensor::F32(ArrayD::from_elem(IxDyn(&[]), v)),
                        x()?.dtype(),
                    )?)),
                    None => Ok(None),
                }
            };
            let mut acc = x()?.clone();
            if let Some(lo) = bound(1, "min")? {
                acc = num_binary!(&acc, &lo, op, |p, q| if q > p { q } else { p });
            }
            if let Some(hi) = bound(2, "max")? {
                acc = num_binary!(&acc, &hi, op, |p, q| if q < p { q } else { p });
            }
            if acc.shape() != x()?.shape() {
                return inv("Clip bounds must be scalars");
            }
            one(acc)
        }
        "Pow" => {
            let e = y()?
                .as_f64_vec()
                .ok_or(EvalError::Invalid("Pow exponent".into()))?;
            let e_shape = y()?.shape();
            let e = Tensor::F64(ArrayD::from_shape_vec(IxDyn(&e_shape), e).expect("same shape"));
            let Tensor::F64(ea) = &e else { unreachable!() };
            one(match x()? {
                Tensor::F32(a) => Tensor::F32(zip2(a, ea, |p, q| (p as f64).powf(q) as f32)?),
                Tensor::F64(a) => Tensor::F64(zip2(a, ea, |p, q| p.powf(q))?),
                Tensor::F16(a) => {
                    Tensor::F16(zip2(a, ea, |p, q| f16::from_f64(p.to_f64().powf(q)))?)
                }
                Tensor::I64(a) => Tensor::I64(zip2(a, ea, |p, q| (p as f64).powf(q) as i64)?),
                Tensor::I32(a) => Tensor::I32(zip2(a, ea, |p, q| (p as f64).powf(q) as i32)?),
                other => return inv(format!("Pow of {}", other.dtype())),
            })
        }
        "Equal" => one(cmp_binary!(x()?, y()?, op, |a, b| a == b)),
        "Less" => one(cmp_binary!(x()?, y()?, op, |a, b| a < b)),
        "Greater" => one(cmp_binary!(x()?, y()?, op, |a, b| a > b)),
        "LessOrEqual" => one(cmp_binary!(x()?, y()?, op, |a, b| a <= b)),
        "GreaterOrEqual" => one(cmp_binary!(x()?, y()?, op, |a, b| a >= b)),
        "And" | "Or" | "Xor" => match (x()?, y()?) {
            (Tensor::Bool(a), Tensor::Bool(b)) => one(Tensor::Bool(match op {
                "And" => zip2(a, b, |p, q| p && q)?,
                "Or" => zip2(a, b, |p, q| p || q)?,
                _ => zip2(a, b, |p, q| p != q)?,
            })),
            _ => inv(format!("{op} needs bool inputs")),
        },
        "Not" => match x()? {
            Tensor::Bool(a) => one(Tensor::Bool(a.mapv(|v| !v))),
            _ => inv("Not needs a bool input"),
        },
        "Sqrt" => one(float_unary(x()?, op, f64::sqrt)?),
        "Exp" => one(float_unary(x()?, op, f64::exp)?),
        "Log" => one(float_unary(x()?, op, f64::ln)?),
        "Sin" => one(float_unary(x()?, op, f64::sin)?),
        "Cos" => one(float_unary(x()?, op, f64::cos)?),
        "Tanh" => one(float_unary(x()?, op, f64::tanh)?),
        "Sigmoid" => one(float_unary(x()?, op, |v| 1.0 / (1.0 + (-v).exp()))?),
        "Reciprocal" => one(float_unary(x()?, op, |v| 1.0 / v)?),
        "Floor" => one(float_unary(x()?, op, f64::floor)?),
        "Ceil" => one(float_unary(x()?, op, f64::ceil)?),
        "Round" => one(float_unary(x()?, op, f64::round_ties_even)?),
        "Neg" => one(signed_unary(x()?, op, |v| -v, |v| v.wrapping_neg())?),
        "Abs" => one(signed_unary(x()?, op, f64::abs, i64::wrapping_abs)?),
        "Relu" => one(signed_unary(x()?, op, |v| v.max(0.0), |v| v.max(0))?),
        "Cast" => {
            let to = DType(
                attrs::int(at, "to").ok_or(EvalError::Invalid("Cast without 'to'".into()))? as i32,
            );
            one(cast(x()?, to)?)
        }
        "Where" => {
            let c = match x()? {
                Tensor::Bool(c) => c,
                _ => return inv("Where condition must be bool"),
            };
            let (a, b) = (input(inputs, 1, op)?, input(inputs, 2, op)?);
            let shape = broadcast_shape(&broadcast_shape(c.shape(), &a.shape())?, &b.shape())?;
            check_size(&shape)?;
            let cv = c.broadcast(IxDyn(&shape)).expect("checked");
            macro_rules! sel {
                ($p:expr, $q:expr) => {{
                    let pv = $p.broadcast(IxDyn(&shape)).expect("checked");
                    let qv = $q.broadcast(IxDyn(&shape)).expect("checked");
                    Zip::from(&cv)
                        .and(&pv)
                        .and(&qv)
                        .map_collect(|&c, &p, &q| if c { p } else { q })
                }};
            }
            one(match (a, b) {
                (Tensor::F32(p), Tensor::F32(q)) => Tensor::F32(sel!(p, q)),
                (Tensor::F64(p), Tensor::F64(q)) => Tensor::F64(sel!(p, q)),
                (Tensor::F16(p), Tensor::F16(q)) => Tensor::F16(sel!(p, q)),
                (Tensor::I64(p), Tensor::I64(q)) => Tensor::I64(sel!(p, q)),
                (Tensor::I32(p), Tensor::I32(q)) => Tensor::I32(sel!(p, q)),
                (Tensor::Bool(p), Tensor::Bool(q)) => Tensor::Bool(sel!(p, q)),
                (Tensor::U8(p), Tensor::U8(q)) => Tensor::U8(sel!(p, q)),
                (Tensor::I8(p), Tensor::I8(q)) => Tensor::I8(sel!(p, q)),
                _ => return inv("Where branches differ in type"),
            })
        }
        _ => unsupported(op.to_string()),
    }
}

fn infer(cx: &InferCx) -> Option<Vec<Option<TensorType>>> {
    let InferCx { op, at, tys, .. } = *cx;
    let (_, s0, dt0) = cx.first();
    match op {
        "Relu" | "Sigmoid" | "Sqrt" | "Exp" | "Log" | "Neg" | "Abs" | "Erf" | "Tanh" | "Sin"
        | "Cos" | "Floor" | "Ceil" | "Reciprocal" | "Identity" | "LeakyRelu" | "Gelu"
        | "HardSigmoid" | "HardSwish" | "Clip" | "Round" | "Elu" | "Selu" | "Softplus" | "Sign" => {
            same(s0, dt0)
        }
        "Dropout" => Some(vec![Some(TensorType {
            dtype: dt0?,
            shape: s0,
        })]),
        "Not" => same(s0, Some(DType::BOOL)),
        "IsNaN" | "IsInf" => same(s0, Some(DType::BOOL)),
        "Cast" => same(s0, Some(DType(attrs::int(at, "to")? as i32))),
        "CastLike" => same(s0, tys.get(1).cloned().flatten().map(|t| t.dtype)),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean" | "Mod"
        | "PRelu" | "And" | "Or" | "Xor" | "Equal" | "Less" | "Greater" | "LessOrEqual"
        | "GreaterOrEqual" | "Where" => {
            let shapes: Vec<Vec<Dim>> = tys
                .iter()
                .map(|t| t.as_ref().and_then(|t| t.shape.clone()))
                .collect::<Option<_>>()?;
            let refs: Vec<&Vec<Dim>> = shapes.iter().collect();
            let dtype = match op {
                "And" | "Or" | "Xor" | "Equal" | "Less" | "Greater" | "LessOrEqual"
                | "GreaterOrEqual" => DType::BOOL,
                "Where" => tys.get(1).cloned().flatten()?.dtype,
                _ => dt0?,
            };
            same(Some(broadcast(&refs)), Some(dtype))
        }
        _ => None,
    }
}

/// Elementwise arithmetic for every element type. Integers wrap around (two's complement), as
/// ONNX runtimes compute them, instead of panicking on overflow: a constant such as
/// `i64::MAX + 1` is the model's business, not a reason to crash the compiler.
pub(super) trait Arith: Copy {
    fn add_(self, o: Self) -> Self;
    fn sub_(self, o: Self) -> Self;
    fn mul_(self, o: Self) -> Self;
    /// Integer division by zero is rejected before this is called.
    fn div_(self, o: Self) -> Self;
}

macro_rules! arith_float {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn add_(self, o: Self) -> Self { self + o }
            fn sub_(self, o: Self) -> Self { self - o }
            fn mul_(self, o: Self) -> Self { self * o }
            fn div_(self, o: Self) -> Self { self / o }
        }
    )*};
}
macro_rules! arith_int {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn add_(self, o: Self) -> Self { self.wrapping_add(o) }
            fn sub_(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn mul_(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn div_(self, o: Self) -> Self { self.wrapping_div(o) }
        }
    )*};
}
arith_float!(f32, f64, f16);
arith_int!(i64, i32, i8, u8);

pub(super) fn float_unary(t: &Tensor, name: &str, f: impl Fn(f64) -> f64) -> R<Tensor> {
    Ok(match t {
        Tensor::F32(a) => Tensor::F32(a.mapv(|x| f(x as f64) as f32)),
        Tensor::F64(a) => Tensor::F64(a.mapv(&f)),
        Tensor::F16(a) => Tensor::F16(a.mapv(|x| f16::from_f64(f(x.to_f64())))),
        other => return inv(format!("{name} of {}", other.dtype())),
    })
}

pub(super) fn signed_unary(
    t: &Tensor,
    name: &str,
    f: impl Fn(f64) -> f64,
    g: impl Fn(i64) -> i64,
) -> R<Tensor> {
    Ok(match t {
        Tensor::I64(a) => Tensor::I64(a.mapv(&g)),
        Tensor::I32(a) => Tensor::I32(a.mapv(|x| g(x as i64) as i32)),
        Tensor::I8(a) => Tensor::I8(a.mapv(|x| g(x as i64) as i8)),
        other => float_unary(other, name, f)?,
    })
}
pub fn cast(t: &Tensor, to: DType) -> R<Tensor> {
    if t.dtype() == to {
        return Ok(t.clone());
    }
    // Direct conversions for the casts that masks and shape arithmetic use.
    match (t, to) {
        (Tensor::Bool(a), DType::F32) => return Ok(Tensor::F32(a.mapv(|v| v as u8 as f32))),
        (Tensor::Bool(a), DType::I64) => return Ok(Tensor::I64(a.mapv(|v| v as i64))),
        (Tensor::Bool(a), DType::I32) => return Ok(Tensor::I32(a.mapv(|v| v as i32))),
        (Tensor::F32(a), DType::BOOL) => return Ok(Tensor::Bool(a.mapv(|v| v != 0.0))),
        (Tensor::I32(a), DType::BOOL) => return Ok(Tensor::Bool(a.mapv(|v| v != 0))),
        (Tensor::I64(a), DType::BOOL) => return Ok(Tensor::Bool(a.mapv(|v| v != 0))),
        (Tensor::I64(a), DType::I32) => return Ok(Tensor::I32(a.mapv(|v| v as i32))),
        (Tensor::I32(a), DType::I64) => return Ok(Tensor::I64(a.mapv(|v| v as i64))),
        (Tensor::I64(a), DType::F32) => return Ok(Tensor::F32(a.mapv(|v| v as f32))),
        (Tensor::I32(a), DType::F32) => return Ok(Tensor::F32(a.mapv(|v| v as f32))),
        (Tensor::F32(a), DType::I64) => return Ok(Tensor::I64(a.mapv(|v| v as i64))),
        _ => {}
    }
    let shape = IxDyn(&t.shape());
    // Integers go through i64 so 64-bit shape values stay exact; floats through f64.
    let ints: Option<Vec<i64>> = match t {
        Tensor::Bool(a) => Some(a.iter().map(|&b| b as i64).collect()),
        other => other.as_i64_vec(),
    };
    let floats: Vec<f64> = match &ints {
        Some(v) => v.iter().map(|&x| x as f64).collect(),
        None => t.as_f64_vec().unwrap_or_default(),
    };
    Ok(match to {
        DType::F32 => Tensor::F32(
            ArrayD::from_shape_vec(shape, floats.iter().map(|&v| v as f32).collect())
                .expect("same len"),
        ),
        DType::F64 => Tensor::F64(ArrayD::from_shape_vec(shape, floats).expect("same len")),
        DType::F16 => Tensor::F16(
            ArrayD::from_shape_vec(shape, floats.iter().map(|&v| f16::from_f64(v)).collect())
                .expect("same len"),
        ),
        DType::BOOL => Tensor::Bool(
            ArrayD::from_shape_vec(shape, floats.iter().map(|&v| v != 0.0).collect())
                .expect("same len"),
        ),
        DType::I64 | DType::I32 | DType::I8 | DType::U8 => {
            let v: Vec<i64> = match ints {
                Some(v) => v,
                None => floats.iter().map(|&f| f as i64).collect(),
            };
            match to {
                DType::I64 => Tensor::I64(ArrayD::from_shape_vec(shape, v).expect("same len")),
                DType::I32 => Tensor::I32(
                    ArrayD::from_shape_vec(shape, v.iter().map(|&x| x as i32).collect())
                        .expect("same len"),
                ),
                DType::I8 => Tensor::I8(
                    ArrayD::from_shape_vec(shape, v.iter().map(|&x| x as i8).collect())
                        .expect("same len"),
                ),
                _ => Tensor::U8(
                    ArrayD::from_shape_vec(shape, v.iter().map(|&x| x as u8).collect())
                        .expect("same len"),
                ),
            }
        }
        other => return unsupported(format!("Cast to {other}")),
    })
}
/// Used by shape inference: the elementwise type rule.
pub fn same_dtype(ts: &[&Tensor]) -> bool {
    ts.windows(2).all(|w| w[0].dtype() == w[1].dtype())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_arithmetic_wraps_instead_of_panicking() {
        let r = eval(
            "Add",
            &[],
            &[
                Some(Tensor::vec_i64(vec![i64::MAX])),
                Some(Tensor::vec_i64(vec![1])),
            ],
            17,
        )
        .unwrap();
        assert_eq!(r[0].as_i64_vec(), Some(vec![i64::MIN]));
    }

    #[test]
    fn comparisons_broadcast_to_bool() {
        let tys = [
            Some(TensorType::new(DType::F32, &[2, 3])),
            Some(TensorType::new(DType::F32, &[3])),
        ];
        let cx = InferCx {
            op: "Less",
            at: &[],
            tys: &tys,
            vals: &[None, None],
            opset: 17,
        };
        assert_eq!(
            infer(&cx),
            Some(vec![Some(TensorType::new(DType::BOOL, &[2, 3]))])
        );
        let cx = InferCx { op: "Add", ..cx };
        assert_eq!(
            infer(&cx),
            Some(vec![Some(TensorType::new(DType::F32, &[2, 3]))])
        );
    }

    #[test]
    fn shape_keeping_unary_ops_type_from_static_shapes() {
        let tys = [Some(TensorType::new(DType::F16, &[4, 1]))];
        let cx = InferCx {
            op: "Erf",
            at: &[],
            tys: &tys,
            vals: &[None],
            opset: 17,
        };
        assert_eq!(super::super::same_static(&cx), Some(tys.to_vec()));
        // A Cast changes the type: it has no such rule.
        assert!(rule("Cast").unwrap().infer_static.is_none());
    }
}
