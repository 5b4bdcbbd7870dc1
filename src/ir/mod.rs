//! The intermediate representation: a petgraph `StableGraph` whose nodes are graph inputs,
//! constants (initializers) and operators, and whose edges carry tensors from an output slot of
//! one node to an input slot of another.
//!
//! Node indices are only valid until the next structural change made by somebody else: a
//! `StableGraph` reuses the slots of removed nodes. Passes therefore find what they rewrite by
//! pattern each time and never keep indices across passes.

pub mod dump;
pub mod from_onnx;
pub mod opset;
pub mod to_onnx;
pub mod types;
pub mod validate;

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

pub use crate::tensor::DType;
pub use types::{Dim, TensorType};

use crate::load::proto::{AttributeProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};

pub type NodeId = NodeIndex;

/// One tensor produced by a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub name: String,
    pub ty: Option<TensorType>,
    /// The `value_info` entry this value had when loaded; written back as-is unless the type
    /// changes, so a model without passes keeps its exact annotations.
    pub info: Option<ValueInfoProto>,
}

impl Value {
    pub fn named(name: impl Into<String>) -> Self {
        Value {
            name: name.into(),
            ty: None,
            info: None,
        }
    }
    pub fn typed(name: impl Into<String>, ty: TensorType) -> Self {
        Value {
            name: name.into(),
            ty: Some(ty),
            info: None,
        }
    }
}

/// An operator application.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub op_type: String,
    pub domain: String,
    pub name: String,
    pub attrs: Vec<AttributeProto>,
    /// Input slots, including empty optional ones (which have no edge).
    pub num_inputs: usize,
    /// The rest of the original `NodeProto` (doc string, metadata, overload…), kept so a
    /// model round-trips without loss; inputs/outputs/attributes live in the IR proper.
    pub extra: NodeProto,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A graph input; its value is `outputs[0]`.
    Input(ValueInfoProto),
    /// An initializer; its value is `outputs[0]`. `also_input` keeps old-style models that list
    /// initializers among the graph inputs.
    Const {
        tensor: TensorProto,
        also_input: Option<ValueInfoProto>,
    },
    Op(Op),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub outputs: Vec<Value>,
    /// Orders nodes deterministically: original position for loaded nodes, increasing for new
    /// ones. Topological order breaks ties by it.
    pub seq: u64,
}

impl Node {
    pub fn op(&self) -> Option<&Op> {
        match &self.kind {
            NodeKind::Op(op) => Some(op),
            _ => None,
        }
    }
    pub fn op_mut(&mut self) -> Option<&mut Op> {
        match &mut self.kind {
            NodeKind::Op(op) => Some(op),
            _ => None,
        }
    }
    pub fn op_type(&self) -> &str {
        match &self.kind {
            NodeKind::Op(op) => &op.op_type,
            NodeKind::Input(_) => "<input>",
            NodeKind::Const { .. } => "<const>",
        }
    }
    /// True for a standard-domain operator of this type.
    pub fn is(&self, op_type: &str) -> bool {
        matches!(&self.kind, NodeKind::Op(op) if op.op_type == op_type && is_onnx_domain(&op.domain))
    }
    pub fn tensor(&self) -> Option<&TensorProto> {
        match &self.kind {
            NodeKind::Const { tensor, .. } => Some(tensor),
            _ => None,
        }
    }
    pub fn display_name(&self) -> String {
        match &self.kind {
            NodeKind::Op(op) if !op.name.is_empty() => format!("{} '{}'", op.op_type, op.name),
            NodeKind::Op(op) => format!(
                "{} producing '{}'",
                op.op_type,
                self.outputs.first().map_or("", |v| v.name.as_str())
            ),
            NodeKind::Input(_) => format!("input '{}'", self.outputs[0].name),
            NodeKind::Const { .. } => format!("initializer '{}'", self.outputs[0].name),
        }
    }
}

pub fn is_onnx_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

/// A tensor flowing from `src_slot` of the source node to `dst_slot` of the target node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub src_slot: usize,
    pub dst_slot: usize,
}

/// A reference to one produced tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    pub node: NodeId,
    pub slot: usize,
}

impl Port {
    pub fn new(node: NodeId, slot: usize) -> Self {
        Port { node, slot }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GraphOutput {
    pub name: String,
    pub src: Port,
    pub info: ValueInfoProto,
}

/// Everything of the model that the IR does not model itself, carried through untouched.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Carry {
    /// The model with its graph's nodes, initializers, inputs, outputs and value_info removed.
    pub model: ModelProto,
    /// value_info entries whose tensor does not exist in the graph (kept, in order).
    pub orphan_value_info: Vec<ValueInfoProto>,
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub g: StableGraph<Node, Edge>,
    pub outputs: Vec<GraphOutput>,
    pub carry: Carry,
    /// Order of graph inputs as declared.
    pub input_order: Vec<String>,
    next_seq: u64,
    names: HashSet<String>,
    fresh: u64,
}

impl Graph {
    pub fn new(carry: Carry) -> Self {
        Graph {
            g: StableGraph::new(),
            outputs: Vec::new(),
            carry,
            input_order: Vec::new(),
            next_seq: 0,
            names: HashSet::new(),
            fresh: 0,
        }
    }

    /// The default-domain opset version the model imports.
    pub fn opset(&self) -> i64 {
        self.carry
            .model
            .opset_import
            .iter()
            .find(|o| is_onnx_domain(o.domain.as_deref().unwrap_or("")))
            .and_then(|o| o.version)
            .unwrap_or(1)
    }

    // ---------- construction ----------

    pub fn add_node(&mut self, kind: NodeKind, outputs: Vec<Value>) -> NodeId {
        for v in &outputs {
            if !v.name.is_empty() {
                self.names.insert(v.name.clone());
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.g.add_node(Node { kind, outputs, seq })
    }

    /// Adds an operator fed by `inputs` (None = empty optional input) with fresh output names.
    pub fn add_op(
        &mut self,
        op_type: &str,
        name_hint: &str,
        inputs: &[Option<Port>],
        attrs: Vec<AttributeProto>,
        num_outputs: usize,
    ) -> NodeId {
        let outputs = (0..num_outputs)
            .map(|i| Value::named(self.fresh_name(&format!("{name_hint}_out{i}"))))
            .collect();
        let name = self.fresh_name(name_hint);
        let id = self.add_node(
            NodeKind::Op(Op {
                op_type: op_type.to_string(),
                domain: String::new(),
                name,
                attrs,
                num_inputs: inputs.len(),
                extra: NodeProto::default(),
            }),
            outputs,
        );
        for (i, p) in inputs.iter().enumerate() {
            if let Some(p) = p {
                self.connect(*p, id, i);
            }
        }
        id
    }

    /// Adds an initializer holding `tensor` (its name is made unique).
    pub fn add_const(&mut self, name_hint: &str, mut tensor: TensorProto) -> NodeId {
        let name = self.fresh_name(name_hint);
        tensor.name = Some(name.clone());
        let ty = TensorType::new(DType(tensor.data_type.unwrap_or(0)), &tensor.dims);
        self.add_node(
            NodeKind::Const {
                tensor,
                also_input: None,
            },
            vec![Value::typed(name, ty)],
        )
    }

    /// Adds a Squeeze of one axis of `x` in the form the model's opset reads: axes as an input
    /// from opset 13, as an attribute before. `prefix` names the node and its axes constant.
    pub fn add_squeeze(&mut self, x: Port, axis: usize, prefix: &str) -> NodeId {
        let axes = vec![axis as i64];
        let name = format!("{prefix}_squeeze");
        if self.opset() >= 13 {
            let axes = crate::tensor::Tensor::vec_i64(axes).to_proto("");
            let c = self.add_const(&format!("{prefix}_axis"), axes);
            self.add_op(
                "Squeeze",
                &name,
                &[Some(x), Some(Port::new(c, 0))],
                vec![],
                1,
            )
        } else {
            let attr = crate::tensor::attrs::make_ints("axes", axes);
            self.add_op("Squeeze", &name, &[Some(x)], vec![attr], 1)
        }
    }

    /// A tensor name not used anywhere in the graph.
    pub fn fresh_name(&mut self, hint: &str) -> String {
        let hint = if hint.is_empty() { "detrc" } else { hint };
        if !self.names.contains(hint) {
            self.names.insert(hint.to_string());
            return hint.to_string();
        }
        loop {
            self.fresh += 1;
            let n = format!("{hint}__{}", self.fresh);
            if !self.names.contains(&n) {
                self.names.insert(n.clone());
                return n;
            }
        }
    }

    pub fn connect(&mut self, src: Port, dst: NodeId, dst_slot: usize) -> EdgeIndex {
        self.g.add_edge(
            src.node,
            dst,
            Edge {
                src_slot: src.slot,
                dst_slot,
            },
        )
    }

    /// Points input `slot` of `node` at `src` (or disconnects it for `None`).
    pub fn set_input(&mut self, node: NodeId, slot: usize, src: Option<Port>) {
        let old: Vec<EdgeIndex> = self
            .g
            .edges_directed(node, Direction::Incoming)
            .filter(|e| e.weight().dst_slot == slot)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        if let Some(src) = src {
            self.connect(src, node, slot);
        }
    }

    pub fn remove_node(&mut self, id: NodeId) -> Option<Node> {
        self.g.remove_node(id)
    }

    // ---------- queries ----------

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id]
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }

    pub fn value(&self, p: Port) -> &Value {
        &self.g[p.node].outputs[p.slot]
    }

    pub fn value_mut(&mut self, p: Port) -> &mut Value {
        &mut self.g[p.node].outputs[p.slot]
    }

    pub fn ty(&self, p: Port) -> Option<&TensorType> {
        self.value(p).ty.as_ref()
    }

    /// Producer of input `slot` of `node`.
    pub fn input(&self, node: NodeId, slot: usize) -> Option<Port> {
        self.g
            .edges_directed(node, Direction::Incoming)
            .find(|e| e.weight().dst_slot == slot)
            .map(|e| Port::new(e.source(), e.weight().src_slot))
    }

    /// Producers of all input slots, in slot order.
    pub fn inputs(&self, node: NodeId) -> Vec<Option<Port>> {
        let n = match &self.g[node].kind {
            NodeKind::Op(op) => op.num_inputs,
            _ => 0,
        };
        let mut v = vec![None; n];
        for e in self.g.edges_directed(node, Direction::Incoming) {
            let w = e.weight();
            if w.dst_slot < n {
                v[w.dst_slot] = Some(Port::new(e.source(), w.src_slot));
            }
        }
        v
    }

    /// Operators reading `p`, as (consumer, input slot), in deterministic order.
    pub fn consumers(&self, p: Port) -> Vec<(NodeId, usize)> {
        let mut v: Vec<(NodeId, usize)> = self
            .g
            .edges_directed(p.node, Direction::Outgoing)
            .filter(|e| e.weight().src_slot == p.slot)
            .map(|e| (e.target(), e.weight().dst_slot))
            .collect();
        v.sort_by_key(|&(n, s)| (self.g[n].seq, s));
        v
    }

    /// How many places read `p`: consumer inputs plus graph outputs.
    pub fn use_count(&self, p: Port) -> usize {
        self.consumers(p).len() + self.outputs.iter().filter(|o| o.src == p).count()
    }

    pub fn is_graph_output(&self, p: Port) -> bool {
        self.outputs.iter().any(|o| o.src == p)
    }

    /// The tensor behind `p` if it is an initializer.
    pub fn const_tensor(&self, p: Port) -> Option<&TensorProto> {
        self.g[p.node].tensor()
    }

    /// Operator node ids in deterministic topological order (inputs and constants excluded).
    pub fn topo_ops(&self) -> Vec<NodeId> {
        self.topo_order()
            .unwrap_or_default()
            .into_iter()
            .filter(|&n| matches!(self.g[n].kind, NodeKind::Op(_)))
            .collect()
    }

    /// All nodes in topological order, ties broken by `seq`; `Err` names a node on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, NodeId> {
        let mut indeg: HashMap<NodeId, usize> = HashMap::new();
        for n in self.g.node_indices() {
            indeg.insert(n, 0);
        }
        for e in self.g.edge_indices() {
            let (_, t) = self.g.edge_endpoints(e).expect("edge exists");
            *indeg.get_mut(&t).expect("node exists") += 1;
        }
        let mut heap: BinaryHeap<std::cmp::Reverse<(u64, usize)>> = BinaryHeap::new();
        for (&n, &d) in &indeg {
            if d == 0 {
                heap.push(std::cmp::Reverse((self.g[n].seq, n.index())));
            }
        }
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
            let n = NodeIndex::new(i);
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let t = e.target();
                let d = indeg.get_mut(&t).expect("node exists");
                *d -= 1;
                if *d == 0 {
                    heap.push(std::cmp::Reverse((self.g[t].seq, t.index())));
                }
            }
        }
        if order.len() != indeg.len() {
            let done: HashSet<NodeId> = order.iter().copied().collect();
            let stuck = self
                .g
                .node_indices()
                .filter(|n| !done.contains(n))
                .min_by_key(|n| self.g[*n].seq)
                .expect("some node is left");
            return Err(stuck);
        }
        Ok(order)
    }

    /// Op type histogram (standard ops by name, others as domain::name).
    pub fn op_histogram(&self) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        for n in self.g.node_weights() {
            if let NodeKind::Op(op) = &n.kind {
                let k = if is_onnx_domain(&op.domain) {
                    op.op_type.clone()
                } else {
                    format!("{}::{}", op.domain, op.op_type)
                };
                *h.entry(k).or_insert(0) += 1;
            }
        }
        h
    }

    pub fn num_ops(&self) -> usize {
        self.g
            .node_weights()
            .filter(|n| matches!(n.kind, NodeKind::Op(_)))
            .count()
    }

    pub fn graph_inputs(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .g
            .node_indices()
            .filter(|&n| matches!(self.g[n].kind, NodeKind::Input(_)))
            .collect();
        v.sort_by_key(|&n| self.g[n].seq);
        v
    }

    // ---------- rewiring ----------

    /// Makes every reader of `from` (operators and graph outputs) read `to` instead.
    ///
    /// A graph output keeps its name: the new producer's value takes the output's name when
    /// that is possible, so the written model has the same interface.
    pub fn replace_all_uses(&mut self, from: Port, to: Port) {
        if from == to {
            return;
        }
        for (n, slot) in self.consumers(from) {
            self.set_input(n, slot, Some(to));
        }
        for i in 0..self.outputs.len() {
            if self.outputs[i].src == from {
                self.outputs[i].src = to;
            }
        }
    }

    /// Removes operators and initializers that nothing (transitively) feeds a graph output
    /// from. Graph inputs always stay. Returns how many nodes went.
    pub fn remove_dead(&mut self) -> usize {
        let mut live: HashSet<NodeId> = HashSet::new();
        let mut stack: Vec<NodeId> = self.outputs.iter().map(|o| o.src.node).collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<NodeId> = self
            .g
            .node_indices()
            .filter(|n| !live.contains(n) && !matches!(self.g[*n].kind, NodeKind::Input(_)))
            .collect();
        for &n in &dead {
            self.g.remove_node(n);
        }
        dead.len()
    }
}
