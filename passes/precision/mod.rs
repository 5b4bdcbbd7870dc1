//! Precision: the element types the model computes in (float64 to float32, fp16, explicit
//! INT8/FP8 quantization), for a TensorRT that types its networks strictly.

pub mod float64_to_float32;
pub mod fp16_storage;
pub mod quantize;
pub mod to_fp16;

/// Numeric precision of the network handed to TensorRT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Fp32,
    /// The model goes through the `to-fp16` pass first (TensorRT-RTX is strongly typed: there
    /// is no fp16 builder flag).
    Fp16,
    /// INT8 through explicit Q/DQ nodes: the model is calibrated and quantized first unless it
    /// has Q/DQ nodes already (see `detrc quantize`).
    Int8,
    /// FP8 E4M3 through explicit Q/DQ nodes (opset 19), as for int8; Ada (sm89) or newer:
    /// TensorRT-RTX 1.7 refuses FP8 for sm80/sm86 (measured, docs/int8.md).
    Fp8,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
            Precision::Fp8 => "fp8",
        }
    }

    /// The Q/DQ format of a quantized precision.
    pub fn quant_format(self) -> Option<super::quantize::Format> {
        match self {
            Precision::Int8 => Some(super::quantize::Format::Int8),
            Precision::Fp8 => Some(super::quantize::Format::Fp8),
            _ => None,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(Precision::Fp32),
            "fp16" | "f16" | "float16" | "half" => Ok(Precision::Fp16),
            "int8" | "i8" => Ok(Precision::Int8),
            "fp8" | "f8" | "e4m3" => Ok(Precision::Fp8),
            _ => Err(format!(
                "unknown precision {s:?}; use fp32, fp16, int8 or fp8"
            )),
        }
    }
}
