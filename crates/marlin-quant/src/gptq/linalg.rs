//! The little dense linear algebra GPTQ needs, in f64: a Cholesky factorization and the upper
//! Cholesky factor of an inverse. Matrices are row-major `n x n` slices.

use rayon::prelude::*;

/// The lower Cholesky factor `L` of a symmetric positive definite `a` (`a = L L^T`), in place
/// (the upper triangle is left as it was). `false` when `a` is not positive definite.
// a (n, n) -> L (n, n), lower triangle
pub(crate) fn cholesky_in_place(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        // Rows are contiguous: each entry is one dot product of two row prefixes.
        let head = &a[j * n..j * n + j];
        let d = a[j * n + j] - dot(head, head);
        if d.is_nan() || d <= 0.0 {
            return false;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        // The rows below are independent given row j's head: each core takes whole rows.
        let head = a[j * n..j * n + j].to_vec();
        a[(j + 1) * n..].par_chunks_mut(n).for_each(|row| {
            row[j] = (row[j] - dot(&row[..j], &head)) / d;
        });
    }
    true
}

/// The upper triangular `U` with `H^-1 = U^T U` (the upper Cholesky factor of the inverse
/// Hessian, which GPTQ's column updates read row by row), without forming `H^-1`.
///
/// With `J` the index reversal, the lower Cholesky factor `L'` of `J H J` gives `H = U' U'^T`
/// for the upper `U' = J L' J`, so `H^-1 = (U'^-1)^T U'^-1` and `U = U'^-1 = J L'^-1 J`: one
/// factorization and one triangular inverse, about `n^3 / 3` multiply-adds.
/// `None` when `h` is not positive definite.
// h (n, n) -> U (n, n), zeros below the diagonal
pub(crate) fn inverse_upper_cholesky(h: &[f64], n: usize) -> Option<Vec<f64>> {
    let rev = |m: &[f64]| -> Vec<f64> {
        let mut out = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                out[i * n + j] = m[(n - 1 - i) * n + (n - 1 - j)];
            }
        }
        out
    };
    let mut l = rev(h);
    if !cholesky_in_place(&mut l, n) {
        return None;
    }
    let inv = lower_inverse(&l, n);
    Some(rev(&inv))
}

/// The inverse of the lower triangle of `l` (also lower triangular).
// l (n, n) -> (n, n)
fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    // Column j of the inverse solves L x = e_j by forward substitution; each step is a dot
    // product of a contiguous row of L with the contiguous solution so far. Columns are
    // independent: each core takes whole columns, kept as rows of the transpose.
    let mut inv_t = vec![0f64; n * n];
    inv_t.par_chunks_mut(n).enumerate().for_each(|(j, x)| {
        x[j] = 1.0 / l[j * n + j];
        for i in j + 1..n {
            x[i] = -dot(&l[i * n + j..i * n + i], &x[j..i]) / l[i * n + i];
        }
    });
    let mut inv = vec![0f64; n * n];
    for j in 0..n {
        for i in j..n {
            inv[i * n + j] = inv_t[j * n + i];
        }
    }
    inv
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize) -> Vec<f64> {
        // A A^T + n I from a fixed pseudo-random A.
        let a: Vec<f64> = (0..n * n)
            .map(|i| ((i * 7919 % 97) as f64 / 97.0) - 0.5)
            .collect();
        let mut h = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..n).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>()
                    + if i == j { n as f64 } else { 0.0 };
            }
        }
        h
    }

    #[test]
    fn upper_factor_of_the_inverse() {
        let n = 37;
        let h = spd(n);
        let u = inverse_upper_cholesky(&h, n).expect("positive definite");
        // U^T U H must be the identity, and U upper triangular with a positive diagonal.
        for i in 0..n {
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0);
            }
            assert!(u[i * n + i] > 0.0);
        }
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0;
                for k in 0..n {
                    let hinv_ik: f64 = (0..n).map(|m| u[m * n + i] * u[m * n + k]).sum();
                    s += hinv_ik * h[k * n + j];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-9, "({i},{j}): {s}");
            }
        }
    }

    #[test]
    fn not_positive_definite_is_refused() {
        let h = vec![1.0, 2.0, 2.0, 1.0];
        assert!(inverse_upper_cholesky(&h, 2).is_none());
    }
}
