//! `y = x W^T` for a 2:4 sparse `W` ([`SparseMatrix`]), reading only the kept values.
//!
//! Each task decodes a row's kept values (half the weights) and their columns once, then
//! multiplies them with every activation row: for one token a gather-dot over the kept
//! columns; for several, activations are transposed to `(k, m)` first so that each kept value
//! scales one contiguous row of `m` activations (an axpy the compiler vectorizes on any ISA).
//! Activations stay f32: the 2:4 path has no int8 kernel yet, and it skips half the products.
//! The axpy is one body compiled twice: for any x86-64 (SSE2), and with AVX2 + FMA enabled
//! (chosen at run time by [`Isa`]), where the compiler vectorizes it 8 wide with fused
//! multiply-adds.

use marlin_core::CoreError;
use marlin_quant::codec::{e2m1_decode, e4m3_decode};
use marlin_quant::layout::{block_bytes, unpack_block};
use marlin_quant::{BLOCK, Format, SparseMatrix};
use rayon::prelude::*;

use crate::Isa;

/// Rows of W per task.
const ROWS_PER_TASK: usize = 16;

/// Token count from which transposing the activations pays off.
const TRANSPOSE_FROM: usize = 4;

/// `y (m, n) = x (m, k) · W (n, k)^T`.
// x (m, k), w (n, k) -> y (m, n)
pub fn sparse_matmul(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &SparseMatrix<'_>,
    y: &mut [f32],
) -> Result<(), CoreError> {
    const OP: &str = "sparse_matmul";
    let (n, k) = (w.rows(), w.cols());
    CoreError::check_rows(OP, m, k, x.len())?;
    CoreError::check_len(OP, "y", m * n, y.len())?;
    let xt = (m >= TRANSPOSE_FROM).then(|| transpose(x, m, k));
    // Computed transposed, (n, m), so that each task owns a contiguous slice.
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(t, out)| {
            let mut row = KeptRow::new(w);
            for (i, yr) in out.chunks_exact_mut(m).enumerate() {
                let r = t * ROWS_PER_TASK + i;
                match &xt {
                    Some(xt) => {
                        row.decode(w, r);
                        row.axpy(isa, xt, m, yr);
                    }
                    None => row.dots(w, r, x, yr),
                }
            }
        });
    for (r, col) in yt.chunks_exact(m).enumerate() {
        for (t, &v) in col.iter().enumerate() {
            y[t * n + r] = v;
        }
    }
    Ok(())
}

/// One row's kept values and the columns of W they sit in (padding dropped).
struct KeptRow {
    /// `value(q) = scale * lut[q] + bias` for every format ([`code_values`]).
    lut: [f32; 256],
    codes: Vec<u8>,
    /// One token's activations padded to whole quads (the one-token path).
    xpad: Vec<f32>,
    values: Vec<f32>,
    columns: Vec<u32>,
}

impl KeptRow {
    fn new(w: &SparseMatrix<'_>) -> Self {
        KeptRow {
            lut: code_values(w.kept().format()),
            codes: vec![0; w.kept().padded_cols()],
            xpad: Vec::new(),
            values: Vec::with_capacity(w.kept().cols()),
            columns: Vec::with_capacity(w.kept().cols()),
        }
    }

    /// Row `r`'s kept values and their columns: codes unpacked block by block, then values
    /// group by group with one scale and bias lookup each (the spec,
    /// `QuantMatrix::dequantize_row`, decodes the scale per weight, which at one token costs
    /// far more than the product itself).
    fn decode(&mut self, w: &SparseMatrix<'_>, r: usize) {
        let kept = w.kept();
        let (bits, gl, n) = (kept.format().bits(), kept.group_len(), kept.cols());
        let packed = kept.row_codes(r).chunks_exact(block_bytes(bits));
        for (chunk, out) in packed.zip(self.codes.chunks_exact_mut(BLOCK)) {
            unpack_block(bits, chunk, out.try_into().expect("BLOCK codes"));
        }
        self.values.resize(n, 0.0);
        for (g, (vals, codes)) in self
            .values
            .chunks_mut(gl)
            .zip(self.codes.chunks(gl))
            .enumerate()
        {
            let (s, b) = (kept.scale(r, g), kept.bias(r, g));
            for (v, &q) in vals.iter_mut().zip(codes) {
                *v = s * self.lut[q as usize] + b;
            }
        }
        let positions = w.row_positions(r);
        self.columns.clear();
        self.columns.extend((0..n).map(|j| {
            // Quad j / 2 starts at column 4 * (j / 2); 2 bits of position per kept value.
            (4 * (j / 2)) as u32 + ((positions[j / 4] >> (2 * (j % 4))) & 3) as u32
        }));
        // Only the last quad can point past K (padding), and its positions increase: drop
        // from the end.
        while self.columns.last().is_some_and(|&c| c as usize >= w.cols()) {
            self.columns.pop();
            self.values.pop();
        }
    }

    /// `yr[t] = sum_j v_j x[t, c_j]` for each of a few tokens, fused with decoding row `r`:
    /// per group, `s * sum lut[q_j] x[c_j] + b * sum x[c_j]`, so a token costs one pass over the
    /// kept codes and no decoded row is written.
    // x (m, k) -> yr (m)
    fn dots(&mut self, w: &SparseMatrix<'_>, r: usize, x: &[f32], yr: &mut [f32]) {
        let kept = w.kept();
        let (bits, gl, n, k) = (
            kept.format().bits(),
            kept.group_len(),
            kept.cols(),
            w.cols(),
        );
        let packed = kept.row_codes(r).chunks_exact(block_bytes(bits));
        for (chunk, out) in packed.zip(self.codes.chunks_exact_mut(BLOCK)) {
            unpack_block(bits, chunk, out.try_into().expect("BLOCK codes"));
        }
        let positions = w.row_positions(r);
        // x padded with zeros to whole quads: a kept value in the last quad's padding then
        // multiplies 0, with no branch in the loop.
        self.xpad.resize(2 * n, 0.0);
        for (t, out) in yr.iter_mut().enumerate() {
            self.xpad[..k].copy_from_slice(&x[t * k..(t + 1) * k]);
            self.xpad[k..].fill(0.0);
            let mut y = 0f32;
            // Groups hold whole quads (a group is at least 16 kept values, a quad 2).
            for (g, codes) in self.codes[..n].chunks(gl).enumerate() {
                // Two accumulators per sum, one per kept value of the quad: independent add
                // chains instead of one (the loop is bound by add latency, not by loads).
                let (mut acc, mut sum) = ([0f32; 2], [0f32; 2]);
                for (p, pair) in codes.chunks_exact(2).enumerate() {
                    let quad = g * gl / 2 + p;
                    // The quad's two positions: 4 bits of byte quad / 2.
                    let bits = positions[quad / 2] >> (4 * (quad % 2));
                    let base = 4 * quad;
                    let x0 = self.xpad[base + (bits & 3) as usize];
                    let x1 = self.xpad[base + ((bits >> 2) & 3) as usize];
                    acc[0] += self.lut[pair[0] as usize] * x0;
                    acc[1] += self.lut[pair[1] as usize] * x1;
                    sum[0] += x0;
                    sum[1] += x1;
                }
                y += kept.scale(r, g) * (acc[0] + acc[1]) + kept.bias(r, g) * (sum[0] + sum[1]);
            }
            *out = y;
        }
    }

    /// `yr = sum_j v_j xt[c_j, :]` over the kept values.
    // xt (k, m) -> yr (m)
    fn axpy(&self, isa: Isa, xt: &[f32], m: usize, yr: &mut [f32]) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an Isa other than Scalar exists only where AVX2 and FMA are (Isa::new).
            Isa::Avx2 | Isa::Avx512Vnni => unsafe {
                axpy_fma(&self.values, &self.columns, xt, m, yr)
            },
            _ => axpy_body::<false>(&self.values, &self.columns, xt, m, yr),
        }
    }
}

/// [`axpy_body`] with AVX2 and FMA enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_fma(values: &[f32], columns: &[u32], xt: &[f32], m: usize, yr: &mut [f32]) {
    axpy_body::<true>(values, columns, xt, m, yr)
}

/// `yr = sum_j values_j xt[columns_j, :]`; `FMA` only where the instruction exists (elsewhere
/// `mul_add` is a slow library call).
#[inline(always)]
fn axpy_body<const FMA: bool>(
    values: &[f32],
    columns: &[u32],
    xt: &[f32],
    m: usize,
    yr: &mut [f32],
) {
    yr.fill(0.0);
    for (&v, &c) in values.iter().zip(columns) {
        let xc = &xt[c as usize * m..(c as usize + 1) * m];
        for (o, &xv) in yr.iter_mut().zip(xc) {
            *o = if FMA { v.mul_add(xv, *o) } else { *o + v * xv };
        }
    }
}

/// `lut[q]` such that the value of code `q` is `scale * lut[q] + bias` (`docs/formats.md`).
fn code_values(format: Format) -> [f32; 256] {
    std::array::from_fn(|q| {
        let q = q as u8;
        match format {
            Format::Int4 => q as f32 - 8.0,
            Format::Int4Affine | Format::Int3 | Format::Int2 => q as f32,
            Format::Int8 => (q as i8) as f32,
            Format::Fp4 | Format::Mxfp4 | Format::Nvfp4 => e2m1_decode(q & 15),
            Format::Fp8 => e4m3_decode(q),
        }
    })
}

// x (m, k) -> (k, m)
fn transpose(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let mut xt = vec![0f32; k * m];
    for (t, row) in x.chunks_exact(k).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            xt[c * m + t] = v;
        }
    }
    xt
}

#[cfg(test)]
mod tests {
    use super::*;
    use marlin_quant::{Format, Group, Scheme};
    use marlin_testkit::rng::gaussian;

    /// The f64 product of x with the spec's dequantized W.
    fn reference(x: &[f32], m: usize, w: &SparseMatrix<'_>) -> Vec<f32> {
        let (n, k) = (w.rows(), w.cols());
        let d = w.dequantize();
        let mut y = vec![0f32; m * n];
        for t in 0..m {
            for r in 0..n {
                let s: f64 = (0..k)
                    .map(|c| x[t * k + c] as f64 * d[r * k + c] as f64)
                    .sum();
                y[t * n + r] = s as f32;
            }
        }
        y
    }

    #[test]
    fn matches_the_spec_for_every_format_and_odd_shapes() {
        for format in Format::ALL {
            let group = match format {
                Format::Nvfp4 => Group::Size(16),
                Format::Mxfp4 => Group::Size(32),
                _ => Group::Size(64),
            };
            let scheme = Scheme::new(format, group).unwrap();
            for (n, k) in [(1, 1), (3, 67), (17, 130), (33, 576)] {
                let w = gaussian(n as u64, n * k, 0.1);
                let s = SparseMatrix::prune_rtn(&w, n, k, scheme).unwrap();
                for (m, isa) in [1, 3, 4, 9]
                    .into_iter()
                    .flat_map(|m| Isa::available().into_iter().map(move |i| (m, i)))
                {
                    let x = gaussian(7 + m as u64, m * k, 1.0);
                    let mut y = vec![f32::NAN; m * n];
                    sparse_matmul(isa, &x, m, &s, &mut y).unwrap();
                    let want = reference(&x, m, &s);
                    for (a, b) in y.iter().zip(&want) {
                        // f32 sums of at most 288 products against f64: 1e-4 relative to the
                        // row's scale is far above rounding and far below any layout error.
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{scheme} {n}x{k} m {m}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let s = SparseMatrix::prune_rtn(&[1.0; 8], 2, 4, Scheme::of(Format::Int8)).unwrap();
        let mut y = vec![0.0; 2];
        assert!(sparse_matmul(Isa::Scalar, &[1.0; 3], 1, &s, &mut y).is_err());
        assert!(sparse_matmul(Isa::Scalar, &[1.0; 4], 0, &s, &mut y).is_err());
    }
}
