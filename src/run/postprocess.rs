//! Post-processing of class logits and boxes, the two decodes of [`super::decode`] that read
//! them:
//!
//! - softmax, as `PostProcess` in the DETR reference: softmax over the class logits, drop the
//!   last class (no-object), best class per query;
//! - sigmoid, as the focal-loss families: sigmoid per (query, class), the `k` best pairs over
//!   queries x classes.
//!
//! Both scale the normalized (cx, cy, w, h) boxes to the original image. Boxes are not clipped
//! to the image, like the references; COCO-style (x, y, w, h) is what is reported.

use serde::Serialize;

/// One detection, in the JSON form of `detections.json`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Detection {
    /// File name of the input image.
    pub image: String,
    /// Class index as in the logits (COCO ids for 91-class DETR models).
    pub category_id: usize,
    pub score: f32,
    /// Pixels of the original image: left, top, width, height.
    pub bbox: [f32; 4],
    /// The instance mask as COCO RLE, for models with a mask output (see [`super::masks`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<super::masks::Rle>,
}

/// Class logits and boxes of one batch, row-major f32.
#[derive(Debug, Clone)]
pub struct DetrOutputs {
    pub batch: usize,
    pub queries: usize,
    /// Width of the logits (for softmax models: classes plus the trailing no-object class).
    pub classes: usize,
    /// `[batch, queries, classes]`
    pub logits: Vec<f32>,
    /// `[batch, queries, 4]`
    pub boxes: Vec<f32>,
}

impl DetrOutputs {
    fn query_logits(&self, b: usize, q: usize) -> &[f32] {
        let n = self.classes;
        &self.logits[(b * self.queries + q) * n..][..n]
    }

    fn query_box(&self, b: usize, q: usize) -> [f32; 4] {
        let s = &self.boxes[(b * self.queries + q) * 4..][..4];
        [s[0], s[1], s[2], s[3]]
    }
}

/// Best class (excluding no-object) and its softmax probability.
pub fn best_class(logits: &[f32]) -> (usize, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let real = &logits[..logits.len().saturating_sub(1)];
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &l) in real.iter().enumerate() {
        if l > best.1 {
            best = (i, l);
        }
    }
    (best.0, (best.1 - max).exp() / sum)
}

/// Detections of batch entry `b`, in query order (a stable order that does not depend on how
/// two runtimes round near-equal scores). A NaN score never passes the threshold.
pub fn decode(
    out: &DetrOutputs,
    b: usize,
    image: &str,
    orig_w: u32,
    orig_h: u32,
    threshold: f32,
) -> Vec<Detection> {
    decode_queries(out, b, image, orig_w, orig_h, threshold)
        .into_iter()
        .map(|(_, d)| d)
        .collect()
}

/// [`decode`], each detection with the query it came from.
pub fn decode_queries(
    out: &DetrOutputs,
    b: usize,
    image: &str,
    orig_w: u32,
    orig_h: u32,
    threshold: f32,
) -> Vec<(usize, Detection)> {
    let (w, h) = (orig_w as f32, orig_h as f32);
    (0..out.queries)
        .filter_map(|q| {
            let (category_id, score) = best_class(out.query_logits(b, q));
            if score.is_nan() || score < threshold {
                return None;
            }
            let [cx, cy, bw, bh] = out.query_box(b, q);
            let d = Detection {
                image: image.to_string(),
                category_id,
                score,
                bbox: [(cx - 0.5 * bw) * w, (cy - 0.5 * bh) * h, bw * w, bh * h],
                segmentation: None,
            };
            Some((q, d))
        })
        .collect()
}

/// Sigmoid in f32, `1 / (1 + e^-x)`.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Sigmoid detections of batch entry `b`: the `k` best (query, class) pairs over all queries
/// and classes, best first, then those scoring at least `threshold`.
///
/// Order: by logit, descending (the order of the exact sigmoid; f32 sigmoids of distinct large
/// logits round to the same 1.0), ties by the lower flat index `query * classes + class`, the
/// tie rule of ONNX TopK. Pairs with a NaN logit are never kept.
pub fn decode_sigmoid(
    out: &DetrOutputs,
    b: usize,
    image: &str,
    orig_w: u32,
    orig_h: u32,
    threshold: f32,
    k: usize,
) -> Vec<Detection> {
    decode_sigmoid_queries(out, b, image, orig_w, orig_h, threshold, k)
        .into_iter()
        .map(|(_, d)| d)
        .collect()
}

/// [`decode_sigmoid`], each detection with the query it came from.
pub fn decode_sigmoid_queries(
    out: &DetrOutputs,
    b: usize,
    image: &str,
    orig_w: u32,
    orig_h: u32,
    threshold: f32,
    k: usize,
) -> Vec<(usize, Detection)> {
    let n = out.queries * out.classes;
    let logits = &out.logits[b * n..][..n];
    let mut order: Vec<usize> = (0..n).filter(|&i| !logits[i].is_nan()).collect();
    let by_logit = |a: &usize, c: &usize| logits[*c].total_cmp(&logits[*a]).then(a.cmp(c));
    if k < order.len() {
        // the k best in any order, then sorted: O(n + k log k) instead of sorting all pairs
        order.select_nth_unstable_by(k, by_logit);
        order.truncate(k);
    }
    order.sort_unstable_by(by_logit);
    let (w, h) = (orig_w as f32, orig_h as f32);
    order
        .into_iter()
        .filter_map(|i| {
            let score = sigmoid(logits[i]);
            if score < threshold {
                return None;
            }
            let q = i / out.classes;
            let [cx, cy, bw, bh] = out.query_box(b, q);
            let d = Detection {
                image: image.to_string(),
                category_id: i % out.classes,
                score,
                bbox: [(cx - 0.5 * bw) * w, (cy - 0.5 * bh) * h, bw * w, bh * h],
                segmentation: None,
            };
            Some((q, d))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_drops_no_object() {
        // no-object dominates; the best real class still gets its share of the full softmax
        let (c, s) = best_class(&[1.0, 2.0, 5.0]);
        assert_eq!(c, 1);
        let z = 1f32.exp() + 2f32.exp() + 5f32.exp();
        assert!((s - 2f32.exp() / z).abs() < 1e-6);
    }

    #[test]
    fn boxes_scale_to_original_pixels_and_threshold_applies() {
        let out = DetrOutputs {
            batch: 1,
            queries: 2,
            classes: 3,
            logits: vec![10.0, 0.0, 0.0, 0.0, 0.0, 10.0],
            boxes: vec![0.5, 0.5, 0.5, 0.25, 0.1, 0.1, 0.1, 0.1],
        };
        let d = decode(&out, 0, "a.png", 200, 100, 0.5);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].category_id, 0);
        assert_eq!(d[0].bbox, [50.0, 37.5, 100.0, 25.0]);
        assert_eq!(decode(&out, 0, "a.png", 200, 100, 0.0).len(), 2);
    }

    #[test]
    fn sigmoid_takes_the_best_pairs_over_queries_and_classes() {
        // query 1 holds the two best pairs; the tie at 1.0 goes to the lower flat index
        let out = DetrOutputs {
            batch: 2,
            queries: 2,
            classes: 3,
            logits: vec![
                1.0,
                -5.0,
                0.0,
                3.0,
                1.0,
                20.0, // image 0
                f32::NAN,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0, // image 1
            ],
            boxes: vec![
                0.5, 0.5, 0.2, 0.2, 0.25, 0.5, 0.5, 1.0, 0.5, 0.5, 1.0, 1.0, 0.5, 0.5, 1.0, 1.0,
            ],
        };
        let d = decode_sigmoid(&out, 0, "a", 100, 10, 0.0, 3);
        let got: Vec<(usize, f32)> = d.iter().map(|d| (d.category_id, d.score)).collect();
        assert_eq!(
            got,
            [(2, sigmoid(20.0)), (0, sigmoid(3.0)), (0, sigmoid(1.0))]
        );
        assert_eq!(d[0].bbox, [0.0, 0.0, 50.0, 10.0]);
        assert_eq!(d[2].bbox, [40.0, 4.0, 20.0, 2.0]);
        assert_eq!(decode_sigmoid(&out, 0, "a", 1, 1, 0.9, 6).len(), 2);
        assert_eq!(decode_sigmoid(&out, 0, "a", 1, 1, 0.0, 100).len(), 6);
        // NaN dropped, ties in index order
        let d = decode_sigmoid(&out, 1, "a", 1, 1, 0.0, 2);
        let got: Vec<usize> = d.iter().map(|d| d.category_id).collect();
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn nan_never_passes() {
        let out = DetrOutputs {
            batch: 1,
            queries: 1,
            classes: 2,
            logits: vec![f32::NAN, 0.0],
            boxes: vec![0.5; 4],
        };
        assert!(decode(&out, 0, "a", 1, 1, 0.0).is_empty());
    }
}
