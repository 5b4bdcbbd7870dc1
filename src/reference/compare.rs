//! Output comparison with a mixed absolute/relative tolerance.

use ndarray::ArrayD;
use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub atol: f32,
    pub rtol: f32,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            atol: 1e-4,
            rtol: 1e-4,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputDiff {
    pub name: String,
    pub max_abs: f32,
    pub ok: bool,
    pub note: Option<String>,
}

/// Compares outputs by name; a missing output or a shape change is a failure.
pub fn compare(
    a: &[(String, ArrayD<f32>)],
    b: &[(String, ArrayD<f32>)],
    tol: Tolerance,
) -> Vec<OutputDiff> {
    a.iter()
        .map(|(name, x)| {
            let Some((_, y)) = b.iter().find(|(n, _)| n == name) else {
                return OutputDiff {
                    name: name.clone(),
                    max_abs: f32::INFINITY,
                    ok: false,
                    note: Some("missing in the compiled model".into()),
                };
            };
            if x.shape() != y.shape() {
                return OutputDiff {
                    name: name.clone(),
                    max_abs: f32::INFINITY,
                    ok: false,
                    note: Some(format!("shape {:?} became {:?}", x.shape(), y.shape())),
                };
            }
            let mut max_abs = 0f32;
            let mut ok = true;
            for (&p, &q) in x.iter().zip(y.iter()) {
                let d = (p - q).abs();
                if p.is_nan() != q.is_nan() || (d > tol.atol + tol.rtol * p.abs()) {
                    ok = false;
                }
                if d.is_finite() {
                    max_abs = max_abs.max(d);
                } else if p != q {
                    max_abs = f32::INFINITY;
                }
            }
            OutputDiff {
                name: name.clone(),
                max_abs,
                ok,
                note: None,
            }
        })
        .collect()
}
