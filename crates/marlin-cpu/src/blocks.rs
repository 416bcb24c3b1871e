//! Activations quantized for the panel kernels (`crate::panel`): int8 blocks of 32, block-major.
//!
//! The values are those of [`crate::activations::Q8Rows`] (the same block quantizer, the same
//! residual rows for int8x2), laid out so that a kernel holding a tile of rows reads each row's
//! values and per-block data at fixed offsets from one pointer per block, and made in one pass
//! per block: a decode step quantizes ~100 activation rows of 576-1536 values per forward pass
//! of a small model, and the general path (row layout, lane scales, group sums, then a
//! reordering copy) took 10% of a batch-16 step.

use marlin_quant::BLOCK;
use rayon::prelude::*;

use crate::activations::{quantize_block, residual_step};

/// Values per rayon task: below this, splitting costs more than it saves (a decode step's
/// batch of 16 rows of 576 values is two tasks).
const TASK_VALUES: usize = 4 * 1024;

/// `m` rows (2 m when split) of int8 activations in blocks of 32, block-major.
pub(crate) struct Q8Blocks {
    /// Kernel rows: the rows of x, or twice as many when split (`[grid_0, residual_0, ...]`).
    pub m: usize,
    /// Split: rows come in pairs whose product is one row of the output (the residual row's
    /// scale is the grid row's / 2^RESIDUAL_SHIFT).
    pub pairs: bool,
    pub k_pad: usize,
    /// (blocks, m, 32) values, zero past K.
    pub q: Vec<i8>,
    /// (blocks, m) block scale times `lane_mul`.
    pub scale: Vec<f32>,
    /// (blocks, m) `zero * sum` of the block's values: where a symmetric format's integer
    /// accumulator starts (0 for affine formats).
    pub init: Vec<i32>,
    /// (blocks, m) `scale * sum`, for affine formats' bias terms.
    pub sum: Vec<f32>,
    /// Pairs: (blocks, m / 2) the two rows' `sum`s added (their bias term is one); else empty.
    pub pair_sum: Vec<f32>,
}

/// How [`Q8Blocks::quantize`] quantizes and what it records.
#[derive(Clone, Copy)]
pub(crate) struct BlockScheme {
    /// Int8x2: each row becomes a grid row and a residual row.
    pub split: bool,
    /// Symmetric formats' zero point (see `Q8Rows::with_zero`).
    pub zero: Option<i32>,
    /// Multiplies the scales and sums (FP4 passes 1/2, its grid step).
    pub lane_mul: f32,
}

impl Q8Blocks {
    /// `mq` rows of `k_pad` values, all zero.
    fn zeroed(mq: usize, k_pad: usize, pairs: bool) -> Self {
        let blocks = k_pad / BLOCK;
        Q8Blocks {
            m: mq,
            pairs,
            k_pad,
            q: vec![0; mq * k_pad],
            scale: vec![0.0; mq * blocks],
            init: vec![0; mq * blocks],
            sum: vec![0.0; mq * blocks],
            pair_sum: vec![0.0; if pairs { mq / 2 * blocks } else { 0 }],
        }
    }

    // x (m, k) -> Q8Blocks (m or 2m, k_pad)
    pub fn quantize(x: &[f32], m: usize, k: usize, k_pad: usize, scheme: BlockScheme) -> Self {
        let mq = if scheme.split { 2 * m } else { m };
        let mut out = Q8Blocks::zeroed(mq, k_pad, scheme.split);
        let per_task = (TASK_VALUES / (m * BLOCK).max(1)).max(1);
        out.q
            .par_chunks_mut(mq * BLOCK)
            .zip(out.scale.par_chunks_mut(mq))
            .zip(out.init.par_chunks_mut(mq))
            .zip(out.sum.par_chunks_mut(mq))
            .enumerate()
            .with_min_len(per_task)
            .for_each(|(b, (((q, scale), init), sum))| {
                let out = BlockOut {
                    q,
                    scale,
                    init,
                    sum,
                };
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features the function is compiled for.
                    return unsafe { quantize_column_avx512(x, k, b, scheme, out) };
                }
                quantize_column(x, k, b, scheme, out)
            });
        out.sum_pairs();
        out
    }

    /// Fills `pair_sum` from `sum` (split rows only; nothing to do otherwise).
    fn sum_pairs(&mut self) {
        for (pair, sum) in self.pair_sum.iter_mut().zip(self.sum.chunks_exact(2)) {
            *pair = sum[0] + sum[1];
        }
    }
}

/// Block `b` of every kernel row.
struct BlockOut<'a> {
    /// (m, 32)
    q: &'a mut [i8],
    scale: &'a mut [f32],
    init: &'a mut [i32],
    sum: &'a mut [f32],
}

impl BlockOut<'_> {
    /// Kernel row `row`'s block, quantized at step `d` with codes summing to `s`: its scale,
    /// its zero-point start and its bias sum, as the scheme has them.
    #[inline(always)]
    fn record(&mut self, row: usize, d: f32, s: i32, scheme: BlockScheme) {
        let d = d * scheme.lane_mul;
        self.scale[row] = d;
        self.init[row] = scheme.zero.unwrap_or(0) * s;
        self.sum[row] = d * s as f32;
    }
}

/// Block `b` of every row of x (and its residual when split), as `Q8Rows::quantize_split`
/// makes it: each row's block quantized (the residual row at the fixed finer step), and with a
/// residual to follow, `v - d * q` left in the block (a product, then a difference: no fused
/// multiply-add, so the AVX-512 twin rounds the same).
fn quantize_column(x: &[f32], k: usize, b: usize, scheme: BlockScheme, mut out: BlockOut<'_>) {
    let per_row = if scheme.split { 2 } else { 1 };
    let start = b * BLOCK;
    let mut block = [0f32; BLOCK];
    for (r, xr) in x.chunks_exact(k).enumerate() {
        if start + BLOCK <= k {
            // A whole block: a fixed-size copy the compiler inlines (not a memmove call).
            block.copy_from_slice(&xr[start..start + BLOCK]);
        } else {
            // The last block: zero past K (a whole block of padding when K ends before it).
            block.fill(0.0);
            if start < k {
                block[..k - start].copy_from_slice(&xr[start..k]);
            }
        }
        let mut fixed = None;
        for part in 0..per_row {
            let row = r * per_row + part;
            let q = &mut out.q[row * BLOCK..(row + 1) * BLOCK];
            let d = quantize_block(&block, q, fixed);
            if part + 1 < per_row {
                for (v, &c) in block.iter_mut().zip(q.iter()) {
                    *v -= d * c as f32;
                }
                fixed = Some(residual_step(d));
            }
            let s = q.iter().map(|&v| v as i32).sum();
            out.record(row, d, s, scheme);
        }
    }
}

/// [`quantize_column`] in AVX-512, with the same results, a row's block held in two registers
/// throughout: loaded from x (masked past K), put on its grid, its residual made and put on the
/// finer grid, the codes' sums taken from the integer lanes. The general form (a copy of the
/// block, the block quantizer, a sum of the stored bytes) cost ~13 µs a product at batch 16,
/// ~9% of a decode step.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn quantize_column_avx512(
    x: &[f32],
    k: usize,
    b: usize,
    scheme: BlockScheme,
    mut out: BlockOut<'_>,
) {
    use std::arch::x86_64::*;
    let per_row = if scheme.split { 2 } else { 1 };
    let start = b * BLOCK;
    // The block's values inside K, in each half.
    let inside = k.saturating_sub(start).min(BLOCK);
    let mask = |n: usize| ((1u32 << n.min(16)) - 1) as u16;
    let (m0, m1) = (mask(inside), mask(inside.saturating_sub(16)));
    for (r, xr) in x.chunks_exact(k).enumerate() {
        // SAFETY: the masked loads read only lanes below K of row r (start + lane < k); the
        // stores write 16 bytes at 32 row and 32 row + 16 of `out.q`, which holds (m, 32).
        unsafe {
            let p = xr.as_ptr().wrapping_add(start);
            let mut v = [
                _mm512_maskz_loadu_ps(m0, p),
                _mm512_maskz_loadu_ps(m1, p.wrapping_add(16)),
            ];
            let mut fixed = None;
            for part in 0..per_row {
                let row = r * per_row + part;
                let d = fixed.unwrap_or_else(|| {
                    let abs = _mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1]));
                    _mm512_reduce_max_ps(abs) / 127.0
                });
                let inv = _mm512_set1_ps(if d == 0.0 { 0.0 } else { 1.0 / d });
                // Rounded to nearest even, then saturated to [-128, 127] as the byte store does.
                let c = v.map(|h| {
                    let i = _mm512_cvtps_epi32(_mm512_mul_ps(h, inv));
                    _mm512_max_epi32(
                        _mm512_min_epi32(i, _mm512_set1_epi32(127)),
                        _mm512_set1_epi32(-128),
                    )
                });
                let q = out.q.as_mut_ptr().add(row * BLOCK);
                _mm_storeu_si128(q.cast(), _mm512_cvtepi32_epi8(c[0]));
                _mm_storeu_si128(q.add(16).cast(), _mm512_cvtepi32_epi8(c[1]));
                let s = _mm512_reduce_add_epi32(_mm512_add_epi32(c[0], c[1]));
                if part + 1 < per_row {
                    // What the grid missed (a product, then a difference, as the scalar twin).
                    let dv = _mm512_set1_ps(d);
                    for (h, c) in v.iter_mut().zip(&c) {
                        *h = _mm512_sub_ps(*h, _mm512_mul_ps(dv, _mm512_cvtepi32_ps(*c)));
                    }
                    fixed = Some(residual_step(d));
                }
                out.record(row, d, s, scheme);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::Q8Rows;

    /// Rows with zeros, ties after scaling, a padded tail and a random mix.
    fn rows(m: usize, k: usize) -> Vec<f32> {
        let mut state = 0x2545_F491u32;
        (0..m * k)
            .map(|i| match i % 97 {
                0 => 0.0,
                1 => 63.5,
                _ => {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state as f32 / u32::MAX as f32 - 0.5) * 6.0
                }
            })
            .collect()
    }

    /// The general row quantizer's values and scales, reordered block-major: what
    /// `Q8Blocks::quantize` must reproduce.
    fn expected(x: &[f32], m: usize, k: usize, k_pad: usize, scheme: BlockScheme) -> Q8Blocks {
        let rows = if scheme.split {
            Q8Rows::quantize_split(x, m, k, k_pad, 32)
        } else {
            Q8Rows::quantize(x, m, k, k_pad, 32)
        };
        let (mq, blocks) = (rows.m, k_pad / BLOCK);
        let mut out = Q8Blocks::zeroed(mq, k_pad, scheme.split);
        for r in 0..mq {
            let (q, lane_scale) = rows.row(r);
            for b in 0..blocks {
                let (at, v) = (b * mq + r, &q[b * BLOCK..(b + 1) * BLOCK]);
                let s: i32 = v.iter().map(|&v| v as i32).sum();
                let d = lane_scale[8 * b] * scheme.lane_mul;
                out.q[at * BLOCK..(at + 1) * BLOCK].copy_from_slice(v);
                (out.scale[at], out.sum[at]) = (d, d * s as f32);
                out.init[at] = scheme.zero.unwrap_or(0) * s;
            }
        }
        out.sum_pairs();
        out
    }

    #[test]
    fn block_major_quantizer_equals_the_row_quantizer() {
        // (m, k, k_pad): k_pad past the last block of K when groups are longer than blocks.
        let shapes = [
            (1, 32, 32),
            (3, 67, 96),
            (5, 40, 128),
            (16, 576, 576),
            (33, 100, 128),
        ];
        for (m, k, k_pad) in shapes.into_iter().chain([(40, 1600, 1664)]) {
            let x = rows(m, k);
            for (split, zero, lane_mul) in [(false, None, 1.0), (true, Some(8), 0.5)] {
                let scheme = BlockScheme {
                    split,
                    zero,
                    lane_mul,
                };
                let want = expected(&x, m, k, k_pad, scheme);
                let got = Q8Blocks::quantize(&x, m, k, k_pad, scheme);
                let what = format!("m{m} k{k} split {split}");
                assert_eq!((got.m, got.k_pad), (want.m, want.k_pad), "{what}");
                assert_eq!(got.q, want.q, "{what}: values");
                assert_eq!(got.scale, want.scale, "{what}: scales");
                assert_eq!(got.init, want.init, "{what}: init");
                assert_eq!(got.sum, want.sum, "{what}: sums");
                assert_eq!(got.pair_sum, want.pair_sum, "{what}: pair sums");
                // The scalar twin, whatever this CPU has.
                let blocks = k_pad / BLOCK;
                let mq = want.m;
                let (mut q, mut scale) = (vec![0i8; mq * BLOCK], vec![0f32; mq]);
                let (mut init, mut sum) = (vec![0i32; mq], vec![0f32; mq]);
                for b in 0..blocks {
                    let out = BlockOut {
                        q: &mut q,
                        scale: &mut scale,
                        init: &mut init,
                        sum: &mut sum,
                    };
                    quantize_column(&x, k, b, scheme, out);
                    assert_eq!(
                        q,
                        want.q[b * mq * BLOCK..(b + 1) * mq * BLOCK],
                        "{what} b{b}"
                    );
                    assert_eq!(scale, want.scale[b * mq..(b + 1) * mq], "{what} b{b}");
                    assert_eq!(sum, want.sum[b * mq..(b + 1) * mq], "{what} b{b}");
                }
            }
        }
    }
}
