//! fp16 storage, emulated in fp32: the graph a CPU runtime can run to see what an fp16 engine
//! computes.
//!
//! A CPU runtime is no fp16 check on its own: onnxruntime runs a chain of fp16 operators that
//! lack fp16 kernels in fp32, with no rounding between them (an fp16 graph computing
//! `1 * 1000 * 1000 * 1e-4` gives 100 there; real fp16 gives inf at the second product). What an
//! fp16 engine does is closer to: each kernel computes (and accumulates) in fp32, and stores its
//! result in half. So the emulation is the same graph in fp32 with every tensor the fp16 graph
//! keeps in half rounded through `Cast(to=FLOAT16) -> Cast(to=FLOAT)` right where it is made;
//! a value past 65504 becomes inf there, as it would in the engine.
//!
//! Each rounded tensor also gets a probe: `ReduceMax(Abs(x))` of its value *before* rounding,
//! as an extra graph output, so a caller sees how close every fp16 tensor comes to the range's
//! end without fetching the tensors themselves. fp32 tensors get one too: an inf that entered
//! an operator kept in fp32 is followed through it, not mistaken for a new overflow after it.

use std::collections::HashMap;

use half::f16;

use crate::ir::{DType, Graph, GraphOutput, NodeId, NodeKind, Port};
use crate::load::proto::{TensorProto, ValueInfoProto};
use crate::tensor::attrs;
use crate::tensor::Tensor;

/// Prefix of the probe outputs' names.
pub const PROBE_PREFIX: &str = "detrc.fp16_probe.";

/// One fp16 tensor of the original graph, as the emulation reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The probe's graph output in the emulation.
    pub output: String,
    /// The tensor in the fp16 graph.
    pub tensor: String,
    /// Its producer: an operator's display name, or a graph input.
    pub producer: String,
    /// The producer's op type (`Input` for a graph input).
    pub op_type: String,
    /// Stored in half (rounded); `false`: an fp32 tensor, probed so that an overflow is
    /// followed through the operators kept in fp32.
    pub fp16: bool,
    /// The float tensors the producer reads, constants aside (their probes say whether an
    /// overflow arrived from upstream).
    pub inputs: Vec<String>,
}

/// The emulation graph and its probes, in topological order of the tensors they watch.
pub struct Emulation {
    pub graph: Graph,
    pub probes: Vec<Probe>,
}

/// Builds the fp32 emulation of fp16 graph `g`. Outputs keep their names (and gain the probe
/// outputs after them); fp16 graph inputs become fp32 inputs rounded to half on entry.
pub fn emulate(g: &Graph) -> Result<Emulation, String> {
    let dtypes = super::to_fp16::infer_dtypes(g)?;
    let mut e = g.clone();
    let order = e
        .topo_order()
        .map_err(|n| format!("the graph has a cycle through {}", e.node(n).display_name()))?;
    let is_f16 = |p: &Port| dtypes.get(p) == Some(&DType::F16);

    // 1. Constants and type-carrying attributes to fp32 (fp16 -> fp32 is exact).
    for &n in &order {
        match &mut e.node_mut(n).kind {
            NodeKind::Const { tensor, .. } if tensor.data_type == Some(DType::F16.0) => {
                *tensor = widen(tensor)?;
            }
            NodeKind::Op(op) => {
                for a in &mut op.attrs {
                    let name = a.name.as_deref().unwrap_or("");
                    if matches!(name, "to" | "dtype") && a.i == Some(DType::F16.0 as i64) {
                        a.i = Some(DType::F32.0 as i64);
                    }
                    if let Some(t) = a.t.as_mut().filter(|t| t.data_type == Some(DType::F16.0)) {
                        *t = widen(t)?;
                    }
                }
            }
            _ => {}
        }
    }

    // 2. Round every fp16 tensor made by an operator or fed in as a graph input.
    let mut probes = Vec::new();
    for &n in &order {
        let slots = e.node(n).outputs.len();
        for s in 0..slots {
            let p = Port::new(n, s);
            if matches!(e.node(n).kind, NodeKind::Const { .. }) {
                continue;
            }
            if dtypes.get(&p) == Some(&DType::F32) && matches!(e.node(n).kind, NodeKind::Op(_)) {
                let name = e.value(p).name.clone();
                probes.push(probe(&mut e, g, n, p, &name, &dtypes, false));
                continue;
            }
            if !is_f16(&p) {
                continue;
            }
            if let NodeKind::Input(vi) = &mut e.node_mut(n).kind {
                set_elem_type(vi, DType::F32);
            }
            if let Some(t) = e.value_mut(p).ty.as_mut() {
                t.dtype = DType::F32;
            }
            let readers = e.consumers(p);
            let outputs: Vec<usize> = (0..e.outputs.len())
                .filter(|&i| e.outputs[i].src == p)
                .collect();
            let name = e.value(p).name.clone();
            let half = cast(&mut e, p, DType::F16, &format!("{name}_fp16_store"));
            let back = cast(&mut e, half, DType::F32, &format!("{name}_fp16_load"));
            for (c, slot) in readers {
                e.set_input(c, slot, Some(back));
            }
            for i in outputs {
                e.outputs[i].src = back;
            }
            probes.push(probe(&mut e, g, n, p, &name, &dtypes, true));
        }
    }
    e.fix_output_names();
    Ok(Emulation { graph: e, probes })
}

/// `ReduceMax(Abs(p))` as a new scalar graph output.
fn probe(
    e: &mut Graph,
    g: &Graph,
    n: NodeId,
    p: Port,
    name: &str,
    dtypes: &HashMap<Port, DType>,
    fp16: bool,
) -> Probe {
    let abs = e.add_op("Abs", &format!("{name}_abs"), &[Some(p)], vec![], 1);
    let max = e.add_op(
        "ReduceMax",
        &format!("{name}_absmax"),
        &[Some(Port::new(abs, 0))],
        vec![attrs::make_int("keepdims", 0)],
        1,
    );
    let output = format!("{PROBE_PREFIX}{}", e.outputs.len());
    let ty = crate::ir::TensorType::new(DType::F32, &[]);
    e.node_mut(max).outputs[0].ty = Some(ty.clone());
    e.node_mut(max).outputs[0].name = output.clone();
    e.outputs.push(GraphOutput {
        name: output.clone(),
        src: Port::new(max, 0),
        info: ValueInfoProto {
            name: Some(output.clone()),
            r#type: Some(ty.to_proto()),
            doc_string: None,
            metadata_props: vec![],
        },
    });
    let node = g.node(n);
    let (producer, op_type) = match node.op() {
        Some(op) => (node.display_name(), op.op_type.clone()),
        None => (name.to_string(), "Input".to_string()),
    };
    let inputs = g
        .inputs(n)
        .into_iter()
        .flatten()
        .filter(|q| {
            matches!(dtypes.get(q), Some(&DType::F16 | &DType::F32))
                && !matches!(g.node(q.node).kind, NodeKind::Const { .. })
        })
        .map(|q| g.value(q).name.clone())
        .collect();
    Probe {
        output,
        tensor: name.to_string(),
        producer,
        op_type,
        fp16,
        inputs,
    }
}

fn cast(e: &mut Graph, src: Port, to: DType, hint: &str) -> Port {
    let id = e.add_op(
        "Cast",
        hint,
        &[Some(src)],
        vec![attrs::make_int("to", to.0 as i64)],
        1,
    );
    let ty = e.value(src).ty.clone().map(|mut t| {
        t.dtype = to;
        t
    });
    e.node_mut(id).outputs[0].ty = ty;
    Port::new(id, 0)
}

fn set_elem_type(vi: &mut ValueInfoProto, dtype: DType) {
    use crate::load::proto::type_proto;
    if let Some(type_proto::Value::TensorType(t)) =
        vi.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(dtype.0);
    }
}

/// An fp16 tensor as fp32, name and annotations kept.
fn widen(t: &TensorProto) -> Result<TensorProto, String> {
    let name = t.name.clone().unwrap_or_default();
    let Tensor::F16(a) = Tensor::from_proto(t).map_err(|e| format!("constant '{name}': {e}"))?
    else {
        return Err(format!("constant '{name}' is not fp16"));
    };
    let mut out = Tensor::F32(a.mapv(f16::to_f32)).to_proto(&name);
    out.name = t.name.clone();
    out.doc_string = t.doc_string.clone();
    out.metadata_props = t.metadata_props.clone();
    Ok(out)
}
