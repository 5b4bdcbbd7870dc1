//! Inference backends: what `detrc run` and `detrc bench` need from a runtime, the CPU backend
//! (onnxruntime or tract on ONNX, see [`crate::reference`]), and the checks that a model is
//! DETR-shaped.

use std::path::Path;

use image::RgbImage;
use ndarray::{ArrayD, IxDyn};

use super::error::{Result, RunError};
use super::postprocess::DetrOutputs;
use super::preprocess;
use crate::reference::{Model, Purpose, Reference, Runtime, RuntimeChoice};

/// The static input geometry `[batch, 3, height, width]` of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
}

impl ModelShape {
    /// Validates an input shape `[B, 3, H, W]`.
    pub fn from_dims(name: &str, dims: &[i64]) -> Result<ModelShape> {
        match dims {
            [b, 3, h, w] if *b > 0 && *h > 0 && *w > 0 => Ok(ModelShape {
                batch: *b as usize,
                height: *h as usize,
                width: *w as usize,
            }),
            _ => Err(RunError::BadInput(format!(
                "input '{name}' has shape {dims:?}; expected a static [B, 3, H, W] RGB batch"
            ))),
        }
    }

    pub fn input_len(&self) -> usize {
        self.batch * 3 * self.height * self.width
    }
}

/// A runtime that executes a DETR model on batches of exactly `shape().batch` images.
pub trait Backend {
    /// "cpu" or "tensorrt".
    fn name(&self) -> &'static str;
    fn shape(&self) -> ModelShape;
    /// The runtime under the backend and its version, where there is a choice (the CPU
    /// backend: "onnxruntime 1.31.1" or "tract 0.23").
    fn runtime(&self) -> Option<String> {
        None
    }
    /// Runs a pre-processed batch `[batch, 3, height, width]` (see [`preprocess`]).
    fn infer_tensor(&mut self, input: &[f32]) -> Result<DetrOutputs>;
    /// Pre-processes and runs `images` (exactly `shape().batch` of them). Backends with their
    /// own pre-processing (the GPU kernel) override this.
    fn infer_images(&mut self, images: &[&RgbImage]) -> Result<DetrOutputs> {
        let s = self.shape();
        check_batch(images.len(), s.batch)?;
        let input = preprocess::preprocess_batch(images, s.height, s.width);
        self.infer_tensor(&input)
    }
}

pub(crate) fn check_batch(got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(RunError::Options(format!(
            "a batch of {got} images given to a model of batch {want}"
        )));
    }
    Ok(())
}

/// Which outputs are `pred_logits` and `pred_boxes`: by name when a model keeps DETR's names,
/// else by shape (`[B,Q,4]` are the boxes; when the logits are 4 wide too, DETR's export order
/// decides: logits first). Returns (logits index, boxes index).
pub fn identify_outputs(outputs: &[(String, Vec<i64>)], batch: usize) -> Result<(usize, usize)> {
    let describe = || {
        outputs
            .iter()
            .map(|(n, s)| format!("{n} {s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let not_detr = || RunError::NotDetr(describe());
    let by_name = |n: &str| outputs.iter().position(|(name, _)| name == n);
    let (li, bi) = match (by_name("pred_logits"), by_name("pred_boxes")) {
        (Some(l), Some(b)) => (l, b),
        _ => {
            let rank3: Vec<usize> = (0..outputs.len())
                .filter(|&i| outputs[i].1.len() == 3)
                .collect();
            let boxes: Vec<usize> = rank3
                .iter()
                .copied()
                .filter(|&i| outputs[i].1[2] == 4)
                .collect();
            let bi = match boxes.as_slice() {
                [b] => *b,
                [_, b, ..] => *b,
                [] => return Err(not_detr()),
            };
            let li = rank3
                .iter()
                .copied()
                .find(|&i| i != bi)
                .ok_or_else(not_detr)?;
            (li, bi)
        }
    };
    let (l, b) = (&outputs[li].1, &outputs[bi].1);
    let ok = l.len() == 3
        && b.len() == 3
        && l[0] == batch as i64
        && b[0] == batch as i64
        && l[1] == b[1]
        && l[1] > 0
        && l[2] >= 2
        && b[2] == 4;
    if !ok {
        return Err(not_detr());
    }
    Ok((li, bi))
}

/// Checks outputs fetched from a runtime and assembles them. `outputs` are (name, shape, data).
pub(crate) fn assemble(
    outputs: Vec<(String, Vec<i64>, Vec<f32>)>,
    batch: usize,
) -> Result<DetrOutputs> {
    let shapes: Vec<(String, Vec<i64>)> = outputs
        .iter()
        .map(|(n, s, _)| (n.clone(), s.clone()))
        .collect();
    let (li, bi) = identify_outputs(&shapes, batch)?;
    let (queries, classes) = (shapes[li].1[1] as usize, shapes[li].1[2] as usize);
    let mut outputs = outputs;
    // take the larger index first so the smaller one stays valid
    let (first, second) = if li > bi { (li, bi) } else { (bi, li) };
    let a = outputs.swap_remove(first).2;
    let b = outputs.swap_remove(second).2;
    let (logits, boxes) = if li > bi { (a, b) } else { (b, a) };
    if logits.len() != batch * queries * classes || boxes.len() != batch * queries * 4 {
        return Err(RunError::NotDetr(format!(
            "{} and {} values for logits and boxes of shapes {:?} and {:?}",
            logits.len(),
            boxes.len(),
            shapes[li].1,
            shapes[bi].1
        )));
    }
    Ok(DetrOutputs {
        batch,
        queries,
        classes,
        logits,
        boxes,
    })
}

/// The CPU backend: a reference runtime (onnxruntime or tract) on an ONNX model.
pub struct CpuBackend {
    reference: Reference,
    runtime: Runtime,
    shape: ModelShape,
    input_dims: Vec<usize>,
}

impl CpuBackend {
    /// [`Self::load_with`] the default runtime: onnxruntime when installed, else tract.
    pub fn load(path: &Path) -> Result<CpuBackend> {
        let (runtime, _) = RuntimeChoice::default().resolve()?;
        Self::load_with(path, &runtime)
    }

    /// Loads and checks the model: one static `[B,3,H,W]` input, and, where the ONNX file
    /// declares static output shapes, DETR-shaped outputs (checked again on every run).
    pub fn load_with(path: &Path, runtime: &Runtime) -> Result<CpuBackend> {
        let proto = crate::load::load_proto(path)?;
        let specs = crate::reference::input_specs(&proto)?;
        let spec = match specs.as_slice() {
            [one] => one,
            _ => {
                return Err(RunError::BadInput(format!(
                    "the model has {} inputs ({}); expected one image input",
                    specs.len(),
                    specs
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        };
        if !spec.dtype.is_float() {
            return Err(RunError::BadInput(format!(
                "input '{}' is {}, expected a floating-point image tensor",
                spec.name, spec.dtype
            )));
        }
        let dims: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
        let shape = ModelShape::from_dims(&spec.name, &dims)?;
        if let Some(declared) = declared_outputs(&proto) {
            identify_outputs(&declared, shape.batch)?;
        }
        let names = crate::reference::output_names(&proto);
        drop(proto);
        let reference = Reference::load(
            Model::Path(path),
            runtime,
            Purpose::Inference,
            Some((specs.clone(), names)),
        )?;
        Ok(CpuBackend {
            input_dims: spec.shape.clone(),
            reference,
            runtime: runtime.clone(),
            shape,
        })
    }
}

/// Output names and shapes as the ONNX file declares them, if every one is static.
fn declared_outputs(proto: &crate::load::proto::ModelProto) -> Option<Vec<(String, Vec<i64>)>> {
    let g = proto.graph.as_ref()?;
    g.output
        .iter()
        .map(|o| {
            let ty = crate::ir::TensorType::from_proto(o.r#type.as_ref()?)?;
            Some((o.name.clone().unwrap_or_default(), ty.static_shape()?))
        })
        .collect()
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn shape(&self) -> ModelShape {
        self.shape
    }

    fn runtime(&self) -> Option<String> {
        Some(self.runtime.describe())
    }

    fn infer_tensor(&mut self, input: &[f32]) -> Result<DetrOutputs> {
        let arr = ArrayD::from_shape_vec(IxDyn(&self.input_dims), input.to_vec()).map_err(|e| {
            RunError::Options(format!(
                "input of {} values for shape {:?}: {e}",
                input.len(),
                self.input_dims
            ))
        })?;
        let outs = self.reference.run(&[arr])?;
        let outs = outs
            .into_iter()
            .map(|(name, a)| {
                let shape = a.shape().iter().map(|&d| d as i64).collect();
                (name, shape, a.iter().copied().collect())
            })
            .collect();
        assemble(outs, self.shape.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(n: &str, s: &[i64]) -> (String, Vec<i64>) {
        (n.to_string(), s.to_vec())
    }

    #[test]
    fn outputs_by_name_and_by_shape() {
        let named = [o("pred_boxes", &[2, 5, 4]), o("pred_logits", &[2, 5, 92])];
        assert_eq!(identify_outputs(&named, 2).unwrap(), (1, 0));
        let renamed = [o("a", &[1, 5, 92]), o("b", &[1, 5, 4])];
        assert_eq!(identify_outputs(&renamed, 1).unwrap(), (0, 1));
        // 3 classes + no-object: both 4 wide, export order decides
        let square = [o("a", &[1, 5, 4]), o("b", &[1, 5, 4])];
        assert_eq!(identify_outputs(&square, 1).unwrap(), (0, 1));
    }

    #[test]
    fn non_detr_outputs_are_rejected() {
        for outs in [
            vec![o("logits", &[1, 10])],
            vec![o("pred_logits", &[1, 5, 92]), o("pred_boxes", &[1, 6, 4])],
            vec![o("pred_logits", &[1, 5, 1]), o("pred_boxes", &[1, 5, 4])],
            vec![o("pred_logits", &[2, 5, 92]), o("pred_boxes", &[2, 5, 4])],
        ] {
            let e = identify_outputs(&outs, 1).unwrap_err();
            assert!(matches!(e, RunError::NotDetr(_)), "{outs:?}: {e}");
        }
    }

    #[test]
    fn input_shape_checks() {
        assert!(ModelShape::from_dims("x", &[1, 3, 64, 96]).is_ok());
        assert!(ModelShape::from_dims("x", &[1, 1, 64, 96]).is_err());
        assert!(ModelShape::from_dims("x", &[-1, 3, 64, 96]).is_err());
        assert!(ModelShape::from_dims("x", &[3, 64, 96]).is_err());
    }
}
