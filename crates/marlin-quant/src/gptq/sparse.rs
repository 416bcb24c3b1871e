//! SparseGPT (Frantar & Alistarh, 2023, "SparseGPT: Massive Language Models Can Be Accurately
//! Pruned in One-Shot") at 2:4, joint with GPTQ quantization of the kept weights.
//!
//! Two passes over each row, both GPTQ's column loop under the same `H`:
//! 1. the mask: in the original column order, at the first column of each quad the two weights
//!    with the largest `w² / U_ii²` (the output error pruning each alone would cause, with the
//!    updates of the columns before already applied) are kept; pruned weights become 0 and their
//!    error is spread over the later columns, exactly as SparseGPT does for n:m;
//! 2. GPTQ proper (with act-order if asked) under that fixed mask: pruned weights are "rounded"
//!    to 0, kept ones to their format, every error compensated by the columns not yet done.
//!
//! Pass 1 only chooses the mask; pass 2 re-does the compensation with quantization included,
//! so the kept values are fitted to both the pruning and the rounding errors.

use rayon::prelude::*;

use super::{GptqHessian, inverse_factor, lazy_update};
use crate::sparse::{gather_mask, keep_two};
use crate::{QuantError, Scheme, SparseMatrix};

impl GptqHessian {
    /// Prunes a row-major `rows x cols` matrix to 2:4 with SparseGPT's mask and quantizes the
    /// kept weights with GPTQ under the same Hessian (module docs).
    // weights (rows, cols) -> SparseMatrix (rows, cols)
    pub fn sparsify(
        &self,
        weights: &[f32],
        rows: usize,
        scheme: Scheme,
    ) -> Result<SparseMatrix<'static>, QuantError> {
        if !self.options.static_groups && !self.options.act_order {
            return Err(QuantError::SparseOption {
                what: "groups fitted late (static_groups: false)",
            });
        }
        let mask = self.sparse_mask(weights, rows)?;
        let (kept, _) = self.run(weights, rows, scheme, Some(&mask))?;
        let (_, positions) = gather_mask(weights, &mask, rows, self.cols);
        SparseMatrix::from_parts(kept, positions.into(), self.cols)
    }

    /// SparseGPT's 2:4 keep-mask (`rows * cols`), pass 1 of the module docs.
    // weights (rows, cols) -> mask (rows, cols)
    pub(crate) fn sparse_mask(
        &self,
        weights: &[f32],
        rows: usize,
    ) -> Result<Vec<bool>, QuantError> {
        let cols = self.cols;
        crate::quantize::check_input(weights, rows, cols)?;
        let u = self.natural_factor()?;
        // A multiple of 4 so a quad never straddles a lazy update.
        let block = self.options.block.max(4).div_ceil(4) * 4;
        let mut mask = vec![false; rows * cols];
        weights
            .par_chunks_exact(cols)
            .zip(mask.par_chunks_exact_mut(cols))
            .for_each(|(row, keep)| prune_row(u, cols, block, row, keep));
        Ok(mask)
    }

    /// The factor in the original column order: the quantization order's own without
    /// act-order, else computed once.
    fn natural_factor(&self) -> Result<&[f32], QuantError> {
        if !self.options.act_order {
            return Ok(&self.u);
        }
        if self.natural_u.get().is_none() {
            let order: Vec<usize> = (0..self.cols).collect();
            let u = inverse_factor(&self.h, self.cols, &order, self.options.damp)?;
            // Another thread may have set it meanwhile: both computed the same factor.
            let _ = self.natural_u.set(u);
        }
        Ok(self.natural_u.get().expect("set above"))
    }
}

/// Pass 1 on one row: fills `keep` (cols) with two kept columns per quad.
fn prune_row(u: &[f32], cols: usize, block: usize, row: &[f32], keep: &mut [bool]) {
    let mut w = row.to_vec();
    let mut errs = vec![0f32; block];
    for i1 in (0..cols).step_by(block) {
        let i2 = (i1 + block).min(cols);
        for i in i1..i2 {
            if i % 4 == 0 {
                // Padding past the last column scores below any real weight.
                let score = |k: usize| match i + k {
                    c if c < cols => (w[c] / u[c * cols + c]).powi(2),
                    _ => -1.0,
                };
                for p in keep_two(std::array::from_fn(score)) {
                    if let Some(k) = keep.get_mut(i + p as usize) {
                        *k = true;
                    }
                }
            }
            let q = if keep[i] { w[i] } else { 0.0 };
            let urow = &u[i * cols..(i + 1) * cols];
            let err = (w[i] - q) / urow[i];
            for (wj, uj) in w[i + 1..i2].iter_mut().zip(&urow[i + 1..i2]) {
                *wj -= err * uj;
            }
            errs[i - i1] = err;
        }
        lazy_update(u, cols, i1, i2, &errs, &mut w);
    }
}
