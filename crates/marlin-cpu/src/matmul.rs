//! The fused dequantize + matmul driver.
//!
//! Rows of W are split into tasks spread over rayon threads. Each weight row is read once and
//! multiplied with every activation row while it is in registers or L1: the Marlin property,
//! small batches ride on the same weight traffic.

use marlin_core::CoreError;
use marlin_quant::{QuantMatrix, ScaleType};
use rayon::prelude::*;

use crate::activations::{Q8Planes, Q8Rows};
use crate::blocks::{BlockScheme, Q8Blocks};
use crate::decode::{self, GroupScales};
use crate::kernels::{self, GridRow, NibbleRow, PanelOut};
use crate::panel::{PANEL, Panels};
use crate::{Activations, Isa, Prepared};

/// Rows of W per task: enough to amortise scheduling, few enough to balance threads.
const ROWS_PER_TASK: usize = 16;

/// Weight bytes a panel task should cover at least (unless that leaves a thread idle).
const TASK_BYTES: usize = 64 * 1024;

/// `y (m, n) = x (m, k) · W (n, k)^T`.
// x (m, k), w (n, k) -> y (m, n)
pub(crate) fn quant_matmul(
    isa: Isa,
    activations: Activations,
    x: &[f32],
    m: usize,
    prepared: &Prepared<'_>,
    y: &mut [f32],
) -> Result<(), CoreError> {
    const OP: &str = "quant_matmul";
    let (n, k) = (prepared.rows(), prepared.cols());
    CoreError::check_rows(OP, m, k, x.len())?;
    CoreError::check_len(OP, "y", m * n, y.len())?;
    // Int8x2 runs the int8 kernels on two quantized rows per row of x and sums their
    // products: the product is linear in x.
    let split = activations == Activations::Int8x2;
    let int8 = activations != Activations::F32;
    let quantize = |k_pad: usize, group_len: usize| {
        if split {
            Q8Rows::quantize_split(x, m, k, k_pad, group_len)
        } else {
            Q8Rows::quantize(x, m, k, k_pad, group_len)
        }
    };
    let w = match prepared {
        Prepared::Panels(panels) if int8 => {
            let format = panels.format();
            let scheme = BlockScheme {
                split,
                zero: decode::grid_zero(format),
                lane_mul: decode::grid_step(format),
            };
            let xq = Q8Blocks::quantize(x, m, k, panels.padded_cols(), scheme);
            panel_matmul(isa, panels, &xq, m, y);
            return Ok(());
        }
        Prepared::Panels(_) => {
            return Err(CoreError::Unsupported {
                backend: format!("cpu-{isa}-f32"),
                what: "a matrix prepared in panels for int8 activations".into(),
                hint: "prepare it with the backend that multiplies it",
            });
        }
        Prepared::Rows(w) => w,
    };
    let (k_pad, group_len, format) = (w.padded_cols(), w.group_len(), w.format());
    let nibble_width = kernels::nibble_width(isa).filter(|_| format.bits() == 4 && group_len >= 32);
    let on_grid = decode::on_grid(format);
    // Rows of activations the kernels see: 2m when split.
    let mq = if int8 && (nibble_width.is_some() || on_grid) && split {
        2 * m
    } else {
        m
    };
    // Computed transposed, (n, mq), so that each task owns a contiguous slice.
    let mut yt = vec![0f32; n * mq];
    let tasks = yt.par_chunks_mut(ROWS_PER_TASK * mq).enumerate();
    match nibble_width {
        Some(width) if int8 => {
            let lane_mul = decode::grid_step(format);
            let xq =
                quantize(k_pad, group_len).into_planes(width, decode::grid_zero(format), lane_mul);
            tasks.for_each(|(t, out)| nibble_rows(isa, w, &xq, t * ROWS_PER_TASK, out));
        }
        _ if int8 && on_grid => {
            let xq = quantize(k_pad, group_len).with_zero(decode::grid_zero(format));
            tasks.for_each(|(t, out)| grid_rows(isa, w, &xq, t * ROWS_PER_TASK, out));
        }
        _ => {
            let xp = pad_rows(x, m, k, k_pad);
            // Activation sums per weight group, for the M = 1 nibble path's bias terms.
            let group_sums: Vec<f32> = xp[..k_pad]
                .chunks_exact(group_len)
                .map(|g| g.iter().sum())
                .collect();
            let f32x = F32Activations {
                xp: &xp,
                m,
                group_sums: &group_sums,
            };
            tasks.for_each(|(t, out)| f32_rows(isa, w, &f32x, t * ROWS_PER_TASK, out));
        }
    }
    let per = mq / m;
    for (j, col) in yt.chunks_exact(mq).enumerate() {
        for (i, v) in col.chunks_exact(per).enumerate() {
            y[i * n + j] = v.iter().sum();
        }
    }
    Ok(())
}

/// `y (m, n) = x · W^T` with W in panels, from x quantized to `xq` (m rows, or 2m split rows
/// whose products are summed in pairs): one task per run of panels, each writing its panels'
/// columns of y.
// xq (m or 2m, k), w (n, k) -> y (m, n)
fn panel_matmul(isa: Isa, w: &Panels, xq: &Q8Blocks, m: usize, y: &mut [f32]) {
    let n = w.rows();
    // The kernels write every output row of xq into y: they must be y's m rows.
    assert_eq!(if xq.pairs { xq.m / 2 } else { xq.m }, m);
    assert_eq!(y.len(), m * n);
    // Tasks of several panels: a small layer's panel is well under a microsecond of work,
    // less than scheduling it costs.
    let panel_bytes = w.padded_cols() * PANEL * w.format().bits() as usize / 8;
    let per_task =
        (TASK_BYTES / panel_bytes).clamp(1, w.panels().div_ceil(rayon::current_num_threads()));
    let tasks = w.panels().div_ceil(per_task);
    let y_at = ColumnsOf(y.as_mut_ptr());
    (0..tasks).into_par_iter().for_each(|t| {
        for p in t * per_task..((t + 1) * per_task).min(w.panels()) {
            let out = PanelOut {
                ptr: y_at.at(p * PANEL),
                stride: n,
                cols: PANEL.min(n - p * PANEL),
            };
            // SAFETY: output row r's columns 16p..16p + cols lie inside y (r < m, 16p + cols
            // <= n), and only the task that owns panel p writes them.
            unsafe { kernels::panel_dot(isa, &w.view(p), xq, out) };
        }
    });
}

/// The output of [`panel_matmul`], shared by tasks that write disjoint columns of it.
struct ColumnsOf(*mut f32);

// SAFETY: tasks write disjoint elements (see `panel_matmul`).
unsafe impl Sync for ColumnsOf {}

impl ColumnsOf {
    /// Where element `i` of the output is (not checked: the kernel's caller checks).
    fn at(&self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Rows `first..` of a 4-bit W against int8 activations in nibble-plane order; `out` is
/// (rows, m).
fn nibble_rows(isa: Isa, w: &QuantMatrix<'_>, xq: &Q8Planes, first: usize, out: &mut [f32]) {
    let m = xq.rows.m;
    let lut = decode::lut4(w.format());
    let e8m0 = w.format().scale_type() == ScaleType::E8M0;
    let groups = w.groups_per_row();
    let scale_bytes = groups * w.format().scale_type().bytes();
    let affine = decode::grid_zero(w.format()).is_none();
    let row = |i: usize| {
        let r = first + i;
        NibbleRow {
            packed: w.row_codes(r),
            lut: &lut,
            identity: lut.iter().enumerate().all(|(i, &c)| c as usize == i),
            scales: &w.scales()[r * scale_bytes..(r + 1) * scale_bytes],
            e8m0,
            biases: if affine {
                &w.biases()[r * groups * 2..(r + 1) * groups * 2]
            } else {
                &[]
            },
            group_len: w.group_len(),
        }
    };
    for (i, o) in out.chunks_exact_mut(m).enumerate() {
        kernels::nibble_dot(isa, &row(i), xq, o);
    }
}

/// Rows `first..` of W on the integer grid against int8 activations; `out` is (rows, m).
fn grid_rows(isa: Isa, w: &QuantMatrix<'_>, xq: &Q8Rows, first: usize, out: &mut [f32]) {
    let (m, groups) = (xq.m, w.groups_per_row());
    let scales = GroupScales::of_rows(w, first, out.len() / m);
    let mut buffer = vec![0u8; xq.k_pad];
    // INT8 rows are used as stored (see `GridRow::signed`); narrower codes are unpacked.
    let signed = w.format().bits() == 8;
    for (i, o) in out.chunks_exact_mut(m).enumerate() {
        let codes = if signed {
            w.row_codes(first + i)
        } else {
            decode::grid_codes(isa, w, first + i, &mut buffer);
            &buffer
        };
        let (gs, gb) = scales.row(i);
        let row = GridRow {
            codes,
            gs,
            group_len: w.group_len(),
            signed,
        };
        kernels::grid_dot(isa, &row, xq, o);
        // Affine formats' bias part: sum over groups of bias * (sum of the group's activations).
        if xq.lane_init.is_empty() {
            for (r, v) in o.iter_mut().enumerate() {
                *v += kernels::f32_dot(isa, &gb[..groups], xq.group_sums(r));
            }
        }
    }
}

/// f32 activations for [`f32_rows`].
struct F32Activations<'a> {
    /// (m, k_pad), zero past K.
    xp: &'a [f32],
    m: usize,
    /// The first row's sums per weight group.
    group_sums: &'a [f32],
}

/// Rows `first..` of W decoded to f32 against f32 activations; `out` is (rows, m). One
/// activation row takes a dot product per weight row; more go through `gemm`.
fn f32_rows(isa: Isa, w: &QuantMatrix<'_>, x: &F32Activations<'_>, first: usize, out: &mut [f32]) {
    let (xp, m, k_pad) = (x.xp, x.m, w.padded_cols());
    let rows = out.len() / m;
    let scales = GroupScales::of_rows(w, first, rows);
    if m == 1 && kernels::has_nibble_f32_dot(isa) && w.format().bits() == 4 && w.group_len() >= 32 {
        // One activation row: multiply the stored nibbles in registers, no decoded copy.
        let group_sums = x.group_sums;
        let lut = decode::lut4(w.format());
        for (i, o) in out.iter_mut().enumerate() {
            let (gs, gb) = scales.row(i);
            let row = kernels::NibbleF32Row {
                packed: w.row_codes(first + i),
                lut: &lut,
                gs,
                gb,
            };
            *o = kernels::nibble_f32_dot(isa, &row, w.group_len(), xp, group_sums);
        }
        return;
    }
    let mut codes = vec![0u8; k_pad];
    let mut panel = vec![0f32; rows * k_pad];
    for (i, values) in panel.chunks_exact_mut(k_pad).enumerate() {
        decode::f32_row(isa, w, first + i, scales.row(i), &mut codes, values);
    }
    if m == 1 {
        for (o, values) in out.iter_mut().zip(panel.chunks_exact(k_pad)) {
            *o = kernels::f32_dot(isa, values, xp);
        }
    } else {
        crate::dense::gemm_nt(out, &panel, rows, xp, m, k_pad, false);
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
