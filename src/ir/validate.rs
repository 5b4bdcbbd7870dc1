//! Structural invariants of the IR, checked after loading and after every pass.

use std::collections::{HashMap, HashSet};

use petgraph::visit::{EdgeRef, IntoEdgeReferences};

use super::{Graph, NodeKind};

impl Graph {
    /// Checks that the graph is acyclic, every edge joins existing slots, no input slot is fed
    /// twice, tensor names are unique, every graph output is produced, and the ONNX ops that
    /// passes look into have their required inputs and their first output.
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
        let opset = self.opset();
        for n in self.g.node_indices() {
            let NodeKind::Op(op) = &self.g[n].kind else {
                continue;
            };
            if !super::is_onnx_domain(&op.domain) {
                continue;
            }
            let Some(min) = required_inputs(&op.op_type, opset) else {
                continue;
            };
            // Every op of the table has a required first output, which passes address as slot 0.
            if self.g[n].outputs.first().is_none_or(|v| v.name.is_empty()) {
                return Err(format!(
                    "{} has no output; {} requires one",
                    self.g[n].display_name(),
                    op.op_type
                ));
            }
            if let Some(missing) = (0..min).find(|i| !fed.contains(&(n.index(), *i))) {
                return Err(format!(
                    "{} lacks its input #{missing}: {} takes at least {min} at opset {opset}",
                    self.g[n].display_name(),
                    op.op_type
                ));
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

/// How many leading inputs an ONNX op must have wired, for the ops the passes and the evaluator
/// look into (they may then index those inputs, and output 0, freely). Other ops and custom
/// domains are not checked: detrc carries them through untouched.
fn required_inputs(op_type: &str, opset: i64) -> Option<usize> {
    Some(match op_type {
        "Constant" => 0,
        "Abs" | "Neg" | "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Reciprocal"
        | "Erf" | "Not" | "Floor" | "Ceil" | "Identity" | "Shape" | "Size" | "Softmax"
        | "Transpose" | "Flatten" | "Cast" | "Squeeze" | "ReduceMean" | "ReduceSum"
        | "ReduceMax" | "ReduceMin" | "GlobalAveragePool" | "MaxPool" | "AveragePool"
        | "ConstantOfShape" | "NonZero" | "Dropout" | "Split" | "Clip" | "Concat" | "Max"
        | "Min" | "Sum" | "Mean" | "Resize" | "CumSum" | "ArgMax" | "ArgMin" | "Sin" | "Cos"
        | "Round" | "LogSoftmax" | "ReduceProd" | "Upsample" => 1,
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "MatMul" | "Equal" | "Less" | "LessOrEqual"
        | "Greater" | "GreaterOrEqual" | "And" | "Or" | "Xor" | "Mod" | "Expand" | "Gather"
        | "GatherElements" | "GatherND" | "Tile" | "Conv" | "Gemm" | "LayerNormalization"
        | "PRelu" => 2,
        "Where" | "Range" => 3,
        "BatchNormalization" => 5,
        // These moved attributes to inputs over the opsets.
        "Reshape" if opset >= 5 => 2,
        "Unsqueeze" if opset >= 13 => 2,
        "Slice" if opset >= 10 => 3,
        "Pad" if opset >= 11 => 2,
        "TopK" if opset >= 10 => 2,
        "Reshape" | "Unsqueeze" | "Slice" | "Pad" | "TopK" => 1,
        _ => return None,
    })
}
