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
    // Candidates are grouped by type, shape and a sample of their bytes first, so the bytes of
    // large, unique weights are never hashed; equal groups are then compared in full.
    type Key = (i32, Vec<i64>, usize, Vec<u8>);
    let mut groups: HashMap<Key, Vec<NodeId>> = HashMap::new();
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
    for &n in &ids {
        let t = g.node(n).tensor().expect("const");
        let Some(raw) = &t.raw_data else { continue };
        let sample = raw[..raw.len().min(64)].to_vec();
        groups
            .entry((t.data_type.unwrap_or(0), t.dims.clone(), raw.len(), sample))
            .or_default()
            .push(n);
    }
    let mut merged = 0;
    let mut keys: Vec<&Key> = groups.keys().collect();
    keys.sort();
    let ordered: Vec<Vec<NodeId>> = keys.into_iter().map(|k| groups[k].clone()).collect();
    for members in ordered.into_iter().filter(|m| m.len() > 1) {
        let mut kept: Vec<NodeId> = Vec::new();
        for n in members {
            let raw = g
                .node(n)
                .tensor()
                .and_then(|t| t.raw_data.clone())
                .expect("raw");
            let twin = kept
                .iter()
                .copied()
                .find(|&k| g.node(k).tensor().and_then(|t| t.raw_data.as_ref()) == Some(&raw));
            match twin {
                Some(first) if !g.is_graph_output(Port::new(n, 0)) => {
                    g.replace_all_uses(Port::new(n, 0), Port::new(first, 0));
                    g.remove_node(n);
                    merged += 1;
                }
                _ => kept.push(n),
            }
        }
    }
    merged
}
