//! The CPU reference runtime (tract), used to prove that rewrites preserve outputs.
//!
//! tract is pure Rust, so `--verify` and the tests work on a fresh machine without installing
//! anything; onnxruntime is used as an independent second opinion by the Python scripts.

pub mod compare;
pub mod random;

use std::path::Path;

use ndarray::ArrayD;
use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::ir::DType;
use crate::load::proto::ModelProto;

/// A loaded, optimized model ready to run.
pub struct Reference {
    plan: std::sync::Arc<TypedSimplePlan>,
    pub inputs: Vec<InputSpec>,
    pub output_names: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

fn rt(e: impl std::fmt::Display) -> Error {
    Error::Runtime(format!("{e:#}"))
}

/// Static input specs of a model (every dimension must be a number).
pub fn input_specs(model: &ModelProto) -> Result<Vec<InputSpec>> {
    input_specs_with(model, &[])
}

/// Input specs with the shapes of some inputs given: a model with dynamic dimensions runs at
/// the shape a caller picks for this run (the reference runtime needs static shapes).
pub fn input_specs_with(
    model: &ModelProto,
    shapes: &[(String, Vec<usize>)],
) -> Result<Vec<InputSpec>> {
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::Invalid("no graph".into()))?;
    let inits: std::collections::HashSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let mut specs = Vec::new();
    for vi in &g.input {
        let name = vi.name.clone().unwrap_or_default();
        if inits.contains(name.as_str()) {
            continue;
        }
        let ty = vi
            .r#type
            .as_ref()
            .and_then(crate::ir::TensorType::from_proto)
            .ok_or_else(|| Error::Unsupported(format!("input '{name}' is not a tensor")))?;
        if let Some((_, dims)) = shapes.iter().find(|(n, _)| *n == name) {
            let rank_ok = ty.rank().is_none_or(|r| r == dims.len());
            let fits = ty.shape.as_ref().is_none_or(|s| {
                s.iter()
                    .zip(dims)
                    .all(|(d, &v)| d.fixed().is_none_or(|f| f == v as i64))
            });
            if !rank_ok || !fits {
                return Err(Error::Runtime(format!(
                    "input '{name}' {ty} cannot run with shape {dims:?}"
                )));
            }
            specs.push(InputSpec {
                name,
                dtype: ty.dtype,
                shape: dims.clone(),
            });
            continue;
        }
        let shape = ty.static_shape().ok_or_else(|| {
            Error::Unsupported(format!(
                "input '{name}' has a dynamic shape {ty}; the reference runtime needs static shapes"
            ))
        })?;
        specs.push(InputSpec {
            name,
            dtype: ty.dtype,
            shape: shape.iter().map(|&d| d as usize).collect(),
        });
    }
    Ok(specs)
}

/// A model input as declared: each dimension if it is a number, `None` if it is dynamic.
#[derive(Debug, Clone)]
pub struct DeclaredInput {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<Option<usize>>,
}

impl DeclaredInput {
    /// This input at a concrete `shape`; the static dimensions must agree.
    pub fn fix(&self, shape: Vec<usize>) -> Result<InputSpec> {
        let agrees = shape.len() == self.dims.len()
            && self
                .dims
                .iter()
                .zip(&shape)
                .all(|(d, s)| d.is_none_or(|d| d == *s));
        if !agrees {
            return Err(Error::Unsupported(format!(
                "input '{}' of shape {:?} cannot take shape {shape:?}",
                self.name, self.dims
            )));
        }
        Ok(InputSpec {
            name: self.name.clone(),
            dtype: self.dtype,
            shape,
        })
    }
}

/// The model's inputs (initializers excluded) with their dynamic dimensions left open.
pub fn declared_inputs(model: &ModelProto) -> Result<Vec<DeclaredInput>> {
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::Invalid("no graph".into()))?;
    let inits: std::collections::HashSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let mut out = Vec::new();
    for vi in &g.input {
        let name = vi.name.clone().unwrap_or_default();
        if inits.contains(name.as_str()) {
            continue;
        }
        let ty = vi
            .r#type
            .as_ref()
            .and_then(crate::ir::TensorType::from_proto)
            .ok_or_else(|| Error::Unsupported(format!("input '{name}' is not a tensor")))?;
        let shape = ty
            .shape
            .as_ref()
            .ok_or_else(|| Error::Unsupported(format!("input '{name}' has no declared rank")))?;
        let dims = shape
            .iter()
            .map(|d| d.fixed().and_then(|v| usize::try_from(v).ok()))
            .collect();
        out.push(DeclaredInput {
            name,
            dtype: ty.dtype,
            dims,
        });
    }
    Ok(out)
}

/// Rewrites what tract cannot run into equivalents it can, in place; true if anything changed.
///
/// `Equal` of two booleans (the dynamo exporter's floor division, `(a < 0) == (b < 0)`, in the
/// official RT-DETRv2 and D-FINE post-processing) fails in tract with "Bool is not a number";
/// it is `Not(Xor(a, b))`.
pub fn make_tract_compatible(model: &mut ModelProto) -> bool {
    use crate::load::proto::{type_proto, NodeProto};
    const BOOL: i32 = 9;
    const BOOL_OPS: &[&str] = &[
        "Less",
        "Greater",
        "LessOrEqual",
        "GreaterOrEqual",
        "Equal",
        "And",
        "Or",
        "Xor",
        "Not",
        "IsNaN",
        "IsInf",
    ];
    let Some(g) = model.graph.as_mut() else {
        return false;
    };
    let mut bools: std::collections::HashSet<String> = std::collections::HashSet::new();
    for t in &g.initializer {
        if t.data_type == Some(BOOL) {
            bools.extend(t.name.clone());
        }
    }
    for vi in g.input.iter().chain(&g.value_info).chain(&g.output) {
        if let Some(type_proto::Value::TensorType(t)) =
            vi.r#type.as_ref().and_then(|t| t.value.as_ref())
        {
            if t.elem_type == Some(BOOL) {
                bools.extend(vi.name.clone());
            }
        }
    }
    for n in &g.node {
        let op = n.op_type.as_deref().unwrap_or("");
        let domain = n.domain.as_deref().unwrap_or("");
        let casts_to_bool = op == "Cast"
            && n.attribute
                .iter()
                .any(|a| a.name.as_deref() == Some("to") && a.i == Some(BOOL as i64));
        let constant_bool = op == "Constant"
            && n.attribute
                .iter()
                .any(|a| a.t.as_ref().is_some_and(|t| t.data_type == Some(BOOL)));
        if (domain.is_empty() || domain == "ai.onnx")
            && (BOOL_OPS.contains(&op) || casts_to_bool || constant_bool)
        {
            bools.extend(n.output.iter().cloned());
        }
    }
    let mut changed = false;
    let mut nodes = Vec::with_capacity(g.node.len());
    for n in std::mem::take(&mut g.node) {
        let is_bool_equal = n.op_type.as_deref() == Some("Equal")
            && n.domain.as_deref().unwrap_or("").is_empty()
            && n.input.len() == 2
            && n.input.iter().all(|i| bools.contains(i));
        if !is_bool_equal {
            nodes.push(n);
            continue;
        }
        changed = true;
        let base = n.name.clone().unwrap_or_else(|| n.output[0].clone());
        let xor = format!("{}__detrc_xor", n.output[0]);
        nodes.push(NodeProto {
            input: n.input.clone(),
            output: vec![xor.clone()],
            name: Some(format!("{base}__xor")),
            op_type: Some("Xor".into()),
            ..Default::default()
        });
        nodes.push(NodeProto {
            input: vec![xor],
            output: n.output.clone(),
            name: Some(format!("{base}__not")),
            op_type: Some("Not".into()),
            ..Default::default()
        });
    }
    g.node = nodes;
    changed
}

impl Reference {
    /// Loads `path` with its inputs fixed to `specs` (one per input, in order): how a model
    /// with dynamic dimensions runs at one concrete shape (see [`declared_inputs`]).
    pub fn from_path_with_inputs(path: &Path, specs: Vec<InputSpec>) -> Result<Reference> {
        let mut proto = crate::load::load_proto(path)?;
        let outs = output_names(&proto);
        // Declared output and value_info shapes may name the dynamic dimensions, which tract
        // cannot bind to this run's sizes: it infers them instead.
        let onnx = tract_onnx::onnx()
            .with_ignore_output_shapes(true)
            .with_ignore_value_info(true);
        let model = if make_tract_compatible(&mut proto) {
            let bytes = Self::inlined(path, proto)?;
            onnx.model_for_read(&mut std::io::Cursor::new(bytes))
        } else {
            onnx.model_for_path(path)
        }
        .map_err(|e| rt(format!("cannot load {}: {e:#}", path.display())))?;
        Self::finish(model, specs, outs)
    }

    pub fn from_path(path: &Path) -> Result<Reference> {
        Self::from_path_with(path, &[])
    }

    /// Loads `path` to run with the given input shapes (see [`input_specs_with`]).
    pub fn from_path_with(path: &Path, shapes: &[(String, Vec<usize>)]) -> Result<Reference> {
        let proto = crate::load::load_proto(path)?;
        if !shapes.is_empty() {
            return Self::from_bytes_with(&Self::inlined(path, proto)?, shapes);
        }
        let specs = input_specs_with(&proto, shapes)?;
        let outs = output_names(&proto);
        let mut patched = proto.clone();
        let model = if make_tract_compatible(&mut patched) {
            let bytes = Self::inlined(path, patched)?;
            tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(bytes))
        } else {
            tract_onnx::onnx().model_for_path(path)
        }
        .map_err(|e| rt(format!("cannot load {}: {e:#}", path.display())))?;
        Self::finish(model, specs, outs)
    }

    /// `proto` (read from `path`) encoded with its external data inlined, for tract to read
    /// from memory.
    fn inlined(path: &Path, mut proto: ModelProto) -> Result<Vec<u8>> {
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::load::external::resolve(&mut proto, dir)?;
        let mut v = Vec::new();
        crate::emit::write_model(&proto, &mut v).map_err(rt)?;
        Ok(v)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Reference> {
        Self::from_bytes_with(bytes, &[])
    }

    /// Like [`Reference::from_bytes`], with the given input shapes.
    pub fn from_bytes_with(bytes: &[u8], shapes: &[(String, Vec<usize>)]) -> Result<Reference> {
        let proto =
            crate::load::decode(Path::new("<memory>"), bytes::Bytes::copy_from_slice(bytes))?;
        let specs = input_specs_with(&proto, shapes)?;
        let outs = output_names(&proto);
        // Symbolic dimensions in value_info and outputs would contradict the concrete input
        // shapes of this run (tract does not bind a symbol to a value): let it infer them.
        let stripped;
        let mut m = proto.clone();
        let patched = make_tract_compatible(&mut m);
        let bytes = if shapes.is_empty() && !patched {
            bytes
        } else if shapes.is_empty() {
            let mut v = Vec::new();
            crate::emit::write_model(&m, &mut v).map_err(rt)?;
            stripped = v;
            &stripped[..]
        } else {
            if let Some(g) = m.graph.as_mut() {
                g.value_info.clear();
                for o in g.output.iter_mut() {
                    if let Some(crate::load::proto::type_proto::Value::TensorType(t)) =
                        o.r#type.as_mut().and_then(|t| t.value.as_mut())
                    {
                        t.shape = None;
                    }
                }
            }
            let mut v = Vec::new();
            crate::emit::write_model(&m, &mut v).map_err(rt)?;
            stripped = v;
            &stripped[..]
        };
        let mut r = std::io::Cursor::new(bytes);
        let model = tract_onnx::onnx()
            .model_for_read(&mut r)
            .map_err(|e| rt(format!("cannot load model: {e:#}")))?;
        Self::finish(model, specs, outs)
    }

    fn finish(
        mut model: InferenceModel,
        specs: Vec<InputSpec>,
        outs: Vec<String>,
    ) -> Result<Reference> {
        for (i, s) in specs.iter().enumerate() {
            let dt = tract_dt(s.dtype)?;
            model
                .set_input_fact(i, InferenceFact::dt_shape(dt, s.shape.clone()))
                .map_err(rt)?;
        }
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| rt(format!("cannot prepare the model: {e:#}")))?;
        Ok(Reference {
            plan,
            inputs: specs,
            output_names: outs,
        })
    }

    /// Runs on f32 inputs (converted to each input's type); returns outputs as f32, by name.
    pub fn run(&self, inputs: &[ArrayD<f32>]) -> Result<Vec<(String, ArrayD<f32>)>> {
        if inputs.len() != self.inputs.len() {
            return Err(rt(format!(
                "expected {} inputs, got {}",
                self.inputs.len(),
                inputs.len()
            )));
        }
        let mut tv: TVec<TValue> = TVec::new();
        for (a, s) in inputs.iter().zip(&self.inputs) {
            if a.shape() != s.shape.as_slice() {
                return Err(rt(format!(
                    "input '{}' must have shape {:?}, got {:?}",
                    s.name,
                    s.shape,
                    a.shape()
                )));
            }
            let t: Tensor = a.clone().into();
            let t = t.cast_to_dt(tract_dt(s.dtype)?).map_err(rt)?.into_owned();
            tv.push(t.into());
        }
        let outs = self.plan.run(tv).map_err(rt)?;
        let mut res = Vec::new();
        for (i, o) in outs.into_iter().enumerate() {
            let t = o.into_tensor();
            let t = t.cast_to::<f32>().map_err(rt)?.into_owned();
            let a = t.into_plain_array::<f32>().map_err(rt)?;
            let name = self
                .output_names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("output{i}"));
            res.push((name, a));
        }
        Ok(res)
    }

    /// Seeded standard-normal inputs for every model input.
    pub fn random_inputs(&self, seed: u64) -> Vec<ArrayD<f32>> {
        random::inputs(&self.inputs, seed)
    }
}

pub fn output_names(m: &ModelProto) -> Vec<String> {
    m.graph
        .as_ref()
        .map(|g| {
            g.output
                .iter()
                .map(|o| o.name.clone().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

fn tract_dt(d: DType) -> Result<DatumType> {
    Ok(match d {
        DType::F32 => DatumType::F32,
        DType::F64 => DatumType::F64,
        DType::F16 => DatumType::F16,
        DType::I64 => DatumType::I64,
        DType::I32 => DatumType::I32,
        DType::I8 => DatumType::I8,
        DType::U8 => DatumType::U8,
        DType::BOOL => DatumType::Bool,
        other => return Err(Error::Unsupported(format!("input element type {other}"))),
    })
}
