//! Quantized weight formats: what the bits mean.
//!
//! Every format has one scalar [`QuantMatrix::dequantize`] that is its specification; every fast
//! path (CPU SIMD, GPU kernels) is tested against it. The byte layout is documented in
//! `docs/formats.md`. This crate knows nothing about devices or models.
//!
//! A quantized matrix `W (rows = N, cols = K)` is stored row by row. Along K, weights are split
//! into blocks of 32 (the packing unit) and groups of 16/32/64/128 (the scaling unit).

pub mod codec;
mod error;
mod format;
mod gptq;
pub mod layout;
mod matrix;
mod quantize;
pub mod sparse;

pub use error::QuantError;
pub use format::{Format, Group, ScaleType, Scheme};
pub use gptq::{GptqHessian, GptqOptions, gptq};
pub use matrix::QuantMatrix;
pub use quantize::{quantize, quantize_bf16, quantize_f16, quantize_weighted};
pub use sparse::SparseMatrix;

/// Elements per packing block along K. Every format packs 32 weights into `4 * bits` bytes.
pub const BLOCK: usize = 32;
