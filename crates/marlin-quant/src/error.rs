use thiserror::Error;

/// What can go wrong when building, quantizing or reading a quantized matrix.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum QuantError {
    #[error("unknown format '{0}': expected one of {list}", list = crate::Format::NAMES.join(", "))]
    UnknownFormat(String),
    #[error("invalid group size '{0}': expected 16, 32, 64, 128 or 'channel'")]
    InvalidGroupText(String),
    #[error("format {format} does not support {group}: use {hint}")]
    UnsupportedGroup {
        format: &'static str,
        group: String,
        hint: &'static str,
    },
    #[error("matrix shape {rows}x{cols} is invalid: both dimensions must be at least 1")]
    EmptyShape { rows: usize, cols: usize },
    #[error("matrix shape {rows}x{cols} is too large to address")]
    TooLarge { rows: usize, cols: usize },
    #[error("expected {expected} input values for a {rows}x{cols} matrix, got {got}")]
    InputLength {
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
    #[error("weight at row {row}, column {col} is {value}: quantization needs finite weights")]
    NonFinite { row: usize, col: usize, value: f32 },
    #[error("{part} has {got} bytes but a {rows}x{cols} {scheme} matrix needs {expected}")]
    PartLength {
        part: &'static str,
        scheme: String,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
    #[error(
        "row {row}, group {group}: the scale does not fit the {format} format's f16 storage (weights too large); use fp8, or rescale the weights"
    )]
    ScaleOverflow {
        row: usize,
        group: usize,
        format: &'static str,
    },
    #[error("global scale {0} is invalid: it must be finite and non-zero")]
    GlobalScale(f32),
    #[error(
        "Hessian has {got} values but a layer of {cols} input columns needs {cols}x{cols} = {expected}"
    )]
    HessianShape {
        cols: usize,
        expected: usize,
        got: usize,
    },
    #[error(
        "the Hessian is not positive definite even with dampening {damp} (fraction of its mean diagonal): the calibration activations are degenerate (NaN, or too few tokens); use more calibration samples or a larger --damp"
    )]
    HessianNotPositiveDefinite { damp: f64 },
    #[error(
        "a 2:4 sparse matrix of {cols} columns keeps {expected} values per row, but its kept values have {got} columns"
    )]
    SparseShape {
        cols: usize,
        expected: usize,
        got: usize,
    },
    #[error(
        "row {row}, quad {quad}: the two kept positions of a 2:4 quad must be distinct and increasing (0 <= a < b <= 3); the positions tensor is corrupt, quantize the model again"
    )]
    SparsePositions { row: usize, quad: usize },
    #[error(
        "2:4 sparsity with GPTQ keeps the columns in order within each quad; it cannot combine with {what}"
    )]
    SparseOption { what: &'static str },
}
