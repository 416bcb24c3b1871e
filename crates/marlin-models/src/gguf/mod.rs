//! GGUF files (llama.cpp's format, versions 2 and 3), loaded by mmap.
//!
//! - [`GgufFile`]: the parsed header (metadata of every type, tensor table, alignment) over
//!   the mapped bytes; every count, length and extent is checked against the file before use.
//! - [`GgufFile::weight`]: a tensor as a [`Weight`](crate::Weight): Q4_0, Q4_1 and Q8_0 become
//!   our INT4, INT4-affine and INT8 matrices (group 32) without loss; F32, F16, BF16 and F64
//!   decode to dense f32; Q5_0, Q5_1 and the K-quants Q2_K..Q6_K are dequantized to f32.
//! - [`GgufModel`]: the file as a [`WeightSource`](crate::WeightSource), with the Hugging Face
//!   configuration and tensor names ([`translate`]), llama's q/k row permutation undone.

mod convert;
mod dequant;
mod file;
mod model;
mod parse;
mod permute;
pub mod translate;
mod types;
mod value;
mod vocab;

pub use dequant::dequantize;
pub use file::GgufFile;
pub use model::GgufModel;
pub use parse::{DEFAULT_ALIGNMENT, TensorInfo};
pub use permute::source_rows as unpermute_source_rows;
pub use types::{Conversion, GgmlType};
pub use value::{MetadataArray, MetadataValue, ValueType};
pub use vocab::read_vocab;
