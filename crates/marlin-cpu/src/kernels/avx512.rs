//! AVX-512 (F, BW, VL) + VNNI kernels: 64 weights per step, `vpdpbusd` for the `u8 x i8` dots.

use std::arch::x86_64::*;

use super::{GridRow, NibbleRow};
use crate::activations::{PlaneRow, Q8Planes, Q8Rows};

/// How far ahead of the chunk in use the weight stream is prefetched (measured best of 512,
/// 1024, 2048 and 4096 bytes with `bench kernels`: 2048, about 10% over none at M = 1).
const PREFETCH: usize = 2048;

/// Activation rows handled together, so each weight load serves several of them.
const MR: usize = 8;

/// # Safety
/// The CPU must have AVX-512 F/BW; `codes.len() == 2 * packed.len()`, a multiple of 32.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn decode_nibbles(packed: &[u8], lut: &[u8; 16], codes: &mut [u8]) {
    // SAFETY: each step reads 64 packed bytes (four blocks) and writes 128 codes, inside the
    // slices; `lut` has 16 bytes.
    unsafe {
        let mask = _mm512_set1_epi8(0x0F);
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(lut.as_ptr().cast()));
        // Block b is [low nibbles of its 16 bytes, high nibbles] = 128-bit lane b of lo and hi.
        let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
        let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
        let steps = packed.len() / 64;
        for i in 0..steps {
            let v = _mm512_loadu_si512(packed.as_ptr().add(64 * i).cast());
            let lo = _mm512_shuffle_epi8(table, _mm512_and_si512(v, mask));
            let hi = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(v, 4), mask));
            let out = codes.as_mut_ptr().add(128 * i);
            _mm512_storeu_si512(out.cast(), _mm512_permutex2var_epi64(lo, first, hi));
            _mm512_storeu_si512(
                out.add(64).cast(),
                _mm512_permutex2var_epi64(lo, second, hi),
            );
        }
        let done = steps * 64;
        super::decode_nibbles_scalar(&packed[done..], lut, &mut codes[2 * done..]);
    }
}

/// # Safety
/// The CPU must have AVX-512 F/BW/VL and VNNI; slice lengths as `grid_dot` checks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(super) unsafe fn grid_dot(w: &GridRow<'_>, x: &Q8Rows, out: &mut [f32]) {
    for rows in super::row_tiles(x.m, MR) {
        let (r0, out) = (rows.start, &mut out[rows.clone()]);
        // SAFETY: forwarded from the caller.
        unsafe { by_rows!(grid_dot_rows, rows.len(), (w, x, r0, out), 1 2 3 4 5 6 7 8) };
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn grid_dot_rows<const R: usize>(w: &GridRow<'_>, x: &Q8Rows, r0: usize, out: &mut [f32]) {
    let rows: [(&[i8], &[f32]); R] = std::array::from_fn(|i| x.row(r0 + i));
    let inits: [&[i32]; R] = std::array::from_fn(|i| x.init_row(r0 + i));
    let zero_point = !x.lane_init.is_empty();
    let mut acc = [_mm512_setzero_ps(); R];
    let steps = x.k_pad / 64;
    // SAFETY: step `i` reads 64 codes and activations at 64 i, 16 lane scales at 16 i, and at
    // most 4 grid scales at i * 64 / group_len (the scales carry 4 floats of padding).
    unsafe {
        // Lane l (weights 4l..4l+3 of the step) belongs to group (4l) / group_len.
        let quarter = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        let half = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        for i in 0..steps {
            let mut c = _mm512_loadu_si512(w.codes.as_ptr().add(64 * i).cast());
            if w.signed {
                c = _mm512_xor_si512(c, _mm512_set1_epi8(-128));
            }
            let gs = match w.group_len {
                16 => _mm512_permutexvar_ps(quarter, load4(w.gs.as_ptr().add(4 * i))),
                32 => _mm512_permutexvar_ps(half, load4(w.gs.as_ptr().add(2 * i))),
                g => _mm512_set1_ps(*w.gs.get_unchecked(64 * i / g)),
            };
            for ((a, (q, ls)), init) in acc.iter_mut().zip(rows.iter()).zip(inits) {
                let xq = _mm512_loadu_si512(q.as_ptr().add(64 * i).cast());
                let init = if zero_point {
                    _mm512_loadu_si512(init.as_ptr().add(16 * i).cast())
                } else {
                    _mm512_setzero_si512()
                };
                let dot = _mm512_dpbusd_epi32(init, c, xq);
                let scale = _mm512_mul_ps(gs, _mm512_loadu_ps(ls.as_ptr().add(16 * i)));
                *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *a);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(a);
        }
    }
    // A last 32 weights when k_pad is not a multiple of 64.
    for (i, o) in out.iter_mut().enumerate() {
        *o += super::grid_lanes(w, x, r0 + i, steps * 16..x.k_pad / 4);
    }
}

#[inline(always)]
unsafe fn load4(p: *const f32) -> __m512 {
    // SAFETY: the caller guarantees 4 readable floats at `p`.
    unsafe { _mm512_castps128_ps512(_mm_loadu_ps(p)) }
}

/// The 4 low f16 of `v` as the low lanes of an f32 vector.
#[inline]
#[target_feature(enable = "avx512f,f16c")]
fn f16_low(v: __m128i) -> __m512 {
    _mm512_castps128_ps512(_mm_cvtph_ps(v))
}

#[inline(always)]
unsafe fn read_i32(p: *const u8) -> i32 {
    // SAFETY: the caller guarantees 4 readable bytes at `p`.
    unsafe { p.cast::<i32>().read_unaligned() }
}

/// # Safety
/// The CPU must have AVX-512 F; `a.len() == b.len()`.
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn f32_dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() / 32 * 32;
    // SAFETY: every load reads 16 floats below `n <= a.len() == b.len()`.
    unsafe {
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for i in (0..n).step_by(32) {
            let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa), _mm512_loadu_ps(pb), s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(16)), _mm512_loadu_ps(pb.add(16)), s1);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) + super::f32_dot_lanes::<8>(&a[n..], &b[n..])
    }
}

/// # Safety
/// The CPU must have AVX-512 F/BW/VL and VNNI; `x.width == 128`; lengths as `nibble_dot`
/// checks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn nibble_dot(w: &NibbleRow<'_>, x: &Q8Planes, out: &mut [f32]) {
    for rows in super::row_tiles(x.rows.m, MR) {
        let (r0, out) = (rows.start, &mut out[rows.clone()]);
        // SAFETY: forwarded from the caller.
        unsafe { by_rows!(nibble_dot_rows, rows.len(), (w, x, r0, out), 1 2 3 4 5 6 7 8) };
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn nibble_dot_rows<const R: usize>(
    w: &NibbleRow<'_>,
    x: &Q8Planes,
    r0: usize,
    out: &mut [f32],
) {
    let rows: [PlaneRow<'_>; R] = std::array::from_fn(|i| x.row(r0 + i));
    let mut acc = [_mm512_setzero_ps(); R];
    // SAFETY: chunk `i` reads 64 packed bytes at 64 i, 128 activations at 128 i, 16 lane
    // scales, sums and initial values at 16 i (no initial values for affine formats), and the
    // 4, 2 or 1 scales (and biases) of its groups: inside the row, because chunks are whole
    // and a row has k_pad / group_len groups.
    unsafe {
        let mask = _mm512_set1_epi8(0x0F);
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(w.lut.as_ptr().cast()));
        // Lane l covers block l / 4 of the chunk: group l / 4 (g32) or l / 8 (g64).
        let quarter = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        let half = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        // Scales are read from the stored bytes: 4, 2 or 1 per chunk for groups of 32, 64 or
        // 128 and more.
        let f16_lanes = |p: *const u8, i: usize| match w.group_len {
            32 => _mm512_permutexvar_ps(quarter, f16_low(_mm_loadl_epi64(p.add(8 * i).cast()))),
            64 => _mm512_permutexvar_ps(half, f16_low(_mm_cvtsi32_si128(read_i32(p.add(4 * i))))),
            g => {
                let one = p.add(2 * (128 * i / g)).cast::<u16>().read_unaligned();
                _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(one as i32)))
            }
        };
        // E8M0 (group 32): the exponent byte shifted into an f32's exponent field is 2^(e-127).
        let e8m0_lanes = |i: usize| {
            let e = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(read_i32(w.scales.as_ptr().add(4 * i))));
            _mm512_permutexvar_ps(
                quarter,
                _mm512_castps128_ps512(_mm_castsi128_ps(_mm_slli_epi32(e, 23))),
            )
        };
        let affine = w.affine();
        for i in 0..x.chunks() {
            // Rows are contiguous, so running past this row prefetches the next; prefetches
            // never fault.
            _mm_prefetch::<_MM_HINT_T0>(w.packed.as_ptr().wrapping_add(64 * i + PREFETCH).cast());
            let v = _mm512_loadu_si512(w.packed.as_ptr().add(64 * i).cast());
            let mut lo = _mm512_and_si512(v, mask);
            let mut hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
            if !w.identity {
                lo = _mm512_shuffle_epi8(table, lo);
                hi = _mm512_shuffle_epi8(table, hi);
            }
            let gs = if w.e8m0 {
                e8m0_lanes(i)
            } else {
                f16_lanes(w.scales.as_ptr(), i)
            };
            let gb = if affine {
                f16_lanes(w.biases.as_ptr(), i)
            } else {
                _mm512_setzero_ps()
            };
            for (a, x) in acc.iter_mut().zip(rows.iter()) {
                let q = x.q.as_ptr().add(128 * i);
                let xlo = _mm512_loadu_si512(q.cast());
                let xhi = _mm512_loadu_si512(q.add(64).cast());
                let init = if affine {
                    _mm512_setzero_si512()
                } else {
                    _mm512_loadu_si512(x.init.as_ptr().add(16 * i).cast())
                };
                let dot = _mm512_dpbusd_epi32(init, lo, xlo);
                let dot = _mm512_dpbusd_epi32(dot, hi, xhi);
                let scale = _mm512_mul_ps(gs, _mm512_loadu_ps(x.scale.as_ptr().add(16 * i)));
                *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *a);
                if affine {
                    *a = _mm512_fmadd_ps(gb, _mm512_loadu_ps(x.sum.as_ptr().add(16 * i)), *a);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(a);
        }
    }
}

/// # Safety
/// The CPU must have AVX-512 F/BW; lengths as `decode_fp8` checks.
#[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
pub(super) unsafe fn decode_fp8(codes: &[u8], gs: &[f32], group_len: usize, out: &mut [f32]) {
    // SAFETY: step `i` reads 16 codes at 16 i and writes 16 floats there; `group_len` is a
    // multiple of 16, so one group scale covers the step.
    unsafe {
        let magnitude = _mm256_set1_epi16(0x7F);
        let sign = _mm256_set1_epi16(0x80);
        for i in 0..codes.len() / 16 {
            let c = _mm256_cvtepu8_epi16(_mm_loadu_si128(codes.as_ptr().add(16 * i).cast()));
            let bits = _mm256_or_si256(
                _mm256_slli_epi16(_mm256_and_si256(c, magnitude), 7),
                _mm256_slli_epi16(_mm256_and_si256(c, sign), 8),
            );
            let scale = _mm512_set1_ps(gs.get_unchecked(16 * i / group_len) * 256.0);
            let v = _mm512_mul_ps(_mm512_cvtph_ps(bits), scale);
            _mm512_storeu_ps(out.as_mut_ptr().add(16 * i), v);
        }
    }
}
