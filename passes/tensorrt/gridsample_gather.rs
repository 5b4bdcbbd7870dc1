//! `gridsample-gather` [opt-in]: bilinear `GridSample` rewritten as a gather of the four
//! neighbours and their weighted sum, in operators every TensorRT version builds the same way.
//!
//! Why: TensorRT 10.14 and 11.1 miscompile the GridSample of deformable attention (DEIM,
//! D-FINE, RT-DETRv2): the engine builds and runs and loses detections (NVIDIA/TensorRT#4813;
//! #4646 for GridSample at opset 20). Re-exporting with a gather-based bilinear interpolation
//! is the fix users apply by hand; this pass does it on the graph, found by pattern.
//!
//! Pattern: `GridSample(X [N, C, H, W], grid [N, Ho, Wo, 2])`, mode bilinear (`linear` from
//! opset 20), padding `zeros` or `border`, either `align_corners`, with C, H, W, Ho and Wo
//! static (N may be symbolic). Check: anything else (nearest, bicubic, reflection, 5-D,
//! unknown shapes) is left as it is, with a report line saying why.
//!
//! Replacement, with P = Ho * Wo, coordinates computed in float32 whatever X's type:
//!
//!   pix    = unnormalise(grid) as [N, P, 2] pixel coordinates (x, y)   (border: clamped)
//!   i0     = Floor(pix), i1 = i0 + 1, f = pix - i0
//!   w0, w1 = 1 - f, f          (zeros padding: times 1 where the neighbour is inside, else 0,
//!                               computed with Clip, so no Where and no bool on the data path)
//!   idx    = clamp(y) * W + clamp(x) for the four corners          -> [N, 4P] int64
//!   value  = GatherElements(Reshape(X, [N, C, H*W]), Expand(idx, [1, C, 1]), axis 2)
//!   out    = ReduceSum(Reshape(value * weights, [N, C, 4, P]), axis 2) as [N, C, Ho, Wo]

use crate::ir::{DType, Graph, NodeId, Port};
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::{attrs, Tensor};

pub struct GridSampleGather;

impl Pass for GridSampleGather {
    fn name(&self) -> &'static str {
        "gridsample-gather"
    }
    fn about(&self) -> &'static str {
        "bilinear GridSample as a gather of the four neighbours (TensorRT 10.14/11.1 miscompile GridSample)"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let mut lines = Vec::new();
        let mut done = 0;
        for n in g.topo_ops() {
            if !g.contains(n) || !g.node(n).is("GridSample") {
                continue;
            }
            match matched(g, n) {
                Ok(m) => {
                    rewrite(g, n, &m);
                    done += 1;
                }
                Err(why) => lines.push(format!("{} kept: {why}", g.node(n).display_name())),
            }
        }
        if done == 0 {
            // Nothing rewritten: the kept ones, with their reasons, are a note, not a change
            // (a change would make the pipeline run another round).
            return Ok(if lines.is_empty() {
                Outcome::Unchanged
            } else {
                Outcome::NotApplicable(lines.join("; "))
            });
        }
        lines.insert(0, format!("{done} GridSample rewritten as gathers"));
        Ok(Outcome::Changed(lines))
    }
}

/// What the check established about one GridSample.
struct Match {
    x: Port,
    grid: Port,
    x_dtype: DType,
    grid_dtype: DType,
    c: i64,
    h: i64,
    w: i64,
    ho: i64,
    wo: i64,
    align: bool,
    border: bool,
}

/// Pattern and check: a 4-D bilinear GridSample with zeros or border padding and static
/// channel, spatial and grid sizes.
fn matched(g: &Graph, n: NodeId) -> Result<Match, String> {
    let op = g.node(n).op().ok_or("not an operator")?;
    let mode = attrs::string(&op.attrs, "mode").unwrap_or_else(|| "bilinear".into());
    if mode != "bilinear" && mode != "linear" {
        return Err(format!("mode {mode} (only bilinear is rewritten)"));
    }
    let pad = attrs::string(&op.attrs, "padding_mode").unwrap_or_else(|| "zeros".into());
    if pad != "zeros" && pad != "border" {
        return Err(format!("padding {pad} (zeros and border are rewritten)"));
    }
    let align = attrs::int_or(&op.attrs, "align_corners", 0) != 0;
    let (x, grid) = match (g.input(n, 0), g.input(n, 1)) {
        (Some(x), Some(grid)) => (x, grid),
        _ => return Err("missing input".into()),
    };
    let xt = g.ty(x).ok_or("input type unknown")?;
    let gt = g.ty(grid).ok_or("grid type unknown")?;
    let xs = xt.shape.as_ref().ok_or("input rank unknown")?;
    let gs = gt.shape.as_ref().ok_or("grid rank unknown")?;
    if xs.len() != 4 || gs.len() != 4 {
        return Err(format!("{}-D input (only 4-D is rewritten)", xs.len()));
    }
    let fixed = |d: &crate::ir::Dim, what: &str| d.fixed().ok_or(format!("{what} is not static"));
    let (c, h, w) = (
        fixed(&xs[1], "C")?,
        fixed(&xs[2], "H")?,
        fixed(&xs[3], "W")?,
    );
    let (ho, wo) = (fixed(&gs[1], "grid H")?, fixed(&gs[2], "grid W")?);
    if fixed(&gs[3], "grid coordinates")? != 2 {
        return Err("grid's last axis is not 2".into());
    }
    let float = |t: DType| t == DType::F32 || t == DType::F16;
    if !float(xt.dtype) || !float(gt.dtype) {
        return Err(format!("types {} and {}", xt.dtype, gt.dtype));
    }
    // Indices are computed in float32: exact below 2^24 pixels.
    if h.checked_mul(w).is_none_or(|hw| hw >= 1 << 24) || c <= 0 || ho <= 0 || wo <= 0 {
        return Err("sizes out of range".into());
    }
    Ok(Match {
        x,
        grid,
        x_dtype: xt.dtype,
        grid_dtype: gt.dtype,
        c,
        h,
        w,
        ho,
        wo,
        align,
        border: pad == "border",
    })
}

/// Builds the replacement next to `n` and points its readers at it.
fn rewrite(g: &mut Graph, n: NodeId, m: &Match) {
    let name = g.node(n).display_name();
    let mut b = Builder {
        g,
        prefix: format!("{name}_gather"),
    };
    let p = m.ho * m.wo;
    let (wf, hf) = (m.w as f32, m.h as f32);

    // Grid -> pixel coordinates [N, P, 2] in float32.
    let mut grid = m.grid;
    if m.grid_dtype != DType::F32 {
        grid = b.op(
            "Cast",
            &[grid],
            vec![attrs::make_int("to", DType::F32.0 as i64)],
        );
    }
    let shape = b.ints(&[0, p, 2]);
    let grid = b.op("Reshape", &[grid, shape], vec![]);
    let one = b.f32s(&[1.0]);
    let shifted = b.op("Add", &[grid, one], vec![]);
    let pix = if m.align {
        let scale = b.f32s(&[(wf - 1.0) / 2.0, (hf - 1.0) / 2.0]);
        b.op("Mul", &[shifted, scale], vec![])
    } else {
        let scale = b.f32s(&[wf / 2.0, hf / 2.0]);
        let scaled = b.op("Mul", &[shifted, scale], vec![]);
        let half = b.f32s(&[0.5]);
        b.op("Sub", &[scaled, half], vec![])
    };
    let zero = b.f32s(&[0.0]);
    let last = b.f32s(&[wf - 1.0, hf - 1.0]);
    let pix = if m.border {
        let lo = b.op("Max", &[pix, zero], vec![]);
        b.op("Min", &[lo, last], vec![])
    } else {
        pix
    };

    // Neighbours and weights along x and y at once (the last axis).
    let i0 = b.op("Floor", &[pix], vec![]);
    let f = b.op("Sub", &[pix, i0], vec![]);
    let mut w0 = b.op("Sub", &[one, f], vec![]);
    let mut w1 = f;
    let i1 = b.op("Add", &[i0, one], vec![]);
    if !m.border {
        // inside(i) = Clip(i + 1, 0, 1) * Clip(size - i, 0, 1): 1 for 0 <= i <= size - 1,
        // 0 otherwise, for the integers Floor gives.
        let size = b.f32s(&[wf, hf]);
        for (i, w) in [(i0, &mut w0), (i1, &mut w1)] {
            let lo = b.op("Add", &[i, one], vec![]);
            let lo = b.clip01(lo);
            let hi = b.op("Sub", &[size, i], vec![]);
            let hi = b.clip01(hi);
            let inside = b.op("Mul", &[lo, hi], vec![]);
            *w = b.op("Mul", &[*w, inside], vec![]);
        }
    }
    // Clamped neighbours, scaled by the row stride on y: s = (x, y * W).
    let stride = b.f32s(&[1.0, wf]);
    let mut s = [i0, i1];
    for si in &mut s {
        let lo = b.op("Max", &[*si, zero], vec![]);
        let cl = b.op("Min", &[lo, last], vec![]);
        *si = b.op("Mul", &[cl, stride], vec![]);
    }
    let pick = |b: &mut Builder, t: Port, k: i64| {
        let idx = b.scalar(k);
        b.op("Gather", &[t, idx], vec![attrs::make_int("axis", 2)])
    };
    let (x0, y0) = (pick(&mut b, s[0], 0), pick(&mut b, s[0], 1));
    let (x1, y1) = (pick(&mut b, s[1], 0), pick(&mut b, s[1], 1));
    let (wx0, wy0) = (pick(&mut b, w0, 0), pick(&mut b, w0, 1));
    let (wx1, wy1) = (pick(&mut b, w1, 0), pick(&mut b, w1, 1));
    let mut idx = Vec::new();
    let mut wt = Vec::new();
    for (y, wy) in [(y0, wy0), (y1, wy1)] {
        for (x, wx) in [(x0, wx0), (x1, wx1)] {
            idx.push(b.op("Add", &[y, x], vec![]));
            wt.push(b.op("Mul", &[wy, wx], vec![]));
        }
    }
    let axis1 = || vec![attrs::make_int("axis", 1)];
    let idx = b.op("Concat", &idx, axis1());
    let idx = b.op(
        "Cast",
        &[idx],
        vec![attrs::make_int("to", DType::I64.0 as i64)],
    );
    let row = b.ints(&[0, 1, 4 * p]);
    let idx = b.op("Reshape", &[idx, row], vec![]);
    let channels = b.ints(&[1, m.c, 1]);
    let idx = b.op("Expand", &[idx, channels], vec![]);
    let mut wt = b.op("Concat", &wt, axis1());
    if m.x_dtype != DType::F32 {
        wt = b.op(
            "Cast",
            &[wt],
            vec![attrs::make_int("to", m.x_dtype.0 as i64)],
        );
    }
    let wt = b.op("Reshape", &[wt, row], vec![]);

    // Gather the four neighbours of every sample, weight them, sum the corners.
    let flat = b.ints(&[0, m.c, m.h * m.w]);
    let xf = b.op("Reshape", &[m.x, flat], vec![]);
    let vals = b.op(
        "GatherElements",
        &[xf, idx],
        vec![attrs::make_int("axis", 2)],
    );
    let weighted = b.op("Mul", &[vals, wt], vec![]);
    let corners = b.ints(&[0, m.c, 4, p]);
    let weighted = b.op("Reshape", &[weighted, corners], vec![]);
    let axis2 = b.ints(&[2]);
    let summed = b.op(
        "ReduceSum",
        &[weighted, axis2],
        vec![attrs::make_int("keepdims", 0)],
    );
    let out_shape = b.ints(&[0, m.c, m.ho, m.wo]);
    let out = b.op("Reshape", &[summed, out_shape], vec![]);
    let g = b.g;
    g.replace_all_uses(Port::new(n, 0), out);
    g.remove_node(n);
}

/// Adds the replacement's operators and constants under one name prefix.
struct Builder<'g> {
    g: &'g mut Graph,
    prefix: String,
}

impl Builder<'_> {
    fn op(
        &mut self,
        op_type: &str,
        inputs: &[Port],
        at: Vec<crate::load::proto::AttributeProto>,
    ) -> Port {
        let ins: Vec<Option<Port>> = inputs.iter().copied().map(Some).collect();
        let hint = format!("{}_{}", self.prefix, op_type.to_lowercase());
        Port::new(self.g.add_op(op_type, &hint, &ins, at, 1), 0)
    }
    fn constant(&mut self, t: Tensor) -> Port {
        let hint = format!("{}_const", self.prefix);
        Port::new(self.g.add_const(&hint, t.to_proto("")), 0)
    }
    fn ints(&mut self, v: &[i64]) -> Port {
        self.constant(Tensor::vec_i64(v.to_vec()))
    }
    fn scalar(&mut self, v: i64) -> Port {
        self.constant(Tensor::scalar_i64(v))
    }
    fn f32s(&mut self, v: &[f32]) -> Port {
        let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[v.len()]), v.to_vec());
        self.constant(Tensor::F32(a.expect("1-D")))
    }
    /// Clip(x, 0, 1) with the bounds as inputs (opset 11 and later; GridSample needs 16).
    fn clip01(&mut self, x: Port) -> Port {
        let zero = ndarray::arr0(0.0f32).into_dyn();
        let (lo, hi) = (
            self.constant(Tensor::F32(zero.clone())),
            self.constant(Tensor::F32(zero + 1.0)),
        );
        self.op("Clip", &[x, lo, hi], vec![])
    }
}
