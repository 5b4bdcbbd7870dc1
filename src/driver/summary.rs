//! What `detrc inspect` shows of a model: opset, inputs and outputs with their types, and the
//! operator histogram.

use crate::ir::Graph;

/// What `detrc inspect` shows of a model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub opset: i64,
    pub nodes: usize,
    pub inputs: Vec<IoSummary>,
    pub outputs: Vec<IoSummary>,
    /// Operator histogram: op type -> count.
    pub ops: std::collections::BTreeMap<String, usize>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct IoSummary {
    pub name: String,
    /// e.g. `f32[1,3,800,800]`; `?` when the model does not say.
    #[serde(rename = "type")]
    pub ty: String,
}

pub fn summary(g: &Graph) -> Summary {
    let inputs = g
        .graph_inputs()
        .into_iter()
        .map(|n| {
            let v = &g.node(n).outputs[0];
            IoSummary {
                name: v.name.clone(),
                ty: v.ty.as_ref().map_or("?".into(), |t| t.to_string()),
            }
        })
        .collect();
    let outputs = g
        .outputs
        .iter()
        .map(|o| IoSummary {
            name: o.name.clone(),
            ty: o
                .info
                .r#type
                .as_ref()
                .and_then(crate::ir::TensorType::from_proto)
                .map_or("?".into(), |t| t.to_string()),
        })
        .collect();
    Summary {
        opset: g.opset(),
        nodes: g.num_ops(),
        inputs,
        outputs,
        ops: g.op_histogram(),
    }
}
