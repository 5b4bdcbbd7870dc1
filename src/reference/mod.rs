//! The CPU reference runtimes, used to prove that rewrites preserve outputs (`--verify`, the
//! tests) and to run models on the CPU (`detrc run`/`bench`).
//!
//! Two runtimes: tract, built in (pure Rust, nothing to install), and onnxruntime, loaded at run
//! time from `libonnxruntime.so` when it is installed ([`onnxruntime`]), about 5x faster on
//! DETR. [`RuntimeChoice`] picks one: onnxruntime when it is found, tract otherwise, unless
//! the user names one. [`Reference::load`] opens a model with the chosen runtime;
//! [`Reference::from_path`] / [`Reference::from_bytes`] always use tract.

pub mod compare;
pub mod onnxruntime;
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
                onnxruntime::SessionOptions::for_purpose(purpose)
                    .level
                    .name()
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

impl Reference {
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
                return match model {
                    Model::Path(p) => Self::from_path(p),
                    Model::Bytes(b) => Self::from_bytes(b),
                    Model::Proto(m) => {
                        let mut v = Vec::new();
                        crate::emit::write_model(m, &mut v).map_err(|e| rt(e.to_string()))?;
                        Self::from_bytes(&v)
                    }
                }
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
        Ok(Reference {
            engine: Engine::Ort(m),
            inputs,
            output_names,
        })
    }

    /// The model in tract.
    pub fn from_path(path: &Path) -> Result<Reference> {
        let proto = crate::load::load_proto(path)?;
        let specs = input_specs(&proto)?;
        let outs = output_names(&proto);
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| rt(format!("cannot load {}: {e:#}", path.display())))?;
        Self::finish(model, specs, outs)
    }

    /// Encoded ONNX in tract.
    pub fn from_bytes(bytes: &[u8]) -> Result<Reference> {
        let proto =
            crate::load::decode(Path::new("<memory>"), bytes::Bytes::copy_from_slice(bytes))?;
        let specs = input_specs(&proto)?;
        let outs = output_names(&proto);
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
            engine: Engine::Tract(plan),
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
