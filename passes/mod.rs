//! The passes, one file per pass, grouped by purpose in folders:
//! - `fold/`: compile-time computation: `infer-shapes`, `fold-constants`, `fold-batchnorm`,
//!   `fold-scale`;
//! - `fuse/`: several operators become one: `fuse-layernorm`, `fuse-matmul`;
//! - `cleanup/`: operators removed or simplified: `eliminate-noops`, `identity-chains`,
//!   `dead-code`, `cse`, `canonicalize-gather`, `slice-concat`;
//! - `detr/`: the DETR-specific passes: `fold-mask`, `prune-aux-heads`;
//! - `precision/`: the element types computed in: `float64-to-float32`, `to-fp16`, `quantize`;
//! - `batch/`: `generalize-batch`, one pass in several files (its module doc says why);
//! - `tensorrt/`: rewrites for TensorRT releases that miscompile an operator:
//!   `gridsample-gather`.
//!
//! `registry()` lists the default pipeline in order, which mixes the groups: a group says
//! what a pass is for, not when it runs.

pub mod batch;
pub mod cleanup;
pub mod detr;
pub mod fold;
pub mod fuse;
pub mod precision;
pub mod tensorrt;

// Each pass keeps the path it had as one file in `passes/` (`passes::cse`, ...): the driver,
// the build and quantize modules, the tests and the Python package name them that way.
pub use batch as generalize_batch;
pub use cleanup::{
    canonicalize_gather, cse, dead_code, eliminate_noops, identity_chains, slice_concat,
};
pub use detr::{fold_mask, prune_aux_heads};
pub use fold::{fold_batchnorm, fold_constants, fold_scale, infer_shapes};
pub use fuse::{fuse_layernorm, fuse_matmul};
pub use precision::{float64_to_float32, quantize, to_fp16};
pub use tensorrt::gridsample_gather;

use crate::pass::Pass;

/// The default pipeline, in order. It runs to a fixed point, so later passes feed earlier ones.
pub fn registry() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(fold::infer_shapes::InferShapes),
        Box::new(detr::fold_mask::FoldMask),
        Box::new(fold::fold_constants::FoldConstants),
        Box::new(fuse::fuse_layernorm::FuseLayerNorm),
        Box::new(detr::prune_aux_heads::PruneAuxHeads),
        Box::new(cleanup::canonicalize_gather::CanonicalizeGather),
        Box::new(cleanup::identity_chains::IdentityChains),
        Box::new(cleanup::eliminate_noops::EliminateNoops),
        Box::new(fold::fold_batchnorm::FoldBatchNorm),
        Box::new(fold::fold_scale::FoldScale),
        Box::new(fuse::fuse_matmul::FuseMatMul),
        Box::new(cleanup::cse::Cse),
        Box::new(cleanup::dead_code::DeadCode),
        // Last: the float-to-float Casts it leaves go in eliminate-noops' next round.
        Box::new(precision::float64_to_float32::Float64ToFloat32),
        // Any place in the order would do (the pipeline runs to a fixed point); last, the
        // snapshots of the passes before it keep their numbers.
        Box::new(cleanup::slice_concat::SliceConcat),
    ]
}

/// Every pass, including those not in the default pipeline.
pub fn all() -> Vec<Box<dyn Pass>> {
    let mut v = registry();
    v.push(Box::new(precision::to_fp16::ToFp16::default()));
    v.push(Box::new(batch::GeneralizeBatch));
    v.push(Box::new(tensorrt::gridsample_gather::GridSampleGather));
    v
}

/// Names of all passes, in default order.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|p| p.name()).collect()
}

pub fn by_name(name: &str) -> Option<Box<dyn Pass>> {
    all().into_iter().find(|p| p.name() == name)
}

/// The passes `--passes ONLY --skip SKIP` name: `only` in its order (the default pipeline when
/// `None`), less those in `skip`. An unknown name in either list is an error listing the valid
/// ones, so a typo never silently runs a different pipeline.
pub fn select(only: Option<&[String]>, skip: &[String]) -> crate::Result<Vec<Box<dyn Pass>>> {
    let valid = names();
    let unknown = |n: &str| crate::Error::UnknownPass {
        name: n.to_string(),
        valid: valid.join(", "),
    };
    if let Some(n) = skip.iter().find(|n| !valid.contains(&n.as_str())) {
        return Err(unknown(n));
    }
    let passes = match only {
        Some(list) => list
            .iter()
            .map(|n| by_name(n).ok_or_else(|| unknown(n)))
            .collect::<crate::Result<Vec<_>>>()?,
        None => registry(),
    };
    Ok(passes
        .into_iter()
        .filter(|p| !skip.iter().any(|s| s == p.name()))
        .collect())
}
