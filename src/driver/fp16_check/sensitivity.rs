//! Which operator's fp16 rounding costs the outputs most, measured rather than guessed.
//!
//! When nothing overflows and the fp16 model is still too far from fp32 (a sum of large terms
//! that cancel, a subtraction of nearly equal values), no range tells which operator to keep.
//! The search keeps groups of fp16 operators in fp32 and measures the scores each time:
//! first [`GROUPS`] contiguous groups in topological order, then the better half of the best
//! group, down to one operator. That costs `GROUPS + 2 log2(n / GROUPS)` trial conversions for
//! `n` candidates, and is only run on a model that fails the check.

use super::{Checker, Kept, Trial};
use crate::error::Result;
use crate::passes::precision::fp16_storage::Probe;

/// Groups the first step splits the candidates into.
const GROUPS: usize = 8;
/// Keeping an operator must raise the score by this much (dB) to count.
const MIN_GAIN_DB: f64 = 0.5;

/// The operator to keep in fp32 next, or `None` when keeping none of them helps by
/// [`MIN_GAIN_DB`].
pub(super) fn most_costly(
    checker: &Checker<'_>,
    keep: &[String],
    trial: &Trial,
    round: usize,
    progress: &mut dyn FnMut(String),
) -> Result<Option<Kept>> {
    let base = checker.score(&trial.got);
    // The fp16 operators of the conversion that the fp32 graph has (not the Casts it added),
    // in topological order.
    let candidates: Vec<&Probe> = trial
        .probes
        .iter()
        .filter(|p| {
            p.fp16
                && p.op_type != "Input"
                && checker.fp32_names.contains(&p.tensor)
                && !keep.contains(&p.tensor)
        })
        .collect();
    if candidates.is_empty() {
        return Ok(None);
    }
    progress(format!(
        "fp16 round {round}: nothing overflows, but the scores are {base:.1} dB from fp32; \
         measuring which of {} fp16 ops costs the most",
        candidates.len()
    ));
    let score_with = |group: &[&Probe]| -> Result<f64> {
        let mut k = keep.to_vec();
        k.extend(group.iter().map(|p| p.tensor.clone()));
        Ok(checker.score(&checker.trial(&k)?.got))
    };
    let size = candidates.len().div_ceil(GROUPS);
    let mut best: Option<(&[&Probe], f64)> = None;
    for group in candidates.chunks(size) {
        let s = score_with(group)?;
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((group, s));
        }
    }
    let Some((mut group, mut score)) = best else {
        return Ok(None);
    };
    while group.len() > 1 && score > base + MIN_GAIN_DB {
        let (a, b) = group.split_at(group.len() / 2);
        let (sa, sb) = (score_with(a)?, score_with(b)?);
        (group, score) = if sa >= sb { (a, sa) } else { (b, sb) };
    }
    if group.len() != 1 || score.is_nan() || score <= base + MIN_GAIN_DB {
        return Ok(None);
    }
    let p = group[0];
    Ok(Some(Kept {
        tensor: p.tensor.clone(),
        node: p.producer.clone(),
        op_type: p.op_type.clone(),
        round,
        reason: format!(
            "its fp16 rounding costs the most: kept in fp32, the check goes from {base:.1} to \
             {score:.1} dB"
        ),
    }))
}
