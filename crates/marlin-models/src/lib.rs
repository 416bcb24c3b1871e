//! Models: loading weights from files (GGUF, Hugging Face folders), the configuration that
//! describes an architecture, and the architectures themselves.
//!
//! Data flows one way (DESIGN.md): file (mmap) → named weights ([`WeightSource`], Hugging Face
//! names) → an architecture builds its layers → the engine runs them.

mod config;
mod error;
mod vocab;
mod weights;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use error::ModelError;
pub use vocab::FileVocab;
pub use weights::{DenseTensor, Weight, WeightSource};
