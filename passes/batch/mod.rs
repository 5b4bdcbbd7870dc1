//! `generalize-batch`: makes the batch dimension of a static-shape model symbolic.
//!
//! Exports bake the traced batch size B into constants: Reshape targets (`[2, 256, 400]`),
//! Expand/Tile/ConstantOfShape shapes, folded tensors that hold one copy per image (DETR's
//! position embedding after `fold-mask`, the decoder's zero queries). A model compiled at a
//! static batch B therefore holds every batch dependence as a constant, and this pass finds
//! them by following the batch dimension, not by looking at values equal to B:
//!
//! 1. forward: from the graph inputs' axis 0, every operator's rule says which output axis
//!    carries the batch and with what factor m (the attention head split makes `B*heads`, a
//!    merged dimension with the batch as its major factor);
//! 2. backward: where a batch tensor meets one without the batch in an operator that does not
//!    broadcast (a Concat, a MatMul of `heads` against `B*heads`), the other side must carry
//!    it too; the requirement is followed up to its source (a constant, a ConstantOfShape, an
//!    Expand or Tile of a size-1 axis). Both steps repeat until nothing new is found;
//! 3. rewrite: shape constants get 0/-1 or a shape computed from `Shape(input)`, and per-image
//!    constants whose images are identical shrink to one image (broadcast) or are expanded.
//!
//! Every change is checked by evaluating its shape rule at another batch size, and any batch
//! dependence without a rule (an operator that reduces, sorts or indexes over the batch) is an
//! error naming the node: the pass never guesses. The driver verifies the result numerically
//! at several batch sizes.
//!
//! The steps, one file each: `axis` holds what they share (the batch axis, the fixes, the
//! analysis state); `forward` and `backward` are steps 1 and 2, which `analyse` repeats
//! to a fixed point; `rewrite` and `per_image` are step 3, for shape constants and for
//! per-image constants.
//!
//! The folder is named `batch` like the other groups of passes (`cleanup`, `fold`, ...), for
//! what its pass changes; `passes::generalize_batch`, the pass's path when it was one file,
//! is re-exported by `passes/mod.rs` for the driver and the tests.

mod axis;
mod backward;
mod batch_size;
mod forward;
mod per_image;
mod rewrite;

use std::collections::{HashMap, HashSet};

use crate::ir::{Graph, Port};
use crate::pass::{Context, Outcome, Pass};

use crate::analysis::batch::{already_symbolic, batch_inputs, static_batch};

pub use axis::GiveUp;
use axis::{shape, Analysis, Fix};
use batch_size::NSource;

pub use axis::BatchAxis;

pub struct GeneralizeBatch;

impl Pass for GeneralizeBatch {
    fn name(&self) -> &'static str {
        "generalize-batch"
    }
    fn about(&self) -> &'static str {
        "make a static batch symbolic: batch-baked shapes and per-image constants generalised"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        // The pipeline runs to a fixed point: once the batch is symbolic there is nothing
        // left to generalise, which is not the "no static batch" error of a first run.
        if already_symbolic(g) {
            return Ok(Outcome::Unchanged);
        }
        generalize(g)
            .map(Outcome::changed)
            .map_err(|e| e.to_string())
    }
}

/// Runs forward and backward to a fixed point on a graph with static shapes at batch `b`.
fn analyse(g: &Graph, b: i64) -> Result<Analysis, GiveUp> {
    let mut sources: Vec<(Port, BatchAxis)> = Vec::new();
    for round in 0..64 {
        let mut an = Analysis {
            b,
            batch: HashMap::new(),
            fixes: Vec::new(),
            reqs: Vec::new(),
        };
        for n in batch_inputs(g) {
            an.batch.insert(
                Port::new(n, 0),
                BatchAxis {
                    axis: 0,
                    m: 1,
                    outer: 1,
                },
            );
        }
        for &(p, ba) in &sources {
            an.batch.insert(p, ba);
        }
        for n in g.topo_ops() {
            let outs = an.forward(g, n)?;
            for (s, o) in outs.into_iter().enumerate() {
                let p = Port::new(n, s);
                if o.is_none() {
                    // A source the backward step found in an operator that does not create
                    // the batch itself: its value is the same for every image.
                    if let Some(&ba) = an.batch.get(&p) {
                        if g.node(n).is("Unsqueeze") {
                            an.fixes.push(Fix::ExpandOutput { port: p, ba });
                        }
                    }
                }
                if let Some(o) = o {
                    let p = Port::new(n, s);
                    if shape(g, p).and_then(|v| v.get(o.axis).copied()) != Some(o.size(b)) {
                        return Err(GiveUp::at(
                            g,
                            n,
                            format!(
                                "output '{}' would carry the batch on axis {} but that axis \
                                 is not a multiple of {b}",
                                g.value(p).name,
                                o.axis
                            ),
                        ));
                    }
                    an.batch.insert(p, o);
                }
            }
        }
        if an.reqs.is_empty() {
            return Ok(an);
        }
        let reqs = std::mem::take(&mut an.reqs);
        let first = reqs[0].clone();
        let before = sources.len();
        let mut seen = HashSet::new();
        for (p, ba, why) in reqs {
            an.backward(g, p, ba, &why, &mut seen, &mut sources)?;
        }
        sources.sort();
        sources.dedup();
        if sources.len() == before {
            return Err(GiveUp::about(
                g,
                first.0.node,
                format!(
                    "'{}' must carry the batch ({}), but no source for it was found (round \
                     {round})",
                    g.value(first.0).name,
                    first.2
                ),
            ));
        }
    }
    Err("the batch analysis does not converge".into())
}

/// The whole rewrite. Returns one line per change, saying why.
pub fn generalize(g: &mut Graph) -> Result<Vec<String>, GiveUp> {
    let b = static_batch(g)?;
    crate::analysis::typing::type_unruled(g);
    let an = analyse(g, b)?;
    // Each image's outputs must be one contiguous slice (`[B*h, ...]` with the batch as the
    // major factor is). A batch behind another factor (`[1, Q*B, C]`, images interleaved)
    // means the export lost the per-image layout, e.g. a Transpose of the unit batch axis
    // turned into a Reshape at batch 1 (onnxslim does this), which no rewrite brings back.
    for o in &g.outputs {
        if let Some(ba) = an.batch.get(&o.src) {
            if ba.outer != 1 {
                return Err(GiveUp::at(
                    g,
                    o.src.node,
                    format!(
                        "output '{}' would hold the batch merged into axis {} with a factor of \
                         {} (images interleaved, not one slice per image): the traced graph \
                         lost its per-image layout at batch {b}",
                        o.name, ba.axis, ba.outer
                    ),
                ));
            }
        }
    }
    let first_input = *batch_inputs(g).first().ok_or("no batch input")?;
    let input_name = g.node(first_input).outputs[0].name.clone();
    let mut ns = NSource {
        n: None,
        input: Port::new(first_input, 0),
    };
    let mut lines = Vec::new();
    rewrite::apply_fixes(g, &an, &mut ns, &input_name, &mut lines)?;
    per_image::per_image_constants(g, &an, &mut ns, &input_name, &mut lines)?;
    // Interface and types: the batch becomes symbolic, inner types are inferred again.
    rewrite::retype(g, &an)?;
    g.remove_dead();
    if lines.is_empty() {
        lines.push(format!(
            "batch {b} made symbolic; no batch-baked value found"
        ));
    } else {
        lines.insert(
            0,
            format!(
                "batch {b} made symbolic ({} values generalised)",
                lines.len()
            ),
        );
    }
    Ok(lines)
}
