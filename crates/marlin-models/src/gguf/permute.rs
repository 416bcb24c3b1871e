//! Undoing llama.cpp's row permutation of q_proj and k_proj.
//!
//! For the `llama` architecture, llama.cpp's converter reorders the rows of each head of q and
//! k so that its rope, which rotates adjacent pairs (x0, x1), (x2, x3), ..., equals Hugging
//! Face's `rotate_half`, which rotates (x0, x_{d/2}), (x1, x_{d/2+1}), ...:
//! `w.reshape(n_head, 2, head_dim / 2, K).swapaxes(1, 2).reshape(N, K)`. Serving Hugging Face
//! weights means applying the inverse, `reshape(n_head, head_dim / 2, 2, K).swapaxes(1, 2)`.
//! Whole rows move, so a quantized matrix is permuted by moving each row's codes, scales and
//! biases, without loss.

use std::borrow::Cow;

use marlin_quant::QuantMatrix;

use crate::{DenseTensor, Weight};

/// For each Hugging Face row, the GGUF row it comes from; None when `rows` is not a whole
/// number of heads of even size.
pub fn source_rows(rows: usize, n_head: usize) -> Option<Vec<usize>> {
    // Each head holds pairs of rows.
    let pairs = n_head.checked_mul(2)?;
    if n_head == 0 || !rows.is_multiple_of(pairs) {
        return None;
    }
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    // HF row (h, j * half + i) was written to GGUF row (h, 2 * i + j).
    Some(
        (0..rows)
            .map(|r| {
                let (h, rem) = (r / head_dim, r % head_dim);
                let (j, i) = (rem / half, rem % half);
                h * head_dim + 2 * i + j
            })
            .collect(),
    )
}

/// `w` with its rows (the outermost dimension: a matrix's output features, or a bias's
/// entries) reordered: row `r` of the result is row `src[r]` of `w`. None when the number of
/// rows differs from `src.len()`.
pub fn gather_rows(w: &Weight, src: &[usize]) -> Option<Weight> {
    match w {
        Weight::Dense(t) => {
            let rows = *t.shape.first()?;
            if rows != src.len() || rows == 0 {
                return None;
            }
            let width = t.data.len() / rows;
            let data = src
                .iter()
                .flat_map(|&s| &t.data[s * width..(s + 1) * width])
                .copied()
                .collect();
            Some(Weight::Dense(DenseTensor {
                shape: t.shape.clone(),
                data,
            }))
        }
        Weight::Quant(q) => {
            if q.rows() != src.len() {
                return None;
            }
            let gather = |bytes: &[u8]| -> Vec<u8> {
                let width = bytes.len() / q.rows();
                src.iter()
                    .flat_map(|&s| &bytes[s * width..(s + 1) * width])
                    .copied()
                    .collect()
            };
            QuantMatrix::from_parts(
                q.scheme(),
                q.rows(),
                q.cols(),
                Cow::Owned(gather(q.codes())),
                Cow::Owned(gather(q.scales())),
                Cow::Owned(gather(q.biases())),
                q.global_scale(),
            )
            .ok()
            .map(Weight::Quant)
        }
        // GGUF files hold no sparse matrices.
        Weight::Sparse(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The converter's permutation, written as it is in numpy: GGUF row (h, i, j) of shape
    /// (n_head, half, 2) holds HF row (h, j, i) of shape (n_head, 2, half).
    fn converter_permute(hf: &[usize], n_head: usize) -> Vec<usize> {
        let half = hf.len() / n_head / 2;
        let mut out = Vec::new();
        for h in 0..n_head {
            for i in 0..half {
                for j in 0..2 {
                    out.push(hf[h * 2 * half + j * half + i]);
                }
            }
        }
        out
    }

    #[test]
    fn inverts_the_converter() {
        for (rows, heads) in [(8, 1), (12, 3), (64, 2), (576, 9), (192, 3)] {
            let hf: Vec<usize> = (0..rows).collect();
            let gguf = converter_permute(&hf, heads);
            let src = source_rows(rows, heads).unwrap();
            let back: Vec<usize> = src.iter().map(|&s| gguf[s]).collect();
            assert_eq!(back, hf, "rows {rows} heads {heads}");
        }
        assert_eq!(source_rows(10, 3), None);
        assert_eq!(source_rows(6, 0), None);
        // head_dim 2: the permutation is the identity.
        assert_eq!(source_rows(4, 2).unwrap(), vec![0, 1, 2, 3]);
    }
}
