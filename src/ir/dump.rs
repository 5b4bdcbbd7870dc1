//! A readable, deterministic text form of the IR, for `--dump-ir` and snapshot tests.
//!
//! One line per node in topological order. Constants show type and shape, and their values
//! when small, because shape arithmetic is what most rewrites change.

use std::fmt::Write;

use super::{Graph, NodeKind, Port};
use crate::load::proto::{attr_type, AttributeProto};
use crate::tensor::Tensor;

const SHOW_VALUES_UP_TO: usize = 8;

impl Graph {
    pub fn dump(&self) -> String {
        let mut s = String::new();
        let order = self.topo_order().unwrap_or_default();
        let _ = writeln!(
            s,
            "graph opset={} ops={} consts={}",
            self.opset(),
            self.num_ops(),
            self.g
                .node_weights()
                .filter(|n| matches!(n.kind, NodeKind::Const { .. }))
                .count()
        );
        for &n in &order {
            let node = &self.g[n];
            let v0 = |i: usize| {
                let v = &node.outputs[i];
                match &v.ty {
                    Some(t) => format!("%{}: {}", v.name, t),
                    None => format!("%{}", v.name),
                }
            };
            match &node.kind {
                NodeKind::Input(_) => {
                    let _ = writeln!(s, "input {}", v0(0));
                }
                NodeKind::Const { tensor, .. } => {
                    // Only constants that feed operators are interesting to read.
                    let uses = self.consumers(Port::new(n, 0)).len();
                    let vals = Tensor::from_proto(tensor)
                        .ok()
                        .filter(|t| t.len() <= SHOW_VALUES_UP_TO)
                        .map(|t| format!(" = {}", t.values_string()))
                        .unwrap_or_default();
                    let _ = writeln!(s, "const {}{vals}  (uses: {uses})", v0(0));
                }
                NodeKind::Op(op) => {
                    let outs: Vec<String> = (0..node.outputs.len()).map(v0).collect();
                    let ins: Vec<String> = self
                        .inputs(n)
                        .into_iter()
                        .map(|p| {
                            p.map_or(String::from("_"), |p| format!("%{}", self.value(p).name))
                        })
                        .collect();
                    let attrs: Vec<String> = op.attrs.iter().map(attr_string).collect();
                    let attrs = if attrs.is_empty() {
                        String::new()
                    } else {
                        format!(" {{{}}}", attrs.join(", "))
                    };
                    let dom = if op.domain.is_empty() {
                        String::new()
                    } else {
                        format!("{}::", op.domain)
                    };
                    let _ = writeln!(
                        s,
                        "{} = {dom}{}({}){attrs}",
                        outs.join(", "),
                        op.op_type,
                        ins.join(", ")
                    );
                }
            }
        }
        for o in &self.outputs {
            let _ = writeln!(s, "output {} <- %{}", o.name, self.value(o.src).name);
        }
        s
    }
}

pub fn attr_string(a: &AttributeProto) -> String {
    let name = a.name.as_deref().unwrap_or("?");
    let v = match a.r#type {
        Some(attr_type::FLOAT) => format!("{}", a.f.unwrap_or(0.0)),
        Some(attr_type::INT) => format!("{}", a.i.unwrap_or(0)),
        Some(attr_type::STRING) => {
            format!(
                "{:?}",
                String::from_utf8_lossy(a.s.as_deref().unwrap_or(&[]))
            )
        }
        Some(attr_type::FLOATS) => format!("{:?}", a.floats),
        Some(attr_type::INTS) => format!("{:?}", a.ints),
        Some(attr_type::TENSOR) => match a.t.as_ref().map(Tensor::from_proto) {
            Some(Ok(t)) if t.len() <= SHOW_VALUES_UP_TO => {
                format!("{}{:?}={}", t.dtype(), t.shape(), t.values_string())
            }
            Some(Ok(t)) => format!("{}{:?}", t.dtype(), t.shape()),
            _ => "tensor".into(),
        },
        _ => "..".into(),
    };
    format!("{name}={v}")
}
