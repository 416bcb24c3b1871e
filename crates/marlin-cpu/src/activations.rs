//! Activations quantized to 8 bits inside the kernel, as llama.cpp's Q8_0: blocks of 32 with an
//! f32 scale `amax / 127`. The error this adds is measured in `docs/formats.md`; the f32 path
//! ([`crate::Activations::F32`]) avoids it.

use marlin_quant::BLOCK;
use rayon::prelude::*;

/// log2 of how much finer the residual row's grid is than its grid row's (see
/// [`Q8Rows::quantize_split`]).
pub(crate) const RESIDUAL_SHIFT: u32 = 8;

/// `m` rows of activations on the int8 grid, laid out for the kernels.
pub(crate) struct Q8Rows {
    pub m: usize,
    /// Row length padded to the weights' padded K.
    pub k_pad: usize,
    /// (m, k_pad) int8 values; zero past K.
    pub q: Vec<i8>,
    /// (m, k_pad / 4): the block scale of every 4 values, one per 32-bit SIMD lane, so the
    /// kernels load lane scales instead of shuffling block scales.
    pub lane_scale: Vec<f32>,
    /// (m, groups): sum of the dequantized activations of each weight group, for bias terms.
    pub group_sum: Vec<f32>,
    /// (m, k_pad / 4): `zero * sum` of every 4 values for symmetric formats (see
    /// [`Q8Rows::with_zero`]); empty otherwise.
    pub lane_init: Vec<i32>,
}

impl Q8Rows {
    // x (m, k) -> Q8Rows (m, k_pad)
    pub fn quantize(x: &[f32], m: usize, k: usize, k_pad: usize, group_len: usize) -> Self {
        Self::quantize_rows(x, m, k, k_pad, group_len, false)
    }

    /// Each row of x as two int8 rows (see [`crate::Activations::Int8x2`]): the row on the
    /// int8 grid of its blocks, then what that rounding lost, on a grid 2^[`RESIDUAL_SHIFT`]
    /// times finer (the rounding left at most half a step, so it fits in int8; the rare
    /// +128 saturates to 127). Their sum is x to about 15 bits; a product with both, summed
    /// in pairs of rows, is the product with x. The fixed ratio lets a kernel add a pair's two
    /// integer dot products (`(grid << 8) + residual`) before any float work.
    // x (m, k) -> Q8Rows (2m, k_pad), rows [grid_0, residual_0, grid_1, ...]
    pub fn quantize_split(x: &[f32], m: usize, k: usize, k_pad: usize, group_len: usize) -> Self {
        Self::quantize_rows(x, m, k, k_pad, group_len, true)
    }

    fn quantize_rows(
        x: &[f32],
        m: usize,
        k: usize,
        k_pad: usize,
        group_len: usize,
        split: bool,
    ) -> Self {
        let per_row = if split { 2 } else { 1 };
        let rows = m * per_row;
        let groups = k_pad / group_len;
        let mut out = Q8Rows {
            m: rows,
            k_pad,
            q: vec![0; rows * k_pad],
            lane_scale: vec![0.0; rows * k_pad / 4],
            group_sum: vec![0.0; rows * groups],
            lane_init: Vec::new(),
        };
        // Rows are independent; a prefill's hundreds of rows are worth spreading over threads.
        let outputs = out
            .q
            .par_chunks_mut(per_row * k_pad)
            .zip(out.lane_scale.par_chunks_mut(per_row * k_pad / 4))
            .zip(out.group_sum.par_chunks_mut(per_row * groups))
            .zip(x.par_chunks(k));
        outputs
            .with_min_len(8)
            .for_each(|(((q, lanes), sums), xr)| {
                let row = RowOut { q, lanes, sums };
                let shape = RowShape {
                    k,
                    k_pad,
                    group_len,
                    split,
                };
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features the function is compiled for.
                    return unsafe { quantize_row_avx512(xr, shape, row) };
                } else if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: as above.
                    return unsafe { quantize_row_avx2(xr, shape, row) };
                }
                quantize_row(xr, shape, row, quantize_block)
            });
        out
    }

    /// For a symmetric format whose grid value is `gs * (c + zero)`: records `zero * sum` of
    /// every 4 values, where the kernels start their integer accumulators.
    pub fn with_zero(mut self, zero: Option<i32>) -> Self {
        self.lane_init = match zero {
            Some(z) => self
                .q
                .chunks_exact(4)
                .map(|v| z * v.iter().map(|&q| q as i32).sum::<i32>())
                .collect(),
            None => Vec::new(),
        };
        self
    }

    /// Reorders every full chunk of `width` values (a multiple of 64) into nibble-plane order:
    /// the first halves (values 0..16) of its blocks, then their second halves. That is the
    /// order in which a SIMD register of packed 4-bit blocks unpacks (low nibbles, then high
    /// nibbles), so the 4-bit kernels multiply without shuffling weights. Also returns, per
    /// 32-bit lane of the first half, the activations' block scale and `scale * sum` over the
    /// lane's 4 values and the matching 4 of the second half (for bias terms).
    ///
    /// With `zero = Some(z)` (symmetric formats, whose grid value is `gs * (c + z)`), it also
    /// returns `z * sum` per lane as i32: the kernels start each lane's integer accumulator there
    /// instead of adding a bias term.
    ///
    /// `lane_mul` multiplies the lane scales and sums (FP4 passes 1/2, its grid step).
    pub fn into_planes(mut self, width: usize, zero: Option<i32>, lane_mul: f32) -> Q8Planes {
        let chunks = self.k_pad / width;
        let lanes = width / 8;
        let mut lane_scale = vec![0f32; self.m * chunks * lanes];
        let mut lane_sum = vec![0f32; self.m * chunks * lanes];
        let mut lane_init = vec![
            0i32;
            if zero.is_some() {
                self.m * chunks * lanes
            } else {
                0
            }
        ];
        let mut tmp = vec![0i8; width];
        for r in 0..self.m {
            let row = &mut self.q[r * self.k_pad..(r + 1) * self.k_pad];
            let ls = &self.lane_scale[r * self.k_pad / 4..(r + 1) * self.k_pad / 4];
            for c in 0..chunks {
                let chunk = &mut row[c * width..(c + 1) * width];
                for (b, block) in chunk.chunks_exact(BLOCK).enumerate() {
                    tmp[b * 16..b * 16 + 16].copy_from_slice(&block[..16]);
                    tmp[width / 2 + b * 16..width / 2 + b * 16 + 16].copy_from_slice(&block[16..]);
                }
                chunk.copy_from_slice(&tmp);
                for l in 0..lanes {
                    // Lane l holds values 4(l % 4).. of block l / 4 of the chunk.
                    let d = ls[(c * width + (l / 4) * BLOCK) / 4];
                    let lo = &chunk[4 * l..4 * l + 4];
                    let hi = &chunk[width / 2 + 4 * l..width / 2 + 4 * l + 4];
                    let sum: i32 = lo.iter().chain(hi).map(|&v| v as i32).sum();
                    lane_scale[(r * chunks + c) * lanes + l] = d * lane_mul;
                    lane_sum[(r * chunks + c) * lanes + l] = d * lane_mul * sum as f32;
                    if let Some(z) = zero {
                        lane_init[(r * chunks + c) * lanes + l] = z * sum;
                    }
                }
            }
        }
        Q8Planes {
            rows: self,
            width,
            lane_scale,
            lane_sum,
            lane_init,
            zero: zero.unwrap_or(0),
            lane_mul,
        }
    }

    pub fn row(&self, r: usize) -> (&[i8], &[f32]) {
        let (k, l) = (self.k_pad, self.k_pad / 4);
        (
            &self.q[r * k..(r + 1) * k],
            &self.lane_scale[r * l..(r + 1) * l],
        )
    }

    /// Row `r` of `lane_init` (empty when there is none).
    pub fn init_row(&self, r: usize) -> &[i32] {
        let l = self.k_pad / 4;
        self.lane_init.get(r * l..(r + 1) * l).unwrap_or(&[])
    }

    pub fn group_sums(&self, r: usize) -> &[f32] {
        let g = self.group_sum.len() / self.m;
        &self.group_sum[r * g..(r + 1) * g]
    }
}

/// Int8 activations with full chunks in nibble-plane order (see [`Q8Rows::into_planes`]); a
/// tail shorter than a chunk stays in natural order.
pub(crate) struct Q8Planes {
    pub rows: Q8Rows,
    /// Values per chunk (64 for AVX2).
    pub width: usize,
    /// (m, chunks, width / 8) block scale of each lane of a chunk's first half.
    pub lane_scale: Vec<f32>,
    /// (m, chunks, width / 8) `scale * sum` of a lane and its partner in the second half.
    pub lane_sum: Vec<f32>,
    /// (m, chunks, width / 8) `zero * sum` as integers; empty for affine formats.
    pub lane_init: Vec<i32>,
    /// The zero point behind `lane_init` (0 for affine formats).
    pub zero: i32,
    /// The factor folded into `lane_scale` and `lane_sum` (not into `rows`).
    pub lane_mul: f32,
}

impl Q8Planes {
    pub fn chunks(&self) -> usize {
        self.rows.k_pad / self.width
    }

    /// Row `r`: int8 values, lane scales, lane sums and lane initial values (empty for
    /// affine formats).
    pub fn row(&self, r: usize) -> PlaneRow<'_> {
        let n = self.chunks() * self.width / 8;
        let (q, _) = self.rows.row(r);
        PlaneRow {
            q,
            scale: &self.lane_scale[r * n..(r + 1) * n],
            sum: &self.lane_sum[r * n..(r + 1) * n],
            init: self.lane_init.get(r * n..(r + 1) * n).unwrap_or(&[]),
        }
    }
}

/// One activation row of [`Q8Planes`].
#[derive(Clone, Copy)]
pub(crate) struct PlaneRow<'a> {
    pub q: &'a [i8],
    pub scale: &'a [f32],
    pub sum: &'a [f32],
    pub init: &'a [i32],
}

/// Where one row of x lands in [`Q8Rows`] (two rows when split).
struct RowOut<'a> {
    q: &'a mut [i8],
    lanes: &'a mut [f32],
    sums: &'a mut [f32],
}

#[derive(Clone, Copy)]
struct RowShape {
    k: usize,
    k_pad: usize,
    group_len: usize,
    split: bool,
}

/// # Safety
/// The CPU must have AVX-512 F/BW/VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn quantize_row_avx512(xr: &[f32], shape: RowShape, out: RowOut<'_>) {
    // SAFETY: this function runs only where its features are present.
    quantize_row(xr, shape, out, |block, q, step| unsafe {
        quantize_block_avx512(block, q, step)
    })
}

/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(xr: &[f32], shape: RowShape, out: RowOut<'_>) {
    // SAFETY: this function runs only where its features are present.
    quantize_row(xr, shape, out, |block, q, step| unsafe {
        quantize_block_avx2(block, q, step)
    })
}

/// [`quantize_block`] in AVX2, with the same result (see [`quantize_block_avx512`]).
///
/// # Safety
/// The CPU must have AVX2; `q.len() >= 32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_block_avx2(block: &[f32; BLOCK], q: &mut [i8], step: Option<f32>) -> f32 {
    use std::arch::x86_64::*;
    assert!(q.len() >= BLOCK);
    // SAFETY: 32 floats read from the block, 32 bytes written to q (checked above).
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(block.as_ptr().add(8 * i)));
        let abs = |x| _mm256_andnot_ps(sign, x);
        let m = _mm256_max_ps(
            _mm256_max_ps(abs(v[0]), abs(v[1])),
            _mm256_max_ps(abs(v[2]), abs(v[3])),
        );
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
        let d = step.unwrap_or(amax / 127.0);
        let inv = _mm256_set1_ps(if d == 0.0 { 0.0 } else { 1.0 / d });
        for (i, v) in v.iter().enumerate() {
            let w = _mm256_cvtps_epi32(_mm256_mul_ps(*v, inv));
            let w16 = _mm_packs_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
            _mm_storel_epi64(q.as_mut_ptr().add(8 * i).cast(), _mm_packs_epi16(w16, w16));
        }
        d
    }
}

/// [`quantize_block`] in AVX-512, with the same result: the same maximum and scale, and
/// `cvtps` rounds to nearest even as `round_small` does.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL; `q.len() >= 32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
pub(crate) unsafe fn quantize_block_avx512(
    block: &[f32; BLOCK],
    q: &mut [i8],
    step: Option<f32>,
) -> f32 {
    use std::arch::x86_64::*;
    assert!(q.len() >= BLOCK);
    // SAFETY: 32 floats read from the block, 32 bytes written to q (checked above).
    unsafe {
        let a = _mm512_loadu_ps(block.as_ptr());
        let b = _mm512_loadu_ps(block.as_ptr().add(16));
        let d = step.unwrap_or_else(|| {
            _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b))) / 127.0
        });
        let inv = _mm512_set1_ps(if d == 0.0 { 0.0 } else { 1.0 / d });
        let qa = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(a, inv)));
        let qb = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(b, inv)));
        _mm_storeu_si128(q.as_mut_ptr().cast(), qa);
        _mm_storeu_si128(q.as_mut_ptr().add(16).cast(), qb);
        d
    }
}

// xr (k) -> one row of Q8Rows, or two when split
#[inline(always)]
fn quantize_row(
    xr: &[f32],
    shape: RowShape,
    out: RowOut<'_>,
    quantize_block: impl Fn(&[f32; BLOCK], &mut [i8], Option<f32>) -> f32,
) {
    let RowShape {
        k,
        k_pad,
        group_len,
        split,
    } = shape;
    let RowOut { q, lanes, sums } = out;
    let per_row = if split { 2 } else { 1 };
    let groups = k_pad / group_len;
    let mut block = [0f32; BLOCK];
    for b in 0..k_pad / BLOCK {
        let start = b * BLOCK;
        block.fill(0.0);
        if start < k {
            let end = (start + BLOCK).min(k);
            block[..end - start].copy_from_slice(&xr[start..end]);
        }
        let mut step = None;
        for part in 0..per_row {
            let q = &mut q[part * k_pad + start..][..BLOCK];
            let d = quantize_block(&block, q, step);
            if split {
                // What the grid missed becomes the next row's block, on the finer grid.
                for (v, &c) in block.iter_mut().zip(q.iter()) {
                    *v -= d * c as f32;
                }
                step = Some(residual_step(d));
            }
            // Groups are multiples of 16, so each half of the block lies in one group.
            for half in [0, BLOCK / 2] {
                let sum: i32 = q[half..half + BLOCK / 2].iter().map(|&v| v as i32).sum();
                sums[part * groups + (start + half) / group_len] += d * sum as f32;
            }
            lanes[(part * k_pad + start) / 4..][..BLOCK / 4].fill(d);
        }
    }
}

/// One block on the int8 grid: scale `amax / 127`, values rounded to the nearest; returns the
/// scale. Written so that the compiler vectorizes it: lane-wise maxima (a NaN compares false and
/// is skipped), rounding by addition, no branches.
#[inline(always)]
pub(crate) fn quantize_block(block: &[f32; BLOCK], q: &mut [i8], step: Option<f32>) -> f32 {
    let d = step.unwrap_or_else(|| {
        let mut lanes = [0f32; 16];
        for half in block.chunks_exact(16) {
            for (m, v) in lanes.iter_mut().zip(half) {
                let a = v.abs();
                *m = if a > *m { a } else { *m };
            }
        }
        lanes.iter().fold(0f32, |a, &v| if v > a { v } else { a }) / 127.0
    });
    let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
    for (q, v) in q.iter_mut().zip(block) {
        *q = round_small(v * inv) as i8;
    }
    d
}

/// The residual row's step for a block whose grid step is `d` (exact: a power of two).
#[inline]
pub(crate) fn residual_step(d: f32) -> f32 {
    d / (1u32 << RESIDUAL_SHIFT) as f32
}

/// Rounds `x` (|x| < 2^22) to the nearest integer, ties to even, without a libm call: adding
/// 1.5 * 2^23 leaves no fraction bits in the f32 sum, so the addition itself rounds.
#[inline]
fn round_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

#[cfg(test)]
mod tests {
    use super::{BLOCK, quantize_block, round_small};

    /// Blocks with ties (x.5 after scaling), zeros, tiny and huge values, and a random mix.
    fn blocks() -> Vec<[f32; BLOCK]> {
        let mut out = vec![[0f32; BLOCK]];
        out.push(std::array::from_fn(|i| {
            (i as f32 - 16.0) * 127.0 / 16.0 / 2.0
        }));
        out.push(std::array::from_fn(|i| {
            if i == 3 { -1e30 } else { 1e-30 * i as f32 }
        }));
        let mut state = 0x9E37_79B9u32;
        for _ in 0..200 {
            out.push(std::array::from_fn(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32 - 0.5) * 8.0
            }));
        }
        out
    }

    #[test]
    fn simd_block_quantizers_equal_the_scalar_one() {
        // Each block at its own step, and at a fixed step that puts some values past 127 (a
        // residual's grid: they saturate) and some exactly on ties.
        #[cfg(target_arch = "x86_64")]
        for block in blocks() {
            for step in [None, Some(1.0 / 32.0)] {
                let mut want = [0i8; BLOCK];
                let d = quantize_block(&block, &mut want, step);
                if std::arch::is_x86_feature_detected!("avx2") {
                    let mut got = [0i8; BLOCK];
                    // SAFETY: AVX2 is present.
                    let e = unsafe { super::quantize_block_avx2(&block, &mut got, step) };
                    assert_eq!((e, got), (d, want), "avx2 at {step:?} on {block:?}");
                }
                if std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    let mut got = [0i8; BLOCK];
                    // SAFETY: AVX-512 F/BW/VL are present.
                    let e = unsafe { super::quantize_block_avx512(&block, &mut got, step) };
                    assert_eq!((e, got), (d, want), "avx512 at {step:?} on {block:?}");
                }
            }
        }
    }

    #[test]
    fn the_residual_row_is_what_the_grid_missed_on_a_256x_finer_grid() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.173)
            .collect();
        let rows = super::Q8Rows::quantize_split(&x, 1, 64, 64, 32);
        let ((g, gs), (r, rs)) = (rows.row(0), rows.row(1));
        for b in 0..2 {
            let (d, e) = (gs[8 * b], rs[8 * b]);
            assert_eq!(e, d / 256.0, "block {b}");
            for i in 32 * b..32 * (b + 1) {
                let back = d * g[i] as f32 + e * r[i] as f32;
                assert!((back - x[i]).abs() <= e / 2.0 * 1.0001 + 1e-7, "value {i}");
            }
        }
    }

    #[test]
    fn round_small_rounds_to_nearest_even() {
        for (x, r) in [
            (0.4, 0.0),
            (0.5, 0.0),
            (1.5, 2.0),
            (-2.5, -2.0),
            (126.7, 127.0),
            (-127.2, -127.0),
        ] {
            assert_eq!(round_small(x), r, "{x}");
        }
    }
}
