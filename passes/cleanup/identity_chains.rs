//! `identity-chains`: the batch round trip that DETR's export puts in front of the backbone.
//!
//!   Concat_a(f(Split_a(x)[0]), ..., f(Split_a(x)[n-1])) -> x
//! where each f is a chain of no-ops (Squeeze/Unsqueeze pairs, Pad of zeros, Identity...), and
//! the Split outputs are used in order, each once.

use crate::ir::{Graph, Port};
use crate::pass::{Context, Outcome, Pass};

use super::eliminate_noops::noop_source;
use crate::tensor::attrs;

pub struct IdentityChains;

impl Pass for IdentityChains {
    fn name(&self) -> &'static str {
        "identity-chains"
    }
    fn about(&self) -> &'static str {
        "remove Split -> (no-ops) -> Concat round trips, e.g. DETR's batch padding chain"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let mut removed = 0;
        for n in g.topo_ops() {
            if !g.contains(n) || !g.node(n).is("Concat") {
                continue;
            }
            let Some(src) = round_trip_source(g, n) else {
                continue;
            };
            g.replace_all_uses(Port::new(n, 0), src);
            removed += 1;
        }
        Ok(Outcome::changed(if removed > 0 {
            vec![format!("removed {removed} Split/Concat round trips")]
        } else {
            vec![]
        }))
    }
}

/// Follows no-ops back from `p`, including Squeeze->Unsqueeze pairs that cancel.
fn strip(g: &Graph, mut p: Port) -> Port {
    for _ in 0..16 {
        if let Some(s) = noop_source(g, p.node) {
            p = s;
            continue;
        }
        // Unsqueeze(Squeeze(y, a), a) = y when y has size 1 on a.
        let node = g.node(p.node);
        if node.is("Unsqueeze") {
            if let Some(sq) = g.input(p.node, 0) {
                if g.node(sq.node).is("Squeeze") {
                    if let Some(y) = g.input(sq.node, 0) {
                        if g.ty(y).is_some_and(|t| t.static_shape().is_some()) && g.ty(y) == g.ty(p)
                        {
                            p = y;
                            continue;
                        }
                    }
                }
            }
        }
        break;
    }
    p
}

fn round_trip_source(g: &Graph, concat: crate::ir::NodeId) -> Option<Port> {
    let cat_axis = attrs::int(&g.node(concat).op()?.attrs, "axis")?;
    let ins = g.inputs(concat);
    let srcs: Vec<Port> = ins
        .iter()
        .map(|p| p.map(|p| strip(g, p)))
        .collect::<Option<_>>()?;
    let split = srcs.first()?.node;
    if !g.node(split).is("Split") || srcs.len() != g.node(split).outputs.len() {
        return None;
    }
    for (i, s) in srcs.iter().enumerate() {
        if s.node != split || s.slot != i {
            return None;
        }
    }
    let x = g.input(split, 0)?;
    let rank = g.ty(x)?.rank()?;
    let split_axis = attrs::int_or(&g.node(split).op()?.attrs, "axis", 0);
    if attrs::axis(split_axis, rank)? != attrs::axis(cat_axis, rank)? {
        return None;
    }
    // Same type in and out, so consumers see exactly what they saw.
    if g.ty(x) != g.ty(Port::new(concat, 0)) || g.ty(x)?.static_shape().is_none() {
        return None;
    }
    Some(x)
}
