//! `canonicalize-gather`: constant Gather indices in their plainest form.
//!
//!   Gather(x, k < 0) on a static axis of size n -> Gather(x, k + n)
//!   Gather(x, 0) with a scalar index on an axis of size 1 -> Squeeze(x, axis)
//! Negative indices are where TensorRT has produced all-zero outputs for DETR's last-layer
//! selection; a non-negative index, or no Gather at all, avoids that code path.

use crate::ir::{Graph, Port, TensorType};
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::{attrs, Tensor};

pub struct CanonicalizeGather;

impl Pass for CanonicalizeGather {
    fn name(&self) -> &'static str {
        "canonicalize-gather"
    }
    fn about(&self) -> &'static str {
        "make constant negative Gather indices non-negative; single-index Gather on a size-1 axis becomes Squeeze"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let (mut fixed, mut squeezed) = (0, 0);
        for n in g.topo_ops() {
            if !g.node(n).is("Gather") {
                continue;
            }
            let (Some(data), Some(idx)) = (g.input(n, 0), g.input(n, 1)) else {
                continue;
            };
            let Some(dims) = g.ty(data).and_then(TensorType::static_shape) else {
                continue;
            };
            let Some(op) = g.node(n).op() else { continue };
            let Some(axis) = attrs::axis(attrs::int_or(&op.attrs, "axis", 0), dims.len()) else {
                continue;
            };
            let Some(t) = g.const_tensor(idx).cloned() else {
                continue;
            };
            let Ok(val) = Tensor::from_proto(&t) else {
                continue;
            };
            let Some(ks) = val.as_i64_vec() else { continue };
            let size = dims[axis];
            if ks.iter().any(|&k| k < -size || k >= size) {
                continue; // out of range: leave it for the runtime to report
            }
            if t.dims.is_empty() && size == 1 {
                let id = g.add_squeeze(data, axis, "detrc_gather");
                let ty = g.ty(Port::new(n, 0)).cloned();
                g.node_mut(id).outputs[0].ty = ty;
                g.replace_all_uses(Port::new(n, 0), Port::new(id, 0));
                g.remove_node(n);
                squeezed += 1;
                continue;
            }
            if ks.iter().all(|&k| k >= 0) {
                continue;
            }
            let pos: Vec<i64> = ks
                .iter()
                .map(|&k| if k < 0 { k + size } else { k })
                .collect();
            let new =
                crate::ops::cast(&Tensor::vec_i64(pos), val.dtype()).map_err(|e| e.to_string())?;
            let shaped = match new {
                Tensor::I64(a) => Tensor::I64(
                    a.into_shape_with_order(val.shape())
                        .map_err(|e| e.to_string())?,
                ),
                Tensor::I32(a) => Tensor::I32(
                    a.into_shape_with_order(val.shape())
                        .map_err(|e| e.to_string())?,
                ),
                _ => continue,
            };
            let c = g.add_const("detrc_gather_index", shaped.to_proto(""));
            g.set_input(n, 1, Some(Port::new(c, 0)));
            fixed += 1;
        }
        let mut lines = vec![];
        if fixed > 0 {
            lines.push(format!("made {fixed} negative Gather indices non-negative"));
        }
        if squeezed > 0 {
            lines.push(format!(
                "replaced {squeezed} Gathers on size-1 axes by Squeeze"
            ));
        }
        Ok(Outcome::changed(lines))
    }
}
