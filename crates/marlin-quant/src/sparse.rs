//! 2:4 structured sparsity over any format: in every run of 4 consecutive weights along K
//! (a "quad") two are zero, and only the other two are stored.
//!
//! A [`SparseMatrix`] `W (rows = N, cols = K)` is a [`QuantMatrix`] of the kept values,
//! `(N, 2 * ceil(K / 4))`, in the chosen scheme (so group scales cover `group` kept values, that
//! is `2 * group` columns of W), plus 2 bits per kept value saying where in its quad it sits.
//! `docs/formats.md` ("2:4 sparsity") specifies the bytes; [`SparseMatrix::dequantize_row`] is
//! the specification every kernel is tested against.

use std::borrow::Cow;

use crate::quantize::check_input;
use crate::{QuantError, QuantMatrix, Scheme, quantize};

/// Weights per quad, and kept weights per quad.
const QUAD: usize = 4;
const KEPT: usize = 2;

/// Kept values per row of a `cols`-wide matrix: two per quad, the last quad padded with zeros.
pub const fn kept_cols(cols: usize) -> usize {
    cols.div_ceil(QUAD) * KEPT
}

/// Position bytes per row: 2 bits per kept value, 4 kept values (2 quads) per byte.
pub const fn position_row_bytes(cols: usize) -> usize {
    kept_cols(cols).div_ceil(4)
}

/// A 2:4 sparse matrix: the kept values in a quantized format and their positions.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseMatrix<'a> {
    /// `(rows, kept_cols(cols))`: kept value `j` of a row belongs to quad `j / 2`.
    kept: QuantMatrix<'a>,
    /// `rows * position_row_bytes(cols)` bytes: kept value `j`'s position in its quad (0..4) is
    /// bits `2 * (j % 4)..2 * (j % 4) + 2` of byte `j / 4` of its row.
    positions: Cow<'a, [u8]>,
    cols: usize,
}

impl<'a> SparseMatrix<'a> {
    /// Assembles a matrix from the kept values and their positions, checking that `kept` is
    /// `(rows, kept_cols(cols))`, that `positions` has the right length, and that each quad's
    /// two positions are distinct and increasing (so no column is written twice).
    pub fn from_parts(
        kept: QuantMatrix<'a>,
        positions: Cow<'a, [u8]>,
        cols: usize,
    ) -> Result<Self, QuantError> {
        let rows = kept.rows();
        if cols == 0 || kept.cols() != kept_cols(cols) {
            return Err(QuantError::SparseShape {
                cols,
                expected: kept_cols(cols),
                got: kept.cols(),
            });
        }
        let expected = rows
            .checked_mul(position_row_bytes(cols))
            .ok_or(QuantError::TooLarge { rows, cols })?;
        if positions.len() != expected {
            return Err(QuantError::PartLength {
                part: "positions",
                scheme: format!("2:4 {}", kept.scheme()),
                rows,
                cols,
                expected,
                got: positions.len(),
            });
        }
        let quads = cols.div_ceil(QUAD);
        for (r, row) in positions.chunks_exact(position_row_bytes(cols)).enumerate() {
            for q in 0..quads {
                let (a, b) = (position(row, 2 * q), position(row, 2 * q + 1));
                if a >= b {
                    return Err(QuantError::SparsePositions { row: r, quad: q });
                }
            }
        }
        Ok(SparseMatrix {
            kept,
            positions,
            cols,
        })
    }

    /// Prunes a row-major `rows x cols` matrix to 2:4 by magnitude (in each quad the two
    /// weights of largest magnitude stay; the earlier one on a tie) and rounds the kept values
    /// to nearest in `scheme`.
    // weights (rows, cols) -> SparseMatrix (rows, cols)
    pub fn prune_rtn(
        weights: &[f32],
        rows: usize,
        cols: usize,
        scheme: Scheme,
    ) -> Result<SparseMatrix<'static>, QuantError> {
        let (kept, positions) = prune_magnitude(weights, rows, cols)?;
        let kept = quantize(&kept, rows, kept_cols(cols), scheme)?;
        SparseMatrix::from_parts(kept, Cow::Owned(positions), cols)
    }

    /// The rows of `parts` one after another (q, k and v run as one product). `None` when they
    /// differ in scheme or columns.
    pub fn concat_rows(parts: &[&SparseMatrix<'_>]) -> Option<SparseMatrix<'static>> {
        let first = parts.first()?;
        if parts.iter().any(|p| p.cols != first.cols) {
            return None;
        }
        let kept: Vec<&QuantMatrix<'_>> = parts.iter().map(|p| &p.kept).collect();
        let kept = QuantMatrix::concat_rows(&kept)?;
        let positions = parts.iter().flat_map(|p| p.positions.iter().copied());
        Some(SparseMatrix {
            kept,
            positions: Cow::Owned(positions.collect()),
            cols: first.cols,
        })
    }

    pub fn into_owned(self) -> SparseMatrix<'static> {
        SparseMatrix {
            kept: self.kept.into_owned(),
            positions: Cow::Owned(self.positions.into_owned()),
            cols: self.cols,
        }
    }

    /// The scheme of the kept values.
    pub fn scheme(&self) -> Scheme {
        self.kept.scheme()
    }
    pub fn rows(&self) -> usize {
        self.kept.rows()
    }
    /// K, the logical width (pruned weights included).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The kept values, `(rows, kept_cols(cols))`.
    pub fn kept(&self) -> &QuantMatrix<'a> {
        &self.kept
    }
    pub fn positions(&self) -> &[u8] {
        &self.positions
    }

    /// Position bytes of one row.
    pub fn row_positions(&self, row: usize) -> &[u8] {
        let n = position_row_bytes(self.cols);
        &self.positions[row * n..(row + 1) * n]
    }

    /// Column of W that kept value `j` of `row` sits in; past `cols` for the padding of the
    /// last quad.
    pub fn column(&self, row: usize, j: usize) -> usize {
        QUAD * (j / KEPT) + position(self.row_positions(row), j) as usize
    }

    /// Bytes a kernel reads to use the whole matrix: the kept values' parts and the positions.
    pub fn storage_bytes(&self) -> usize {
        self.kept.storage_bytes() + self.positions.len()
    }

    /// The specification: row `row` of W into `out[..cols]`, pruned weights 0.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let mut kept = vec![0f32; self.kept.cols()];
        self.kept.dequantize_row(row, &mut kept);
        out[..self.cols].fill(0.0);
        for (j, &v) in kept.iter().enumerate() {
            let c = self.column(row, j);
            if c < self.cols {
                out[c] = v;
            }
        }
    }

    /// All weights as a row-major `rows * cols` f32 vector.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows() * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }
}

/// Position (0..4) of kept value `j` from a row's position bytes.
fn position(row: &[u8], j: usize) -> u8 {
    (row[j / 4] >> (2 * (j % 4))) & 3
}

/// The 2:4 magnitude mask of a row-major `rows x cols` matrix: the kept values
/// `(rows, kept_cols(cols))` and their packed positions. Padding columns count as zeros.
// weights (rows, cols) -> kept (rows, kept_cols), positions (rows, position_row_bytes)
pub fn prune_magnitude(
    weights: &[f32],
    rows: usize,
    cols: usize,
) -> Result<(Vec<f32>, Vec<u8>), QuantError> {
    check_input(weights, rows, cols)?;
    let mask = |_: usize, row: &[f32], quad: usize| {
        let at = |i: usize| row.get(QUAD * quad + i).map_or(0.0, |v| v.abs());
        keep_two(std::array::from_fn(at))
    };
    Ok(gather(weights, rows, cols, mask))
}

/// The two positions of a quad to keep: the largest scores, the earlier one on a tie,
/// returned in increasing order.
pub(crate) fn keep_two(score: [f32; QUAD]) -> [u8; KEPT] {
    let mut idx = [0u8, 1, 2, 3];
    // Stable: equal scores keep their order, so the earlier position wins.
    idx.sort_by(|&a, &b| score[b as usize].total_cmp(&score[a as usize]));
    let (a, b) = (idx[0], idx[1]);
    [a.min(b), a.max(b)]
}

/// Kept values and packed positions from a per-(row, quad) choice of two positions.
pub(crate) fn gather(
    weights: &[f32],
    rows: usize,
    cols: usize,
    choose: impl Fn(usize, &[f32], usize) -> [u8; KEPT],
) -> (Vec<f32>, Vec<u8>) {
    let (kc, pb) = (kept_cols(cols), position_row_bytes(cols));
    let mut kept = vec![0f32; rows * kc];
    let mut positions = vec![0u8; rows * pb];
    for r in 0..rows {
        let row = &weights[r * cols..(r + 1) * cols];
        for quad in 0..cols.div_ceil(QUAD) {
            for (i, p) in choose(r, row, quad).into_iter().enumerate() {
                let j = KEPT * quad + i;
                kept[r * kc + j] = row.get(QUAD * quad + p as usize).copied().unwrap_or(0.0);
                positions[r * pb + j / 4] |= p << (2 * (j % 4));
            }
        }
    }
    (kept, positions)
}

/// Packed positions from a keep-mask (`rows * cols`, true where kept) that holds exactly two
/// kept weights per quad (padding counted as pruned unless needed); the kept values with it.
// weights (rows, cols), mask (rows, cols) -> kept (rows, kept_cols), positions
pub(crate) fn gather_mask(
    weights: &[f32],
    mask: &[bool],
    rows: usize,
    cols: usize,
) -> (Vec<f32>, Vec<u8>) {
    let choose = |r: usize, _: &[f32], quad: usize| {
        let mut score = [0f32; QUAD];
        for (i, s) in score.iter_mut().enumerate() {
            let c = QUAD * quad + i;
            // Real columns the mask keeps first, then real pruned ones, then padding.
            *s = match (c < cols).then(|| mask[r * cols + c]) {
                Some(true) => 2.0,
                Some(false) => 1.0,
                None => 0.0,
            };
        }
        keep_two(score)
    };
    gather(weights, rows, cols, choose)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

    #[test]
    fn keeps_the_two_largest_of_each_quad() {
        assert_eq!(keep_two([0.1, 3.0, -0.0, 2.0]), [1, 3]);
        assert_eq!(keep_two([1.0, 1.0, 1.0, 1.0]), [0, 1]);
        assert_eq!(keep_two([0.0, 0.0, 5.0, 0.0]), [0, 2]);
    }

    #[test]
    fn magnitude_pruning_dequantizes_to_the_kept_weights() {
        let w = [0.5, -2.0, 0.25, 1.0, 3.0, 0.0, -0.1, 0.2, 7.0];
        let s = SparseMatrix::prune_rtn(&w, 1, 9, Scheme::of(Format::Int8)).unwrap();
        let d = s.dequantize();
        let want = [0.0, -2.0, 0.0, 1.0, 3.0, 0.0, 0.0, 0.2, 7.0];
        for (a, b) in d.iter().zip(want) {
            assert!((a - b).abs() < 0.03, "{d:?}");
        }
        assert_eq!(s.kept().cols(), 6);
        assert_eq!(s.positions().len(), 2);
    }

    #[test]
    fn repeated_or_decreasing_positions_are_refused() {
        let kept = quantize(&[1.0, 2.0], 1, 2, Scheme::of(Format::Int8)).unwrap();
        for bad in [0b0101u8, 0b0001, 0b1111] {
            let e = SparseMatrix::from_parts(kept.clone(), Cow::Owned(vec![bad]), 4);
            assert_eq!(
                e.unwrap_err(),
                QuantError::SparsePositions { row: 0, quad: 0 }
            );
        }
        let ok = SparseMatrix::from_parts(kept, Cow::Owned(vec![0b1101]), 4).unwrap();
        assert_eq!((ok.column(0, 0), ok.column(0, 1)), (1, 3));
    }

    #[test]
    fn mask_gathering_follows_the_mask() {
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let mask = [true, false, false, true, false, true, true, false];
        let (kept, pos) = gather_mask(&w, &mask, 2, 4);
        assert_eq!(kept, [1.0, 4.0, 6.0, 7.0]);
        assert_eq!(pos, [0b1100, 0b1001]);
    }
}
