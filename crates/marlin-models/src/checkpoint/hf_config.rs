//! The model's Hugging Face `config.json`, for a checkpoint: the source folder's own file when
//! there is one (every field transformers wrote is kept), else written from the
//! [`ModelConfig`] a GGUF file translates to, with the fields [`crate::hf::parse_config`] reads
//! back to the same configuration.

use serde_json::{Map, Value, json};

use crate::hf::read_json_file;
use crate::{Architecture, ModelConfig, ModelError, WeightSource};

/// The source's config.json without any `quantization_config`, or one written from its
/// configuration.
pub fn base_config(src: &dyn WeightSource) -> Result<Map<String, Value>, ModelError> {
    let path = src.path().join("config.json");
    if src.path().is_dir() && path.is_file() {
        let mut map: Map<String, Value> =
            serde_json::from_slice(&read_json_file(&path)?).map_err(|e| ModelError::Config {
                path: path.clone(),
                what: format!("not a JSON object: {e}"),
            })?;
        map.remove("quantization_config");
        return Ok(map);
    }
    Ok(config_json(src.config()))
}

/// A config.json that describes `c`.
pub fn config_json(c: &ModelConfig) -> Map<String, Value> {
    let (class, model_type) = match c.architecture {
        Architecture::Llama => ("LlamaForCausalLM", "llama"),
        Architecture::Mistral => ("MistralForCausalLM", "mistral"),
        Architecture::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Architecture::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
    };
    let mut m = json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tie_word_embeddings,
        "hidden_act": "silu",
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_ids,
    });
    let m = m.as_object_mut().expect("an object");
    if let Some(s) = c.rope_scaling {
        m.insert(
            "rope_scaling".into(),
            json!({
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            }),
        );
    }
    if c.architecture == Architecture::Llama {
        m.insert("attention_bias".into(), json!(c.attention_bias));
    }
    // Only Mistral's window on every layer is computed (the loader refuses Qwen's per-layer
    // windows), so only Mistral has one to write.
    if c.architecture == Architecture::Mistral {
        m.insert("sliding_window".into(), json!(c.sliding_window));
    }
    std::mem::take(m)
}
