//! AVX-512 (F, BW, VL) + VNNI kernels: 64 weights per step, `vpdpbusd` for the `u8 x i8` dots.

use std::arch::x86_64::*;

use super::{GridRow, NibbleF32Row, PanelOut};
use crate::activations::{Q8Rows, RESIDUAL_SHIFT};
use crate::blocks::Q8Blocks;
use crate::panel::{PANEL, PanelView, panel_block};

/// How far ahead of the block in use a panel's weight stream is prefetched, in bytes: 2048 for
/// 4-bit panels (8 blocks; measured best of 512 to 4096 with `bench kernels`, about 10% over
/// none at M = 1), 8192 for 8-bit ones (16 blocks). At a batch of 16 an 8-bit block of 512 bytes
/// lasts its 128 multiply-adds, ~64 cycles, so 2048 bytes ahead was less than the memory's
/// latency: the 49152 x 576 INT8 head at M = 16 took 1537-1899 µs against 1951-2295 (spin
/// probe, five pairs), and a batch-16 decode step of SmolLM2 14.37 ms against 15.07 on average
/// over eight alternating pairs (batch 1 unchanged, 3.19 against 3.20).
const fn prefetch_bytes(bits: u32) -> usize {
    if bits == 8 { 8192 } else { 2048 }
}

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

/// Activation rows per tile of the panel kernel: their 8 accumulators, the block's 8 registers
/// of codes and the temporaries stay in the 32 vector registers. At 16 rows LLVM interleaves
/// the rows' dot-product chains and spills to the stack.
const PANEL_MR: usize = 8;

/// Pairs of split activation rows handled together (16 kernel rows, 8 accumulators).
const PANEL_PAIRS: usize = 8;

/// Runs `$body` with `$i` bound to each of `0..$n` (a constant up to 8), unrolled: the
/// accumulator array it indexes must stay in registers, which LLVM only does when every index
/// is a constant (a rolled loop over 8 rows kept them on the stack and ran at ~15% of the
/// multiply-add peak).
macro_rules! unroll {
    ($i:ident < $n:expr => $body:block) => {
        unroll!(@ $i, $n, $body, 0 1 2 3 4 5 6 7)
    };
    (@ $i:ident, $n:expr, $body:block, $($k:literal)+) => {
        $(if $k < $n {
            let $i: usize = $k;
            $body
        })+
    };
}

/// # Safety
/// The CPU must have AVX-512 F/BW/VL and VNNI; lengths as `panel_dot` checks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn panel_dot(p: &PanelView<'_>, x: &Q8Blocks, out: PanelOut) {
    let affine = !p.biases.is_empty();
    if x.pairs {
        for pairs in super::row_tiles(x.m / 2, PANEL_PAIRS) {
            let (r0, out) = (pairs.start, out.rows_from(pairs.start));
            // SAFETY: forwarded from the caller.
            unsafe {
                if affine {
                    by_rows!(panel_pairs[true], pairs.len(), (p, x, r0, out), 1 2 3 4 5 6 7 8)
                } else {
                    by_rows!(panel_pairs[false], pairs.len(), (p, x, r0, out), 1 2 3 4 5 6 7 8)
                }
            }
        }
        return;
    }
    for rows in super::row_tiles(x.m, PANEL_MR) {
        let (r0, out) = (rows.start, out.rows_from(rows.start));
        // SAFETY: forwarded from the caller.
        unsafe {
            if affine {
                by_rows!(panel_rows[true], rows.len(), (p, x, r0, out), 1 2 3 4 5 6 7 8)
            } else {
                by_rows!(panel_rows[false], rows.len(), (p, x, r0, out), 1 2 3 4 5 6 7 8)
            }
        }
    }
}

/// Output row `r` of a panel's results: 16 values, or the first `out.cols` of them.
///
/// # Safety
/// As `panel_dot` asks of `out`, for row `r`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_row(out: PanelOut, r: usize, v: __m512) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let at = out.ptr.add(r * out.stride);
        if out.cols == PANEL {
            _mm512_storeu_ps(at, v);
        } else {
            _mm512_mask_storeu_ps(at, ((1u32 << out.cols) - 1) as u16, v);
        }
    }
}

/// The 64 bytes of codes of one 32-weight block of a panel, unpacked for `vpdpbusd`: register
/// r of `lo` holds weights 4r..4r+4 of each of the 16 rows, of `hi` weights 16+4r...
///
/// # Safety
/// `c` points at a whole block of `bits`-bit panel codes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn unpack_block(
    c: *const u8,
    bits: u32,
    identity: bool,
    table: __m512i,
) -> [[__m512i; 4]; 2] {
    let mut lo = [_mm512_setzero_si512(); 4];
    let mut hi = [_mm512_setzero_si512(); 4];
    let mask = _mm512_set1_epi8(0x0F);
    // SAFETY: 4 (or 8) loads of 64 bytes inside the block.
    unsafe {
        for r in 0..4 {
            if bits == 8 {
                // Stored in offset binary (crate::panel): loaded as they are.
                lo[r] = _mm512_loadu_si512(c.add(64 * r).cast());
                hi[r] = _mm512_loadu_si512(c.add(64 * (4 + r)).cast());
                continue;
            }
            let v = _mm512_loadu_si512(c.add(64 * r).cast());
            lo[r] = _mm512_and_si512(v, mask);
            hi[r] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
            if !identity {
                lo[r] = _mm512_shuffle_epi8(table, lo[r]);
                hi[r] = _mm512_shuffle_epi8(table, hi[r]);
            }
        }
    }
    [lo, hi]
}

/// The group of each block, for blocks visited in order from 0.
struct GroupOf {
    blocks_per_group: usize,
    group: usize,
    left: usize,
}

impl GroupOf {
    fn new(group_len: usize) -> Self {
        let blocks_per_group = group_len / 32;
        GroupOf {
            blocks_per_group,
            group: 0,
            left: blocks_per_group,
        }
    }

    /// The group of block `b`, the block after the previous call's.
    #[inline(always)]
    fn next(&mut self, b: usize) -> usize {
        if self.left == 0 {
            self.group += 1;
            self.left = self.blocks_per_group;
        }
        self.left -= 1;
        debug_assert_eq!(self.group, b / self.blocks_per_group);
        self.group
    }
}

/// A group's 16 scales and (affine formats) biases, as floats.
///
/// # Safety
/// Group `g` lies inside the panel's scales (and biases).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
unsafe fn group_scales<const AFFINE: bool>(p: &PanelView<'_>, g: usize) -> (__m512, __m512) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let gs = if p.e8m0 {
            // The exponent byte shifted into an f32's exponent field is 2^(e-127).
            let e = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.scales.as_ptr().add(16 * g).cast()));
            _mm512_castsi512_ps(_mm512_slli_epi32(e, 23))
        } else {
            _mm512_cvtph_ps(_mm256_loadu_si256(p.scales.as_ptr().add(32 * g).cast()))
        };
        let gb = if AFFINE {
            _mm512_cvtph_ps(_mm256_loadu_si256(p.biases.as_ptr().add(32 * g).cast()))
        } else {
            _mm512_setzero_ps()
        };
        (gs, gb)
    }
}

/// A panel's blocks in order: each block's codes unpacked (the next blocks' prefetched) and its
/// group's scales and biases; the part of a block's work that every row tile shares.
struct BlockReader<'a> {
    p: &'a PanelView<'a>,
    /// The format's table is the identity (INT4): no lookup.
    identity: bool,
    table: __m512i,
    block_bytes: usize,
    /// Bytes the prefetch runs ahead.
    ahead: usize,
    group: GroupOf,
}

impl<'a> BlockReader<'a> {
    #[target_feature(enable = "avx512f")]
    fn new(p: &'a PanelView<'a>) -> Self {
        BlockReader {
            p,
            identity: p.lut.iter().enumerate().all(|(i, &c)| c as usize == i),
            // SAFETY: 16 bytes of the 16-entry table.
            table: _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(p.lut.as_ptr().cast()) }),
            block_bytes: panel_block(p.bits),
            ahead: prefetch_bytes(p.bits),
            group: GroupOf::new(p.group_len),
        }
    }

    /// Block `b` (the block after the previous call's): its codes as `[lo, hi]`
    /// ([`unpack_block`]), scales and biases ([`group_scales`]).
    ///
    /// # Safety
    /// Block `b` lies inside the panel.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn next<const AFFINE: bool>(&mut self, b: usize) -> ([[__m512i; 4]; 2], __m512, __m512) {
        let p = self.p;
        // SAFETY: block b's codes and its group's scales lie inside the panel (the caller's
        // promise); a prefetch past the end is a hint and never faults.
        unsafe {
            let c = p.codes.as_ptr().add(self.block_bytes * b);
            // Every 64-byte line: one in two (enough where the L2 fetches lines in pairs, as
            // Intel's spatial prefetcher does) left half the stream unprefetched on AMD Zen 5
            // (SmolLM2 decode 2.71-3.00 against 3.26-3.83 ms a step at batch 1, 12.7-14.8
            // against 14.5-16.8 at batch 16, six alternating pairs).
            for line in (0..self.block_bytes).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(self.ahead + line).cast());
            }
            let codes = unpack_block(c, p.bits, self.identity, self.table);
            // The block's group, counted rather than divided (a division a block showed).
            let (gs, gb) = group_scales::<AFFINE>(p, self.group.next(b));
            (codes, gs, gb)
        }
    }
}

/// Split activation rows (int8x2) in pairs `r0..r0 + P` against one panel. A pair's two
/// integer dot products meet before any float work: the residual row's grid is exactly
/// 2^RESIDUAL_SHIFT times finer, so `(grid << 8) + residual` is the pair's dot product on the
/// residual's grid, and one convert, scale and FMA (and one bias FMA, on the pair's summed
/// sums) finish the pair, where two rows had cost two of each. Per pair and block the work is
/// in the same order at every `P`, so a row's result does not depend on its tile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn panel_pairs<const P: usize, const AFFINE: bool>(
    p: &PanelView<'_>,
    x: &Q8Blocks,
    r0: usize,
    out: PanelOut,
) {
    let (m, pairs) = (x.m, x.m / 2);
    let blocks = x.k_pad / 32;
    let mut acc = [_mm512_setzero_ps(); P];
    // SAFETY: block `b` reads the panel's code bytes at block_bytes * b, 16 scales (and biases)
    // of its group, and the tile's kernel rows at (b m + 2 (r0 + i)) and the next, for i < P
    // (x 32 for values), and its pair sums at (b m / 2 + r0 + i): inside their slices, as
    // blocks are whole, the panel holds k_pad / group_len groups and r0 + P <= m / 2.
    unsafe {
        let mut reader = BlockReader::new(p);
        for b in 0..blocks {
            let ([lo, hi], gs, gb) = reader.next::<AFFINE>(b);
            let at = b * m + 2 * r0;
            let (q, scale, init) = (
                x.q.as_ptr().add(32 * at),
                x.scale.as_ptr().add(at),
                x.init.as_ptr().add(at),
            );
            let pair_sum = x.pair_sum.as_ptr().add(b * pairs + r0);
            unroll!(i < P => {
                // The grid row's chain and the residual row's, independent until they meet.
                // (Indexed loops: as iterators LLVM kept the codes on the stack, 2x slower.)
                #[allow(clippy::needless_range_loop)]
                let dot = |row: usize| {
                    let q = q.add(32 * row);
                    let quad =
                        |j: usize| _mm512_set1_epi32(q.add(4 * j).cast::<i32>().read_unaligned());
                    let mut d = if AFFINE {
                        _mm512_setzero_si512()
                    } else {
                        _mm512_set1_epi32(*init.add(row))
                    };
                    for j in 0..4 {
                        d = _mm512_dpbusd_epi32(d, lo[j], quad(j));
                    }
                    for j in 0..4 {
                        d = _mm512_dpbusd_epi32(d, hi[j], quad(4 + j));
                    }
                    d
                };
                let (grid, residual) = (dot(2 * i), dot(2 * i + 1));
                let dot = _mm512_add_epi32(_mm512_slli_epi32::<RESIDUAL_SHIFT>(grid), residual);
                // The residual row's scale: the pair's dot product is on its grid.
                let s = _mm512_mul_ps(gs, _mm512_set1_ps(*scale.add(2 * i + 1)));
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[i]);
                if AFFINE {
                    acc[i] = _mm512_fmadd_ps(gb, _mm512_set1_ps(*pair_sum.add(i)), acc[i]);
                }
            });
        }
        for (i, a) in acc.iter().enumerate() {
            store_row(out, i, *a);
        }
    }
}

/// Activation rows `r0..r0 + R` against one panel. Per row and block the float work is in the
/// same order at every `R` (scale product, convert, FMA, then the bias FMA), so a row's result
/// does not depend on how many rows share its tile: a batched decode step gives each sequence
/// exactly what it would get alone.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn panel_rows<const R: usize, const AFFINE: bool>(
    p: &PanelView<'_>,
    x: &Q8Blocks,
    r0: usize,
    out: PanelOut,
) {
    let m = x.m;
    let blocks = x.k_pad / 32;
    let mut acc = [_mm512_setzero_ps(); R];
    // SAFETY: block `b` reads the panel's code bytes at block_bytes * b, 16 scales (and biases) of
    // its group, and the tile's activation data at (b m + r0 + i) for i < R (x 32 for values),
    // all inside their slices: blocks are whole, the panel holds k_pad / group_len groups and
    // r0 + R <= m.
    unsafe {
        let mut reader = BlockReader::new(p);
        for b in 0..blocks {
            let ([lo, hi], gs, gb) = reader.next::<AFFINE>(b);
            let at = b * m + r0;
            let (q, scale) = (x.q.as_ptr().add(32 * at), x.scale.as_ptr().add(at));
            let (init, sum) = (x.init.as_ptr().add(at), x.sum.as_ptr().add(at));
            unroll!(i < R => {
                let q = q.add(32 * i);
                let quad =
                    |j: usize| _mm512_set1_epi32(q.add(4 * j).cast::<i32>().read_unaligned());
                // Two independent chains: one chain of 8 would wait 8 latencies per block.
                let mut even = if AFFINE {
                    _mm512_setzero_si512()
                } else {
                    _mm512_set1_epi32(*init.add(i))
                };
                let mut odd = _mm512_setzero_si512();
                for j in 0..4 {
                    even = _mm512_dpbusd_epi32(even, lo[j], quad(j));
                    odd = _mm512_dpbusd_epi32(odd, hi[j], quad(4 + j));
                }
                let dot = _mm512_add_epi32(even, odd);
                let s = _mm512_mul_ps(gs, _mm512_set1_ps(*scale.add(i)));
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[i]);
                if AFFINE {
                    acc[i] = _mm512_fmadd_ps(gb, _mm512_set1_ps(*sum.add(i)), acc[i]);
                }
            });
        }
        for (i, a) in acc.iter().enumerate() {
            store_row(out, i, *a);
        }
    }
}

/// # Safety
/// The CPU must have AVX-512 F/BW/VL, FMA and F16C; lengths as `nibble_f32_dot` checks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(super) unsafe fn nibble_f32_dot(
    w: &NibbleF32Row<'_>,
    group_len: usize,
    x: &[f32],
    group_sums: &[f32],
) -> f32 {
    let identity = w.lut.iter().enumerate().all(|(i, &c)| c as usize == i);
    let blocks_per_group = group_len / 32;
    let mut acc = _mm512_setzero_ps();
    let mut bias = 0f32;
    // SAFETY: block `b` reads 16 packed bytes at 16 b and 32 activations at 32 b, inside the
    // slices (checked by the caller); group `g` reads one scale, bias and sum.
    unsafe {
        let mask = _mm_set1_epi8(0x0F);
        let table = _mm_loadu_si128(w.lut.as_ptr().cast());
        for g in 0..x.len() / group_len {
            let mut dot = _mm512_setzero_ps();
            for b in g * blocks_per_group..(g + 1) * blocks_per_group {
                let v = _mm_loadu_si128(w.packed.as_ptr().add(16 * b).cast());
                // Low nibbles are weights 0..16 of the block, high nibbles 16..32.
                let mut lo = _mm_and_si128(v, mask);
                let mut hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
                if !identity {
                    lo = _mm_shuffle_epi8(table, lo);
                    hi = _mm_shuffle_epi8(table, hi);
                }
                let xs = x.as_ptr().add(32 * b);
                let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo));
                let hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
                dot = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xs), dot);
                dot = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xs.add(16)), dot);
            }
            acc = _mm512_fmadd_ps(dot, _mm512_set1_ps(*w.gs.get_unchecked(g)), acc);
            bias += w.gb.get_unchecked(g) * group_sums.get_unchecked(g);
        }
        _mm512_reduce_add_ps(acc) + bias
    }
}
