//! f32 vector primitives for the parts of a model that are not matmuls (attention's scores and
//! weighted sums), at the backend's instruction-set level.

use crate::{CpuBackend, Isa, kernels};

impl CpuBackend {
    /// `out[r] = a[r] · x` for each row `r` of `a` (`out.len()` rows of `x.len()` values): the
    /// scores of one query against a block of keys.
    // a (rows, n), x (n) -> out (rows)
    pub fn dot_rows(&self, a: &[f32], x: &[f32], out: &mut [f32]) {
        assert_eq!(
            a.len(),
            out.len() * x.len(),
            "dot_rows: a is not (out.len(), x.len())"
        );
        match self.isa() {
            // SAFETY: a backend exists only at an ISA the CPU has.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { dot_rows_avx512(a, x, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { dot_rows_avx2(a, x, out) },
            _ => dot_rows_portable(a, x, out),
        }
    }

    /// `y += sum over r of w[r] * a[r]` (`w.len()` rows of `y.len()` values): attention's
    /// weighted sum of a block of values.
    // w (rows), a (rows, n) -> y (n), accumulated
    pub fn axpy_rows(&self, w: &[f32], a: &[f32], y: &mut [f32]) {
        assert_eq!(
            a.len(),
            w.len() * y.len(),
            "axpy_rows: a is not (w.len(), y.len())"
        );
        match self.isa() {
            // SAFETY: a backend exists only at an ISA the CPU has.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { axpy_rows_avx512(w, a, y) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { axpy_rows_avx2(w, a, y) },
            _ => axpy_rows_portable(w, a, y),
        }
    }

    /// `out[i] = silu(gate[i]) * up[i]`, with `silu(g) = g / (1 + e^-g)`: SwiGLU's activation.
    // gate (n), up (n) -> out (n)
    pub fn silu_mul(&self, gate: &[f32], up: &[f32], out: &mut [f32]) {
        assert!(
            gate.len() == out.len() && up.len() == out.len(),
            "silu_mul: gate, up and out differ in length"
        );
        match self.isa() {
            // SAFETY: a backend exists only at an ISA the CPU has.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { silu_mul_avx512(gate, up, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { silu_mul_avx2(gate, up, out) },
            _ => silu_mul_portable(gate, up, out),
        }
    }

    /// `s[i] = e^((s[i] - max) * scale) / sum`, in place: attention's softmax of one query's
    /// scores (`scale` = 1 / sqrt(head_dim)).
    pub fn softmax(&self, s: &mut [f32], scale: f32) {
        match self.isa() {
            // SAFETY: a backend exists only at an ISA the CPU has.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { softmax_avx512(s, scale) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { softmax_avx2(s, scale) },
            _ => softmax_portable(s, scale),
        }
    }
}

/// e^x to within a few units in the last place, branch-free so that a loop of it vectorizes
/// (libm's `expf` is a call per value: in a batched decode step SwiGLU's and attention's
/// exponentials took ~8% of the time). The same operations at every ISA (products and sums,
/// no fused multiply-adds), so every ISA gives the same bits. Inputs are clamped to
/// [-87, 88]: below, the result is ~1.6e-38 instead of 0 (or a subnormal), which no softmax or
/// sigmoid can tell apart; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts (Cody and Waite): n * LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // e^r - 1 - r on |r| <= ln2 / 2, as r^2 * P(r) (Cephes' expf).
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E).round_ties_even();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = P[0];
    for c in &P[1..] {
        p = p * r + c;
    }
    let e = 1.0 + r + r * r * p;
    // 2^n, n in [-126, 127]: its bits are the biased exponent alone.
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e * two_n
}

#[inline(always)]
fn silu_mul_portable(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2")]
unsafe fn silu_mul_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
    silu_mul_portable(gate, up, out)
}

/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn silu_mul_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
    silu_mul_portable(gate, up, out)
}

#[inline(always)]
fn softmax_portable(s: &mut [f32], scale: f32) {
    let max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    // Sixteen partial sums, as the vector loop keeps them: the same total at every ISA.
    let mut sums = [0f32; 16];
    let mut chunks = s.chunks_exact_mut(16);
    for c in &mut chunks {
        for (v, t) in c.iter_mut().zip(&mut sums) {
            *v = exp((*v - max) * scale);
            *t += *v;
        }
    }
    for (v, t) in chunks.into_remainder().iter_mut().zip(&mut sums) {
        *v = exp((*v - max) * scale);
        *t += *v;
    }
    let total: f32 = sums.iter().sum();
    let inv = 1.0 / total;
    s.iter_mut().for_each(|v| *v *= inv);
}

/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2")]
unsafe fn softmax_avx512(s: &mut [f32], scale: f32) {
    softmax_portable(s, scale)
}

/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_avx2(s: &mut [f32], scale: f32) {
    softmax_portable(s, scale)
}

#[inline(always)]
fn dot_rows_portable(a: &[f32], x: &[f32], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(a.chunks_exact(x.len())) {
        *o = kernels::f32_dot_lanes::<16>(row, x);
    }
}

#[inline(always)]
fn axpy_rows_portable(w: &[f32], a: &[f32], y: &mut [f32]) {
    for (&wr, row) in w.iter().zip(a.chunks_exact(y.len())) {
        axpy_scalar(wr, row, y);
    }
}

/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dot_rows_avx512(a: &[f32], x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len();
    if !n.is_multiple_of(16) {
        return dot_rows_portable(a, x, out);
    }
    // Sixteen rows at a time (a block of the KV cache): one register of products per row, then
    // the sixteen registers summed into one register of sixteen sums by a transposing tree
    // (45 operations, against ~9 a row for a row's own shuffle-tree reduction, which for
    // attention's short rows cost more than the multiplies).
    let groups = out.len() / 16;
    for (o, rows) in out.chunks_exact_mut(16).zip(a.chunks_exact(16 * n)) {
        // SAFETY: every load reads 16 floats below n of one of the 16 rows (`rows` holds 16
        // rows of n) or of x (n long); the store writes the 16 values of `o`.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); 16];
            for i in (0..n).step_by(16) {
                let v = _mm512_loadu_ps(x.as_ptr().add(i));
                for (r, a) in acc.iter_mut().enumerate() {
                    let p = rows.as_ptr().add(r * n + i);
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(p), v, *a);
                }
            }
            _mm512_storeu_ps(o.as_mut_ptr(), sum16(&acc));
        }
    }
    // The rest one register per row, with a shuffle-tree reduction each.
    let done = 16 * groups;
    for (o, row) in out[done..].iter_mut().zip(a[done * n..].chunks_exact(n)) {
        // SAFETY: every load reads 16 floats below n, inside `row` and `x` (both n long).
        unsafe {
            let mut acc = _mm512_setzero_ps();
            for i in (0..n).step_by(16) {
                let (r, v) = (row.as_ptr().add(i), x.as_ptr().add(i));
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(r), _mm512_loadu_ps(v), acc);
            }
            *o = _mm512_reduce_add_ps(acc);
        }
    }
}

/// The sums of each of 16 registers, as one register (lane r: the sum of `a[r]`'s lanes):
/// pairs of registers are added within 128-bit lanes, then pairs of pairs, then across lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum16(a: &[std::arch::x86_64::__m512; 16]) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // Each of b[k]'s 128-bit lanes: [a(2k) 0+2, a(2k+1) 0+2, a(2k) 1+3, a(2k+1) 1+3] of that
    // lane's four values.
    let b: [__m512; 8] = std::array::from_fn(|k| {
        let (x, y) = (a[2 * k], a[2 * k + 1]);
        _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y))
    });
    // c[k]'s lanes: [a(4k), a(4k+1), a(4k+2), a(4k+3)], each the sum of that lane's four.
    let c: [__m512; 4] = std::array::from_fn(|k| {
        // Moved as pairs of floats (the 64-bit unpacks), added as floats.
        let (x, y) = (_mm512_castps_pd(b[2 * k]), _mm512_castps_pd(b[2 * k + 1]));
        _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
        )
    });
    // Lanes 0 + 1 and 2 + 3 of each c, two c's a register, then the same once more.
    let pairs = |x: __m512, y: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
        )
    };
    let (d0, d1) = (pairs(c[0], c[1]), pairs(c[2], c[3]));
    pairs(d0, d1)
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_rows_avx2(a: &[f32], x: &[f32], out: &mut [f32]) {
    dot_rows_portable(a, x, out)
}

/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn axpy_rows_avx512(w: &[f32], a: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = y.len();
    if !n.is_multiple_of(64) {
        return axpy_rows_portable(w, a, y);
    }
    // y stays in four registers across all rows, 64 values at a time: the generic loop loaded
    // and stored y once per row.
    for c in (0..n).step_by(64) {
        // SAFETY: loads and stores touch y[c..c + 64] and a[r * n + c..][..64], inside the
        // slices (n is a multiple of 64, a holds w.len() rows of n).
        unsafe {
            let yp = y.as_mut_ptr().add(c);
            let mut acc = [0; 4].map(|_| _mm512_setzero_ps());
            for (j, v) in acc.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(yp.add(16 * j));
            }
            for (r, &wr) in w.iter().enumerate() {
                let (row, s) = (a.as_ptr().add(r * n + c), _mm512_set1_ps(wr));
                for (j, v) in acc.iter_mut().enumerate() {
                    *v = _mm512_fmadd_ps(s, _mm512_loadu_ps(row.add(16 * j)), *v);
                }
            }
            for (j, v) in acc.iter().enumerate() {
                _mm512_storeu_ps(yp.add(16 * j), *v);
            }
        }
    }
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_rows_avx2(w: &[f32], a: &[f32], y: &mut [f32]) {
    axpy_rows_portable(w, a, y)
}

/// Plain loop: with the target features of its caller the compiler vectorizes it (element-wise,
/// so no reassociation is needed).
#[inline(always)]
fn axpy_scalar(alpha: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

#[cfg(test)]
mod tests {
    use crate::{CpuBackend, Isa};

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst = 0f64;
        for i in 0..=400_000 {
            let x = -87.0 + 175.0 * i as f32 / 400_000.0;
            let (got, want) = (super::exp(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 4e-7, "relative error {worst:e}");
        assert_eq!(super::exp(0.0), 1.0);
        assert!(super::exp(-1000.0) < 2e-38 && super::exp(1000.0) > 1e38);
        assert!(super::exp(f32::NAN).is_nan());
    }

    #[test]
    fn silu_and_softmax_match_f64_and_agree_across_isas() {
        // 37 values: two vectors of 16 and a remainder.
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.77).sin() * 9.0).collect();
        let up: Vec<f32> = (0..37).map(|i| (i as f32 * 0.31).cos()).collect();
        let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
        for isa in Isa::available() {
            let cpu = CpuBackend::new(isa).unwrap();
            let mut silu = vec![0f32; x.len()];
            cpu.silu_mul(&x, &up, &mut silu);
            for ((&g, &u), &o) in x.iter().zip(&up).zip(&silu) {
                let (g, u) = (g as f64, u as f64);
                let want = g / (1.0 + (-g).exp()) * u;
                assert!(
                    (o as f64 - want).abs() < 1e-6 * (1.0 + want.abs()),
                    "{isa} silu({g})"
                );
            }
            let mut soft = x.clone();
            cpu.softmax(&mut soft, 0.125);
            let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = x
                .iter()
                .map(|&v| ((v as f64 - max) * 0.125).exp())
                .collect();
            let total: f64 = e.iter().sum();
            for (&o, &e) in soft.iter().zip(&e) {
                assert!((o as f64 - e / total).abs() < 1e-6, "{isa} softmax");
            }
            // Every ISA gives the same bits: a sequence's tokens do not depend on the machine's
            // instruction set.
            match &first {
                None => first = Some((silu, soft)),
                Some((s0, m0)) => assert!(s0 == &silu && m0 == &soft, "{isa} differs"),
            }
        }
    }

    #[test]
    fn row_forms_agree_with_one_row_at_a_time() {
        // 64 and 128 take the AVX-512 paths (multiples of 16 and 64), 67 the generic one.
        for n in [67, 64, 128] {
            row_forms_agree(n);
        }
    }

    fn row_forms_agree(n: usize) {
        // Two groups of 16 rows and a remainder.
        let rows = 37;
        let a: Vec<f32> = (0..rows * n).map(|i| (i as f32 * 0.13).sin()).collect();
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).cos()).collect();
        let w: Vec<f32> = (0..rows).map(|r| r as f32 - 1.5).collect();
        for isa in Isa::available() {
            let cpu = CpuBackend::new(isa).unwrap();
            let mut out = vec![0f32; rows];
            cpu.dot_rows(&a, &x, &mut out);
            let mut y = x.clone();
            cpu.axpy_rows(&w, &a, &mut y);
            // One row at a time, in f64.
            let mut want_y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            for r in 0..rows {
                let row = &a[r * n..(r + 1) * n];
                let dot: f64 = row.iter().zip(&x).map(|(p, q)| *p as f64 * *q as f64).sum();
                assert!((out[r] as f64 - dot).abs() < 1e-4, "{isa} dot row {r}");
                for (y, v) in want_y.iter_mut().zip(row) {
                    *y += w[r] as f64 * *v as f64;
                }
            }
            for (g, e) in y.iter().zip(&want_y) {
                assert!((*g as f64 - e).abs() < 1e-5, "{isa}: {g} vs {e}");
            }
        }
    }
}
