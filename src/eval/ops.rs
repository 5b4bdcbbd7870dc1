//! Operator semantics for constant evaluation. Every failure is an `EvalError`, never a panic:
//! the folder simply leaves a node it cannot evaluate in place.

// Comparisons are written once for every element type, bool included.
#![allow(clippy::bool_comparison)]

use half::f16;
use ndarray::{ArrayD, Axis, IxDyn, Slice, Zip};

use super::attrs::{self, axis};
use super::tensor::Tensor;
use crate::ir::DType;
use crate::load::proto::AttributeProto;
use crate::{map_any, try_map_any, with_any};

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EvalError {
    #[error("{0} is not evaluated by the constant folder")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
}

type R<T> = Result<T, EvalError>;

fn inv<T>(msg: impl Into<String>) -> R<T> {
    Err(EvalError::Invalid(msg.into()))
}

fn unsupported<T>(what: impl Into<String>) -> R<T> {
    Err(EvalError::Unsupported(what.into()))
}

/// Largest tensor the evaluator will create, in elements: a corrupt shape constant must not
/// make constant folding allocate gigabytes.
const MAX_ELEMENTS: usize = 1 << 26;

fn check_size(shape: &[usize]) -> R<()> {
    // Zero dimensions count as one: an empty [0, 2^60] tensor costs nothing itself, but code
    // that walks one of its axes (Resize's index maps) would allocate 2^60 entries.
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)))
        .unwrap_or(usize::MAX);
    if n > MAX_ELEMENTS {
        return inv(format!(
            "result of shape {shape:?} is too large to evaluate"
        ));
    }
    Ok(())
}

pub fn broadcast_shape(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return inv(format!("shapes {a:?} and {b:?} do not broadcast"));
        };
    }
    Ok(out)
}

fn zip2<A: Copy, B: Copy, C>(a: &ArrayD<A>, b: &ArrayD<B>, f: impl Fn(A, B) -> C) -> R<ArrayD<C>> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    check_size(&shape)?;
    let av = a.broadcast(IxDyn(&shape)).expect("checked broadcast");
    let bv = b.broadcast(IxDyn(&shape)).expect("checked broadcast");
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

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

/// Elementwise arithmetic for every element type. Integers wrap around (two's complement), as
/// ONNX runtimes compute them, instead of panicking on overflow: a constant such as
/// `i64::MAX + 1` is the model's business, not a reason to crash the compiler.
trait Arith: Copy {
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

fn float_unary(t: &Tensor, name: &str, f: impl Fn(f64) -> f64) -> R<Tensor> {
    Ok(match t {
        Tensor::F32(a) => Tensor::F32(a.mapv(|x| f(x as f64) as f32)),
        Tensor::F64(a) => Tensor::F64(a.mapv(&f)),
        Tensor::F16(a) => Tensor::F16(a.mapv(|x| f16::from_f64(f(x.to_f64())))),
        other => return inv(format!("{name} of {}", other.dtype())),
    })
}

fn signed_unary(
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

fn input<'a>(inputs: &'a [Option<Tensor>], i: usize, op: &str) -> R<&'a Tensor> {
    inputs
        .get(i)
        .and_then(Option::as_ref)
        .map_or_else(|| inv(format!("{op} is missing input #{i}")), Ok)
}

fn opt_ints(inputs: &[Option<Tensor>], i: usize) -> R<Option<Vec<i64>>> {
    match inputs.get(i).and_then(Option::as_ref) {
        None => Ok(None),
        Some(t) => t
            .as_i64_vec()
            .map(Some)
            .map_or_else(|| inv(format!("input #{i} must be integer")), Ok),
    }
}

fn to_usize_shape(v: &[i64]) -> R<Vec<usize>> {
    v.iter()
        .map(|&d| usize::try_from(d).or_else(|_| inv(format!("negative dimension {d}"))))
        .collect()
}

fn reshape_to<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> R<ArrayD<T>> {
    let std = a.as_standard_layout().into_owned();
    std.into_shape_with_order(IxDyn(shape))
        .or_else(|e| inv(format!("cannot reshape {:?} to {shape:?}: {e}", a.shape())))
}

/// Evaluates one operator on constant inputs. `inputs[i] == None` is an omitted optional input.
// The comparison closures are instantiated for bool tensors too, where clippy prefers `!a & b`.
#[allow(clippy::bool_comparison)]
pub fn eval_op(
    op: &str,
    at: &[AttributeProto],
    inputs: &[Option<Tensor>],
    opset: i64,
) -> R<Vec<Tensor>> {
    let x = || input(inputs, 0, op);
    let y = || input(inputs, 1, op);
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        "Identity" => one(x()?.clone()),
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
            let axes = if opset >= 13 {
                opt_ints(inputs, 1)?
            } else {
                attrs::ints(at, "axes")
            }
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
            let axes = if opset >= 13 {
                opt_ints(inputs, 1)?
            } else {
                attrs::ints(at, "axes")
            };
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
            let sizes = if opset >= 13 {
                opt_ints(inputs, 1)?
            } else {
                attrs::ints(at, "split")
            };
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
        "Resize" | "Upsample" => resize_nearest(op, at, inputs, opset),
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
        "Softmax" | "LogSoftmax" => {
            let a = f32_of(x()?)?;
            let default_axis = if opset >= 13 { -1 } else { 1 };
            let ax = axis(attrs::int_or(at, "axis", default_axis), a.ndim())
                .ok_or(EvalError::Invalid("Softmax axis".into()))?;
            // Before opset 13 Softmax flattens from `axis` on; identical when axis is last.
            if opset < 13 && ax + 1 != a.ndim() {
                return unsupported("Softmax over several axes (opset < 13)");
            }
            let mut out = a.clone();
            for mut lane in out.lanes_mut(Axis(ax)) {
                let m = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = lane.iter().map(|&v| ((v - m) as f64).exp()).sum();
                lane.mapv_inplace(|v| {
                    let e = (v - m) as f64;
                    if op == "Softmax" {
                        (e.exp() / sum) as f32
                    } else {
                        (e - sum.ln()) as f32
                    }
                });
            }
            one(Tensor::F32(out))
        }
        "LayerNormalization" => {
            let a = f32_of(x()?)?;
            let r = a.ndim();
            let ax = axis(attrs::int_or(at, "axis", -1), r)
                .ok_or(EvalError::Invalid("LayerNormalization axis".into()))?;
            let eps = attrs::float(at, "epsilon").unwrap_or(1e-5) as f64;
            let s = a.shape().to_vec();
            let outer: usize = s[..ax].iter().product();
            let inner: usize = s[ax..].iter().product();
            let flat = reshape_to(&a, &[outer, inner])?;
            let scale = f32_of(y()?)?;
            let bias = match inputs.get(2).and_then(Option::as_ref) {
                Some(b) => Some(f32_of(b)?),
                None => None,
            };
            let mut normed = flat.clone();
            for mut row in normed.rows_mut() {
                let n = row.len() as f64;
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                let inv_std = 1.0 / (var + eps).sqrt();
                row.mapv_inplace(|v| ((v as f64 - mean) * inv_std) as f32);
            }
            let normed = reshape_to(&normed, &s)?;
            let mut out = zip2(&normed, &scale, |p, q| p * q)?;
            if let Some(b) = bias {
                out = zip2(&out, &b, |p, q| p + q)?;
            }
            one(Tensor::F32(out))
        }
        "ReduceMax" | "ReduceMin" | "ReduceSum" | "ReduceMean" | "ReduceProd" => {
            reduce(op, at, inputs, opset)
        }
        _ => unsupported(op.to_string()),
    }
}

fn f32_of(t: &Tensor) -> R<ArrayD<f32>> {
    match t {
        Tensor::F32(a) => Ok(a.clone()),
        other => unsupported(format!("float arithmetic on {}", other.dtype())),
    }
}

/// Batched matrix product with numpy broadcasting of the leading dimensions.
fn matmul(a: &ArrayD<f32>, b: &ArrayD<f32>) -> R<ArrayD<f32>> {
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

/// ONNX slice bounds -> an ndarray `Slice` (ONNX clamps; ndarray would panic).
fn onnx_slice(start: i64, end: i64, step: i64, dim: i64) -> R<Slice> {
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

fn concat(ts: &[&Tensor], ax: usize) -> R<Tensor> {
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

fn resize_nearest(
    op: &str,
    at: &[AttributeProto],
    inputs: &[Option<Tensor>],
    opset: i64,
) -> R<Vec<Tensor>> {
    let mode = attrs::string(at, "mode").unwrap_or_else(|| "nearest".into());
    if mode != "nearest" {
        return unsupported(format!("{op} mode '{mode}'"));
    }
    let data = input(inputs, 0, op)?;
    let s = data.shape();
    let r = s.len();
    let (scales, sizes) = if op == "Upsample" || opset < 11 {
        let sc = if opset >= 9 {
            inputs
                .get(1)
                .cloned()
                .flatten()
                .and_then(|t| t.as_f64_vec())
        } else {
            attrs::floats(at, "scales").map(|v| v.iter().map(|&x| x as f64).collect())
        };
        (sc, None)
    } else {
        let sc = inputs
            .get(2)
            .cloned()
            .flatten()
            .and_then(|t| t.as_f64_vec())
            .filter(|v| !v.is_empty());
        (sc, opt_ints(inputs, 3)?.filter(|v| !v.is_empty()))
    };
    if attrs::find(at, "axes").is_some() {
        return unsupported("Resize with axes");
    }
    let (out, scale): (Vec<usize>, Vec<f64>) = match (sizes, scales) {
        (Some(sz), _) if sz.len() == r => {
            let o = to_usize_shape(&sz)?;
            let sc = (0..r).map(|d| o[d] as f64 / s[d] as f64).collect();
            (o, sc)
        }
        (_, Some(sc)) if sc.len() == r => (
            (0..r)
                .map(|d| (s[d] as f64 * sc[d]).floor() as usize)
                .collect(),
            sc,
        ),
        _ => return inv(format!("{op} needs scales or sizes of rank {r}")),
    };
    check_size(&out)?;
    // Nothing to sample from: every output element would read outside an empty axis.
    if (0..r).any(|d| s[d] == 0 && out[d] > 0) {
        return inv(format!("{op} of an empty axis to a non-empty one"));
    }
    let ctm = attrs::string(at, "coordinate_transformation_mode").unwrap_or_else(|| {
        if op == "Upsample" || opset < 11 {
            "asymmetric".into()
        } else {
            "half_pixel".into()
        }
    });
    let nm = attrs::string(at, "nearest_mode").unwrap_or_else(|| "round_prefer_floor".into());
    let mut maps: Vec<Vec<usize>> = Vec::with_capacity(r);
    for d in 0..r {
        let (li, lo, sc) = (s[d] as f64, out[d] as f64, scale[d]);
        let mut m = Vec::with_capacity(out[d]);
        for i in 0..out[d] {
            let x = i as f64;
            let src = match ctm.as_str() {
                "asymmetric" => x / sc,
                "half_pixel" => (x + 0.5) / sc - 0.5,
                "pytorch_half_pixel" => {
                    if lo > 1.0 {
                        (x + 0.5) / sc - 0.5
                    } else {
                        0.0
                    }
                }
                "align_corners" => {
                    if lo > 1.0 {
                        x * (li - 1.0) / (lo - 1.0)
                    } else {
                        0.0
                    }
                }
                "tf_half_pixel_for_nn" => (x + 0.5) / sc,
                other => return unsupported(format!("{op} coordinate mode '{other}'")),
            };
            let k = match nm.as_str() {
                "floor" => src.floor(),
                "ceil" => src.ceil(),
                "round_prefer_ceil" => (src + 0.5).floor(),
                _ => {
                    if src.fract() == 0.5 {
                        src.floor()
                    } else {
                        src.round()
                    }
                }
            };
            m.push(k.clamp(0.0, li - 1.0) as usize);
        }
        maps.push(m);
    }
    Ok(vec![
        map_any!(data, a => ArrayD::from_shape_fn(IxDyn(&out), |ix| {
            let src: Vec<usize> = (0..r).map(|d| maps[d][ix[d]]).collect();
            a[IxDyn(&src)]
        })),
    ])
}

fn reduce(
    op: &str,
    at: &[AttributeProto],
    inputs: &[Option<Tensor>],
    opset: i64,
) -> R<Vec<Tensor>> {
    let data = input(inputs, 0, op)?;
    let s = data.shape();
    let axes_from_input = opset >= 18 || (op == "ReduceSum" && opset >= 13);
    let axes = if axes_from_input {
        opt_ints(inputs, 1)?
    } else {
        attrs::ints(at, "axes")
    };
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

/// Used by shape inference: the elementwise type rule.
pub fn same_dtype(ts: &[&Tensor]) -> bool {
    ts.windows(2).all(|w| w[0].dtype() == w[1].dtype())
}

#[allow(dead_code)]
fn _assert_with_any(t: &Tensor) -> usize {
    with_any!(t, a => a.ndim())
}

/// ScatterND without reduction: a copy of `data` with the slices that `idx` (last axis: the
/// leading coordinates) addresses replaced by `upd`'s.
fn scatter_nd<T: Copy>(data: &ArrayD<T>, idx: &ArrayD<i64>, upd: &ArrayD<T>) -> R<ArrayD<T>> {
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

/// Einsum without ellipses, by enumerating every index assignment: for the small constant
/// operands folding sees (position-embedding outer products), never for weights.
fn einsum(eq: &str, xs: &[ArrayD<f64>]) -> R<ArrayD<f64>> {
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

/// GatherND without batch dimensions: for each coordinate tuple on `idx`'s last axis, the
/// slice of `data` it addresses.
fn gather_nd<T: Copy>(data: &ArrayD<T>, idx: &ArrayD<i64>) -> R<ArrayD<T>> {
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
