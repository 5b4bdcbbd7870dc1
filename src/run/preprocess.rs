//! CPU pre-processing: RGB u8 (HWC) -> bilinear resize -> /255 -> normalize (ImageNet mean/std,
//! or none for the official RT-DETR / D-FINE deploy graphs) -> CHW f32.
//!
//! # Resize convention
//!
//! Bilinear interpolation with half-pixel centers and no antialiasing, the convention of
//! `torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False)`
//! (torchvision's tensor `Resize(antialias=False)`) and of OpenCV's `INTER_LINEAR`. For output
//! column `x` of `out_w` from an input `in_w` wide (rows likewise):
//!
//! ```text
//! scale = in_w / out_w                      (f32)
//! sx    = max((x + 0.5) * scale - 0.5, 0)   (f32)
//! x0    = floor(sx),  x1 = min(x0 + 1, in_w - 1),  lx = sx - x0
//! top   = (1 - lx) * p[y0][x0] + lx * p[y0][x1]
//! bot   = (1 - lx) * p[y1][x0] + lx * p[y1][x1]
//! v     = (1 - ly) * top + ly * bot
//! out   = (v / 255 - mean[c]) / std[c]
//! ```
//!
//! evaluated in f32 in exactly this order, without fused multiply-adds, and without rounding
//! `v` back to u8. PIL's `Image.resize(BILINEAR)` is deliberately NOT the reference: it widens
//! its filter when shrinking (antialiasing), so it disagrees with every GPU resize kernel.
//! The aspect ratio is not kept: the image is stretched to the model's static H x W, and boxes
//! are scaled back per axis. The GPU kernel ([`super::cuda`]) and `scripts/ref_detect.py`
//! implement the same formula.

use image::RgbImage;

/// ImageNet mean and standard deviation per RGB channel, as in the DETR references.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// What is done to the `[0, 1]` pixel values after the resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// `(v - MEAN) / STD`: DETR, and the transformers exports of the whole family.
    ImageNet,
    /// `[0, 1]` only: the official RT-DETR / D-FINE deploy graphs (`ToTensor()` and nothing
    /// else in their inference scripts).
    Unit,
}

impl Normalize {
    /// Mean and standard deviation per channel. `Unit` is mean 0, std 1, which leaves
    /// `v / 255` bit-exact, so one formula (and one GPU kernel) serves both.
    pub fn mean_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Normalize::ImageNet => (MEAN, STD),
            Normalize::Unit => ([0.0; 3], [1.0; 3]),
        }
    }
}

/// Source taps of one output coordinate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tap {
    pub i0: usize,
    pub i1: usize,
    pub frac: f32,
}

/// The scale factor as the GPU kernel receives it, so both compute identical coordinates.
pub fn scale(input: usize, output: usize) -> f32 {
    input as f32 / output as f32
}

pub(crate) fn taps(input: usize, output: usize) -> Vec<Tap> {
    let s = scale(input, output);
    (0..output)
        .map(|o| {
            let src = ((o as f32 + 0.5) * s - 0.5).max(0.0);
            // `src` < input - 0.5 always, so the floor is a valid index.
            let i0 = (src as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            Tap {
                i0,
                i1,
                frac: src - i0 as f32,
            }
        })
        .collect()
}

/// Writes one image as an ImageNet-normalized CHW tensor of `3 * height * width` values into
/// `out`. Images of zero width or height cannot come from the decoder; they leave `out`
/// unchanged.
pub fn preprocess_into(img: &RgbImage, height: usize, width: usize, out: &mut [f32]) {
    preprocess_into_with(img, height, width, Normalize::ImageNet, out)
}

/// [`preprocess_into`] with a choice of normalization.
pub fn preprocess_into_with(
    img: &RgbImage,
    height: usize,
    width: usize,
    norm: Normalize,
    out: &mut [f32],
) {
    let (mean, std) = norm.mean_std();
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    debug_assert_eq!(out.len(), 3 * height * width);
    if in_w == 0 || in_h == 0 {
        return;
    }
    let xs = taps(in_w, width);
    let ys = taps(in_h, height);
    let src = img.as_raw();
    let stride = in_w * 3;
    let plane = height * width;
    for (y, ty) in ys.iter().enumerate() {
        let r0 = &src[ty.i0 * stride..][..stride];
        let r1 = &src[ty.i1 * stride..][..stride];
        let ly = ty.frac;
        for (x, tx) in xs.iter().enumerate() {
            let lx = tx.frac;
            for c in 0..3 {
                let p00 = r0[tx.i0 * 3 + c] as f32;
                let p01 = r0[tx.i1 * 3 + c] as f32;
                let p10 = r1[tx.i0 * 3 + c] as f32;
                let p11 = r1[tx.i1 * 3 + c] as f32;
                let top = (1.0 - lx) * p00 + lx * p01;
                let bot = (1.0 - lx) * p10 + lx * p11;
                let v = (1.0 - ly) * top + ly * bot;
                out[c * plane + y * width + x] = (v / 255.0 - mean[c]) / std[c];
            }
        }
    }
}

/// A batch tensor `[images.len(), 3, height, width]`, flattened, ImageNet-normalized.
pub fn preprocess_batch(images: &[&RgbImage], height: usize, width: usize) -> Vec<f32> {
    preprocess_batch_with(images, height, width, Normalize::ImageNet)
}

/// [`preprocess_batch`] with a choice of normalization.
pub fn preprocess_batch_with(
    images: &[&RgbImage],
    height: usize,
    width: usize,
    norm: Normalize,
) -> Vec<f32> {
    let per = 3 * height * width;
    let mut out = vec![0f32; per * images.len()];
    for (img, chunk) in images.iter().zip(out.chunks_exact_mut(per)) {
        preprocess_into_with(img, height, width, norm, chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(v: f32, c: usize) -> f32 {
        (v / 255.0 - MEAN[c]) / STD[c]
    }

    #[test]
    fn identity_size_is_exact() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 40, y as u8 * 90, 7]));
        let out = preprocess_batch(&[&img], 3, 5);
        for y in 0..3 {
            for x in 0..5 {
                let p = img.get_pixel(x as u32, y as u32).0;
                for c in 0..3 {
                    assert_eq!(out[c * 15 + y * 5 + x], norm(p[c] as f32, c));
                }
            }
        }
    }

    #[test]
    fn upscale_2x_matches_half_pixel_formula() {
        // 2 -> 4: sources are -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped tap)
        let t = taps(2, 4);
        assert_eq!(
            t[0],
            Tap {
                i0: 0,
                i1: 1,
                frac: 0.0
            }
        );
        assert_eq!(
            t[1],
            Tap {
                i0: 0,
                i1: 1,
                frac: 0.25
            }
        );
        assert_eq!(
            t[2],
            Tap {
                i0: 0,
                i1: 1,
                frac: 0.75
            }
        );
        assert_eq!(
            t[3],
            Tap {
                i0: 1,
                i1: 1,
                frac: 0.25
            }
        );
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([if x == 0 { 0 } else { 200 }; 3]));
        let out = preprocess_batch(&[&img], 1, 4);
        let want = [0.0, 50.0, 150.0, 200.0];
        for (x, w) in want.iter().enumerate() {
            assert!((out[x] - norm(*w, 0)).abs() < 1e-6, "x={x}");
        }
    }

    #[test]
    fn unit_normalization_is_plain_division() {
        let img = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 100, y as u8 * 255, 1]));
        let out = preprocess_batch_with(&[&img], 2, 3, Normalize::Unit);
        for y in 0..2 {
            for x in 0..3 {
                let p = img.get_pixel(x as u32, y as u32).0;
                for c in 0..3 {
                    assert_eq!(out[c * 6 + y * 3 + x], p[c] as f32 / 255.0);
                }
            }
        }
    }

    #[test]
    fn downscale_2x_averages_pairs() {
        // 4 -> 2: sources 0.5 and 2.5, i.e. the mean of each pair (no antialiasing needed here)
        let img = RgbImage::from_fn(4, 1, |x, _| image::Rgb([[10, 30, 100, 200][x as usize]; 3]));
        let out = preprocess_batch(&[&img], 1, 2);
        assert!((out[0] - norm(20.0, 0)).abs() < 1e-6);
        assert!((out[1] - norm(150.0, 0)).abs() < 1e-6);
    }
}
