//! `merge-reshapes`: a chain of shape-only operators (Reshape, Flatten, Squeeze, Unsqueeze)
//! computes one reshape of the chain's input.
//!
//!   Reshape(R(x), s)  where R is shape-only and s has no 0   -> Reshape(x, s)
//!   R2(R1(x))         where R2's output shape is static      -> Reshape(x, shape of R2)
//!
//! `0` in a Reshape target copies a dimension of its own input, which the chain changed, so
//! such targets are only rewritten through the static-shape rule. The inner node stays while
//! something else reads it (dead-code removes it otherwise).

use crate::eval::Tensor;
use crate::ir::{Graph, NodeId, Port};
use crate::pass::pattern::{const_ints, static_shape};
use crate::pass::{Context, Outcome, Pass};

pub struct MergeReshapes;

impl Pass for MergeReshapes {
    fn name(&self) -> &'static str {
        "merge-reshapes"
    }
    fn about(&self) -> &'static str {
        "merge chains of Reshape/Flatten/Squeeze/Unsqueeze into one Reshape"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let mut merged = 0;
        for n in g.topo_ops() {
            if g.contains(n) && merge(g, n).is_some() {
                merged += 1;
            }
        }
        Ok(Outcome::changed(if merged > 0 {
            vec![format!("merged {merged} reshape chains")]
        } else {
            vec![]
        }))
    }
}

const SHAPE_ONLY: &[&str] = &["Reshape", "Flatten", "Squeeze", "Unsqueeze"];

fn shape_only(g: &Graph, n: NodeId) -> bool {
    SHAPE_ONLY.iter().any(|op| g.node(n).is(op))
}

fn merge(g: &mut Graph, outer: NodeId) -> Option<()> {
    if !shape_only(g, outer) {
        return None;
    }
    let mid = g.input(outer, 0)?;
    if !shape_only(g, mid.node) {
        return None;
    }
    let x = g.input(mid.node, 0)?;
    let out = Port::new(outer, 0);
    if g.node(outer).is("Reshape") {
        let spec = const_ints(g, g.input(outer, 1))?;
        if !spec.contains(&0) {
            // Same target, read from the chain's input.
            g.set_input(outer, 0, Some(x));
            return Some(());
        }
    }
    let shape = static_shape(g, out)?;
    let c = g.add_const("merged_shape", Tensor::vec_i64(shape).to_proto(""));
    let hint = g.node(outer).op()?.name.clone();
    let r = g.add_op(
        "Reshape",
        &format!("{hint}_merged"),
        &[Some(x), Some(Port::new(c, 0))],
        vec![],
        1,
    );
    g.value_mut(Port::new(r, 0)).ty = g.ty(out).cloned();
    g.replace_all_uses(out, Port::new(r, 0));
    g.remove_node(outer);
    Some(())
}
