//! The CPU reference runtimes, used to prove that rewrites preserve outputs (`--verify`, the
//! tests) and to run models on the CPU (`detrc run`/`bench`).
//!
//! Two runtimes: tract, built in (pure Rust, nothing to install), and onnxruntime, loaded at run
//! time from `libonnxruntime.so` when it is installed ([`onnxruntime`]), about 5x faster on
//! DETR. [`RuntimeChoice`] picks one: onnxruntime when it is found, tract otherwise, unless
//! the user names one. [`Reference::load`] opens a model with the chosen runtime;
//! [`Reference::from_path`] / [`Reference::from_bytes`] always use tract.

pub mod compare;
mod compat;
pub mod onnxruntime;
pub mod ort_rewrites;
pub mod random;

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::ir::DType;
use crate::load::proto::ModelProto;

/// The tract this detrc is built with (Cargo.toml's requirement).
pub const TRACT_VERSION: &str = "0.23";

/// A reference runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Tract,
    OnnxRuntime,
}

impl RuntimeKind {
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Tract => "tract",
            RuntimeKind::OnnxRuntime => "onnxruntime",
        }
    }
}

/// What the runtime is for: checking rewrites or running a model fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `--verify` and the tests: onnxruntime with [`onnxruntime::VERIFY_LEVEL`] and lean memory.
    Verify,
    /// `detrc run`/`bench`: onnxruntime's default (all) optimisations, its arena, its threads.
    Inference,
}

/// The user's choice of runtime. The default finds onnxruntime (see [`onnxruntime::find`]) and
/// falls back to tract when it is absent or unusable in a default place; naming onnxruntime
/// (`kind`, a `library` path, or `$DETRC_ONNXRUNTIME`) makes its absence an error.
#[derive(Debug, Clone, Default)]
pub struct RuntimeChoice {
    /// `None`: onnxruntime when available, else tract.
    pub kind: Option<RuntimeKind>,
    /// The onnxruntime library (a file or a folder), as `--onnxruntime PATH`.
    pub library: Option<PathBuf>,
}

/// A resolved runtime, ready to load models.
#[derive(Debug, Clone)]
pub enum Runtime {
    Tract,
    OnnxRuntime(onnxruntime::Library),
}

impl RuntimeChoice {
    pub fn tract() -> RuntimeChoice {
        RuntimeChoice {
            kind: Some(RuntimeKind::Tract),
            library: None,
        }
    }

    /// Resolves the choice. With the default, a library that is absent or unusable gives tract
    /// and, when some candidate was skipped, a note saying why (for the user to see).
    pub fn resolve(&self) -> Result<(Runtime, Option<String>)> {
        if self.kind == Some(RuntimeKind::Tract) {
            return Ok((Runtime::Tract, None));
        }
        let explicit = self.kind == Some(RuntimeKind::OnnxRuntime);
        let found = onnxruntime::find(self.library.as_deref())?;
        let skipped = found.skipped.join("; ");
        match found.found {
            Some((lib, _)) => {
                let note = (!skipped.is_empty()).then(|| format!("onnxruntime: skipped {skipped}"));
                Ok((Runtime::OnnxRuntime(lib), note))
            }
            None if explicit => Err(Error::OnnxRuntime {
                path: PathBuf::from(onnxruntime::LIBRARY_FILE),
                reason: format!(
                    "not found (looked in --onnxruntime, ${}, next to detrc, {}/.ort and the \
                     loader's folders){}; {}",
                    onnxruntime::ENV_LIBRARY,
                    env!("CARGO_MANIFEST_DIR"),
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!("; unusable: {skipped}")
                    },
                    onnxruntime::needed()
                ),
            }),
            None => {
                let note = (!skipped.is_empty())
                    .then(|| format!("using tract: onnxruntime skipped {skipped}"));
                Ok((Runtime::Tract, note))
            }
        }
    }
}

impl Runtime {
    pub fn kind(&self) -> RuntimeKind {
        match self {
            Runtime::Tract => RuntimeKind::Tract,
            Runtime::OnnxRuntime(_) => RuntimeKind::OnnxRuntime,
        }
    }

    /// The runtime and its version, e.g. "onnxruntime 1.31.1" or "tract 0.23".
    pub fn describe(&self) -> String {
        match self {
            Runtime::Tract => format!("tract {TRACT_VERSION}"),
            Runtime::OnnxRuntime(l) => format!("onnxruntime {}", l.version),
        }
    }

    /// [`Self::describe`] with what matters for how it ran: onnxruntime's library and its
    /// graph optimisation level for `purpose`.
    pub fn describe_for(&self, purpose: Purpose) -> String {
        match self {
            Runtime::Tract => self.describe(),
            Runtime::OnnxRuntime(l) => format!(
                "{} ({}, graph optimizations: {})",
                self.describe(),
                l.path.display(),
                onnxruntime::SessionOptions::for_purpose(purpose).describe()
            ),
        }
    }
}

/// A model loaded into a reference runtime, ready to run.
pub struct Reference {
    engine: Engine,
    pub inputs: Vec<InputSpec>,
    pub output_names: Vec<String>,
}

enum Engine {
    Tract(std::sync::Arc<TypedSimplePlan>),
    Ort(onnxruntime::OrtModel),
}

/// A model to load: a file, encoded ONNX bytes, or a decoded model.
#[derive(Clone, Copy)]
pub enum Model<'a> {
    Path(&'a Path),
    Bytes(&'a [u8]),
    /// Decoded, external data resolved (as [`crate::load::load`] or `compile` give it).
    /// onnxruntime uses its weights in place, without a copy.
    Proto(&'a ModelProto),
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

/// The graph's inputs that are not initializers, with their declared types.
fn typed_inputs(model: &ModelProto) -> Result<Vec<(String, crate::ir::TensorType)>> {
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
        out.push((name, ty));
    }
    Ok(out)
}

/// Input specs with the shapes of some inputs given: a model with dynamic dimensions runs at
/// the shape a caller picks for this run (the reference runtime needs static shapes).
pub fn input_specs_with(
    model: &ModelProto,
    shapes: &[(String, Vec<usize>)],
) -> Result<Vec<InputSpec>> {
    let mut specs = Vec::new();
    for (name, ty) in typed_inputs(model)? {
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

/// Shapes for a model whose inputs leave only the batch open: batch 1 for each such input
/// (empty when every input is static), so `--verify` runs dynamic-batch exports (the official
/// RT-DETR / D-FINE graphs declare `N`) at the batch every export accepts. Any other dynamic
/// dimension has no safe default: an error that says to fix it.
pub fn batch_one_shapes(model: &ModelProto) -> Result<Vec<(String, Vec<usize>)>> {
    let mut out = Vec::new();
    for d in declared_inputs(model)? {
        if d.dims.iter().all(Option::is_some) {
            continue;
        }
        if d.dims.iter().skip(1).any(Option::is_none) {
            return Err(Error::Unsupported(format!(
                "input '{}' has dynamic dimensions besides the batch ({:?}); the reference \
                 runtime needs them fixed: give --input-shape {}:DIMS",
                d.name, d.dims, d.name
            )));
        }
        let dims = std::iter::once(1)
            .chain(d.dims.iter().skip(1).map(|v| v.unwrap_or(1)))
            .collect();
        out.push((d.name, dims));
    }
    Ok(out)
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
    let mut out = Vec::new();
    for (name, ty) in typed_inputs(model)? {
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

/// tract's model of the file at `path` (external data beside it), after [`compat`]'s rewrites.
fn load_path(onnx: &tract_onnx::Onnx, path: &Path) -> Result<InferenceModel> {
    let proto = onnx
        .proto_model_for_path(path)
        .map_err(|e| rt(format!("cannot load {}: {e:#}", path.display())))?;
    let dir = path.parent().and_then(Path::to_str);
    parse(onnx, proto, dir).map_err(|e| rt(format!("cannot load {}: {e}", path.display())))
}

fn parse(
    onnx: &tract_onnx::Onnx,
    mut proto: tract_onnx::pb::ModelProto,
    dir: Option<&str>,
) -> Result<InferenceModel> {
    compat::lower_boolean_equal(&mut proto);
    let parsed = onnx.parse(&proto, dir).map_err(rt)?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(rt(format!(
            "inputs of no node or graph input: {:?}",
            parsed.unresolved_inputs
        )));
    }
    Ok(parsed.model)
}

impl Reference {
    /// Loads `path` with its inputs fixed to `specs` (one per input, in order): how a model
    /// with dynamic dimensions runs at one concrete shape (see [`declared_inputs`]).
    pub fn from_path_with_inputs(path: &Path, specs: Vec<InputSpec>) -> Result<Reference> {
        let proto = crate::load::load_proto(path)?;
        let outs = output_names(&proto);
        drop(proto);
        // Declared value_info shapes may name the dynamic dimensions, which tract cannot bind to
        // this run's sizes: it infers them instead (declared output shapes it ignores anyway).
        let onnx = tract_onnx::onnx().with_ignore_value_info(true);
        Self::finish(load_path(&onnx, path)?, specs, outs)
    }

    /// Loads `model` into `runtime`. `specs` are the model's inputs when the caller has them
    /// (from [`input_specs`]), which saves decoding the model a second time.
    pub fn load(
        model: Model<'_>,
        runtime: &Runtime,
        purpose: Purpose,
        specs: Option<(Vec<InputSpec>, Vec<String>)>,
    ) -> Result<Reference> {
        let lib = match runtime {
            Runtime::Tract => {
                // The caller's specs may fix dynamic dimensions: tract runs at those shapes.
                let shapes: Vec<(String, Vec<usize>)> = specs
                    .map(|(s, _)| s.into_iter().map(|s| (s.name, s.shape)).collect())
                    .unwrap_or_default();
                return match model {
                    Model::Path(p) => Self::from_path_with(p, &shapes),
                    Model::Bytes(b) => Self::from_bytes_with(b, &shapes),
                    Model::Proto(m) => {
                        let mut v = Vec::new();
                        crate::emit::write_model(m, &mut v).map_err(|e| rt(e.to_string()))?;
                        Self::from_bytes_with(&v, &shapes)
                    }
                };
            }
            Runtime::OnnxRuntime(lib) => lib,
        };
        let (inputs, output_names) = match specs {
            Some(s) => s,
            None => {
                let decoded;
                let proto = match model {
                    Model::Path(p) => {
                        decoded = crate::load::load_proto(p)?;
                        &decoded
                    }
                    Model::Bytes(b) => {
                        decoded = crate::load::decode(
                            Path::new("<memory>"),
                            bytes::Bytes::copy_from_slice(b),
                        )?;
                        &decoded
                    }
                    Model::Proto(m) => m,
                };
                (input_specs(proto)?, output_names(proto))
            }
        };
        // Decoding touched a little of every tensor in the model's map, and the kernel maps
        // the pages around each touch: ~90 MB of DETR-R50's 169 MB counted as this process's
        // memory while onnxruntime maps and reads the file again (see release_mapped_pages).
        crate::load::release_mapped_pages();
        let source = match model {
            Model::Path(p) => onnxruntime::ModelSource::Path(p),
            Model::Bytes(b) => onnxruntime::ModelSource::Bytes(b),
            Model::Proto(m) => onnxruntime::ModelSource::Proto(m),
        };
        let m = onnxruntime::OrtModel::load(
            lib,
            source,
            onnxruntime::SessionOptions::for_purpose(purpose),
        )?;
        // onnxruntime 1.31 copies the weights it is handed into the session (measured: the
        // session grows by the weights' size whichever API hands them over), so the pages of
        // the model file read for it are not needed any more until something reads them again.
        crate::load::release_mapped_pages();
        Ok(Reference {
            engine: Engine::Ort(m),
            inputs,
            output_names,
        })
    }

    /// The model in tract.
    pub fn from_path(path: &Path) -> Result<Reference> {
        Self::from_path_with(path, &[])
    }

    /// Loads `path` to run with the given input shapes (see [`input_specs_with`]).
    pub fn from_path_with(path: &Path, shapes: &[(String, Vec<usize>)]) -> Result<Reference> {
        let proto = crate::load::load_proto(path)?;
        let specs = input_specs_with(&proto, shapes)?;
        if !shapes.is_empty() {
            drop(proto);
            return Self::from_path_with_inputs(path, specs);
        }
        let outs = output_names(&proto);
        Self::finish(load_path(&tract_onnx::onnx(), path)?, specs, outs)
    }

    /// Encoded ONNX in tract.
    pub fn from_bytes(bytes: &[u8]) -> Result<Reference> {
        Self::from_bytes_with(bytes, &[])
    }

    /// Like [`Reference::from_bytes`], with the given input shapes.
    pub fn from_bytes_with(bytes: &[u8], shapes: &[(String, Vec<usize>)]) -> Result<Reference> {
        let proto =
            crate::load::decode(Path::new("<memory>"), bytes::Bytes::copy_from_slice(bytes))?;
        let specs = input_specs_with(&proto, shapes)?;
        let outs = output_names(&proto);
        drop(proto);
        // Symbolic dimensions in value_info would contradict the concrete input shapes of
        // this run (tract does not bind a symbol to a value): let it infer them. (tract
        // ignores declared output shapes unless told otherwise.)
        let onnx = tract_onnx::onnx().with_ignore_value_info(!shapes.is_empty());
        let proto = onnx
            .proto_model_for_read(&mut std::io::Cursor::new(bytes))
            .map_err(|e| rt(format!("cannot load model: {e:#}")))?;
        Self::finish(parse(&onnx, proto, None)?, specs, outs)
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
            engine: Engine::Tract(plan),
            inputs: specs,
            output_names: outs,
        })
    }

    /// What onnxruntime's graph optimisation changed in this model, for a verification
    /// session ([`Purpose::Verify`]); `None` for tract and for inference sessions.
    pub fn rewrites(&self) -> Option<&ort_rewrites::Applied> {
        match &self.engine {
            Engine::Ort(m) => m.applied.as_ref(),
            Engine::Tract(_) => None,
        }
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
        for (a, s) in inputs.iter().zip(&self.inputs) {
            if a.shape() != s.shape.as_slice() {
                return Err(rt(format!(
                    "input '{}' must have shape {:?}, got {:?}",
                    s.name,
                    s.shape,
                    a.shape()
                )));
            }
        }
        let plan = match &self.engine {
            Engine::Tract(plan) => plan,
            Engine::Ort(m) => return m.run(&self.inputs, inputs),
        };
        let mut tv: TVec<TValue> = TVec::new();
        for (a, s) in inputs.iter().zip(&self.inputs) {
            let t: Tensor = a.clone().into();
            let t = t.cast_to_dt(tract_dt(s.dtype)?).map_err(rt)?.into_owned();
            tv.push(t.into());
        }
        let outs = plan.run(tv).map_err(rt)?;
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
