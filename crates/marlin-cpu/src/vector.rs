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
