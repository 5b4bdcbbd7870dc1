//! A small CPU evaluator for the operators that appear in the constant parts of detection
//! model exports (shape arithmetic, masks, position embeddings). It is the engine behind
//! constant folding; it is not a general runtime.

pub mod attrs;
pub mod ops;
pub mod tensor;

pub use ops::{eval_op, EvalError};
pub use tensor::Tensor;
