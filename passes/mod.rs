//! The passes, one file each. `registry()` lists them in default pipeline order.

pub mod cse;
pub mod dead_code;
pub mod eliminate_noops;
pub mod fold_batchnorm;
pub mod fold_constants;
pub mod infer_shapes;

use crate::pass::Pass;

/// The default pipeline, in order. It runs to a fixed point, so later passes feed earlier ones.
pub fn registry() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(infer_shapes::InferShapes),
        Box::new(fold_constants::FoldConstants),
        Box::new(eliminate_noops::EliminateNoops),
        Box::new(fold_batchnorm::FoldBatchNorm),
        Box::new(cse::Cse),
        Box::new(dead_code::DeadCode),
    ]
}

/// Names of all passes, in default order.
pub fn names() -> Vec<&'static str> {
    registry().iter().map(|p| p.name()).collect()
}

pub fn by_name(name: &str) -> Option<Box<dyn Pass>> {
    registry().into_iter().find(|p| p.name() == name)
}
