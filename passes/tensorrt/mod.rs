//! TensorRT: rewrites into operators that TensorRT builds correctly, where a TensorRT release
//! is known to miscompile the operator the exporter wrote.

pub mod gridsample_gather;
