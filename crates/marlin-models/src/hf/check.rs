//! The configuration against the tensors' shapes, before any is read: a config.json that
//! disagrees with its checkpoint is an error naming config.json and the tensor, not a shape
//! error deep in a layer or a wrong answer. The embedding, the output, layer 0 and the number
//! of layers are checked here; the architecture checks every layer as it loads it.

use std::path::Path;

use super::model::HfModel;
use crate::{ModelConfig, ModelError, WeightSource};

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
    // Every size is below 2^32 (json.rs), so the head products fit a 64-bit usize; checked
    // anyway for 32-bit targets.
    crate::llama::tensor_shapes(c, 0..1).ok_or_else(|| ModelError::Config {
        path: config_json.to_owned(),
        what: format!(
            "{} heads of size {} overflow",
            c.num_attention_heads, c.head_dim
        ),
    })
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
