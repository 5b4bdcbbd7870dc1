//! `cse`: common subexpression elimination. Two operators of the same type, attributes and
//! inputs compute the same tensors; so do two initializers with the same bytes.

use std::collections::HashMap;

use prost::Message;

use crate::ir::{Graph, NodeId, NodeKind, Port};
use crate::pass::{Context, Outcome, Pass};

pub struct Cse;

/// What makes two operators interchangeable: type, domain, attributes, inputs, output count.
type OpKey = (String, String, Vec<u8>, Vec<Option<Port>>, usize);

/// Operators with hidden state or randomness are never merged.
const IMPURE: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
];

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }
    fn about(&self) -> &'static str {
        "merge identical operators and identical initializers"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let consts = merge_consts(g);
        let mut ops = 0;
        let mut seen: HashMap<OpKey, NodeId> = HashMap::new();
        for n in g.topo_ops() {
            let node = g.node(n);
            let Some(op) = node.op() else { continue };
            if IMPURE.contains(&op.op_type.as_str()) || node.outputs.is_empty() {
                continue;
            }
            let mut attr_bytes = Vec::new();
            for a in &op.attrs {
                a.encode(&mut attr_bytes).expect("Vec grows");
            }
            let key = (
                op.op_type.clone(),
                op.domain.clone(),
                attr_bytes,
                g.inputs(n),
                node.outputs.len(),
            );
            match seen.get(&key) {
                Some(&first) => {
                    for slot in 0..g.node(n).outputs.len() {
                        g.replace_all_uses(Port::new(n, slot), Port::new(first, slot));
                    }
                    g.remove_node(n);
                    ops += 1;
                }
                None => {
                    seen.insert(key, n);
                }
            }
        }
        let mut lines = Vec::new();
        if ops > 0 {
            lines.push(format!("merged {ops} duplicate nodes"));
        }
        if consts > 0 {
            lines.push(format!("merged {consts} duplicate initializers"));
        }
        Ok(Outcome::changed(lines))
    }
}

fn merge_consts(g: &mut Graph) -> usize {
    use crate::eval::Tensor;
    let mut seen: HashMap<(i32, Vec<i64>, Vec<u8>), NodeId> = HashMap::new();
    let mut ids: Vec<NodeId> =
        g.g.node_indices()
            .filter(|&n| {
                matches!(
                    g.node(n).kind,
                    NodeKind::Const {
                        also_input: None,
                        ..
                    }
                )
            })
            .collect();
    ids.sort_by_key(|&n| g.node(n).seq);
    let mut merged = 0;
    for n in ids {
        let t = g.node(n).tensor().expect("const");
        // Weights are compared through their canonical raw bytes; only small tensors, since a
        // large duplicate weight is rare and hashing it is not free.
        if t.dims.iter().product::<i64>() > 1 << 16 {
            continue;
        }
        let Ok(v) = Tensor::from_proto(t) else {
            continue;
        };
        let raw = v.to_proto("").raw_data.unwrap_or_default().to_vec();
        let key = (t.data_type.unwrap_or(0), t.dims.clone(), raw);
        match seen.get(&key) {
            Some(&first) => {
                if g.is_graph_output(Port::new(n, 0)) {
                    continue;
                }
                g.replace_all_uses(Port::new(n, 0), Port::new(first, 0));
                g.remove_node(n);
                merged += 1;
            }
            None => {
                seen.insert(key, n);
            }
        }
    }
    merged
}
