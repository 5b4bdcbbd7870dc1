//! `fold-constants`: evaluates operators whose inputs are all known at compile time and
//! replaces them with initializers. `Shape`/`Size` of a tensor with a static type count as
//! known, which is what makes DETR's mask and position-embedding subgraphs constant.
//!
//! A size budget keeps folding from inflating the model: a result may only be larger than the
//! constants it consumes by `Context::fold_budget_bytes`. Operators the registry marks as
//! resampling (Resize) are the exception: their result replaces interpolation the engine
//! would run on every inference (YOLOS resizes its position embeddings of every layer to the
//! input grid), so it is stored up to [`MAX_RESAMPLED_BYTES`].

use crate::ir::{Graph, NodeId, NodeKind, Port, TensorType, Value};
use crate::ops::{self, EvalError};
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::Tensor;

pub struct FoldConstants;

/// Constant inputs larger than this are not evaluated (evaluation copies them).
const MAX_INPUT_BYTES: usize = 256 << 20;

/// The largest result of a resampling operator folded beyond the budget: as large as the
/// constants the evaluator reads (YOLOS-small's 11 layers of position embeddings resized to a
/// 1024x1024 input are 69 MB).
pub const MAX_RESAMPLED_BYTES: usize = MAX_INPUT_BYTES;

/// An operator whose output is a pure function of its inputs and that the evaluator handles.
pub fn is_foldable(op: &str) -> bool {
    ops::rule(op).is_some_and(ops::OpRule::evaluates)
}

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }
    fn about(&self) -> &'static str {
        "evaluate constant subgraphs (Shape of static tensors included), within a size budget"
    }
    fn run(&self, g: &mut Graph, cx: &Context) -> Result<Outcome, String> {
        let r = fold(g, cx.fold_budget_bytes, &|_| true);
        let mut lines = Vec::new();
        if r.folded > 0 {
            lines.push(format!(
                "folded {} nodes into {} constants",
                r.folded, r.created
            ));
        }
        if r.over_budget > 0 {
            lines.push(format!(
                "left {} foldable nodes: results over the size budget",
                r.over_budget
            ));
        }
        Ok(if r.folded > 0 {
            Outcome::Changed(lines)
        } else {
            Outcome::Unchanged
        })
    }
}

#[derive(Default, Debug)]
pub struct FoldResult {
    pub folded: usize,
    pub created: usize,
    pub over_budget: usize,
    /// Nodes the evaluator refused, with why (they stay in the graph).
    pub refused: Vec<(String, String)>,
}

/// Folds every foldable node that `select` accepts. Exposed for `fold-mask`, which folds the
/// mask subgraph with an unlimited budget.
pub fn fold(g: &mut Graph, budget: usize, select: &dyn Fn(&Graph) -> bool) -> FoldResult {
    fold_where(g, budget, &|g, _| select(g))
}

pub fn fold_where(
    g: &mut Graph,
    budget: usize,
    select: &dyn Fn(&Graph, NodeId) -> bool,
) -> FoldResult {
    let mut res = FoldResult::default();
    let opset = g.opset();
    for n in g.topo_ops() {
        if !g.contains(n) {
            continue;
        }
        // Typing each node just before looking at it lets one sweep fold a whole chain of
        // Shape -> Gather -> Concat -> Reshape -> Shape ... in topological order.
        crate::analysis::typing::infer_node(g, n);
        let Some(op) = g.node(n).op() else { continue };
        if !crate::ir::is_onnx_domain(&op.domain) || !is_foldable(&op.op_type) {
            continue;
        }
        if !select(g, n) {
            continue;
        }
        let op_type = op.op_type.clone();
        let mut attrs = op.attrs.clone();
        // A Split without sizes makes one equal part per output; the evaluator only sees the
        // attributes, so it is told the count.
        if op_type == "Split" && crate::tensor::attrs::find(&attrs, "num_outputs").is_none() {
            let n = g.node(n).outputs.len() as i64;
            attrs.push(crate::tensor::attrs::make_int("num_outputs", n));
        }
        let ins = g.inputs(n);
        let outputs: Vec<Tensor> = if op_type == "Shape" || op_type == "Size" {
            // Only the input's type matters, not its value.
            let Some(shape) = ins
                .first()
                .copied()
                .flatten()
                .and_then(|p| g.ty(p))
                .and_then(TensorType::static_shape)
            else {
                continue;
            };
            // Computed from the type alone: no tensor of the input's size is materialized.
            let r = shape.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            if op_type == "Size" {
                vec![Tensor::scalar_i64(shape.iter().product())]
            } else {
                let s = clamp(crate::tensor::attrs::int_or(&attrs, "start", 0));
                let e = clamp(crate::tensor::attrs::int_or(&attrs, "end", r));
                vec![Tensor::vec_i64(shape[s..e.max(s)].to_vec())]
            }
        } else {
            if ins.iter().flatten().any(|p| g.const_tensor(*p).is_none()) {
                continue;
            }
            // Decoding copies: a multi-gigabyte embedding table is not worth evaluating here.
            let stored: usize = ins
                .iter()
                .flatten()
                .filter_map(|p| g.const_tensor(*p))
                .map(|t| t.raw_data.as_ref().map_or(0, |r| r.len()))
                .sum();
            if stored > MAX_INPUT_BYTES {
                res.over_budget += 1;
                continue;
            }
            let mut vals = Vec::with_capacity(ins.len());
            let mut in_bytes = 0usize;
            let mut ok = true;
            for p in &ins {
                match p {
                    None => vals.push(None),
                    Some(p) => match Tensor::from_proto(g.const_tensor(*p).expect("checked")) {
                        Ok(t) => {
                            in_bytes += t.byte_size();
                            vals.push(Some(t));
                        }
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    },
                }
            }
            if !ok {
                continue;
            }
            match ops::eval_op(&op_type, &attrs, &vals, opset) {
                Ok(o) => {
                    let out_bytes: usize = o.iter().map(Tensor::byte_size).sum();
                    let over = if ops::rule(&op_type).is_some_and(|r| r.resamples) {
                        out_bytes > MAX_RESAMPLED_BYTES.max(in_bytes.saturating_add(budget))
                    } else {
                        out_bytes > in_bytes.saturating_add(budget)
                    };
                    if over {
                        res.over_budget += 1;
                        continue;
                    }
                    o
                }
                Err(EvalError::Unsupported(why)) | Err(EvalError::Invalid(why)) => {
                    res.refused.push((g.node(n).display_name(), why));
                    continue;
                }
            }
        };
        let node_outs = g.node(n).outputs.clone();
        if outputs.len() < node_outs.iter().filter(|v| !v.name.is_empty()).count() {
            continue;
        }
        // An empty tensor may still carry absurd dimensions (a Constant of [2^40, 2^20, 0]);
        // as an initializer its shape would break the bound every recorded shape keeps.
        let absurd = outputs.iter().any(|t| {
            let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
            TensorType::new(t.dtype(), &dims).check_dims().is_err()
        });
        if absurd {
            res.refused
                .push((g.node(n).display_name(), "result shape is too large".into()));
            continue;
        }
        // Keep declared types honest: a result whose type contradicts the recorded one means
        // the evaluator and the model disagree, and the node is left alone.
        let contradicts = node_outs.iter().zip(&outputs).any(|(v, t)| {
            v.ty.as_ref().is_some_and(|ty| {
                ty.dtype != t.dtype()
                    || ty.static_shape().is_some_and(|s| {
                        s.iter().map(|&d| d as usize).collect::<Vec<_>>() != t.shape()
                    })
            })
        });
        if contradicts {
            res.refused.push((
                g.node(n).display_name(),
                "result type differs from the recorded one".into(),
            ));
            continue;
        }
        // New constants first, uses moved, then the node goes: the constants take over the
        // folded tensors' names, so the graph reads the same.
        for (slot, (v, t)) in node_outs.iter().zip(outputs).enumerate() {
            if v.name.is_empty() {
                continue;
            }
            let c = add_const_named(g, v, t.to_proto(&v.name));
            g.replace_all_uses(Port::new(n, slot), Port::new(c, 0));
            res.created += 1;
        }
        g.remove_node(n);
        res.folded += 1;
    }
    res
}

/// Adds an initializer that takes over the name of a value whose producer was just removed.
fn add_const_named(g: &mut Graph, v: &Value, proto: crate::load::proto::TensorProto) -> NodeId {
    let ty = TensorType::new(crate::ir::DType(proto.data_type.unwrap_or(0)), &proto.dims);
    g.add_node(
        NodeKind::Const {
            tensor: proto,
            also_input: None,
        },
        vec![Value {
            name: v.name.clone(),
            ty: Some(ty),
            info: v.info.clone(),
        }],
    )
}
