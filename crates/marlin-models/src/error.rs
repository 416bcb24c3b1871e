use std::path::{Path, PathBuf};

use thiserror::Error;

/// Errors of loading and running models. Each names the file and what the user can do.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid {format} file: {what}")]
    Malformed {
        path: PathBuf,
        format: &'static str,
        what: String,
    },
    #[error("{path}: unsupported {what}; {hint}")]
    Unsupported {
        path: PathBuf,
        what: String,
        hint: String,
    },
    #[error("{path}: missing tensor '{name}'")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor '{name}' has shape {got:?} but the configuration implies {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{path}: configuration: {what}")]
    Config { path: PathBuf, what: String },
    #[error("{path}: no {file}; {hint}")]
    MissingFile {
        path: PathBuf,
        file: String,
        hint: String,
    },
    /// A sharded checkpoint whose index (`model.safetensors.index.json`) and shards disagree.
    #[error(
        "{index} and {shard}: {what}; the folder is incomplete or mixes two checkpoints: copy \
         the model's files again"
    )]
    Shards {
        index: PathBuf,
        shard: PathBuf,
        what: String,
    },
    #[error(
        "the KV cache is full ({capacity} tokens): shorten the prompt or --max-tokens, or give it more room"
    )]
    CacheFull { capacity: usize },
    #[error("token id {id} is outside the vocabulary ({vocab} tokens)")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error(transparent)]
    Quant(#[from] marlin_quant::QuantError),
    /// A weight that could not be quantized (non-finite values, a scale out of range).
    #[error("{path}: quantizing '{name}': {source}")]
    Quantize {
        path: PathBuf,
        name: String,
        source: marlin_quant::QuantError,
    },
    #[error(transparent)]
    Core(#[from] marlin_core::CoreError),
    /// The GPU device failed or refused an operation (its message says what to do).
    #[error("GPU: {0}")]
    Gpu(String),
}

impl ModelError {
    /// The same error, naming `path` where the code that raised it could not know the file
    /// (layers are built from weights, not files).
    pub fn in_file(mut self, path: &Path) -> Self {
        if let ModelError::Shape { path: p, .. }
        | ModelError::Config { path: p, .. }
        | ModelError::MissingTensor { path: p, .. } = &mut self
            && p.as_os_str().is_empty()
        {
            *p = path.to_owned();
        }
        self
    }
}
