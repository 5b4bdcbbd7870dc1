//! The batch size at run time: the rewrites that need `N` (a Reshape target, an Expand shape)
//! read it from the first batch input's shape, built once and shared. Both the shape-constant
//! rewrite and the per-image constants use it.

use crate::ir::{Graph, Port};
use crate::tensor::attrs;
use crate::tensor::Tensor;

/// A 1-D int64 tensor `[N * m]` computed from the first batch input's shape.
pub(super) struct NSource {
    pub(super) n: Option<Port>,
    pub(super) input: Port,
}

impl NSource {
    fn get(&mut self, g: &mut Graph, m: i64) -> Port {
        let n = match self.n {
            Some(p) => p,
            None => {
                let sh = g.add_op("Shape", "batch_shape", &[Some(self.input)], vec![], 1);
                let idx = g.add_const("batch_axis", Tensor::vec_i64(vec![0]).to_proto(""));
                let ga = g.add_op(
                    "Gather",
                    "batch_size",
                    &[Some(Port::new(sh, 0)), Some(Port::new(idx, 0))],
                    vec![attrs::make_int("axis", 0)],
                    1,
                );
                let p = Port::new(ga, 0);
                self.n = Some(p);
                p
            }
        };
        if m == 1 {
            return n;
        }
        let c = g.add_const("batch_factor", Tensor::vec_i64(vec![m]).to_proto(""));
        let mul = g.add_op(
            "Mul",
            "batch_times",
            &[Some(n), Some(Port::new(c, 0))],
            vec![],
            1,
        );
        Port::new(mul, 0)
    }

    /// `spec` with entry `k` replaced by N*m, as a Concat of constants and the batch.
    pub(super) fn shape_with(&mut self, g: &mut Graph, spec: &[i64], k: usize, m: i64) -> Port {
        let nm = self.get(g, m);
        let mut parts = Vec::new();
        if k > 0 {
            let c = g.add_const(
                "shape_head",
                Tensor::vec_i64(spec[..k].to_vec()).to_proto(""),
            );
            parts.push(Some(Port::new(c, 0)));
        }
        parts.push(Some(nm));
        if k + 1 < spec.len() {
            let c = g.add_const(
                "shape_tail",
                Tensor::vec_i64(spec[k + 1..].to_vec()).to_proto(""),
            );
            parts.push(Some(Port::new(c, 0)));
        }
        let cat = g.add_op(
            "Concat",
            "batch_shape_vec",
            &parts,
            vec![attrs::make_int("axis", 0)],
            1,
        );
        Port::new(cat, 0)
    }
}
