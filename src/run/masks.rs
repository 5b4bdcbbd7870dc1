//! Instance masks (DETR's `DetrForSegmentation`, RF-DETR-Seg, D-FINE-seg style heads): which
//! output holds them, each detection's mask at the image's size, and its COCO RLE.
//!
//! - **Found by structure**: a rank-4 output `[B, Q, h, w]` whose `Q` is the queries of the
//!   class logits (or the `K` of a graph that decodes itself), besides the outputs the decode
//!   reads. Several such outputs are told apart by a name containing "mask"; names alone never
//!   make a mask output.
//! - **Decoded as the families do**: the mask logits of the detection's query, bilinearly
//!   resized (half-pixel centers, no antialiasing: `F.interpolate(mode="bilinear",
//!   align_corners=False)`, the formula of [`super::preprocess`]) to the original image, then
//!   `sigmoid > 0.5`, computed as `logit > 0` (the same set, without rounding the sigmoid).
//!   The mask covers the whole image, like the boxes: the model saw the image stretched.
//! - **Written as COCO RLE**: `{"size": [h, w], "counts": "..."}`, runs over the mask in
//!   column-major order starting with a (possibly empty) run of zeros, in COCO's compressed
//!   string form (what pycocotools' `mask.encode` returns and its `decode` reads).
//! - **Unknown layouts** (a "mask" output of another rank, `[B, h, w, Q]`, Q or batch
//!   disagreeing): boxes only, with a warning that says what was seen.

use serde::{Deserialize, Serialize};

use super::decode::{describe, Layout, RawOutputs};
use super::preprocess::taps;

/// A binary mask in COCO's run-length encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rle {
    /// `[height, width]` of the image.
    pub size: [u32; 2],
    /// COCO's compressed counts string.
    pub counts: String,
}

/// What the model's outputs say about masks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskOutput {
    /// No output looks like masks.
    None,
    /// The index of the mask output.
    Found(usize),
    /// Something looks like masks but does not fit `[B, Q, h, w]`: why.
    Unknown(String),
}

fn fits(d: i64, want: i64) -> bool {
    d < 0 || want < 0 || d == want
}

/// Finds the mask output among `outputs` (names and shapes, -1 where dynamic), given the
/// decode's `layout` (whose outputs are not masks) and the batch.
pub fn find(outputs: &[(String, Vec<i64>)], layout: Layout, batch: usize) -> MaskOutput {
    let (used, queries): (Vec<usize>, i64) = match layout {
        Layout::Heads { logits, boxes } => (
            vec![logits, boxes],
            outputs[logits].1.get(1).copied().unwrap_or(-1),
        ),
        Layout::Graph {
            labels,
            boxes,
            scores,
        } => (
            vec![labels, boxes, scores],
            outputs[labels].1.get(1).copied().unwrap_or(-1),
        ),
    };
    let b = batch as i64;
    let rest: Vec<usize> = (0..outputs.len()).filter(|i| !used.contains(i)).collect();
    let named = |i: usize| outputs[i].0.to_ascii_lowercase().contains("mask");
    let fitting: Vec<usize> = rest
        .iter()
        .copied()
        .filter(|&i| {
            let s = &outputs[i].1;
            s.len() == 4 && fits(s[0], b) && fits(s[1], queries) && s[2] != 0 && s[3] != 0
        })
        .collect();
    match fitting.as_slice() {
        [i] => return MaskOutput::Found(*i),
        [] => {}
        several => {
            let by_name: Vec<usize> = several.iter().copied().filter(|&i| named(i)).collect();
            if let [i] = by_name.as_slice() {
                return MaskOutput::Found(*i);
            }
            return MaskOutput::Unknown(format!(
                "several outputs could be masks [B, Q, h, w] ({}); drawing boxes only",
                describe(
                    &several
                        .iter()
                        .map(|&i| outputs[i].clone())
                        .collect::<Vec<_>>()
                )
            ));
        }
    }
    // Mask-like but not [B, Q, h, w]: named so, or of rank 3 to 5 with a query axis elsewhere.
    let odd: Vec<usize> = rest
        .iter()
        .copied()
        .filter(|&i| {
            let s = &outputs[i].1;
            named(i) || ((3..=5).contains(&s.len()) && queries > 0 && s[1..].contains(&queries))
        })
        .collect();
    if odd.is_empty() {
        return MaskOutput::None;
    }
    let q = if queries < 0 {
        "Q".to_string()
    } else {
        queries.to_string()
    };
    MaskOutput::Unknown(format!(
        "output {} looks like masks but is not [{batch}, {q}, h, w] (mask logits per query); \
         drawing boxes only",
        describe(&odd.iter().map(|&i| outputs[i].clone()).collect::<Vec<_>>())
    ))
}

/// Mask logits of one batch, `[batch, queries, height, width]`, row-major.
#[derive(Debug, Clone)]
pub struct MaskLogits {
    pub batch: usize,
    pub queries: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl MaskLogits {
    /// Removes output `index` from `raw` (the decode's heads are found without it), checking it
    /// is `[batch, Q, h, w]` with values for every element; the error says what it is instead.
    pub fn take(
        raw: &mut RawOutputs,
        index: usize,
        batch: usize,
    ) -> std::result::Result<MaskLogits, String> {
        let (name, shape, data) = raw.remove(index);
        let dims: Option<Vec<usize>> = shape.iter().map(|&d| usize::try_from(d).ok()).collect();
        match dims.as_deref() {
            Some(&[b, q, h, w])
                if b == batch
                    && h > 0
                    && w > 0
                    && b.checked_mul(q)
                        .and_then(|n| n.checked_mul(h))
                        .and_then(|n| n.checked_mul(w))
                        == Some(data.len()) =>
            {
                Ok(MaskLogits {
                    batch: b,
                    queries: q,
                    height: h,
                    width: w,
                    data,
                })
            }
            _ => Err(format!(
                "output {name} has shape {shape:?} ({} values) at run time; expected [{batch}, \
                 Q, h, w]; drawing boxes only",
                data.len()
            )),
        }
    }

    /// The mask of query `q` of batch entry `b` at `out_w x out_h`: 1 where the bilinearly
    /// resized logit is above 0, row-major.
    pub fn bits(&self, b: usize, q: usize, out_w: u32, out_h: u32) -> Vec<u8> {
        let (ow, oh) = (out_w as usize, out_h as usize);
        if ow == 0 || oh == 0 {
            return Vec::new();
        }
        let plane = &self.data[(b * self.queries + q) * self.height * self.width..]
            [..self.height * self.width];
        let xs = taps(self.width, ow);
        let ys = taps(self.height, oh);
        let mut out = vec![0u8; ow * oh];
        for (y, ty) in ys.iter().enumerate() {
            let r0 = &plane[ty.i0 * self.width..][..self.width];
            let r1 = &plane[ty.i1 * self.width..][..self.width];
            let ly = ty.frac;
            for (x, tx) in xs.iter().enumerate() {
                let lx = tx.frac;
                let top = (1.0 - lx) * r0[tx.i0] + lx * r0[tx.i1];
                let bot = (1.0 - lx) * r1[tx.i0] + lx * r1[tx.i1];
                let v = (1.0 - ly) * top + ly * bot;
                out[y * ow + x] = u8::from(v > 0.0);
            }
        }
        out
    }
}

/// Column-major run lengths of a row-major `width x height` 0/1 mask, the first run counting
/// zeros (0 when the mask starts with a one), as COCO's RLE.
pub fn rle_counts(bits: &[u8], width: usize, height: usize) -> Vec<u64> {
    let mut counts = Vec::new();
    let mut current = 0u8;
    let mut run = 0u64;
    for x in 0..width {
        for y in 0..height {
            let v = u8::from(bits[y * width + x] != 0);
            if v != current {
                counts.push(run);
                run = 0;
                current = v;
            }
            run += 1;
        }
    }
    counts.push(run);
    counts
}

/// COCO's compressed string form of run lengths (`rleToString` in the COCO API): each count
/// from the third on is stored as the difference to the count two before; every value goes out
/// in 5-bit groups, least significant first, with bit 5 set while more groups follow (a group
/// with bit 4 set ends the number when the rest is all ones, as for a negative value), plus 48
/// to make it printable.
pub fn rle_string(counts: &[u64]) -> String {
    let mut s = String::new();
    for (i, &c) in counts.iter().enumerate() {
        let mut x = c as i64;
        if i > 2 {
            x -= counts[i - 2] as i64;
        }
        loop {
            let mut c5 = x & 0x1f;
            x >>= 5; // arithmetic shift: negative numbers end in a run of ones
            let more = if c5 & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                c5 |= 0x20;
            }
            s.push(char::from((c5 + 48) as u8));
            if !more {
                break;
            }
        }
    }
    s
}

/// The COCO RLE of a row-major `width x height` mask.
pub fn encode(bits: &[u8], width: u32, height: u32) -> Rle {
    let counts = rle_counts(bits, width as usize, height as usize);
    Rle {
        size: [height, width],
        counts: rle_string(&counts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(n: &str, s: &[i64]) -> (String, Vec<i64>) {
        (n.to_string(), s.to_vec())
    }

    const HEADS: Layout = Layout::Heads {
        logits: 0,
        boxes: 1,
    };

    #[test]
    fn found_by_structure_not_by_name() {
        let outs = [
            o("logits", &[1, 10, 7]),
            o("pred_boxes", &[1, 10, 4]),
            o("whatever", &[1, 10, 16, 24]),
        ];
        assert_eq!(find(&outs, HEADS, 1), MaskOutput::Found(2));
        let dynamic = [
            o("labels", &[-1, 10, 5]),
            o("dets", &[-1, 10, 4]),
            o("masks", &[-1, 10, -1, -1]),
        ];
        assert_eq!(find(&dynamic, HEADS, 3), MaskOutput::Found(2));
        // a feature map [B, C, h, w] with C != Q is not a mask, and not mask-like
        let features = [
            o("logits", &[1, 10, 7]),
            o("pred_boxes", &[1, 10, 4]),
            o("features", &[1, 64, 16, 24]),
        ];
        assert_eq!(find(&features, HEADS, 1), MaskOutput::None);
        // two candidates: the name decides
        let two = [
            o("logits", &[1, 10, 7]),
            o("pred_boxes", &[1, 10, 4]),
            o("aux", &[1, 10, 8, 8]),
            o("pred_masks", &[1, 10, 16, 24]),
        ];
        assert_eq!(find(&two, HEADS, 1), MaskOutput::Found(3));
        // a deploy graph that decodes itself: masks per emitted slot K
        let graph = [
            o("labels", &[-1, 8]),
            o("boxes", &[-1, 8, 4]),
            o("scores", &[-1, 8]),
            o("seg", &[-1, 8, 40, 40]),
        ];
        let lay = Layout::Graph {
            labels: 0,
            boxes: 1,
            scores: 2,
        };
        assert_eq!(find(&graph, lay, 2), MaskOutput::Found(3));
        // the batch must fit where it is declared
        assert_ne!(find(&outs, HEADS, 2), MaskOutput::Found(2));
    }

    #[test]
    fn unknown_layouts_are_named() {
        for outs in [
            // channels last
            vec![
                o("logits", &[1, 10, 7]),
                o("pred_boxes", &[1, 10, 4]),
                o("masks", &[1, 16, 24, 10]),
            ],
            // flattened batch x queries
            vec![
                o("logits", &[2, 10, 7]),
                o("pred_boxes", &[2, 10, 4]),
                o("pred_masks", &[20, 1, 16, 24]),
            ],
            // rank 5
            vec![
                o("logits", &[1, 10, 7]),
                o("pred_boxes", &[1, 10, 4]),
                o("m", &[1, 10, 1, 16, 24]),
            ],
        ] {
            let batch = outs[0].1[0] as usize;
            match find(&outs, HEADS, batch) {
                MaskOutput::Unknown(why) => assert!(why.contains("boxes only"), "{why}"),
                other => panic!("{outs:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn rle_is_column_major_and_starts_with_zeros() {
        // [[0, 1, 1], [0, 0, 1]] column by column: 0 0 | 1 0 | 1 1
        let bits = [0, 1, 1, 0, 0, 1];
        assert_eq!(rle_counts(&bits, 3, 2), [2, 1, 1, 2]);
        assert_eq!(rle_counts(&[1, 1], 2, 1), [0, 2]);
        assert_eq!(rle_counts(&[0, 0, 0], 3, 1), [3]);
        assert_eq!(rle_string(&[2, 1, 1, 2]), "2111");
        // differences from the third count on, negative ones included, multi-group values;
        // the strings pycocotools 2.0.11 makes of these counts (mask.frPyObjects)
        assert_eq!(rle_string(&[0, 100, 5, 30]), "0T35jM");
        assert_eq!(rle_string(&[1000, 1000, 1000, 1]), "Xo0Xo0Xo0iPO");
    }

    #[test]
    fn mask_bits_resize_then_threshold() {
        // one query, 1 x 2 logits [-1, 3]: resized to 4 wide, the half-pixel taps give
        // -1, 0, 2, 3 -> only values above zero count
        let m = MaskLogits {
            batch: 1,
            queries: 1,
            height: 1,
            width: 2,
            data: vec![-1.0, 3.0],
        };
        assert_eq!(m.bits(0, 0, 4, 2), [0, 0, 1, 1, 0, 0, 1, 1]);
        assert!(m.bits(0, 0, 0, 3).is_empty());
        // batch 2 x 2 queries: each (image, query) reads its own plane
        let m = MaskLogits {
            batch: 2,
            queries: 2,
            height: 1,
            width: 1,
            data: vec![1.0, -1.0, -1.0, 1.0],
        };
        let got: Vec<Vec<u8>> = [(0, 0), (0, 1), (1, 0), (1, 1)]
            .iter()
            .map(|&(b, q)| m.bits(b, q, 2, 1))
            .collect();
        assert_eq!(got, [vec![1, 1], vec![0, 0], vec![0, 0], vec![1, 1]]);
    }

    #[test]
    fn take_checks_the_runtime_shape() {
        let mut raw: RawOutputs = vec![
            ("logits".into(), vec![1, 2, 3], vec![0.0; 6]),
            ("m".into(), vec![1, 2, 2, 2], vec![0.5; 8]),
        ];
        let m = MaskLogits::take(&mut raw, 1, 1).unwrap();
        assert_eq!((m.queries, m.height, m.width), (2, 2, 2));
        assert_eq!(
            raw.len(),
            1,
            "the mask output leaves the outputs the decode reads"
        );
        let mut bad: RawOutputs = vec![("m".into(), vec![2, 2, 2, 2], vec![0.5; 16])];
        let e = MaskLogits::take(&mut bad, 0, 1).unwrap_err();
        assert!(e.contains("expected [1, Q, h, w]"), "{e}");
    }
}
