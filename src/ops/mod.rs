//! The op registry: what each ONNX operator means, in one place. One [`OpRule`] per operator,
//! grouped by family (one file each): its type and shape inference, its constant evaluation,
//! how its output axes relate to its input axes, and the accessors that hide opset differences
//! ([`accessors`]). [`rule`] is the only lookup; passes and analyses ask it instead of keeping
//! lists of op names. An operator without a rule is left alone by everything that asks.
//!
//! Every failure of evaluation is an [`EvalError`], never a panic: the folder simply leaves a
//! node it cannot evaluate in place.

// Comparisons are written once for every element type, bool included.
#![allow(clippy::bool_comparison)]

use std::collections::HashMap;
use std::sync::OnceLock;

use half::f16;
use ndarray::{ArrayD, IxDyn, Zip};

use crate::ir::{Dim, TensorType};
use crate::load::proto::AttributeProto;
use crate::tensor::attrs::{self, axis};
use crate::tensor::{DType, Tensor};
#[allow(unused_imports)]
use crate::{map_any, try_map_any, with_any};

pub mod accessors;
mod elementwise;
mod linalg;
mod movement;
mod nn;
mod reduce;
mod shape;

pub use elementwise::{cast, same_dtype};
pub use movement::slice_len;
pub use shape::reshape_target;

/// How an operator's output axes come from its input axes: what the batch analysis and
/// head pruning follow an axis through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axes {
    /// Each element of output 0 comes from the same position of input 0 (other inputs, if
    /// any, are parameters: a Cast's target, a LeakyRelu slope).
    Elementwise,
    /// All inputs broadcast against each other, numpy style (right-aligned).
    Broadcast,
    /// The shape is kept, but elements mix along axes the op names (Softmax, LayerNorm,
    /// CumSum): an axis passes through unless it is one of those.
    Along,
    /// Axis 0 (the batch of a convolution, pool, norm or sampler) is kept; the others are
    /// computed.
    Leading,
    /// The op's own mapping (Transpose, Reshape, Concat, ...), read from its attributes.
    Other,
}

/// The arguments of a type rule: the operator, its attributes, what is known of its inputs'
/// types, and the values of its small constant inputs.
#[derive(Clone, Copy)]
pub struct InferCx<'a> {
    pub op: &'a str,
    pub at: &'a [AttributeProto],
    pub tys: &'a [Option<TensorType>],
    pub vals: &'a [Option<Tensor>],
    pub opset: i64,
}

impl InferCx<'_> {
    /// Input 0's type, shape and element type: what most rules start from.
    fn first(&self) -> (Option<TensorType>, Option<Vec<Dim>>, Option<DType>) {
        let t0 = self.ty(0);
        let s0 = t0.as_ref().and_then(|t| t.shape.clone());
        let dt0 = t0.as_ref().map(|t| t.dtype);
        (t0, s0, dt0)
    }
    /// The integer value of small constant input `k`.
    fn ints(&self, k: usize) -> Option<Vec<i64>> {
        self.vals
            .get(k)
            .cloned()
            .flatten()
            .and_then(|t| t.as_i64_vec())
    }
    fn ty(&self, k: usize) -> Option<TensorType> {
        self.tys.get(k).cloned().flatten()
    }
    fn st(&self, k: usize) -> Option<Vec<i64>> {
        self.ty(k).and_then(|t| t.static_shape())
    }
}

type Types = Option<Vec<Option<TensorType>>>;
type InferFn = fn(&InferCx) -> Types;
type EvalFn = fn(&str, &[AttributeProto], &[Option<Tensor>], i64) -> R<Vec<Tensor>>;

/// What detrc knows of one operator.
#[derive(Clone, Copy)]
pub struct OpRule {
    pub name: &'static str,
    infer: Option<InferFn>,
    infer_static: Option<InferFn>,
    eval: Option<EvalFn>,
    pub axes: Axes,
    /// Output axis k is input 0's axis k (the rank is kept and no axis moves, though its size
    /// may change: Resize, Pad).
    pub positional: bool,
    /// Each output element costs arithmetic over several input elements (interpolation), not a
    /// copy or broadcast: a constant result is worth storing even where it is larger than what
    /// it consumes (a ViT's position embeddings resized to the input grid), so constant
    /// folding does not hold it to the size budget, only to a hard cap.
    pub resamples: bool,
}

impl OpRule {
    const fn new(name: &'static str) -> Self {
        OpRule {
            name,
            infer: None,
            infer_static: None,
            eval: None,
            axes: Axes::Other,
            positional: false,
            resamples: false,
        }
    }
    const fn infer(mut self, f: InferFn) -> Self {
        self.infer = Some(f);
        self
    }
    const fn infer_static(mut self, f: InferFn) -> Self {
        self.infer_static = Some(f);
        self
    }
    const fn eval(mut self, f: EvalFn) -> Self {
        self.eval = Some(f);
        self
    }
    const fn axes(mut self, a: Axes) -> Self {
        self.axes = a;
        self
    }
    const fn positional(mut self) -> Self {
        self.positional = true;
        self
    }
    const fn resamples(mut self) -> Self {
        self.resamples = true;
        self
    }

    /// The constant evaluator handles this operator (constant folding may replace it).
    pub fn evaluates(&self) -> bool {
        self.eval.is_some()
    }
    /// A type rule from input types (and small constant inputs) exists.
    pub fn types(&self) -> bool {
        self.infer.is_some()
    }
}

/// Every rule, family by family.
pub fn rules() -> impl Iterator<Item = &'static OpRule> {
    [
        elementwise::RULES,
        shape::RULES,
        movement::RULES,
        reduce::RULES,
        linalg::RULES,
        nn::RULES,
    ]
    .into_iter()
    .flatten()
}

/// The rule of an ONNX-domain operator, `None` if detrc does not know it.
pub fn rule(op_type: &str) -> Option<&'static OpRule> {
    static MAP: OnceLock<HashMap<&'static str, &'static OpRule>> = OnceLock::new();
    MAP.get_or_init(|| rules().map(|r| (r.name, r)).collect())
        .get(op_type)
        .copied()
}

/// Evaluates one operator on constant inputs. `inputs[i] == None` is an omitted optional input.
pub fn eval_op(
    op: &str,
    at: &[AttributeProto],
    inputs: &[Option<Tensor>],
    opset: i64,
) -> R<Vec<Tensor>> {
    match rule(op).and_then(|r| r.eval) {
        Some(f) => f(op, at, inputs, opset),
        None => unsupported(op.to_string()),
    }
}

/// Output types of one operator, or None where the rule needs more than is known.
pub fn infer(cx: &InferCx) -> Types {
    let InferCx {
        op,
        at,
        tys,
        vals,
        opset,
    } = *cx;
    // All-constant inputs: evaluate, which gives the exact answer.
    if !tys.is_empty()
        && vals
            .iter()
            .zip(tys)
            .all(|(v, t)| v.is_some() || t.is_none())
        && vals.iter().any(Option::is_some)
        || op == "Constant"
    {
        if let Ok(outs) = eval_op(op, at, vals, opset) {
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
    (rule(op)?.infer?)(cx)
}

/// Static output shapes for operators the rules of [`infer`] leave unknown (deformable
/// attention's GridSample, a MatMul with a vector operand, ScatterND/GatherElements, TopK,
/// Einsum, shape-keeping unary ops): from their inputs' static shapes only.
pub fn infer_static(cx: &InferCx) -> Types {
    (rule(cx.op)?.infer_static?)(cx)
}

/// Integer contents of what `place` names, for evaluation: the attribute, or a constant input.
/// `None` for an operator without such a place, or an absent optional input.
fn eval_ints_at(
    place: Option<accessors::Place>,
    at: &[AttributeProto],
    inputs: &[Option<Tensor>],
) -> R<Option<Vec<i64>>> {
    match place {
        Some(accessors::Place::Input(k)) => opt_ints(inputs, k),
        Some(accessors::Place::Attribute(name)) => Ok(attrs::ints(at, name)),
        None => Ok(None),
    }
}

/// The same for a type rule, which sees small constant inputs in `vals`.
fn infer_ints_at(
    place: Option<accessors::Place>,
    at: &[AttributeProto],
    vals: &[Option<Tensor>],
) -> Option<Vec<i64>> {
    accessors::ints_at(place?, at, |k| {
        Some(vals.get(k).cloned().flatten().and_then(|t| t.as_i64_vec()))
    })?
}

/// One output of `dtype` and `shape`: the result of most type rules.
fn same(shape: Option<Vec<Dim>>, dtype: Option<DType>) -> Types {
    Some(vec![Some(TensorType {
        dtype: dtype?,
        shape,
    })])
}

/// One evaluated output.
fn one(t: Tensor) -> R<Vec<Tensor>> {
    Ok(vec![t])
}

/// The static-shape rule of the shape-keeping unary operators: input 0's type.
fn same_static(cx: &InferCx) -> Types {
    let (x, xs) = (cx.ty(0)?, cx.st(0)?);
    Some(vec![Some(TensorType::new(x.dtype, &xs))])
}

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

/// `axis` (negative counts from the end) as an index into `rank` dimensions.
fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a).ok().filter(|&a| a < rank)
}

fn zip2<A: Copy, B: Copy, C>(a: &ArrayD<A>, b: &ArrayD<B>, f: impl Fn(A, B) -> C) -> R<ArrayD<C>> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    check_size(&shape)?;
    let av = a.broadcast(IxDyn(&shape)).expect("checked broadcast");
    let bv = b.broadcast(IxDyn(&shape)).expect("checked broadcast");
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

fn f32_of(t: &Tensor) -> R<ArrayD<f32>> {
    match t {
        Tensor::F32(a) => Ok(a.clone()),
        other => unsupported(format!("float arithmetic on {}", other.dtype())),
    }
}

#[cfg(test)]
mod tests {
    //! The registry as a whole: every operator the evaluator handles has an example here and
    //! is typed, and where a type rule exists it agrees with the evaluator.

    use super::*;
    use crate::tensor::attrs::{make_float, make_int, make_ints, make_string};

    fn f(shape: &[usize], v: impl Fn(usize) -> f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(v).collect()).unwrap())
    }
    fn x23() -> Tensor {
        f(&[2, 3], |i| 0.5 + i as f32)
    }
    fn b(shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::Bool(
            ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i % 2 == 0).collect()).unwrap(),
        )
    }
    fn i(v: &[i64]) -> Option<Tensor> {
        Some(Tensor::vec_i64(v.to_vec()))
    }
    fn s(v: i64) -> Option<Tensor> {
        Some(Tensor::scalar_i64(v))
    }

    /// An example of each evaluable operator: (attributes, inputs, opset).
    fn example(op: &str) -> Option<(Vec<AttributeProto>, Vec<Option<Tensor>>, i64)> {
        let x = Some(x23());
        let row = Some(f(&[3], |i| 1.0 + i as f32));
        let one = |v: Vec<Option<Tensor>>| Some((vec![], v, 17));
        match op {
            "Identity" | "Sqrt" | "Exp" | "Log" | "Sin" | "Cos" | "Tanh" | "Sigmoid"
            | "Reciprocal" | "Floor" | "Ceil" | "Round" | "Neg" | "Abs" | "Relu" | "Shape"
            | "Size" => one(vec![x]),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Min" | "Max" | "Sum" | "Mean" | "Equal"
            | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" => one(vec![x, row]),
            "And" | "Or" | "Xor" => one(vec![Some(b(&[2, 3])), Some(b(&[3]))]),
            "Not" => one(vec![Some(b(&[2, 3]))]),
            "Where" => one(vec![Some(b(&[2, 3])), x, row]),
            "Clip" => one(vec![x, Some(f(&[], |_| 1.0)), Some(f(&[], |_| 4.0))]),
            "Cast" => Some((vec![make_int("to", 7)], vec![x], 17)),
            "Constant" => Some((
                vec![AttributeProto {
                    name: Some("value".into()),
                    t: Some(x23().to_proto("")),
                    r#type: Some(4),
                    ..Default::default()
                }],
                vec![],
                17,
            )),
            "Reshape" => one(vec![x, i(&[3, 2])]),
            "Flatten" => Some((
                vec![make_int("axis", 1)],
                vec![Some(f(&[2, 3, 4], |i| i as f32))],
                17,
            )),
            "Unsqueeze" => one(vec![x, i(&[0])]),
            "Squeeze" => one(vec![Some(f(&[1, 3], |i| i as f32)), i(&[0])]),
            "Transpose" => Some((vec![make_ints("perm", vec![1, 0])], vec![x], 17)),
            "Concat" => Some((
                vec![make_int("axis", 0)],
                vec![x, Some(f(&[1, 3], |i| i as f32))],
                17,
            )),
            "Gather" => Some((vec![make_int("axis", 1)], vec![x, i(&[2, 0])], 17)),
            "Slice" => one(vec![x, i(&[0]), i(&[2]), i(&[1])]),
            "Split" => Some((vec![make_int("axis", 1)], vec![x, i(&[1, 2])], 17)),
            "ScatterND" => one(vec![
                Some(f(&[4], |i| i as f32)),
                Some(Tensor::I64(
                    ArrayD::from_shape_vec(IxDyn(&[1, 1]), vec![1]).unwrap(),
                )),
                Some(f(&[1], |_| 9.0)),
            ]),
            "GatherND" => one(vec![
                x,
                Some(Tensor::I64(
                    ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1, 2]).unwrap(),
                )),
            ]),
            "Einsum" => Some((
                vec![make_string("equation", "i,j->ij")],
                vec![Some(f(&[2], |i| i as f32)), row],
                17,
            )),
            "Expand" => one(vec![row, i(&[2, 3])]),
            "Tile" => one(vec![x, i(&[2, 1])]),
            "ConstantOfShape" => one(vec![i(&[2, 3])]),
            "Range" => one(vec![s(0), s(5), s(2)]),
            "CumSum" => one(vec![x, s(1)]),
            "Pad" => one(vec![x, i(&[0, 1, 0, 1])]),
            "Resize" => Some((
                vec![make_string("mode", "nearest")],
                vec![
                    Some(f(&[1, 1, 2, 2], |i| i as f32)),
                    None,
                    Some(f(&[4], |i| if i < 2 { 1.0 } else { 2.0 })),
                ],
                17,
            )),
            "Upsample" => Some((
                vec![make_string("mode", "nearest")],
                vec![
                    Some(f(&[1, 1, 2, 2], |i| i as f32)),
                    Some(f(&[4], |i| if i < 2 { 1.0 } else { 2.0 })),
                ],
                9,
            )),
            "ReduceMax" | "ReduceMin" | "ReduceMean" | "ReduceProd" => {
                Some((vec![make_ints("axes", vec![1])], vec![x], 17))
            }
            "ReduceSum" => one(vec![x, i(&[1])]),
            "MatMul" => one(vec![x, Some(f(&[3, 4], |i| i as f32 * 0.1))]),
            "Gemm" => Some((
                vec![make_float("alpha", 0.5)],
                vec![
                    x,
                    Some(f(&[3, 4], |i| i as f32 * 0.1)),
                    Some(f(&[4], |i| i as f32)),
                ],
                17,
            )),
            "Softmax" | "LogSoftmax" => Some((vec![make_int("axis", -1)], vec![x], 17)),
            "LayerNormalization" => one(vec![x, row.clone(), row]),
            _ => None,
        }
    }

    fn types_of(ts: &[Tensor]) -> Vec<Option<TensorType>> {
        ts.iter()
            .map(|t| {
                let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
                Some(TensorType::new(t.dtype(), &dims))
            })
            .collect()
    }

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in rules() {
            assert!(seen.insert(r.name), "{} has two rules", r.name);
            assert!(std::ptr::eq(rule(r.name).unwrap(), r));
        }
        assert!(rule("NoSuchOp").is_none());
    }

    /// Every operator the evaluator handles can be typed: from its inputs' types by its rule
    /// where it has one, which must agree with the evaluator, and from constant inputs by
    /// evaluation otherwise.
    #[test]
    fn every_evaluated_op_is_typed() {
        let mut checked = 0;
        for r in rules().filter(|r| r.evaluates()) {
            let (at, inputs, opset) =
                example(r.name).unwrap_or_else(|| panic!("{}: no example in ops tests", r.name));
            let outs = eval_op(r.name, &at, &inputs, opset)
                .unwrap_or_else(|e| panic!("{}: example does not evaluate: {e}", r.name));
            let want = types_of(&outs);
            // All inputs constant: typing evaluates.
            let tys: Vec<Option<TensorType>> = inputs
                .iter()
                .map(|t| {
                    t.as_ref()
                        .and_then(|t| types_of(std::slice::from_ref(t)).pop().flatten())
                })
                .collect();
            let cx = InferCx {
                op: r.name,
                at: &at,
                tys: &tys,
                vals: &inputs,
                opset,
            };
            let by_value = infer(&cx);
            assert_eq!(by_value.as_ref(), Some(&want), "{}: typed by value", r.name);
            // The data (input 0) unknown, only its type: the rule alone must get the same
            // types. Other inputs stay values: rules read shapes, axes, sizes and scales. A
            // lone integer input is a shape (ConstantOfShape): typed by value only.
            let is_float = |t: &Option<Tensor>| t.as_ref().is_some_and(|t| t.dtype().is_float());
            let mut vals = inputs.clone();
            if !inputs.is_empty() && (is_float(&inputs[0]) || inputs.len() > 1) {
                vals[0] = None;
            }
            if r.types() && vals != inputs {
                let by_rule = infer(&InferCx { vals: &vals, ..cx })
                    .unwrap_or_else(|| panic!("{}: its type rule gives nothing", r.name));
                assert_eq!(by_rule.len(), want.len(), "{}", r.name);
                for (k, (got, w)) in by_rule.iter().zip(&want).enumerate() {
                    assert_eq!(got.as_ref(), w.as_ref(), "{}: output {k} by rule", r.name);
                }
            }
            checked += 1;
        }
        assert!(checked >= 69, "only {checked} evaluable ops");
    }

    /// The axis classes are what the batch analysis and head pruning rely on.
    #[test]
    fn axis_classes() {
        let axes = |op: &str| rule(op).map(|r| r.axes);
        assert_eq!(axes("Relu"), Some(Axes::Elementwise));
        assert_eq!(axes("Cast"), Some(Axes::Elementwise));
        assert_eq!(axes("Add"), Some(Axes::Broadcast));
        assert_eq!(axes("Where"), Some(Axes::Broadcast));
        assert_eq!(axes("Softmax"), Some(Axes::Along));
        assert_eq!(axes("Conv"), Some(Axes::Leading));
        assert_eq!(axes("Transpose"), Some(Axes::Other));
        for r in rules() {
            if matches!(r.axes, Axes::Elementwise | Axes::Along) {
                assert!(r.positional, "{}: keeps its axes in place", r.name);
            }
        }
        assert!(rule("Pad").unwrap().positional && !rule("Reshape").unwrap().positional);
    }

    #[test]
    fn unknown_ops_are_left_alone() {
        assert!(matches!(
            eval_op("NonMaxSuppression", &[], &[], 17),
            Err(EvalError::Unsupported(_))
        ));
        let cx = InferCx {
            op: "MyCustomOp",
            at: &[],
            tys: &[None],
            vals: &[None],
            opset: 17,
        };
        assert_eq!(infer(&cx), None);
        assert_eq!(infer_static(&cx), None);
    }
}
