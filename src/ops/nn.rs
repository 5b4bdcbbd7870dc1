//! Neural-network operators: convolutions and pools, the normalisations, `Softmax`,
//! `Resize` and `GridSample`.

use ndarray::Axis;

use super::*;

/// The rules of this family, one per operator.
pub(super) const RULES: &[OpRule] = &[
    OpRule::new("LayerNormalization")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Along)
        .positional(),
    OpRule::new("LogSoftmax")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Along)
        .positional(),
    OpRule::new("Resize")
        .infer(infer)
        .eval(eval)
        .positional()
        .resamples(),
    OpRule::new("Softmax")
        .infer(infer)
        .eval(eval)
        .axes(Axes::Along)
        .positional(),
    OpRule::new("Upsample").infer(infer).eval(eval).resamples(),
    OpRule::new("AveragePool").infer(infer).axes(Axes::Leading),
    OpRule::new("BatchNormalization")
        .infer(infer)
        .axes(Axes::Leading)
        .positional(),
    OpRule::new("Conv").infer(infer).axes(Axes::Leading),
    OpRule::new("ConvTranspose")
        .infer(infer)
        .axes(Axes::Leading),
    OpRule::new("DeformConv").axes(Axes::Leading),
    OpRule::new("GlobalAveragePool")
        .infer(infer)
        .axes(Axes::Leading),
    OpRule::new("GlobalMaxPool")
        .infer(infer)
        .axes(Axes::Leading),
    OpRule::new("GridSample")
        .infer_static(static_grid_sample)
        .axes(Axes::Leading),
    OpRule::new("Hardmax").axes(Axes::Along).positional(),
    OpRule::new("InstanceNormalization")
        .infer(infer)
        .axes(Axes::Leading)
        .positional(),
    OpRule::new("LpNormalization")
        .axes(Axes::Along)
        .positional(),
    OpRule::new("LpPool").infer(infer).axes(Axes::Leading),
    OpRule::new("MaxPool").infer(infer).axes(Axes::Leading),
];

#[allow(clippy::bool_comparison)]
fn eval(op: &str, at: &[AttributeProto], inputs: &[Option<Tensor>], opset: i64) -> R<Vec<Tensor>> {
    let x = || input(inputs, 0, op);
    let y = || input(inputs, 1, op);
    match op {
        "Resize" | "Upsample" => resize(op, at, inputs, opset),
        "Softmax" | "LogSoftmax" => {
            let a = f32_of(x()?)?;
            let default_axis = accessors::softmax_default_axis(opset);
            let ax = axis(attrs::int_or(at, "axis", default_axis), a.ndim())
                .ok_or(EvalError::Invalid("Softmax axis".into()))?;
            // Before opset 13 Softmax flattens from `axis` on; identical when axis is last.
            if accessors::softmax_flattens(opset) && ax + 1 != a.ndim() {
                return unsupported("Softmax over several axes (opset < 13)");
            }
            let mut out = a.clone();
            for mut lane in out.lanes_mut(Axis(ax)) {
                let m = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = lane.iter().map(|&v| ((v - m) as f64).exp()).sum();
                lane.mapv_inplace(|v| {
                    let e = (v - m) as f64;
                    if op == "Softmax" {
                        (e.exp() / sum) as f32
                    } else {
                        (e - sum.ln()) as f32
                    }
                });
            }
            one(Tensor::F32(out))
        }
        "LayerNormalization" => {
            let a = f32_of(x()?)?;
            let r = a.ndim();
            let ax = axis(attrs::int_or(at, "axis", -1), r)
                .ok_or(EvalError::Invalid("LayerNormalization axis".into()))?;
            let eps = attrs::float(at, "epsilon").unwrap_or(1e-5) as f64;
            let s = a.shape().to_vec();
            let outer: usize = s[..ax].iter().product();
            let inner: usize = s[ax..].iter().product();
            let flat = reshape_to(&a, &[outer, inner])?;
            let scale = f32_of(y()?)?;
            let bias = match inputs.get(2).and_then(Option::as_ref) {
                Some(b) => Some(f32_of(b)?),
                None => None,
            };
            let mut normed = flat.clone();
            for mut row in normed.rows_mut() {
                let n = row.len() as f64;
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                let inv_std = 1.0 / (var + eps).sqrt();
                row.mapv_inplace(|v| ((v as f64 - mean) * inv_std) as f32);
            }
            let normed = reshape_to(&normed, &s)?;
            let mut out = zip2(&normed, &scale, |p, q| p * q)?;
            if let Some(b) = bias {
                out = zip2(&out, &b, |p, q| p + q)?;
            }
            one(Tensor::F32(out))
        }
        _ => unsupported(op.to_string()),
    }
}

fn infer(cx: &InferCx) -> Option<Vec<Option<TensorType>>> {
    let InferCx {
        op,
        at,
        tys,
        vals,
        opset,
    } = *cx;
    let (t0, s0, dt0) = cx.first();
    match op {
        "Softmax" | "LogSoftmax" | "InstanceNormalization" => same(s0, dt0),
        "LayerNormalization" | "BatchNormalization" => Some(vec![Some(TensorType {
            dtype: dt0?,
            shape: s0,
        })]),
        "Conv" | "MaxPool" | "AveragePool" | "LpPool" => {
            let x = s0?;
            let w = tys.get(1).cloned().flatten().and_then(|t| t.shape);
            let out = pool_like(op, at, &x, w.as_deref())?;
            let mut v = vec![Some(TensorType {
                dtype: dt0?,
                shape: Some(out.clone()),
            })];
            if op == "MaxPool" {
                v.push(Some(TensorType {
                    dtype: DType::I64,
                    shape: Some(out),
                }));
            }
            Some(v)
        }
        "ConvTranspose" => {
            let w = tys.get(1).cloned().flatten().and_then(|t| t.shape)?;
            Some(vec![Some(TensorType {
                dtype: dt0?,
                shape: Some(conv_transpose_shape(at, &s0?, &w)?),
            })])
        }
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let x = s0?;
            let mut out = x[..2.min(x.len())].to_vec();
            out.extend(std::iter::repeat_n(
                Dim::Fixed(1),
                x.len().saturating_sub(2),
            ));
            same(Some(out), dt0)
        }
        "Resize" | "Upsample" => {
            let x = s0?;
            let xs = t0.as_ref()?.static_shape()?;
            if let Some(sz) = cx.ints(3).filter(|v| v.len() == x.len()) {
                return same(fixed(&sz), dt0);
            }
            let sc_idx = if op == "Upsample" || opset < 11 { 1 } else { 2 };
            let sc = vals.get(sc_idx).cloned().flatten()?.as_f64_vec()?;
            if sc.len() != xs.len() {
                return None;
            }
            same(
                fixed(
                    &xs.iter()
                        .zip(&sc)
                        .map(|(&d, &s)| (d as f64 * s).floor() as i64)
                        .collect::<Vec<_>>(),
                ),
                dt0,
            )
        }
        _ => None,
    }
}

/// Resize and Upsample of a constant: nearest, linear and cubic, with or without antialias
/// (opset 18), in every coordinate mode the family exports use. Position embeddings resized to
/// the input size (YOLOS's bicubic, RF-DETR's antialiased bicubic) fold this way.
pub(super) fn resize(
    op: &str,
    at: &[AttributeProto],
    inputs: &[Option<Tensor>],
    opset: i64,
) -> R<Vec<Tensor>> {
    let mode = attrs::string(at, "mode").unwrap_or_else(|| "nearest".into());
    if !["nearest", "linear", "cubic"].contains(&mode.as_str()) {
        return unsupported(format!("{op} mode '{mode}'"));
    }
    if attrs::string(at, "keep_aspect_ratio_policy").is_some_and(|p| p != "stretch") {
        return unsupported(format!("{op} keeping the aspect ratio"));
    }
    let data = input(inputs, 0, op)?;
    let s = data.shape();
    let r = s.len();
    let (scales, sizes) = if op == "Upsample" || opset < 11 {
        let sc = if opset >= 9 {
            inputs
                .get(1)
                .cloned()
                .flatten()
                .and_then(|t| t.as_f64_vec())
        } else {
            attrs::floats(at, "scales").map(|v| v.iter().map(|&x| x as f64).collect())
        };
        (sc, None)
    } else {
        let sc = inputs
            .get(2)
            .cloned()
            .flatten()
            .and_then(|t| t.as_f64_vec())
            .filter(|v| !v.is_empty());
        (sc, opt_ints(inputs, 3)?.filter(|v| !v.is_empty()))
    };
    if attrs::find(at, "axes").is_some() {
        return unsupported("Resize with axes");
    }
    let (out, scale): (Vec<usize>, Vec<f64>) = match (sizes, scales) {
        (Some(sz), _) if sz.len() == r => {
            let o = to_usize_shape(&sz)?;
            let sc = (0..r).map(|d| o[d] as f64 / s[d] as f64).collect();
            (o, sc)
        }
        (_, Some(sc)) if sc.len() == r => (
            (0..r)
                .map(|d| (s[d] as f64 * sc[d]).floor() as usize)
                .collect(),
            sc,
        ),
        _ => return inv(format!("{op} needs scales or sizes of rank {r}")),
    };
    check_size(&out)?;
    // Nothing to sample from: every output element would read outside an empty axis.
    if (0..r).any(|d| s[d] == 0 && out[d] > 0) {
        return inv(format!("{op} of an empty axis to a non-empty one"));
    }
    let ctm = attrs::string(at, "coordinate_transformation_mode").unwrap_or_else(|| {
        if op == "Upsample" || opset < 11 {
            "asymmetric".into()
        } else {
            "half_pixel".into()
        }
    });
    if mode != "nearest" {
        return interpolate(op, at, data, &out, &scale, &ctm, &mode).map(|t| vec![t]);
    }
    let nm = attrs::string(at, "nearest_mode").unwrap_or_else(|| "round_prefer_floor".into());
    let mut maps: Vec<Vec<usize>> = Vec::with_capacity(r);
    for d in 0..r {
        let (li, sc) = (s[d] as f64, scale[d]);
        let mut m = Vec::with_capacity(out[d]);
        for i in 0..out[d] {
            let x = i as f64;
            let src = match ctm.as_str() {
                "tf_half_pixel_for_nn" => (x + 0.5) / sc,
                _ => source_coordinate(&ctm, x, s[d], out[d], sc).ok_or_else(|| {
                    EvalError::Unsupported(format!("{op} coordinate mode '{ctm}'"))
                })?,
            };
            let k = match nm.as_str() {
                "floor" => src.floor(),
                "ceil" => src.ceil(),
                "round_prefer_ceil" => (src + 0.5).floor(),
                _ => {
                    if src.fract() == 0.5 {
                        src.floor()
                    } else {
                        src.round()
                    }
                }
            };
            m.push(k.clamp(0.0, li - 1.0) as usize);
        }
        maps.push(m);
    }
    Ok(vec![
        map_any!(data, a => ArrayD::from_shape_fn(IxDyn(&out), |ix| {
            let src: Vec<usize> = (0..r).map(|d| maps[d][ix[d]]).collect();
            a[IxDyn(&src)]
        })),
    ])
}
/// Linear or cubic Resize, one axis after the other (the interpolation is separable), in
/// float64, as the ONNX definition computes it: each output position maps back to a source
/// coordinate, and its value is a weighted sum of the nearest source elements (the edge
/// element repeated beyond the border). With `antialias` a downscale widens the kernel by
/// 1/scale and normalises its weights, as PIL and torch's antialiased resize do.
fn interpolate(
    op: &str,
    at: &[AttributeProto],
    data: &Tensor,
    out: &[usize],
    scale: &[f64],
    ctm: &str,
    mode: &str,
) -> R<Tensor> {
    let antialias = attrs::int_or(at, "antialias", 0) != 0;
    let exclude_outside = attrs::int_or(at, "exclude_outside", 0) != 0;
    let a = attrs::float(at, "cubic_coeff_a").unwrap_or(-0.75) as f64;
    let mut x: ArrayD<f64> = match data {
        Tensor::F32(v) => v.mapv(|e| e as f64),
        Tensor::F64(v) => v.clone(),
        Tensor::F16(v) => v.mapv(|e| e.to_f64()),
        other => return inv(format!("{op} {mode} of {}", other.dtype())),
    };
    for (d, (&o, &sc)) in out.iter().zip(scale).enumerate() {
        let len = x.shape()[d];
        // onnxruntime's cubic and antialiased kernels do not place a one-element
        // pytorch_half_pixel output where the definition does (at -0.5; measured: 3.125 where
        // the definition gives 2.1875): the fold stays out rather than choose between them.
        if ctm == "pytorch_half_pixel" && o == 1 && len > 1 && (antialias || mode == "cubic") {
            return unsupported(format!("{op} {mode} to one element (pytorch_half_pixel)"));
        }
        let mut taps = Vec::with_capacity(o);
        for i in 0..o {
            let src = source_coordinate(ctm, i as f64, len, o, sc)
                .ok_or_else(|| EvalError::Unsupported(format!("{op} coordinate mode '{ctm}'")))?;
            taps.push(kernel_taps(
                src,
                len,
                sc,
                mode,
                a,
                antialias,
                exclude_outside,
            ));
        }
        let mut shape = x.shape().to_vec();
        shape[d] = o;
        check_size(&shape)?;
        let mut y = ArrayD::<f64>::zeros(IxDyn(&shape));
        for (i, tap) in taps.iter().enumerate() {
            let mut lane = y.index_axis_mut(Axis(d), i);
            for &(k, w) in tap {
                lane.scaled_add(w, &x.index_axis(Axis(d), k));
            }
        }
        x = y;
    }
    Ok(match data {
        Tensor::F32(_) => Tensor::F32(x.mapv(|v| v as f32)),
        Tensor::F16(_) => Tensor::F16(x.mapv(f16::from_f64)),
        _ => Tensor::F64(x),
    })
}

/// Where output position `x` of an axis of `len` resized to `out` (scale `sc`) reads from.
/// `None` for a mode without a definition here (tf_crop_and_resize needs a region of interest).
fn source_coordinate(ctm: &str, x: f64, len: usize, out: usize, sc: f64) -> Option<f64> {
    Some(match ctm {
        "asymmetric" => x / sc,
        "half_pixel" => (x + 0.5) / sc - 0.5,
        "pytorch_half_pixel" if out > 1 => (x + 0.5) / sc - 0.5,
        "pytorch_half_pixel" => -0.5,
        "align_corners" if out > 1 => x * (len as f64 - 1.0) / (out as f64 - 1.0),
        "align_corners" => 0.0,
        "half_pixel_symmetric" => {
            let adjustment = out as f64 / (sc * len as f64);
            let center = len as f64 / 2.0;
            center * (1.0 - adjustment) + (x + 0.5) / sc - 0.5
        }
        _ => return None,
    })
}

/// The (source index, weight) pairs of one output position at source coordinate `src`.
fn kernel_taps(
    src: f64,
    len: usize,
    sc: f64,
    mode: &str,
    a: f64,
    antialias: bool,
    exclude_outside: bool,
) -> Vec<(usize, f64)> {
    // The taps sit at base + start + k; at an integer coordinate the taps are those of the
    // coordinate one below with the fraction 1 (what the definition's nearest-neighbour choice,
    // ties to the lower index, gives).
    let (base, ratio) = if src.fract() == 0.0 {
        (src - 1.0, 1.0)
    } else {
        (src.floor(), src - src.floor())
    };
    let cubic = |x: f64| {
        let x = x.abs();
        if x <= 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
        } else {
            0.0
        }
    };
    // Antialiasing widens the kernel only when downscaling.
    let s = if antialias { sc.min(1.0) } else { 1.0 };
    let (start, weights): (i64, Vec<f64>) = if mode == "linear" {
        let start = (-1.0 / s).floor() as i64 + 1;
        let n = 2 - 2 * start;
        (
            start,
            (0..n)
                .map(|k| (1.0 - (((start + k) as f64 - ratio) * s).abs()).max(0.0))
                .collect(),
        )
    } else {
        let start = (-2.0 / s).floor() as i64 + 1;
        let n = 2 - 2 * start;
        (
            start,
            (0..n)
                .map(|k| cubic(((start + k) as f64 - ratio) * s))
                .collect(),
        )
    };
    let last = len as i64 - 1;
    let mut taps: Vec<(i64, f64)> = weights
        .into_iter()
        .enumerate()
        .map(|(k, w)| (base as i64 + start + k as i64, w))
        .collect();
    if exclude_outside {
        taps.retain(|&(i, _)| (0..=last).contains(&i));
    }
    if antialias || exclude_outside {
        let sum: f64 = taps.iter().map(|t| t.1).sum();
        if sum != 0.0 {
            taps.iter_mut().for_each(|t| t.1 /= sum);
        }
    }
    taps.into_iter()
        .map(|(i, w)| (i.clamp(0, last) as usize, w))
        .collect()
}

/// Output size of a convolution or pooling window along one axis. `None` for parameters no
/// valid model has (non-positive kernel, stride or dilation) and for sizes that overflow, which
/// only a corrupt or hostile attribute produces.
pub(super) fn conv_out(
    input: i64,
    k: i64,
    stride: i64,
    dil: i64,
    pad_sum: i64,
    ceil: bool,
) -> Option<i64> {
    if k <= 0 || stride <= 0 || dil <= 0 {
        return None;
    }
    let eff = dil.checked_mul(k - 1)?.checked_add(1)?;
    let num = input.checked_add(pad_sum)?.checked_sub(eff)?;
    if num < 0 {
        return None;
    }
    let steps = if ceil {
        num / stride + i64::from(num % stride != 0)
    } else {
        num / stride
    };
    steps.checked_add(1)
}
pub(super) fn pool_like(
    op: &str,
    at: &[AttributeProto],
    x: &[Dim],
    w: Option<&[Dim]>,
) -> Option<Vec<Dim>> {
    let spatial = x.len().checked_sub(2)?;
    let kernel: Vec<i64> = match attrs::ints(at, "kernel_shape") {
        Some(k) => k,
        None => w?.get(2..)?.iter().map(Dim::fixed).collect::<Option<_>>()?,
    };
    let strides = attrs::ints(at, "strides").unwrap_or_else(|| vec![1; spatial]);
    let dil = attrs::ints(at, "dilations").unwrap_or_else(|| vec![1; spatial]);
    let pads = attrs::ints(at, "pads").unwrap_or_else(|| vec![0; 2 * spatial]);
    // Attribute lists of the wrong length are a malformed node: no type rather than a guess.
    if kernel.len() != spatial
        || strides.len() != spatial
        || dil.len() != spatial
        || pads.len() != 2 * spatial
    {
        return None;
    }
    let auto = attrs::string(at, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    let ceil = attrs::int_or(at, "ceil_mode", 0) != 0;
    let mut out = vec![x[0].clone()];
    out.push(if op == "Conv" || op == "ConvTranspose" {
        w?.first()?.clone()
    } else {
        x[1].clone()
    });
    for i in 0..spatial {
        let d = match x[i + 2] {
            Dim::Fixed(v) => {
                let o = match auto.as_str() {
                    "SAME_UPPER" | "SAME_LOWER" if strides[i] > 0 && v >= 0 => {
                        v / strides[i] + i64::from(v % strides[i] != 0)
                    }
                    "SAME_UPPER" | "SAME_LOWER" => return None,
                    "VALID" => conv_out(v, kernel[i], strides[i], dil[i], 0, false)?,
                    _ => conv_out(
                        v,
                        kernel[i],
                        strides[i],
                        dil[i],
                        pads[i].checked_add(pads[i + spatial])?,
                        ceil,
                    )?,
                };
                Dim::Fixed(o)
            }
            _ => Dim::Unknown,
        };
        out.push(d);
    }
    Some(out)
}

/// Output shape of a ConvTranspose (LW-DETR's upsampling projector): batch, `W[1] * group`
/// channels, and per spatial axis `stride * (in - 1) + output_padding + dilation * (k - 1) + 1
/// - pads`, or `output_shape` where given, or `in * stride` with SAME padding.
fn conv_transpose_shape(at: &[AttributeProto], x: &[Dim], w: &[Dim]) -> Option<Vec<Dim>> {
    let spatial = x.len().checked_sub(2)?;
    if w.len() != x.len() {
        return None;
    }
    let kernel: Vec<i64> = match attrs::ints(at, "kernel_shape") {
        Some(k) => k,
        None => w[2..].iter().map(Dim::fixed).collect::<Option<_>>()?,
    };
    let ones = vec![1; spatial];
    let strides = attrs::ints(at, "strides").unwrap_or_else(|| ones.clone());
    let dil = attrs::ints(at, "dilations").unwrap_or_else(|| ones.clone());
    let pads = attrs::ints(at, "pads").unwrap_or_else(|| vec![0; 2 * spatial]);
    let out_pad = attrs::ints(at, "output_padding").unwrap_or_else(|| vec![0; spatial]);
    let explicit = attrs::ints(at, "output_shape");
    if kernel.len() != spatial
        || strides.len() != spatial
        || dil.len() != spatial
        || pads.len() != 2 * spatial
        || out_pad.len() != spatial
        || explicit.as_ref().is_some_and(|o| o.len() != spatial)
        || kernel.iter().chain(&strides).chain(&dil).any(|&v| v <= 0)
    {
        return None;
    }
    let group = attrs::int_or(at, "group", 1);
    let channels = match &w[1] {
        Dim::Fixed(c) => Dim::Fixed(c.checked_mul(group)?),
        _ => Dim::Unknown,
    };
    let auto = attrs::string(at, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    let mut out = vec![x[0].clone(), channels];
    for i in 0..spatial {
        let d = match (&explicit, &x[i + 2]) {
            (Some(o), _) => Dim::Fixed(o[i]),
            (None, Dim::Fixed(v)) => {
                let o = match auto.as_str() {
                    "SAME_UPPER" | "SAME_LOWER" => v.checked_mul(strides[i])?,
                    _ => {
                        let pad = if auto == "VALID" {
                            0
                        } else {
                            pads[i].checked_add(pads[i + spatial])?
                        };
                        strides[i]
                            .checked_mul(v - 1)?
                            .checked_add(out_pad[i])?
                            .checked_add(dil[i].checked_mul(kernel[i] - 1)?)?
                            .checked_add(1)?
                            .checked_sub(pad)?
                    }
                };
                if o < 0 {
                    return None;
                }
                Dim::Fixed(o)
            }
            (None, _) => Dim::Unknown,
        };
        out.push(d);
    }
    Some(out)
}

/// Deformable attention's sampler: `[N, C]` of the input, `[H_out, W_out]` of the grid.
fn static_grid_sample(cx: &InferCx) -> Types {
    let (x, xs, gs) = (cx.ty(0)?, cx.st(0)?, cx.st(1)?);
    (xs.len() == 4 && gs.len() == 4).then(|| {
        vec![Some(TensorType::new(
            x.dtype,
            &[xs[0], xs[1], gs[1], gs[2]],
        ))]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::attrs::make_ints;

    #[test]
    fn conv_output_size_with_stride_and_pads() {
        let x: Vec<Dim> = [1, 3, 32, 30].iter().map(|&d| Dim::Fixed(d)).collect();
        let w: Vec<Dim> = [16, 3, 3, 3].iter().map(|&d| Dim::Fixed(d)).collect();
        let at = [
            make_ints("strides", vec![2, 2]),
            make_ints("pads", vec![1, 1, 1, 1]),
        ];
        let out = pool_like("Conv", &at, &x, Some(&w)).unwrap();
        assert_eq!(
            out,
            [1, 16, 16, 15]
                .iter()
                .map(|&d| Dim::Fixed(d))
                .collect::<Vec<_>>()
        );
        // A zero stride is a corrupt node: no type rather than a division by zero.
        assert_eq!(
            pool_like("Conv", &[make_ints("strides", vec![0, 1])], &x, Some(&w)),
            None
        );
    }

    #[test]
    fn grid_sample_takes_the_grid_size() {
        let tys = [
            Some(TensorType::new(DType::F32, &[8, 32, 20, 20])),
            Some(TensorType::new(DType::F32, &[8, 300, 4, 2])),
        ];
        let cx = InferCx {
            op: "GridSample",
            at: &[],
            tys: &tys,
            vals: &[None, None],
            opset: 17,
        };
        assert_eq!(
            static_grid_sample(&cx),
            Some(vec![Some(TensorType::new(DType::F32, &[8, 32, 300, 4]))])
        );
    }
}
