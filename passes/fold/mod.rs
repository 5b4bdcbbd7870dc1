//! Folding: what is known at compile time is computed once. `infer-shapes` is here because
//! it and `fold-constants` feed each other (a folded shape types a tensor, a typed tensor
//! makes a `Shape` constant); `fold-batchnorm` and `fold-scale` fold constant affine factors
//! into the weights of the layer before them.

pub mod fold_batchnorm;
pub mod fold_constants;
pub mod fold_scale;
pub mod infer_shapes;
