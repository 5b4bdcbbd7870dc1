//! The passes, one file each. `registry()` lists them in default pipeline order.

pub mod batch;
pub mod canonicalize_gather;
pub mod cse;
pub mod dead_code;
pub mod eliminate_noops;
pub mod float64_to_float32;
pub mod fold_batchnorm;
pub mod fold_constants;
pub mod fold_mask;
pub mod fold_scale;
pub mod fuse_layernorm;
pub mod fuse_matmul;
pub mod identity_chains;
pub mod infer_shapes;
pub mod prune_aux_heads;
pub mod quantize;
pub mod to_fp16;

// The pass's file name before it became a folder; the driver and the tests use this path.
pub use batch as generalize_batch;

use crate::pass::Pass;

/// The default pipeline, in order. It runs to a fixed point, so later passes feed earlier ones.
pub fn registry() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(infer_shapes::InferShapes),
        Box::new(fold_mask::FoldMask),
        Box::new(fold_constants::FoldConstants),
        Box::new(fuse_layernorm::FuseLayerNorm),
        Box::new(prune_aux_heads::PruneAuxHeads),
        Box::new(canonicalize_gather::CanonicalizeGather),
        Box::new(identity_chains::IdentityChains),
        Box::new(eliminate_noops::EliminateNoops),
        Box::new(fold_batchnorm::FoldBatchNorm),
        Box::new(fold_scale::FoldScale),
        Box::new(fuse_matmul::FuseMatMul),
        Box::new(cse::Cse),
        Box::new(dead_code::DeadCode),
        // Last: the float-to-float Casts it leaves go in eliminate-noops' next round.
        Box::new(float64_to_float32::Float64ToFloat32),
    ]
}

/// Every pass, including those not in the default pipeline.
pub fn all() -> Vec<Box<dyn Pass>> {
    let mut v = registry();
    v.push(Box::new(to_fp16::ToFp16::default()));
    v.push(Box::new(batch::GeneralizeBatch));
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
