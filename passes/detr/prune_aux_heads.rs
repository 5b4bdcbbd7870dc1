//! `prune-aux-heads`: DETR's export runs the class and box heads on all decoder layers
//! stacked together and then keeps the last layer with `Gather(index=-1)`. This pass makes the
//! heads run on the selected layer only and drops the selection.
//!
//! Pattern (found by structure, never by name):
//!
//!   stack  = Concat_axis(a)(Unsqueeze(x_0, a), ..., Unsqueeze(x_{L-1}, a))
//!   heads  = chain of layer-wise ops on stack (Transpose, MatMul/Gemm by constants,
//!            Add/Mul/... by constants, Relu/Sigmoid/..., Reshape moving the layer axis
//!            into or out of the row dimension)
//!   out    = Gather_axis(a')(heads, k) | Squeeze(Slice(heads, k, k+1, a'), a')
//!
//! Replacement: the same chain applied to x_k alone. Selecting layer k commutes with every op
//! in the chain; each op records where the layer dimension is (a `Layout`) so the per-layer
//! copy gets the right permutation, constant and reshape target. The old stacked heads become
//! dead and `dead-code` removes them with the unused final layer norms.

use std::collections::{HashMap, HashSet};

use crate::ir::{Graph, NodeId, Port, TensorType};
use crate::load::proto::AttributeProto;
use crate::ops::{self, Axes};
use crate::pass::pattern::{axes_of, const_ints, unsqueeze_axes};
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::{attrs, Tensor};

pub struct PruneAuxHeads;

/// Where the layer dimension lives in a stacked tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The layer is axis `a`.
    Axis(usize),
    /// Axis 0 holds `L * m` rows, layer-major (a Reshape flattened the layer into the rows).
    Rows { m: i64 },
}

/// A matched selection: `sel` reads the stack-derived tensor through `path` (stack first).
struct Match {
    sel: NodeId,
    k: i64,
    path: Vec<NodeId>,
}

impl Pass for PruneAuxHeads {
    fn name(&self) -> &'static str {
        "prune-aux-heads"
    }
    fn about(&self) -> &'static str {
        "run the class/box heads on the last decoder layer only and drop the Gather(-1)"
    }
    fn detr_specific(&self) -> bool {
        true
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let mut matches = Vec::new();
        let mut near_misses = Vec::new();
        for n in g.topo_ops() {
            let Some((data, axis, k)) = selection(g, n) else {
                continue;
            };
            match trace_to_stack(g, data, axis) {
                Ok(path) => matches.push(Match { sel: n, k, path }),
                Err(Some(why)) => near_misses.push(format!("{}: {why}", g.node(n).display_name())),
                Err(None) => {}
            }
        }
        if matches.is_empty() {
            return Ok(if near_misses.is_empty() {
                if let Some(sel) = single_layer_selection(g) {
                    Outcome::NotApplicable(format!(
                        "{} selects from a stack of one decoder layer (the export computes the \
                         heads on the last layer only): no auxiliary heads to prune",
                        g.node(sel).display_name()
                    ))
                } else if g.topo_ops().iter().any(|&n| is_stack(g, n).is_some()) {
                    Outcome::NotApplicable(
                        "stacked layer outputs found, but no single-layer selection of heads on them"
                            .into(),
                    )
                } else {
                    Outcome::NotApplicable(
                        "no stacked decoder outputs selected by a constant index (already pruned, or not a DETR export)".into(),
                    )
                }
            } else {
                Outcome::NotApplicable(format!("left unchanged: {}", near_misses.join("; ")))
            });
        }
        let mut memo: HashMap<(NodeId, i64), Port> = HashMap::new();
        let mut lines = Vec::new();
        let mut stacks = HashSet::new();
        for m in &matches {
            let stack = m.path[0];
            stacks.insert(stack);
            let layers = g.node(stack).op().map_or(0, |o| o.num_inputs);
            let mut cur = per_layer_input(g, stack, m.k, &mut memo)?;
            let mut layout = Layout::Axis(is_stack(g, stack).expect("traced"));
            for &n in &m.path[1..] {
                let (port, next) =
                    clone_per_layer(g, n, cur, layout, m.k, layers as i64, &mut memo)?;
                cur = port;
                layout = next;
            }
            let out = Port::new(m.sel, 0);
            let want = g.ty(out).cloned();
            // The per-layer result must have exactly the selection's type.
            if let (Some(w), Some(got)) = (want.as_ref(), g.ty(cur)) {
                if w.static_shape().is_some() && got.static_shape().is_some() && w != got {
                    return Err(format!(
                        "per-layer head has type {got}, the selection had {w}"
                    ));
                }
            }
            g.replace_all_uses(out, cur);
            let _ = layers;
        }
        let total_layers: usize = stacks
            .iter()
            .map(|&s| g.node(s).op().map_or(0, |o| o.num_inputs))
            .sum();
        let removed_sel = matches.len();
        for m in &matches {
            g.remove_node(m.sel);
        }
        let before = g.num_ops();
        g.remove_dead();
        let dropped = before - g.num_ops();
        lines.push(format!(
            "pruned {} of {} decoder outputs, removed {removed_sel} selections (Gather/Slice) and {dropped} nodes of stacked heads",
            total_layers.saturating_sub(stacks.len()),
            total_layers
        ));
        if !near_misses.is_empty() {
            lines.push(format!("also left unchanged: {}", near_misses.join("; ")));
        }
        Ok(Outcome::Changed(lines))
    }
}

/// `(data, axis, index)` if node `n` picks one index along one axis and drops that axis.
fn selection(g: &Graph, n: NodeId) -> Option<(Port, usize, i64)> {
    let node = g.node(n);
    let data = g.input(n, 0)?;
    if node.is("Gather") && g.ty(data).and_then(TensorType::static_shape).is_none() {
        return stack_selection(g, n, data);
    }
    let rank = g.ty(data)?.rank()?;
    let dims = g.ty(data)?.static_shape()?;
    if node.is("Gather") {
        let idx_port = g.input(n, 1)?;
        let idx_ty = g.ty(idx_port)?;
        if idx_ty.rank() != Some(0) {
            return None;
        }
        let k = *const_ints(g, Some(idx_port))?.first()?;
        let axis = attrs::axis(attrs::int_or(&node.op()?.attrs, "axis", 0), rank)?;
        let k = if k < 0 { k + dims[axis] } else { k };
        return (0..dims[axis]).contains(&k).then_some((data, axis, k));
    }
    if node.is("Squeeze") {
        // Squeeze(Slice(x, [k], [k+1], [a]), [a])
        let sl = data.node;
        if !g.node(sl).is("Slice") || g.use_count(data) != 1 {
            return None;
        }
        let x = g.input(sl, 0)?;
        let xr = g.ty(x)?.rank()?;
        let xd = g.ty(x)?.static_shape()?;
        let starts = const_ints(g, g.input(sl, 1))?;
        let ends = const_ints(g, g.input(sl, 2))?;
        let axes = match g.input(sl, 3) {
            Some(p) => const_ints(g, Some(p))?,
            None => vec![0],
        };
        if let Some(p) = g.input(sl, 4) {
            if const_ints(g, Some(p))? != vec![1] {
                return None;
            }
        }
        let ([s], [e], [a]) = (&starts[..], &ends[..], &axes[..]) else {
            return None;
        };
        let a = attrs::axis(*a, xr)?;
        let k = if *s < 0 { s + xd[a] } else { *s };
        let e = if *e < 0 { e + xd[a] } else { (*e).min(xd[a]) };
        if e != k + 1 {
            return None;
        }
        let sq_axes = axes_of(g, n)??;
        if sq_axes.len() != 1 || attrs::axis(sq_axes[0], xr)? != a {
            return None;
        }
        let _ = rank;
        return Some((x, a, k));
    }
    None
}

/// `Gather_axis(a)(stack, k)` straight on a structural stack, shapes unknown: the layer count
/// is the Concat's input count.
fn stack_selection(g: &Graph, n: NodeId, data: Port) -> Option<(Port, usize, i64)> {
    let a = unsqueeze_stack(g, data.node)?;
    let axis = attrs::int_or(&g.node(n).op()?.attrs, "axis", 0);
    let idx = g.input(n, 1)?;
    if axis != a as i64 || g.ty(idx).and_then(TensorType::rank) != Some(0) {
        return None;
    }
    let layers = g.inputs(data.node).len() as i64;
    let k = *const_ints(g, Some(idx))?.first()?;
    let k = if k < 0 { k + layers } else { k };
    (0..layers).contains(&k).then_some((data, a, k))
}

/// A selection reading a one-input `Concat` along the selected axis: D-FINE's transformers
/// export, which runs the heads on the last decoder layer only and still stacks the result.
fn single_layer_selection(g: &Graph) -> Option<NodeId> {
    g.topo_ops().into_iter().find(|&n| {
        selection(g, n).is_some_and(|(data, axis, _)| {
            let c = data.node;
            g.node(c).is("Concat")
                && g.inputs(c).len() == 1
                && g.node(c)
                    .op()
                    .and_then(|o| attrs::int(&o.attrs, "axis"))
                    .and_then(|a| {
                        attrs::axis(a, g.ty(data).and_then(TensorType::rank).unwrap_or(0))
                    })
                    == Some(axis)
        })
    })
}

/// The concat axis if `n` stacks ≥2 same-typed slices of size 1 along it.
fn is_stack(g: &Graph, n: NodeId) -> Option<usize> {
    let node = g.node(n);
    if !node.is("Concat") {
        return None;
    }
    let ins = g.inputs(n);
    if ins.len() < 2 {
        return None;
    }
    let Some(t0) = g
        .ty(ins[0]?)
        .filter(|t| t.static_shape().is_some())
        .cloned()
    else {
        return unsqueeze_stack(g, n);
    };
    let a = attrs::axis(attrs::int(&node.op()?.attrs, "axis")?, t0.rank()?)?;
    for p in &ins {
        let t = g.ty((*p)?)?;
        if *t != t0 || t.static_shape()?.get(a) != Some(&1) {
            return None;
        }
        // Stacked layer outputs are computed, not constants.
        if g.const_tensor((*p)?).is_some() {
            return None;
        }
    }
    Some(a)
}

/// A stack recognised by structure alone, for exports whose shapes are not inferred (the
/// decoders of RT-DETR and D-FINE sit behind ops shape inference may not know):
/// `Concat_axis(a)(Unsqueeze(x_0, [a]), ..., Unsqueeze(x_{L-1}, [a]))` with a non-negative
/// `a`, each Unsqueeze read only by the Concat.
fn unsqueeze_stack(g: &Graph, n: NodeId) -> Option<usize> {
    let a = attrs::int(&g.node(n).op()?.attrs, "axis")?;
    if a < 0 {
        return None;
    }
    for p in g.inputs(n) {
        let p = p?;
        if unsqueeze_axes(g, p.node)? != vec![a] || g.use_count(p) != 1 {
            return None;
        }
    }
    Some(a as usize)
}

/// Walks from the selected tensor back through layer-wise ops to a stack. `Err(None)`: no
/// stack behind it (an ordinary Gather); `Err(Some(why))`: a stack, but something in between
/// cannot be moved past.
fn trace_to_stack(g: &Graph, data: Port, sel_axis: usize) -> Result<Vec<NodeId>, Option<String>> {
    let mut path = vec![];
    let mut cur = data;
    for _ in 0..64 {
        let n = cur.node;
        if is_stack(g, n).is_some() {
            path.push(n);
            path.reverse();
            return check_layouts(g, &path, sel_axis)
                .map(|_| path)
                .map_err(Some);
        }
        let node = g.node(n);
        let Some(op) = node.op() else {
            return Err(None);
        };
        let t = op.op_type.as_str();
        let ins = g.inputs(n);
        let axes = ops::rule(t).map_or(Axes::Other, |r| r.axes);
        let next = if matches!(axes, Axes::Elementwise | Axes::Along)
            || t == "Transpose"
            || t == "Reshape"
        {
            ins.first().copied().flatten()
        } else if axes == Axes::Broadcast || t == "MatMul" || t == "Gemm" {
            // Follow the one computed operand; the others must be constants.
            let computed: Vec<Port> = ins
                .iter()
                .flatten()
                .copied()
                .filter(|p| g.const_tensor(*p).is_none())
                .collect();
            match computed[..] {
                [p] if t != "MatMul" && t != "Gemm" || Some(p) == ins[0] => Some(p),
                _ => return Err(None),
            }
        } else {
            return Err(None);
        };
        let Some(next) = next else { return Err(None) };
        path.push(n);
        cur = next;
    }
    Err(None)
}

/// Computes layouts along the path and checks the selection reads the layer axis.
fn check_layouts(g: &Graph, path: &[NodeId], sel_axis: usize) -> Result<(), String> {
    let stack = path[0];
    let mut layout = Layout::Axis(is_stack(g, stack).ok_or("not a stack")?);
    let layers = g.node(stack).op().map_or(0, |o| o.num_inputs) as i64;
    for &n in &path[1..] {
        layout = transfer(g, n, layout, layers)?;
    }
    match layout {
        Layout::Axis(a) if a == sel_axis => Ok(()),
        other => Err(format!(
            "the selection reads axis {sel_axis}, but the layer dimension is at {other:?}"
        )),
    }
}

fn static_dims(g: &Graph, p: Option<Port>) -> Result<Vec<i64>, String> {
    p.and_then(|p| g.ty(p))
        .and_then(TensorType::static_shape)
        .ok_or_else(|| "a tensor in the heads has no static shape".to_string())
}

/// How `op` maps its axes, as the registry says.
fn axes(op: &str) -> Axes {
    ops::rule(op).map_or(Axes::Other, |r| r.axes)
}

/// Layout of node `n`'s output given the layout of its computed input.
fn transfer(g: &Graph, n: NodeId, l: Layout, layers: i64) -> Result<Layout, String> {
    let node = g.node(n);
    let op = node.op().ok_or("not an op")?;
    let t = op.op_type.as_str();
    let out = static_dims(g, Some(Port::new(n, 0)))?;
    let ins = g.inputs(n);
    let x = static_dims(g, ins[0])?;
    match t {
        _ if axes(t) == Axes::Elementwise => Ok(l),
        _ if axes(t) == Axes::Along => {
            // The layer axis must not be among the axes the op mixes.
            let axis_input =
                const_ints(g, ins.get(1).copied().flatten()).and_then(|v| v.first().copied());
            let (a, to_end) =
                ops::accessors::mixed_axes(t, &op.attrs, axis_input, g.opset()).ok_or("axis")?;
            let ax = attrs::axis(a, x.len()).ok_or("axis")?;
            let mixed = |k: usize| k == ax || to_end && k > ax;
            if matches!(l, Layout::Axis(a) if mixed(a))
                || matches!(l, Layout::Rows { .. } if mixed(0))
            {
                return Err(format!("{t} over the layer axis"));
            }
            Ok(l)
        }
        "Transpose" => match l {
            Layout::Axis(a) => {
                let perm = attrs::ints(&op.attrs, "perm")
                    .unwrap_or_else(|| (0..x.len() as i64).rev().collect());
                let pos = perm.iter().position(|&p| p as usize == a).ok_or("perm")?;
                Ok(Layout::Axis(pos))
            }
            Layout::Rows { .. } => Err("Transpose of flattened layers".into()),
        },
        "MatMul" | "Gemm" => {
            let r = out.len();
            if t == "Gemm" && attrs::int_or(&op.attrs, "transA", 0) != 0 {
                return Err("Gemm with transA".into());
            }
            match l {
                Layout::Axis(a) if t == "MatMul" && a + 2 < r => {
                    let w = static_dims(g, ins[1])?;
                    if w.len() > 2 {
                        return Err("batched MatMul weights".into());
                    }
                    Ok(l)
                }
                Layout::Rows { .. } if r == 2 => {
                    if t == "Gemm" {
                        if let Some(c) = ins.get(2).copied().flatten() {
                            let cd = static_dims(g, Some(c))?;
                            if cd.len() == 2 && cd[0] != 1 {
                                return Err("Gemm bias varies per row".into());
                            }
                        }
                    }
                    Ok(l)
                }
                _ => Err(format!("{t} across the layer dimension")),
            }
        }
        _ if axes(t) == Axes::Broadcast => {
            let r = out.len();
            for p in ins.iter().flatten() {
                if g.const_tensor(*p).is_none() {
                    if static_dims(g, Some(*p))? != out {
                        return Err(format!("{t} broadcasts its computed input"));
                    }
                    continue;
                }
                let c = static_dims(g, Some(*p))?;
                let lax = match l {
                    Layout::Axis(a) => a,
                    Layout::Rows { .. } => 0,
                };
                if c.len() + lax >= r {
                    let pos = c.len() + lax - r;
                    if c[pos] != 1 {
                        return Err(format!("{t} by a constant that differs per layer"));
                    }
                }
            }
            Ok(l)
        }
        "Reshape" => {
            let per_in: i64 = x.iter().product::<i64>() / layers;
            match l {
                Layout::Axis(0) | Layout::Rows { .. } => {
                    if let Layout::Rows { m } = l {
                        if x[0] != layers * m {
                            return Err("row count".into());
                        }
                    } else if x[0] != layers {
                        return Err("layer axis size".into());
                    }
                    if out.first() == Some(&layers) {
                        Ok(Layout::Axis(0))
                    } else if out.first().is_some_and(|&d| d % layers == 0)
                        && out.iter().product::<i64>() / layers == per_in
                    {
                        Ok(Layout::Rows { m: out[0] / layers })
                    } else {
                        Err("Reshape mixes layers".into())
                    }
                }
                _ => Err("Reshape with the layer axis inside".into()),
            }
        }
        _ => Err(format!("{t} is not layer-wise")),
    }
}

/// Layer k of a stack: the tensor that was unsqueezed into it (or a Squeeze of its slice).
fn per_layer_input(
    g: &mut Graph,
    stack: NodeId,
    k: i64,
    memo: &mut HashMap<(NodeId, i64), Port>,
) -> Result<Port, String> {
    if let Some(&p) = memo.get(&(stack, k)) {
        return Ok(p);
    }
    let a = is_stack(g, stack).ok_or("not a stack")?;
    let src = g.input(stack, k as usize).ok_or("missing stack input")?;
    let port = match unsqueeze_axes(g, src.node) {
        Some(ax)
            if ax.len() == 1
                && (ax[0] == a as i64
                    || attrs::axis(ax[0], g.ty(src).and_then(|t| t.rank()).unwrap_or(0))
                        == Some(a)) =>
        {
            g.input(src.node, 0).ok_or("Unsqueeze input")?
        }
        _ => {
            let id = squeeze(g, src, a);
            Port::new(id, 0)
        }
    };
    memo.insert((stack, k), port);
    Ok(port)
}

fn squeeze(g: &mut Graph, x: Port, axis: usize) -> NodeId {
    let mut dims = g
        .ty(x)
        .and_then(TensorType::static_shape)
        .unwrap_or_default();
    if axis < dims.len() {
        dims.remove(axis);
    }
    let dtype = g.ty(x).map(|t| t.dtype).unwrap_or(crate::ir::DType::F32);
    let id = g.add_squeeze(x, axis, "detrc_layer");
    g.node_mut(id).outputs[0].ty = Some(TensorType::new(dtype, &dims));
    id
}

/// Emits the per-layer copy of node `n` reading `x_k` (the layer-k value of its computed
/// input); returns its output and the stacked output's layout.
fn clone_per_layer(
    g: &mut Graph,
    n: NodeId,
    xk: Port,
    l: Layout,
    k: i64,
    layers: i64,
    memo: &mut HashMap<(NodeId, i64), Port>,
) -> Result<(Port, Layout), String> {
    let next = transfer(g, n, l, layers)?;
    if let Some(&p) = memo.get(&(n, k)) {
        return Ok((p, next));
    }
    let node = g.node(n).clone();
    let op = node.op().ok_or("not an op")?.clone();
    let ins = g.inputs(n);
    let out_dims = static_dims(g, Some(Port::new(n, 0)))?;
    let mut new_attrs: Vec<AttributeProto> = op.attrs.clone();
    let mut new_ins: Vec<Option<Port>> = ins.clone();
    let t = op.op_type.as_str();
    // The layer dimension of the output, removed (Axis) or shrunk to m rows (Rows).
    let per_layer_out: Vec<i64> = match next {
        Layout::Axis(a) => {
            let mut d = out_dims.clone();
            d.remove(a);
            d
        }
        Layout::Rows { m } => {
            let mut d = out_dims.clone();
            d[0] = m;
            d
        }
    };
    match t {
        "Transpose" => {
            let Layout::Axis(a) = l else {
                unreachable!("checked")
            };
            let perm = attrs::ints(&op.attrs, "perm")
                .unwrap_or_else(|| (0..out_dims.len() as i64).rev().collect());
            let p2: Vec<i64> = perm
                .iter()
                .filter(|&&p| p as usize != a)
                .map(|&p| if p as usize > a { p - 1 } else { p })
                .collect();
            new_attrs.retain(|x| x.name.as_deref() != Some("perm"));
            new_attrs.push(attrs::make_ints("perm", p2));
            new_ins[0] = Some(xk);
        }
        "Reshape" => {
            let shape = g.add_const(
                "detrc_layer_shape",
                Tensor::vec_i64(per_layer_out.clone()).to_proto(""),
            );
            new_ins[0] = Some(xk);
            new_ins[1] = Some(Port::new(shape, 0));
        }
        _ if axes(t) == Axes::Broadcast => {
            let r = out_dims.len();
            for (i, p) in ins.iter().enumerate() {
                let Some(p) = *p else { continue };
                if g.const_tensor(p).is_none() {
                    new_ins[i] = Some(xk);
                    continue;
                }
                let Layout::Axis(a) = l else { continue };
                let c = g.const_tensor(p).expect("const").clone();
                if c.dims.len() + a >= r {
                    // The constant has a size-1 entry at the layer axis: drop it.
                    let pos = c.dims.len() + a - r;
                    let mut c2 = c.clone();
                    c2.dims.remove(pos);
                    let id = g.add_const("detrc_layer_const", c2);
                    new_ins[i] = Some(Port::new(id, 0));
                }
            }
        }
        _ => {
            new_ins[0] = Some(xk);
        }
    }
    let id = g.add_op(
        t,
        &format!(
            "{}_last_layer",
            if op.name.is_empty() { t } else { &op.name }
        ),
        &new_ins,
        new_attrs,
        1,
    );
    if let Some(o) = g.node_mut(id).op_mut() {
        o.domain = op.domain.clone();
    }
    let dtype = node.outputs[0]
        .ty
        .as_ref()
        .map(|t| t.dtype)
        .unwrap_or(crate::ir::DType::F32);
    g.node_mut(id).outputs[0].ty = Some(TensorType::new(dtype, &per_layer_out));
    let port = Port::new(id, 0);
    memo.insert((n, k), port);
    Ok((port, next))
}
