//! IR -> ModelProto.

use super::{Graph, NodeKind, Port, TensorType, Value};
use crate::load::proto::{type_proto, ModelProto, NodeProto, ValueInfoProto};

impl Graph {
    /// Gives every graph output's producer the output's name, so the written model has exactly
    /// the interface it was loaded with. Where the producer cannot be renamed (a graph input,
    /// an initializer, or a tensor that is also another output) an Identity carries the name.
    pub fn fix_output_names(&mut self) {
        for i in 0..self.outputs.len() {
            let (name, src) = (self.outputs[i].name.clone(), self.outputs[i].src);
            if self.value(src).name == name {
                continue;
            }
            let shared = self
                .outputs
                .iter()
                .enumerate()
                .any(|(j, o)| j != i && o.src == src);
            let renamable = matches!(self.node(src.node).kind, NodeKind::Op(_)) && !shared;
            // Whoever holds the name now (a dead or bypassed tensor) gives it up.
            let holder: Option<Port> = self.g.node_indices().find_map(|n| {
                self.g[n]
                    .outputs
                    .iter()
                    .position(|v| v.name == name)
                    .map(|s| Port::new(n, s))
            });
            if let Some(h) = holder {
                let fresh = self.fresh_name(&format!("{name}_orig"));
                self.value_mut(h).name = fresh;
            }
            if renamable {
                self.value_mut(src).name = name;
            } else {
                let ty = self.value(src).ty.clone();
                let id = self.add_op(
                    "Identity",
                    &format!("{name}_identity"),
                    &[Some(src)],
                    vec![],
                    1,
                );
                self.node_mut(id).outputs[0] = Value {
                    name,
                    ty,
                    info: None,
                };
                self.outputs[i].src = Port::new(id, 0);
            }
        }
    }

    /// Builds the ModelProto. Initializers come in their original order (new ones last), nodes
    /// in deterministic topological order.
    pub fn export(&self) -> ModelProto {
        let mut model = self.carry.model.clone();
        let mut gp = model.graph.take().unwrap_or_default();
        let order = self.topo_order().unwrap_or_else(|_| {
            let mut v: Vec<_> = self.g.node_indices().collect();
            v.sort_by_key(|&n| self.g[n].seq);
            v
        });
        let mut by_seq: Vec<_> = self.g.node_indices().collect();
        by_seq.sort_by_key(|&n| self.g[n].seq);

        let mut inputs: Vec<(usize, ValueInfoProto)> = Vec::new();
        let pos = |name: &str| {
            self.input_order
                .iter()
                .position(|n| n == name)
                .unwrap_or(usize::MAX)
        };
        for &n in &by_seq {
            let node = &self.g[n];
            match &node.kind {
                NodeKind::Input(vi) => {
                    let mut vi = vi.clone();
                    vi.name = Some(node.outputs[0].name.clone());
                    inputs.push((pos(&node.outputs[0].name), vi));
                }
                NodeKind::Const { tensor, also_input } => {
                    let mut t = tensor.clone();
                    t.name = Some(node.outputs[0].name.clone());
                    gp.initializer.push(t);
                    if let Some(vi) = also_input {
                        let mut vi = vi.clone();
                        vi.name = Some(node.outputs[0].name.clone());
                        inputs.push((pos(&node.outputs[0].name), vi));
                    }
                }
                NodeKind::Op(_) => {}
            }
        }
        inputs.sort_by_key(|(p, _)| *p);
        gp.input = inputs.into_iter().map(|(_, vi)| vi).collect();

        for &n in &order {
            let node = &self.g[n];
            let NodeKind::Op(op) = &node.kind else {
                continue;
            };
            let mut np: NodeProto = op.extra.clone();
            np.op_type = Some(op.op_type.clone());
            np.name = if op.name.is_empty() && op.extra.name.is_none() {
                None
            } else {
                Some(op.name.clone())
            };
            if !op.domain.is_empty() {
                np.domain = Some(op.domain.clone());
            } else if op.extra.domain.is_none() {
                np.domain = None;
            } else {
                np.domain = Some(String::new());
            }
            np.attribute = op.attrs.clone();
            np.input = self
                .inputs(n)
                .into_iter()
                .map(|p| p.map(|p| self.value(p).name.clone()).unwrap_or_default())
                .collect();
            np.output = node.outputs.iter().map(|v| v.name.clone()).collect();
            gp.node.push(np);
            for (slot, v) in node.outputs.iter().enumerate() {
                if v.name.is_empty() || self.is_graph_output(Port::new(n, slot)) {
                    continue;
                }
                if let Some(vi) = value_info(v) {
                    gp.value_info.push(vi);
                }
            }
        }
        gp.value_info.extend(self.orphan_value_info());
        gp.output = self
            .outputs
            .iter()
            .map(|o| {
                let mut vi = o.info.clone();
                vi.name = Some(o.name.clone());
                vi
            })
            .collect();
        model.graph = Some(gp);
        model
    }
}

impl Graph {
    /// The `value_info` entries not attached to an operator's output, in their order. Those
    /// that name an initializer (dynamo exports annotate every weight) follow its element type:
    /// a pass that converted the initializer (`to-fp16`) would otherwise leave a declaration
    /// that strict shape inference rejects ("inferred elem type differs"). Entries naming no
    /// tensor of the graph stay as loaded, for an exact round trip.
    fn orphan_value_info(&self) -> Vec<ValueInfoProto> {
        let orphans = &self.carry.orphan_value_info;
        if orphans.is_empty() {
            return Vec::new();
        }
        let consts: std::collections::HashMap<&str, i32> = self
            .g
            .node_indices()
            .filter_map(|n| match &self.g[n].kind {
                NodeKind::Const { tensor, .. } => {
                    Some((self.g[n].outputs[0].name.as_str(), tensor.data_type?))
                }
                _ => None,
            })
            .collect();
        orphans
            .iter()
            .map(|vi| {
                let mut vi = vi.clone();
                let actual = vi.name.as_deref().and_then(|n| consts.get(n)).copied();
                if let (Some(dt), Some(ty)) = (actual, vi.r#type.as_mut()) {
                    if let Some(type_proto::Value::TensorType(tt)) = ty.value.as_mut() {
                        if tt.elem_type != Some(dt) {
                            tt.elem_type = Some(dt);
                        }
                    }
                }
                vi
            })
            .collect()
    }
}

fn value_info(v: &Value) -> Option<ValueInfoProto> {
    match (&v.info, &v.ty) {
        (Some(info), ty) => {
            let same = info
                .r#type
                .as_ref()
                .and_then(TensorType::from_proto)
                .as_ref()
                == ty.as_ref();
            let mut info = info.clone();
            info.name = Some(v.name.clone());
            if !same {
                info.r#type = ty.as_ref().map(TensorType::to_proto);
            }
            Some(info)
        }
        (None, Some(ty)) => Some(ValueInfoProto {
            name: Some(v.name.clone()),
            r#type: Some(ty.to_proto()),
            doc_string: None,
            metadata_props: vec![],
        }),
        (None, None) => None,
    }
}
