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
}
