//! The GPU as a `marlin_core` backend.

use marlin_core::{Backend, CoreError, QuantMatmul};
use marlin_quant::{QuantMatrix, Scheme};

use crate::{Gpu, GpuError, MatmulPrecision};

/// The GPU backend: every op family it implements, on one device.
///
/// [`QuantMatmul::quant_matmul`] uploads the weights on every call, which suits tests and
/// one-off products; a model uploads each matrix once with [`Gpu::upload_quant`] and calls
/// [`Gpu::quant_matmul`] on device buffers.
#[derive(Debug, Clone)]
pub struct GpuBackend {
    gpu: Gpu,
    precision: MatmulPrecision,
}

impl GpuBackend {
    /// f32 products.
    pub fn new(gpu: Gpu) -> Self {
        GpuBackend {
            gpu,
            precision: MatmulPrecision::F32,
        }
    }

    /// Products in `precision`.
    pub fn with_precision(gpu: Gpu, precision: MatmulPrecision) -> Self {
        GpuBackend { gpu, precision }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

impl Backend for GpuBackend {
    /// `gpu-sg<n>` with subgroups (of at least n invocations), `gpu-nosg` without; `-mixed`
    /// where products may run on cooperative matrices in f16, `-int8x2` where decode also
    /// takes int8 activations.
    fn name(&self) -> String {
        let caps = self.gpu.capabilities();
        let base = if caps.subgroup {
            format!("gpu-sg{}", caps.subgroup_min_size)
        } else {
            "gpu-nosg".to_string()
        };
        match self.precision {
            MatmulPrecision::F32 => base,
            MatmulPrecision::Mixed => format!("{base}-mixed"),
            MatmulPrecision::Int8x2 => format!("{base}-int8x2"),
        }
    }
}

impl QuantMatmul for GpuBackend {
    fn supports(&self, _scheme: Scheme) -> bool {
        true
    }

    // x (m, k), w (n, k) -> y (m, n)
    fn quant_matmul(
        &self,
        x: &[f32],
        m: usize,
        w: &QuantMatrix<'_>,
    ) -> Result<Vec<f32>, CoreError> {
        const OP: &str = "quant_matmul";
        let (n, k) = (w.rows(), w.cols());
        CoreError::check_rows(OP, m, k, x.len())?;
        let gpu = &self.gpu;
        let weights = gpu.upload_quant(w)?;
        // Rows of x per product, so that x and y each fit one storage binding.
        let limit = gpu.capabilities().max_storage_binding;
        let per_row = (k.max(n) * 4) as u64;
        let rows = (limit / per_row).max(1) as usize;
        let mut y = Vec::with_capacity(m * n);
        for (i, chunk) in x.chunks(rows * k).enumerate() {
            let rows_here = chunk.len() / k;
            let xb = gpu.upload_f32("x", chunk);
            let yb = gpu.zeros("y", (rows_here * n * 4) as u64);
            gpu.quant_matmul(&xb, rows_here, &weights, &yb, self.precision)
                .map_err(|e| with_rows(e, i * rows))?;
            y.extend(gpu.read_f32(&yb)?);
        }
        Ok(y)
    }
}

/// Names the first row of x of a failed chunk in the error.
fn with_rows(e: GpuError, first: usize) -> CoreError {
    match e {
        GpuError::Shape { op, what } if first > 0 => CoreError::Shape {
            op,
            what: format!("{what} (rows of x from {first})"),
        },
        e => e.into(),
    }
}
