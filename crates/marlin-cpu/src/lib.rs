//! The CPU backend: fused dequantize + matmul for every format of `marlin-quant`.
//!
//! Work is split over rows of W with rayon. Inner loops exist per instruction set ([`Isa`]):
//! a scalar one that is always built and tested, AVX2 and AVX-512 VNNI chosen at run time.
//! Activations are quantized to int8 inside the kernel by default ([`Activations::Int8`], as
//! llama.cpp does); [`Activations::F32`] keeps them in full precision, and
//! [`Activations::Int8x2`] comes close to it through the int8 kernels. FP8 always runs in f32.
//! 2:4 sparse matrices run through [`sparse::sparse_matmul`], in f32, reading only kept values.

mod activations;
mod blocks;
mod decode;
pub mod dense;
mod isa;
mod kernels;
mod matmul;
pub mod panel;
pub mod peak;
pub mod sparse;
pub mod stream;
mod vector;

use std::borrow::Cow;

use marlin_core::{Backend, CoreError, QuantMatmul};
use marlin_quant::{QuantMatrix, Scheme};

pub use isa::Isa;
pub use panel::Panels;

/// The precision of activations inside the quantized matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// Quantized to int8 per block of 32 (fast; error in `docs/formats.md`).
    #[default]
    Int8,
    /// Full f32.
    F32,
    /// Each block of 32 split into an int8 block and an int8 block of what it missed (the
    /// residual, on a grid 256x finer): about 15 bits, near f32, through the int8 kernels at
    /// the cost of a product with twice the rows (an M = 2 product at decode, far cheaper than
    /// two M = 1).
    Int8x2,
}

/// The CPU backend at one instruction-set level.
#[derive(Debug, Clone, Copy)]
pub struct CpuBackend {
    isa: Isa,
    activations: Activations,
}

impl CpuBackend {
    /// The backend at `isa`, or `None` when this CPU lacks it.
    pub fn new(isa: Isa) -> Option<Self> {
        isa.is_available().then_some(CpuBackend {
            isa,
            activations: Activations::default(),
        })
    }

    /// The fastest level this CPU has (see [`Isa::detect`]).
    pub fn detect() -> Self {
        CpuBackend {
            isa: Isa::detect(),
            activations: Activations::default(),
        }
    }

    pub fn with_activations(self, activations: Activations) -> Self {
        CpuBackend {
            activations,
            ..self
        }
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn activations(&self) -> Activations {
        self.activations
    }

    /// Makes `w` ready for this backend: 4-bit matrices and INT8 are repacked into 16-row
    /// panels ([`Panels`]) where the CPU has the panel kernel; others are used as stored. Do it
    /// once, when a model loads.
    pub fn prepare<'a>(&self, w: &'a QuantMatrix<'a>) -> Prepared<'a> {
        match self.panels(w) {
            Some(p) => Prepared::Panels(p),
            None => Prepared::Rows(Cow::Borrowed(w)),
        }
    }

    /// [`CpuBackend::prepare`] taking ownership, for weights that outlive their source.
    pub fn prepare_owned<'a>(&self, w: QuantMatrix<'a>) -> Prepared<'a> {
        match self.panels(&w) {
            Some(p) => Prepared::Panels(p),
            None => Prepared::Rows(Cow::Owned(w)),
        }
    }

    fn panels(&self, w: &QuantMatrix<'_>) -> Option<Panels> {
        let panel_kernel = self.isa == Isa::Avx512Vnni && self.activations != Activations::F32;
        if panel_kernel { Panels::new(w) } else { None }
    }

    /// `y (m, n) = x (m, k) · W (n, k)^T` into a caller's buffer, W prepared by
    /// [`CpuBackend::prepare`].
    // x (m, k), w (n, k) -> y (m, n)
    pub fn matmul_prepared(
        &self,
        x: &[f32],
        m: usize,
        w: &Prepared<'_>,
        y: &mut [f32],
    ) -> Result<(), CoreError> {
        matmul::quant_matmul(self.isa, self.activations, x, m, w, y)
    }

    /// [`CpuBackend::matmul_prepared`] preparing `w` on the way: convenient for one-off
    /// products; a model prepares its weights once instead.
    // x (m, k), w (n, k) -> y (m, n)
    pub fn matmul(
        &self,
        x: &[f32],
        m: usize,
        w: &QuantMatrix<'_>,
        y: &mut [f32],
    ) -> Result<(), CoreError> {
        self.matmul_prepared(x, m, &self.prepare(w), y)
    }
}

/// A quantized matrix ready for the CPU kernels (see [`CpuBackend::prepare`]).
#[derive(Debug, Clone)]
pub enum Prepared<'a> {
    /// Repacked into 16-row panels; the stored layout is not kept.
    Panels(Panels),
    /// The stored layout, used as is.
    Rows(Cow<'a, QuantMatrix<'a>>),
}

impl Prepared<'_> {
    /// N, the output features.
    pub fn rows(&self) -> usize {
        match self {
            Prepared::Panels(p) => p.rows(),
            Prepared::Rows(m) => m.rows(),
        }
    }

    /// K, the input features.
    pub fn cols(&self) -> usize {
        match self {
            Prepared::Panels(p) => p.cols(),
            Prepared::Rows(m) => m.cols(),
        }
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        match self.activations {
            Activations::Int8 => format!("cpu-{}", self.isa),
            Activations::F32 => format!("cpu-{}-f32", self.isa),
            Activations::Int8x2 => format!("cpu-{}-int8x2", self.isa),
        }
    }
}

impl QuantMatmul for CpuBackend {
    fn supports(&self, _scheme: Scheme) -> bool {
        true
    }

    fn quant_matmul(
        &self,
        x: &[f32],
        m: usize,
        w: &QuantMatrix<'_>,
    ) -> Result<Vec<f32>, CoreError> {
        let mut y = vec![0f32; m * w.rows()];
        self.matmul(x, m, w, &mut y)?;
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marlin_quant::{Format, Scheme, quantize};

    #[test]
    fn panels_prepared_for_int8_are_refused_by_an_f32_backend() {
        let Some(int8) = CpuBackend::new(Isa::Avx512Vnni) else {
            return;
        };
        let w = quantize(&[0.5; 64 * 32], 64, 32, Scheme::of(Format::Int4)).unwrap();
        let prepared = int8.prepare(&w);
        assert!(matches!(prepared, Prepared::Panels(_)));
        let f32 = int8.with_activations(Activations::F32);
        let mut y = vec![0.0; 64];
        let err = f32
            .matmul_prepared(&[1.0; 32], 1, &prepared, &mut y)
            .unwrap_err();
        assert!(
            err.to_string().contains("prepare it with the backend"),
            "{err}"
        );
        int8.matmul_prepared(&[1.0; 32], 1, &prepared, &mut y)
            .unwrap();
        assert!((y[0] - 16.0).abs() < 0.1, "{}", y[0]);
    }
}
