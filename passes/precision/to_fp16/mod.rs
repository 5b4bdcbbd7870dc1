//! `to-fp16`: runs the model in half precision while its interface stays fp32.
//!
//! TensorRT-RTX networks are strongly typed: an fp16 engine has to come from an fp16 ONNX
//! model, there is no builder flag that lowers precision. This pass produces that model.
//!
//! Every operator that touches fp32 data is given a precision:
//! - *kept* (fp32): the keep-list (by default layer norms, softmax, reductions and cumulative
//!   sums, whose accumulations lose too much in fp16), the ops of an opset-12 layer norm
//!   decomposition (found by pattern), the sigmoid that produces box coordinates, and any
//!   operator outside the standard domain (its type rules are unknown);
//! - *data movement and selection* (Reshape, Gather, Where, Equal, ...): whatever precision
//!   their dynamic inputs already have, so no Cast is spent just to move data;
//! - *cheap elementwise math* (Add, Div, Sin, ...): fp32 only when every dynamic input comes
//!   from a kept operator, which keeps small fp32 islands (the sine position embedding, a
//!   layer norm's affine tail) whole instead of bouncing through fp16;
//! - *everything else* (Conv, MatMul, Gemm, ...): fp16.
//!
//! Constants (initializers, `Constant`, `ConstantOfShape`, and Casts from integers to float)
//! take the precision their consumers need, converted in place, or duplicated when consumers
//! disagree. A Cast is inserted on every remaining fp32<->fp16 edge, after the graph inputs
//! and before the graph outputs. Integer and boolean tensors (shape arithmetic, masks) are
//! never touched.
//!
//! The pass marks the model with the metadata entry `detrc.precision=fp16` and does nothing
//! on a model that carries it, so running it twice (or after `detrc compile --passes
//! ...,to-fp16`) is harmless.

mod anchors;
mod constants;
mod dtypes;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::ir::{is_onnx_domain, DType, Graph, NodeId, NodeKind, Port};
use crate::load::proto::StringStringEntryProto;
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::attrs;
pub use anchors::{index_math, layernorm_patterns, output_sigmoids};
use constants::{convert_initializer, convert_source_op, copy_initializer_f16};
pub use dtypes::infer_dtypes;

/// Metadata key the pass sets on the model it converted.
pub const PRECISION_KEY: &str = "detrc.precision";

/// Operator types kept in fp32 unless the caller gives another list.
pub const DEFAULT_KEEP: &[&str] = &[
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMin",
    "GlobalAveragePool",
    "GlobalLpPool",
    "CumSum",
    "Range",
    // TensorRT wants GridSample's input and grid in one type, and Deformable DETR's grid is
    // computed from sampling offsets in fp32 (or fp64) arithmetic: the whole op stays fp32,
    // which also keeps the sampling locations exact.
    "GridSample",
];

/// Ops whose output is their input rearranged, selected or compared: running them in the
/// precision their data already has costs no accuracy and saves a Cast.
const MOVEMENT: &[&str] = &[
    "Identity",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Gather",
    "GatherElements",
    "GatherND",
    "Slice",
    "Concat",
    "Split",
    "Expand",
    "Tile",
    "Pad",
    "Where",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "DepthToSpace",
    "SpaceToDepth",
    "ScatterND",
    "ScatterElements",
    "Cast",
];

/// Ops whose ONNX type constraints allow fp32 (or the data types they read) only.
const FP32_ONLY: &[&str] = &["NonMaxSuppression"];

/// Cheap elementwise math that stays fp32 inside an fp32 island.
const ELEMENTWISE: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
    "Sin",
    "Cos",
    "Tan",
    "Neg",
    "Abs",
    "Floor",
    "Ceil",
    "Round",
    "Clip",
    "Erf",
    "Tanh",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "Relu",
];

/// Ops that pass through data unchanged on the way from the box sigmoid to a graph output.
const PASS_THROUGH: &[&str] = &[
    "Identity",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Gather",
    "Slice",
    "Concat",
    "Split",
    "Cast",
];

/// Largest finite fp16 value: finite fp32 constants beyond it would become infinities.
const F16_MAX: f32 = 65504.0;

#[derive(Debug, Clone)]
pub struct ToFp16 {
    /// Operator types, node names, or output tensor names (names that stay put when a tool
    /// renames nodes, and that every node has) of operators that stay fp32.
    pub keep: Vec<String>,
    /// Keep the ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div layer norm of opset < 17 in fp32.
    pub keep_layernorm_pattern: bool,
    /// Keep a Sigmoid whose result reaches a graph output unchanged (DETR's boxes) in fp32.
    pub keep_output_sigmoid: bool,
    /// Keep the float arithmetic that computes integer indices in fp32 (see [`index_math`]).
    pub keep_index_math: bool,
}

impl Default for ToFp16 {
    fn default() -> Self {
        ToFp16 {
            keep: DEFAULT_KEEP.iter().map(|s| s.to_string()).collect(),
            keep_layernorm_pattern: true,
            keep_output_sigmoid: true,
            keep_index_math: true,
        }
    }
}

/// What the conversion did, for reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub ops_fp16: usize,
    /// Kept fp32 ops by op type.
    pub ops_fp32: BTreeMap<String, usize>,
    pub casts_inserted: usize,
    pub constants_converted: usize,
    /// Bytes of constant data before and after.
    pub const_bytes_before: u64,
    pub const_bytes_after: u64,
}

impl Pass for ToFp16 {
    fn name(&self) -> &'static str {
        "to-fp16"
    }
    fn about(&self) -> &'static str {
        "run in fp16 with fp32 inputs/outputs; keeps norms, softmax, reductions, box sigmoid fp32"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        if is_fp16(g) {
            return Ok(Outcome::Unchanged);
        }
        let s = self.convert(g)?;
        if s.ops_fp16 == 0 && s.constants_converted == 0 {
            return Ok(Outcome::NotApplicable(
                "no fp32 computation to convert".to_string(),
            ));
        }
        let kept: Vec<String> = s.ops_fp32.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        Ok(Outcome::Changed(vec![
            format!(
                "{} ops to fp16, {} kept fp32 ({})",
                s.ops_fp16,
                s.ops_fp32.values().sum::<usize>(),
                if kept.is_empty() {
                    "none".to_string()
                } else {
                    kept.join(", ")
                }
            ),
            format!(
                "{} constants converted ({} -> {} bytes), {} casts inserted",
                s.constants_converted, s.const_bytes_before, s.const_bytes_after, s.casts_inserted
            ),
        ]))
    }
}

/// True if the model was converted by this pass already.
pub fn is_fp16(g: &Graph) -> bool {
    g.carry
        .model
        .metadata_props
        .iter()
        .any(|e| e.key.as_deref() == Some(PRECISION_KEY) && e.value.as_deref() == Some("fp16"))
}

/// How a tensor of an fp32 candidate is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Produced in this element type; `anchored` when it comes from a kept op (or an island
    /// grown from one), as opposed to a graph input.
    Fixed { dtype: DType, anchored: bool },
    /// A constant-like value: produced in whatever precision its consumers need.
    Flexible,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Keep,
    Movement,
    Elementwise,
    Compute,
}

impl ToFp16 {
    /// Converts the graph; `Err` leaves the graph half-rewritten (the pass manager restores it).
    pub fn convert(&self, g: &mut Graph) -> Result<Summary, String> {
        let dtypes = infer_dtypes(g)?;
        let is_cand = |p: &Port| dtypes.get(p) == Some(&DType::F32);
        let order = g
            .topo_order()
            .map_err(|n| format!("the graph has a cycle through {}", g.node(n).display_name()))?;
        let mut anchors: HashSet<NodeId> = HashSet::new();
        if self.keep_layernorm_pattern {
            anchors.extend(layernorm_patterns(g));
        }
        if self.keep_output_sigmoid {
            anchors.extend(output_sigmoids(g));
        }
        if self.keep_index_math {
            anchors.extend(index_math(g));
        }
        let keep: HashSet<&str> = self.keep.iter().map(String::as_str).collect();

        // 1. Decide every operator's precision, in topological order so each op sees how its
        //    inputs are produced.
        let mut state: HashMap<Port, State> = HashMap::new();
        let mut op_prec: HashMap<NodeId, DType> = HashMap::new();
        let mut flexible_ops: Vec<NodeId> = Vec::new();
        let mut summary = Summary::default();
        for &n in &order {
            let node = g.node(n);
            let outs: Vec<Port> = (0..node.outputs.len()).map(|s| Port::new(n, s)).collect();
            match &node.kind {
                NodeKind::Input(_) => {
                    for p in outs.iter().filter(|p| is_cand(p)) {
                        state.insert(
                            *p,
                            State::Fixed {
                                dtype: DType::F32,
                                anchored: false,
                            },
                        );
                    }
                    continue;
                }
                NodeKind::Const { also_input, .. } => {
                    if is_cand(&outs[0]) {
                        // An initializer listed as a graph input can be overridden by the
                        // caller in fp32: it is part of the interface.
                        let st = if also_input.is_some() {
                            State::Fixed {
                                dtype: DType::F32,
                                anchored: false,
                            }
                        } else {
                            State::Flexible
                        };
                        state.insert(outs[0], st);
                    }
                    continue;
                }
                NodeKind::Op(_) => {}
            }
            let ins = g.inputs(n);
            let follow_in: Vec<Port> = ins
                .iter()
                .enumerate()
                .filter_map(|(slot, p)| p.filter(|p| is_cand(p) && follows(node, slot)))
                .collect();
            let cand_out: Vec<Port> = outs.iter().copied().filter(|p| is_cand(p)).collect();
            let any_cand_in = ins.iter().flatten().any(&is_cand);
            if follow_in.is_empty() && cand_out.is_empty() {
                continue;
            }
            if is_source(g, n, &dtypes) {
                for p in &cand_out {
                    state.insert(*p, State::Flexible);
                }
                flexible_ops.push(n);
                continue;
            }
            let op = node.op().expect("an operator");
            let class = if anchors.contains(&n)
                || !is_onnx_domain(&op.domain)
                || keep.contains(op.op_type.as_str())
                || FP32_ONLY.contains(&op.op_type.as_str())
                || (!op.name.is_empty() && keep.contains(op.name.as_str()))
                || node.outputs.iter().any(|v| keep.contains(v.name.as_str()))
            {
                Class::Keep
            } else if MOVEMENT.contains(&op.op_type.as_str()) {
                Class::Movement
            } else if ELEMENTWISE.contains(&op.op_type.as_str()) {
                Class::Elementwise
            } else if !any_cand_in {
                // Makes fp32 out of nothing we know how to convert (random generators and
                // the like): leave it alone.
                Class::Keep
            } else {
                Class::Compute
            };
            // Inputs this op reads whose precision is already fixed; a Cast reads any type,
            // so its own input counts too.
            let dynamic: Vec<State> = ins
                .iter()
                .enumerate()
                .filter_map(|(slot, p)| {
                    let p = (*p)?;
                    if !is_cand(&p) || !(follows(node, slot) || op.op_type == "Cast") {
                        return None;
                    }
                    state.get(&p).copied().filter(|s| *s != State::Flexible)
                })
                .collect();
            let all_fp32 = |need_anchor: bool| {
                !dynamic.is_empty()
                    && dynamic.iter().all(|s| {
                        matches!(s, State::Fixed { dtype, anchored }
                            if *dtype == DType::F32 && (*anchored || !need_anchor))
                    })
            };
            let (prec, anchored) = match class {
                Class::Keep => (DType::F32, true),
                Class::Movement if all_fp32(false) => (DType::F32, all_fp32(true)),
                Class::Elementwise if all_fp32(true) => (DType::F32, true),
                _ => (DType::F16, false),
            };
            op_prec.insert(n, prec);
            if prec == DType::F16 {
                summary.ops_fp16 += 1;
            } else {
                *summary.ops_fp32.entry(op.op_type.clone()).or_insert(0) += 1;
            }
            for p in cand_out {
                state.insert(
                    p,
                    State::Fixed {
                        dtype: prec,
                        anchored,
                    },
                );
            }
        }

        // 2. What each candidate tensor's readers need.
        let mut demand: HashMap<Port, Vec<DType>> = HashMap::new();
        for (&n, &prec) in &op_prec {
            let node = g.node(n);
            for (slot, p) in g.inputs(n).into_iter().enumerate() {
                let Some(p) = p else { continue };
                if is_cand(&p) && follows(node, slot) {
                    demand.entry(p).or_default().push(prec);
                }
            }
        }
        for o in &g.outputs {
            if is_cand(&o.src) {
                demand.entry(o.src).or_default().push(DType::F32);
            }
        }

        // 3. Flexible producers take the precision all their readers agree on; fp32 otherwise.
        let wants_f16 = |p: &Port| {
            demand
                .get(p)
                .is_some_and(|d| !d.is_empty() && d.iter().all(|&t| t == DType::F16))
        };
        let flexible_ports: Vec<Port> = state
            .iter()
            .filter(|(_, s)| **s == State::Flexible)
            .map(|(p, _)| *p)
            .collect();
        let mut produced: HashMap<Port, DType> = HashMap::new();
        for (p, s) in &state {
            if let State::Fixed { dtype, .. } = s {
                produced.insert(*p, *dtype);
            }
        }
        for p in flexible_ports {
            let dt = if wants_f16(&p) {
                DType::F16
            } else {
                DType::F32
            };
            produced.insert(p, dt);
        }

        // 4. Rewrite producers: op outputs, Cast targets, constants.
        for (&n, &prec) in &op_prec {
            if prec != DType::F16 {
                continue;
            }
            if g.node(n).is("Cast") {
                set_cast_to(g, n, DType::F16);
            }
        }
        let mut ports: Vec<Port> = produced.keys().copied().collect();
        ports.sort();
        for &p in &ports {
            if produced[&p] != DType::F16 {
                continue;
            }
            if matches!(g.node(p.node).kind, NodeKind::Const { .. }) {
                let (before, after) = convert_initializer(g, p.node)?;
                summary.constants_converted += 1;
                summary.const_bytes_before += before;
                summary.const_bytes_after += after;
            } else if flexible_ops.contains(&p.node) {
                convert_source_op(g, p.node)?;
                summary.constants_converted += 1;
            }
            if let Some(ty) = g.value_mut(p).ty.as_mut() {
                ty.dtype = DType::F16;
            }
        }
        for n in g.g.node_indices() {
            if let Some(t) = g.node(n).tensor() {
                if produced
                    .get(&Port::new(n, 0))
                    .is_none_or(|d| *d != DType::F16)
                {
                    let b = t.raw_data.as_ref().map_or(0, |r| r.len() as u64);
                    summary.const_bytes_before += b;
                    summary.const_bytes_after += b;
                }
            }
        }

        // 5. Reconnect every candidate edge whose two ends disagree.
        let mut casts: HashMap<(Port, DType), Port> = HashMap::new();
        let mut copies: HashMap<Port, Port> = HashMap::new();
        let mut readers: Vec<(NodeId, usize, Port, DType)> = Vec::new();
        for (&n, &prec) in &op_prec {
            let node = g.node(n);
            for (slot, p) in g.inputs(n).into_iter().enumerate() {
                let Some(p) = p else { continue };
                if is_cand(&p) && follows(node, slot) && produced.get(&p) != Some(&prec) {
                    readers.push((n, slot, p, prec));
                }
            }
        }
        readers.sort_by_key(|&(n, slot, _, _)| (g.node(n).seq, slot));
        for (n, slot, src, want) in readers {
            // An initializer that is also a graph input can be overridden at run time, so it
            // gets a Cast like any input, never a copy.
            let is_const = matches!(
                g.node(src.node).kind,
                NodeKind::Const {
                    also_input: None,
                    ..
                }
            );
            let new_src = if is_const && want == DType::F16 {
                // Mixed readers of one initializer: an fp16 copy beats a Cast at run time.
                match copies.get(&src) {
                    Some(c) => *c,
                    None => {
                        let c = copy_initializer_f16(g, src)?;
                        summary.constants_converted += 1;
                        copies.insert(src, c);
                        c
                    }
                }
            } else {
                cast(g, &mut casts, &mut summary, src, want)
            };
            g.set_input(n, slot, Some(new_src));
        }
        for i in 0..g.outputs.len() {
            let src = g.outputs[i].src;
            if is_cand(&src) && produced.get(&src) == Some(&DType::F16) {
                let c = cast(g, &mut casts, &mut summary, src, DType::F32);
                g.outputs[i].src = c;
                // A type the importer copied from the output declaration now belongs to the
                // Cast; left on the inner tensor it would be written as value_info, symbolic
                // dimension names included, which runtimes then try to unify with real sizes.
                let v = g.value_mut(src);
                if v.info.is_none() {
                    v.ty = None;
                }
            }
        }

        // 6. Retype what is now produced in fp16.
        for (&n, &prec) in &op_prec {
            if prec != DType::F16 {
                continue;
            }
            for s in 0..g.node(n).outputs.len() {
                let p = Port::new(n, s);
                if is_cand(&p) {
                    if let Some(ty) = g.value_mut(p).ty.as_mut() {
                        ty.dtype = DType::F16;
                    }
                }
            }
        }
        let md = &mut g.carry.model.metadata_props;
        md.retain(|e| e.key.as_deref() != Some(PRECISION_KEY));
        md.push(StringStringEntryProto {
            key: Some(PRECISION_KEY.into()),
            value: Some("fp16".into()),
        });
        Ok(summary)
    }
}

/// True if input `slot` of `node` must have the op's own float type. Shape-like ops and Cast
/// read any type; Resize and Upsample read fp32 scales whatever the data type is.
fn follows(node: &crate::ir::Node, slot: usize) -> bool {
    let Some(op) = node.op() else { return false };
    if !is_onnx_domain(&op.domain) {
        return true;
    }
    match op.op_type.as_str() {
        "Shape" | "Size" | "NonZero" | "Cast" => false,
        "CastLike" => slot == 1,
        "Resize" | "Upsample" => slot == 0,
        _ => true,
    }
}

/// Constant-like producers of fp32: `Constant`, `ConstantOfShape`, and Casts from a non-float
/// type. They can produce fp16 directly at no cost.
fn is_source(g: &Graph, n: NodeId, dtypes: &HashMap<Port, DType>) -> bool {
    let node = g.node(n);
    if node.is("Constant") || node.is("ConstantOfShape") {
        return true;
    }
    if node.is("Cast") {
        let from = g
            .input(n, 0)
            .and_then(|p| dtypes.get(&p).copied())
            .unwrap_or(DType::UNDEFINED);
        return from != DType::UNDEFINED && !from.is_float();
    }
    false
}

fn cast(
    g: &mut Graph,
    cache: &mut HashMap<(Port, DType), Port>,
    summary: &mut Summary,
    src: Port,
    to: DType,
) -> Port {
    if let Some(p) = cache.get(&(src, to)) {
        return *p;
    }
    let hint = format!(
        "{}_to_{}",
        g.value(src).name,
        if to == DType::F16 { "fp16" } else { "fp32" }
    );
    let id = g.add_op(
        "Cast",
        &hint,
        &[Some(src)],
        vec![attrs::make_int("to", to.0 as i64)],
        1,
    );
    let ty = g.value(src).ty.clone().map(|mut t| {
        t.dtype = to;
        t
    });
    g.node_mut(id).outputs[0].ty = ty;
    summary.casts_inserted += 1;
    let p = Port::new(id, 0);
    cache.insert((src, to), p);
    p
}

fn set_cast_to(g: &mut Graph, n: NodeId, to: DType) {
    if let Some(op) = g.node_mut(n).op_mut() {
        op.attrs.retain(|a| a.name.as_deref() != Some("to"));
        op.attrs.push(attrs::make_int("to", to.0 as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keep_list_has_the_fragile_ops() {
        let p = ToFp16::default();
        for op in ["LayerNormalization", "Softmax", "ReduceMean", "CumSum"] {
            assert!(p.keep.iter().any(|k| k == op), "{op}");
        }
        assert!(!crate::passes::registry()
            .iter()
            .any(|p| p.name() == "to-fp16"));
        assert!(crate::passes::by_name("to-fp16").is_some());
    }
}
