//! Constants in fp16: initializers, `Constant` and `ConstantOfShape` values converted, finite
//! values clamped to the fp16 range.

use half::f16;
use ndarray::ArrayD;

use super::{set_cast_to, F16_MAX};
use crate::ir::{DType, Graph, NodeId, NodeKind, Port};
use crate::load::proto::{attr_type, AttributeProto, TensorProto};
use crate::tensor::attrs;
use crate::tensor::Tensor;

/// fp32 -> fp16, finite values clamped to the fp16 range (infinities and NaN kept: masks use
/// them on purpose).
pub(super) fn to_f16_tensor(t: &TensorProto) -> Result<TensorProto, String> {
    let name = t.name.clone().unwrap_or_default();
    let Tensor::F32(a) = Tensor::from_proto(t).map_err(|e| format!("constant '{name}': {e}"))?
    else {
        return Err(format!("constant '{name}' is not fp32"));
    };
    let h: ArrayD<f16> = a.mapv(|v| {
        let v = if v.is_finite() {
            v.clamp(-F16_MAX, F16_MAX)
        } else {
            v
        };
        f16::from_f32(v)
    });
    let mut out = Tensor::F16(h).to_proto(&name);
    out.name = t.name.clone();
    out.doc_string = t.doc_string.clone();
    out.metadata_props = t.metadata_props.clone();
    Ok(out)
}

pub(super) fn convert_initializer(g: &mut Graph, n: NodeId) -> Result<(u64, u64), String> {
    let NodeKind::Const { tensor, .. } = &mut g.node_mut(n).kind else {
        return Err("not an initializer".into());
    };
    let before =
        tensor.raw_data.as_ref().map_or(0, |r| r.len() as u64) + 4 * tensor.float_data.len() as u64;
    let t = to_f16_tensor(tensor)?;
    let after = t.raw_data.as_ref().map_or(0, |r| r.len() as u64);
    *tensor = t;
    Ok((before, after))
}

pub(super) fn copy_initializer_f16(g: &mut Graph, src: Port) -> Result<Port, String> {
    let t = g.const_tensor(src).ok_or("not an initializer")?.clone();
    let t = to_f16_tensor(&t)?;
    let hint = format!("{}_fp16", g.value(src).name);
    let id = g.add_const(&hint, t);
    Ok(Port::new(id, 0))
}

/// Makes a `Constant`, `ConstantOfShape` or int->float `Cast` produce fp16.
pub(super) fn convert_source_op(g: &mut Graph, n: NodeId) -> Result<(), String> {
    let node = g.node(n);
    if node.is("Cast") {
        set_cast_to(g, n, DType::F16);
        return Ok(());
    }
    let is_cos = node.is("ConstantOfShape");
    let op = g.node_mut(n).op_mut().ok_or("not an operator")?;
    if is_cos {
        let t = match attrs::tensor(&op.attrs, "value") {
            Some(t) => to_f16_tensor(t)?,
            // The default value is a single fp32 zero.
            None => Tensor::F16(ArrayD::from_elem(ndarray::IxDyn(&[1]), f16::ZERO)).to_proto(""),
        };
        op.attrs.retain(|a| a.name.as_deref() != Some("value"));
        op.attrs.push(tensor_attr("value", t));
        return Ok(());
    }
    // Constant: `value` (a tensor), or `value_float` / `value_floats`.
    let t = if let Some(t) = attrs::tensor(&op.attrs, "value") {
        to_f16_tensor(t)?
    } else if let Some(v) = attrs::float(&op.attrs, "value_float") {
        let a = ArrayD::from_elem(ndarray::IxDyn(&[]), v);
        to_f16_tensor(&Tensor::F32(a).to_proto(""))?
    } else if let Some(v) = attrs::find(&op.attrs, "value_floats").map(|a| a.floats.clone()) {
        let a = ArrayD::from_shape_vec(ndarray::IxDyn(&[v.len()]), v).map_err(|e| e.to_string())?;
        to_f16_tensor(&Tensor::F32(a).to_proto(""))?
    } else {
        return Err(format!("{} has no float value", g.node(n).display_name()));
    };
    let op = g.node_mut(n).op_mut().ok_or("not an operator")?;
    op.attrs.retain(|a| {
        !matches!(
            a.name.as_deref(),
            Some("value" | "value_float" | "value_floats")
        )
    });
    op.attrs.push(tensor_attr("value", t));
    Ok(())
}

pub(super) fn tensor_attr(name: &str, mut t: TensorProto) -> AttributeProto {
    if t.name.as_deref() == Some("") {
        t.name = None;
    }
    AttributeProto {
        name: Some(name.into()),
        t: Some(t),
        r#type: Some(attr_type::TENSOR),
        ..Default::default()
    }
}
