//! `quantize`: explicit INT8 quantization with QuantizeLinear/DequantizeLinear pairs.
//!
//! TensorRT-RTX has no implicit INT8 calibrator: its networks are strongly typed, so INT8 has
//! to be spelled out in the ONNX model as Q/DQ nodes, which TensorRT then fuses into its
//! INT8 kernels. This pass puts them where TensorRT's fusions look for them:
//!
//! - the activation input of every Conv, Gemm and MatMul whose weight is a constant: one
//!   per-tensor Q/DQ pair per tensor, shared by all the quantized ops reading it;
//! - the weight of those ops: an INT8 initializer, symmetric, one scale per output channel,
//!   read through a DequantizeLinear (per-axis, so opset 13 or later);
//! - the skip input of a residual Add whose other input is a Conv output, so TensorRT can fuse
//!   Conv + Add in INT8;
//! - never a bias (TensorRT-RTX's parser rejects the INT32 DequantizeLinear a quantized bias
//!   needs), and zero points are always 0 (TensorRT supports symmetric quantization only).
//!
//! Everything else stays float: layer norms, softmax, the attention score and value MatMuls
//! (both operands are activations, with ranges that move with the input), GridSample and the
//! box head's Sigmoid. The report says what was kept and why.
//!
//! Activation ranges come from calibration (the `quant` module, a layer above the passes); the
//! pass itself is a pure function of the graph and those ranges, so the same images give the
//! same model.

use std::collections::{BTreeMap, HashMap, HashSet};

use ndarray::{ArrayD, IxDyn};
use sha2::{Digest, Sha256};

use crate::ir::{DType, Graph, NodeId, NodeKind, Port, TensorType};
use crate::load::proto::StringStringEntryProto;
use crate::pass::{Context, Outcome, Pass};
use crate::passes::to_fp16::{layernorm_patterns, output_sigmoids, PRECISION_KEY};
use crate::tensor::attrs;
use crate::tensor::Tensor;

/// Metadata keys set on a quantized model.
pub const METHOD_KEY: &str = "detrc.quant.method";
pub const IMAGES_KEY: &str = "detrc.quant.images";
pub const SCALES_KEY: &str = "detrc.quant.scales_sha256";

/// The numeric format of the Q/DQ pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Signed 8-bit integers, symmetric: activations and weights map ±amax to ±127.
    #[default]
    Int8,
    /// FP8 E4M3 (no infinities, `FLOAT8E4M3FN`): ±amax maps to ±448. Its Q/DQ operators are
    /// those of opset 19, so the model is moved there first ([`crate::ir::opset::raise`]).
    Fp8,
}

/// ONNX's `TensorProto.DataType.FLOAT8E4M3FN`.
pub const FLOAT8E4M3FN: DType = DType(17);

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Int8 => "int8",
            Format::Fp8 => "fp8",
        }
    }
    /// The largest magnitude of the format: amax maps to it.
    fn qmax(self) -> f32 {
        match self {
            Format::Int8 => 127.0,
            Format::Fp8 => 448.0,
        }
    }
    /// The element type of quantized values and zero points.
    fn dtype(self) -> DType {
        match self {
            Format::Int8 => DType::I8,
            Format::Fp8 => FLOAT8E4M3FN,
        }
    }
    /// The opset its Q/DQ operators need (per-axis DequantizeLinear: 13; float8: 19).
    fn opset(self) -> i64 {
        match self {
            Format::Int8 => 13,
            Format::Fp8 => 19,
        }
    }
    /// Zero points: 0 in the format's encoding (also 0x00 for E4M3FN).
    fn zeros(self, n: Option<usize>) -> crate::load::proto::TensorProto {
        let mut t = zeros_i8(n).to_proto("");
        t.data_type = Some(self.dtype().0);
        t
    }
    /// Values already divided by their scale, in the format's encoding.
    fn encode(self, shape: &[usize], scaled: &[f32]) -> crate::load::proto::TensorProto {
        let arr = |v: Vec<u8>| ArrayD::from_shape_vec(IxDyn(shape), v).expect("same shape");
        match self {
            Format::Int8 => {
                let q = scaled
                    .iter()
                    .map(|v| v.round_ties_even().clamp(-127.0, 127.0) as i8 as u8)
                    .collect();
                let mut t = Tensor::U8(arr(q)).to_proto("");
                t.data_type = Some(DType::I8.0);
                t
            }
            Format::Fp8 => {
                let mut t =
                    Tensor::U8(arr(scaled.iter().map(|&v| e4m3fn(v)).collect())).to_proto("");
                t.data_type = Some(FLOAT8E4M3FN.0);
                t
            }
        }
    }
}

/// The E4M3FN value of an 8-bit code (0..=0x7E positive finite; 0x7F is NaN).
fn e4m3fn_value(code: u8) -> f32 {
    let (e, m) = (((code >> 3) & 0xF) as i32, (code & 7) as f32);
    if e == 0 {
        m / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + m / 8.0) * 2f32.powi(e - 7)
    }
}

/// f32 to FP8 E4M3FN as QuantizeLinear-19 does with `saturate=1`: round to nearest, ties to
/// the even code, magnitudes past 448 to ±448, NaN to NaN. Found in the table of the 127
/// finite magnitudes, which is exact where bit tricks are easy to get wrong.
pub fn e4m3fn(v: f32) -> u8 {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0..=0x7Eu8).map(e4m3fn_value).collect());
    if v.is_nan() {
        return 0x7F;
    }
    let sign = if v.is_sign_negative() { 0x80 } else { 0 };
    let a = v.abs();
    let i = table.partition_point(|&t| t < a);
    let code = if i == 0 {
        0
    } else if i == table.len() {
        0x7E
    } else {
        let (lo, hi) = (table[i - 1], table[i]);
        match (a - lo).partial_cmp(&(hi - a)) {
            Some(std::cmp::Ordering::Less) => i - 1,
            Some(std::cmp::Ordering::Greater) => i,
            _ if (i - 1) % 2 == 0 => i - 1,
            _ => i,
        }
    };
    sign | code as u8
}

/// Where the pass puts Q/DQ pairs, decided from the graph alone (before calibration, which
/// needs to know the tensors to observe).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Activation tensors to quantize (by name, in topological order) and the (op, input slot)
    /// pairs that read them through the Q/DQ pair.
    pub activations: Vec<(String, Vec<(NodeId, usize)>)>,
    /// Ops whose weight (input 1) is quantized per channel, with the channel axis.
    pub weights: Vec<(NodeId, usize)>,
    /// Residual Adds whose skip input is quantized (also listed in `activations`).
    pub residual_adds: usize,
    /// Quantized ops by op type.
    pub ops: BTreeMap<String, usize>,
    /// Ops kept in float: reason -> op types -> count.
    pub kept: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Plan {
    fn keep(&mut self, reason: &str, op: &str) {
        *self
            .kept
            .entry(reason.to_string())
            .or_default()
            .entry(op.to_string())
            .or_insert(0) += 1;
    }

    /// Names of the activation tensors calibration has to observe.
    pub fn tensors(&self) -> Vec<String> {
        self.activations.iter().map(|(n, _)| n.clone()).collect()
    }

    /// One line per reason: "LayerNormalization×16 (normalization statistics stay float)".
    pub fn kept_lines(&self) -> Vec<String> {
        self.kept
            .iter()
            .map(|(why, ops)| {
                let ops: Vec<String> = ops.iter().map(|(k, v)| format!("{k}×{v}")).collect();
                format!("{} ({why})", ops.join(", "))
            })
            .collect()
    }
}

const WHY_ATTENTION: &str = "attention score/value MatMul: both inputs are activations";
const WHY_NORM: &str = "normalization statistics stay float";
const WHY_SOFTMAX: &str = "softmax stays float";
const WHY_GRID: &str = "sampling locations stay float";
const WHY_BOX: &str = "box head sigmoid stays float";
const WHY_WEIGHT: &str = "weight is not a float constant";
const WHY_CONST_INPUT: &str = "the data input is a constant";

fn is_const(g: &Graph, p: Port) -> bool {
    matches!(
        g.node(p.node).kind,
        NodeKind::Const {
            also_input: None,
            ..
        }
    )
}

fn is_f32(g: &Graph, p: Port) -> bool {
    g.ty(p).is_some_and(|t| t.dtype == DType::F32)
}

fn const_f32_rank(g: &Graph, p: Port) -> Option<usize> {
    let t = g.const_tensor(p)?;
    (is_const(g, p) && t.data_type == Some(DType::F32.0)).then_some(t.dims.len())
}

/// True if the model has any Q/DQ node already.
pub fn has_qdq(g: &Graph) -> bool {
    g.g.node_weights()
        .any(|n| n.is("QuantizeLinear") || n.is("DequantizeLinear"))
}

/// Decides where Q/DQ pairs go. `residual`: also quantize the skip input of Conv residual Adds.
pub fn plan(g: &Graph, residual: bool) -> Result<Plan, String> {
    let order = g
        .topo_order()
        .map_err(|n| format!("the graph has a cycle through {}", g.node(n).display_name()))?;
    let mut plan = Plan::default();
    let mut acts: Vec<(Port, Vec<(NodeId, usize)>)> = Vec::new();
    let mut act_index: HashMap<Port, usize> = HashMap::new();
    let mut add_act = |p: Port, reader: (NodeId, usize)| {
        let i = *act_index.entry(p).or_insert_with(|| {
            acts.push((p, Vec::new()));
            acts.len() - 1
        });
        acts[i].1.push(reader);
    };
    let norms: HashSet<NodeId> = layernorm_patterns(g).into_iter().collect();
    let box_sigmoids: HashSet<NodeId> = output_sigmoids(g).into_iter().collect();
    for n in order {
        let node = g.node(n);
        let NodeKind::Op(op) = &node.kind else {
            continue;
        };
        if !crate::ir::is_onnx_domain(&op.domain) {
            continue;
        }
        let ins = g.inputs(n);
        let t = op.op_type.as_str();
        match t {
            "Conv" | "Gemm" | "MatMul" => {
                let (Some(x), Some(w)) = (
                    ins.first().copied().flatten(),
                    ins.get(1).copied().flatten(),
                ) else {
                    continue;
                };
                if !is_f32(g, x) && !is_const(g, x) {
                    continue;
                }
                if is_const(g, x) {
                    plan.keep(WHY_CONST_INPUT, t);
                    continue;
                }
                let Some(rank) = const_f32_rank(g, w) else {
                    if t == "MatMul" && !is_const(g, w) {
                        plan.keep(WHY_ATTENTION, t);
                    } else {
                        plan.keep(WHY_WEIGHT, t);
                    }
                    continue;
                };
                let axis = match t {
                    "Conv" if rank >= 3 => 0,
                    "Gemm" if rank == 2 => {
                        if attrs::int_or(&op.attrs, "transB", 0) != 0 {
                            0
                        } else {
                            1
                        }
                    }
                    "MatMul" if rank >= 2 => rank - 1,
                    _ => {
                        plan.keep(WHY_WEIGHT, t);
                        continue;
                    }
                };
                add_act(x, (n, 0));
                plan.weights.push((n, axis));
                *plan.ops.entry(t.to_string()).or_insert(0) += 1;
            }
            "Add" if residual => {
                let (Some(a), Some(b)) = (
                    ins.first().copied().flatten(),
                    ins.get(1).copied().flatten(),
                ) else {
                    continue;
                };
                let four_d = |p: Port| g.ty(p).and_then(|t| t.rank()) == Some(4);
                if is_const(g, a) || is_const(g, b) || !is_f32(g, a) || !is_f32(g, b) {
                    continue;
                }
                if !four_d(a)
                    || !four_d(b)
                    || g.ty(a).map(|t| &t.shape) != g.ty(b).map(|t| &t.shape)
                {
                    continue;
                }
                let conv = |p: Port| g.node(p.node).is("Conv");
                let skip = match (conv(a), conv(b)) {
                    (true, false) => (b, 1),
                    (false, true) => (a, 0),
                    // torch's `out += identity` puts the skip second.
                    (true, true) => (b, 1),
                    (false, false) => continue,
                };
                add_act(skip.0, (n, skip.1));
                plan.residual_adds += 1;
            }
            "LayerNormalization" | "GroupNormalization" | "InstanceNormalization" => {
                plan.keep(WHY_NORM, t)
            }
            _ if norms.contains(&n) => plan.keep(WHY_NORM, "opset-12 layer norm"),
            "Softmax" | "LogSoftmax" => plan.keep(WHY_SOFTMAX, t),
            "GridSample" => plan.keep(WHY_GRID, t),
            "Sigmoid" if box_sigmoids.contains(&n) => plan.keep(WHY_BOX, t),
            _ => {}
        }
    }
    plan.activations = acts
        .into_iter()
        .map(|(p, readers)| (g.value(p).name.clone(), readers))
        .collect();
    Ok(plan)
}

/// The pass. `ranges` maps activation tensor names to their calibrated clip value (amax).
#[derive(Debug, Clone, Default)]
pub struct Quantize {
    pub ranges: BTreeMap<String, f32>,
    pub format: Format,
    /// Quantize the skip input of residual Adds (see the module docs).
    pub residual: bool,
    /// Only weights (no activation Q/DQ): TensorRT's weight-only quantization.
    pub weight_only: bool,
    /// Recorded in the model's metadata.
    pub method: String,
    pub images: usize,
}

/// What the pass did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub activations_quantized: usize,
    pub weights_quantized: usize,
    pub residual_adds: usize,
    pub ops_quantized: BTreeMap<String, usize>,
    /// One line per reason an op stayed float.
    pub kept_float: Vec<String>,
    /// sha256 over every scale, in a canonical order.
    pub scales_sha256: String,
    /// How the opset was raised for the format's Q/DQ operators (empty: not needed).
    pub opset: Vec<String>,
}

impl Summary {
    pub fn lines(&self) -> Vec<String> {
        let ops: Vec<String> = self
            .ops_quantized
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        let mut v = vec![format!(
            "{} activation tensors and {} weights (per channel) quantized, {} residual Adds; ops: {}",
            self.activations_quantized,
            self.weights_quantized,
            self.residual_adds,
            if ops.is_empty() { "none".into() } else { ops.join(", ") }
        )];
        v.extend(self.kept_float.iter().map(|l| format!("kept float: {l}")));
        if !self.opset.is_empty() {
            v.push(format!("opset: {}", self.opset.join("; ")));
        }
        v
    }
}

impl Pass for Quantize {
    fn name(&self) -> &'static str {
        "quantize"
    }
    fn about(&self) -> &'static str {
        "INT8 or FP8 Q/DQ on Conv/MatMul/Gemm inputs and weights from calibrated ranges (detrc quantize)"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        if has_qdq(g) {
            return Ok(Outcome::NotApplicable(
                "the model has Q/DQ nodes already".into(),
            ));
        }
        let s = self.apply(g)?;
        if s.weights_quantized == 0 {
            return Ok(Outcome::NotApplicable(
                "no Conv, MatMul or Gemm with a constant weight".into(),
            ));
        }
        Ok(Outcome::Changed(s.lines()))
    }
}

fn scalar_f32(v: f32) -> Tensor {
    Tensor::F32(ArrayD::from_elem(IxDyn(&[]), v))
}

fn zeros_i8(n: Option<usize>) -> Tensor {
    match n {
        None => Tensor::I8(ArrayD::from_elem(IxDyn(&[]), 0)),
        Some(n) => Tensor::I8(ArrayD::from_elem(IxDyn(&[n]), 0)),
    }
}

/// Per-channel symmetric int8 quantization of `w` along `axis`: (int8 values, scales).
pub fn quantize_weight(w: &ArrayD<f32>, axis: usize, qmax: f32) -> (ArrayD<i8>, Vec<f32>) {
    let (scaled, scales) = scale_weight(w, axis, qmax);
    let q = scaled
        .iter()
        .map(|v| v.round_ties_even().clamp(-qmax, qmax) as i8)
        .collect();
    (
        ArrayD::from_shape_vec(IxDyn(w.shape()), q).expect("same shape"),
        scales,
    )
}

/// `w` divided by per-channel scales (amax / qmax along `axis`): (scaled values, scales).
fn scale_weight(w: &ArrayD<f32>, axis: usize, qmax: f32) -> (Vec<f32>, Vec<f32>) {
    let shape = w.shape().to_vec();
    let channels = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut amax = vec![0f32; channels];
    let flat: Vec<f32> = w.iter().copied().collect();
    for (i, v) in flat.iter().enumerate() {
        let c = (i / inner) % channels;
        amax[c] = amax[c].max(v.abs());
    }
    // A zero channel still needs a positive scale; its values quantize to 0 whatever it is.
    let scales: Vec<f32> = amax
        .iter()
        .map(|&a| if a > 0.0 { a / qmax } else { 1.0 })
        .collect();
    let scaled = flat
        .iter()
        .enumerate()
        .map(|(i, &v)| v / scales[(i / inner) % channels])
        .collect();
    (scaled, scales)
}

impl Quantize {
    pub fn apply(&self, g: &mut Graph) -> Result<Summary, String> {
        if g.opset() < 13 {
            return Err(format!(
                "per-channel weight quantization needs opset 13 or later (DequantizeLinear's \
                 axis); the model imports opset {}",
                g.opset()
            ));
        }
        let plan = plan(g, self.residual && !self.weight_only)?;
        let raised = crate::ir::opset::raise(g, self.format.opset())?;
        let qmax = self.format.qmax();
        let mut summary = Summary {
            ops_quantized: plan.ops.clone(),
            kept_float: plan.kept_lines(),
            opset: raised,
            ..Default::default()
        };
        let mut hash = Sha256::new();

        // Weights: one int8 initializer and DequantizeLinear per weight tensor.
        let mut done: HashMap<(Port, usize), Port> = HashMap::new();
        let mut old_weights: Vec<NodeId> = Vec::new();
        for &(n, axis) in &plan.weights {
            let w = g.input(n, 1).expect("planned weight");
            let dq = match done.get(&(w, axis)) {
                Some(dq) => *dq,
                None => {
                    let name = g.value(w).name.clone();
                    let t = g.const_tensor(w).expect("planned constant");
                    let Tensor::F32(arr) = Tensor::from_proto(t)? else {
                        return Err(format!("weight '{name}' is not f32"));
                    };
                    let (scaled, scales) = scale_weight(&arr, axis, qmax);
                    hash.update(format!("w {name} {axis}\n"));
                    for s in &scales {
                        hash.update(s.to_le_bytes());
                    }
                    let c = scales.len();
                    let qc = g.add_const(
                        &format!("{name}_quantized"),
                        self.format.encode(arr.shape(), &scaled),
                    );
                    let sc = g.add_const(
                        &format!("{name}_scale"),
                        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[c]), scales).expect("1-D"))
                            .to_proto(""),
                    );
                    let zp = g.add_const(&format!("{name}_zero_point"), self.format.zeros(Some(c)));
                    let rank = arr.ndim();
                    let id = g.add_op(
                        "DequantizeLinear",
                        &format!("{name}_dequantize"),
                        &[
                            Some(Port::new(qc, 0)),
                            Some(Port::new(sc, 0)),
                            Some(Port::new(zp, 0)),
                        ],
                        vec![attrs::make_int("axis", axis as i64)],
                        1,
                    );
                    g.value_mut(Port::new(id, 0)).ty = Some(TensorType::new(
                        DType::F32,
                        &arr.shape().iter().map(|&d| d as i64).collect::<Vec<_>>(),
                    ));
                    debug_assert_eq!(rank, g.ty(Port::new(id, 0)).and_then(|t| t.rank()).unwrap());
                    old_weights.push(w.node);
                    let p = Port::new(id, 0);
                    done.insert((w, axis), p);
                    summary.weights_quantized += 1;
                    p
                }
            };
            g.set_input(n, 1, Some(dq));
        }

        // Activations: one Q/DQ pair per tensor, read by the planned consumers only.
        if !self.weight_only {
            for (name, readers) in &plan.activations {
                let amax = *self.ranges.get(name).ok_or_else(|| {
                    format!(
                        "no calibrated range for tensor '{name}' (calibration did not observe it)"
                    )
                })?;
                if !(amax.is_finite() && amax > 0.0) {
                    summary.kept_float.push(format!(
                        "'{name}' (calibrated range {amax}: nothing to quantize)"
                    ));
                    continue;
                }
                let src = g.input(readers[0].0, readers[0].1).expect("planned reader");
                let scale = amax / qmax;
                hash.update(format!("a {name}\n"));
                hash.update(scale.to_le_bytes());
                let sc = g.add_const(&format!("{name}_scale"), scalar_f32(scale).to_proto(""));
                let zp = g.add_const(&format!("{name}_zero_point"), self.format.zeros(None));
                let (sp, zpp) = (Some(Port::new(sc, 0)), Some(Port::new(zp, 0)));
                let ty = g.ty(src).cloned();
                let q = g.add_op(
                    "QuantizeLinear",
                    &format!("{name}_quantize"),
                    &[Some(src), sp, zpp],
                    vec![],
                    1,
                );
                let dq = g.add_op(
                    "DequantizeLinear",
                    &format!("{name}_dequantize"),
                    &[Some(Port::new(q, 0)), sp, zpp],
                    vec![],
                    1,
                );
                if let Some(ty) = ty {
                    g.value_mut(Port::new(q, 0)).ty = Some(TensorType {
                        dtype: self.format.dtype(),
                        ..ty.clone()
                    });
                    g.value_mut(Port::new(dq, 0)).ty = Some(ty);
                }
                for &(n, slot) in readers {
                    g.set_input(n, slot, Some(Port::new(dq, 0)));
                }
                summary.activations_quantized += 1;
            }
            summary.residual_adds = plan.residual_adds;
        }
        for n in old_weights {
            if g.contains(n) && g.use_count(Port::new(n, 0)) == 0 {
                g.remove_node(n);
            }
        }
        summary.scales_sha256 = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let precision = if self.weight_only {
            format!("{}-weights", self.format.as_str())
        } else {
            self.format.as_str().to_string()
        };
        set_meta(g, PRECISION_KEY, &precision);
        set_meta(g, METHOD_KEY, &self.method);
        set_meta(g, IMAGES_KEY, &self.images.to_string());
        set_meta(g, SCALES_KEY, &summary.scales_sha256);
        Ok(summary)
    }
}

fn set_meta(g: &mut Graph, key: &str, value: &str) {
    let m = &mut g.carry.model.metadata_props;
    m.retain(|e| e.key.as_deref() != Some(key));
    m.push(StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value.into()),
    });
}

/// The format of the model's Q/DQ nodes (by a QuantizeLinear or DequantizeLinear's zero
/// point, else int8 as the Q/DQ default), or None when it has none.
pub fn qdq_format(g: &Graph) -> Option<Format> {
    if !has_qdq(g) {
        return None;
    }
    let fp8 = g.topo_ops().into_iter().any(|n| {
        let node = g.node(n);
        (node.is("QuantizeLinear") || node.is("DequantizeLinear"))
            && g.input(n, 2)
                .and_then(|p| g.ty(p))
                .is_some_and(|t| t.dtype == FLOAT8E4M3FN)
    });
    Some(if fp8 { Format::Fp8 } else { Format::Int8 })
}

/// A metadata value of the model.
pub fn meta<'a>(g: &'a Graph, key: &str) -> Option<&'a str> {
    g.carry
        .model
        .metadata_props
        .iter()
        .find(|e| e.key.as_deref() == Some(key))
        .and_then(|e| e.value.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_per_output_channel_symmetric() {
        let w =
            ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, -2.0, 0.5, 0.0, 0.0, 0.0]).unwrap();
        // MatMul [K=2, N=3]: channels along axis 1.
        let (q, s) = quantize_weight(&w, 1, 127.0);
        assert_eq!(s, vec![1.0 / 127.0, 2.0 / 127.0, 0.5 / 127.0]);
        assert_eq!(
            q.iter().copied().collect::<Vec<_>>(),
            vec![127, -127, 127, 0, 0, 0]
        );
        // Rows as channels: the zero row gets scale 1 and stays 0.
        let (q, s) = quantize_weight(&w, 0, 127.0);
        assert_eq!(s, vec![2.0 / 127.0, 1.0]);
        assert_eq!(
            q.iter().copied().collect::<Vec<_>>(),
            vec![64, -127, 32, 0, 0, 0]
        );
    }

    #[test]
    fn fp8_rounds_to_nearest_even_and_saturates() {
        assert_eq!(e4m3fn(0.0), 0x00);
        assert_eq!(e4m3fn(-0.0), 0x80);
        assert_eq!(e4m3fn(1.0), 0x38); // exponent 7 (bias 7), mantissa 0
        assert_eq!(e4m3fn(448.0), 0x7E);
        assert_eq!(e4m3fn(1e6), 0x7E);
        assert_eq!(e4m3fn(-1e6), 0xFE);
        assert_eq!(e4m3fn(f32::NAN), 0x7F);
        // 1.0625 lies halfway between 1.0 (0x38) and 1.125 (0x39): the even code wins
        assert_eq!(e4m3fn(1.0625), 0x38);
        assert_eq!(e4m3fn(1.1875), 0x3A); // between 1.125 (0x39) and 1.25 (0x3A)
                                          // the smallest subnormal, 2^-9, and half of it (a tie with 0, which is even)
        assert_eq!(e4m3fn(2f32.powi(-9)), 0x01);
        assert_eq!(e4m3fn(2f32.powi(-10)), 0x00);
        // onnxruntime's QuantizeLinear-19 on [0.1, 1.37, 100, 1000] / 0.5 (measured)
        let want = [0.1015625f32, 1.375, 96.0, 224.0];
        for (x, w) in [0.1f32, 1.37, 100.0, 1000.0].iter().zip(want) {
            assert_eq!(e4m3fn_value(e4m3fn(x / 0.5)) * 0.5, w, "{x}");
        }
    }
}
