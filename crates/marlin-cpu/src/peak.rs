//! The arithmetic ceiling: how many int8 multiply-adds per second this CPU's dot-product
//! instructions reach when nothing else limits them.
//!
//! Past M = 1 a quantized matmul stops being bound by reading its weights and becomes bound by
//! arithmetic; this is the baseline that says how far from that bound a kernel is.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::Isa;

/// Independent accumulators: enough to cover the dot-product instruction's latency.
const CHAINS: usize = 12;

/// Multiply-adds per second of `u8 x i8` dot products at `isa` on every rayon thread,
/// measured for about `duration` (the best of several rounds).
pub fn int8_macs_per_second(isa: Isa, duration: Duration) -> f64 {
    let threads = rayon::current_num_threads();
    let rounds = 5;
    let mut best = 0f64;
    for _ in 0..rounds {
        let start = Instant::now();
        let macs: u64 = (0..threads)
            .into_par_iter()
            .map(|_| busy_macs(isa, duration / rounds))
            .sum();
        best = best.max(macs as f64 / start.elapsed().as_secs_f64());
    }
    best
}

/// Runs dot products for about `duration` on this thread; returns the multiply-adds done.
fn busy_macs(isa: Isa, duration: Duration) -> u64 {
    let start = Instant::now();
    let mut macs = 0u64;
    while start.elapsed() < duration {
        macs += match isa {
            // SAFETY: `Isa::Avx512Vnni` is only handed out when the CPU has it.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { x86::vnni512(black_box(10_000)) },
            // SAFETY: `Isa::Avx2` is only handed out when the CPU has it.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::maddubs256(black_box(10_000)) },
            _ => scalar(black_box(1_000)),
        };
    }
    macs
}

/// The scalar path's dot product, 32 multiply-adds per step.
fn scalar(steps: u64) -> u64 {
    let (mut a, b) = ([1u8; 32], [3i8; 32]);
    let mut acc = 0i32;
    for _ in 0..steps {
        acc = acc.wrapping_add(
            a.iter()
                .zip(&b)
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum::<i32>(),
        );
        a = black_box(a);
    }
    black_box(acc);
    steps * 32
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    use super::CHAINS;

    /// `vpdpbusd` on 512-bit registers: 64 multiply-adds each.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn vnni512(steps: u64) -> u64 {
        let (a, b) = (_mm512_set1_epi8(3), _mm512_set1_epi8(-2));
        let mut acc = [_mm512_setzero_si512(); CHAINS];
        for _ in 0..steps {
            for c in acc.iter_mut() {
                *c = _mm512_dpbusd_epi32(*c, a, b);
            }
        }
        black_box(acc);
        steps * CHAINS as u64 * 64
    }

    /// `vpmaddubsw` + `vpmaddwd` on 256-bit registers: 32 multiply-adds per pair.
    #[target_feature(enable = "avx2")]
    pub(super) fn maddubs256(steps: u64) -> u64 {
        let (a, b, ones) = (
            _mm256_set1_epi8(3),
            _mm256_set1_epi8(-2),
            _mm256_set1_epi16(1),
        );
        let mut acc = [_mm256_setzero_si256(); CHAINS];
        for _ in 0..steps {
            for c in acc.iter_mut() {
                let d = _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones);
                *c = _mm256_add_epi32(*c, d);
            }
        }
        black_box(acc);
        steps * CHAINS as u64 * 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_available_isa_reports_a_positive_rate() {
        for isa in Isa::available() {
            let rate = int8_macs_per_second(isa, Duration::from_millis(10));
            assert!(rate.is_finite() && rate > 0.0, "{isa}: {rate}");
        }
    }
}
