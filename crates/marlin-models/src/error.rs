use std::path::PathBuf;

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
    #[error(
        "the KV cache is full ({capacity} tokens): shorten the prompt or --max-tokens, or give it more room"
    )]
    CacheFull { capacity: usize },
    #[error("token id {id} is outside the vocabulary ({vocab} tokens)")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error(transparent)]
    Quant(#[from] marlin_quant::QuantError),
    #[error(transparent)]
    Core(#[from] marlin_core::CoreError),
}
