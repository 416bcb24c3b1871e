use thiserror::Error;

/// Errors of backend operations.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    #[error("{op}: {what} has {got} elements but the shape needs {expected}")]
    Length {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{op}: {what}")]
    Shape { op: &'static str, what: String },
    #[error("backend {backend} does not support {what}; use {hint}")]
    Unsupported {
        backend: String,
        what: String,
        hint: &'static str,
    },
    #[error(transparent)]
    Quant(#[from] marlin_quant::QuantError),
    /// A device failed (lost, out of memory, no adapter): the message says what to do.
    #[error("{0}")]
    Backend(String),
}

impl CoreError {
    /// Checks that a slice has the length its shape implies.
    pub fn check_len(
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    ) -> Result<(), CoreError> {
        if expected == got {
            Ok(())
        } else {
            Err(CoreError::Length {
                op,
                what,
                expected,
                got,
            })
        }
    }

    /// Checks the activations of a product: at least one row, and exactly `m` rows of `k`.
    pub fn check_rows(op: &'static str, m: usize, k: usize, x_len: usize) -> Result<(), CoreError> {
        if m == 0 {
            return Err(CoreError::Shape {
                op,
                what: "m must be at least 1".into(),
            });
        }
        CoreError::check_len(op, "x", m * k, x_len)
    }
}
