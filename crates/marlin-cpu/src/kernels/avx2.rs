//! AVX2 + FMA kernels: 32 weights per step.

use std::arch::x86_64::*;

use super::{GridRow, NibbleRow};
use crate::activations::{PlaneRow, Q8Planes, Q8Rows};

/// How far ahead of the chunk in use the weight stream is prefetched (as for AVX-512).
const PREFETCH: usize = 2048;

/// Activation rows handled together, so each weight load serves several of them.
const MR: usize = 4;

/// # Safety
/// The CPU must have AVX2; `codes.len() == 2 * packed.len()`, a multiple of 32.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn decode_nibbles(packed: &[u8], lut: &[u8; 16], codes: &mut [u8]) {
    let mask = _mm256_set1_epi8(0x0F);
    // SAFETY: `lut` has 16 bytes; every load and store below stays inside its slice because
    // each step reads 32 packed bytes (two blocks) and writes 64 codes.
    unsafe {
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(lut.as_ptr().cast()));
        let steps = packed.len() / 32;
        for i in 0..steps {
            let v = _mm256_loadu_si256(packed.as_ptr().add(32 * i).cast());
            let lo = _mm256_shuffle_epi8(table, _mm256_and_si256(v, mask));
            let hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), mask));
            // Block b is [low nibbles of its 16 bytes, high nibbles]: 128-bit lane b of each.
            let b0 = _mm256_permute2x128_si256(lo, hi, 0x20);
            let b1 = _mm256_permute2x128_si256(lo, hi, 0x31);
            _mm256_storeu_si256(codes.as_mut_ptr().add(64 * i).cast(), b0);
            _mm256_storeu_si256(codes.as_mut_ptr().add(64 * i + 32).cast(), b1);
        }
        let done = steps * 32;
        super::decode_nibbles_scalar(&packed[done..], lut, &mut codes[2 * done..]);
    }
}

/// # Safety
/// The CPU must have AVX2 and FMA; slice lengths as `grid_dot` checks.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn grid_dot(w: &GridRow<'_>, x: &Q8Rows, out: &mut [f32]) {
    for rows in super::row_tiles(x.m, MR) {
        let (r0, out) = (rows.start, &mut out[rows.clone()]);
        // SAFETY: forwarded from the caller.
        unsafe { by_rows!(grid_dot_rows, rows.len(), (w, x, r0, out), 1 2 3 4) };
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn grid_dot_rows<const R: usize>(w: &GridRow<'_>, x: &Q8Rows, r0: usize, out: &mut [f32]) {
    // k_pad is a multiple of 32.
    let steps = x.k_pad / 32;
    let rows: [(&[i8], &[f32]); R] = std::array::from_fn(|i| x.row(r0 + i));
    let inits: [&[i32]; R] = std::array::from_fn(|i| x.init_row(r0 + i));
    let zero_point = !x.lane_init.is_empty();
    let mut acc = [_mm256_setzero_ps(); R];
    // SAFETY: step `i` reads 32 codes and activations at 32 i, 8 lane scales at 8 i, and at most
    // 2 grid scales at i * 32 / group_len; the scales carry 4 floats of padding.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        // Lanes 0-3 hold weights 0-15 of the step, lanes 4-7 weights 16-31.
        let half_index = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
        for i in 0..steps {
            let mut c = _mm256_loadu_si256(w.codes.as_ptr().add(32 * i).cast());
            if w.signed {
                c = _mm256_xor_si256(c, _mm256_set1_epi8(-128));
            }
            let gs = if w.group_len >= 32 {
                _mm256_set1_ps(*w.gs.get_unchecked(32 * i / w.group_len))
            } else {
                let pair = _mm256_castps128_ps256(_mm_loadu_ps(w.gs.as_ptr().add(2 * i)));
                _mm256_permutevar8x32_ps(pair, half_index)
            };
            for ((a, (q, ls)), init) in acc.iter_mut().zip(rows.iter()).zip(inits) {
                let xq = _mm256_loadu_si256(q.as_ptr().add(32 * i).cast());
                let mut dot = if w.signed {
                    wide_dot(c, xq)
                } else {
                    pair_dot(c, xq, ones)
                };
                if zero_point {
                    let init = _mm256_loadu_si256(init.as_ptr().add(8 * i).cast());
                    dot = _mm256_add_epi32(dot, init);
                }
                let scale = _mm256_mul_ps(gs, _mm256_loadu_ps(ls.as_ptr().add(8 * i)));
                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, *a);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = hsum(a);
        }
    }
}

/// Sums of 4 products `c * x` per 32-bit lane, codes at most 127 (pair sums fit i16).
#[inline]
#[target_feature(enable = "avx2")]
fn pair_dot(c: __m256i, x: __m256i, ones: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(c, x), ones)
}

/// The same for codes up to 255: widen to i16 first so nothing saturates.
#[inline]
#[target_feature(enable = "avx2")]
fn wide_dot(c: __m256i, x: __m256i) -> __m256i {
    let (c_lo, c_hi) = (_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    let (x_lo, x_hi) = (_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    let lo = _mm256_madd_epi16(_mm256_cvtepu8_epi16(c_lo), _mm256_cvtepi8_epi16(x_lo));
    let hi = _mm256_madd_epi16(_mm256_cvtepu8_epi16(c_hi), _mm256_cvtepi8_epi16(x_hi));
    // lo lane j sums weights 2j, 2j+1 of the first half; fold pairs so that lane j covers
    // weights 4j..4j+3 like `pair_dot`: hadd gives [lo0+lo1, lo2+lo3, hi0+hi1, hi2+hi3 | ...].
    let h = _mm256_hadd_epi32(lo, hi);
    _mm256_permute4x64_epi64(h, 0b11_01_10_00)
}

#[inline]
#[target_feature(enable = "avx2")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

/// # Safety
/// The CPU must have AVX2 and FMA; `a.len() == b.len()`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn f32_dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() / 16 * 16;
    // SAFETY: every load reads 8 floats below `n <= a.len() == b.len()`.
    unsafe {
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..n).step_by(16) {
            let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(8)), _mm256_loadu_ps(pb.add(8)), s1);
        }
        hsum(_mm256_add_ps(s0, s1)) + super::f32_dot_lanes::<8>(&a[n..], &b[n..])
    }
}

/// # Safety
/// The CPU must have AVX2 and FMA; `x.width == 64`; lengths as `nibble_dot` checks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibble_dot(w: &NibbleRow<'_>, x: &Q8Planes, out: &mut [f32]) {
    for rows in super::row_tiles(x.rows.m, MR) {
        let (r0, out) = (rows.start, &mut out[rows.clone()]);
        // SAFETY: forwarded from the caller.
        unsafe { by_rows!(nibble_dot_rows, rows.len(), (w, x, r0, out), 1 2 3 4) };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibble_dot_rows<const R: usize>(
    w: &NibbleRow<'_>,
    x: &Q8Planes,
    r0: usize,
    out: &mut [f32],
) {
    let rows: [PlaneRow<'_>; R] = std::array::from_fn(|i| x.row(r0 + i));
    let mut acc = [_mm256_setzero_ps(); R];
    // SAFETY: chunk `i` reads 32 packed bytes at 32 i, 64 activations at 64 i, 8 lane scales,
    // sums and initial values at 8 i (no initial values for affine formats), and the 2 or 1
    // scales (and biases) of its groups: inside the row, because chunks are whole and a row
    // has k_pad / group_len groups.
    unsafe {
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(w.lut.as_ptr().cast()));
        // Lane l covers block l / 4 of the chunk.
        let half = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
        // Scales are read from the stored bytes: 2 or 1 per chunk for groups of 32 and more.
        let f16_lanes = |p: *const u8, i: usize| match w.group_len {
            32 => {
                let two = _mm_cvtsi32_si128(p.add(4 * i).cast::<i32>().read_unaligned());
                _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_cvtph_ps(two)), half)
            }
            g => {
                let one = p.add(2 * (64 * i / g)).cast::<u16>().read_unaligned();
                _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(one as i32)))
            }
        };
        // E8M0 (group 32): the exponent byte shifted into an f32's exponent field is 2^(e-127).
        let e8m0_lanes = |i: usize| {
            let two = w.scales.as_ptr().add(2 * i).cast::<u16>().read_unaligned();
            let e = _mm_slli_epi32(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(two as i32)), 23);
            _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_castsi128_ps(e)), half)
        };
        let affine = w.affine();
        for i in 0..x.chunks() {
            // Rows are contiguous, so running past this row prefetches the next; prefetches
            // never fault.
            let ahead = w.packed.as_ptr().wrapping_add(32 * i + PREFETCH);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            let v = _mm256_loadu_si256(w.packed.as_ptr().add(32 * i).cast());
            let mut lo = _mm256_and_si256(v, mask);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
            if !w.identity {
                lo = _mm256_shuffle_epi8(table, lo);
                hi = _mm256_shuffle_epi8(table, hi);
            }
            let gs = if w.e8m0 {
                e8m0_lanes(i)
            } else {
                f16_lanes(w.scales.as_ptr(), i)
            };
            let gb = if affine {
                f16_lanes(w.biases.as_ptr(), i)
            } else {
                _mm256_setzero_ps()
            };
            for (a, x) in acc.iter_mut().zip(rows.iter()) {
                let q = x.q.as_ptr().add(64 * i);
                let xlo = _mm256_loadu_si256(q.cast());
                let xhi = _mm256_loadu_si256(q.add(32).cast());
                // Codes are at most 24 and |x| at most 127: the i16 sums cannot saturate.
                let pairs =
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
                let mut dot = _mm256_madd_epi16(pairs, ones);
                if !affine {
                    let init = _mm256_loadu_si256(x.init.as_ptr().add(8 * i).cast());
                    dot = _mm256_add_epi32(dot, init);
                }
                let scale = _mm256_mul_ps(gs, _mm256_loadu_ps(x.scale.as_ptr().add(8 * i)));
                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, *a);
                if affine {
                    *a = _mm256_fmadd_ps(gb, _mm256_loadu_ps(x.sum.as_ptr().add(8 * i)), *a);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = hsum(a);
        }
    }
}

/// # Safety
/// The CPU must have AVX2 and F16C; lengths as `decode_fp8` checks.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn decode_fp8(codes: &[u8], gs: &[f32], group_len: usize, out: &mut [f32]) {
    // SAFETY: step `i` reads 8 codes at 8 i and writes 8 floats there; `group_len` is a
    // multiple of 16, so one group scale covers the step.
    unsafe {
        let magnitude = _mm_set1_epi16(0x7F);
        let sign = _mm_set1_epi16(0x80);
        for i in 0..codes.len() / 8 {
            let c = _mm_cvtepu8_epi16(_mm_loadl_epi64(codes.as_ptr().add(8 * i).cast()));
            let bits = _mm_or_si128(
                _mm_slli_epi16(_mm_and_si128(c, magnitude), 7),
                _mm_slli_epi16(_mm_and_si128(c, sign), 8),
            );
            let scale = _mm256_set1_ps(gs.get_unchecked(8 * i / group_len) * 256.0);
            let v = _mm256_mul_ps(_mm256_cvtph_ps(bits), scale);
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), v);
        }
    }
}
