//! Which of onnxruntime's own graph rewrites a verification run lets it apply, and a record of
//! the ones it did apply.
//!
//! A verification must execute the graph detrc wrote. onnxruntime rewrites every graph it
//! loads, and a pattern fusion (GELU, LayerNorm, attention, MatMul+Add into Gemm, ...) replaces
//! the nodes it matches with one kernel of its own: if detrc rewrote such a subgraph wrongly and
//! the fusion still matched it, both models would run the same kernel and the bug would not
//! show. Since 1.2x some of these run at the *basic* level too (measured on 1.31: GeluFusionL1,
//! LayerNormFusionL1, MatMulAddFusion, ReshapeFusion), so no level is free of them.
//!
//! `--verify` therefore runs at the *layout* level, for the NCHWc convolution kernels that make
//! onnxruntime fast on a ResNet backbone (0.45 s against 0.69 s per DETR-R50 inference here),
//! with every fusion switched off by name (`optimization.disable_specified_optimizers`). What
//! stays is [`KEPT`]: evaluating constant subgraphs, removing nodes that do nothing, and the
//! NCHWc layout. The session logs each transformer that changed the graph; [`Record`] collects
//! them, so a verification states what onnxruntime did, and a transformer detrc does not know
//! (a newer onnxruntime) is reported instead of trusted.

use std::sync::{Arc, Mutex};

/// Transformers a verification session may run. Each computes what the graph already says:
/// - `ConstantFolding`, `ConstantSharing`, `CommonSubexpressionElimination`: evaluate constant
///   subgraphs with onnxruntime's own kernels, share equal constants and equal subexpressions;
/// - `Level1_RuleBasedTransformer`: its rules remove Identity, Dropout, no-op Slice, Unsqueeze,
///   Expand and Cast nodes and fold a constant BatchNorm/Add/Mul into the Conv before it;
/// - `NchwcTransformer`: runs Conv and pooling in the blocked NCHWc layout, with a Relu or an
///   Add of equal shape right after a Conv done in the same kernel: the same arithmetic in
///   another memory order;
/// - `MemcpyTransformer`, `FreeDimensionOverrideTransformer`, `EnsureUniqueDQForNodeUnit`:
///   placement and bookkeeping that leave the computation as it is.
pub const KEPT: &[&str] = &[
    "ConstantFolding",
    "ConstantSharing",
    "CommonSubexpressionElimination",
    "Level1_RuleBasedTransformer",
    "NchwcTransformer",
    "MemcpyTransformer",
    "FreeDimensionOverrideTransformer",
    "EnsureUniqueDQForNodeUnit",
];

/// Every other transformer onnxruntime 1.31 registers for the CPU at the layout level, switched
/// off for verification: pattern fusions into contrib kernels, Q/DQ fusions into quantized
/// kernels, cast rewrites, and the transpose and NHWC layout rewrites (not needed for speed on
/// DETR, and a rewrite across many nodes).
pub const DISABLED: &[&str] = &[
    // basic level
    "GeluFusionL1",
    "LayerNormFusionL1",
    "MatMulAddFusion",
    "ReshapeFusion",
    "SliceConcatToSpaceToDepthFusion",
    "CastFloat16Transformer",
    "RemoveDuplicateCastTransformer",
    "TransposeOptimizer",
    "DoubleQDQPairsRemover",
    "QDQPropagationTransformer",
    "WeightBiasQuantization",
    "WhereDummyDq",
    // extended level
    "AttentionFusion",
    "BiasDropoutFusion",
    "BiasGeluFusion",
    "BiasSkipLayerNormFusion",
    "BiasSoftmaxFusion",
    "ConvActivationFusion",
    "DynamicQuantizeMatMulFusion",
    "EmbedLayerNormFusion",
    "FastGeluFusion",
    "GatherSliceToSplitFusion",
    "GatherToSliceFusion",
    "GeluFusionL2",
    "GemmActivationFusion",
    "GroupQueryAttentionFusion",
    "GroupQueryAttentionPreNormFusion",
    "LayerNormFusionL2",
    "Level2_RuleBasedTransformer",
    "MatMulActivationFusion",
    "MatMulIntegerToFloatFusion",
    "MatMulNBitsFusion",
    "MatMulScaleFusion",
    "MatmulTransposeFusion",
    "QDQFinalCleanupTransformer",
    "QDQS8ToU8Transformer",
    "QDQSelectorActionTransformer",
    "QuickGeluFusion",
    "SimplifiedLayerNormFusion",
    "SkipLayerNormFusion",
    "TransposeOptimizer_CPUExecutionProvider",
    // layout level
    "ConvAddActivationFusion",
    "NhwcTransformer",
];

/// The value of `optimization.disable_specified_optimizers`.
pub fn disabled_list() -> String {
    DISABLED.join(";")
}

/// What one session's graph optimisation did, from its log.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// Transformers that changed the graph, in the order they first did.
    pub changed: Vec<String>,
    /// Transformers that ran (changed the graph or not) and are in neither [`KEPT`] nor
    /// [`DISABLED`]: an onnxruntime newer than the one these lists were made for.
    pub unknown: Vec<String>,
}

impl Applied {
    /// Transformers outside [`KEPT`] that changed the graph: nothing, unless the library is
    /// one these lists were not made for.
    pub fn untrusted(&self) -> Vec<&str> {
        self.changed
            .iter()
            .map(String::as_str)
            .filter(|n| !KEPT.contains(n))
            .collect()
    }

    /// Adds another session's record (a verification loads two models).
    pub fn merge(&mut self, other: &Applied) {
        for n in &other.changed {
            if !self.changed.contains(n) {
                self.changed.push(n.clone());
            }
        }
        for n in &other.unknown {
            if !self.unknown.contains(n) {
                self.unknown.push(n.clone());
            }
        }
    }
}

/// Collects a session's transformer log lines while it is created.
#[derive(Clone, Default)]
pub struct Record(Arc<Mutex<Applied>>);

impl Record {
    /// Reads one log message; onnxruntime writes `GraphTransformer NAME modified: N with
    /// status: OK` after each transformer pass (at the info level).
    pub fn observe(&self, message: &str) {
        let Some((name, changed)) = parse(message) else {
            return;
        };
        let mut a = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if changed && !a.changed.iter().any(|n| n == name) {
            a.changed.push(name.to_string());
        }
        let known = KEPT.contains(&name) || DISABLED.contains(&name);
        if !known && !a.unknown.iter().any(|n| n == name) {
            a.unknown.push(name.to_string());
        }
    }

    pub fn take(&self) -> Applied {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn parse(message: &str) -> Option<(&str, bool)> {
    let rest = message.trim().strip_prefix("GraphTransformer ")?;
    let (name, rest) = rest.split_once(' ')?;
    let n = rest.strip_prefix("modified: ")?;
    let changed = n.split_whitespace().next()? != "0";
    Some((name, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_transformer_lines() {
        let r = Record::default();
        r.observe("GraphTransformer NchwcTransformer modified: 1 with status: OK");
        r.observe("GraphTransformer ConstantFolding modified: 0 with status: OK");
        r.observe("GraphTransformer FancyNewFusion modified: 1 with status: OK");
        r.observe("Session successfully initialized.");
        let a = r.take();
        assert_eq!(a.changed, ["NchwcTransformer", "FancyNewFusion"]);
        assert_eq!(a.unknown, ["FancyNewFusion"]);
        assert_eq!(a.untrusted(), ["FancyNewFusion"]);
    }

    #[test]
    fn lists_are_disjoint() {
        for k in KEPT {
            assert!(!DISABLED.contains(k), "{k} is both kept and disabled");
        }
    }
}
