//! The configuration against the tensors' shapes, before any is read: a config.json that
//! disagrees with its checkpoint is an error naming config.json and the tensor, not a shape
//! error deep in a layer or a wrong answer. The embedding, the output, layer 0 and the number
//! of layers are checked here; the architecture checks every layer as it loads it.

use std::path::Path;

use super::model::HfModel;
use crate::{Architecture, ModelConfig, ModelError, WeightSource};

pub(crate) fn tensors_match_config(model: &HfModel) -> Result<(), ModelError> {
    let config_json = model.dir().join("config.json");
    for (name, want) in expected_shapes(model.config(), &config_json)? {
        match model.shape_of(&name) {
            Some(got) if got == want.as_slice() => {}
            Some(got) => {
                return Err(ModelError::Shape {
                    path: config_json,
                    name,
                    expected: want,
                    got: got.to_vec(),
                });
            }
            None if name == "lm_head.weight" => {
                return Err(ModelError::Config {
                    path: config_json,
                    what: "tie_word_embeddings is false (transformers' default when absent) but \
                           there is no tensor 'lm_head.weight'; if the model shares its \
                           embedding with the output, set \"tie_word_embeddings\": true"
                        .into(),
                });
            }
            None => {
                return Err(ModelError::MissingTensor {
                    path: model.dir().to_owned(),
                    name,
                });
            }
        }
    }
    check_layer_count(model, &config_json)
}

/// The shapes the configuration implies for the embedding, the output and layer 0.
fn expected_shapes(
    c: &ModelConfig,
    config_json: &Path,
) -> Result<Vec<(String, Vec<usize>)>, ModelError> {
    let (d, hd, ff, vocab) = (c.hidden_size, c.head_dim, c.intermediate_size, c.vocab_size);
    // Every size is below 2^32 (json.rs), so these products fit 64-bit usize; checked anyway
    // for 32-bit targets.
    let (Some(q), Some(kv)) = (
        c.num_attention_heads.checked_mul(hd),
        c.num_key_value_heads.checked_mul(hd),
    ) else {
        return Err(ModelError::Config {
            path: config_json.to_owned(),
            what: format!("{} heads of size {hd} overflow", c.num_attention_heads),
        });
    };
    let mut expected: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, d]),
        ("model.norm.weight".into(), vec![d]),
    ];
    if !c.tie_word_embeddings {
        expected.push(("lm_head.weight".into(), vec![vocab, d]));
    }
    let p = "model.layers.0";
    let mut layer = vec![
        ("input_layernorm.weight", vec![d]),
        ("post_attention_layernorm.weight", vec![d]),
        ("self_attn.q_proj.weight", vec![q, d]),
        ("self_attn.k_proj.weight", vec![kv, d]),
        ("self_attn.v_proj.weight", vec![kv, d]),
        ("self_attn.o_proj.weight", vec![d, q]),
        ("mlp.gate_proj.weight", vec![ff, d]),
        ("mlp.up_proj.weight", vec![ff, d]),
        ("mlp.down_proj.weight", vec![d, ff]),
    ];
    if c.attention_bias {
        layer.extend([
            ("self_attn.q_proj.bias", vec![q]),
            ("self_attn.k_proj.bias", vec![kv]),
            ("self_attn.v_proj.bias", vec![kv]),
        ]);
    }
    if c.architecture == Architecture::Qwen3 {
        layer.extend([
            ("self_attn.q_norm.weight", vec![hd]),
            ("self_attn.k_norm.weight", vec![hd]),
        ]);
    }
    expected.extend(layer.into_iter().map(|(n, s)| (format!("{p}.{n}"), s)));
    Ok(expected)
}

/// Layers beyond `num_hidden_layers` would be ignored silently and missing ones found late.
fn check_layer_count(model: &HfModel, config_json: &Path) -> Result<(), ModelError> {
    let c = model.config();
    let stored = model
        .tensor_names()
        .filter_map(|n| {
            n.strip_prefix("model.layers.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        // Saturating: a name may claim layer usize::MAX.
        .map_or(0, |last| last.saturating_add(1));
    if stored != c.num_hidden_layers {
        return Err(ModelError::Config {
            path: config_json.to_owned(),
            what: format!(
                "'num_hidden_layers' is {} but the tensors hold {stored} layers \
                 (model.layers.0 to model.layers.{}): the configuration belongs to another \
                 checkpoint",
                c.num_hidden_layers,
                stored.saturating_sub(1)
            ),
        });
    }
    Ok(())
}
