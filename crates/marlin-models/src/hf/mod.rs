//! Hugging Face model folders, loaded by mmap.
//!
//! - [`HfModel`]: `config.json` (with `generation_config.json`'s end tokens) and the weights of
//!   one `model.safetensors`, or of the shards `model.safetensors.index.json` lists, as a
//!   [`WeightSource`](crate::WeightSource); the configuration is checked against the tensors
//!   before anything is read.
//! - [`SafetensorsFile`]: one safetensors file, its header checked against the file; F32, F16
//!   and BF16 tensors read as dense f32.
//! - [`parse_config`] / [`read_config`]: config.json into a [`ModelConfig`](crate::ModelConfig)
//!   with transformers' defaults, refusing what our graph does not compute.
//!
//! The tokenizer files of the folder are the engine's business (`marlin-engine`).

mod check;
mod config;
mod json;
mod model;
mod safetensors;

pub use config::{parse_config, read_config};
pub(crate) use json::read_json_file;
pub use model::HfModel;
pub(crate) use model::open_weights;
pub use safetensors::{SafetensorsFile, SafetensorsTensor};
