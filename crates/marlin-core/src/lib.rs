//! Core types shared by every backend: the op families a backend implements and their errors.
//!
//! One trait per op family (DESIGN.md house rule 7). A backend that lacks an op for some input
//! says so through `supports`, never through a run-time "not implemented".

mod error;
pub mod ops;

pub use error::CoreError;
pub use ops::{Backend, QuantMatmul};
