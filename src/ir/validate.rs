//! Structural invariants of the IR, checked after loading and after every pass.

use std::collections::{HashMap, HashSet};

use petgraph::visit::{EdgeRef, IntoEdgeReferences};

use super::{Graph, NodeKind};

impl Graph {
    /// Checks that the graph is acyclic, every edge joins existing slots, no input slot is fed
    /// twice, tensor names are unique, and every graph output is produced.
    pub fn validate(&self) -> Result<(), String> {
        if let Err(n) = self.topo_order() {
            return Err(format!(
                "the graph has a cycle through {}",
                self.node(n).display_name()
            ));
        }
        let mut fed: HashSet<(usize, usize)> = HashSet::new();
        for e in (&self.g).edge_references() {
            let (s, t, w) = (e.source(), e.target(), e.weight());
            let src = &self.g[s];
            let dst = &self.g[t];
            if w.src_slot >= src.outputs.len() {
                return Err(format!(
                    "{} reads output #{} of {}, which has only {}",
                    dst.display_name(),
                    w.src_slot,
                    src.display_name(),
                    src.outputs.len()
                ));
            }
            let NodeKind::Op(op) = &dst.kind else {
                return Err(format!("{} has an incoming edge", dst.display_name()));
            };
            if w.dst_slot >= op.num_inputs {
                return Err(format!(
                    "{} has an edge into input #{} but only {} inputs",
                    dst.display_name(),
                    w.dst_slot,
                    op.num_inputs
                ));
            }
            if !fed.insert((t.index(), w.dst_slot)) {
                return Err(format!(
                    "input #{} of {} is fed twice",
                    w.dst_slot,
                    dst.display_name()
                ));
            }
            if src.outputs[w.src_slot].name.is_empty() {
                return Err(format!(
                    "{} reads an unnamed output of {}",
                    dst.display_name(),
                    src.display_name()
                ));
            }
        }
        let mut names: HashMap<&str, String> = HashMap::new();
        for n in self.g.node_indices() {
            let node = &self.g[n];
            if matches!(node.kind, NodeKind::Input(_) | NodeKind::Const { .. })
                && node.outputs.len() != 1
            {
                return Err(format!("{} must have one value", node.display_name()));
            }
            for v in &node.outputs {
                if v.name.is_empty() {
                    continue;
                }
                if let Some(prev) = names.insert(&v.name, node.display_name()) {
                    return Err(format!(
                        "tensor name '{}' is produced by both {} and {}",
                        v.name,
                        prev,
                        node.display_name()
                    ));
                }
            }
        }
        let mut out_names = HashSet::new();
        for o in &self.outputs {
            if !self.g.contains_node(o.src.node) || o.src.slot >= self.g[o.src.node].outputs.len() {
                return Err(format!("graph output '{}' has no producer", o.name));
            }
            if !out_names.insert(&o.name) {
                return Err(format!("graph output '{}' is listed twice", o.name));
            }
        }
        Ok(())
    }
}
