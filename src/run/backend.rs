//! Inference backends: what `detrc run` and `detrc bench` need from a runtime, the CPU backend
//! (onnxruntime or tract on ONNX, see [`crate::reference`]), and the checks on a model's inputs.
//!
//! A model has an image input `[B, 3, H, W]` and, for the official RT-DETR / D-FINE deploy
//! graphs, an `orig_target_sizes`-style input `[B, 2]` fed with each image's `[w, h]`. Dynamic
//! dimensions are fixed before the runtime plans: the batch by `--batch` (default 1), height and
//! width by `--input-size`.

use std::path::Path;

use image::RgbImage;
use ndarray::{ArrayD, IxDyn};

use super::decode::RawOutputs;
use super::error::{Result, RunError};
use super::preprocess::{self, ImagePrep};
use crate::reference::{Model, Purpose, Reference, Runtime, RuntimeChoice};

/// The input geometry `[batch, 3, height, width]` a model runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
}

impl ModelShape {
    /// Validates a static input shape `[B, 3, H, W]`.
    pub fn from_dims(name: &str, dims: &[i64]) -> Result<ModelShape> {
        Self::resolve(name, dims, &Fix::default())
    }

    /// The shape for an image input declared `dims` (-1 for dynamic): dynamic dimensions
    /// take the batch and size in `fix`; static ones must agree with them.
    pub fn resolve(name: &str, dims: &[i64], fix: &Fix) -> Result<ModelShape> {
        let [b, c, h, w] = dims else {
            return Err(RunError::BadInput(format!(
                "input '{name}' has shape {dims:?}; expected a [B, 3, H, W] RGB batch"
            )));
        };
        if !(*c == 3 || *c < 0) || *b == 0 || *h == 0 || *w == 0 {
            return Err(RunError::BadInput(format!(
                "input '{name}' has shape {dims:?}; expected a [B, 3, H, W] RGB batch"
            )));
        }
        let batch = match (*b, fix.batch) {
            (b, None) if b > 0 => b as usize,
            (b, Some(want)) if b > 0 && b as usize != want => {
                return Err(RunError::Options(format!(
                    "--batch {want}, but input '{name}' has a static batch of {b}"
                )))
            }
            (_, Some(want)) => want,
            (_, None) => 1,
        };
        if batch == 0 {
            return Err(RunError::Options("--batch must be at least 1".into()));
        }
        let (height, width) = match (*h, *w, fix.size) {
            (h, w, None) if h > 0 && w > 0 => (h as usize, w as usize),
            (h, w, Some((fh, fw))) => {
                if (h > 0 && h as usize != fh) || (w > 0 && w as usize != fw) {
                    return Err(RunError::Options(format!(
                        "--input-size {fh}x{fw}, but input '{name}' is {h}x{w}"
                    )));
                }
                (fh, fw)
            }
            _ => {
                return Err(RunError::Options(format!(
                    "input '{name}' has a dynamic height or width ({dims:?}); give \
                     --input-size HxW"
                )))
            }
        };
        if height == 0 || width == 0 {
            return Err(RunError::Options(
                "--input-size must be at least 1x1".into(),
            ));
        }
        Ok(ModelShape {
            batch,
            height,
            width,
        })
    }

    pub fn input_len(&self) -> usize {
        self.batch * 3 * self.height * self.width
    }
}

/// Values for a model's dynamic input dimensions (`--batch`, `--input-size`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fix {
    pub batch: Option<usize>,
    /// (height, width)
    pub size: Option<(usize, usize)>,
}

/// Which input is the image batch and which, if any, takes each image's `[w, h]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRoles {
    pub image: usize,
    pub sizes: Option<usize>,
}

/// Finds the image input (rank 4, 3 channels or dynamic, floating point) and the optional size
/// input (rank 2, last dimension 2 or dynamic) by shape; `inputs` are (name, dims with -1 for
/// dynamic, is floating point).
pub fn input_roles(inputs: &[(String, Vec<i64>, bool)]) -> Result<InputRoles> {
    let list = || {
        inputs
            .iter()
            .map(|(n, d, _)| format!("{n} {d:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let images: Vec<usize> = (0..inputs.len())
        .filter(|&i| inputs[i].1.len() == 4 && matches!(inputs[i].1[1], 3 | -1))
        .collect();
    let sizes: Vec<usize> = (0..inputs.len())
        .filter(|&i| inputs[i].1.len() == 2 && matches!(inputs[i].1[1], 2 | -1))
        .collect();
    let (image, sizes) = match (images.as_slice(), sizes.as_slice(), inputs.len()) {
        ([i], [], 1) => (*i, None),
        ([i], [s], 2) => (*i, Some(*s)),
        _ => {
            return Err(RunError::BadInput(format!(
                "the model has inputs {}; expected an image batch [B, 3, H, W] and optionally \
                 the original sizes [B, 2]",
                list()
            )))
        }
    };
    if !inputs[image].2 {
        return Err(RunError::BadInput(format!(
            "input '{}' is not floating point; expected a float image tensor",
            inputs[image].0
        )));
    }
    Ok(InputRoles { image, sizes })
}

/// Each image's `[width, height]`, the `orig_target_sizes` convention of the official
/// RT-DETR / D-FINE scripts (their post-processor scales x by the first, y by the second).
pub fn image_sizes(images: &[&RgbImage]) -> Vec<[u32; 2]> {
    images.iter().map(|i| [i.width(), i.height()]).collect()
}

/// A runtime that executes a DETR-family model on batches of exactly `shape().batch` images.
pub trait Backend {
    /// "cpu" or "tensorrt".
    fn name(&self) -> &'static str;
    fn shape(&self) -> ModelShape;
    /// The runtime under the backend and its version, where there is a choice (the CPU
    /// backend: "onnxruntime 1.31.1" or "tract 0.23").
    fn runtime(&self) -> Option<String> {
        None
    }
    /// The outputs as the model declares them: names and shapes, -1 where a dimension is
    /// known only at run time.
    fn outputs(&self) -> Vec<(String, Vec<i64>)>;
    /// Whether the model takes each image's size as a second input.
    fn takes_sizes(&self) -> bool;
    /// Runs a pre-processed batch `[batch, 3, height, width]` (see [`preprocess`]); `sizes`
    /// holds each image's `[w, h]` (used when [`Self::takes_sizes`]).
    fn infer_tensor(&mut self, input: &[f32], sizes: &[[u32; 2]]) -> Result<RawOutputs>;
    /// Pre-processes and runs `images` (exactly `shape().batch` of them). Backends with their
    /// own pre-processing (the GPU kernel) override this.
    fn infer_images(&mut self, images: &[&RgbImage], prep: ImagePrep) -> Result<RawOutputs> {
        let s = self.shape();
        check_batch(images.len(), s.batch)?;
        let input = preprocess::preprocess_batch_with(images, s.height, s.width, prep);
        self.infer_tensor(&input, &image_sizes(images))
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

/// The CPU backend: a reference runtime (onnxruntime or tract) on an ONNX model, run at one
/// concrete input shape.
pub struct CpuBackend {
    reference: Reference,
    runtime: Runtime,
    shape: ModelShape,
    roles: InputRoles,
    input_dims: Vec<Vec<usize>>,
    outputs: Vec<(String, Vec<i64>)>,
}

impl CpuBackend {
    /// Loads a model with static inputs on the default runtime: onnxruntime when installed,
    /// else tract.
    pub fn load(path: &Path) -> Result<CpuBackend> {
        let (runtime, _) = RuntimeChoice::default().resolve()?;
        Self::load_with(path, &Fix::default(), &runtime)
    }

    /// Loads the model on `runtime` with its dynamic dimensions fixed by `fix` (batch
    /// default 1).
    pub fn load_with(path: &Path, fix: &Fix, runtime: &Runtime) -> Result<CpuBackend> {
        let proto = crate::load::load_proto(path)?;
        let declared = crate::reference::declared_inputs(&proto)?;
        let as_i64 = |d: &Option<usize>| d.map_or(-1, |v| v as i64);
        let described: Vec<(String, Vec<i64>, bool)> = declared
            .iter()
            .map(|d| {
                let dims = d.dims.iter().map(as_i64).collect();
                (d.name.clone(), dims, d.dtype.is_float())
            })
            .collect();
        let roles = input_roles(&described)?;
        let image = &declared[roles.image];
        let shape = ModelShape::resolve(&image.name, &described[roles.image].1, fix)?;
        let mut specs = Vec::new();
        for (i, d) in declared.iter().enumerate() {
            let concrete = if i == roles.image {
                vec![shape.batch, 3, shape.height, shape.width]
            } else {
                vec![shape.batch, 2]
            };
            specs.push(d.fix(concrete)?);
        }
        let input_dims = specs.iter().map(|s| s.shape.clone()).collect();
        let outputs = super::decode::model_outputs(&proto);
        let names = crate::reference::output_names(&proto);
        drop(proto);
        let reference = Reference::load(
            Model::Path(path),
            runtime,
            Purpose::Inference,
            Some((specs, names)),
        )?;
        Ok(CpuBackend {
            reference,
            runtime: runtime.clone(),
            shape,
            roles,
            input_dims,
            outputs,
        })
    }
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

    fn outputs(&self) -> Vec<(String, Vec<i64>)> {
        self.outputs.clone()
    }

    fn takes_sizes(&self) -> bool {
        self.roles.sizes.is_some()
    }

    fn infer_tensor(&mut self, input: &[f32], sizes: &[[u32; 2]]) -> Result<RawOutputs> {
        let mut arrays = Vec::new();
        for (i, dims) in self.input_dims.iter().enumerate() {
            // the runtime casts to the input's type: exact for sizes below 2^24
            let values: Vec<f32> = if i == self.roles.image {
                input.to_vec()
            } else {
                check_batch(sizes.len(), self.shape.batch)?;
                sizes.iter().flat_map(|s| s.map(|v| v as f32)).collect()
            };
            let a = ArrayD::from_shape_vec(IxDyn(dims), values)
                .map_err(|e| RunError::Options(format!("input of shape {dims:?}: {e}")))?;
            arrays.push(a);
        }
        let outs = self.reference.run(&arrays)?;
        Ok(outs
            .into_iter()
            .map(|(name, a)| {
                let shape = a.shape().iter().map(|&d| d as i64).collect();
                (name, shape, a.iter().copied().collect())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(n: &str, s: &[i64], float: bool) -> (String, Vec<i64>, bool) {
        (n.to_string(), s.to_vec(), float)
    }

    #[test]
    fn input_shape_checks() {
        let none = Fix::default();
        assert!(ModelShape::resolve("x", &[1, 3, 64, 96], &none).is_ok());
        assert!(ModelShape::resolve("x", &[1, 1, 64, 96], &none).is_err());
        assert!(ModelShape::resolve("x", &[3, 64, 96], &none).is_err());
        // a dynamic batch is 1 unless --batch says otherwise
        let s = ModelShape::resolve("x", &[-1, 3, 64, 96], &none).unwrap();
        assert_eq!(s.batch, 1);
        let four = Fix {
            batch: Some(4),
            size: None,
        };
        assert_eq!(
            ModelShape::resolve("x", &[-1, 3, 64, 96], &four)
                .unwrap()
                .batch,
            4
        );
        let e = ModelShape::resolve("x", &[2, 3, 64, 96], &four).unwrap_err();
        assert!(e.to_string().contains("static batch of 2"), "{e}");
        let e = ModelShape::resolve("x", &[1, 3, -1, -1], &none).unwrap_err();
        assert!(e.to_string().contains("--input-size"), "{e}");
        let sized = Fix {
            batch: None,
            size: Some((32, 48)),
        };
        let s = ModelShape::resolve("x", &[1, 3, -1, -1], &sized).unwrap();
        assert_eq!((s.height, s.width), (32, 48));
        assert!(ModelShape::resolve("x", &[1, 3, 64, 96], &sized).is_err());
    }

    #[test]
    fn image_and_size_inputs_by_shape() {
        let one = [i("pixel_values", &[1, 3, 64, 96], true)];
        assert_eq!(
            input_roles(&one).unwrap(),
            InputRoles {
                image: 0,
                sizes: None
            }
        );
        let deploy = [
            i("orig_target_sizes", &[-1, 2], false),
            i("images", &[-1, 3, 640, 640], true),
        ];
        assert_eq!(
            input_roles(&deploy).unwrap(),
            InputRoles {
                image: 1,
                sizes: Some(0)
            }
        );
        let mask = [
            i("pixel_values", &[1, 3, 64, 96], true),
            i("pixel_mask", &[1, 64, 96], false),
        ];
        let e = input_roles(&mask).unwrap_err().to_string();
        assert!(e.contains("pixel_mask [1, 64, 96]"), "{e}");
        assert!(input_roles(&[i("x", &[1, 3, 8, 8], false)]).is_err());
    }
}
