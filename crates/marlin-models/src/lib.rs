//! Models: loading weights from files (GGUF, Hugging Face folders), the configuration that
//! describes an architecture, and the architectures themselves.
//!
//! Data flows one way (DESIGN.md): file (mmap) → named weights ([`WeightSource`], Hugging Face
//! names) → an architecture builds its layers → the engine runs them.

pub mod checkpoint;
mod config;
pub mod default_model;
pub mod device;
mod error;
pub mod gguf;
pub mod hf;
pub mod kv_cache;
mod layers;
pub mod llama;
mod mapped;
mod model;
pub mod rope;
pub mod summary;
pub mod synthetic;
mod vocab;
mod weights;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use error::ModelError;
pub use kv_cache::{KvCache, SeqId};
pub use model::{Hardware, Model, Precision, SeqTokens};
pub use summary::{InMemory, ModelSummary, TypeSummary, summarize};
pub use vocab::FileVocab;
pub use weights::{DenseTensor, StoredTensor, Weight, WeightSource};

/// Opens a model's weights: a GGUF file, a Hugging Face folder (`config.json` and
/// safetensors), or a Metal Marlin checkpoint folder (its config.json says so).
pub fn open(path: impl AsRef<std::path::Path>) -> Result<Box<dyn WeightSource>, ModelError> {
    let path = path.as_ref();
    if path.is_dir() {
        if checkpoint::is_checkpoint(path) {
            return Ok(Box::new(checkpoint::Checkpoint::open(path)?));
        }
        return Ok(Box::new(hf::HfModel::open(path)?));
    }
    Ok(Box::new(gguf::GgufModel::open(path)?))
}
