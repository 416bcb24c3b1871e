//! Op families. Each backend implements the families it supports.

use marlin_quant::{QuantMatrix, Scheme};

use crate::CoreError;

/// A compute backend (the CPU at one instruction set, a GPU adapter, ...).
pub trait Backend: Send + Sync {
    /// A short label for logs and test names, e.g. `cpu-avx512`.
    fn name(&self) -> String;
}

/// Fused dequantize + matrix multiply: `y (m, n) = x (m, k) · W (n, k)^T`.
pub trait QuantMatmul: Backend {
    /// Whether this backend has a kernel for the scheme.
    fn supports(&self, scheme: Scheme) -> bool;

    /// Multiplies `m` rows of activations by a quantized matrix.
    // x (m, k), w (n, k) -> y (m, n)
    fn quant_matmul(&self, x: &[f32], m: usize, w: &QuantMatrix<'_>)
    -> Result<Vec<f32>, CoreError>;
}
