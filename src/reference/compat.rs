//! Rewrites of a model before tract loads it, for ONNX that tract cannot evaluate as written.
//! Each is an identity on values, so the reference runtime still checks what the file says.

use std::collections::HashSet;

use tract_onnx::pb;

/// ONNX's `TensorProto.DataType.BOOL`.
const BOOL: i32 = 9;

/// Operators whose outputs are boolean whatever their inputs.
const BOOLEAN_RESULT: &[&str] = &[
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "IsNaN",
    "IsInf",
];

/// Operators whose output has their first input's type.
const SAME_TYPE: &[&str] = &[
    "Identity",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Expand",
    "Flatten",
];

fn int_attr(n: &pb::NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// `Equal` over booleans becomes `Not(Xor(a, b))`: tract compares numbers only ("Bool is not
/// a number"), and torch's `floor_divide` exports the sign test `(a < 0) == (b < 0)` that way
/// (the official RT-DETR and D-FINE postprocessors). Returns how many nodes it rewrote.
pub fn lower_boolean_equal(model: &mut pb::ModelProto) -> usize {
    let Some(g) = model.graph.as_mut() else {
        return 0;
    };
    let mut bools: HashSet<String> = g
        .initializer
        .iter()
        .filter(|t| t.data_type == BOOL)
        .map(|t| t.name.clone())
        .collect();
    for i in &g.input {
        let elem = i.r#type.as_ref().and_then(|t| match &t.value {
            Some(pb::type_proto::Value::TensorType(tt)) => Some(tt.elem_type),
            _ => None,
        });
        if elem == Some(BOOL) {
            bools.insert(i.name.clone());
        }
    }
    let mut rewritten = 0;
    let mut nodes = Vec::with_capacity(g.node.len());
    for mut n in std::mem::take(&mut g.node) {
        let standard = n.domain.is_empty() || n.domain == "ai.onnx";
        let op = n.op_type.as_str();
        let is_bool = |v: &String| bools.contains(v);
        let out_bool = standard
            && (BOOLEAN_RESULT.contains(&op)
                || (op == "Cast" && int_attr(&n, "to") == Some(BOOL as i64))
                || (op == "Constant"
                    && n.attribute
                        .iter()
                        .any(|a| a.t.as_ref().is_some_and(|t| t.data_type == BOOL)))
                || (SAME_TYPE.contains(&op) && n.input.first().is_some_and(is_bool)));
        let lower = standard && op == "Equal" && n.input.iter().any(is_bool);
        if out_bool {
            bools.extend(n.output.iter().cloned());
        }
        if !lower {
            nodes.push(n);
            continue;
        }
        let out = n.output[0].clone();
        let xor = format!("{out}__detrc_xor");
        n.op_type = "Xor".into();
        n.output[0] = xor.clone();
        let not = pb::NodeProto {
            input: vec![xor],
            output: vec![out],
            name: format!("{}__detrc_not", n.name),
            op_type: "Not".into(),
            ..Default::default()
        };
        nodes.push(n);
        nodes.push(not);
        rewritten += 1;
    }
    g.node = nodes;
    rewritten
}
