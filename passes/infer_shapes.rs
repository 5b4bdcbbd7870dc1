//! `infer-shapes`: element type and shape of every tensor, from the graph inputs forward.
//!
//! Rules cover the operators of DETR and common CNN exports. Where a shape depends on a
//! tensor's value (Reshape targets, Slice bounds, Expand shapes…) that value must be a
//! constant, so this pass and `fold-constants` feed each other until both reach a fixed point.

use std::collections::HashMap;

use crate::eval::attrs::{self, axis};
use crate::eval::{ops, Tensor};
use crate::ir::{DType, Dim, Graph, NodeKind, Port, TensorType};
use crate::pass::{Context, Outcome, Pass};

pub struct InferShapes;

impl Pass for InferShapes {
    fn name(&self) -> &'static str {
        "infer-shapes"
    }
    fn about(&self) -> &'static str {
        "infer element types and shapes of all tensors"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let mut updated = 0;
        let mut syms = SymValues::default();
        for n in g.topo_ops() {
            updated += infer_node_with(g, n, &mut syms);
        }
        Ok(Outcome::changed(if updated > 0 {
            vec![format!("typed {updated} tensors")]
        } else {
            vec![]
        }))
    }
}

/// What is known of the contents of small integer tensors (shape arithmetic: `Shape`,
/// `Gather`, `Concat`, ...), element by element: a number, a named dimension (`batch`) or
/// unknown. With a dynamic batch, `Shape(x)` of `x: [batch, 256, 25, 34]` is
/// `[batch, 256, 25, 34]`: the static part folds, and a `Reshape` to it keeps its shape.
#[derive(Default, Debug)]
pub struct SymValues(HashMap<Port, Vec<Dim>>);

/// Longest shape tensor whose contents are tracked.
const MAX_SYM_LEN: usize = 64;

impl SymValues {
    /// The contents of `p`: a small integer constant, or what was propagated to it.
    pub fn get(&self, g: &Graph, p: Port) -> Option<Vec<Dim>> {
        if let Some(t) = g.const_tensor(p) {
            if t.dims.len() > 1 || t.dims.iter().product::<i64>() > MAX_SYM_LEN as i64 {
                return None;
            }
            let t = Tensor::from_proto(t).ok()?;
            let v = match &t {
                Tensor::Bool(a) => a.iter().map(|&b| b as i64).collect(),
                other => other.as_i64_vec()?,
            };
            return Some(v.into_iter().map(Dim::Fixed).collect());
        }
        self.0.get(&p).cloned()
    }
    /// Drops what was recorded for the outputs of a node that is about to go (its slot may be
    /// reused by a new node).
    pub fn forget(&mut self, n: crate::ir::NodeId) {
        self.0.retain(|p, _| p.node != n);
    }
    /// The value of `p` if every element is a known number.
    pub fn known(&self, g: &Graph, p: Port) -> Option<Vec<i64>> {
        self.get(g, p)?.iter().map(Dim::fixed).collect()
    }
}

/// Types the outputs of one node from its inputs; returns how many values learned more.
pub fn infer_node(g: &mut Graph, n: crate::ir::NodeId) -> usize {
    infer_node_with(g, n, &mut SymValues::default())
}

/// `infer_node`, reading and extending the known contents of shape tensors.
pub fn infer_node_with(g: &mut Graph, n: crate::ir::NodeId, sv: &mut SymValues) -> usize {
    let opset = g.opset();
    let ins = g.inputs(n);
    let tys: Vec<Option<TensorType>> = ins
        .iter()
        .map(|p| p.and_then(|p| g.ty(p).cloned()))
        .collect();
    let vals: Vec<Option<Tensor>> = ins.iter().map(|p| small_const(g, *p)).collect();
    let syms: Vec<Option<Vec<Dim>>> = ins.iter().map(|p| p.and_then(|p| sv.get(g, p))).collect();
    let node = g.node(n);
    let Some(op) = node.op() else { return 0 };
    if !crate::ir::is_onnx_domain(&op.domain) {
        return 0;
    }
    if let Some(v) = propagate(&op.op_type, &op.attrs, &tys, &syms, opset) {
        if v.len() <= MAX_SYM_LEN {
            sv.0.insert(Port::new(n, 0), v);
        }
    }
    let Some(out) = infer(&op.op_type, &op.attrs, &tys, &vals, &syms, opset) else {
        return 0;
    };
    let nouts = node.outputs.len();
    let mut updated = 0;
    for (slot, ty) in out.into_iter().enumerate().take(nouts) {
        let Some(ty) = ty else { continue };
        // A rule fed by a corrupt constant (a Reshape to [-5], a ConstantOfShape of 2^62) must
        // not record a shape no tensor can have: the IR keeps every shape within MAX_ELEMENTS.
        if ty.check_dims().is_err() {
            continue;
        }
        let v = g.value_mut(Port::new(n, slot));
        if v.name.is_empty() {
            continue;
        }
        if more_specific(&ty, v.ty.as_ref()) {
            v.ty = Some(ty);
            updated += 1;
        }
    }
    updated
}

/// Small constants are read for shape computations; large weights never are.
pub fn small_const(g: &Graph, p: Option<Port>) -> Option<Tensor> {
    let p = p?;
    let t = g.const_tensor(p)?;
    let n = t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d))?;
    if !(0..=4096).contains(&n) {
        return None;
    }
    Tensor::from_proto(t).ok()
}

fn known_dims(t: &TensorType) -> usize {
    t.shape.as_ref().map_or(0, |s| {
        1 + s.iter().filter(|d| matches!(d, Dim::Fixed(_))).count()
    })
}

/// Replace the recorded type only with one that knows more; never contradict a declared type
/// with a guess.
fn more_specific(new: &TensorType, old: Option<&TensorType>) -> bool {
    match old {
        None => true,
        Some(o) if o.dtype == DType::UNDEFINED => true,
        Some(o) if o.dtype != new.dtype => false,
        Some(o) => known_dims(new) > known_dims(o),
    }
}

fn fixed(v: &[i64]) -> Option<Vec<Dim>> {
    Some(v.iter().map(|&d| Dim::Fixed(d)).collect())
}

fn bdim(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (x, y) if x == y => x.clone(),
        (Dim::Fixed(1), y) => y.clone(),
        (x, Dim::Fixed(1)) => x.clone(),
        (Dim::Fixed(x), Dim::Fixed(_)) => Dim::Fixed(*x),
        _ => Dim::Unknown,
    }
}

fn broadcast(shapes: &[&Vec<Dim>]) -> Vec<Dim> {
    let r = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    (0..r)
        .map(|i| {
            shapes.iter().fold(Dim::Fixed(1), |acc, s| {
                let k = i as isize - (r - s.len()) as isize;
                if k < 0 {
                    acc
                } else {
                    bdim(&acc, &s[k as usize])
                }
            })
        })
        .collect()
}

/// Output size of a convolution or pooling window along one axis. `None` for parameters no
/// valid model has (non-positive kernel, stride or dilation) and for sizes that overflow, which
/// only a corrupt or hostile attribute produces.
fn conv_out(input: i64, k: i64, stride: i64, dil: i64, pad_sum: i64, ceil: bool) -> Option<i64> {
    if k <= 0 || stride <= 0 || dil <= 0 {
        return None;
    }
    let eff = dil.checked_mul(k - 1)?.checked_add(1)?;
    let num = input.checked_add(pad_sum)?.checked_sub(eff)?;
    if num < 0 {
        return None;
    }
    let steps = if ceil {
        num / stride + i64::from(num % stride != 0)
    } else {
        num / stride
    };
    steps.checked_add(1)
}

fn pool_like(
    op: &str,
    at: &[crate::load::proto::AttributeProto],
    x: &[Dim],
    w: Option<&[Dim]>,
) -> Option<Vec<Dim>> {
    let spatial = x.len().checked_sub(2)?;
    let kernel: Vec<i64> = match attrs::ints(at, "kernel_shape") {
        Some(k) => k,
        None => w?.get(2..)?.iter().map(Dim::fixed).collect::<Option<_>>()?,
    };
    let strides = attrs::ints(at, "strides").unwrap_or_else(|| vec![1; spatial]);
    let dil = attrs::ints(at, "dilations").unwrap_or_else(|| vec![1; spatial]);
    let pads = attrs::ints(at, "pads").unwrap_or_else(|| vec![0; 2 * spatial]);
    // Attribute lists of the wrong length are a malformed node: no type rather than a guess.
    if kernel.len() != spatial
        || strides.len() != spatial
        || dil.len() != spatial
        || pads.len() != 2 * spatial
    {
        return None;
    }
    let auto = attrs::string(at, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    let ceil = attrs::int_or(at, "ceil_mode", 0) != 0;
    let mut out = vec![x[0].clone()];
    out.push(if op == "Conv" || op == "ConvTranspose" {
        w?.first()?.clone()
    } else {
        x[1].clone()
    });
    for i in 0..spatial {
        let d = match x[i + 2] {
            Dim::Fixed(v) => {
                let o = match auto.as_str() {
                    "SAME_UPPER" | "SAME_LOWER" if strides[i] > 0 && v >= 0 => {
                        v / strides[i] + i64::from(v % strides[i] != 0)
                    }
                    "SAME_UPPER" | "SAME_LOWER" => return None,
                    "VALID" => conv_out(v, kernel[i], strides[i], dil[i], 0, false)?,
                    _ => conv_out(
                        v,
                        kernel[i],
                        strides[i],
                        dil[i],
                        pads[i].checked_add(pads[i + spatial])?,
                        ceil,
                    )?,
                };
                Dim::Fixed(o)
            }
            _ => Dim::Unknown,
        };
        out.push(d);
    }
    Some(out)
}

/// Output types of one operator, or None where the rule needs more than is known.
pub fn infer(
    op: &str,
    at: &[crate::load::proto::AttributeProto],
    tys: &[Option<TensorType>],
    vals: &[Option<Tensor>],
    syms: &[Option<Vec<Dim>>],
    opset: i64,
) -> Option<Vec<Option<TensorType>>> {
    // All-constant inputs: evaluate, which gives the exact answer.
    if !tys.is_empty()
        && vals
            .iter()
            .zip(tys)
            .all(|(v, t)| v.is_some() || t.is_none())
        && vals.iter().any(Option::is_some)
        || op == "Constant"
    {
        if let Ok(outs) = ops::eval_op(op, at, vals, opset) {
            return Some(
                outs.iter()
                    .map(|t| {
                        Some(TensorType::new(
                            t.dtype(),
                            &t.shape().iter().map(|&d| d as i64).collect::<Vec<_>>(),
                        ))
                    })
                    .collect(),
            );
        }
    }
    let t0 = tys.first().cloned().flatten();
    let s0 = t0.as_ref().and_then(|t| t.shape.clone());
    let dt0 = t0.as_ref().map(|t| t.dtype);
    let same = |shape: Option<Vec<Dim>>, dtype: Option<DType>| -> Option<Vec<Option<TensorType>>> {
        Some(vec![Some(TensorType {
            dtype: dtype?,
            shape,
        })])
    };
    let ints_of = |i: usize| {
        vals.get(i)
            .cloned()
            .flatten()
            .and_then(|t| t.as_i64_vec())
            .or_else(|| syms.get(i)?.as_ref()?.iter().map(Dim::fixed).collect())
    };
    // The contents of a shape input, numbers and named dimensions alike.
    let dims_of = |i: usize| -> Option<Vec<Dim>> {
        syms.get(i)
            .cloned()
            .flatten()
            .or_else(|| Some(ints_of(i)?.into_iter().map(Dim::Fixed).collect()))
    };
    match op {
        "Relu"
        | "Sigmoid"
        | "Sqrt"
        | "Exp"
        | "Log"
        | "Neg"
        | "Abs"
        | "Erf"
        | "Tanh"
        | "Sin"
        | "Cos"
        | "Floor"
        | "Ceil"
        | "Reciprocal"
        | "Identity"
        | "Softmax"
        | "LogSoftmax"
        | "LeakyRelu"
        | "Gelu"
        | "HardSigmoid"
        | "HardSwish"
        | "Clip"
        | "Round"
        | "CumSum"
        | "Elu"
        | "Selu"
        | "Softplus"
        | "Sign"
        | "Atan"
        | "Tan"
        | "Asin"
        | "Acos"
        | "Sinh"
        | "Cosh"
        | "Softsign"
        | "Mish"
        | "Celu"
        | "ThresholdedRelu"
        | "Hardmax"
        | "Trilu"
        | "LRN"
        | "MeanVarianceNormalization"
        | "ScatterND"
        | "ScatterElements"
        | "Scatter"
        | "InstanceNormalization" => same(s0, dt0),
        "Dropout" | "LayerNormalization" | "BatchNormalization" => Some(vec![Some(TensorType {
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
        "Conv" | "MaxPool" | "AveragePool" | "LpPool" => {
            let x = s0?;
            let w = tys.get(1).cloned().flatten().and_then(|t| t.shape);
            let out = pool_like(op, at, &x, w.as_deref())?;
            let mut v = vec![Some(TensorType {
                dtype: dt0?,
                shape: Some(out.clone()),
            })];
            if op == "MaxPool" {
                v.push(Some(TensorType {
                    dtype: DType::I64,
                    shape: Some(out),
                }));
            }
            Some(v)
        }
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let x = s0?;
            let mut out = x[..2.min(x.len())].to_vec();
            out.extend(std::iter::repeat_n(
                Dim::Fixed(1),
                x.len().saturating_sub(2),
            ));
            same(Some(out), dt0)
        }
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
            let x = s0?;
            let allowzero = attrs::int_or(at, "allowzero", 0) != 0;
            if let (Some(xs), Some(spec)) =
                (t0.as_ref().and_then(TensorType::static_shape), ints_of(1))
            {
                let xs: Vec<usize> = xs
                    .iter()
                    .map(|&d| usize::try_from(d).ok())
                    .collect::<Option<_>>()?;
                let out = ops::reshape_target(&xs, &spec, allowzero).ok()?;
                return same(
                    fixed(&out.iter().map(|&d| d as i64).collect::<Vec<_>>()),
                    dt0,
                );
            }
            same(Some(reshape_dims(&x, &dims_of(1)?, allowzero)), dt0)
        }
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
            let split = if opset >= 13 {
                ints_of(1)
            } else {
                attrs::ints(at, "split")
            };
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
        "Squeeze" => {
            let x = s0?;
            let axes = if opset >= 13 {
                ints_of(1)
            } else {
                attrs::ints(at, "axes")
            };
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
            let axes = if opset >= 13 {
                ints_of(1)
            } else {
                attrs::ints(at, "axes")
            }?;
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
        "Gather" => {
            let x = s0?;
            let idx = tys.get(1).cloned().flatten()?.shape?;
            let ax = axis(attrs::int_or(at, "axis", 0), x.len())?;
            let mut out = x[..ax].to_vec();
            out.extend(idx);
            out.extend_from_slice(&x[ax + 1..]);
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
            let shape = dims_of(0)?;
            let dt =
                attrs::tensor(at, "value").map_or(DType::F32, |t| DType(t.data_type.unwrap_or(1)));
            same(Some(shape), Some(dt))
        }
        "Expand" => {
            let x = s0?;
            let spec = match dims_of(1) {
                Some(d) => d,
                // Only the rank of the target is known: its length.
                None => {
                    let n = tys.get(1).cloned().flatten()?.static_shape()?;
                    vec![Dim::Unknown; *n.first()? as usize]
                }
            };
            let r = x.len().max(spec.len());
            let pad = |v: &[Dim], i: usize| {
                let k = i as isize - (r - v.len()) as isize;
                if k < 0 {
                    Dim::Fixed(1)
                } else {
                    v[k as usize].clone()
                }
            };
            let out = (0..r)
                .map(|i| match (pad(&x, i), pad(&spec, i)) {
                    // Expand broadcasts: a dimension other than 1 wins over whatever the
                    // target says there (which can only be 1 or the same).
                    (Dim::Fixed(d), _) if d != 1 => Dim::Fixed(d),
                    (Dim::Fixed(1), t) => t,
                    (a, Dim::Fixed(1)) => a,
                    (a, b) if a == b => a,
                    _ => Dim::Unknown,
                })
                .collect();
            same(Some(out), dt0)
        }
        "Tile" => {
            let x = s0?;
            let reps = dims_of(1)?;
            if reps.len() != x.len() {
                return None;
            }
            same(
                Some(
                    x.iter()
                        .zip(&reps)
                        .map(|(d, r)| match (d, r) {
                            (d, Dim::Fixed(1)) => d.clone(),
                            (Dim::Fixed(1), r) => r.clone(),
                            (Dim::Fixed(a), Dim::Fixed(b)) => {
                                a.checked_mul(*b).map_or(Dim::Unknown, Dim::Fixed)
                            }
                            _ => Dim::Unknown,
                        })
                        .collect(),
                ),
                dt0,
            )
        }
        "Range" => {
            let dt = dt0.or_else(|| vals.first().cloned().flatten().map(|t| t.dtype()))?;
            same(Some(vec![Dim::Unknown]), Some(dt))
        }
        "GridSample" => {
            let x = s0?;
            let grid = tys.get(1).cloned().flatten()?.shape?;
            if x.len() < 3 || grid.len() != x.len() {
                return None;
            }
            let mut out = vec![x[0].clone(), x[1].clone()];
            out.extend_from_slice(&grid[1..grid.len() - 1]);
            same(Some(out), dt0)
        }
        "TopK" => {
            let x = s0?;
            let ax = axis(attrs::int_or(at, "axis", -1), x.len())?;
            let k = if opset >= 10 {
                dims_of(1)?.first()?.clone()
            } else {
                Dim::Fixed(attrs::int(at, "k")?)
            };
            let mut out = x;
            out[ax] = k;
            Some(vec![
                Some(TensorType {
                    dtype: dt0?,
                    shape: Some(out.clone()),
                }),
                Some(TensorType {
                    dtype: DType::I64,
                    shape: Some(out),
                }),
            ])
        }
        "GatherElements" => {
            let idx = tys.get(1).cloned().flatten()?.shape?;
            same(Some(idx), dt0)
        }
        "GatherND" => {
            let x = s0?;
            let idx = tys.get(1).cloned().flatten()?.shape?;
            let b = usize::try_from(attrs::int_or(at, "batch_dims", 0)).ok()?;
            let m = usize::try_from(idx.last()?.fixed()?).ok()?;
            if b + m > x.len() {
                return None;
            }
            let mut out = idx[..idx.len() - 1].to_vec();
            out.extend_from_slice(&x[b + m..]);
            same(Some(out), dt0)
        }
        "NonZero" => {
            let r = s0?.len() as i64;
            same(Some(vec![Dim::Fixed(r), Dim::Unknown]), Some(DType::I64))
        }
        "Einsum" => {
            let eq = attrs::string(at, "equation")?.replace(' ', "");
            let (lhs, rhs) = eq.split_once("->")?;
            if eq.contains('.') {
                return None;
            }
            let mut sizes: HashMap<char, Dim> = HashMap::new();
            for (k, term) in lhs.split(',').enumerate() {
                let sh = tys.get(k).cloned().flatten()?.shape?;
                if sh.len() != term.len() {
                    return None;
                }
                for (c, d) in term.chars().zip(sh) {
                    let e = sizes.entry(c).or_insert(Dim::Unknown);
                    if *e == Dim::Unknown || *e == Dim::Fixed(1) {
                        *e = d;
                    }
                }
            }
            let out = rhs
                .chars()
                .map(|c| sizes.get(&c).cloned())
                .collect::<Option<_>>()?;
            same(Some(out), dt0)
        }
        "Slice" => {
            let x = s0?;
            let (starts, ends, axes, steps) = if opset >= 10 {
                (ints_of(1)?, ints_of(2)?, ints_of(3), ints_of(4))
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
                    Some(d) => Dim::Fixed(ops::slice_len(starts[k], ends[k], steps[k], d).ok()?),
                    None => Dim::Unknown,
                };
            }
            same(Some(out), dt0)
        }
        "Pad" => {
            let x = s0?;
            let pads = if opset >= 11 {
                ints_of(1)?
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
        "Resize" | "Upsample" => {
            let x = s0?;
            if let Some(sz) = dims_of(3).filter(|v| v.len() == x.len()) {
                return same(Some(sz), dt0);
            }
            let sc_idx = if op == "Upsample" || opset < 11 { 1 } else { 2 };
            let sc = vals.get(sc_idx).cloned().flatten()?.as_f64_vec()?;
            if sc.len() != x.len() {
                return None;
            }
            same(
                Some(
                    x.iter()
                        .zip(&sc)
                        .map(|(d, &s)| match d {
                            Dim::Fixed(d) => Dim::Fixed((*d as f64 * s).floor() as i64),
                            d if s == 1.0 => d.clone(),
                            _ => Dim::Unknown,
                        })
                        .collect(),
                ),
                dt0,
            )
        }
        "ReduceMax" | "ReduceMin" | "ReduceSum" | "ReduceMean" | "ReduceProd" | "ReduceL2"
        | "ReduceL1" | "ReduceSumSquare" | "ReduceLogSumExp" | "ArgMax" | "ArgMin" => {
            let x = s0?;
            let keep = attrs::int_or(at, "keepdims", 1) != 0;
            let axes: Vec<usize> = if op.starts_with("Arg") {
                vec![axis(attrs::int_or(at, "axis", 0), x.len())?]
            } else {
                let from_input = opset >= 18 || (op == "ReduceSum" && opset >= 13);
                let a = if from_input {
                    ints_of(1)
                } else {
                    attrs::ints(at, "axes")
                };
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

/// True if the node is an operator whose output type is fully static.
pub fn is_static(g: &Graph, p: Port) -> bool {
    matches!(
        g.node(p.node).kind,
        NodeKind::Op(_) | NodeKind::Input(_) | NodeKind::Const { .. }
    ) && g.ty(p).and_then(TensorType::static_shape).is_some()
}

/// Integer or boolean element type: the tensors whose contents `SymValues` tracks.
fn is_int(t: &Option<TensorType>) -> bool {
    t.as_ref()
        .is_some_and(|t| matches!(t.dtype.0, 2..=7 | 9 | 12 | 13))
}

/// Element-by-element arithmetic on shape values; a named dimension survives the identities
/// (`batch * 1`, `batch + 0`), anything else unknown stays unknown.
fn sym_binary(op: &str, a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let n = a.len().max(b.len());
    if (a.len() != n && a.len() != 1) || (b.len() != n && b.len() != 1) {
        return None;
    }
    let pick = |v: &[Dim], i: usize| v[if v.len() == 1 { 0 } else { i }].clone();
    let f = |x: i64, y: i64| -> Option<i64> {
        match op {
            "Add" => x.checked_add(y),
            "Sub" => x.checked_sub(y),
            "Mul" => x.checked_mul(y),
            // ONNX integer Div truncates toward zero, as Rust does.
            "Div" => (y != 0).then(|| x.wrapping_div(y)),
            "Mod" => (y != 0).then(|| x.rem_euclid(y)),
            "Max" => Some(x.max(y)),
            "Min" => Some(x.min(y)),
            "Equal" => Some((x == y) as i64),
            "Less" => Some((x < y) as i64),
            "Greater" => Some((x > y) as i64),
            "LessOrEqual" => Some((x <= y) as i64),
            "GreaterOrEqual" => Some((x >= y) as i64),
            "And" => Some((x != 0 && y != 0) as i64),
            "Or" => Some((x != 0 || y != 0) as i64),
            _ => None,
        }
    };
    Some(
        (0..n)
            .map(|i| match (pick(a, i), pick(b, i)) {
                (Dim::Fixed(x), Dim::Fixed(y)) => f(x, y).map_or(Dim::Unknown, Dim::Fixed),
                (p @ Dim::Param(_), Dim::Fixed(1)) if matches!(op, "Mul" | "Div") => p,
                (Dim::Fixed(1), p @ Dim::Param(_)) if op == "Mul" => p,
                (p @ Dim::Param(_), Dim::Fixed(0)) if matches!(op, "Add" | "Sub") => p,
                (Dim::Fixed(0), p @ Dim::Param(_)) if op == "Add" => p,
                // A dimension is never negative: `Equal(Shape(x), -1)` is false for all of it.
                (Dim::Param(_), Dim::Fixed(v)) | (Dim::Fixed(v), Dim::Param(_))
                    if op == "Equal" && v < 0 =>
                {
                    Dim::Fixed(0)
                }
                (Dim::Param(p), Dim::Param(q)) if op == "Equal" && p == q => Dim::Fixed(1),
                (Dim::Param(p), Dim::Param(q)) if matches!(op, "Max" | "Min") && p == q => {
                    Dim::Param(p)
                }
                _ => Dim::Unknown,
            })
            .collect(),
    )
}

/// The contents of output 0 of a shape-arithmetic node, from what is known of its inputs.
pub fn propagate(
    op: &str,
    at: &[crate::load::proto::AttributeProto],
    tys: &[Option<TensorType>],
    syms: &[Option<Vec<Dim>>],
    opset: i64,
) -> Option<Vec<Dim>> {
    let sym = |i: usize| syms.get(i).cloned().flatten();
    let known = |i: usize| -> Option<Vec<i64>> { sym(i)?.iter().map(Dim::fixed).collect() };
    let ty0 = tys.first().cloned().flatten();
    match op {
        "Shape" => {
            let x = ty0?.shape?;
            let r = x.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let s = clamp(attrs::int_or(at, "start", 0));
            let e = clamp(attrs::int_or(at, "end", r));
            Some(x[s..e.max(s)].to_vec())
        }
        "Size" => {
            let x = ty0?.static_shape()?;
            Some(vec![Dim::Fixed(x.iter().product())])
        }
        "Identity" | "Squeeze" | "Unsqueeze" | "Flatten" | "Reshape" => sym(0),
        "Cast" => {
            let to = Some(TensorType {
                dtype: DType(attrs::int(at, "to")? as i32),
                shape: None,
            });
            (is_int(&ty0) && is_int(&to)).then(|| sym(0)).flatten()
        }
        "Gather" => {
            let data = sym(0)?;
            if attrs::int_or(at, "axis", 0) != 0 {
                return None;
            }
            let n = data.len() as i64;
            known(1)?
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + n } else { i };
                    (0..n).contains(&j).then(|| data[j as usize].clone())
                })
                .collect()
        }
        "Slice" => {
            let data = sym(0)?;
            let (starts, ends, axes, steps) = if opset >= 10 {
                (
                    known(1)?,
                    known(2)?,
                    sym(3).map(|_| known(3)),
                    sym(4).map(|_| known(4)),
                )
            } else {
                (
                    attrs::ints(at, "starts")?,
                    attrs::ints(at, "ends")?,
                    attrs::ints(at, "axes").map(Some),
                    None,
                )
            };
            let axes = match axes {
                Some(a) => a?,
                None => vec![0],
            };
            let steps = match steps {
                Some(s) => s?,
                None => vec![1],
            };
            if starts.len() != 1 || ends.len() != 1 || axes != [0] || steps.len() != 1 {
                return None;
            }
            let n = data.len() as i64;
            let len = ops::slice_len(starts[0], ends[0], steps[0], n).ok()?;
            let norm = |v: i64| if v < 0 { v + n } else { v };
            let start = if steps[0] > 0 {
                norm(starts[0]).clamp(0, n)
            } else {
                norm(starts[0]).clamp(-1, n - 1)
            };
            (0..len)
                .map(|k| data.get((start + k * steps[0]) as usize).cloned())
                .collect()
        }
        "Concat" => {
            let mut out = Vec::new();
            for i in 0..syms.len() {
                out.extend(sym(i)?);
            }
            Some(out)
        }
        "Add" | "Sub" | "Mul" | "Div" | "Mod" | "Max" | "Min" | "Equal" | "Less" | "Greater"
        | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or"
            if syms.len() == 2 && is_int(&ty0) =>
        {
            sym_binary(op, &sym(0)?, &sym(1)?)
        }
        "Not" => sym(0)?
            .iter()
            .map(|d| d.fixed().map(|v| Dim::Fixed((v == 0) as i64)))
            .collect(),
        "Neg" | "Abs" if is_int(&ty0) => sym(0)?
            .iter()
            .map(|d| {
                d.fixed()
                    .map(|v| Dim::Fixed(if op == "Neg" { -v } else { v.abs() }))
            })
            .collect(),
        "Where" => {
            let c = known(0)?;
            let (a, b) = (sym(1)?, sym(2)?);
            let n = c.len().max(a.len()).max(b.len());
            let at_ = |v: &Vec<Dim>, i: usize| v.get(if v.len() == 1 { 0 } else { i }).cloned();
            (0..n)
                .map(|i| {
                    let ci = *c.get(if c.len() == 1 { 0 } else { i })?;
                    if ci != 0 {
                        at_(&a, i)
                    } else {
                        at_(&b, i)
                    }
                })
                .collect()
        }
        "ConstantOfShape" => {
            let shape = known(0)?;
            let v = match attrs::tensor(at, "value") {
                Some(t) => Tensor::from_proto(t).ok()?.as_i64_vec()?.first().copied()?,
                None => return None,
            };
            (shape.len() == 1 && (0..=MAX_SYM_LEN as i64).contains(&shape[0]))
                .then(|| vec![Dim::Fixed(v); shape[0] as usize])
        }
        "Expand" => {
            let data = sym(0)?;
            let shape = known(1)?;
            match (data.len(), shape.as_slice()) {
                (1, [k]) if (1..=MAX_SYM_LEN as i64).contains(k) => {
                    Some(vec![data[0].clone(); *k as usize])
                }
                (n, [k]) if *k == 1 || *k == n as i64 => Some(data),
                _ => None,
            }
        }
        "Range" => {
            let (s, l, d) = (known(0)?, known(1)?, known(2)?);
            let (&[s], &[l], &[d]) = (&s[..], &l[..], &d[..]) else {
                return None;
            };
            if d == 0 || !is_int(&ty0) {
                return None;
            }
            let n = ((l as i128 - s as i128) as f64 / d as f64).ceil().max(0.0) as usize;
            (n <= MAX_SYM_LEN).then(|| (0..n as i64).map(|i| Dim::Fixed(s + i * d)).collect())
        }
        _ => None,
    }
}

/// A product of dimensions as (number, names of the symbolic factors), if no factor is unknown.
fn monomial(dims: &[Dim]) -> Option<(i64, Vec<String>)> {
    let mut k = 1i64;
    let mut names = Vec::new();
    for d in dims {
        match d {
            Dim::Fixed(v) => k = k.checked_mul(*v)?,
            Dim::Param(p) => names.push(p.clone()),
            Dim::Unknown => return None,
        }
    }
    names.sort();
    Some((k, names))
}

/// Reshape's output dimensions for an input whose shape is partly symbolic: `0` copies the
/// input's dimension, `-1` is solved when the symbolic factors cancel (`[batch, 100, 256]` to
/// `[batch, -1]` is `[batch, 25600]`).
fn reshape_dims(x: &[Dim], spec: &[Dim], allowzero: bool) -> Vec<Dim> {
    let mut out: Vec<Dim> = spec
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Fixed(0) if !allowzero => x.get(i).cloned().unwrap_or(Dim::Unknown),
            Dim::Fixed(d) if *d >= 0 => Dim::Fixed(*d),
            Dim::Param(p) => Dim::Param(p.clone()),
            _ => Dim::Unknown,
        })
        .collect();
    let holes: Vec<usize> = spec
        .iter()
        .enumerate()
        .filter(|(_, d)| **d == Dim::Fixed(-1))
        .map(|(i, _)| i)
        .collect();
    if let [hole] = holes[..] {
        let rest: Vec<Dim> = out
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != hole)
            .map(|(_, d)| d.clone())
            .collect();
        if let (Some((kx, mut nx)), Some((kr, nr))) = (monomial(x), monomial(&rest)) {
            let cancels = nr.iter().all(|p| {
                nx.iter()
                    .position(|q| q == p)
                    .map(|i| nx.remove(i))
                    .is_some()
            });
            if cancels && kr != 0 && kx % kr == 0 {
                out[hole] = match (kx / kr, &nx[..]) {
                    (k, []) => Dim::Fixed(k),
                    (1, [p]) => Dim::Param(p.clone()),
                    _ => Dim::Unknown,
                };
            }
        }
    }
    out
}
