//! Tensor types as the IR tracks them: element type plus a possibly partial shape.

use crate::load::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, TensorShapeProto, TypeProto,
};
use crate::tensor::DType;

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

/// Largest element count a tensor may have: 2^40 (4 TiB of f32) is far beyond any real model.
/// Every shape recorded in the IR stays below it (declared shapes are checked when loading,
/// inferred ones before they are recorded), so any product or sum of the dimensions of one
/// shape, and of a handful of such shapes, is far from overflowing an `i64`.
pub const MAX_ELEMENTS: u64 = 1 << 40;

impl TensorType {
    /// `Err` says why if a known dimension is negative, or the known dimensions multiply to
    /// `MAX_ELEMENTS` or more (see `element_count`). Unknown and symbolic dimensions are not
    /// counted.
    pub fn check_dims(&self) -> Result<(), String> {
        let Some(shape) = &self.shape else {
            return Ok(());
        };
        let fixed: Vec<i64> = shape.iter().filter_map(Dim::fixed).collect();
        if let Some(d) = fixed.iter().find(|&&d| d < 0) {
            return Err(format!("a negative dimension {d}"));
        }
        if element_count(&fixed).is_none() {
            return Err(format!("absurd dimensions {self}"));
        }
        Ok(())
    }

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

/// Number of elements of `dims`, if every dimension is non-negative and the shape stays below
/// `MAX_ELEMENTS` with zero dimensions counted as one: an empty tensor of [0, 2^62] holds no
/// data, but a pass that sizes something by one of its dimensions would still blow up.
pub fn element_count(dims: &[i64]) -> Option<u64> {
    let mut span = 1u64;
    let mut count = 1u64;
    for &d in dims {
        let d = u64::try_from(d).ok()?;
        span = span.checked_mul(d.max(1)).filter(|&s| s < MAX_ELEMENTS)?;
        // count <= span, so this cannot overflow.
        count *= d;
    }
    Some(count)
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
