//! The TensorRT backend: runs a serialized TensorRT-RTX engine with trtx, device buffers,
//! pinned host memory and a stream from cudarc, and the GPU pre-processing kernel.
//!
//! Order of checks, so that the first error is the one a user can act on: CUDA driver and GPU,
//! then the model file (an ONNX file is refused with a hint), the TensorRT-RTX library, and the
//! engine itself. Engine execution has not been run on a GPU (CI and the development machines
//! have none); the error paths without a GPU are tested.
//!
//! The libraries are found and loaded by [`crate::tensorrt_lib`] (the loader engine building
//! uses: `--tensorrt-dir`, `$DETRC_TENSORRT_DIR`, `<repo>/.trt`, the loader's search path;
//! one library per process).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut, PinnedHostSlice};
use image::RgbImage;
use trtx::{CudaEngine, DataType, ExecutionContext, LogHandler, Logger, Runtime, Severity};

use super::backend::{check_batch, image_sizes, input_roles, Backend, ModelShape};
use super::cuda::{self, GpuPreprocess, OutType};
use super::decode::RawOutputs;
use super::error::{Result, RunError};
use super::preprocess::{preprocess_batch_with, ImagePrep, Resize};

fn trt(what: &str) -> impl Fn(trtx::Error) -> RunError + '_ {
    move |e| {
        let logged = take_log_errors();
        if logged.is_empty() {
            RunError::TensorRt(format!("{what}: {e}"))
        } else {
            RunError::TensorRt(format!("{what}: {e}\n{}", logged.join("\n")))
        }
    }
}

/// TensorRT errors reported through the logger since the last call.
fn take_log_errors() -> Vec<String> {
    std::mem::take(&mut *log_errors().lock().unwrap_or_else(|p| p.into_inner()))
}

fn log_errors() -> &'static Mutex<Vec<String>> {
    static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    &ERRORS
}

struct Collect;

impl LogHandler for Collect {
    fn log(&self, severity: Severity, message: &str) {
        if matches!(severity, Severity::InternalError | Severity::Error) {
            let mut v = log_errors().lock().unwrap_or_else(|p| p.into_inner());
            // bounded: a failing engine can log the same complaint for every call
            if v.len() < 32 {
                v.push(message.to_string());
            }
        }
    }
}

/// TensorRT keeps the first logger of the process for good, so there is one, living forever.
fn logger() -> Result<&'static Logger> {
    static LOGGER: OnceLock<Logger> = OnceLock::new();
    if let Some(l) = LOGGER.get() {
        return Ok(l);
    }
    let l = Logger::new(Collect).map_err(trt("cannot create the TensorRT logger"))?;
    Ok(LOGGER.get_or_init(|| l))
}

/// Element types of engine I/O: float images and outputs, integer sizes and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    F32,
    F16,
    I32,
    I64,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::F16 => 2,
            Elem::F32 | Elem::I32 => 4,
            Elem::I64 => 8,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Elem::F32 | Elem::F16)
    }

    /// Little-endian bytes of this type, widened to f32 (labels and sizes are exact below
    /// 2^24).
    fn to_f32(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Elem::F32 => OutType::F32.to_f32(bytes),
            Elem::F16 => OutType::F16.to_f32(bytes),
            Elem::I32 => bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
                .collect(),
            Elem::I64 => bytes
                .chunks_exact(8)
                .map(|b| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    i64::from_le_bytes(a) as f32
                })
                .collect(),
        }
    }

    /// Writes `values` as this type into `dst` (exactly `values.len() * size()` bytes).
    fn write(self, values: impl Iterator<Item = f32>, dst: &mut [u8]) {
        let n = self.size();
        for (d, v) in dst.chunks_exact_mut(n).zip(values) {
            match self {
                Elem::F32 => d.copy_from_slice(&v.to_le_bytes()),
                Elem::F16 => d.copy_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                Elem::I32 => d.copy_from_slice(&(v as i32).to_le_bytes()),
                Elem::I64 => d.copy_from_slice(&(v as i64).to_le_bytes()),
            }
        }
    }
}

/// One engine I/O tensor.
#[derive(Debug, Clone)]
struct Io {
    name: String,
    dtype: Elem,
    /// Shape for the batch in use (dynamic dimensions resolved).
    dims: Vec<i64>,
    /// Shape as the engine declares it (-1 for dynamic).
    declared: Vec<i64>,
    bytes: usize,
}

fn elem_type(name: &str, dt: DataType) -> Result<Elem> {
    match dt {
        DataType::kFLOAT => Ok(Elem::F32),
        DataType::kHALF => Ok(Elem::F16),
        DataType::kINT32 => Ok(Elem::I32),
        DataType::kINT64 => Ok(Elem::I64),
        other => Err(RunError::BadInput(format!(
            "engine tensor '{name}' is {other:?}; only float32, float16, int32 and int64 I/O \
             is supported"
        ))),
    }
}

fn volume(dims: &[i64]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| RunError::BadInput(format!("unsupported tensor shape {dims:?}")))
    })
}

/// A deserialized engine ready to run. Field order is drop order: the execution context goes
/// before its engine, the engine before the runtime, and the CUDA buffers last.
pub struct TensorRtBackend {
    context: ExecutionContext<'static>,
    _engine: CudaEngine<'static>,
    _runtime: Runtime<'static>,
    input: Io,
    /// The `orig_target_sizes`-style input, if the engine has one.
    sizes: Option<(Io, CudaSlice<u8>)>,
    outputs: Vec<Io>,
    shape: ModelShape,
    d_input: CudaSlice<u8>,
    d_outputs: Vec<CudaSlice<u8>>,
    h_input: PinnedHostSlice<u8>,
    h_outputs: Vec<PinnedHostSlice<u8>>,
    pre: Option<GpuPreprocess>,
    pre_error: Option<String>,
    stream: Arc<CudaStream>,
}

/// Options of [`TensorRtBackend::load`].
#[derive(Debug, Clone, Default)]
pub struct TensorRtOptions {
    /// Folder with the TensorRT-RTX library (`--tensorrt-dir`).
    pub lib_dir: Option<PathBuf>,
    /// Batch size for engines with a dynamic batch dimension (default 1), height and width for
    /// engines with a dynamic image size.
    pub fix: super::backend::Fix,
    /// GPU ordinal.
    pub device: usize,
    /// Pre-process on the CPU even when the GPU kernel is available.
    pub cpu_preprocess: bool,
}

impl TensorRtBackend {
    pub fn load(path: &Path, opts: &TensorRtOptions) -> Result<TensorRtBackend> {
        // Cheapest and most fundamental first: without a GPU nothing else matters.
        let ctx = cuda::context(opts.device)?;
        let stream = ctx
            .new_stream()
            .map_err(|e| RunError::Cuda(format!("cannot create a stream: {e}")))?;
        let bytes = bytes::Bytes::from(std::fs::read(path).map_err(|source| RunError::Read {
            path: path.to_path_buf(),
            cause: source,
        })?);
        if looks_like_onnx(path, &bytes) {
            return Err(RunError::TensorRt(format!(
                "{} is an ONNX model; the TensorRT backend runs serialized engines (build one \
                 from the model first, or use --backend cpu)",
                path.display()
            )));
        }
        // The same loader as engine building: one library per process, same lookup order.
        crate::tensorrt_lib::tensorrt_version(opts.lib_dir.as_deref())
            .map_err(|e| RunError::TensorRt(e.to_string()))?;
        let logger = logger()?;
        take_log_errors();
        let mut runtime = Runtime::new(logger).map_err(trt("cannot create the runtime"))?;
        let mut engine = runtime
            .deserialize_cuda_engine(&bytes)
            .map_err(trt(&format!(
                "cannot deserialize {} (not an engine, built by another TensorRT version, or \
                 for another GPU)",
                path.display()
            )))?;
        drop(bytes);
        let mut context = engine
            .create_execution_context()
            .map_err(trt("cannot create an execution context"))?;

        let n = engine.nb_io_tensors().map_err(trt("engine I/O"))?;
        let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
        for i in 0..n {
            let name = engine.io_tensor_name(i).map_err(trt("engine I/O"))?;
            let mode = engine.tensor_io_mode(&name).map_err(trt("engine I/O"))?;
            let dims = engine.tensor_shape(&name).map_err(trt("engine I/O"))?;
            let dt = engine.tensor_data_type(&name).map_err(trt("engine I/O"))?;
            match mode {
                trtx::TensorIOMode::kINPUT => inputs.push((name, dims, dt)),
                trtx::TensorIOMode::kOUTPUT => outputs.push((name, dims, dt)),
                _ => {}
            }
        }
        let described: Vec<(String, Vec<i64>, bool)> = inputs
            .iter()
            .map(|(n, d, dt)| {
                let float = elem_type(n, *dt).is_ok_and(Elem::is_float);
                (n.clone(), d.clone(), float)
            })
            .collect();
        let roles = input_roles(&described)?;
        let (in_name, in_declared, in_dt) = inputs[roles.image].clone();
        let shape = ModelShape::resolve(&in_name, &in_declared, &opts.fix)?;
        // An engine built with a profile has -1 where the profile ranges; every dynamic
        // dimension is set on the context before its output shapes can be read.
        let mut set_shape = |name: &str, declared: &[i64], dims: Vec<i64>| -> Result<Vec<i64>> {
            if declared.iter().any(|&d| d < 0) {
                context
                    .set_input_shape(name, &trtx::trtx_sys::Dims64::from_slice(&dims))
                    .map_err(trt(&format!(
                        "the engine's profile does not accept input '{name}' at {dims:?}"
                    )))?;
            }
            Ok(dims)
        };
        let (b, h, w) = (shape.batch as i64, shape.height as i64, shape.width as i64);
        let in_dims = set_shape(&in_name, &in_declared, vec![b, 3, h, w])?;
        let in_type = elem_type(&in_name, in_dt)?;
        let input = Io {
            bytes: volume(&in_dims)? * in_type.size(),
            name: in_name,
            dtype: in_type,
            dims: in_dims,
            declared: in_declared,
        };
        let size_io = match roles.sizes {
            Some(i) => {
                let (name, declared, dt) = inputs[i].clone();
                let dims = set_shape(&name, &declared, vec![b, 2])?;
                let dtype = elem_type(&name, dt)?;
                Some(Io {
                    bytes: volume(&dims)? * dtype.size(),
                    name,
                    dtype,
                    dims,
                    declared,
                })
            }
            None => None,
        };
        let mut out_ios = Vec::new();
        for (name, declared, dt) in outputs {
            let d = context.tensor_shape(&name).map_err(trt("output shape"))?;
            let dims: Vec<i64> = d.d[..(d.nbDims.clamp(0, 8) as usize)].to_vec();
            let dtype = elem_type(&name, dt)?;
            out_ios.push(Io {
                bytes: volume(&dims)? * dtype.size(),
                name,
                dtype,
                dims,
                declared,
            });
        }

        let cerr = |what: &'static str| {
            move |e: cudarc::driver::DriverError| RunError::Cuda(format!("{what}: {e}"))
        };
        let d_input = stream
            .alloc_zeros::<u8>(input.bytes)
            .map_err(cerr("cannot allocate GPU memory"))?;
        let sizes = match size_io {
            Some(io) => {
                let d = stream
                    .alloc_zeros::<u8>(io.bytes)
                    .map_err(cerr("cannot allocate GPU memory"))?;
                Some((io, d))
            }
            None => None,
        };
        let mut d_outputs = Vec::new();
        let mut h_outputs = Vec::new();
        for o in &out_ios {
            d_outputs.push(
                stream
                    .alloc_zeros::<u8>(o.bytes)
                    .map_err(cerr("cannot allocate GPU memory"))?,
            );
            // SAFETY: filled by the device-to-host copy before it is read. Not
            // write-combined: the host reads it.
            h_outputs.push(
                unsafe { ctx.alloc_pinned_with_flags::<u8>(o.bytes, 0) }
                    .map_err(cerr("cannot allocate pinned host memory"))?,
            );
        }
        // SAFETY: written on the host before every upload.
        let h_input = unsafe { ctx.alloc_pinned::<u8>(input.bytes) }
            .map_err(cerr("cannot allocate pinned host memory"))?;

        let (pre, pre_error) = if opts.cpu_preprocess {
            (None, None)
        } else {
            match GpuPreprocess::new(stream.clone()) {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(e.to_string())),
            }
        };
        let mut me = TensorRtBackend {
            context,
            _engine: engine,
            _runtime: runtime,
            input,
            sizes,
            outputs: out_ios,
            shape,
            d_input,
            d_outputs,
            h_input,
            h_outputs,
            pre,
            pre_error,
            stream,
        };
        me.bind()?;
        Ok(me)
    }

    /// Why the GPU kernel is not used (pre-processing then runs on the CPU), if it is not.
    pub fn gpu_preprocess_unavailable(&self) -> Option<&str> {
        self.pre_error.as_deref()
    }

    fn bind(&mut self) -> Result<()> {
        let (ptr, _rec) = self.d_input.device_ptr_mut(&self.stream);
        // SAFETY: the buffer holds the tensor's bytes and lives as long as the context.
        unsafe {
            self.context
                .set_tensor_address(&self.input.name, ptr as *mut std::ffi::c_void)
        }
        .map_err(trt("cannot bind the input"))?;
        drop(_rec);
        if let Some((io, buf)) = self.sizes.as_mut() {
            let (ptr, _rec) = buf.device_ptr_mut(&self.stream);
            // SAFETY: as above.
            unsafe {
                self.context
                    .set_tensor_address(&io.name, ptr as *mut std::ffi::c_void)
            }
            .map_err(trt("cannot bind the size input"))?;
        }
        for (o, buf) in self.outputs.iter().zip(self.d_outputs.iter_mut()) {
            let (ptr, _rec) = buf.device_ptr_mut(&self.stream);
            // SAFETY: as above.
            unsafe {
                self.context
                    .set_tensor_address(&o.name, ptr as *mut std::ffi::c_void)
            }
            .map_err(trt("cannot bind an output"))?;
        }
        Ok(())
    }

    /// Uploads each image's `[w, h]` to the size input, if the engine has one.
    fn upload_sizes(&mut self, sizes: &[[u32; 2]]) -> Result<()> {
        let Some((io, buf)) = self.sizes.as_mut() else {
            return Ok(());
        };
        check_batch(sizes.len(), self.shape.batch)?;
        let mut bytes = vec![0u8; io.bytes];
        io.dtype
            .write(sizes.iter().flat_map(|s| s.map(|v| v as f32)), &mut bytes);
        self.stream
            .memcpy_htod(&bytes, buf)
            .map_err(|e| RunError::Cuda(format!("cannot upload the sizes: {e}")))?;
        // pageable source: make sure the copy is done before `bytes` goes away
        self.stream
            .synchronize()
            .map_err(|e| RunError::Cuda(format!("cannot upload the sizes: {e}")))
    }

    /// Enqueues the engine on the inputs already on the GPU, downloads the outputs, waits.
    fn execute(&mut self) -> Result<RawOutputs> {
        let cerr = |what: &'static str| {
            move |e: cudarc::driver::DriverError| RunError::Cuda(format!("{what}: {e}"))
        };
        take_log_errors();
        // SAFETY: every I/O tensor is bound to a live buffer of its size; the stream is ours.
        unsafe {
            self.context
                .enqueue_v3(self.stream.cu_stream() as *mut std::ffi::c_void)
        }
        .map_err(trt("inference failed"))?;
        for (d, h) in self.d_outputs.iter().zip(self.h_outputs.iter_mut()) {
            self.stream
                .memcpy_dtoh(d, h)
                .map_err(cerr("cannot download the outputs"))?;
        }
        self.stream
            .synchronize()
            .map_err(cerr("inference failed on the GPU"))?;
        let mut outs = Vec::new();
        for (o, h) in self.outputs.iter().zip(self.h_outputs.iter()) {
            let bytes = h
                .as_slice()
                .map_err(cerr("cannot read the pinned outputs"))?;
            outs.push((o.name.clone(), o.dims.clone(), o.dtype.to_f32(bytes)));
        }
        Ok(outs)
    }
}

/// An ONNX file handed to the engine runner: named so, or a protobuf with an ONNX graph.
fn looks_like_onnx(path: &Path, bytes: &bytes::Bytes) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    {
        return true;
    }
    // a cheap reference-counted clone; random bytes fail to decode quickly
    crate::load::decode(path, bytes.clone())
        .map(|m| m.graph.is_some_and(|g| !g.node.is_empty()))
        .unwrap_or(false)
}

impl Backend for TensorRtBackend {
    fn name(&self) -> &'static str {
        "tensorrt"
    }

    fn shape(&self) -> ModelShape {
        self.shape
    }

    fn outputs(&self) -> Vec<(String, Vec<i64>)> {
        self.outputs
            .iter()
            .map(|o| (o.name.clone(), o.declared.clone()))
            .collect()
    }

    fn takes_sizes(&self) -> bool {
        self.sizes.is_some()
    }

    fn infer_tensor(&mut self, input: &[f32], sizes: &[[u32; 2]]) -> Result<RawOutputs> {
        if input.len() != self.shape.input_len() {
            return Err(RunError::Options(format!(
                "input of {} values for an engine input of {}",
                input.len(),
                self.shape.input_len()
            )));
        }
        {
            let host = self
                .h_input
                .as_mut_slice()
                .map_err(|e| RunError::Cuda(format!("cannot map pinned memory: {e}")))?;
            self.input.dtype.write(input.iter().copied(), host);
        }
        self.stream
            .memcpy_htod(&self.h_input, &mut self.d_input)
            .map_err(|e| RunError::Cuda(format!("cannot upload the input: {e}")))?;
        self.upload_sizes(sizes)?;
        self.execute()
    }

    fn infer_images(&mut self, images: &[&RgbImage], prep: ImagePrep) -> Result<RawOutputs> {
        let s = self.shape;
        check_batch(images.len(), s.batch)?;
        let kernel_type = match self.input.dtype {
            Elem::F32 => Some(OutType::F32),
            Elem::F16 => Some(OutType::F16),
            Elem::I32 | Elem::I64 => None,
        };
        // The kernel implements the torch resize; PIL's filter runs on the CPU.
        let gpu = self.pre.as_mut().filter(|_| prep.resize == Resize::Torch);
        match (gpu, kernel_type) {
            (Some(pre), Some(out_type)) => {
                let norm = prep.normalize;
                pre.run_with(images, s.height, s.width, norm, out_type, &mut self.d_input)?;
                self.upload_sizes(&image_sizes(images))?;
                self.execute()
            }
            _ => {
                let input = preprocess_batch_with(images, s.height, s.width, prep);
                self.infer_tensor(&input, &image_sizes(images))
            }
        }
    }
}
