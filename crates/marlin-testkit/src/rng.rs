//! Random tensors from fixed seeds: the same seed gives the same tensor on every machine.
//!
//! The generator is xoshiro256++ (`rand::rngs::Xoshiro256PlusPlus`), whose output is specified
//! by its algorithm, unlike `StdRng`, which may change between `rand` versions.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// The seeded generator every function here uses.
pub fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// `len` samples of N(0, std²) (Box-Muller, computed in f64).
pub fn gaussian(seed: u64, len: usize, std: f32) -> Vec<f32> {
    let mut r = rng(seed);
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1: f64 = 1.0 - r.random::<f64>();
        let u2: f64 = r.random::<f64>();
        let radius = (-2.0 * u1.ln()).sqrt() * std as f64;
        let angle = std::f64::consts::TAU * u2;
        out.push((radius * angle.cos()) as f32);
        out.push((radius * angle.sin()) as f32);
    }
    out.truncate(len);
    out
}

/// [`gaussian`] weights where `round(fraction * len)` of them (at distinct random positions)
/// are replaced by outliers of random sign and magnitude uniform in
/// `[magnitude, 2 * magnitude] * std`. `magnitude = 10` gives outliers of 10-20 std, like the
/// few large weights of real LLM layers.
pub fn with_outliers(seed: u64, len: usize, std: f32, fraction: f64, magnitude: f32) -> Vec<f32> {
    let mut out = gaussian(seed, len, std);
    let count = ((fraction * len as f64).round() as usize).min(len);
    // A different stream from the Gaussian one, so the positions do not follow the values.
    let mut r = rng(seed ^ 0x5EED_0F0F_0071_1E25);
    let positions = rand::seq::index::sample(&mut r, len, count);
    for i in positions {
        let size = magnitude * std * (1.0 + r.random::<f32>());
        out[i] = if r.random::<bool>() { size } else { -size };
    }
    out
}

/// `len` uniform random codes below `2^bits` (for packing tests).
pub fn codes(seed: u64, len: usize, bits: u32) -> Vec<u8> {
    let mut r = rng(seed);
    (0..len)
        .map(|_| (r.random::<u32>() & ((1 << bits) - 1)) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_has_the_asked_moments_and_is_reproducible() {
        let x = gaussian(1, 100_001, 2.0);
        assert_eq!(x.len(), 100_001);
        assert_eq!(x, gaussian(1, 100_001, 2.0));
        assert_ne!(x[..8], gaussian(2, 8, 2.0)[..]);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.02, "std {}", var.sqrt());
    }

    #[test]
    fn outliers_have_the_asked_count_and_size() {
        let (len, std) = (10_000, 0.5);
        let x = with_outliers(3, len, std, 0.01, 10.0);
        let big = x.iter().filter(|v| v.abs() >= 10.0 * std).count();
        assert_eq!(big, 100);
        assert!(x.iter().all(|v| v.abs() <= 20.0 * std));
    }

    #[test]
    fn codes_stay_below_the_width() {
        for bits in [2, 3, 4, 8] {
            let c = codes(bits as u64, 4096, bits);
            assert!(c.iter().all(|&q| (q as u32) < (1 << bits)));
            assert_eq!(c.iter().copied().max(), Some(((1u32 << bits) - 1) as u8));
        }
    }
}
