//! Metal Marlin's own quantized checkpoint: a Hugging Face-style folder (`config.json` with a
//! `quantization_config` block, `model.safetensors` holding each quantized matrix as its
//! packed parts in `QuantMatrix` layout, dense tensors as F32/F16/BF16, the tokenizer files
//! beside). Specified in docs/checkpoint-format.md.
//!
//! - [`quantize_model`]: a [`WeightSource`](crate::WeightSource) into a checkpoint by a
//!   [`Recipe`], one weight at a time, written atomically ([`CheckpointWriter`]);
//!   [`quantize_model_calibrated`] with GPTQ, one decoder layer at a time on a [`Calibration`].
//! - [`Checkpoint`]: a checkpoint folder, mapped and checked, as a `WeightSource`; quantized
//!   weights load as the file's bytes, with no repacking or re-quantization.

mod awq;
mod gptq;
mod hf_config;
mod quantize;
mod reader;
mod recipe;
mod spec;
mod writer;

pub use gptq::Calibration;
pub use hf_config::{base_config, config_json};
pub use quantize::{
    QuantizeReport, Step, quantize_model, quantize_model_calibrated, quantize_parallel,
};
pub use reader::{Checkpoint, is_checkpoint};
pub use recipe::{
    KEPT_BY_DEFAULT, Method, PRESETS, Recipe, RecipeError, Rule, Target, glob_match, matches_name,
};
pub use spec::{DenseType, Entry};
pub use writer::{CheckpointWriter, WEIGHTS_FILE};

/// `quantization_config.quant_method` of our checkpoints.
pub const QUANT_METHOD: &str = "metal-marlin";
/// The format version this build writes and the newest it reads.
pub const VERSION: u64 = 1;
