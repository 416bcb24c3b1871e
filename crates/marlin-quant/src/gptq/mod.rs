//! GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative
//! Pre-trained Transformers"): quantize a layer's weights column by column, each column's
//! rounding error spread over the columns not yet quantized so that the layer's output on the
//! calibration inputs moves as little as possible.
//!
//! The layer's output error on inputs `X (tokens, cols)` is `||X W^T - X Ŵ^T||²`, a quadratic
//! form in each row of `W - Ŵ` with the Hessian `H = 2 X^T X / tokens` (the caller's job). The
//! algorithm is the paper's (and AutoGPTQ's): dampening, the upper Cholesky factor of `H^-1`,
//! blocks of 128 columns with lazy updates of the columns past the block, optional act-order.
//! Every value is rounded by exactly the scalar encoder of [`crate::quantize`] (the same group
//! fit, the same code choice), so the packed matrix dequantizes to what the algorithm assumed.

mod linalg;
mod sparse;

use half::f16;
use rayon::prelude::*;

use crate::layout::{block_bytes, pack_block};
use crate::matrix::value;
use crate::quantize::{GroupParams, check_input, nvfp4_global_scale};
use crate::{BLOCK, Format, QuantError, QuantMatrix, Scheme};

/// GPTQ's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptqOptions {
    /// Added to the Hessian's diagonal, as a fraction of its mean diagonal (the paper's 1%):
    /// keeps `H` invertible when a few input columns barely vary, and limits how far one
    /// column's error is pushed onto the others.
    pub damp: f64,
    /// Columns quantized between two lazy updates of the rest (the paper's 128); rounded up to
    /// a multiple of the group size so a group's weights are final when its scale is fitted.
    pub block: usize,
    /// Quantize columns in decreasing `diag(H)` order (the inputs that vary most first), with
    /// each group's scale fitted before the loop from the original weights ("static groups"):
    /// the groups stay groups of consecutive original columns, as the format stores them.
    pub act_order: bool,
    /// Fit every group's scale (and bias) before the column loop, from the original weights
    /// (the default), rather than when the loop reaches the group's first column, from the
    /// weights as the updates have left them (the paper's order). Fitting late lets updates
    /// that drifted one weight of a group far (cheap for an input that barely varies) widen the
    /// whole group's range; on correlated test inputs static fitting cut the output error of
    /// int2/int3 by 40-50% more and matched the late fit at 4 bits.
    pub static_groups: bool,
    /// Fit each group's range by search: the shrink factor (1 down to 0.5) whose rounding error,
    /// weighted by each input's energy `diag(H)`, is least, instead of the plain min/max fit.
    pub clip_search: bool,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            damp: 0.01,
            block: 128,
            act_order: false,
            static_groups: true,
            clip_search: true,
        }
    }
}

/// Dampening tried after `damp` when `H` is still not positive definite (float error on a
/// nearly singular `H`): ten times more each time, up to this.
const MAX_DAMP: f64 = 1.0;

/// Quantizes a row-major `rows x cols` matrix with GPTQ under the `cols x cols` Hessian `h`
/// of its inputs (row-major, symmetric): [`GptqHessian::new`] then
/// [`GptqHessian::quantize`].
// weights (rows, cols), h (cols, cols) -> QuantMatrix (rows, cols)
pub fn gptq(
    weights: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    scheme: Scheme,
    options: GptqOptions,
) -> Result<QuantMatrix<'static>, QuantError> {
    GptqHessian::new(h, cols, options)?.quantize(weights, rows, scheme)
}

/// GPTQ's view of one input: the column order and the upper Cholesky factor of the dampened
/// `H^-1`, computed once for every matrix that reads the input (q, k and v; gate and up).
#[derive(Debug, Clone)]
pub struct GptqHessian {
    cols: usize,
    /// Original column of each step.
    order: Vec<usize>,
    /// Upper Cholesky factor of `H^-1` in the quantization order (cols x cols).
    u: Vec<f32>,
    options: GptqOptions,
    /// The Hessian as given, kept for 2:4 pruning under act-order, which needs the factor in
    /// the original column order (computed once, on first use).
    h: Vec<f64>,
    natural_u: std::sync::OnceLock<Vec<f32>>,
}

impl GptqHessian {
    /// Prepares the `cols x cols` Hessian `h` (row-major, symmetric; f64 because it sums
    /// tens of thousands of tokens' products).
    // h (cols, cols) -> GptqHessian
    pub fn new(h: &[f64], cols: usize, options: GptqOptions) -> Result<Self, QuantError> {
        if cols == 0 || h.len() != cols * cols {
            return Err(QuantError::HessianShape {
                cols,
                expected: cols * cols,
                got: h.len(),
            });
        }
        let mut order: Vec<usize> = (0..cols).collect();
        if options.act_order {
            // Stable: equal diagonals keep their original order.
            order.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]));
        }
        let u = inverse_factor(h, cols, &order, options.damp)?;
        Ok(GptqHessian {
            cols,
            order,
            u,
            options,
            h: h.to_vec(),
            natural_u: std::sync::OnceLock::new(),
        })
    }

    /// Input columns of the matrices this Hessian quantizes.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Quantizes a row-major `rows x cols` matrix. Each group's scale (and bias) is fitted as
    /// RTN fits it, to the original weights or, with `static_groups` off, to the weights as the
    /// error updates have left them when the algorithm reaches the group's first column.
    // weights (rows, cols) -> QuantMatrix (rows, cols)
    pub fn quantize(
        &self,
        weights: &[f32],
        rows: usize,
        scheme: Scheme,
    ) -> Result<QuantMatrix<'static>, QuantError> {
        Ok(self.run(weights, rows, scheme, None)?.0)
    }

    /// [`GptqHessian::quantize`], also returning the values the algorithm rounded each weight
    /// to. With a keep-`mask` (`rows * cols`, two of every 4 columns kept), the pruned weights
    /// become 0 and the returned matrix holds only the kept ones, `(rows, kept_cols(cols))`,
    /// with static groups over the kept values (a 2:4 sparse matrix's kept part).
    // weights (rows, cols) -> (QuantMatrix (rows, cols or kept_cols), values (rows, cols))
    pub(crate) fn run(
        &self,
        weights: &[f32],
        rows: usize,
        scheme: Scheme,
        mask: Option<&[bool]>,
    ) -> Result<(QuantMatrix<'static>, Vec<f32>), QuantError> {
        let cols = self.cols;
        check_input(weights, rows, cols)?;
        let stored = match mask {
            Some(_) => crate::sparse::kept_cols(cols),
            None => cols,
        };
        let format = scheme.format();
        let global = match format {
            Format::Nvfp4 => nvfp4_global_scale(weights),
            _ => 1.0,
        };
        let gl = scheme.group_len(stored);
        let block = self.options.block.max(1);
        let job = RowJob {
            format,
            scheme,
            cols,
            stored,
            mask,
            global,
            order: &self.order,
            u: &self.u,
            block: if gl <= block {
                block.div_ceil(gl) * gl
            } else {
                block
            },
            static_groups: self.options.static_groups || self.options.act_order || mask.is_some(),
            diag: self
                .options
                .clip_search
                .then(|| (0..cols).map(|c| self.h[c * cols + c] as f32).collect()),
        };
        let mut values = vec![0f32; rows * cols];
        // Rows are independent given U: each core takes whole rows.
        let out = weights
            .par_chunks_exact(cols)
            .zip(values.par_chunks_exact_mut(cols))
            .enumerate()
            .map(|(r, (row, vals))| job.quantize_row(r, row, vals))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((pack(scheme, rows, stored, global, out)?, values))
    }
}

/// The upper Cholesky factor of the dampened `H^-1`, in the quantization order, as f32.
// h (cols, cols) -> U (cols, cols)
fn inverse_factor(
    h: &[f64],
    cols: usize,
    order: &[usize],
    damp: f64,
) -> Result<Vec<f32>, QuantError> {
    let mut hp = vec![0f64; cols * cols];
    for (i, &oi) in order.iter().enumerate() {
        for (j, &oj) in order.iter().enumerate() {
            hp[i * cols + j] = h[oi * cols + oj];
        }
    }
    // A column no calibration token used (diag 0) has no say in the output error: a unit
    // diagonal keeps H invertible and leaves that column's rounding to RTN.
    for i in 0..cols {
        if hp[i * cols + i] == 0.0 {
            hp[i * cols + i] = 1.0;
        }
    }
    let mean_diag = (0..cols).map(|i| hp[i * cols + i]).sum::<f64>() / cols as f64;
    let mut damp = damp.max(0.0);
    loop {
        let mut dampened = hp.clone();
        for i in 0..cols {
            dampened[i * cols + i] += damp * mean_diag;
        }
        if let Some(u) = linalg::inverse_upper_cholesky(&dampened, cols) {
            return Ok(u.into_iter().map(|v| v as f32).collect());
        }
        if damp >= MAX_DAMP {
            return Err(QuantError::HessianNotPositiveDefinite { damp });
        }
        damp = (damp * 10.0).clamp(0.01, MAX_DAMP);
    }
}

/// What every row shares.
struct RowJob<'a> {
    format: Format,
    scheme: Scheme,
    cols: usize,
    /// Values stored per row: `cols`, or the kept values of a 2:4 matrix.
    stored: usize,
    /// 2:4: which weights are kept (`rows * cols`); the rest are rounded to 0.
    mask: Option<&'a [bool]>,
    global: f32,
    /// Original column of each step.
    order: &'a [usize],
    /// Upper Cholesky factor of `H^-1` in the quantization order (cols x cols).
    u: &'a [f32],
    block: usize,
    /// Fit every group before the loop from the original weights.
    static_groups: bool,
    /// `diag(H)` by original column, when group ranges are searched (`clip_search`).
    diag: Option<Vec<f32>>,
}

/// One row quantized: its codes (padded row length) and each group's parameters.
struct RowOut {
    codes: Vec<u8>,
    params: Vec<GroupParams>,
}

impl RowJob<'_> {
    /// GPTQ on one row: rows are independent given `H`, so the paper's matrix updates become
    /// one row's column loop. `vals` receives the value each weight was rounded to.
    // row (cols) -> RowOut, vals (cols)
    fn quantize_row(&self, r: usize, row: &[f32], vals: &mut [f32]) -> Result<RowOut, QuantError> {
        let (cols, stored, format) = (self.cols, self.stored, self.format);
        let gl = self.scheme.group_len(stored);
        let groups = self.scheme.groups_per_row(stored);
        let valid = |g: usize| (g * gl).min(stored)..((g + 1) * gl).min(stored);
        // Where each column is stored: itself, or its kept slot (None when pruned).
        let (slot, original) = self.slots(r, row);
        let importance = self.diag.as_ref().map(|d| {
            let mut imp = vec![0f32; stored];
            for (c, s) in slot.iter().enumerate() {
                if let Some(s) = s {
                    imp[*s] = d[c];
                }
            }
            imp
        });
        let fit = |g: usize, xs: &[f32]| {
            let p = match &importance {
                Some(imp) => GroupParams::fit_clipped(format, xs, self.global, &imp[valid(g)]),
                None => GroupParams::fit(format, xs, self.global),
            };
            p.ok_or(QuantError::ScaleOverflow {
                row: r,
                group: g,
                format: format.name(),
            })
        };
        let mut params: Vec<Option<GroupParams>> = (0..groups).map(|_| None).collect();
        if self.static_groups {
            for (g, p) in params.iter_mut().enumerate() {
                *p = Some(fit(g, &original[valid(g)])?);
            }
        }
        let mut w: Vec<f32> = self.order.iter().map(|&c| row[c]).collect();
        let mut codes: Vec<Option<u8>> = vec![None; self.scheme.padded_cols(stored)];
        let mut errs = vec![0f32; self.block];
        for i1 in (0..cols).step_by(self.block) {
            let i2 = (i1 + self.block).min(cols);
            for i in i1..i2 {
                let c = self.order[i];
                let q = match slot[c] {
                    None => 0.0,
                    Some(s) => {
                        let g = s / gl;
                        if params[g].is_none() {
                            // Dense without act-order: `i == c == s` and the block holds the
                            // whole group: its weights carry every update from the columns
                            // before it.
                            params[g] = Some(fit(g, &w[valid(g)])?);
                        }
                        let p = params[g].as_ref().expect("fitted above");
                        let code = p.encode(format, w[i]);
                        codes[s] = Some(code);
                        value(format, code, p.scale, p.bias)
                    }
                };
                vals[c] = q;
                let urow = &self.u[i * cols..(i + 1) * cols];
                let err = (w[i] - q) / urow[i];
                for (wj, uj) in w[i + 1..i2].iter_mut().zip(&urow[i + 1..i2]) {
                    *wj -= err * uj;
                }
                errs[i - i1] = err;
            }
            lazy_update(self.u, cols, i1, i2, &errs, &mut w);
        }
        // Groups no column reached (all padding) and the slots no column filled (padding), as
        // RTN writes them: the code of 0.
        let params = params
            .into_iter()
            .enumerate()
            .map(|(g, p)| p.map_or_else(|| fit(g, &original[valid(g)]), Ok))
            .collect::<Result<Vec<_>, _>>()?;
        let codes = codes
            .iter()
            .enumerate()
            .map(|(s, c)| c.unwrap_or_else(|| params[s / gl].encode(format, 0.0)))
            .collect();
        Ok(RowOut { codes, params })
    }

    /// Each column's stored slot (`None`: pruned) and the original values by slot.
    fn slots(&self, r: usize, row: &[f32]) -> (Vec<Option<usize>>, Vec<f32>) {
        let cols = self.cols;
        let Some(mask) = self.mask else {
            return ((0..cols).map(Some).collect(), row.to_vec());
        };
        let keep = &mask[r * cols..(r + 1) * cols];
        let (original, positions) = crate::sparse::gather_mask(row, keep, 1, cols);
        let mut slot = vec![None; cols];
        for j in 0..self.stored {
            let c = 4 * (j / 2) + ((positions[j / 4] >> (2 * (j % 4))) & 3) as usize;
            if c < cols && keep[c] {
                slot[c] = Some(j);
            }
        }
        (slot, original)
    }
}

/// GPTQ's lazy batch update: the errors of block `i1..i2` reach the columns past it at once.
fn lazy_update(u: &[f32], cols: usize, i1: usize, i2: usize, errs: &[f32], w: &mut [f32]) {
    for (k, &err) in (i1..i2).zip(errs) {
        let urow = &u[k * cols + i2..(k + 1) * cols];
        for (wj, uj) in w[i2..].iter_mut().zip(urow) {
            *wj -= err * uj;
        }
    }
}

/// The rows' codes, scales and biases in [`QuantMatrix`] layout.
fn pack(
    scheme: Scheme,
    rows: usize,
    cols: usize,
    global: f32,
    out: Vec<RowOut>,
) -> Result<QuantMatrix<'static>, QuantError> {
    let format = scheme.format();
    let row_bytes = scheme.row_code_bytes(cols);
    let bb = block_bytes(format.bits());
    let mut codes = vec![0u8; rows * row_bytes];
    let mut scales = Vec::new();
    let mut biases = Vec::new();
    for (r, row) in out.iter().enumerate() {
        for p in &row.params {
            scales.extend_from_slice(&p.scale_bytes[..format.scale_type().bytes()]);
            if format.has_bias() {
                biases.extend_from_slice(&f16::from_f32(p.bias).to_le_bytes());
            }
        }
        let dst = &mut codes[r * row_bytes..(r + 1) * row_bytes];
        for (b, block) in row.codes.chunks_exact(BLOCK).enumerate() {
            pack_block(
                format.bits(),
                block.try_into().expect("BLOCK codes"),
                &mut dst[b * bb..],
            );
        }
    }
    QuantMatrix::from_vecs(scheme, (rows, cols), codes, scales, biases, global)
}

#[cfg(test)]
mod tests;
