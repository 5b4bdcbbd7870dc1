//! `float64-to-float32`: computations the exporter left in float64 run in float32.
//!
//! transformers' Deformable DETR builds the sampling grid of its deformable attention in
//! float64 (its reference points and offset normalizer are double), so `GridSample` reads a
//! float input and a double grid. TensorRT has no float64 at all, and onnxruntime has no
//! GridSample kernel for that type pair, so the export does not run on either.
//!
//! Pattern: tensors of type float64 inside the graph, entered through `Cast(to=DOUBLE)` of a
//! float32 tensor or through double constants, and left through `Cast` or the GridSample grid.
//! Replacement, one rule per producer:
//!
//!   Cast(x, to=DOUBLE)              -> Cast(x, to=FLOAT)   (a same-type Cast, removed later)
//!   double initializer / Constant   -> the same values as float32
//!   ConstantOfShape(value: double)  -> ConstantOfShape(value: float)
//!   any other op on double inputs   -> the same op, its output typed float32
//!
//! Left unchanged, with the reason, when a graph input or output is float64 (the model's
//! interface would change) or a double tensor comes from an op whose output type is an
//! attribute this pass does not rewrite (RandomNormal, EyeLike, ...).

use crate::ir::{DType, Graph, NodeId, NodeKind, Port};
use crate::load::proto::TensorProto;
use crate::ops;
use crate::pass::{Context, Outcome, Pass};
use crate::tensor::{attrs, Tensor};

use super::to_fp16::infer_dtypes;

pub struct Float64ToFloat32;

/// What happens to one producer of a float64 tensor.
enum Rule {
    CastTarget,
    Initializer,
    ConstantAttr,
    ConstantOfShape,
    /// Type follows the inputs: only the output annotation changes.
    Follows,
}

/// Ops whose output type is set by an attribute: changing their inputs does not change it.
const TYPED_BY_ATTR: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "EyeLike",
    "Multinomial",
    "Bernoulli",
];

fn rule_for(g: &Graph, n: NodeId) -> Result<Rule, String> {
    let node = g.node(n);
    match &node.kind {
        NodeKind::Const { .. } => Ok(Rule::Initializer),
        NodeKind::Input(_) => Err(format!("graph input '{}' is float64", node.outputs[0].name)),
        NodeKind::Op(op) => {
            if !crate::ir::is_onnx_domain(&op.domain) {
                return Err(format!(
                    "{} (custom domain) makes float64",
                    node.display_name()
                ));
            }
            match op.op_type.as_str() {
                "Cast" => Ok(Rule::CastTarget),
                "Constant" => Ok(Rule::ConstantAttr),
                "ConstantOfShape" => Ok(Rule::ConstantOfShape),
                t if TYPED_BY_ATTR.contains(&t) => Err(format!(
                    "{} makes float64 from an attribute",
                    node.display_name()
                )),
                _ => Ok(Rule::Follows),
            }
        }
    }
}

fn to_f32(t: &TensorProto) -> Result<TensorProto, String> {
    let v = Tensor::from_proto(t).map_err(|e| format!("reading a double tensor: {e}"))?;
    let f = ops::cast(&v, DType::F32).map_err(|e| format!("casting to float: {e}"))?;
    Ok(f.to_proto(t.name.as_deref().unwrap_or("")))
}

impl Pass for Float64ToFloat32 {
    fn name(&self) -> &'static str {
        "float64-to-float32"
    }
    fn about(&self) -> &'static str {
        "float64 computations (Deformable DETR's sampling grid) run in float32, which TensorRT and onnxruntime's GridSample need"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let dts = infer_dtypes(g)?;
        let mut doubles: Vec<Port> = dts
            .iter()
            .filter(|(_, d)| **d == DType::F64)
            .map(|(p, _)| *p)
            .collect();
        if doubles.is_empty() {
            return Ok(Outcome::Unchanged);
        }
        doubles.sort_by_key(|p| (g.node(p.node).seq, p.slot));
        // Check every producer first: a partial conversion would leave mismatched types.
        let mut plan = Vec::new();
        for &p in &doubles {
            if g.is_graph_output(p) {
                return Ok(Outcome::NotApplicable(format!(
                    "left unchanged: graph output '{}' is float64",
                    g.value(p).name
                )));
            }
            match rule_for(g, p.node) {
                Ok(r) => plan.push((p, r)),
                Err(why) => return Ok(Outcome::NotApplicable(format!("left unchanged: {why}"))),
            }
        }
        let (mut casts, mut consts, mut typed) = (0, 0, 0);
        for (p, rule) in plan {
            let n = p.node;
            match rule {
                Rule::CastTarget => {
                    let op = g.node_mut(n).op_mut().expect("an op");
                    op.attrs.retain(|a| a.name.as_deref() != Some("to"));
                    op.attrs.push(attrs::make_int("to", DType::F32.0 as i64));
                    casts += 1;
                }
                Rule::Initializer => {
                    let NodeKind::Const { tensor, .. } = &g.node(n).kind else {
                        unreachable!("an initializer")
                    };
                    let t = to_f32(tensor)?;
                    if let NodeKind::Const { tensor, .. } = &mut g.node_mut(n).kind {
                        *tensor = t;
                    }
                    consts += 1;
                }
                Rule::ConstantAttr | Rule::ConstantOfShape => {
                    let op = g.node(n).op().expect("an op");
                    let Some(t) = attrs::tensor(&op.attrs, "value") else {
                        return Err(format!(
                            "{} has a float64 output but no tensor value",
                            g.node(n).display_name()
                        ));
                    };
                    let t = to_f32(t)?;
                    let op = g.node_mut(n).op_mut().expect("an op");
                    for a in op.attrs.iter_mut() {
                        if a.name.as_deref() == Some("value") {
                            a.t = Some(t.clone());
                        }
                    }
                    consts += 1;
                }
                Rule::Follows => typed += 1,
            }
            if let Some(ty) = g.value_mut(p).ty.as_mut() {
                ty.dtype = DType::F32;
            }
            // A stale annotation would be written back with the old type.
            g.value_mut(p).info = None;
        }
        Ok(Outcome::changed(vec![format!(
            "{} float64 tensors now float32: {casts} Casts to double retargeted, {consts} constants converted, {typed} ops retyped",
            doubles.len()
        )]))
    }
}
