//! Named error budgets, derived from the measured table in `docs/formats.md`
//! (`cargo run --release -p marlin-testkit --example error_table`).
//!
//! A budget is the measured error times a stated margin, so a test fails when a change makes a
//! format measurably worse, not only when it breaks it.

use marlin_quant::{Format, Group, Scheme};

/// Margin over the measured errors of quantization and of int8 activations. Those are
/// statistical (means over many groups), so a test over a few thousand weights lands within a
/// few percent of the measured value; 25% leaves room for that and nothing more.
pub const MARGIN: f64 = 1.25;

/// Margin over the f32 rounding noise of a matmul ([`ROUNDING`]). That noise depends on the order
/// of summation, which differs between ISAs and between kernel revisions, hence the wider margin.
pub const F32_MARGIN: f64 = 4.0;

/// How far one output may stray beyond the budget of the whole result: the error of one output
/// is a sum of K independent rounding errors, close to normal, and a 6-sigma excursion does not
/// happen in a test suite's lifetime, while a bug is usually far larger.
pub const TAIL: f64 = 6.0;

/// Measured relative RMSE of the RTN round trip on Gaussian weights (256 x 4096, std 0.02),
/// per format and group size: the "round trip, gaussian" column of `docs/formats.md`.
const ROUND_TRIP: [(Format, Group, f64); 31] = [
    (Format::Fp4, Group::Size(16), 9.4222e-2),
    (Format::Fp4, Group::Size(32), 1.0108e-1),
    (Format::Fp4, Group::Size(64), 1.0562e-1),
    (Format::Fp4, Group::Size(128), 1.0877e-1),
    (Format::Mxfp4, Group::Size(32), 1.1407e-1),
    (Format::Nvfp4, Group::Size(16), 9.5194e-2),
    (Format::Int4, Group::Size(16), 7.5796e-2),
    (Format::Int4, Group::Size(32), 8.5728e-2),
    (Format::Int4, Group::Size(64), 9.4660e-2),
    (Format::Int4, Group::Size(128), 1.0277e-1),
    (Format::Int4Affine, Group::Size(16), 6.4878e-2),
    (Format::Int4Affine, Group::Size(32), 7.8089e-2),
    (Format::Int4Affine, Group::Size(64), 8.9536e-2),
    (Format::Int4Affine, Group::Size(128), 9.9511e-2),
    (Format::Int8, Group::Size(16), 4.6951e-3),
    (Format::Int8, Group::Size(32), 5.3441e-3),
    (Format::Int8, Group::Size(64), 5.9259e-3),
    (Format::Int8, Group::Size(128), 6.4481e-3),
    (Format::Fp8, Group::Size(16), 2.2318e-2),
    (Format::Fp8, Group::Size(32), 2.3998e-2),
    (Format::Fp8, Group::Size(64), 2.5092e-2),
    (Format::Fp8, Group::Size(128), 2.5746e-2),
    (Format::Fp8, Group::PerChannel, 2.6482e-2),
    (Format::Int3, Group::Size(16), 1.3939e-1),
    (Format::Int3, Group::Size(32), 1.6760e-1),
    (Format::Int3, Group::Size(64), 1.9205e-1),
    (Format::Int3, Group::Size(128), 2.1345e-1),
    (Format::Int2, Group::Size(16), 3.2700e-1),
    (Format::Int2, Group::Size(32), 3.9293e-1),
    (Format::Int2, Group::Size(64), 4.4990e-1),
    (Format::Int2, Group::Size(128), 4.9947e-1),
];

/// f32 rounding noise of a quantized matmul: the largest of the measured "matmul, f32 acts"
/// and "ISA spread" columns (7.7e-7 measured), rounded up to 1e-6. Earlier CPU kernels
/// measured up to 1.9e-6 between ISAs with int8 activations, still inside
/// `ROUNDING * F32_MARGIN`: kernel rewrites move this noise around without being wrong.
/// The GPU kernels (f32, summing per unit of 4-16 weights, then per thread, then across
/// threads) measured 7.2e-7 over the conformance shapes on lavapipe, 9.1e-6 at worst for one
/// output (allowed `TAIL * 4e-6`), with and without subgroups: the same budget holds.
pub const ROUNDING: f64 = 1e-6;

/// Measured relative error that int8 activations (blocks of 32, scale amax / 127) add to the
/// matmul on Gaussian activations (worst format and ISA): the "matmul, int8 acts" column.
pub const INT8_ACTIVATIONS: f64 = 5.380e-3;

/// Measured relative error of activations split into int8 and an int8 residual
/// ([`marlin_cpu::Activations::Int8x2`]): the "matmul, int8x2 acts" column.
pub const INT8X2_ACTIVATIONS: f64 = 2.070e-5;

/// Relative error of rounding x and W to f16 before an exact product (the GPU's cooperative-
/// matrix products, `MatmulPrecision::Mixed`): 2.94e-4 measured by simulation (x ~ N(0, 1),
/// W ~ N(0, 0.02²), (m, n, k) = (64, 256, 4096), both rounded to f16, product in f64; worst
/// output 1.1e-3 = 3.9 times that).
pub const F16_INPUTS: f64 = 2.94e-4;

/// The precision of activations inside a backend's quantized matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Full f32 activations.
    F32,
    /// Activations quantized to int8 inside the kernel.
    Int8,
    /// int8 plus an int8 residual.
    Int8x2,
    /// x and W rounded to f16, f32 accumulation.
    F16,
}

impl From<marlin_cpu::Activations> for Precision {
    fn from(a: marlin_cpu::Activations) -> Self {
        match a {
            marlin_cpu::Activations::F32 => Precision::F32,
            marlin_cpu::Activations::Int8 => Precision::Int8,
            marlin_cpu::Activations::Int8x2 => Precision::Int8x2,
        }
    }
}

/// The measured round-trip error of `scheme` (before the margin).
pub fn measured_round_trip(scheme: Scheme) -> f64 {
    ROUND_TRIP
        .iter()
        .find(|(f, g, _)| *f == scheme.format() && *g == scheme.group())
        .map(|e| e.2)
        .unwrap_or_else(|| panic!("no measured round-trip error for {scheme}: rerun error_table"))
}

/// Largest relative RMSE allowed for `dequantize(quantize(w))` against Gaussian weights `w`:
/// the measured error times [`MARGIN`]. Groups cut short by K (padding) have fewer weights,
/// hence a smaller range and error, so the budget holds for every K.
pub fn round_trip_budget(scheme: Scheme) -> f64 {
    measured_round_trip(scheme) * MARGIN
}

/// Largest relative error (see [`crate::reference::MatmulError`]) allowed for a quantized
/// matmul against the f64 product of the activations with the dequantized weights: f32
/// rounding, plus the error of int8 activations where the backend uses them. The weights'
/// own quantization error is not part of it: the reference uses the dequantized weights.
pub fn matmul_budget(_scheme: Scheme, precision: Precision) -> f64 {
    let rounding = ROUNDING * F32_MARGIN;
    match precision {
        Precision::F32 => rounding,
        Precision::Int8 => rounding + INT8_ACTIVATIONS * MARGIN,
        Precision::Int8x2 => rounding + INT8X2_ACTIVATIONS * MARGIN,
        Precision::F16 => rounding + F16_INPUTS * MARGIN,
    }
}

/// Largest difference allowed between a SIMD ISA and the scalar one of a backend, in the same
/// precision, relative as in [`matmul_budget`]: they compute the same math, with the same int8
/// activations where used, and may differ only by f32 rounding.
pub fn isa_agreement(_scheme: Scheme, _precision: Precision) -> f64 {
    ROUNDING * F32_MARGIN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_has_a_measured_error() {
        let schemes = crate::schemes();
        assert_eq!(schemes.len(), ROUND_TRIP.len());
        for s in schemes {
            let m = measured_round_trip(s);
            assert!(m > 0.0 && m < 1.0, "{s}: {m}");
        }
    }
}
