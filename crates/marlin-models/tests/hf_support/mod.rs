//! Small random Hugging Face folders written from tests: config.json and safetensors made
//! with the `safetensors` crate (the format's reference implementation), single or sharded.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::path::Path;

use half::{bf16, f16};
use marlin_models::{
    Architecture, DenseTensor, ModelConfig, ModelError, StoredTensor, Weight, WeightSource, llama,
};
use marlin_testkit::rng::gaussian;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Float {
    F32,
    F16,
    BF16,
}

pub const FLOATS: [Float; 3] = [Float::F32, Float::F16, Float::BF16];
pub const ARCHS: [Architecture; 4] = [
    Architecture::Llama,
    Architecture::Mistral,
    Architecture::Qwen2,
    Architecture::Qwen3,
];

impl Float {
    pub fn dtype(self) -> Dtype {
        match self {
            Float::F32 => Dtype::F32,
            Float::F16 => Dtype::F16,
            Float::BF16 => Dtype::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Float::F32 => "F32",
            Float::F16 => "F16",
            Float::BF16 => "BF16",
        }
    }

    /// Little-endian bytes, each value rounded to nearest as PyTorch's `.to(dtype)` does.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Float::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Float::F16 => values
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect(),
            Float::BF16 => values
                .iter()
                .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
                .collect(),
        }
    }

    /// What a loader must give back for `values` stored in this dtype.
    pub fn rounded(self, values: &[f32]) -> Vec<f32> {
        match self {
            Float::F32 => values.to_vec(),
            Float::F16 => values.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
            Float::BF16 => values.iter().map(|&v| bf16::from_f32(v).to_f32()).collect(),
        }
    }
}

/// The model of every test folder: 2 layers, 4 heads of 16 sharing 2 kv heads.
pub fn tiny_config(arch: Architecture) -> ModelConfig {
    ModelConfig {
        architecture: arch,
        vocab_size: 96,
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        max_position_embeddings: 256,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: None,
        tie_word_embeddings: false,
        sliding_window: (arch == Architecture::Mistral).then_some(8),
        attention_bias: arch == Architecture::Qwen2,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    }
}

/// `tiny_config` as transformers writes config.json.
pub fn tiny_config_json(arch: Architecture) -> Value {
    let (class, ty) = match arch {
        Architecture::Llama => ("LlamaForCausalLM", "llama"),
        Architecture::Mistral => ("MistralForCausalLM", "mistral"),
        Architecture::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Architecture::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
    };
    let mut c = json!({
        "architectures": [class],
        "model_type": ty,
        "vocab_size": 96,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": null,
        "tie_word_embeddings": false,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    });
    if arch == Architecture::Mistral {
        c["sliding_window"] = json!(8);
    }
    c
}

/// Random weights for `config`, by Hugging Face name: (shape, values).
pub fn random_weights(c: &ModelConfig, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    let mut seed = seed;
    let mut put = |name: String, shape: Vec<usize>, std: f32| {
        seed += 1;
        let data = gaussian(seed, shape.iter().product(), std);
        out.push((name, shape, data));
    };
    for (name, shape) in llama::tensor_shapes(c, 0..c.num_hidden_layers).unwrap() {
        put(name.clone(), shape, init_std(&name));
    }
    out
}

/// One safetensors file of `tensors`: (name, dtype, shape, bytes).
pub fn safetensors_bytes(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// Writes config.json and the weights in `float`: one model.safetensors when `shards` is 1,
/// else that many shards and model.safetensors.index.json, as transformers names them.
pub fn write_folder(
    dir: &Path,
    config: &Value,
    weights: &[(String, Vec<usize>, Vec<f32>)],
    float: Float,
    shards: usize,
) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = weights
        .iter()
        .map(|(n, s, v)| (n.clone(), float.dtype(), s.clone(), float.encode(v)))
        .collect();
    if shards == 1 {
        std::fs::write(dir.join("model.safetensors"), safetensors_bytes(&encoded)).unwrap();
        return;
    }
    let per = encoded.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (i, part) in encoded.chunks(per).enumerate() {
        let file = format!("model-{:05}-of-{shards:05}.safetensors", i + 1);
        std::fs::write(dir.join(&file), safetensors_bytes(part)).unwrap();
        for (name, ..) in part {
            weight_map.insert(name.clone(), json!(file));
        }
    }
    let index = json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// Weights held in memory: the reference a loaded folder must equal.
pub struct MapSource {
    pub config: ModelConfig,
    pub weights: HashMap<String, Weight>,
}

impl MapSource {
    pub fn new(config: ModelConfig, weights: &[(String, Vec<usize>, Vec<f32>)]) -> Self {
        let weights = weights
            .iter()
            .map(|(n, s, v)| {
                let t = DenseTensor {
                    shape: s.clone(),
                    data: v.clone(),
                };
                (n.clone(), Weight::Dense(t))
            })
            .collect();
        MapSource { config, weights }
    }
}

impl WeightSource for MapSource {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn contains(&self, name: &str) -> bool {
        self.weights.contains_key(name)
    }
    fn tensors(&self) -> Vec<StoredTensor> {
        Vec::new()
    }
    fn weight(&self, name: &str) -> Result<Weight, ModelError> {
        self.weights
            .get(name)
            .cloned()
            .ok_or_else(|| ModelError::MissingTensor {
                path: "memory".into(),
                name: name.into(),
            })
    }
}

/// The tensors of a small valid safetensors file: every float dtype, an odd shape, a scalar
/// and an empty tensor, so that fuzzing reaches each code path.
pub fn rich_file() -> Vec<u8> {
    let a = gaussian(7, 3 * 5, 1.0);
    let b = gaussian(8, 7, 1.0);
    let c = gaussian(9, 4, 1.0);
    safetensors_bytes(&[
        (
            "a.f32".into(),
            Dtype::F32,
            vec![3, 5],
            Float::F32.encode(&a),
        ),
        ("b.f16".into(), Dtype::F16, vec![7], Float::F16.encode(&b)),
        (
            "c.bf16".into(),
            Dtype::BF16,
            vec![2, 2],
            Float::BF16.encode(&c),
        ),
        (
            "d.scalar".into(),
            Dtype::F32,
            vec![],
            Float::F32.encode(&[1.5]),
        ),
        ("e.empty".into(), Dtype::F32, vec![0, 4], Vec::new()),
        ("f.i8".into(), Dtype::I8, vec![3], vec![1, 2, 3]),
    ])
}

/// Norms and the embedding around 1, projections small: logits of a sensible size.
pub fn init_std(name: &str) -> f32 {
    if name.ends_with("norm.weight") || name == "model.embed_tokens.weight" {
        1.0
    } else {
        0.1
    }
}
