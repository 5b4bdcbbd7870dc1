//! `infer-shapes`: element type and shape of every tensor, from the graph inputs forward.
//!
//! Rules cover the operators of DETR and common CNN exports. Where a shape depends on a
//! tensor's value (Reshape targets, Slice bounds, Expand shapes…) that value must be a
//! constant, so this pass and `fold-constants` feed each other until both reach a fixed point.

use crate::analysis::typing::{infer_node, type_unruled};
use crate::ir::Graph;
use crate::pass::{Context, Outcome, Pass};

pub struct InferShapes;

impl Pass for InferShapes {
    fn name(&self) -> &'static str {
        "infer-shapes"
    }
    fn about(&self) -> &'static str {
        "infer element types and shapes of all tensors"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let mut updated = 0;
        for n in g.topo_ops() {
            updated += infer_node(g, n);
        }
        updated += type_unruled(g);
        Ok(Outcome::changed(if updated > 0 {
            vec![format!("typed {updated} tensors")]
        } else {
            vec![]
        }))
    }
}
