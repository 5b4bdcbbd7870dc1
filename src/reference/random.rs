//! Seeded random inputs. A tiny generator of our own keeps results identical across platforms
//! and crate versions, which a verification seed printed in a log must guarantee.

use ndarray::{ArrayD, IxDyn};

use super::InputSpec;
use crate::ir::DType;

/// SplitMix64: small, fast, and good enough for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

pub fn inputs(specs: &[InputSpec], seed: u64) -> Vec<ArrayD<f32>> {
    let mut rng = Rng::new(seed);
    specs
        .iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| match s.dtype {
                    DType::BOOL => (rng.next_u64() & 1) as f32,
                    d if d.is_float() => rng.normal() as f32,
                    _ => (rng.next_u64() % 4) as f32,
                })
                .collect();
            ArrayD::from_shape_vec(IxDyn(&s.shape), v).expect("sized")
        })
        .collect()
}
