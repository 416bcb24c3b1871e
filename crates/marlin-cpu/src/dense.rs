//! Dense f32 matmul from the `gemm` crate: the baseline the quantized kernels are measured
//! against, and the path for unquantized layers and f32 panels.

use marlin_core::CoreError;

/// `y (m, n) = x (m, k) · W (n, k)^T`, W row-major f32, on all rayon threads.
// x (m, k), w (n, k) -> y (m, n)
pub fn matmul_f32(
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), CoreError> {
    const OP: &str = "matmul_f32";
    if m == 0 || n == 0 || !w.len().is_multiple_of(n) {
        return Err(CoreError::Shape {
            op: OP,
            what: format!("bad shape m={m}, n={n}"),
        });
    }
    let k = w.len() / n;
    CoreError::check_len(OP, "x", m * k, x.len())?;
    CoreError::check_len(OP, "y", m * n, y.len())?;
    gemm_nt(y, x, m, w, n, k, rayon::current_num_threads() > 1);
    Ok(())
}

/// `dst (a_rows, b_rows) = a (a_rows, k) · b (b_rows, k)^T`, all row-major.
// a (a_rows, k), b (b_rows, k) -> dst (a_rows, b_rows)
pub(crate) fn gemm_nt(
    dst: &mut [f32],
    a: &[f32],
    a_rows: usize,
    b: &[f32],
    b_rows: usize,
    k: usize,
    parallel: bool,
) {
    assert!(dst.len() == a_rows * b_rows && a.len() == a_rows * k && b.len() == b_rows * k);
    let par = if parallel {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the pointers and strides describe the three slices whose lengths were asserted
    // above: dst and a are row-major, b^T is b read with column stride k.
    unsafe {
        gemm::gemm(
            a_rows,
            b_rows,
            k,
            dst.as_mut_ptr(),
            1,
            b_rows as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}
