//! Batch facts: which graph inputs carry the batch, its static size, whether it is already
//! symbolic. Read by the batch route of the driver and by `generalize-batch`.

use crate::ir::{Graph, NodeId, TensorType};

/// Name of the symbolic batch dimension written into inputs and outputs.
pub const BATCH_PARAM: &str = "batch";

/// The graph inputs the batch is read from: every non-initializer input of rank >= 1.
pub fn batch_inputs(g: &Graph) -> Vec<NodeId> {
    g.graph_inputs()
        .into_iter()
        .filter(|&n| {
            g.node(n).outputs[0]
                .ty
                .as_ref()
                .and_then(TensorType::rank)
                .is_some_and(|r| r >= 1)
        })
        .collect()
}

/// Every batch input has a named symbolic batch (what `generalize-batch` leaves).
pub fn already_symbolic(g: &Graph) -> bool {
    let inputs = batch_inputs(g);
    !inputs.is_empty()
        && inputs.iter().all(|&n| {
            g.node(n).outputs[0]
                .ty
                .as_ref()
                .and_then(|t| t.shape.as_ref()?.first().cloned())
                .is_some_and(|d| matches!(d, crate::ir::Dim::Param(_)))
        })
}

/// The static batch of the graph inputs (their common axis-0 size).
pub fn static_batch(g: &Graph) -> Result<i64, String> {
    let mut b = None;
    for n in batch_inputs(g) {
        let v = &g.node(n).outputs[0];
        let d =
            v.ty.as_ref()
                .and_then(|t| t.shape.as_ref()?.first()?.fixed());
        let Some(d) = d else {
            return Err(format!(
                "input '{}' has no static batch; give --input-shape or --batch",
                v.name
            ));
        };
        if *b.get_or_insert(d) != d {
            return Err(format!(
                "inputs disagree on the batch size: '{}' has {d}, another input {}",
                v.name,
                b.unwrap_or(0)
            ));
        }
    }
    b.ok_or_else(|| "the model has no input with a batch dimension".to_string())
}
