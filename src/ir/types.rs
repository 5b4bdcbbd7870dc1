//! Tensor types as the IR tracks them: element type plus a possibly partial shape.

use super::dtype::DType;
use crate::load::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, TensorShapeProto, TypeProto,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(i64),
    Param(String),
    Unknown,
}

impl Dim {
    pub fn fixed(&self) -> Option<i64> {
        match self {
            Dim::Fixed(v) => Some(*v),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Param(p) => write!(f, "{p}"),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    /// `None`: rank unknown.
    pub shape: Option<Vec<Dim>>,
}

impl TensorType {
    pub fn new(dtype: DType, dims: &[i64]) -> Self {
        TensorType {
            dtype,
            shape: Some(dims.iter().map(|&d| Dim::Fixed(d)).collect()),
        }
    }

    /// All dimensions, if every one is a known number.
    pub fn static_shape(&self) -> Option<Vec<i64>> {
        self.shape.as_ref()?.iter().map(Dim::fixed).collect()
    }

    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }

    pub fn from_proto(t: &TypeProto) -> Option<TensorType> {
        match &t.value {
            Some(type_proto::Value::TensorType(tt)) => Some(TensorType {
                dtype: DType(tt.elem_type.unwrap_or(0)),
                shape: tt.shape.as_ref().map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(dimension::Value::DimValue(v)) => Dim::Fixed(*v),
                            Some(dimension::Value::DimParam(p)) => Dim::Param(p.clone()),
                            None => Dim::Unknown,
                        })
                        .collect()
                }),
            }),
            _ => None,
        }
    }

    pub fn to_proto(&self) -> TypeProto {
        TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(self.dtype.0),
                shape: self.shape.as_ref().map(|s| TensorShapeProto {
                    dim: s
                        .iter()
                        .map(|d| Dimension {
                            value: match d {
                                Dim::Fixed(v) => Some(dimension::Value::DimValue(*v)),
                                Dim::Param(p) => Some(dimension::Value::DimParam(p.clone())),
                                Dim::Unknown => None,
                            },
                            denotation: None,
                        })
                        .collect(),
                }),
            })),
            denotation: None,
        }
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dtype)?;
        match &self.shape {
            None => f.write_str("[..]"),
            Some(s) => {
                f.write_str("[")?;
                for (i, d) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{d}")?;
                }
                f.write_str("]")
            }
        }
    }
}
