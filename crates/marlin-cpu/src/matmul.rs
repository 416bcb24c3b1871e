//! The fused dequantize + matmul driver: rows of W are spread over threads; each thread decodes
//! a row once and multiplies it with every activation row.

use marlin_core::CoreError;
use marlin_quant::QuantMatrix;
use rayon::prelude::*;

use crate::activations::{Q8Planes, Q8Rows};
use crate::decode::{self, RowScratch};
use crate::kernels::{self, GridRow, NibbleRow};
use crate::{Activations, Isa};

/// Rows of W per task: enough to amortise scheduling, few enough to balance two threads.
const ROWS_PER_TASK: usize = 16;

/// `y (m, n) = x (m, k) · W (n, k)^T`.
// x (m, k), w (n, k) -> y (m, n)
pub(crate) fn quant_matmul(
    isa: Isa,
    activations: Activations,
    x: &[f32],
    m: usize,
    w: &QuantMatrix<'_>,
    y: &mut [f32],
) -> Result<(), CoreError> {
    const OP: &str = "quant_matmul";
    let (n, k) = (w.rows(), w.cols());
    if m == 0 {
        return Err(CoreError::Shape {
            op: OP,
            what: "m must be at least 1".into(),
        });
    }
    CoreError::check_len(OP, "x", m * k, x.len())?;
    CoreError::check_len(OP, "y", m * n, y.len())?;
    // Computed transposed, (n, m), so each task owns a contiguous slice.
    let mut yt = vec![0f32; n * m];
    let chunks = yt.par_chunks_mut(ROWS_PER_TASK * m).enumerate();
    let nibble_width =
        kernels::nibble_width(isa).filter(|_| w.format().bits() == 4 && w.group_len() >= 32);
    if let (Activations::Int8, Some(width)) = (activations, nibble_width) {
        let xq = Q8Rows::quantize(x, m, k, w.padded_cols(), w.group_len())
            .into_planes(width, decode::grid_zero(w.format()));
        chunks.for_each(|(t, out)| nibble_rows(isa, w, &xq, t * ROWS_PER_TASK, out));
    } else if activations == Activations::Int8 && decode::on_grid(w.format()) {
        let xq = Q8Rows::quantize(x, m, k, w.padded_cols(), w.group_len())
            .with_zero(decode::grid_zero(w.format()));
        chunks.for_each(|(t, out)| int8_rows(isa, w, &xq, t * ROWS_PER_TASK, out));
    } else {
        let xp = pad_rows(x, m, k, w.padded_cols());
        chunks.for_each(|(t, out)| f32_rows(isa, w, &xp, m, t * ROWS_PER_TASK, out));
    }
    for (j, col) in yt.chunks_exact(m).enumerate() {
        for (i, v) in col.iter().enumerate() {
            y[i * n + j] = *v;
        }
    }
    Ok(())
}

/// Rows `first..` of a 4-bit W against int8 activations in nibble-plane order; `out` is
/// (rows, m).
fn nibble_rows(isa: Isa, w: &QuantMatrix<'_>, xq: &Q8Planes, first: usize, out: &mut [f32]) {
    let mut s = RowScratch::new(w);
    let lut = decode::lut4(w.format());
    let identity = lut.iter().enumerate().all(|(i, &c)| c as usize == i);
    for (i, o) in out.chunks_exact_mut(xq.rows.m).enumerate() {
        decode::grid_scales(w, first + i, &mut s);
        let row = NibbleRow {
            packed: w.row_codes(first + i),
            lut: &lut,
            identity,
            affine: decode::grid_zero(w.format()).is_none(),
            gs: &s.gs,
            gb: &s.gb,
            group_len: w.group_len(),
        };
        kernels::nibble_dot(isa, &row, xq, o);
    }
}

/// Rows `first..` of W against int8 activations; `out` is (rows, m).
fn int8_rows(isa: Isa, w: &QuantMatrix<'_>, xq: &Q8Rows, first: usize, out: &mut [f32]) {
    let mut s = RowScratch::new(w);
    let groups = w.groups_per_row();
    let wide_codes = decode::max_code(w.format()) > 127;
    for (i, o) in out.chunks_exact_mut(xq.m).enumerate() {
        decode::grid_row(isa, w, first + i, &mut s);
        let row = GridRow {
            codes: &s.codes,
            gs: &s.gs,
            group_len: w.group_len(),
            wide_codes,
        };
        kernels::grid_dot(isa, &row, xq, o);
        // Affine formats' bias part: sum over groups of bias * (sum of the group's activations).
        if xq.lane_init.is_empty() {
            for (r, v) in o.iter_mut().enumerate() {
                *v += kernels::f32_dot(isa, &s.gb[..groups], xq.group_sums(r));
            }
        }
    }
}

/// Rows `first..` of W decoded to f32 against f32 activations `xp` (m, k_pad).
fn f32_rows(isa: Isa, w: &QuantMatrix<'_>, xp: &[f32], m: usize, first: usize, out: &mut [f32]) {
    let mut s = RowScratch::new(w);
    let k_pad = w.padded_cols();
    for (i, o) in out.chunks_exact_mut(m).enumerate() {
        decode::f32_row(isa, w, first + i, &mut s);
        for (r, v) in o.iter_mut().enumerate() {
            *v = kernels::f32_dot(isa, &s.values, &xp[r * k_pad..(r + 1) * k_pad]);
        }
    }
}

/// Copies `m` rows of length `k` into rows of length `k_pad`, zero-filled.
fn pad_rows(x: &[f32], m: usize, k: usize, k_pad: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * k_pad];
    for (dst, src) in out.chunks_exact_mut(k_pad).zip(x.chunks_exact(k)) {
        dst[..k].copy_from_slice(src);
    }
    out
}
