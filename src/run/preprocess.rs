//! CPU pre-processing: RGB u8 (HWC) -> resize -> /255 -> normalize (ImageNet mean/std, or none
//! for the official RT-DETR / D-FINE deploy graphs) -> CHW f32.
//!
//! Two resize conventions ([`Resize`], `--resize`):
//!
//! # `torch` (the default): bilinear, half-pixel centers, no antialiasing
//!
//! The convention of `torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
//! antialias=False)` (torchvision's tensor `Resize(antialias=False)`, RF-DETR's `predict()`)
//! and of OpenCV's `INTER_LINEAR`: what GPU pipelines do. For output column `x` of `out_w`
//! from an input `in_w` wide (rows likewise):
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
//! `v` back to u8. The GPU kernel ([`super::cuda`]) and `scripts/ref_detect.py` implement the
//! same formula.
//!
//! # `pil`: PIL's antialiased bilinear
//!
//! `PIL.Image.resize(size, Image.BILINEAR)` on the RGB image, reproduced exactly
//! ([`resize_pil`]): a triangle filter whose support widens with the scale when shrinking
//! (antialiasing), weights normalized per output pixel and rounded to 22-bit fixed point, a
//! horizontal pass then a vertical one, each rounded and clamped to u8. What transformers' image
//! processors and the official RT-DETR / D-FINE `T.Resize` on PIL images feed their models;
//! then `out = (v / 255 - mean[c]) / std[c]` as above, `v` the u8 result.
//!
//! Either way the aspect ratio is not kept: the image is stretched to the model's static
//! H x W, and boxes are scaled back per axis.

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

/// How the image is brought to the model's input size (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resize {
    /// Bilinear, half-pixel centers, no antialiasing (torch / OpenCV / GPU pipelines).
    #[default]
    Torch,
    /// PIL's antialiased bilinear `Image.resize(BILINEAR)` (transformers' processors, the
    /// official PIL pipelines).
    Pil,
}

impl Resize {
    pub fn name(self) -> &'static str {
        match self {
            Resize::Torch => "torch",
            Resize::Pil => "pil",
        }
    }
}

/// Everything pre-processing needs to know besides the image and the model's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImagePrep {
    pub resize: Resize,
    pub normalize: Normalize,
}

impl ImagePrep {
    /// The torch resize with `normalize`.
    pub fn torch(normalize: Normalize) -> ImagePrep {
        ImagePrep {
            resize: Resize::Torch,
            normalize,
        }
    }
}

impl From<Normalize> for ImagePrep {
    fn from(normalize: Normalize) -> ImagePrep {
        ImagePrep::torch(normalize)
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

/// [`preprocess_into`] with a choice of resize and normalization.
pub fn preprocess_into_with(
    img: &RgbImage,
    height: usize,
    width: usize,
    prep: impl Into<ImagePrep>,
    out: &mut [f32],
) {
    let prep = prep.into();
    let norm = prep.normalize;
    if prep.resize == Resize::Pil {
        if img.width() == 0 || img.height() == 0 {
            return;
        }
        let resized = resize_pil(img, width as u32, height as u32);
        // the pixels are at the model's size: the torch formula is the identity there
        return preprocess_into_with(&resized, height, width, Resize::Torch.with(norm), out);
    }
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

/// [`preprocess_batch`] with a choice of resize and normalization.
pub fn preprocess_batch_with(
    images: &[&RgbImage],
    height: usize,
    width: usize,
    prep: impl Into<ImagePrep>,
) -> Vec<f32> {
    let prep = prep.into();
    let per = 3 * height * width;
    let mut out = vec![0f32; per * images.len()];
    for (img, chunk) in images.iter().zip(out.chunks_exact_mut(per)) {
        preprocess_into_with(img, height, width, prep, chunk);
    }
    out
}

impl Resize {
    /// This resize with `normalize`.
    pub fn with(self, normalize: Normalize) -> ImagePrep {
        ImagePrep {
            resize: self,
            normalize,
        }
    }
}

/// Fixed-point precision of PIL's 8-bit resampling: 32 bits less 8 for the pixel and 2 spare.
const PIL_PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's per-output-pixel filter windows along one axis (`precompute_coeffs` followed by
/// `normalize_coeffs_8bpc` in Pillow's Resample.c, re-derived from its documented behaviour):
/// the first source index of each window and its fixed-point weights.
fn pil_coeffs(input: usize, output: usize) -> Vec<(usize, Vec<i32>)> {
    // The triangle (bilinear) filter: support 1 at scale 1.
    let triangle = |x: f64| {
        let x = x.abs();
        if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    };
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the triangle's support (1) times filterscale
    let ss = 1.0 / filterscale;
    (0..output)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let w: Vec<f64> = (0..n)
                .map(|x| triangle(((x + xmin) as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let v = k * f64::from(1u32 << PIL_PRECISION_BITS);
                    (if k < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// Rounds a fixed-point accumulator to u8 as PIL does (`clip8`).
fn pil_clip8(acc: i64) -> u8 {
    if acc >= (1i64 << PIL_PRECISION_BITS << 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PIL_PRECISION_BITS) as u8
    }
}

/// `PIL.Image.resize((width, height), Image.BILINEAR)` of an RGB image, bit for bit: a
/// horizontal pass (only over the source rows the vertical pass reads), rounded to u8, then a
/// vertical pass; an axis whose size does not change is not resampled. Empty images come back
/// empty.
pub fn resize_pil(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return RgbImage::new(width, height);
    }
    let src = img.as_raw();
    let half = 1i64 << (PIL_PRECISION_BITS - 1);
    let vert = pil_coeffs(in_h, out_h);
    // rows the vertical pass reads
    let (first, last) = if out_h != in_h {
        let (s0, _) = &vert[0];
        let (sl, kl) = &vert[out_h - 1];
        (*s0, sl + kl.len())
    } else {
        (0, in_h)
    };
    let rows = last - first;
    let tmp: Vec<u8> = if out_w != in_w {
        let horiz = pil_coeffs(in_w, out_w);
        let mut t = vec![0u8; rows * out_w * 3];
        for y in 0..rows {
            let row = &src[(y + first) * in_w * 3..][..in_w * 3];
            for (x, (x0, k)) in horiz.iter().enumerate() {
                for c in 0..3 {
                    let acc = k.iter().enumerate().fold(half, |a, (i, &w)| {
                        a + i64::from(row[(x0 + i) * 3 + c]) * i64::from(w)
                    });
                    t[(y * out_w + x) * 3 + c] = pil_clip8(acc);
                }
            }
        }
        t
    } else {
        src[first * in_w * 3..last * in_w * 3].to_vec()
    };
    if out_h == in_h {
        return RgbImage::from_raw(width, height, tmp).expect("rows x width x 3 bytes");
    }
    let mut out = vec![0u8; out_h * out_w * 3];
    let stride = out_w * 3;
    for (y, (y0, k)) in vert.iter().enumerate() {
        let y0 = y0 - first;
        for i in 0..stride {
            let acc = k.iter().enumerate().fold(half, |a, (j, &w)| {
                a + i64::from(tmp[(y0 + j) * stride + i]) * i64::from(w)
            });
            out[y * stride + i] = pil_clip8(acc);
        }
    }
    RgbImage::from_raw(width, height, out).expect("height x width x 3 bytes")
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
