//! How the fp16 model's outputs compare with the fp32 model's: per output, as sorted scores,
//! as detection sets; and when that comparison fails the check.

use super::{DetectionCheck, Fp16Options, OutputCheck, Outputs, Overflow};
use crate::run::decode::{self, BatchOutputs, Decode, DecodeOptions};
use crate::run::postprocess::Detection;

pub(super) fn compare_outputs(expected: &[Outputs], got: &[Outputs]) -> Vec<OutputCheck> {
    let mut out: Vec<OutputCheck> = Vec::new();
    let mut sig: Vec<f64> = Vec::new();
    let mut noise: Vec<f64> = Vec::new();
    for (e_run, g_run) in expected.iter().zip(got) {
        for (i, (name, a)) in e_run.iter().enumerate() {
            let Some((_, b)) = g_run.iter().find(|(n, _)| n == name) else {
                continue;
            };
            if out.len() <= i {
                out.push(OutputCheck {
                    name: name.clone(),
                    sqnr_db: 0.0,
                    max_abs_diff: 0.0,
                    non_finite: 0,
                });
                sig.push(0.0);
                noise.push(0.0);
            }
            for (&x, &y) in a.iter().zip(b.iter()) {
                if !x.is_finite() {
                    continue;
                }
                if !y.is_finite() {
                    out[i].non_finite += 1;
                    continue;
                }
                let d = (x - y) as f64;
                sig[i] += (x as f64) * (x as f64);
                noise[i] += d * d;
                out[i].max_abs_diff = out[i].max_abs_diff.max(d.abs() as f32);
            }
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        o.sqnr_db = crate::quant::sqnr_db(sig[i], noise[i]);
    }
    out
}

/// Scores and detections of both models, decoded as `detrc run` decodes them.
pub(super) fn detections(
    decode: Decode,
    expected: &[Outputs],
    got: &[Outputs],
    threshold: f32,
) -> Option<DetectionCheck> {
    let (mut sig, mut noise) = (0f64, 0f64);
    let mut check = DetectionCheck {
        decode: decode.name().to_string(),
        threshold,
        sorted_scores_sqnr_db: 0.0,
        fp32_detections: 0,
        fp16_detections: 0,
        matched: 0,
        recall: 1.0,
    };
    for (e, g) in expected.iter().zip(got) {
        let a = assemble(decode, e)?;
        let b = assemble(decode, g)?;
        let batch = match &a {
            BatchOutputs::Heads(o) => o.batch,
            BatchOutputs::Graph(o) => o.batch,
        };
        for img in 0..batch {
            let (sa, sb) = (
                sorted_scores(decode, &a, img),
                sorted_scores(decode, &b, img),
            );
            for (x, y) in sa.iter().zip(&sb) {
                let y = if y.is_finite() { *y } else { 0.0 };
                sig += (*x as f64) * (*x as f64);
                noise += ((x - y) as f64).powi(2);
            }
            let opts = |t: f32| DecodeOptions {
                decode,
                top_k: None,
                threshold: t,
            };
            let da = a.detections(img, "", 1, 1, &opts(threshold));
            let db = b.detections(img, "", 1, 1, &opts((threshold - 0.05).max(0.0)));
            check.fp32_detections += da.len();
            check.fp16_detections += db.iter().filter(|d| d.score >= threshold).count();
            check.matched += matched(&da, &db);
        }
    }
    check.sorted_scores_sqnr_db = crate::quant::sqnr_db(sig, noise);
    if check.fp32_detections > 0 {
        check.recall = check.matched as f64 / check.fp32_detections as f64;
    }
    Some(check)
}

fn assemble(decode: Decode, outputs: &Outputs) -> Option<BatchOutputs> {
    let raw: decode::RawOutputs = outputs
        .iter()
        .map(|(n, a)| {
            (
                n.clone(),
                a.shape().iter().map(|&d| d as i64).collect(),
                a.iter().copied().collect(),
            )
        })
        .collect();
    let batch = raw.first().and_then(|(_, s, _)| s.first()).copied()? as usize;
    decode::assemble(raw, decode, batch).ok()
}

/// One image's scores, best first: each query's best class after softmax, every
/// (query, class) sigmoid, or the graph's own scores; as many as there are queries.
fn sorted_scores(decode: Decode, o: &BatchOutputs, img: usize) -> Vec<f32> {
    let mut s: Vec<f32> = match o {
        BatchOutputs::Heads(h) => {
            let per = h.queries * h.classes;
            let l = &h.logits[img * per..][..per];
            match decode {
                Decode::Softmax => l
                    .chunks(h.classes)
                    .map(|q| crate::run::postprocess::best_class(q).1)
                    .collect(),
                _ => l.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
            }
        }
        BatchOutputs::Graph(g) => g.scores[img * g.k..][..g.k].to_vec(),
    };
    let n = match o {
        BatchOutputs::Heads(h) => h.queries,
        BatchOutputs::Graph(g) => g.k,
    };
    // NaN last: a lost score, not the best one.
    s.sort_by(|a, b| {
        b.partial_cmp(a)
            .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
    });
    s.truncate(n);
    s
}

/// fp32 detections with a same-class fp16 detection at IoU >= 0.5, each fp16 one used once.
fn matched(a: &[Detection], b: &[Detection]) -> usize {
    let mut used = vec![false; b.len()];
    let mut n = 0;
    for d in a {
        let best = b
            .iter()
            .enumerate()
            .filter(|(j, e)| !used[*j] && e.category_id == d.category_id)
            .map(|(j, e)| (j, overlap(d.bbox, e.bbox)))
            .filter(|(_, v)| *v >= 0.5)
            .max_by(|x, y| x.1.total_cmp(&y.1));
        if let Some((j, _)) = best {
            used[j] = true;
            n += 1;
        }
    }
    n
}

/// IoU of two `[x, y, w, h]` boxes; 1 for boxes equal within 1% of their size, which a
/// degenerate box (a self-decoding graph fed a random target size) needs.
fn overlap(a: [f32; 4], b: [f32; 4]) -> f32 {
    let scale = a.iter().chain(&b).fold(1e-6f32, |m, v| m.max(v.abs()));
    if a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 0.01 * scale) {
        return 1.0;
    }
    iou(a, b)
}

/// IoU of two `[x, y, w, h]` boxes.
fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let ih = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 && union.is_finite() {
        inter / union
    } else {
        0.0
    }
}

pub(super) fn failure(
    opts: &Fp16Options,
    outputs: &[OutputCheck],
    det: Option<&DetectionCheck>,
    overflows: &[Overflow],
) -> Option<String> {
    let bad: Vec<String> = outputs
        .iter()
        .filter(|o| o.non_finite > 0)
        .map(|o| format!("{} ({} inf/NaN)", o.name, o.non_finite))
        .collect();
    let first = || {
        overflows
            .iter()
            .take(3)
            .map(|o| format!("{} (made by {})", o.tensor, o.node))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !bad.is_empty() {
        return Some(format!(
            "fp16 outputs are not finite: {}{}",
            bad.join(", "),
            if overflows.is_empty() {
                String::new()
            } else {
                format!("; first overflow: {}", first())
            }
        ));
    }
    match det {
        Some(d) if d.sorted_scores_sqnr_db < opts.min_sqnr_db => Some(format!(
            "fp16 scores are {:.1} dB from fp32 (at least {:.0} dB needed)",
            d.sorted_scores_sqnr_db, opts.min_sqnr_db
        )),
        // A few detections say little: one TopK near-tie swap in a random-weight model is
        // already a fifth of five.
        Some(d) if d.fp32_detections >= 5 && d.recall < opts.min_recall => Some(format!(
            "fp16 keeps {} of {} fp32 detections at score {} ({:.0}%; {:.0}% needed)",
            d.matched,
            d.fp32_detections,
            d.threshold,
            100.0 * d.recall,
            100.0 * opts.min_recall
        )),
        Some(_) => None,
        None => outputs
            .iter()
            .find(|o| o.sqnr_db < opts.min_sqnr_db)
            .map(|o| {
                format!(
                    "fp16 output {} is {:.1} dB from fp32 (at least {:.0} dB needed)",
                    o.name, o.sqnr_db, opts.min_sqnr_db
                )
            }),
    }
}
