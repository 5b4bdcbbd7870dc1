//! Input shapes chosen at compile time: `--input-shape NAME:DIMS` fixes dimensions before the
//! passes run (so static folding applies), `--batch N|dynamic` fixes or generalises the batch.
//! The options and their parsing, then the edits of a graph's declared inputs that the batch
//! route makes, then the questions it asks of them.

use crate::error::{Error, Result};
use crate::ir::{Dim, Graph, NodeKind, TensorType};

/// What `--batch` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batch {
    /// The model's batch as declared.
    #[default]
    Keep,
    /// Symbolic: batch-baked values are generalised (`generalize-batch`).
    Dynamic,
    /// Static at this size.
    Static(i64),
}

impl std::str::FromStr for Batch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dynamic" | "dyn" | "n" => Ok(Batch::Dynamic),
            v => match v.parse::<i64>() {
                Ok(n) if (1..=1 << 20).contains(&n) => Ok(Batch::Static(n)),
                _ => Err(format!(
                    "--batch {s:?}: expected `dynamic` or a batch size of at least 1"
                )),
            },
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ShapeOptions {
    pub batch: Batch,
    /// `(input name, dims)`, applied before anything else.
    pub input_shapes: Vec<(String, Vec<i64>)>,
    /// With `Batch::Keep`, compile a symbolic-batch model with its batch left symbolic, not at
    /// its traced batch and generalised (`--plain-batch`; see [`super::compile_with`]).
    pub plain: bool,
}

impl ShapeOptions {
    pub fn is_default(&self) -> bool {
        self.batch == Batch::Keep && self.input_shapes.is_empty() && !self.plain
    }
}

/// Parses `name:1x3x800x800` (or `name:1,3,800,800`). The name is everything before the last
/// colon, so names with colons work.
pub fn parse_input_shape(spec: &str) -> Result<(String, Vec<i64>), String> {
    let bad = || format!("--input-shape {spec:?}: expected NAME:DIMS, e.g. images:1x3x800x800");
    let (name, dims) = spec.rsplit_once(':').ok_or_else(bad)?;
    if name.is_empty() || dims.trim().is_empty() {
        return Err(bad());
    }
    let dims = dims
        .split(['x', 'X', ','])
        .map(|d| match d.trim().parse::<i64>() {
            Ok(v) if (1..=1 << 30).contains(&v) => Ok(v),
            _ => Err(format!(
                "--input-shape {spec:?}: {d:?} is not a dimension (a positive integer)"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), dims))
}

/// Fixes the shapes of the named inputs. A name that is no input, another rank, or a static
/// dimension set to another value is an `Error::InputShape` naming the input.
pub fn apply_input_shapes(g: &mut Graph, specs: &[(String, Vec<i64>)]) -> Result<()> {
    let inputs = g.graph_inputs();
    for (name, dims) in specs {
        let Some(&n) = inputs.iter().find(|&&n| g.node(n).outputs[0].name == *name) else {
            let names: Vec<String> = inputs
                .iter()
                .map(|&n| g.node(n).outputs[0].name.clone())
                .collect();
            return Err(usage(
                name,
                format!("not an input of the model (inputs: {})", names.join(", ")),
            ));
        };
        let ty = g.node(n).outputs[0]
            .ty
            .clone()
            .ok_or_else(|| usage(name, "the input is not a tensor"))?;
        if let Some(shape) = &ty.shape {
            if shape.len() != dims.len() {
                return Err(usage(
                    name,
                    format!(
                        "--input-shape gives rank {} but the input is {ty} (rank {})",
                        dims.len(),
                        shape.len()
                    ),
                ));
            }
            for (i, (d, &v)) in shape.iter().zip(dims).enumerate() {
                if let Dim::Fixed(f) = d {
                    if *f != v {
                        return Err(usage(
                            name,
                            format!("dimension {i} is fixed to {f} by the model, not {v} ({ty})"),
                        ));
                    }
                }
            }
        }
        set_input_type(g, n, TensorType::new(ty.dtype, dims));
    }
    Ok(())
}

/// Sets axis 0 of every batch input to `b`.
pub fn set_batch(g: &mut Graph, b: i64) {
    for n in crate::analysis::batch::batch_inputs(g) {
        let Some(mut ty) = g.node(n).outputs[0].ty.clone() else {
            continue;
        };
        if let Some(s) = ty.shape.as_mut() {
            s[0] = Dim::Fixed(b);
        }
        set_input_type(g, n, ty);
    }
}

/// Forgets the declared types of operator outputs (value_info), for `infer-shapes` to derive
/// again at the batch now set. An exporter's symbolic dimensions (`N`, `2*N`) are stale: they
/// stand for what is now a number, and `infer-shapes` never replaces a declared type with one
/// of the same rank, so a `[N, 20]` TopK output would hide its batch from the analysis; and
/// static ones were written at the batch the export was traced at, which need not be the
/// batch the probe found (a graph without baked shapes runs at batch 1 first). Returns how
/// many it forgot.
pub fn forget_declared_types(g: &mut Graph) -> usize {
    let mut forgot = 0;
    for n in g.topo_ops() {
        for v in g.node_mut(n).outputs.iter_mut() {
            if v.ty.is_some() || v.info.is_some() {
                v.ty = None;
                v.info = None;
                forgot += 1;
            }
        }
    }
    forgot
}

/// Renames symbolic dimension `from` to `to` everywhere it is declared: inputs, outputs and
/// operator outputs. A model keeps the batch name it came with, which runtimes' dimension
/// overrides refer to.
pub fn rename_dim_param(g: &mut Graph, from: &str, to: &str) {
    let rename = |t: &mut TensorType| {
        for d in t.shape.iter_mut().flatten() {
            if matches!(d, Dim::Param(p) if p == from) {
                *d = Dim::Param(to.to_string());
            }
        }
    };
    for n in g.graph_inputs() {
        if let Some(mut ty) = g.node(n).outputs[0].ty.clone() {
            rename(&mut ty);
            set_input_type(g, n, ty);
        }
    }
    for n in g.topo_ops() {
        for v in g.node_mut(n).outputs.iter_mut() {
            if let Some(t) = v.ty.as_mut() {
                rename(t);
            }
        }
    }
    for i in 0..g.outputs.len() {
        let decl = g.outputs[i]
            .info
            .r#type
            .as_ref()
            .and_then(TensorType::from_proto);
        if let Some(mut t) = decl {
            rename(&mut t);
            g.outputs[i].info.r#type = Some(t.to_proto());
        }
    }
}

/// The batch the inputs declare: `Some(b)` if every batch input fixes axis 0 to `b`, `None` if
/// it is symbolic. Inputs that disagree are a usage error.
pub fn declared_batch(g: &Graph) -> Result<Option<i64>> {
    let ins = crate::analysis::batch::batch_inputs(g);
    if ins.is_empty() {
        return Err(usage(
            "*",
            "--batch needs an input with a batch dimension; the model has none",
        ));
    }
    let mut fixed: Option<(i64, String)> = None;
    let mut dynamic = false;
    for n in ins {
        let v = &g.node(n).outputs[0];
        match v
            .ty
            .as_ref()
            .and_then(|t| t.shape.as_ref()?.first()?.fixed())
        {
            Some(d) => match &fixed {
                Some((b, other)) if *b != d => {
                    return Err(usage(
                        &v.name,
                        format!("batch {d} differs from input '{other}' (batch {b})"),
                    ))
                }
                _ => fixed = Some((d, v.name.clone())),
            },
            None => dynamic = true,
        }
    }
    Ok(if dynamic { None } else { fixed.map(|f| f.0) })
}

/// Static shapes of all inputs (after `--input-shape` and the batch are set).
pub fn static_input_shapes(g: &Graph) -> Result<Vec<(String, Vec<usize>)>> {
    g.graph_inputs()
        .into_iter()
        .map(|n| {
            let v = &g.node(n).outputs[0];
            let s =
                v.ty.as_ref()
                    .and_then(TensorType::static_shape)
                    .ok_or_else(|| {
                        usage(
                            &v.name,
                            format!(
                                "dimensions besides the batch are dynamic ({}); fix them with \
                             --input-shape",
                                v.ty.as_ref().map(|t| t.to_string()).unwrap_or_default()
                            ),
                        )
                    })?;
            Ok((v.name.clone(), s.iter().map(|&d| d as usize).collect()))
        })
        .collect()
}

/// Sets the type of graph input `n` to `ty` (in the IR and in its declaration).
fn set_input_type(g: &mut Graph, n: crate::ir::NodeId, ty: TensorType) {
    if let NodeKind::Input(vi) = &mut g.node_mut(n).kind {
        vi.r#type = Some(ty.to_proto());
    }
    g.node_mut(n).outputs[0].ty = Some(ty);
}

/// An `Error::InputShape` naming `input`.
pub(super) fn usage(input: &str, reason: impl Into<String>) -> Error {
    Error::InputShape {
        input: input.to_string(),
        reason: reason.into(),
    }
}
