//! The fused dequantize + matmul driver.
//!
//! Rows of W are split into tasks spread over rayon threads. A task decodes what it needs of its
//! rows once, then walks K in slices small enough that the slice of activations stays in L1
//! while every row of the task and every activation row pass over it.

use marlin_core::CoreError;
use marlin_quant::QuantMatrix;
use rayon::prelude::*;

use crate::activations::{Q8Planes, Q8Rows};
use crate::decode::{self, GroupScales};
use crate::kernels::{self, GridRow, NibbleRow};
use crate::{Activations, Isa};

/// Rows of W per task: enough to amortise a slice of activations, few enough to balance
/// threads.
const ROWS_PER_TASK: usize = 16;

/// Bytes of activations (values and their per-lane data) one K slice may hold: half of a
/// 48 KiB L1, leaving room for the weights streaming past.
const SLICE_BYTES: usize = 24 * 1024;

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
    // Computed transposed, (n, m), so that each task owns a contiguous slice.
    let mut yt = vec![0f32; n * m];
    let tasks = yt.par_chunks_mut(ROWS_PER_TASK * m).enumerate();
    let (k_pad, group_len, format) = (w.padded_cols(), w.group_len(), w.format());
    let nibble_width = kernels::nibble_width(isa).filter(|_| format.bits() == 4 && group_len >= 32);
    match activations {
        Activations::Int8 if nibble_width.is_some() => {
            let width = nibble_width.expect("checked");
            let xq = Q8Rows::quantize(x, m, k, k_pad, group_len)
                .into_planes(width, decode::grid_zero(format));
            tasks.for_each(|(t, out)| nibble_rows(isa, w, &xq, t * ROWS_PER_TASK, out));
        }
        Activations::Int8 if decode::on_grid(format) => {
            let xq =
                Q8Rows::quantize(x, m, k, k_pad, group_len).with_zero(decode::grid_zero(format));
            tasks.for_each(|(t, out)| grid_rows(isa, w, &xq, t * ROWS_PER_TASK, out));
        }
        _ => {
            let xp = pad_rows(x, m, k, k_pad);
            tasks.for_each(|(t, out)| f32_rows(isa, w, &xp, m, t * ROWS_PER_TASK, out));
        }
    }
    for (j, col) in yt.chunks_exact(m).enumerate() {
        for (i, v) in col.iter().enumerate() {
            y[i * n + j] = *v;
        }
    }
    Ok(())
}

/// How many units of `unit_bytes` activation bytes (per activation row) fit in one slice.
fn slice_units(m: usize, unit_bytes: usize) -> usize {
    (SLICE_BYTES / (m * unit_bytes)).max(1)
}

/// Rows `first..` of a 4-bit W against int8 activations in nibble-plane order; `out` is
/// (rows, m).
fn nibble_rows(isa: Isa, w: &QuantMatrix<'_>, xq: &Q8Planes, first: usize, out: &mut [f32]) {
    let m = xq.rows.m;
    let scales = task_scales(w, first, out.len() / m);
    let lut = decode::lut4(w.format());
    let row = |i: usize| NibbleRow {
        packed: w.row_codes(first + i),
        lut: &lut,
        identity: lut.iter().enumerate().all(|(i, &c)| c as usize == i),
        affine: decode::grid_zero(w.format()).is_none(),
        gs: &scales[i].gs,
        gb: &scales[i].gb,
        group_len: w.group_len(),
    };
    // Per chunk and activation row: the values, one f32 lane scale and one i32 or f32 lane
    // term per 8 values.
    let slice = slice_units(m, xq.width + xq.width);
    for c0 in (0..xq.chunks()).step_by(slice) {
        let chunks = c0..(c0 + slice).min(xq.chunks());
        for (i, o) in out.chunks_exact_mut(m).enumerate() {
            kernels::nibble_dot(isa, &row(i), xq, chunks.clone(), o);
        }
    }
    for (i, o) in out.chunks_exact_mut(m).enumerate() {
        kernels::nibble_tail(&row(i), xq, o);
    }
}

/// Rows `first..` of W on the integer grid against int8 activations; `out` is (rows, m).
fn grid_rows(isa: Isa, w: &QuantMatrix<'_>, xq: &Q8Rows, first: usize, out: &mut [f32]) {
    let (m, k_pad, groups) = (xq.m, xq.k_pad, w.groups_per_row());
    let rows = out.len() / m;
    let scales = task_scales(w, first, rows);
    let mut codes = vec![0u8; rows * k_pad];
    for (i, c) in codes.chunks_exact_mut(k_pad).enumerate() {
        decode::grid_codes(isa, w, first + i, c);
    }
    let wide_codes = decode::max_code(w.format()) > 127;
    let row = |i: usize| GridRow {
        codes: &codes[i * k_pad..(i + 1) * k_pad],
        gs: &scales[i].gs,
        group_len: w.group_len(),
        wide_codes,
    };
    // Per value and activation row: the value, a lane scale and a lane initial value per 4.
    let slice = slice_units(m, 128 * 3) * 128;
    for k0 in (0..k_pad).step_by(slice) {
        for (i, o) in out.chunks_exact_mut(m).enumerate() {
            kernels::grid_dot(isa, &row(i), xq, k0..(k0 + slice).min(k_pad), o);
        }
    }
    // Affine formats' bias part: sum over groups of bias * (sum of the group's activations).
    if xq.lane_init.is_empty() {
        for (i, o) in out.chunks_exact_mut(m).enumerate() {
            for (r, v) in o.iter_mut().enumerate() {
                *v += kernels::f32_dot(isa, &scales[i].gb[..groups], xq.group_sums(r));
            }
        }
    }
}

/// Rows `first..` of W decoded to f32 against f32 activations `xp` (m, k_pad); `out` is
/// (rows, m). One activation row takes a dot product per weight row; more go through `gemm`.
fn f32_rows(isa: Isa, w: &QuantMatrix<'_>, xp: &[f32], m: usize, first: usize, out: &mut [f32]) {
    let k_pad = w.padded_cols();
    let rows = out.len() / m;
    let mut s = GroupScales::new(w);
    let mut codes = vec![0u8; k_pad];
    let mut panel = vec![0f32; rows * k_pad];
    for (i, values) in panel.chunks_exact_mut(k_pad).enumerate() {
        decode::f32_row(isa, w, first + i, &mut s, &mut codes, values);
    }
    if m == 1 {
        for (o, values) in out.iter_mut().zip(panel.chunks_exact(k_pad)) {
            *o = kernels::f32_dot(isa, values, xp);
        }
    } else {
        crate::dense::gemm_nt(out, &panel, rows, xp, m, k_pad, false);
    }
}

/// Grid scales of rows `first..first + rows`.
fn task_scales(w: &QuantMatrix<'_>, first: usize, rows: usize) -> Vec<GroupScales> {
    (first..first + rows)
        .map(|r| {
            let mut s = GroupScales::new(w);
            decode::grid_scales(w, r, &mut s);
            s
        })
        .collect()
}

/// Copies `m` rows of length `k` into rows of length `k_pad`, zero-filled.
fn pad_rows(x: &[f32], m: usize, k: usize, k_pad: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * k_pad];
    for (dst, src) in out.chunks_exact_mut(k_pad).zip(x.chunks_exact(k)) {
        dst[..k].copy_from_slice(src);
    }
    out
}
