//! CUDA for the TensorRT backend: finding the driver and NVRTC at run time, and the
//! pre-processing kernel (bilinear resize + normalize + HWC u8 -> NCHW f32/f16) compiled with
//! NVRTC.
//!
//! cudarc is built with `dynamic-loading`: nothing CUDA is linked, so detrc builds and starts
//! on machines without CUDA. cudarc panics when it has to load a library that is missing,
//! so every entry point here checks for the library first and returns
//! [`RunError::NoCudaDriver`] / [`RunError::Cuda`] instead.
//!
//! The kernel computes exactly the formula documented in [`super::preprocess`], in the same
//! f32 operation order, compiled with `--fmad=false` so no multiply-add is fused: on IEEE f32
//! hardware it agrees with the CPU path to the last bit or within a few ulps (|x| <= 2.7, so
//! under 1e-5 absolute); `examples/gpu_preprocess_check.rs` measures it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use image::RgbImage;

use super::error::{Result, RunError};
use super::preprocess::{scale, Normalize};

/// Folders tried for libcuda / libnvrtc when the dynamic loader's normal search finds none
/// (containers often have the toolkit without an ld.so.conf entry).
fn extra_dirs(env_vars: &[&str], fixed: &[&str]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for v in env_vars {
        if let Some(root) = std::env::var_os(v).filter(|s| !s.is_empty()) {
            let root = PathBuf::from(root);
            dirs.push(root.join("lib64"));
            dirs.push(root.join("lib"));
            dirs.push(root.join("targets/x86_64-linux/lib"));
        }
    }
    dirs.extend(fixed.iter().map(PathBuf::from));
    dirs
}

/// dlopen-s the first of `names` found in `dirs` and keeps it loaded for the process. cudarc
/// then finds it by soname: glibc's dlopen returns an already-loaded library whose soname
/// matches the requested file name.
fn preload(names: &[&str], dirs: &[PathBuf]) -> bool {
    static KEPT: Mutex<Vec<libloading::Library>> = Mutex::new(Vec::new());
    for d in dirs {
        for n in names {
            let p = d.join(n);
            if !p.is_file() {
                continue;
            }
            // SAFETY: loading a vendor library runs its initialisers; these are the CUDA
            // libraries cudarc would load by name anyway.
            if let Ok(lib) = unsafe { libloading::Library::new(&p) } {
                KEPT.lock().unwrap_or_else(|p| p.into_inner()).push(lib);
                return true;
            }
        }
    }
    false
}

/// Whether the CUDA driver library can be loaded (looking in a few extra places first).
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        // SAFETY: only dlopen-s candidate names; loads nothing else.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            return true;
        }
        let dirs = extra_dirs(
            &[],
            &[
                "/usr/local/nvidia/lib64",
                "/usr/local/nvidia/lib",
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib64",
                "/usr/lib/wsl/lib",
            ],
        );
        preload(&["libcuda.so.1", "libcuda.so"], &dirs)
            // SAFETY: as above.
            && unsafe { cudarc::driver::sys::is_culib_present() }
    })
}

/// Whether NVRTC can be loaded (also from $CUDA_HOME, $CUDA_PATH and /usr/local/cuda).
pub fn nvrtc_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        // SAFETY: only dlopen-s candidate names.
        if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return true;
        }
        let dirs = extra_dirs(
            &["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"],
            &[
                "/usr/local/cuda/lib64",
                "/usr/local/cuda/targets/x86_64-linux/lib",
            ],
        );
        let names = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];
        // SAFETY: as above.
        preload(&names, &dirs) && unsafe { cudarc::nvrtc::sys::is_culib_present() }
    })
}

fn cuda_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> RunError + '_ {
    move |e| RunError::Cuda(format!("{what}: {e}"))
}

/// Creates a context on GPU `ordinal`, or explains why there is none.
pub fn context(ordinal: usize) -> Result<Arc<CudaContext>> {
    if !driver_present() {
        return Err(RunError::NoCudaDriver);
    }
    let n = CudaContext::device_count().map_err(cuda_err("cannot initialise the CUDA driver"))?;
    if n <= 0 {
        return Err(RunError::Cuda(format!(
            "the CUDA driver sees no GPU; {}",
            super::error::NO_CUDA_DRIVER
        )));
    }
    if ordinal >= n as usize {
        return Err(RunError::Cuda(format!(
            "GPU {ordinal} requested, but only {n} present"
        )));
    }
    CudaContext::new(ordinal).map_err(cuda_err("cannot create a CUDA context"))
}

/// The kernel. One thread per output pixel, all three channels. `half_out` selects f16 output
/// (TensorRT engines built from fp16 models take f16 inputs); the conversion uses the PTX
/// instruction directly so no CUDA header is needed at run time.
pub const KERNEL_SRC: &str = r#"
extern "C" __global__ void detrc_preprocess(
    const unsigned char* __restrict__ src, int src_w, int src_h, int src_stride,
    void* __restrict__ dst, int dst_w, int dst_h, int half_out,
    float scale_x, float scale_y,
    float m0, float m1, float m2, float s0, float s1, float s2)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) return;

    float sx = ((float)x + 0.5f) * scale_x - 0.5f;
    float sy = ((float)y + 0.5f) * scale_y - 0.5f;
    sx = sx < 0.0f ? 0.0f : sx;
    sy = sy < 0.0f ? 0.0f : sy;
    int x0 = (int)sx; if (x0 > src_w - 1) x0 = src_w - 1;
    int y0 = (int)sy; if (y0 > src_h - 1) y0 = src_h - 1;
    int x1 = x0 + 1 < src_w ? x0 + 1 : src_w - 1;
    int y1 = y0 + 1 < src_h ? y0 + 1 : src_h - 1;
    float lx = sx - (float)x0;
    float ly = sy - (float)y0;

    const unsigned char* r0 = src + (size_t)y0 * src_stride;
    const unsigned char* r1 = src + (size_t)y1 * src_stride;
    float mean[3] = {m0, m1, m2};
    float stdv[3] = {s0, s1, s2};
    size_t plane = (size_t)dst_w * dst_h;
    size_t at = (size_t)y * dst_w + x;
    for (int c = 0; c < 3; ++c) {
        float p00 = (float)r0[x0 * 3 + c];
        float p01 = (float)r0[x1 * 3 + c];
        float p10 = (float)r1[x0 * 3 + c];
        float p11 = (float)r1[x1 * 3 + c];
        float top = (1.0f - lx) * p00 + lx * p01;
        float bot = (1.0f - lx) * p10 + lx * p11;
        float v = (1.0f - ly) * top + ly * bot;
        float o = (v / 255.0f - mean[c]) / stdv[c];
        if (half_out) {
            unsigned short h;
            asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(o));
            ((unsigned short*)dst)[c * plane + at] = h;
        } else {
            ((float*)dst)[c * plane + at] = o;
        }
    }
}
"#;

/// Element type the kernel writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
}

impl OutType {
    pub fn size(self) -> usize {
        match self {
            OutType::F32 => 4,
            OutType::F16 => 2,
        }
    }

    /// Little-endian device bytes of this type, widened to f32.
    pub fn to_f32(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            OutType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            OutType::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }
}

/// The compiled kernel plus a growable device staging buffer for the decoded images.
pub struct GpuPreprocess {
    stream: Arc<CudaStream>,
    func: CudaFunction,
    staging: Option<CudaSlice<u8>>,
    pinned: Option<cudarc::driver::PinnedHostSlice<u8>>,
}

impl GpuPreprocess {
    /// Compiles the kernel for the context's GPU with NVRTC.
    pub fn new(stream: Arc<CudaStream>) -> Result<GpuPreprocess> {
        if !nvrtc_present() {
            return Err(RunError::Cuda(
                "NVRTC (libnvrtc.so) not found: install the CUDA toolkit or put its lib64 folder \
                 on LD_LIBRARY_PATH (or set CUDA_HOME)"
                    .into(),
            ));
        }
        let ctx = stream.context().clone();
        let (major, minor) = ctx
            .compute_capability()
            .map_err(cuda_err("cannot query the GPU"))?;
        let compile = |arch: Option<String>| {
            let opts = cudarc::nvrtc::CompileOptions {
                fmad: Some(false),
                options: arch.into_iter().collect(),
                name: Some("detrc_preprocess.cu".into()),
                ..Default::default()
            };
            cudarc::nvrtc::compile_ptx_with_opts(KERNEL_SRC, opts)
        };
        // PTX for this GPU's architecture; an NVRTC older than the GPU does not know it, and
        // then its default virtual architecture (JIT-compiled by the driver) has to do.
        let ptx = compile(Some(format!("--gpu-architecture=compute_{major}{minor}")))
            .or_else(|_| compile(None))
            .map_err(|e| RunError::Cuda(format!("NVRTC failed to compile the kernel: {e}")))?;
        let module = ctx
            .load_module(ptx)
            .map_err(cuda_err("cannot load the pre-processing kernel"))?;
        let func = module
            .load_function("detrc_preprocess")
            .map_err(cuda_err("cannot find the pre-processing kernel"))?;
        Ok(GpuPreprocess {
            stream,
            func,
            staging: None,
            pinned: None,
        })
    }

    /// Uploads `images` and writes them as an ImageNet-normalized `[n, 3, height, width]`
    /// tensor of `out_type` elements into `dst` (a byte buffer of at least that size).
    /// Asynchronous on the stream; the caller synchronizes.
    pub fn run(
        &mut self,
        images: &[&RgbImage],
        height: usize,
        width: usize,
        out_type: OutType,
        dst: &mut CudaSlice<u8>,
    ) -> Result<()> {
        self.run_with(images, height, width, Normalize::ImageNet, out_type, dst)
    }

    /// [`Self::run`] with a choice of normalization.
    pub fn run_with(
        &mut self,
        images: &[&RgbImage],
        height: usize,
        width: usize,
        norm: Normalize,
        out_type: OutType,
        dst: &mut CudaSlice<u8>,
    ) -> Result<()> {
        let (mean, stdv) = norm.mean_std();
        let per_image = 3 * height * width * out_type.size();
        if dst.len() < per_image * images.len() {
            return Err(RunError::Cuda(format!(
                "input buffer of {} bytes is too small for {} images",
                dst.len(),
                images.len()
            )));
        }
        let total: usize = images.iter().map(|i| i.as_raw().len()).sum();
        self.ensure_capacity(total)?;
        let (Some(pinned), Some(staging)) = (self.pinned.as_mut(), self.staging.as_mut()) else {
            return Err(RunError::Cuda("staging buffers missing".into()));
        };
        // The pinned buffer is copied from as a plain slice (cudarc records no event for
        // that), so make sure the previous batch's upload has finished before overwriting it.
        self.stream
            .synchronize()
            .map_err(cuda_err("cannot synchronize"))?;
        {
            let host = pinned
                .as_mut_slice()
                .map_err(cuda_err("cannot map the pinned buffer"))?;
            let mut off = 0;
            for img in images {
                let raw = img.as_raw();
                host[off..off + raw.len()].copy_from_slice(raw);
                off += raw.len();
            }
            let mut dev = staging.slice_mut(0..total);
            self.stream
                .memcpy_htod(&host[..total], &mut dev)
                .map_err(cuda_err("cannot upload the images"))?;
        }
        let to_i32 = |v: usize| {
            i32::try_from(v).map_err(|_| RunError::Cuda(format!("dimension {v} too large")))
        };
        let mut off = 0;
        for (i, img) in images.iter().enumerate() {
            let (sw, sh) = (img.width() as usize, img.height() as usize);
            let len = img.as_raw().len();
            let src = staging.slice(off..off + len);
            off += len;
            let mut out = dst.slice_mut(i * per_image..(i + 1) * per_image);
            let (src_w, src_h, stride) = (to_i32(sw)?, to_i32(sh)?, to_i32(sw * 3)?);
            let (dst_w, dst_h) = (to_i32(width)?, to_i32(height)?);
            let half = i32::from(out_type == OutType::F16);
            let (scale_x, scale_y) = (scale(sw, width), scale(sh, height));
            let cfg = LaunchConfig {
                grid_dim: ((width as u32).div_ceil(16), (height as u32).div_ceil(16), 1),
                block_dim: (16, 16, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = self.stream.launch_builder(&self.func);
            launch
                .arg(&src)
                .arg(&src_w)
                .arg(&src_h)
                .arg(&stride)
                .arg(&mut out)
                .arg(&dst_w)
                .arg(&dst_h)
                .arg(&half)
                .arg(&scale_x)
                .arg(&scale_y);
            for m in &mean {
                launch.arg(m);
            }
            for s in &stdv {
                launch.arg(s);
            }
            // SAFETY: the argument list matches the kernel's signature, `src` holds
            // sh * sw * 3 bytes and `out` 3 * height * width elements of `out_type`.
            unsafe { launch.launch(cfg) }.map_err(cuda_err("kernel launch failed"))?;
        }
        Ok(())
    }

    fn ensure_capacity(&mut self, bytes: usize) -> Result<()> {
        let have = self.staging.as_ref().map_or(0, |s| s.len());
        if have >= bytes && self.pinned.is_some() {
            return Ok(());
        }
        // grow geometrically so a folder of mixed sizes reallocates a few times at most
        let want = bytes.max(have * 2).max(1 << 20);
        self.stream
            .synchronize()
            .map_err(cuda_err("cannot synchronize"))?;
        self.staging = None;
        self.pinned = None;
        // SAFETY: the buffers are written (host) or uploaded to (device) before any read.
        self.staging = Some(
            unsafe { self.stream.alloc::<u8>(want) }
                .map_err(cuda_err("cannot allocate GPU memory"))?,
        );
        let ctx = self.stream.context().clone();
        // SAFETY: as above. Write-combined: the host only writes it, the GPU reads it.
        self.pinned = Some(
            unsafe { ctx.alloc_pinned::<u8>(want) }
                .map_err(cuda_err("cannot allocate pinned host memory"))?,
        );
        Ok(())
    }
}
