//! The CUDA pre-processing kernel against the CPU pre-processing. Needs an NVIDIA GPU, the
//! CUDA driver and NVRTC; runs only with DETRC_GPU_TESTS=1 (there is no GPU in CI). The same
//! check, as a standalone binary for GPU machines without a Rust toolchain, is
//! examples/gpu_preprocess_check.rs.

use cudarc::driver::CudaSlice;
use detrc::run::cuda::{self, GpuPreprocess, OutType};
use detrc::run::preprocess::preprocess_batch;

#[test]
fn gpu_preprocess_matches_cpu() {
    if std::env::var("DETRC_GPU_TESTS").as_deref() != Ok("1") {
        eprintln!("SKIP: set DETRC_GPU_TESTS=1 on a machine with an NVIDIA GPU to run this");
        return;
    }
    let files = detrc::run::images::collect(&[std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/images"
    ))])
    .unwrap();
    let imgs: Vec<_> = files
        .iter()
        .map(|f| detrc::run::images::load(f).unwrap())
        .collect();
    let refs: Vec<&image::RgbImage> = imgs.iter().collect();
    let ctx = cuda::context(0).expect("CUDA context");
    let stream = ctx.new_stream().unwrap();
    let mut pre = GpuPreprocess::new(stream.clone()).expect("NVRTC kernel");
    for (h, w) in [(64, 96), (61, 97), (800, 1333)] {
        let cpu = preprocess_batch(&refs, h, w);
        let mut dst: CudaSlice<u8> = stream.alloc_zeros(cpu.len() * 4).unwrap();
        pre.run(&refs, h, w, OutType::F32, &mut dst).unwrap();
        let bytes = stream.clone_dtoh(&dst).unwrap();
        stream.synchronize().unwrap();
        let gpu = OutType::F32.to_f32(&bytes);
        let max = cpu
            .iter()
            .zip(&gpu)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max <= 1e-4, "{h}x{w}: max |gpu - cpu| = {max}");
    }
}
