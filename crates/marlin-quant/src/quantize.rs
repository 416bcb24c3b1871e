//! Round-to-nearest (RTN) quantization of f32, f16 and bf16 weights into every format.

use half::{bf16, f16};

use crate::codec::{E2M1_MAX, E4M3_MAX, e2m1_encode, e4m3_decode, e4m3_encode};
use crate::layout::{block_bytes, pack_block};
use crate::{BLOCK, Format, QuantError, QuantMatrix, ScaleType, Scheme};

/// Quantizes a row-major `rows x cols` matrix with round-to-nearest.
///
/// Each group's scale (and bias) comes from its own weights: the largest magnitude for the
/// symmetric formats, the min and max for the affine ones. Columns past `cols` up to the padded
/// row length are encoded as zero.
// weights (rows, cols) -> QuantMatrix (rows, cols)
pub fn quantize(
    weights: &[f32],
    rows: usize,
    cols: usize,
    scheme: Scheme,
) -> Result<QuantMatrix<'static>, QuantError> {
    quantize_with(weights, rows, cols, scheme, None)
}

/// [`quantize`] with each group's range searched ([`GroupParams::fit_clipped`]): the clipping
/// whose rounding error, weighted by `importance` (one value per column, e.g. the mean square
/// of that input over calibration tokens), is least. AWQ's clip search, without the matmul.
// weights (rows, cols), importance (cols) -> QuantMatrix (rows, cols)
pub fn quantize_weighted(
    weights: &[f32],
    rows: usize,
    cols: usize,
    scheme: Scheme,
    importance: &[f32],
) -> Result<QuantMatrix<'static>, QuantError> {
    if importance.len() != cols {
        return Err(QuantError::InputLength {
            rows: 1,
            cols,
            expected: cols,
            got: importance.len(),
        });
    }
    quantize_with(weights, rows, cols, scheme, Some(importance))
}

fn quantize_with(
    weights: &[f32],
    rows: usize,
    cols: usize,
    scheme: Scheme,
    importance: Option<&[f32]>,
) -> Result<QuantMatrix<'static>, QuantError> {
    check_input(weights, rows, cols)?;
    let format = scheme.format();
    let global = match format {
        Format::Nvfp4 => nvfp4_global_scale(weights),
        _ => 1.0,
    };
    let (groups, group_len) = (scheme.groups_per_row(cols), scheme.group_len(cols));
    let padded = scheme.padded_cols(cols);
    let mut codes = vec![0u8; rows * scheme.row_code_bytes(cols)];
    let mut scales = Vec::with_capacity(rows * groups * format.scale_type().bytes());
    let mut biases = Vec::with_capacity(if format.has_bias() {
        rows * groups * 2
    } else {
        0
    });
    let mut row_codes = vec![0u8; padded];
    for (r, row) in weights.chunks_exact(cols).enumerate() {
        for g in 0..groups {
            let start = g * group_len;
            let span = start.min(cols)..(start + group_len).min(cols);
            let valid = &row[span.clone()];
            let p = match importance {
                Some(imp) => GroupParams::fit_clipped(format, valid, global, &imp[span]),
                None => GroupParams::fit(format, valid, global),
            };
            let p = p.ok_or_else(|| QuantError::ScaleOverflow {
                row: r,
                group: g,
                format: format.name(),
            })?;
            scales.extend_from_slice(&p.scale_bytes[..format.scale_type().bytes()]);
            if format.has_bias() {
                biases.extend_from_slice(&f16::from_f32(p.bias).to_le_bytes());
            }
            for (i, code) in row_codes[start..start + group_len].iter_mut().enumerate() {
                *code = p.encode(format, valid.get(i).copied().unwrap_or(0.0));
            }
        }
        let out = &mut codes[r * scheme.row_code_bytes(cols)..];
        let bb = block_bytes(format.bits());
        for (b, block) in row_codes.chunks_exact(BLOCK).enumerate() {
            pack_block(
                format.bits(),
                block.try_into().expect("BLOCK codes"),
                &mut out[b * bb..],
            );
        }
    }
    QuantMatrix::from_vecs(scheme, (rows, cols), codes, scales, biases, global)
}

/// [`quantize`] from f16 weights.
pub fn quantize_f16(
    weights: &[f16],
    rows: usize,
    cols: usize,
    scheme: Scheme,
) -> Result<QuantMatrix<'static>, QuantError> {
    let w: Vec<f32> = weights.iter().map(|v| v.to_f32()).collect();
    quantize(&w, rows, cols, scheme)
}

/// [`quantize`] from bf16 weights.
pub fn quantize_bf16(
    weights: &[bf16],
    rows: usize,
    cols: usize,
    scheme: Scheme,
) -> Result<QuantMatrix<'static>, QuantError> {
    let w: Vec<f32> = weights.iter().map(|v| v.to_f32()).collect();
    quantize(&w, rows, cols, scheme)
}

pub(crate) fn check_input(weights: &[f32], rows: usize, cols: usize) -> Result<(), QuantError> {
    if rows == 0 || cols == 0 {
        return Err(QuantError::EmptyShape { rows, cols });
    }
    let expected = rows
        .checked_mul(cols)
        .ok_or(QuantError::TooLarge { rows, cols })?;
    if weights.len() != expected {
        return Err(QuantError::InputLength {
            rows,
            cols,
            expected,
            got: weights.len(),
        });
    }
    match weights.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(QuantError::NonFinite {
            row: i / cols,
            col: i % cols,
            value: weights[i],
        }),
        None => Ok(()),
    }
}

/// NVFP4's per-tensor scale maps the largest weight onto the largest E4M3 block scale times the
/// largest E2M1 value, so block scales use the whole E4M3 range.
pub(crate) fn nvfp4_global_scale(weights: &[f32]) -> f32 {
    let amax = weights.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        1.0
    } else {
        amax / (E4M3_MAX * E2M1_MAX)
    }
}

/// Range factors tried by [`GroupParams::fit_clipped`]: 0.975 down to 0.5 in steps of 1/40
/// (GPTQ's reference grid is 1/100 down to 0.2; below 0.5 nothing won on SmolLM2's layers).
const CLIP_GRID: [f32; 20] = {
    let mut g = [0f32; 20];
    let mut i = 0;
    while i < 20 {
        g[i] = 1.0 - (i as f32 + 1.0) / 40.0;
        i += 1;
    }
    g
};

/// Scale and bias of one group, as stored and as used for encoding.
pub(crate) struct GroupParams {
    /// The decoded scale the codes are computed against (after rounding to its storage type).
    pub(crate) scale: f32,
    pub(crate) bias: f32,
    /// The stored scale, little-endian; the first `ScaleType::bytes()` bytes are used.
    pub(crate) scale_bytes: [u8; 4],
}

impl GroupParams {
    /// Fits a group to its weights; `None` when the scale overflows its f16 storage.
    pub(crate) fn fit(format: Format, xs: &[f32], global: f32) -> Option<Self> {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let f16_scale = |s: f32| {
            let h = f16::from_f32(s);
            h.is_finite().then(|| (h.to_f32(), pad(&h.to_le_bytes())))
        };
        let (scale, scale_bytes, bias) = match format {
            Format::Int4 => {
                // Q4_0: the weight of largest magnitude, with its sign, maps onto code 0 (-8),
                // which gives one more level on that side than amax / 7 would.
                let max = xs
                    .iter()
                    .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                let (s, b) = f16_scale(max / -8.0)?;
                (s, b, 0.0)
            }
            Format::Int4Affine | Format::Int3 | Format::Int2 => {
                let levels = ((1u32 << format.bits()) - 1) as f32;
                let min = xs.iter().fold(f32::INFINITY, |m, &v| m.min(v));
                let max = xs.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let (min, max) = if min.is_finite() {
                    (min, max)
                } else {
                    (0.0, 0.0)
                };
                let (s, b) = f16_scale((max - min) / levels)?;
                let bias = f16::from_f32(min);
                if !bias.is_finite() {
                    return None;
                }
                (s, b, bias.to_f32())
            }
            Format::Int8 => {
                let (s, b) = f16_scale(amax / 127.0)?;
                (s, b, 0.0)
            }
            Format::Fp4 => {
                let (s, b) = f16_scale(amax / E2M1_MAX)?;
                (s, b, 0.0)
            }
            Format::Mxfp4 => {
                let e = mx_shared_exponent(amax);
                (2f32.powi(e as i32 - 127), [e, 0, 0, 0], 0.0)
            }
            Format::Nvfp4 => {
                let code = e4m3_encode(amax / E2M1_MAX / global);
                (e4m3_decode(code) * global, [code, 0, 0, 0], 0.0)
            }
            Format::Fp8 => {
                let s = amax / E4M3_MAX;
                (s, s.to_le_bytes(), 0.0)
            }
        };
        debug_assert!(format.scale_type() != ScaleType::F16 || scale.is_finite());
        Some(GroupParams {
            scale,
            bias,
            scale_bytes,
        })
    }

    /// The fit of `xs` with its range shrunk by the factor in [`CLIP_GRID`] whose rounding
    /// error `sum_i importance_i (x_i - q(x_i))^2` is least (GPTQ's "mse" option, the range
    /// search AWQ and llama.cpp's k-quants also do): a few large weights stop setting the scale
    /// for the whole group when clipping them costs less than the coarser grid costs the rest.
    /// The unshrunk fit wins ties, so with no better choice this is [`GroupParams::fit`].
    pub(crate) fn fit_clipped(
        format: Format,
        xs: &[f32],
        global: f32,
        importance: &[f32],
    ) -> Option<Self> {
        let mut best = GroupParams::fit(format, xs, global)?;
        let mut best_err = best.error(format, xs, importance);
        let mut shrunk = vec![0f32; xs.len()];
        for p in CLIP_GRID {
            shrunk.iter_mut().zip(xs).for_each(|(s, &x)| *s = x * p);
            let Some(cand) = GroupParams::fit(format, &shrunk, global) else {
                continue;
            };
            let err = cand.error(format, xs, importance);
            if err < best_err {
                (best, best_err) = (cand, err);
            }
        }
        Some(best)
    }

    /// `sum_i importance_i (x_i - value(encode(x_i)))^2`.
    fn error(&self, format: Format, xs: &[f32], importance: &[f32]) -> f64 {
        xs.iter()
            .zip(importance)
            .map(|(&x, &imp)| {
                let q = crate::matrix::value(format, self.encode(format, x), self.scale, self.bias);
                imp as f64 * ((x - q) as f64).powi(2)
            })
            .sum()
    }

    /// The code of weight `x` in this group.
    pub(crate) fn encode(&self, format: Format, x: f32) -> u8 {
        let s = self.scale;
        let ratio = if s == 0.0 { 0.0 } else { x / s };
        match format {
            Format::Int4 => (ratio.round() + 8.0).clamp(0.0, 15.0) as u8,
            Format::Int4Affine | Format::Int3 | Format::Int2 => {
                let levels = ((1u32 << format.bits()) - 1) as f32;
                let q = if s == 0.0 {
                    0.0
                } else {
                    ((x - self.bias) / s).round()
                };
                q.clamp(0.0, levels) as u8
            }
            Format::Int8 => (ratio.round().clamp(-127.0, 127.0) as i8) as u8,
            Format::Fp4 | Format::Mxfp4 | Format::Nvfp4 => e2m1_encode(ratio),
            Format::Fp8 => e4m3_encode(ratio),
        }
    }
}

/// OCP MX shared exponent: `floor(log2(amax)) - 2` (E2M1's largest exponent), biased by 127
/// and clamped to E8M0's finite range. Weights beyond 6 * scale saturate, as the spec says.
fn mx_shared_exponent(amax: f32) -> u8 {
    if amax == 0.0 {
        return 0;
    }
    let e = amax.log2().floor() as i32 - 2;
    (e + 127).clamp(0, 254) as u8
}

fn pad(b: &[u8; 2]) -> [u8; 4] {
    [b[0], b[1], 0, 0]
}
