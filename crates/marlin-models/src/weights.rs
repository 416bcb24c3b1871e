//! Named weights, whatever file they come from.

use std::path::Path;

use marlin_quant::{QuantMatrix, SparseMatrix};

use crate::{ModelConfig, ModelError};

/// A dense tensor in f32, row-major, `shape` outermost first (a linear layer's weight is
/// `[out_features, in_features]`, as in PyTorch).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One weight as the file stores it: dense, or quantized in one of our formats (GGUF's Q4_0,
/// Q4_1 and Q8_0 map onto INT4, INT4 affine and INT8 without loss).
#[derive(Debug, Clone)]
pub enum Weight {
    Dense(DenseTensor),
    /// A matrix `(rows = out_features, cols = in_features)`.
    Quant(QuantMatrix<'static>),
    /// A 2:4 sparse matrix `(rows = out_features, cols = in_features)`: half the weights kept,
    /// in one of our formats (docs/formats.md, "2:4 sparsity").
    Sparse(SparseMatrix<'static>),
}

impl Weight {
    /// `[rows, cols]` for matrices, the dense shape otherwise.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Weight::Dense(t) => t.shape.clone(),
            Weight::Quant(q) => vec![q.rows(), q.cols()],
            Weight::Sparse(s) => vec![s.rows(), s.cols()],
        }
    }
}

/// What a file stores under one name, without reading the data: for `inspect` and memory
/// estimates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    /// The Hugging Face name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Outermost first, as PyTorch (`[out_features, in_features]` for a linear layer).
    pub shape: Vec<usize>,
    /// The file's own type name: `F32`, `BF16`, `Q4_1`, `Q4_K`...
    pub stored_as: String,
    /// Bytes in the file.
    pub bytes: u64,
}

/// Where an architecture gets its weights: a loaded file, by Hugging Face tensor name
/// (`model.layers.0.self_attn.q_proj.weight`).
pub trait WeightSource: Send + Sync {
    /// The model's configuration, translated from the file's metadata.
    fn config(&self) -> &ModelConfig;
    /// Whether the file has a tensor of this name.
    fn contains(&self, name: &str) -> bool;
    /// The named tensor.
    fn weight(&self, name: &str) -> Result<Weight, ModelError>;
    /// Every tensor the file holds under a Hugging Face name, sorted by name.
    fn tensors(&self) -> Vec<StoredTensor>;
    /// The file or folder the weights come from, for error messages (empty when they come
    /// from memory).
    fn path(&self) -> &Path {
        Path::new("")
    }
}
