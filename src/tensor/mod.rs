//! The bottom layer: ONNX element types ([`DType`]), dense host tensors ([`Tensor`]) for
//! constant evaluation, converted to and from `TensorProto`, and typed attribute access.
//! The IR and the op registry both build on it; it knows neither.

pub mod attrs;
pub mod dtype;

pub use dtype::DType;

use bytes::Bytes;
use half::f16;
use ndarray::{ArrayD, IxDyn};

use crate::load::proto::TensorProto;

#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    F16(ArrayD<f16>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    I8(ArrayD<i8>),
    U8(ArrayD<u8>),
    Bool(ArrayD<bool>),
}

/// Applies `$body` to the array inside a tensor whatever its element type, binding it as `$a`
/// and rebuilding a tensor of the same variant from the result.
#[macro_export]
macro_rules! map_any {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::tensor::Tensor::F32($a) => $crate::tensor::Tensor::F32($body),
            $crate::tensor::Tensor::F64($a) => $crate::tensor::Tensor::F64($body),
            $crate::tensor::Tensor::F16($a) => $crate::tensor::Tensor::F16($body),
            $crate::tensor::Tensor::I64($a) => $crate::tensor::Tensor::I64($body),
            $crate::tensor::Tensor::I32($a) => $crate::tensor::Tensor::I32($body),
            $crate::tensor::Tensor::I8($a) => $crate::tensor::Tensor::I8($body),
            $crate::tensor::Tensor::U8($a) => $crate::tensor::Tensor::U8($body),
            $crate::tensor::Tensor::Bool($a) => $crate::tensor::Tensor::Bool($body),
        }
    };
}

/// Like `map_any!` but the body returns `Result<ArrayD<_>, _>`.
#[macro_export]
macro_rules! try_map_any {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::tensor::Tensor::F32($a) => $crate::tensor::Tensor::F32($body?),
            $crate::tensor::Tensor::F64($a) => $crate::tensor::Tensor::F64($body?),
            $crate::tensor::Tensor::F16($a) => $crate::tensor::Tensor::F16($body?),
            $crate::tensor::Tensor::I64($a) => $crate::tensor::Tensor::I64($body?),
            $crate::tensor::Tensor::I32($a) => $crate::tensor::Tensor::I32($body?),
            $crate::tensor::Tensor::I8($a) => $crate::tensor::Tensor::I8($body?),
            $crate::tensor::Tensor::U8($a) => $crate::tensor::Tensor::U8($body?),
            $crate::tensor::Tensor::Bool($a) => $crate::tensor::Tensor::Bool($body?),
        }
    };
}

/// Reads a value of any variant through `$a` (no rebuild).
#[macro_export]
macro_rules! with_any {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::tensor::Tensor::F32($a) => $body,
            $crate::tensor::Tensor::F64($a) => $body,
            $crate::tensor::Tensor::F16($a) => $body,
            $crate::tensor::Tensor::I64($a) => $body,
            $crate::tensor::Tensor::I32($a) => $body,
            $crate::tensor::Tensor::I8($a) => $body,
            $crate::tensor::Tensor::U8($a) => $body,
            $crate::tensor::Tensor::Bool($a) => $body,
        }
    };
}

fn le_vec<T, const N: usize>(raw: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk of N")))
        .collect()
}

impl Tensor {
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F64(_) => DType::F64,
            Tensor::F16(_) => DType::F16,
            Tensor::I64(_) => DType::I64,
            Tensor::I32(_) => DType::I32,
            Tensor::I8(_) => DType::I8,
            Tensor::U8(_) => DType::U8,
            Tensor::Bool(_) => DType::BOOL,
        }
    }

    pub fn shape(&self) -> Vec<usize> {
        with_any!(self, a => a.shape().to_vec())
    }

    pub fn len(&self) -> usize {
        with_any!(self, a => a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn byte_size(&self) -> usize {
        self.len() * self.dtype().size().unwrap_or(1)
    }

    /// Decodes a `TensorProto` (raw or typed fields). `Err` for element types the evaluator
    /// does not handle, or for data that does not match the shape.
    pub fn from_proto(t: &TensorProto) -> Result<Tensor, String> {
        let shape: Vec<usize> = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
            .collect::<Result<_, _>>()?;
        let dt = DType(t.data_type.unwrap_or(0));
        let sh = IxDyn(&shape);
        let bad = |e: ndarray::ShapeError| format!("tensor data does not match its shape: {e}");
        let raw: Option<&[u8]> = t.raw_data.as_deref();
        Ok(match dt {
            DType::F32 => Tensor::F32(
                ArrayD::from_shape_vec(
                    sh,
                    match raw {
                        Some(r) => le_vec(r, f32::from_le_bytes),
                        None => t.float_data.clone(),
                    },
                )
                .map_err(bad)?,
            ),
            DType::F64 => Tensor::F64(
                ArrayD::from_shape_vec(
                    sh,
                    match raw {
                        Some(r) => le_vec(r, f64::from_le_bytes),
                        None => t.double_data.clone(),
                    },
                )
                .map_err(bad)?,
            ),
            DType::F16 => Tensor::F16(
                ArrayD::from_shape_vec(
                    sh,
                    match raw {
                        Some(r) => le_vec(r, |b: [u8; 2]| f16::from_le_bytes(b)),
                        None => t
                            .int32_data
                            .iter()
                            .map(|&v| f16::from_bits(v as u16))
                            .collect(),
                    },
                )
                .map_err(bad)?,
            ),
            DType::I64 => Tensor::I64(
                ArrayD::from_shape_vec(
                    sh,
                    match raw {
                        Some(r) => le_vec(r, i64::from_le_bytes),
                        None => t.int64_data.clone(),
                    },
                )
                .map_err(bad)?,
            ),
            DType::I32 => Tensor::I32(
                ArrayD::from_shape_vec(
                    sh,
                    match raw {
                        Some(r) => le_vec(r, i32::from_le_bytes),
                        None => t.int32_data.clone(),
                    },
                )
                .map_err(bad)?,
            ),
            DType::I8 => Tensor::I8(
                ArrayD::from_shape_vec(
                    sh,
                    match raw {
                        Some(r) => r.iter().map(|&b| b as i8).collect(),
                        None => t.int32_data.iter().map(|&v| v as i8).collect(),
                    },
                )
                .map_err(bad)?,
            ),
            DType::U8 => Tensor::U8(
                ArrayD::from_shape_vec(
                    sh,
                    match raw {
                        Some(r) => r.to_vec(),
                        None => t.int32_data.iter().map(|&v| v as u8).collect(),
                    },
                )
                .map_err(bad)?,
            ),
            DType::BOOL => Tensor::Bool(
                ArrayD::from_shape_vec(
                    sh,
                    match raw {
                        Some(r) => r.iter().map(|&b| b != 0).collect(),
                        None => t.int32_data.iter().map(|&v| v != 0).collect(),
                    },
                )
                .map_err(bad)?,
            ),
            other => return Err(format!("element type {other} is not evaluated")),
        })
    }

    /// Encodes as a `TensorProto` with little-endian `raw_data`.
    pub fn to_proto(&self, name: &str) -> TensorProto {
        let mut raw: Vec<u8> = Vec::with_capacity(self.byte_size());
        match self {
            Tensor::F32(a) => a
                .iter()
                .for_each(|v| raw.extend_from_slice(&v.to_le_bytes())),
            Tensor::F64(a) => a
                .iter()
                .for_each(|v| raw.extend_from_slice(&v.to_le_bytes())),
            Tensor::F16(a) => a
                .iter()
                .for_each(|v| raw.extend_from_slice(&v.to_le_bytes())),
            Tensor::I64(a) => a
                .iter()
                .for_each(|v| raw.extend_from_slice(&v.to_le_bytes())),
            Tensor::I32(a) => a
                .iter()
                .for_each(|v| raw.extend_from_slice(&v.to_le_bytes())),
            Tensor::I8(a) => a.iter().for_each(|v| raw.push(*v as u8)),
            Tensor::U8(a) => raw.extend(a.iter().copied()),
            Tensor::Bool(a) => raw.extend(a.iter().map(|&b| b as u8)),
        }
        TensorProto {
            dims: self.shape().iter().map(|&d| d as i64).collect(),
            data_type: Some(self.dtype().0),
            name: Some(name.to_string()),
            raw_data: Some(Bytes::from(raw)),
            ..Default::default()
        }
    }

    /// Integer contents (for shapes, axes, indices).
    pub fn as_i64_vec(&self) -> Option<Vec<i64>> {
        match self {
            Tensor::I64(a) => Some(a.iter().copied().collect()),
            Tensor::I32(a) => Some(a.iter().map(|&v| v as i64).collect()),
            Tensor::U8(a) => Some(a.iter().map(|&v| v as i64).collect()),
            Tensor::I8(a) => Some(a.iter().map(|&v| v as i64).collect()),
            _ => None,
        }
    }

    /// Float contents, converting any numeric type.
    pub fn as_f64_vec(&self) -> Option<Vec<f64>> {
        Some(match self {
            Tensor::F32(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::F64(a) => a.iter().copied().collect(),
            Tensor::F16(a) => a.iter().map(|v| v.to_f64()).collect(),
            Tensor::I64(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::I32(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::I8(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::U8(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::Bool(_) => return None,
        })
    }

    pub fn scalar_i64(v: i64) -> Tensor {
        Tensor::I64(ArrayD::from_elem(IxDyn(&[]), v))
    }

    pub fn vec_i64(v: Vec<i64>) -> Tensor {
        let n = v.len();
        Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"))
    }

    pub fn values_string(&self) -> String {
        with_any!(self, a => {
            let v: Vec<String> = a.iter().map(|x| format!("{x:?}")).collect();
            format!("[{}]", v.join(","))
        })
    }

    /// True if every element equals `v` (numeric types; false for bool).
    pub fn all_equal(&self, v: f64) -> bool {
        self.as_f64_vec()
            .is_some_and(|xs| xs.iter().all(|&x| x == v))
    }
}
