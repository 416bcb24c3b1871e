//! Dense f32 matmul from the `gemm` crate: the baseline the quantized kernels are measured
//! against, and the path for unquantized layers.

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
    if m == 0 || n == 0 || w.len() % n != 0 {
        return Err(CoreError::Shape {
            op: OP,
            what: format!("bad shape m={m}, n={n}"),
        });
    }
    let k = w.len() / n;
    CoreError::check_len(OP, "x", m * k, x.len())?;
    CoreError::check_len(OP, "y", m * n, y.len())?;
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the pointers and strides describe the three slices whose lengths were checked
    // above: x is (m, k) row-major, W^T is W (n, k) read with column stride k, y is (m, n).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
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
    Ok(())
}
