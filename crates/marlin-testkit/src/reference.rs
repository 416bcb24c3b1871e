//! Reference ops in plain f64: slow, obvious, and the yardstick every backend is measured by.

/// `y (m, n) = x (m, k) · W (n, k)^T`, with W row-major, accumulated in f64.
// x (m, k), w (n, k) -> y (m, n)
pub fn matmul(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
    assert_eq!(x.len(), m * k, "x is not (m, k)");
    assert_eq!(w.len(), n * k, "w is not (n, k)");
    let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    let mut y = Vec::with_capacity(m * n);
    for xr in x.chunks_exact(k) {
        let xr: Vec<f64> = xr.iter().map(|&v| v as f64).collect();
        y.extend(w64.chunks_exact(k).map(|wr| dot(&xr, wr)));
    }
    y
}

/// The typical size of each output of [`matmul`]: `sqrt(sum_k (x[i,k] * w[j,k])^2)`, what
/// `|y[i,j]|` would be if the products had random signs. Errors are measured against it rather
/// than against `|y[i,j]|`, which cancellation can make arbitrarily small.
// x (m, k), w (n, k) -> (m, n)
pub fn matmul_scale(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
    let sq = |v: &[f32]| -> Vec<f64> { v.iter().map(|&a| (a as f64).powi(2)).collect() };
    let (x2, w2) = (sq(x), sq(w));
    let mut s = matmul_f64(&x2, m, k, &w2, n);
    s.iter_mut().for_each(|v| *v = v.sqrt());
    s
}

fn matmul_f64(x: &[f64], m: usize, k: usize, w: &[f64], n: usize) -> Vec<f64> {
    assert_eq!((x.len(), w.len()), (m * k, n * k));
    x.chunks_exact(k)
        .flat_map(|xr| w.chunks_exact(k).map(move |wr| dot(xr, wr)))
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| p * q).sum()
}

/// Relative RMSE `||approx - reference|| / ||reference||` (0 when both are zero).
pub fn rel_rmse<A, B>(approx: &[A], reference: &[B]) -> f64
where
    A: Copy + Into<f64>,
    B: Copy + Into<f64>,
{
    assert_eq!(approx.len(), reference.len(), "rel_rmse of unequal lengths");
    let (mut err, mut norm) = (0f64, 0f64);
    for (&a, &b) in approx.iter().zip(reference) {
        let (a, b): (f64, f64) = (a.into(), b.into());
        err += (a - b).powi(2);
        norm += b * b;
    }
    match (err, norm) {
        (0.0, _) => 0.0,
        (_, 0.0) => f64::INFINITY,
        _ => (err / norm).sqrt(),
    }
}

/// How far a matmul result is from the reference, relative to [`matmul_scale`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatmulError {
    /// `sqrt(sum (y - ref)^2 / sum scale^2)`: the relative RMSE, robust to cancellation. For
    /// independent zero-mean x and W it has the same expectation as [`rel_rmse`] of y.
    pub rel: f64,
    /// The worst single output: `max |y - ref| / scale`.
    pub max_rel: f64,
    /// Index of that output in the (m, n) result.
    pub worst: usize,
    /// Raw sums, so errors of several shapes can be pooled with [`MatmulError::pool`].
    pub err_sq: f64,
    pub scale_sq: f64,
}

impl MatmulError {
    /// Compares `y` with `reference`, both (m, n), under the per-output `scale`. Differences
    /// smaller than the smallest normal f32 count as none.
    pub fn measure(y: &[f32], reference: &[f64], scale: &[f64]) -> Self {
        assert_eq!(
            y.len(),
            reference.len(),
            "result and reference differ in length"
        );
        assert_eq!(y.len(), scale.len(), "result and scale differ in length");
        let mut e = MatmulError {
            rel: 0.0,
            max_rel: 0.0,
            worst: 0,
            err_sq: 0.0,
            scale_sq: 0.0,
        };
        for (i, ((&a, &r), &s)) in y.iter().zip(reference).zip(scale).enumerate() {
            // Below the smallest normal f32 a result is rounding debris, not a value: a kernel
            // that splits a weight into scale and bias parts cannot cancel them exactly there.
            let d = match a as f64 - r {
                d if d.abs() < f32::MIN_POSITIVE as f64 => 0.0,
                d => d,
            };
            e.err_sq += d * d;
            e.scale_sq += s * s;
            // A zero scale means every product is zero: any difference is infinitely wrong.
            let rel = if d == 0.0 { 0.0 } else { d.abs() / s };
            if worse(rel, e.max_rel) {
                (e.max_rel, e.worst) = (rel, i);
            }
        }
        e.rel = ratio(e.err_sq, e.scale_sq);
        e
    }

    /// The error of several measurements together.
    pub fn pool(self, other: MatmulError) -> MatmulError {
        let (err_sq, scale_sq) = (self.err_sq + other.err_sq, self.scale_sq + other.scale_sq);
        let (max_rel, worst) = if worse(other.max_rel, self.max_rel) {
            (other.max_rel, other.worst)
        } else {
            (self.max_rel, self.worst)
        };
        MatmulError {
            rel: ratio(err_sq, scale_sq),
            max_rel,
            worst,
            err_sq,
            scale_sq,
        }
    }
}

/// Whether `a` is a worse error than `b`; a NaN (a broken output) is worse than anything.
fn worse(a: f64, b: f64) -> bool {
    !b.is_nan() && (a.is_nan() || a > b)
}

fn ratio(err_sq: f64, scale_sq: f64) -> f64 {
    if err_sq == 0.0 {
        0.0
    } else {
        (err_sq / scale_sq).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_is_x_times_w_transposed() {
        // x (2, 3), w (2, 3)
        let x = [1.0, 2.0, 3.0, -1.0, 0.5, 0.0];
        let w = [1.0, 0.0, 1.0, 2.0, 2.0, 2.0];
        assert_eq!(matmul(&x, 2, 3, &w, 2), vec![4.0, 12.0, -1.0, -1.0]);
        let s = matmul_scale(&x, 2, 3, &w, 2);
        assert_eq!(s[0], 10f64.sqrt());
        assert_eq!(s[3], (4.0f64 + 1.0).sqrt());
    }

    #[test]
    fn rel_rmse_basics() {
        assert_eq!(rel_rmse(&[1.0f32, 2.0], &[1.0f64, 2.0]), 0.0);
        assert_eq!(rel_rmse(&[0.0f32], &[0.0f32]), 0.0);
        assert_eq!(rel_rmse(&[1.0f32], &[0.0f32]), f64::INFINITY);
        assert!((rel_rmse(&[3.0f32, 4.0], &[0.0f32, 5.0]) - (10f64 / 25.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn matmul_error_finds_the_worst_output_and_nan() {
        let e = MatmulError::measure(&[1.0, 2.5], &[1.0, 2.0], &[1.0, 1.0]);
        assert_eq!((e.max_rel, e.worst), (0.5, 1));
        let nan = MatmulError::measure(&[1.0, f32::NAN, 9.0], &[1.0, 2.0, 2.0], &[1.0; 3]);
        assert!(nan.max_rel.is_nan() && nan.worst == 1);
        assert!(nan.rel.is_nan());
        let pooled = e.pool(MatmulError::measure(&[0.0], &[0.0], &[1.0]));
        assert!((pooled.rel - (0.25f64 / 3.0).sqrt()).abs() < 1e-12);
    }
}
