//! Precision: the element types the model computes in (float64 to float32, fp16, explicit
//! INT8/FP8 quantization), for a TensorRT that types its networks strictly.

pub mod float64_to_float32;
pub mod quantize;
pub mod to_fp16;
