//! ModelProto -> IR.

use std::collections::HashMap;

use super::{Carry, Graph, GraphOutput, NodeId, NodeKind, Op, Port, TensorType, Value};
use crate::error::{Error, Result};
use crate::ir::DType;
use crate::load::proto::{attr_type, ModelProto, TensorProto};

pub fn import(mut model: ModelProto) -> Result<Graph> {
    let mut gp = model
        .graph
        .take()
        .ok_or_else(|| Error::Invalid("the model has no graph".into()))?;
    if !gp.sparse_initializer.is_empty() {
        return Err(Error::Unsupported(
            "sparse initializers are not supported".into(),
        ));
    }
    for n in &gp.node {
        if n.attribute.iter().any(|a| {
            a.g.is_some()
                || !a.graphs.is_empty()
                || matches!(a.r#type, Some(attr_type::GRAPH | attr_type::GRAPHS))
        }) {
            return Err(Error::Unsupported(format!(
                "node {} '{}' has a subgraph (control flow); detrc handles straight-line graphs only",
                n.op_type.as_deref().unwrap_or("?"),
                n.name.as_deref().unwrap_or("")
            )));
        }
    }
    let nodes = std::mem::take(&mut gp.node);
    let initializers = std::mem::take(&mut gp.initializer);
    let inputs = std::mem::take(&mut gp.input);
    let outputs = std::mem::take(&mut gp.output);
    let value_info = std::mem::take(&mut gp.value_info);
    model.graph = Some(gp);

    let mut g = Graph::new(Carry {
        model,
        orphan_value_info: Vec::new(),
    });
    let mut producer: HashMap<String, Port> = HashMap::new();
    let mut define = |name: &str, p: Port, what: &str| -> Result<()> {
        if name.is_empty() {
            return Ok(());
        }
        if producer.insert(name.to_string(), p).is_some() {
            return Err(Error::Invalid(format!(
                "tensor '{name}' is defined twice (again by {what})"
            )));
        }
        Ok(())
    };

    let init_names: HashMap<&str, usize> = initializers
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_deref().unwrap_or(""), i))
        .collect();
    let mut also_input: HashMap<usize, crate::load::proto::ValueInfoProto> = HashMap::new();
    for vi in inputs {
        let name = vi.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(Error::Invalid("a graph input has no name".into()));
        }
        g.input_order.push(name.clone());
        if let Some(&i) = init_names.get(name.as_str()) {
            also_input.insert(i, vi);
            continue;
        }
        let ty = vi.r#type.as_ref().and_then(TensorType::from_proto);
        if let Some(ty) = &ty {
            check_declared("graph input", &name, ty)?;
        }
        let id = g.add_node(
            NodeKind::Input(vi),
            vec![Value {
                name: name.clone(),
                ty,
                info: None,
            }],
        );
        define(&name, Port::new(id, 0), "a graph input")?;
    }
    for (i, t) in initializers.into_iter().enumerate() {
        let name = t.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(Error::Invalid("an initializer has no name".into()));
        }
        check_tensor(&name, &t)?;
        let ty = TensorType::new(DType(t.data_type.unwrap_or(0)), &t.dims);
        let id = g.add_node(
            NodeKind::Const {
                tensor: t,
                also_input: also_input.remove(&i),
            },
            vec![Value::typed(name.clone(), ty)],
        );
        define(&name, Port::new(id, 0), "an initializer")?;
    }

    // Nodes first, edges second: a file whose nodes are not in topological order still loads
    // (the validator reports real cycles).
    let mut pending: Vec<(NodeId, Vec<String>)> = Vec::with_capacity(nodes.len());
    for mut n in nodes {
        let op_type = n.op_type.take().unwrap_or_default();
        if op_type.is_empty() {
            return Err(Error::Invalid(format!(
                "node '{}' has no op_type",
                n.name.as_deref().unwrap_or("")
            )));
        }
        let ins = std::mem::take(&mut n.input);
        let outs = std::mem::take(&mut n.output);
        let attrs = std::mem::take(&mut n.attribute);
        let op = Op {
            op_type,
            domain: n.domain.take().unwrap_or_default(),
            name: n.name.take().unwrap_or_default(),
            attrs,
            num_inputs: ins.len(),
            extra: n,
        };
        let label = format!("node {} '{}'", op.op_type, op.name);
        let id = g.add_node(
            NodeKind::Op(op),
            outs.iter().map(|o| Value::named(o.clone())).collect(),
        );
        for (slot, o) in outs.iter().enumerate() {
            define(o, Port::new(id, slot), &label)?;
        }
        pending.push((id, ins));
    }
    for (id, ins) in pending {
        for (slot, name) in ins.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let src = *producer.get(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "{} reads tensor '{name}', which no node, initializer or graph input defines",
                    g.node(id).display_name()
                ))
            })?;
            g.connect(src, id, slot);
        }
    }
    for vi in outputs {
        let name = vi.name.clone().unwrap_or_default();
        let src = *producer.get(&name).ok_or_else(|| {
            Error::Invalid(format!(
                "graph output '{name}' is not produced by any node, initializer or input"
            ))
        })?;
        if let Some(ty) = vi.r#type.as_ref().and_then(TensorType::from_proto) {
            check_declared("graph output", &name, &ty)?;
            let v = g.value_mut(src);
            if v.ty.is_none() {
                v.ty = Some(ty);
            }
        }
        g.outputs.push(GraphOutput {
            name,
            src,
            info: vi,
        });
    }
    for vi in value_info {
        let name = vi.name.clone().unwrap_or_default();
        if let Some(ty) = vi.r#type.as_ref().and_then(TensorType::from_proto) {
            check_declared("value_info", &name, &ty)?;
        }
        match producer.get(&name) {
            // A second entry for the same tensor (some tools write duplicates) is kept as is.
            Some(&p)
                if matches!(g.node(p.node).kind, NodeKind::Op(_)) && g.value(p).info.is_none() =>
            {
                let ty = vi.r#type.as_ref().and_then(TensorType::from_proto);
                let v = g.value_mut(p);
                if ty.is_some() {
                    v.ty = ty;
                }
                v.info = Some(vi);
            }
            _ => g.carry.orphan_value_info.push(vi),
        }
    }
    Ok(g)
}

/// Rejects a declared type (graph input, graph output, value_info) with negative or absurd
/// dimensions. Passes compute with these shapes, so a dimension of 2^62 or -2^63 would otherwise
/// travel into every size computation downstream (see `types::MAX_ELEMENTS`).
fn check_declared(what: &str, name: &str, ty: &TensorType) -> Result<()> {
    ty.check_dims().map_err(|why| {
        let hint = if why.starts_with("a negative") {
            " (use a named dim_param for a dynamic one)"
        } else {
            ""
        };
        Error::Invalid(format!("{what} '{name}' has {why}{hint}"))
    })
}

/// Rejects initializers whose stored bytes disagree with their declared shape: absurd or
/// negative dimensions and truncated data show up here instead of deep inside a pass.
pub fn check_tensor(name: &str, t: &TensorProto) -> Result<()> {
    if let Some(d) = t.dims.iter().find(|&&d| d < 0) {
        return Err(Error::Invalid(format!(
            "initializer '{name}' has a negative dimension {d}"
        )));
    }
    let count = super::types::element_count(&t.dims).ok_or_else(|| {
        Error::Invalid(format!(
            "initializer '{name}' has absurd dimensions {:?}",
            t.dims
        ))
    })?;
    let dtype = DType(t.data_type.unwrap_or(0));
    if dtype == DType::UNDEFINED {
        return Err(Error::Invalid(format!(
            "initializer '{name}' has no data type"
        )));
    }
    if let (Some(raw), Some(size)) = (&t.raw_data, dtype.size()) {
        if raw.len() as u64 != count * size as u64 {
            return Err(Error::Invalid(format!(
                "initializer '{name}' holds {} bytes, but {dtype}{:?} needs {}",
                raw.len(),
                t.dims,
                count * size as u64
            )));
        }
    } else if t.raw_data.is_none() {
        let stored = match dtype {
            DType::F32 => t.float_data.len(),
            DType::F64 => t.double_data.len(),
            DType::I64 => t.int64_data.len(),
            DType::U32 | DType::U64 => t.uint64_data.len(),
            DType::STRING => t.string_data.len(),
            _ => t.int32_data.len(),
        } as u64;
        if stored != count {
            return Err(Error::Invalid(format!(
                "initializer '{name}' holds {stored} elements, but {dtype}{:?} needs {count}",
                t.dims
            )));
        }
    }
    Ok(())
}
