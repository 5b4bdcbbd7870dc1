//! TensorRT: rewrites into operators that TensorRT builds correctly, where a TensorRT release
//! is known to miscompile the operator the exporter wrote.

pub mod gridsample_gather;

use crate::pass::Pass;

/// What to do with GridSample (`--gridsample`): keep TensorRT's own GridSample, or rewrite it
/// as gathers for the TensorRT releases that miscompile it (see `gridsample_gather`). `Keep`
/// stays the default until engines of both forms are measured on a GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GridSample {
    #[default]
    Keep,
    Gather,
}

impl GridSample {
    pub fn parse(s: &str) -> Result<GridSample, String> {
        match s {
            "keep" => Ok(GridSample::Keep),
            "gather" => Ok(GridSample::Gather),
            other => Err(format!("--gridsample {other}: expected keep or gather")),
        }
    }

    /// Adds `gridsample-gather` to `passes` for `Gather` (once; at the end, which the fixed
    /// point makes no worse than anywhere: it needs the static shapes the other passes find).
    pub fn apply_to(self, passes: &mut Vec<Box<dyn Pass>>) {
        let name = gridsample_gather::GridSampleGather.name();
        if self == GridSample::Gather && !passes.iter().any(|p| p.name() == name) {
            passes.push(Box::new(gridsample_gather::GridSampleGather));
        }
    }
}
