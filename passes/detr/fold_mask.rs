//! `fold-mask`: DETR's key-padding mask. The export builds it from the input's shape (Pad of
//! zeros, Cast to bool, Resize nearest) and feeds it to the sine position embedding
//! (Not, CumSum, Sin, Cos) and to `Where(mask, -inf, 0)` chains added to attention scores.
//! With a static input size all of that is constant: the mask is all false.
//!
//! This pass folds everything downstream of boolean tensors and `Where` with no size budget
//! (the position embedding of a large input is bigger than the generic budget), then removes
//! the additions of the all-zero mask. Boolean ops left behind block INT8 calibration in
//! TensorRT, so they are reported.

use std::collections::HashSet;

use petgraph::Direction;

use crate::ir::{DType, Graph, NodeId, NodeKind, Port};
use crate::pass::{Context, Outcome, Pass};
use crate::passes::cleanup::eliminate_noops::noop_source;
use crate::passes::fold::fold_constants::fold_where;

pub struct FoldMask;

fn is_bool_op(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    node.is("Where")
        || node.is("CumSum")
        || node
            .outputs
            .iter()
            .any(|v| v.ty.as_ref().is_some_and(|t| t.dtype == DType::BOOL))
}

fn count_mask_ops(g: &Graph) -> (usize, usize, usize) {
    let mut w = 0;
    let mut c = 0;
    let mut b = 0;
    for n in g.topo_ops() {
        let node = g.node(n);
        if node.is("Where") {
            w += 1;
        } else if node.is("CumSum") {
            c += 1;
        } else if is_bool_op(g, n) {
            b += 1;
        }
    }
    (w, c, b)
}

impl Pass for FoldMask {
    fn name(&self) -> &'static str {
        "fold-mask"
    }
    fn about(&self) -> &'static str {
        "fold the constant padding mask, position embedding and Where(mask,-inf,0) chains"
    }
    fn detr_specific(&self) -> bool {
        true
    }
    fn run(&self, g: &mut Graph, cx: &Context) -> Result<Outcome, String> {
        let (w0, c0, b0) = count_mask_ops(g);
        if w0 + c0 + b0 == 0 {
            return Ok(Outcome::NotApplicable(
                "no Where, CumSum or boolean tensor (mask already folded, or not a DETR export)"
                    .into(),
            ));
        }
        let dynamic = g.graph_inputs().iter().any(|&n| {
            g.node(n).outputs[0]
                .ty
                .as_ref()
                .is_none_or(|t| t.static_shape().is_none())
        });
        if dynamic {
            return Ok(Outcome::NotApplicable(
                "the input shape is dynamic, so the mask is not a constant".into(),
            ));
        }
        // Everything downstream of a boolean tensor, plus everything feeding one: the mask,
        // its position embedding and the Where chains.
        let seeds: Vec<NodeId> = g
            .topo_ops()
            .into_iter()
            .filter(|&n| is_bool_op(g, n))
            .collect();
        let mut cone: HashSet<NodeId> = HashSet::new();
        let mut stack = seeds.clone();
        while let Some(n) = stack.pop() {
            if cone.insert(n) {
                stack.extend(g.g.neighbors_directed(n, Direction::Outgoing));
            }
        }
        let mut stack = seeds;
        let mut seen = HashSet::new();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                cone.insert(n);
                stack.extend(g.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        let r = fold_where(g, usize::MAX, &|g, n| {
            cone.contains(&n) && matches!(g.node(n).kind, NodeKind::Op(_))
        });
        // Shapes of the attention scores come from ordinary shape arithmetic; fold that too
        // (within the normal budget) so the zero additions below can be proven no-ops.
        let rest = crate::passes::fold::fold_constants::fold(g, cx.fold_budget_bytes, &|_| true);
        // The folded mask adds zeros to attention scores: drop those Adds.
        let mut zero_adds = 0;
        for n in g.topo_ops() {
            if ["Add", "Sub", "Mul"].iter().any(|op| g.node(n).is(op)) {
                if let Some(src) = noop_source(g, n) {
                    g.replace_all_uses(Port::new(n, 0), src);
                    g.remove_node(n);
                    zero_adds += 1;
                }
            }
        }
        g.remove_dead();
        let (w1, c1, b1) = count_mask_ops(g);
        let mut lines = Vec::new();
        if rest.folded > 0 {
            lines.push(format!(
                "folded {} shape computations around it",
                rest.folded
            ));
        }
        if r.folded + zero_adds > 0 {
            lines.insert(0, format!(
                "folded {} mask nodes: Where {w0}->{w1}, CumSum {c0}->{c1}, other boolean ops {b0}->{b1}; removed {zero_adds} additions of a zero mask",
                r.folded
            ));
        }
        if w1 + c1 + b1 > 0 {
            let why = r
                .refused
                .first()
                .map(|(n, w)| format!(" (first refusal: {n}: {w})"))
                .unwrap_or_default();
            lines.push(format!(
                "{} mask-related ops remain; they depend on non-constant values{why}",
                w1 + c1 + b1
            ));
        }
        Ok(if r.folded + zero_adds > 0 {
            Outcome::Changed(lines)
        } else if lines.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::NotApplicable(lines.join("; "))
        })
    }
}
