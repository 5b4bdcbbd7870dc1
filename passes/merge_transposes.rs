//! `merge-transposes`: two Transposes in a row are one.
//!
//!   Transpose(Transpose(x, p), q) -> Transpose(x, [p[q[0]], p[q[1]], ...])
//!
//! (an identity result is then removed by `eliminate-noops`). The inner Transpose stays while
//! something else reads it.

use crate::eval::attrs;
use crate::ir::{Graph, NodeId};
use crate::pass::pattern::{input_is, rank};
use crate::pass::{Context, Outcome, Pass};

pub struct MergeTransposes;

impl Pass for MergeTransposes {
    fn name(&self) -> &'static str {
        "merge-transposes"
    }
    fn about(&self) -> &'static str {
        "compose consecutive Transposes into one"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let mut merged = 0;
        for n in g.topo_ops() {
            if g.contains(n) && merge(g, n).is_some() {
                merged += 1;
            }
        }
        Ok(Outcome::changed(if merged > 0 {
            vec![format!("composed {merged} Transpose pairs")]
        } else {
            vec![]
        }))
    }
}

/// The permutation of a Transpose (reversal when the attribute is absent), checked.
fn perm(g: &Graph, n: NodeId) -> Option<Vec<usize>> {
    let r = rank(g, g.input(n, 0)?)?;
    let p: Vec<usize> = match attrs::ints(&g.node(n).op()?.attrs, "perm") {
        Some(p) => p
            .iter()
            .map(|&a| attrs::axis(a, r))
            .collect::<Option<_>>()?,
        None => (0..r).rev().collect(),
    };
    let mut seen = p.clone();
    seen.sort_unstable();
    (seen == (0..r).collect::<Vec<_>>()).then_some(p)
}

fn merge(g: &mut Graph, outer: NodeId) -> Option<()> {
    if !g.node(outer).is("Transpose") {
        return None;
    }
    let inner = input_is(g, outer, 0, "Transpose")?;
    let (p, q) = (perm(g, inner)?, perm(g, outer)?);
    let x = g.input(inner, 0)?;
    let composed: Vec<i64> = q.iter().map(|&i| p[i] as i64).collect();
    let op = g.node_mut(outer).op_mut()?;
    op.attrs.retain(|a| a.name.as_deref() != Some("perm"));
    op.attrs.push(attrs::make_ints("perm", composed));
    g.set_input(outer, 0, Some(x));
    Some(())
}
