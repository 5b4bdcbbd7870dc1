//! Fusion: several operators become one that TensorRT runs better (a `LayerNormalization`,
//! one wider MatMul).

pub mod fuse_layernorm;
pub mod fuse_matmul;
