//! Checks the CUDA pre-processing kernel against the CPU pre-processing on a GPU machine.
//!
//! Runs both on the same images (files/folders given, plus built-in synthetic ones: noise is
//! the hardest case for interpolation) at several model sizes (upscale, downscale, identity,
//! odd sizes), as a batch in one buffer the way the TensorRT backend does, in f32 and f16.
//! Prints the max |GPU - CPU| per case and exits 1 when a case exceeds the bound, 2 when no
//! GPU/CUDA/NVRTC can be used.
//!
//! Bound: the kernel evaluates the same f32 expression in the same order without fused
//! multiply-adds, so the expected difference is 0; values lie within about [-2.2, 2.7], where
//! a few ulps are below 1e-6, so the default 1e-4 only trips on a real bug (a wrong tap is off
//! by more than 1e-3 on any non-flat image). f16 output is compared with the CPU value rounded
//! to f16: expected equal, bound one f16 ulp at |x| < 4 (2^-9, about 0.002).
//!
//! Build (no CUDA needed to build; nothing CUDA is linked; libstdc++ linked statically):
//!   scripts/build_gpu_check.sh
//! Run on the GPU machine:
//!   ./gpu_preprocess_check [IMAGES...] [--bound 1e-4]

use std::path::PathBuf;
use std::process::ExitCode;

use cudarc::driver::CudaSlice;
use detrc::run::cuda::{self, GpuPreprocess, OutType};
use detrc::run::preprocess::preprocess_batch;
use image::{Rgb, RgbImage};

struct Case {
    name: String,
    img: RgbImage,
}

/// Deterministic noise (xorshift), so every run checks the same pixels.
fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    RgbImage::from_fn(w, h, |_, _| {
        let mut px = [0u8; 3];
        for v in &mut px {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *v = (s >> 24) as u8;
        }
        Rgb(px)
    })
}

fn parse_args() -> Result<(Vec<PathBuf>, f32), String> {
    let mut paths = Vec::new();
    let mut bound = 1e-4f32;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bound" => {
                bound = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--bound needs a number")?;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: gpu_preprocess_check [IMAGES or FOLDERS...] [--bound 1e-4]".into(),
                )
            }
            _ => paths.push(PathBuf::from(a)),
        }
    }
    if paths.is_empty() {
        let default = PathBuf::from("examples/images");
        if default.is_dir() {
            paths.push(default);
        }
    }
    Ok((paths, bound))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

fn main() -> ExitCode {
    let (paths, bound) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut cases = Vec::new();
    if !paths.is_empty() {
        let files = match detrc::run::images::collect(&paths) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("gpu_preprocess_check: {e}");
                return ExitCode::from(2);
            }
        };
        for f in files {
            match detrc::run::images::load(&f) {
                Ok(img) => cases.push(Case {
                    name: detrc::run::images::display_name(&f),
                    img,
                }),
                Err(e) => {
                    eprintln!("gpu_preprocess_check: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    for (i, (w, h)) in [(1, 1), (7, 5), (97, 61), (640, 480), (1333, 800)]
        .into_iter()
        .enumerate()
    {
        cases.push(Case {
            name: format!("noise_{w}x{h}"),
            img: noise(w, h, i as u64 + 1),
        });
    }

    match check(&cases, bound) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("gpu_preprocess_check: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(cases: &[Case], bound: f32) -> Result<bool, Box<dyn std::error::Error>> {
    let ctx = cuda::context(0)?;
    let (maj, min) = ctx.compute_capability()?;
    println!("GPU 0: {} (compute capability {maj}.{min})", ctx.name()?);
    let stream = ctx.new_stream()?;
    let mut pre = GpuPreprocess::new(stream.clone())?;
    // (height, width): DETR fixture size, its odd neighbour, a square, DETR's 800x1333
    let sizes = [(64, 96), (61, 97), (32, 32), (800, 1333)];
    let f16_bound = 2f32.powi(-9);
    let mut worst = 0f32;
    let mut ok = true;
    println!(
        "{:<24} {:>11} {:>11} {:>12} {:>12}",
        "image", "size", "model HxW", "max|d| f32", "max|d| f16"
    );
    for case in cases {
        let own = (case.img.height() as usize, case.img.width() as usize);
        for &(h, w) in sizes.iter().chain(std::iter::once(&own)) {
            let cpu = preprocess_batch(&[&case.img], h, w);
            let d32 = run_gpu(&mut pre, &stream, &[&case.img], h, w, OutType::F32)?;
            let d16 = run_gpu(&mut pre, &stream, &[&case.img], h, w, OutType::F16)?;
            let cpu16: Vec<f32> = cpu
                .iter()
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect();
            let (e32, e16) = (max_diff(&cpu, &d32), max_diff(&cpu16, &d16));
            let bad = e32 > bound || e16 > f16_bound;
            ok &= !bad;
            worst = worst.max(e32);
            println!(
                "{:<24} {:>11} {:>11} {:>12.3e} {:>12.3e}{}",
                case.name,
                format!("{}x{}", case.img.width(), case.img.height()),
                format!("{h}x{w}"),
                e32,
                e16,
                if bad { "  FAIL" } else { "" }
            );
        }
    }
    // a mixed-size batch in one buffer, as the TensorRT backend uploads it
    let batch: Vec<&RgbImage> = cases.iter().map(|c| &c.img).collect();
    let (h, w) = (64, 96);
    let cpu = preprocess_batch(&batch, h, w);
    let gpu = run_gpu(&mut pre, &stream, &batch, h, w, OutType::F32)?;
    let e = max_diff(&cpu, &gpu);
    ok &= e <= bound;
    worst = worst.max(e);
    println!(
        "batch of {} images at {h}x{w}: max|d| {e:.3e}{}",
        batch.len(),
        if e > bound { "  FAIL" } else { "" }
    );
    println!(
        "{}: worst f32 difference {worst:.3e} (bound {bound:e})",
        if ok { "PASS" } else { "FAIL" }
    );
    Ok(ok)
}

fn run_gpu(
    pre: &mut GpuPreprocess,
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    images: &[&RgbImage],
    h: usize,
    w: usize,
    t: OutType,
) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let n = images.len() * 3 * h * w;
    let mut dst: CudaSlice<u8> = stream.alloc_zeros(n * t.size())?;
    pre.run(images, h, w, t, &mut dst)?;
    let bytes = stream.clone_dtoh(&dst)?;
    stream.synchronize()?;
    Ok(t.to_f32(&bytes))
}
