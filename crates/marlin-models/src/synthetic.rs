//! Models with random weights, built in memory from a configuration: for measuring speed on
//! shapes no file here has (Llama-3.1-8B, Qwen3-4B). The weights are random codes under
//! realistic group scales (those of Gaussian weights of standard deviation 0.02 quantized in
//! the chosen scheme), so every kernel reads and computes exactly as on a real checkpoint;
//! the text it would write is noise.

use std::path::Path;

use marlin_quant::{QuantMatrix, Scheme, quantize};

use crate::hf::parse_config;
use crate::{DenseTensor, ModelConfig, ModelError, StoredTensor, Weight, WeightSource, llama};

/// Architectures by name, as their Hugging Face `config.json` says (the fields that shape the
/// model; the rest take transformers' defaults).
pub const PRESETS: &[(&str, &str)] = &[
    (
        "llama-3.1-8b",
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#,
    ),
    (
        "llama-3.2-1b",
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
        "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
        "tie_word_embeddings": true,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#,
    ),
    (
        "qwen3-4b",
        r#"{"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936,
        "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 40960, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "tie_word_embeddings": true}"#,
    ),
    (
        "smollm2-135m",
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-05, "rope_theta": 100000.0, "tie_word_embeddings": true}"#,
    ),
];

/// Rows quantized from real Gaussian weights: their scales (and biases) are tiled over every
/// matrix.
const TEMPLATE_ROWS: usize = 16;

/// A model of `config`'s shapes whose matrices are random in one quantized scheme; norms are
/// ones and biases zeros.
pub struct SyntheticModel {
    config: ModelConfig,
    scheme: Scheme,
    shapes: Vec<(String, Vec<usize>)>,
}

impl SyntheticModel {
    /// A preset of [`PRESETS`] by name, or the `config.json` file at `name`.
    pub fn config(name: &str) -> Result<ModelConfig, ModelError> {
        let json = match PRESETS.iter().find(|(n, _)| *n == name) {
            Some((_, json)) => json.as_bytes().to_vec(),
            None => {
                let path = Path::new(name);
                if !path.is_file() {
                    let known: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
                    return Err(ModelError::Config {
                        path: path.to_path_buf(),
                        what: format!("not a preset ({}) nor a config.json file", known.join(", ")),
                    });
                }
                std::fs::read(path).map_err(|source| ModelError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
            }
        };
        parse_config(Path::new(name), &json, None)
    }

    pub fn new(config: ModelConfig, scheme: Scheme) -> Result<Self, ModelError> {
        let shapes =
            llama::tensor_shapes(&config, 0..config.num_hidden_layers).ok_or_else(|| {
                ModelError::Config {
                    path: Default::default(),
                    what: "head sizes overflow".into(),
                }
            })?;
        Ok(SyntheticModel {
            config,
            scheme,
            shapes,
        })
    }

    /// Bytes of the quantized matrices a decode step reads: every layer's and the output
    /// projection (the embedding is only gathered).
    pub fn bytes_per_token(&self) -> u64 {
        let head = |name: &str| {
            name == "lm_head.weight"
                || (self.config.tie_word_embeddings && name == "model.embed_tokens.weight")
        };
        self.shapes
            .iter()
            .filter(|(name, shape)| shape.len() == 2 && (name.contains(".layers.") || head(name)))
            .map(|(_, shape)| {
                self.scheme
                    .part_bytes(shape[0], shape[1])
                    .iter()
                    .sum::<usize>() as u64
            })
            .sum()
    }

    fn shape(&self, name: &str) -> Option<&[usize]> {
        self.shapes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_slice())
    }

    /// A `(rows, cols)` matrix of random codes under the template's scales.
    fn matrix(&self, rows: usize, cols: usize) -> Result<QuantMatrix<'static>, ModelError> {
        let t_rows = TEMPLATE_ROWS.min(rows);
        let gaussian = gaussian(cols as u64, t_rows * cols, 0.02);
        let template = quantize(&gaussian, t_rows, cols, self.scheme)?;
        let tile = |part: &[u8]| -> Vec<u8> {
            let per_row = part.len() / t_rows;
            (0..rows)
                .flat_map(|r| part[(r % t_rows) * per_row..(r % t_rows + 1) * per_row].iter())
                .copied()
                .collect()
        };
        // Where cols is not a whole number of groups, the codes of the padding are random too;
        // the presets' widths are multiples of every group size, so none are.
        let mut codes = vec![0u8; rows * self.scheme.row_code_bytes(cols)];
        fill_random(&mut codes, (rows * 31 + cols) as u64);
        Ok(QuantMatrix::from_vecs(
            self.scheme,
            (rows, cols),
            codes,
            tile(template.scales()),
            tile(template.biases()),
            template.global_scale(),
        )?)
    }
}

impl WeightSource for SyntheticModel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn contains(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }

    fn weight(&self, name: &str) -> Result<Weight, ModelError> {
        let shape = self
            .shape(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: Default::default(),
                name: name.to_string(),
            })?
            .to_vec();
        match *shape.as_slice() {
            [rows, cols] => Ok(Weight::Quant(self.matrix(rows, cols)?)),
            [len] => {
                let value = if name.ends_with(".bias") { 0.0 } else { 1.0 };
                Ok(Weight::Dense(DenseTensor {
                    shape,
                    data: vec![value; len],
                }))
            }
            _ => Err(ModelError::Config {
                path: Default::default(),
                what: format!("{name}: a tensor of shape {shape:?}"),
            }),
        }
    }

    fn tensors(&self) -> Vec<StoredTensor> {
        let mut all: Vec<StoredTensor> = self
            .shapes
            .iter()
            .map(|(name, shape)| StoredTensor {
                name: name.clone(),
                shape: shape.clone(),
                stored_as: match shape.len() {
                    2 => self.scheme.to_string(),
                    _ => "F32".into(),
                },
                bytes: 0,
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// xorshift64* bytes: fast, reproducible, no dependency.
fn fill_random(out: &mut [u8], seed: u64) {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in out.chunks_mut(8) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let v = s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// `n` values of a normal distribution of standard deviation `std` (Box-Muller).
fn gaussian(seed: u64, n: usize, std: f32) -> Vec<f32> {
    let mut bytes = vec![0u8; n * 8];
    fill_random(&mut bytes, seed);
    bytes
        .chunks_exact(8)
        .map(|b| {
            let u1 = (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 + 1.0) / 4_294_967_296.0;
            let u2 = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as f32 / 4_294_967_296.0;
            std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use marlin_quant::{Format, Group};

    #[test]
    fn every_preset_parses_and_builds_its_tensors() {
        for (name, _) in PRESETS {
            let config = SyntheticModel::config(name).unwrap();
            assert!(config.num_hidden_layers > 0, "{name}");
        }
        let c = SyntheticModel::config("llama-3.1-8b").unwrap();
        assert_eq!(
            (c.hidden_size, c.head_dim, c.num_key_value_heads),
            (4096, 128, 8)
        );
        assert!(c.rope_scaling.is_some() && !c.tie_word_embeddings);
        let e = SyntheticModel::config("llama-9000")
            .unwrap_err()
            .to_string();
        assert!(e.contains("llama-3.1-8b"), "{e}");
    }

    #[test]
    fn weights_have_the_configured_shapes_and_real_scales() {
        let config = SyntheticModel::config("smollm2-135m").unwrap();
        let scheme = Scheme::new(Format::Int4, Group::Size(128)).unwrap();
        let m = SyntheticModel::new(config, scheme).unwrap();
        let Weight::Quant(q) = m.weight("model.layers.3.mlp.down_proj.weight").unwrap() else {
            panic!("a matrix is quantized");
        };
        assert_eq!((q.rows(), q.cols(), q.scheme()), (576, 1536, scheme));
        let row = {
            let mut r = vec![0f32; 1536];
            q.dequantize_row(100, &mut r);
            r
        };
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max > 0.01 && max < 0.2, "{max}");
        assert!(m.weight("model.norm.weight").is_ok());
        assert!(m.weight("nope").is_err());
        // At least the 4-bit codes of the MLPs' three 576 x 1536 matrices in 30 layers.
        assert!(m.bytes_per_token() > 30 * 3 * 576 * 1536 / 2);
    }
}
