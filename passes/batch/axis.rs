//! The vocabulary both walks share: where a tensor carries the batch (`BatchAxis`), the
//! rewrites the walks ask for (`Fix`), the state they fill (`Analysis`), and how a Reshape
//! moves the batch (`reshape_follow`), which the forward walk reads one way and the backward
//! walk the other.

use std::collections::HashMap;

use crate::analysis::typing::small_const;
use crate::ir::{Graph, NodeId, Port, TensorType};
use crate::ops::{self, Axes};

/// Where a tensor carries the batch: `axis`, whose size is `outer * batch * m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BatchAxis {
    pub axis: usize,
    /// A static factor in front of the batch within the axis (`[L*B]` after attention's
    /// `transpose(0, 1).view(L * B, C)`): the axis size is `outer * batch * m`.
    pub outer: i64,
    pub m: i64,
}

impl BatchAxis {
    pub(super) fn size(&self, b: i64) -> i64 {
        self.outer * b * self.m
    }
}

/// A rewrite that a shape constant needs, found by the forward rules.
#[derive(Debug, Clone)]
pub(super) enum Fix {
    /// Reshape whose output axis `j` carries the batch (input axis `i`).
    Reshape {
        node: NodeId,
        from: BatchAxis,
        to: BatchAxis,
    },
    /// Expand whose shape entry `k` must be 1 (the input carries the batch) or N*m (source).
    Expand {
        node: NodeId,
        k: usize,
        m: Option<i64>,
    },
    /// Tile whose repeat at `axis` must be N*m (the input has size 1 there).
    Tile { node: NodeId, axis: usize, m: i64 },
    /// ConstantOfShape whose shape entry `axis` must be N*m.
    ConstantOfShape { node: NodeId, axis: usize, m: i64 },
    /// Slice whose end on the batch axis was the traced batch.
    SliceEnd { node: NodeId, k: usize },
    /// A value without the batch that must carry it (an Unsqueeze of the unit batch axis at
    /// batch 1): expanded to the batch after its producer.
    ExpandOutput { port: Port, ba: BatchAxis },
    /// Resize with `sizes` holding the batch at `axis`.
    ResizeSizes { node: NodeId, axis: usize, m: i64 },
    /// ScatterND whose constant indices address image `b` at batch coordinate `b` and are
    /// otherwise the same for every image.
    /// The batch is on `axis` of the data and `updates_axis` of the updates; the ranks are
    /// read before any rewrite retypes the inputs.
    ScatterNd {
        node: NodeId,
        rank: usize,
        axis: usize,
        updates_rank: usize,
        updates_axis: usize,
    },
}

/// What the walks know so far, at the traced batch `b`.
pub(super) struct Analysis {
    pub(super) b: i64,
    pub(super) batch: HashMap<Port, BatchAxis>,
    pub(super) fixes: Vec<Fix>,
    /// Required batch axes that could not be derived forward, by the port they start at.
    pub(super) reqs: Vec<(Port, BatchAxis, String)>,
}

pub(super) fn shape(g: &Graph, p: Port) -> Option<Vec<i64>> {
    g.ty(p).and_then(TensorType::static_shape)
}

pub(super) fn name_of(g: &Graph, n: NodeId) -> String {
    g.node(n).display_name()
}

pub(super) fn ints_input(g: &Graph, n: NodeId, slot: usize) -> Option<Vec<i64>> {
    small_const(g, g.input(n, slot)).and_then(|t| t.as_i64_vec())
}

/// How `op` maps its axes, as the registry says ([`Axes::Other`] for an unknown op).
pub(super) fn axes(op: &str) -> Axes {
    ops::rule(op).map_or(Axes::Other, |r| r.axes)
}

/// Output axis k of `op` is its input 0's axis k.
pub(super) fn positional(op: &str) -> bool {
    ops::rule(op).is_some_and(|r| r.positional)
}

pub(super) fn product(v: &[i64]) -> i64 {
    v.iter().product()
}

/// Where a Reshape from `a` to `out` puts the batch of `ba` (an axis of `a`): the output axis
/// whose row-major span holds the batch factor, as `outer * batch * m`. Candidates with the
/// batch leading their axis win, then an axis of the same size (at batch 1 a unit axis is
/// where the batch was), then one that does not merge it into a row's channels, then the
/// smallest factor.
pub(super) fn reshape_follow(a: &[i64], out: &[i64], ba: BatchAxis, b: i64) -> Option<BatchAxis> {
    let before = product(&a[..ba.axis]).checked_mul(ba.outer)?;
    let mut cands = Vec::new();
    for j in 0..out.len() {
        let pre = product(&out[..j]);
        if pre == 0 || before % pre != 0 {
            continue;
        }
        let outer = before / pre;
        if out[j] % (outer * b) != 0 || out[j] < outer * b {
            continue;
        }
        cands.push(BatchAxis {
            axis: j,
            outer,
            m: out[j] / (outer * b),
        });
    }
    // At batch 1 several axes fit; the flatten of rows for a Gemm (`[L, B, C] -> [L*B, C]`)
    // keeps everything after the batch intact, the attention head split does not.
    // Merged heads (`[L, B*h, d] -> [L*B, C]`) go back to the channels.
    let rows_kept = |c: &BatchAxis| c.m == 1 && (out[c.axis + 1..] == a[ba.axis + 1..] || ba.m > 1);
    // The batch alone on an axis of the same size stays there.
    let kept = |c: &BatchAxis| out[c.axis] == a[ba.axis] && c.outer == ba.outer && c.outer == 1;
    // At batch 1 `[L, 1, h, d] -> [L, h*d]` fits the batch into the rows (`L*B`, the out-proj
    // of attention) or into the last axis with everything after it; the channels of a row
    // never hold images.
    let into_features = |c: &BatchAxis| {
        c.axis + 1 == out.len()
            && ba.axis + 1 < a.len()
            && c.outer == 1
            && c.m == product(&a[ba.axis + 1..])
    };
    cands.into_iter().min_by_key(|c| {
        (
            !rows_kept(c),
            !kept(c),
            into_features(c),
            c.outer != 1,
            out[c.axis] != a[ba.axis] || c.outer != ba.outer,
            c.m,
            c.axis,
        )
    })
}

impl Analysis {
    pub(super) fn get(&self, p: Option<Port>) -> Option<BatchAxis> {
        p.and_then(|p| self.batch.get(&p).copied())
    }

    pub(super) fn require(&mut self, p: Port, ax: BatchAxis, why: String) {
        if !self.batch.contains_key(&p) {
            self.reqs.push((p, ax, why));
        }
    }
}

/// Why the batch could not be generalised, and at which node when one is to blame: the
/// driver reports it (stderr, `--json`) and compiles the model as declared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GiveUp {
    /// The node's name (its first output's, for an unnamed operator).
    pub node: Option<String>,
    /// Its operator type (`initializer`, `input` for a value without an operator).
    pub op: Option<String>,
    pub reason: String,
    /// How the node is named in the message: `Tile '/x/Tile'` in front of the reason.
    #[serde(skip)]
    shown: Option<String>,
}

impl GiveUp {
    /// At node `n`: the message reads `Op 'name': reason`.
    pub(super) fn at(g: &Graph, n: NodeId, reason: impl Into<String>) -> Self {
        let mut e = Self::about(g, n, reason);
        e.shown = Some(name_of(g, n));
        e
    }

    /// Blames node `n`, the reason naming what it needs itself.
    pub(super) fn about(g: &Graph, n: NodeId, reason: impl Into<String>) -> Self {
        let node = g.node(n);
        let (op, name) = match &node.kind {
            crate::ir::NodeKind::Op(op) if !op.name.is_empty() => {
                (op.op_type.clone(), op.name.clone())
            }
            crate::ir::NodeKind::Op(op) => (op.op_type.clone(), node.outputs[0].name.clone()),
            crate::ir::NodeKind::Input(_) => ("input".into(), node.outputs[0].name.clone()),
            crate::ir::NodeKind::Const { .. } => {
                ("initializer".into(), node.outputs[0].name.clone())
            }
        };
        Self {
            node: Some(name),
            op: Some(op),
            reason: reason.into(),
            shown: None,
        }
    }
}

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shown {
            Some(s) => write!(f, "{s}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl From<String> for GiveUp {
    fn from(reason: String) -> Self {
        Self {
            node: None,
            op: None,
            reason,
            shown: None,
        }
    }
}

impl From<&str> for GiveUp {
    fn from(reason: &str) -> Self {
        reason.to_string().into()
    }
}
