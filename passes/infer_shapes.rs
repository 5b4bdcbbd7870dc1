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
        for n in g.topo_ops() {
            updated += infer_node(g, n);
        }
        updated += type_unruled(g);
        Ok(Outcome::changed(if updated > 0 {
            vec![format!("typed {updated} tensors")]
        } else {
            vec![]
        }))
    }
}

/// Types the outputs of one node from its inputs, by the rules of [`infer`] and, for what
/// they leave unknown, from static input shapes ([`type_unruled`]); returns how many values
/// learned more. `fold-constants` calls it on each node just before looking at it, so one
/// sweep folds the Shape arithmetic behind a chain of such operators (D-FINE's decoder layers
/// each had to wait for the next pipeline round otherwise).
pub fn infer_node(g: &mut Graph, n: crate::ir::NodeId) -> usize {
    infer_by_rule(g, n) + type_unruled_node(g, n)
}

fn infer_by_rule(g: &mut Graph, n: crate::ir::NodeId) -> usize {
    let opset = g.opset();
    let ins = g.inputs(n);
    let tys: Vec<Option<TensorType>> = ins
        .iter()
        .map(|p| p.and_then(|p| g.ty(p).cloned()))
        .collect();
    let vals: Vec<Option<Tensor>> = ins.iter().map(|p| small_const(g, *p)).collect();
    let node = g.node(n);
    let Some(op) = node.op() else { return 0 };
    if !crate::ir::is_onnx_domain(&op.domain) {
        return 0;
    }
    let Some(out) = infer(&op.op_type, &op.attrs, &tys, &vals, opset) else {
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

/// Types every node in topological order, once (no folding); returns how many values learned
/// more.
pub fn type_all(g: &mut Graph) -> usize {
    g.topo_ops().into_iter().map(|n| infer_node(g, n)).sum()
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
    let ints_of = |i: usize| vals.get(i).cloned().flatten().and_then(|t| t.as_i64_vec());
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
            let spec = ints_of(1)?;
            let x = s0?;
            let allowzero = attrs::int_or(at, "allowzero", 0) != 0;
            if let Some(xs) = t0.as_ref().and_then(TensorType::static_shape) {
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
            let shape = ints_of(0)?;
            let dt =
                attrs::tensor(at, "value").map_or(DType::F32, |t| DType(t.data_type.unwrap_or(1)));
            same(fixed(&shape), Some(dt))
        }
        "Expand" => {
            let x = s0?;
            let spec: Vec<Dim> = ints_of(1)?.iter().map(|&d| Dim::Fixed(d)).collect();
            same(Some(broadcast(&[&x, &spec])), dt0)
        }
        "Tile" => {
            let x = s0?;
            let reps = ints_of(1)?;
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
            let xs = t0.as_ref()?.static_shape()?;
            if let Some(sz) = ints_of(3).filter(|v| v.len() == x.len()) {
                return same(fixed(&sz), dt0);
            }
            let sc_idx = if op == "Upsample" || opset < 11 { 1 } else { 2 };
            let sc = vals.get(sc_idx).cloned().flatten()?.as_f64_vec()?;
            if sc.len() != xs.len() {
                return None;
            }
            same(
                fixed(
                    &xs.iter()
                        .zip(&sc)
                        .map(|(&d, &s)| (d as f64 * s).floor() as i64)
                        .collect::<Vec<_>>(),
                ),
                dt0,
            )
        }
        "ReduceMax" | "ReduceMin" | "ReduceSum" | "ReduceMean" | "ReduceProd" | "ReduceL2"
        | "ArgMax" | "ArgMin" => {
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

/// Static output shapes for operators the rules of [`infer`] do not cover (deformable
/// attention's GridSample, a MatMul with a vector operand, ScatterND/GatherElements, TopK,
/// Einsum, shape-keeping unary ops): typed from their inputs' static shapes only, never from
/// values. A shape known here lets the `Shape` arithmetic behind such an operator fold (the
/// transformers Deformable DETR, DAB-DETR, RT-DETR and D-FINE exports compute their sampling
/// grids, anchors and position embeddings that way); the batch analysis of generalize-batch
/// needs the same shapes. Returns how many outputs it typed.
pub fn type_unruled(g: &mut Graph) -> usize {
    // A declared type without a static shape (a graph output's `f32[?]`) counts as none.
    let known = |v: &crate::ir::Value| v.ty.as_ref().is_some_and(|t| t.static_shape().is_some());
    let mut typed = 0;
    for n in g.topo_ops() {
        let before = g.node(n).outputs.iter().filter(|v| known(v)).count();
        infer_node(g, n);
        let after = g.node(n).outputs.iter().filter(|v| known(v)).count();
        typed += after.saturating_sub(before);
    }
    typed
}

/// The static-shape rules of [`type_unruled`] for one node; returns how many outputs it typed.
fn type_unruled_node(g: &mut Graph, n: crate::ir::NodeId) -> usize {
    let known = |v: &crate::ir::Value| v.ty.as_ref().is_some_and(|t| t.static_shape().is_some());
    let mut typed = 0;
    let node = g.node(n);
    if node.outputs.iter().all(known) {
        return 0;
    }
    let Some(op) = node.op() else { return 0 };
    let ins = g.inputs(n);
    let ty = |k: usize| ins.get(k).copied().flatten().and_then(|p| g.ty(p).cloned());
    let st = |k: usize| ty(k).and_then(|t| t.static_shape());
    let t = op.op_type.as_str();
    let outs: Vec<Option<TensorType>> = match t {
        "GridSample" => match (ty(0), st(0), st(1)) {
            (Some(x), Some(xs), Some(gs)) if xs.len() == 4 && gs.len() == 4 => {
                vec![Some(TensorType::new(
                    x.dtype,
                    &[xs[0], xs[1], gs[1], gs[2]],
                ))]
            }
            _ => return 0,
        },
        // With a vector operand, which infer-shapes leaves untyped.
        "MatMul" => match (ty(0), st(0), st(1)) {
            (Some(x), Some(a), Some(b)) if b.len() == 1 && a.len() >= 2 => {
                vec![Some(TensorType::new(x.dtype, &a[..a.len() - 1]))]
            }
            (Some(x), Some(a), Some(b)) if a.len() == 1 && b.len() >= 2 => {
                let mut o = b[..b.len() - 2].to_vec();
                o.push(b[b.len() - 1]);
                vec![Some(TensorType::new(x.dtype, &o))]
            }
            _ => return 0,
        },
        // The data's shape and type, whatever is scattered into it.
        "ScatterND" | "ScatterElements" => match (ty(0), st(0)) {
            (Some(x), Some(xs)) => vec![Some(TensorType::new(x.dtype, &xs))],
            _ => return 0,
        },
        "GatherElements" => match (ty(0), st(1)) {
            (Some(x), Some(is)) => vec![Some(TensorType::new(x.dtype, &is))],
            _ => return 0,
        },
        "TopK" => {
            let (Some(x), Some(mut xs)) = (ty(0), st(0)) else {
                return 0;
            };
            let Some(k) = small_const(g, g.input(n, 1))
                .and_then(|t| t.as_i64_vec())
                .and_then(|v| v.first().copied())
            else {
                return 0;
            };
            let Some(a) = norm_axis(attrs::int_or(&op.attrs, "axis", -1), xs.len()) else {
                return 0;
            };
            xs[a] = k;
            vec![
                Some(TensorType::new(x.dtype, &xs)),
                Some(TensorType::new(crate::ir::DType::I64, &xs)),
            ]
        }
        // transformers RT-DETR / D-FINE build the sine position embedding with an outer
        // product `einsum("i,j->ij")`; without its shape the encoder's `Add` of that
        // embedding cannot be followed.
        "Einsum" => {
            let Some(eq) = attrs::string(&op.attrs, "equation") else {
                return 0;
            };
            let shapes: Option<Vec<Vec<i64>>> = (0..ins.len()).map(st).collect();
            match (ty(0), shapes.and_then(|s| einsum_shape(&eq, &s))) {
                (Some(x), Some(s)) => vec![Some(TensorType::new(x.dtype, &s))],
                _ => return 0,
            }
        }
        _ if super::generalize_batch::UNARY.contains(&t) => match (ty(0), st(0)) {
            (Some(x), Some(xs)) if !["Cast", "CastLike", "Not", "IsNaN", "IsInf"].contains(&t) => {
                vec![Some(TensorType::new(x.dtype, &xs))]
            }
            _ => return 0,
        },
        _ => return 0,
    };
    for (slot, ty) in outs.into_iter().enumerate() {
        if slot < g.node(n).outputs.len() && !known(&g.node(n).outputs[slot]) {
            if let Some(ty) = ty {
                typed += 1;
                g.value_mut(Port::new(n, slot)).ty = Some(ty);
            }
        }
    }
    typed
}

/// The output shape of an Einsum `equation` over inputs of `shapes`. Ellipses are not
/// handled (`None`): no export in the family uses them where the batch analysis looks.
fn einsum_shape(equation: &str, shapes: &[Vec<i64>]) -> Option<Vec<i64>> {
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

/// `axis` (negative counts from the end) as an index into `rank` dimensions.
fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a).ok().filter(|&a| a < rank)
}
