//! The inner loops, one module per instruction set, chosen by [`Isa`]. Each SIMD function
//! has a scalar twin here that is its specification.

use std::ops::Range;

use half::f16;
use marlin_quant::codec::e8m0_decode;

use crate::Isa;
use marlin_quant::BLOCK;

use crate::activations::{Q8Planes, Q8Rows};
use crate::blocks::Q8Blocks;
use crate::panel::{PANEL, PanelView, panel_block};

/// Calls `$f::<N>(args)` with `N` the const of the matching `$len` (one of the listed
/// literals): the kernels are generic over how many activation rows they hold in registers.
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($f:ident, $len:expr, $args:tt, $($n:literal)+) => {
        match $len {
            $($n => $f::<$n> $args,)+
            len => unreachable!("no tile of {len} rows"),
        }
    };
    // `$f::<N, $g>`: a second const parameter after the rows.
    ($f:ident[$g:expr], $len:expr, $args:tt, $($n:literal)+) => {
        match $len {
            $($n => $f::<$n, $g> $args,)+
            len => unreachable!("no tile of {len} rows"),
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Grid codes and their per-group scales: what [`grid_dot`] multiplies with.
pub(crate) struct GridRow<'a> {
    /// k_pad u8 grid codes.
    pub codes: &'a [u8],
    /// Grid scale per group, followed by at least 4 floats of padding.
    pub gs: &'a [f32],
    pub group_len: usize,
    /// INT8: `codes` are the stored two's-complement bytes and the grid code is `byte ^ 0x80`
    /// (offset binary, 0..=255), flipped in registers so the row needs no decoding pass. Codes
    /// above 127 are also what `u8 x i8` pair sums on AVX2 cannot take.
    pub signed: bool,
}

/// A packed 4-bit row for [`nibble_dot`]: `w = s * lut[q] + b` per group, with the scale `s`
/// and bias `b` read straight from the row's stored bytes.
pub(crate) struct NibbleRow<'a> {
    /// k_pad / 2 packed bytes in GGUF nibble order.
    pub packed: &'a [u8],
    pub lut: &'a [u8; 16],
    /// Whether `lut` is the identity (INT4), so the lookup can be skipped.
    pub identity: bool,
    /// The row's stored scales: little-endian f16, or E8M0 bytes when `e8m0`.
    pub scales: &'a [u8],
    pub e8m0: bool,
    /// Affine formats: the row's f16 biases. Empty for symmetric formats, whose zero point
    /// rides in the activations' lane initial values (`Q8Rows::into_planes`).
    pub biases: &'a [u8],
    /// At least 32.
    pub group_len: usize,
}

impl NibbleRow<'_> {
    pub fn affine(&self) -> bool {
        !self.biases.is_empty()
    }
}

/// The width of the nibble-plane chunks of [`nibble_dot`] at `isa`, or `None` when it has no
/// such kernel (AVX-512 multiplies 4-bit matrices in panels instead, see `crate::panel`).
pub(crate) fn nibble_width(isa: Isa) -> Option<usize> {
    match isa {
        Isa::Avx2 => Some(64),
        Isa::Avx512Vnni | Isa::Scalar => None,
    }
}

/// For every activation row `r`: `out[r]` = the dot product of a packed 4-bit row with it,
/// reading the packed nibbles directly (activations in nibble-plane order, see
/// `Q8Rows::into_planes`).
// w (k_pad), x (m, k_pad) -> out (m)
pub(crate) fn nibble_dot(isa: Isa, w: &NibbleRow<'_>, x: &Q8Planes, out: &mut [f32]) {
    assert!(w.group_len >= 32 && Some(x.width) == nibble_width(isa));
    assert!(w.packed.len() * 2 == x.rows.k_pad && out.len() >= x.rows.m);
    let (groups, scale_bytes) = (x.rows.k_pad / w.group_len, if w.e8m0 { 1 } else { 2 });
    assert!(w.scales.len() == groups * scale_bytes && (!w.e8m0 || w.group_len == 32));
    assert!(w.biases.is_empty() || w.biases.len() == groups * 2);
    match isa {
        // SAFETY: the ISA is available (see `decode_nibbles`); lengths checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::nibble_dot(w, x, out) },
        _ => unreachable!("nibble_width is None for {isa}"),
    }
    nibble_tail(w, x, out);
}

/// Adds the blocks past the last full chunk (natural order) to `out[r]` for every row `r`.
fn nibble_tail(w: &NibbleRow<'_>, x: &Q8Planes, out: &mut [f32]) {
    let first = x.chunks() * x.width / 32;
    for (r, o) in out.iter_mut().enumerate().take(x.rows.m) {
        let (q, lane_scale) = x.rows.row(r);
        for b in first..x.rows.k_pad / 32 {
            let (p, q) = (&w.packed[16 * b..16 * b + 16], &q[32 * b..32 * b + 32]);
            let (mut dot, mut sum) = (0i32, 0i32);
            for j in 0..16 {
                dot += w.lut[(p[j] & 0xF) as usize] as i32 * q[j] as i32;
                dot += w.lut[(p[j] >> 4) as usize] as i32 * q[j + 16] as i32;
                sum += q[j] as i32 + q[j + 16] as i32;
            }
            let g = 32 * b / w.group_len;
            let d = lane_scale[8 * b] * x.lane_mul;
            let scale = if w.e8m0 {
                e8m0_decode(w.scales[g])
            } else {
                f16::from_le_bytes([w.scales[2 * g], w.scales[2 * g + 1]]).to_f32()
            };
            let bias = match w.biases.get(2 * g..2 * g + 2) {
                Some(b) => f16::from_le_bytes([b[0], b[1]]).to_f32() * sum as f32,
                None => (x.zero * sum) as f32 * scale,
            };
            *o += d * (scale * dot as f32 + bias);
        }
    }
}

/// Splits `m` activation rows into tiles of at most `max`, as even as possible, so that no
/// tile is a lone straggler (9 rows run as 5 + 4, not 8 + 1).
#[cfg(target_arch = "x86_64")]
fn row_tiles(m: usize, max: usize) -> impl Iterator<Item = Range<usize>> {
    let tiles = m.div_ceil(max);
    (0..tiles).map(move |t| t * m / tiles..(t + 1) * m / tiles)
}

/// Where [`panel_dot`] writes: the results of output row `r` (a row of x, or a pair of split
/// rows) for the panel's first `cols` rows of W, at `ptr + r * stride`: columns of y, so that
/// the kernel stores straight into the product (a copy out of a panel-sized buffer took ~3% of
/// a batch-16 decode step).
#[derive(Clone, Copy)]
pub(crate) struct PanelOut {
    pub ptr: *mut f32,
    pub stride: usize,
    /// 1..=16: fewer in the last panel of a matrix whose rows are not a multiple of 16.
    pub cols: usize,
}

impl PanelOut {
    /// The same columns from output row `r0` on.
    #[cfg(target_arch = "x86_64")]
    fn rows_from(self, r0: usize) -> Self {
        PanelOut {
            ptr: self.ptr.wrapping_add(r0 * self.stride),
            ..self
        }
    }
}

/// For one panel of 16 weight rows and every activation row `r`: the dot product of row `l` of
/// the panel with activation row `r` (with split activations, row `r` of x is the pair of
/// kernel rows 2r, 2r + 1), for `l < out.cols`, into `out`.
///
/// # Safety
/// For every output row `r` (x's rows, or its pairs), `out.ptr + r * out.stride` must be valid
/// for writes of `out.cols` floats that nothing else reads or writes during the call.
// panel (16, k_pad), x (m, k_pad) -> out (m, cols)
pub(crate) unsafe fn panel_dot(isa: Isa, p: &PanelView<'_>, x: &Q8Blocks, out: PanelOut) {
    let blocks = x.k_pad / BLOCK;
    let groups = x.k_pad / p.group_len;
    assert!(p.bits == 4 || p.bits == 8);
    assert!(!x.pairs || x.m.is_multiple_of(2));
    assert!((1..=PANEL).contains(&out.cols));
    assert!(p.codes.len() == blocks * panel_block(p.bits));
    assert!(p.scales.len() == groups * PANEL * if p.e8m0 { 1 } else { 2 });
    assert!(p.biases.is_empty() || p.biases.len() == groups * PANEL * 2);
    assert!(x.scale.len() == x.m * blocks && x.init.len() == x.scale.len());
    assert!(x.sum.len() == x.scale.len() && x.q.len() == x.m * x.k_pad);
    assert!(x.pair_sum.len() == if x.pairs { x.sum.len() / 2 } else { 0 });
    match isa {
        // SAFETY: the ISA is available (see `decode_nibbles`); lengths checked above, `out` as
        // the caller guarantees.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { avx512::panel_dot(p, x, out) },
        _ => unreachable!("no panel kernel at {isa}"),
    }
}

/// Unpacks 4-bit codes (GGUF nibble order) through a 16-entry table into one u8 per weight.
// packed (k_pad / 2) -> codes (k_pad)
pub(crate) fn decode_nibbles(isa: Isa, packed: &[u8], lut: &[u8; 16], codes: &mut [u8]) {
    debug_assert_eq!(packed.len() * 2, codes.len());
    match isa {
        // SAFETY: `Isa::Avx512Vnni` / `Isa::Avx2` are only constructed when the CPU has them
        // (see `CpuBackend::new`), and the slice lengths are checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { avx512::decode_nibbles(packed, lut, codes) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::decode_nibbles(packed, lut, codes) },
        _ => decode_nibbles_scalar(packed, lut, codes),
    }
}

pub(crate) fn decode_nibbles_scalar(packed: &[u8], lut: &[u8; 16], codes: &mut [u8]) {
    for (p, c) in packed.chunks_exact(16).zip(codes.chunks_exact_mut(32)) {
        for j in 0..16 {
            c[j] = lut[(p[j] & 0xF) as usize];
            c[j + 16] = lut[(p[j] >> 4) as usize];
        }
    }
}

/// For every activation row `r`: `out[r] = sum_k gs[k / group_len] * dx[r, k] * c[k] * q[r, k]`,
/// the scale part of the dot product of a grid row with the int8 activations, plus the zero
/// point when the activations carry lane initial values (`Q8Rows::with_zero`).
// w (k_pad), x (m, k_pad) -> out (m)
pub(crate) fn grid_dot(isa: Isa, w: &GridRow<'_>, x: &Q8Rows, out: &mut [f32]) {
    assert!(w.codes.len() == x.k_pad);
    assert!(w.gs.len() >= x.k_pad / w.group_len + 4 && out.len() >= x.m);
    match isa {
        // SAFETY: the ISA is available (see `decode_nibbles`); lengths checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { avx512::grid_dot(w, x, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::grid_dot(w, x, out) },
        _ => {
            for (r, o) in out.iter_mut().enumerate().take(x.m) {
                *o = grid_lanes(w, x, r, 0..x.k_pad / 4);
            }
        }
    }
}

/// The scalar sum of `grid_dot` over the 4-value lanes `lanes` of activation row `r`.
pub(crate) fn grid_lanes(w: &GridRow<'_>, x: &Q8Rows, r: usize, lanes: Range<usize>) -> f32 {
    let (q, lane_scale) = x.row(r);
    let init = x.init_row(r);
    let mut acc = 0f32;
    let flip = if w.signed { 0x80 } else { 0 };
    for l in lanes {
        let d: i32 = (4 * l..4 * l + 4)
            .map(|k| (w.codes[k] ^ flip) as i32 * q[k] as i32)
            .sum();
        let d = d + init.get(l).copied().unwrap_or(0);
        acc += d as f32 * (w.gs[4 * l / w.group_len] * lane_scale[l]);
    }
    acc
}

/// FP8 E4M3 codes to f32 weights: `out[k] = gs[k / group_len] * e4m3(codes[k])`.
///
/// The SIMD paths place the 7 magnitude bits of an E4M3 code under an f16's exponent and
/// mantissa fields and multiply by 2^8, the difference of the two exponent biases (15 - 7);
/// that is exact for every finite code, normal and subnormal. NaN codes (0x7F, 0xFF), which
/// no quantizer writes, come out as ±480 there instead of NaN.
// codes (k_pad), gs (groups) -> out (k_pad)
pub(crate) fn decode_fp8(isa: Isa, codes: &[u8], gs: &[f32], group_len: usize, out: &mut [f32]) {
    assert!(codes.len() == out.len() && group_len.is_multiple_of(16));
    assert!(gs.len() >= codes.len() / group_len);
    match isa {
        // SAFETY: the ISA is available (see `decode_nibbles`); lengths checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { avx512::decode_fp8(codes, gs, group_len, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::decode_fp8(codes, gs, group_len, out) },
        _ => decode_fp8_scalar(codes, gs, group_len, out),
    }
}

pub(crate) fn decode_fp8_scalar(codes: &[u8], gs: &[f32], group_len: usize, out: &mut [f32]) {
    let table = crate::decode::e4m3_table();
    for (g, (o, c)) in out
        .chunks_exact_mut(group_len)
        .zip(codes.chunks_exact(group_len))
        .enumerate()
    {
        o.iter_mut()
            .zip(c)
            .for_each(|(v, &q)| *v = gs[g] * table[q as usize]);
    }
}

/// A stored 4-bit row with its grid scales, for [`nibble_f32_dot`]: `w = gs * lut[q] + gb`.
pub(crate) struct NibbleF32Row<'a> {
    /// k_pad / 2 packed bytes in GGUF nibble order.
    pub packed: &'a [u8],
    pub lut: &'a [u8; 16],
    /// Grid scale and bias per group (and padding).
    pub gs: &'a [f32],
    pub gb: &'a [f32],
}

/// Whether `isa` has [`nibble_f32_dot`].
pub(crate) fn has_nibble_f32_dot(isa: Isa) -> bool {
    isa == Isa::Avx512Vnni
}

/// The dot product of a stored 4-bit row with f32 activations `x` (k_pad), codes widened to
/// f32 in registers: `sum_g gs[g] * (sum_{k in g} c_k x_k) + gb[g] * group_sums[g]`.
// w (k_pad), x (k_pad) -> scalar
pub(crate) fn nibble_f32_dot(
    isa: Isa,
    w: &NibbleF32Row<'_>,
    group_len: usize,
    x: &[f32],
    group_sums: &[f32],
) -> f32 {
    let groups = x.len() / group_len;
    assert!(
        w.packed.len() * 2 == x.len()
            && group_len.is_multiple_of(32)
            && x.len() == groups * group_len
    );
    assert!(w.gs.len() >= groups && w.gb.len() >= groups && group_sums.len() == groups);
    match isa {
        // SAFETY: `has_nibble_f32_dot` said the ISA is this one, which `CpuBackend::new` only
        // hands out when the CPU has it; lengths checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { avx512::nibble_f32_dot(w, group_len, x, group_sums) },
        _ => unreachable!("no nibble_f32_dot at {isa}"),
    }
}

/// `sum_i a[i] * b[i]` in f32.
pub(crate) fn f32_dot(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match isa {
        // SAFETY: the ISA is available (see `decode_nibbles`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { avx512::f32_dot(a, b) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::f32_dot(a, b) },
        _ => f32_dot_lanes::<8>(a, b),
    }
}

/// A dot product with `L` independent accumulators, so the compiler can keep them in one
/// vector register (it may not reorder a single f32 sum).
#[inline(always)]
pub(crate) fn f32_dot_lanes<const L: usize>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..L {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
