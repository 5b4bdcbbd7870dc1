//! Element types of every tensor, for deciding which are fp32 candidates.

use std::collections::HashMap;

use super::follows;
use crate::ir::{is_onnx_domain, DType, Graph, NodeKind, Port};
use crate::load::proto::AttributeProto;
use crate::tensor::attrs;

/// Element type of every tensor, from initializers, graph inputs, annotations and the ONNX
/// type rules of the operators. Exported models often carry no `value_info`, so annotations
/// alone are not enough. `Err` when a tensor read as data by a converted op has an unknown
/// type: guessing would produce a model whose types do not match.
pub fn infer_dtypes(g: &Graph) -> Result<HashMap<Port, DType>, String> {
    let order = g
        .topo_order()
        .map_err(|n| format!("the graph has a cycle through {}", g.node(n).display_name()))?;
    let mut dt: HashMap<Port, DType> = HashMap::new();
    for &n in &order {
        let node = g.node(n);
        let known = |s: usize| node.outputs[s].ty.as_ref().map(|t| t.dtype);
        match &node.kind {
            NodeKind::Input(_) | NodeKind::Const { .. } => {
                let d = known(0)
                    .or_else(|| node.tensor().and_then(|t| t.data_type).map(DType))
                    .unwrap_or(DType::UNDEFINED);
                dt.insert(Port::new(n, 0), d);
                continue;
            }
            NodeKind::Op(_) => {}
        }
        let op = node.op().expect("an operator");
        let ins: Vec<DType> = g
            .inputs(n)
            .into_iter()
            .map(|p| {
                p.and_then(|p| dt.get(&p).copied())
                    .unwrap_or(DType::UNDEFINED)
            })
            .collect();
        let in_dt = |i: usize| ins.get(i).copied().unwrap_or(DType::UNDEFINED);
        let first = ins
            .iter()
            .copied()
            .find(|d| *d != DType::UNDEFINED)
            .unwrap_or(DType::UNDEFINED);
        let attr_dt = |name: &str| attrs::int(&op.attrs, name).map(|v| DType(v as i32));
        for s in 0..node.outputs.len() {
            let rule = if !is_onnx_domain(&op.domain) {
                DType::UNDEFINED
            } else {
                match (op.op_type.as_str(), s) {
                    ("Cast", _) => attr_dt("to").unwrap_or(DType::UNDEFINED),
                    ("CastLike", _) => in_dt(1),
                    (
                        "Shape" | "Size" | "NonZero" | "ArgMax" | "ArgMin" | "NonMaxSuppression",
                        _,
                    ) => DType::I64,
                    ("TopK" | "MaxPool" | "Unique", s) if s > 0 => DType::I64,
                    ("Dropout", 1) => DType::BOOL,
                    (
                        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "Not"
                        | "And" | "Or" | "Xor" | "IsNaN" | "IsInf",
                        _,
                    ) => DType::BOOL,
                    ("ConstantOfShape", _) => attrs::tensor(&op.attrs, "value")
                        .and_then(|t| t.data_type)
                        .map_or(DType::F32, DType),
                    ("Constant", _) => constant_dtype(&op.attrs),
                    ("Where", _) => {
                        if in_dt(1) != DType::UNDEFINED {
                            in_dt(1)
                        } else {
                            in_dt(2)
                        }
                    }
                    ("LayerNormalization", s) if s > 0 => {
                        attr_dt("stash_type").unwrap_or(DType::F32)
                    }
                    ("RandomNormal" | "RandomUniform", _) => attr_dt("dtype").unwrap_or(DType::F32),
                    ("RandomNormalLike" | "RandomUniformLike" | "EyeLike", _) => {
                        attr_dt("dtype").unwrap_or(in_dt(0))
                    }
                    ("QuantizeLinear", _) => {
                        if in_dt(2) != DType::UNDEFINED {
                            in_dt(2)
                        } else {
                            DType::U8
                        }
                    }
                    ("DequantizeLinear", _) => in_dt(1),
                    _ => {
                        if in_dt(0) != DType::UNDEFINED {
                            in_dt(0)
                        } else {
                            first
                        }
                    }
                }
            };
            dt.insert(Port::new(n, s), known(s).unwrap_or(rule));
        }
    }
    // An unknown type is fine on tensors no converted op reads as data (custom ops feeding
    // custom ops); elsewhere it is fatal.
    for &n in &order {
        let node = g.node(n);
        if node.op().is_none_or(|op| !is_onnx_domain(&op.domain)) {
            continue;
        }
        for (slot, p) in g.inputs(n).into_iter().enumerate() {
            let Some(p) = p else { continue };
            if dt.get(&p) == Some(&DType::UNDEFINED) && follows(node, slot) {
                return Err(format!(
                    "cannot tell the element type of '{}' (read by {})",
                    g.value(p).name,
                    node.display_name()
                ));
            }
        }
    }
    Ok(dt)
}

pub(super) fn constant_dtype(a: &[AttributeProto]) -> DType {
    if let Some(t) = attrs::tensor(a, "value") {
        return t.data_type.map_or(DType::UNDEFINED, DType);
    }
    for (name, d) in [
        ("value_float", DType::F32),
        ("value_floats", DType::F32),
        ("value_int", DType::I64),
        ("value_ints", DType::I64),
        ("value_string", DType::STRING),
        ("value_strings", DType::STRING),
    ] {
        if attrs::find(a, name).is_some() {
            return d;
        }
    }
    DType::UNDEFINED
}
