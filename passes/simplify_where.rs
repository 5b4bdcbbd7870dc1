//! `simplify-where`: `Where` with a constant condition, and the NaN guard exporters put after
//! attention's softmax, become plain arithmetic (TensorRT INT8 calibration and fp16 builds
//! handle `Where` badly; a model without it is also smaller).
//!
//!   Where(c, a, b), c all true                  -> a
//!   Where(c, a, b), c all false                 -> b
//!   Where(c, 0, x) | Where(!c, x, 0), c constant -> Mul(x, c ? 0 : 1)
//!   Where(c, -inf, x) | Where(!c, x, -inf)       -> Add(x, c ? -inf : 0)
//!   Where(IsNaN(s), 0, s), s = Softmax(y)        -> s
//!
//! Each rewrite needs the replacement to have the `Where`'s type (no broadcast lost). The
//! arithmetic forms equal the `Where` for finite x, which every activation of a working model
//! is. Softmax returns NaN only for a row that is entirely -inf (or holds NaN): the guard goes
//! when no constant mask added to `y` has such a row, and stays when `y` adds a mask that is
//! not constant (a dynamic padding mask may hide a whole row).

use ndarray::{ArrayD, Axis, IxDyn};

use crate::eval::{attrs, ops, Tensor};
use crate::ir::{Graph, NodeId, Port};
use crate::pass::pattern::{const_splat, const_value, same_type};
use crate::pass::{Context, Outcome, Pass};

pub struct SimplifyWhere;

impl Pass for SimplifyWhere {
    fn name(&self) -> &'static str {
        "simplify-where"
    }
    fn about(&self) -> &'static str {
        "Where with a constant condition -> its branch or Mul/Add by a mask; softmax NaN guards"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let mut counts: std::collections::BTreeMap<&'static str, usize> = Default::default();
        for n in g.topo_ops() {
            if !g.contains(n) || !g.node(n).is("Where") {
                continue;
            }
            if let Some(kind) = simplify(g, n) {
                *counts.entry(kind).or_default() += 1;
            }
        }
        Ok(Outcome::changed(
            counts
                .iter()
                .map(|(k, c)| format!("{c} Where: {k}"))
                .collect(),
        ))
    }
}

fn simplify(g: &mut Graph, n: NodeId) -> Option<&'static str> {
    let (c, a, b) = (g.input(n, 0)?, g.input(n, 1)?, g.input(n, 2)?);
    let out = Port::new(n, 0);
    if let Some(s) = softmax_guard(g, c, a, b) {
        g.replace_all_uses(out, s);
        g.remove_node(n);
        return Some("softmax NaN guard removed");
    }
    let cond = match const_value(g, c)? {
        Tensor::Bool(v) => v,
        _ => return None,
    };
    if cond.iter().all(|&v| v) && same_type(g, a, out) {
        g.replace_all_uses(out, a);
        g.remove_node(n);
        return Some("condition always true");
    }
    if cond.iter().all(|&v| !v) && same_type(g, b, out) {
        g.replace_all_uses(out, b);
        g.remove_node(n);
        return Some("condition always false");
    }
    // One branch a constant splat k, the other the computed x: where the mask picks k.
    let (x, k, picks_k) = match (const_splat(g, a), const_splat(g, b)) {
        (Some(k), None) => (b, k, cond.clone()),
        (None, Some(k)) => (a, k, cond.mapv(|v| !v)),
        _ => return None,
    };
    let dtype = g.ty(x)?.dtype;
    if !dtype.is_float() || g.ty(out)?.rank()? != g.ty(x)?.rank()? {
        return None;
    }
    let (op, mask, kind): (&str, ArrayD<f64>, _) = if k == 0.0 {
        (
            "Mul",
            picks_k.mapv(|p| if p { 0.0 } else { 1.0 }),
            "masked zero -> Mul",
        )
    } else if k == f64::NEG_INFINITY {
        (
            "Add",
            picks_k.mapv(|p| if p { f64::NEG_INFINITY } else { 0.0 }),
            "masked -inf -> Add",
        )
    } else {
        return None;
    };
    // The arithmetic form broadcasts x against the mask exactly as Where did against c.
    let mask = ops::cast(&Tensor::F64(mask), dtype).ok()?;
    let hint = g.node(n).op()?.name.clone();
    let m = g.add_const(&format!("{hint}_mask"), mask.to_proto(""));
    let r = g.add_op(
        op,
        &format!("{hint}_{}", op.to_lowercase()),
        &[Some(x), Some(Port::new(m, 0))],
        vec![],
        1,
    );
    g.value_mut(Port::new(r, 0)).ty = g.ty(out).cloned();
    g.replace_all_uses(out, Port::new(r, 0));
    g.remove_node(n);
    Some(kind)
}

/// `s` if `Where(c, a, b)` is `Where(IsNaN(s), 0, s)` around a softmax that cannot be NaN.
fn softmax_guard(g: &Graph, c: Port, a: Port, b: Port) -> Option<Port> {
    let isnan = g.node(c.node).is("IsNaN").then_some(c.node)?;
    let s = g.input(isnan, 0)?;
    if b != s || const_splat(g, a)? != 0.0 || !g.node(s.node).is("Softmax") {
        return None;
    }
    let sm = s.node;
    let y = g.input(sm, 0)?;
    if !g.node(y.node).is("Add") {
        return finite_scores(g, y).then_some(s);
    }
    let r = g.ty(y)?.rank()?;
    let ax = attrs::axis(attrs::int_or(&g.node(sm).op()?.attrs, "axis", -1), r)?;
    for slot in 0..2 {
        let p = g.input(y.node, slot)?;
        let ok = match g.const_tensor(p) {
            Some(_) => !has_dead_row(&const_value(g, p)?, ax, r)?,
            None => finite_scores(g, p),
        };
        if !ok {
            return None;
        }
    }
    Some(s)
}

/// True if some row of `m` (broadcast to rank `r`) along `ax` is entirely -inf.
fn has_dead_row(m: &Tensor, ax: usize, r: usize) -> Option<bool> {
    let v = m.as_f64_vec()?;
    let mut shape = m.shape();
    while shape.len() < r {
        shape.insert(0, 1);
    }
    let a = ArrayD::from_shape_vec(IxDyn(&shape), v).ok()?;
    Some(
        a.lanes(Axis(ax))
            .into_iter()
            .any(|l| l.iter().all(|&x| x == f64::NEG_INFINITY)),
    )
}

/// Attention scores: products and layout changes of activations, which are finite. A mask
/// computed at run time (Where, Cast of a bool, Expand of an input...) is not.
fn finite_scores(g: &Graph, p: Port) -> bool {
    const FINITE: &[&str] = &[
        "MatMul",
        "Gemm",
        "Mul",
        "Div",
        "Transpose",
        "Reshape",
        "Einsum",
    ];
    FINITE.iter().any(|op| g.node(p.node).is(op))
}
