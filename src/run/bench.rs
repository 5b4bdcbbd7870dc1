//! Latency measurement for `detrc bench`: a fixed synthetic batch, warm-up runs, then `iters`
//! timed calls of [`Backend::infer_tensor`] (for the TensorRT backend that is upload +
//! enqueue + download + synchronize; pre-processing is excluded for every backend).

use std::time::Instant;

use image::{Rgb, RgbImage};
use serde::Serialize;

use super::backend::Backend;
use super::error::{Result, RunError};
use super::preprocess::{self, Normalize};

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub backend: String,
    /// The CPU backend's runtime and version ("onnxruntime 1.31.1", "tract 0.23").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    pub batch: usize,
    pub iters: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
    pub mean_ms: f64,
    /// Images per second at the median latency.
    pub images_per_s: f64,
}

/// Median (mean of the middle two for an even count) and nearest-rank 90th percentile.
pub fn median_p90(samples: &[f64]) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    let rank = (0.9 * n as f64).ceil() as usize;
    (median, s[rank.clamp(1, n) - 1])
}

/// The benchmark input: a smooth synthetic picture, pre-processed like a real one (ImageNet
/// normalization), so values are in the range the model sees in use.
pub fn synthetic_batch(batch: usize, height: usize, width: usize) -> Vec<f32> {
    synthetic_batch_with(batch, height, width, Normalize::ImageNet)
}

/// [`synthetic_batch`] with the model's normalization.
pub fn synthetic_batch_with(
    batch: usize,
    height: usize,
    width: usize,
    norm: Normalize,
) -> Vec<f32> {
    let img = RgbImage::from_fn(width as u32, height as u32, |x, y| {
        Rgb([
            (x * 255 / width.max(1) as u32) as u8,
            (y * 255 / height.max(1) as u32) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    let refs = vec![&img; batch];
    preprocess::preprocess_batch_with(&refs, height, width, norm)
}

/// Times `iters` inferences after `warmup` untimed ones. Models with a size input get the
/// model's own size for every image.
pub fn measure(
    backend: &mut dyn Backend,
    iters: usize,
    warmup: usize,
    norm: Normalize,
) -> Result<Stats> {
    if iters == 0 {
        return Err(RunError::Options("--iters must be at least 1".into()));
    }
    let s = backend.shape();
    let input = synthetic_batch_with(s.batch, s.height, s.width, norm);
    let sizes = vec![[s.width as u32, s.height as u32]; s.batch];
    for _ in 0..warmup {
        backend.infer_tensor(&input, &sizes)?;
    }
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let out = backend.infer_tensor(&input, &sizes)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(out);
    }
    let (median_ms, p90_ms) = median_p90(&ms);
    Ok(Stats {
        backend: backend.name().to_string(),
        runtime: backend.runtime(),
        batch: s.batch,
        iters,
        median_ms,
        p90_ms,
        min_ms: ms.iter().copied().fold(f64::INFINITY, f64::min),
        mean_ms: ms.iter().sum::<f64>() / iters as f64,
        images_per_s: s.batch as f64 / (median_ms / 1e3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        assert_eq!(median_p90(&[3.0, 1.0, 2.0]), (2.0, 3.0));
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(median_p90(&v), (5.5, 9.0));
        assert_eq!(median_p90(&[7.0]), (7.0, 7.0));
        assert!(median_p90(&[]).0.is_nan());
    }
}
