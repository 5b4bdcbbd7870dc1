//! Typed access to node attributes.

use crate::load::proto::{AttributeProto, TensorProto};

pub fn find<'a>(attrs: &'a [AttributeProto], name: &str) -> Option<&'a AttributeProto> {
    attrs.iter().find(|a| a.name.as_deref() == Some(name))
}

pub fn int(attrs: &[AttributeProto], name: &str) -> Option<i64> {
    find(attrs, name).and_then(|a| a.i)
}

pub fn int_or(attrs: &[AttributeProto], name: &str, d: i64) -> i64 {
    int(attrs, name).unwrap_or(d)
}

pub fn float(attrs: &[AttributeProto], name: &str) -> Option<f32> {
    find(attrs, name).and_then(|a| a.f)
}

pub fn ints(attrs: &[AttributeProto], name: &str) -> Option<Vec<i64>> {
    find(attrs, name).map(|a| a.ints.clone())
}

pub fn floats(attrs: &[AttributeProto], name: &str) -> Option<Vec<f32>> {
    find(attrs, name).map(|a| a.floats.clone())
}

pub fn string(attrs: &[AttributeProto], name: &str) -> Option<String> {
    find(attrs, name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

pub fn tensor<'a>(attrs: &'a [AttributeProto], name: &str) -> Option<&'a TensorProto> {
    find(attrs, name).and_then(|a| a.t.as_ref())
}

pub fn make_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        i: Some(v),
        r#type: Some(crate::load::proto::attr_type::INT),
        ..Default::default()
    }
}

pub fn make_ints(name: &str, v: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        ints: v,
        r#type: Some(crate::load::proto::attr_type::INTS),
        ..Default::default()
    }
}

pub fn make_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        s: Some(v.as_bytes().to_vec().into()),
        r#type: Some(crate::load::proto::attr_type::STRING),
        ..Default::default()
    }
}

pub fn make_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        f: Some(v),
        r#type: Some(crate::load::proto::attr_type::FLOAT),
        ..Default::default()
    }
}

/// Normalizes a possibly negative axis against `rank`; `None` if it is not in `-rank..rank`.
/// A scalar has no axis at all: callers index shapes with the result, and axis 0 of a rank-0
/// tensor (a Gather, Concat, Slice... of a scalar, which no valid model has) indexed past the
/// end of an empty shape.
pub fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = i64::try_from(rank).ok()?;
    let v = if a < 0 { a.checked_add(r)? } else { a };
    (0..r).contains(&v).then_some(v as usize)
}
