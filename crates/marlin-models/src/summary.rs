//! What a model holds and what running it costs, from the tensor table alone (no weight is
//! read): parameter count, stored types, the formats they become in memory, and memory
//! estimates. `metal-marlin inspect` presents it.

use marlin_quant::Format;

use crate::gguf::{Conversion, GgmlType};
use crate::{KvCache, ModelConfig, StoredTensor, WeightSource};

/// What a stored tensor type becomes once loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InMemory {
    /// Kept packed in one of our formats without changing a bit (GGUF Q4_0, Q4_1 and Q8_0 as
    /// INT4, INT4 affine and INT8 at group 32; our own formats as themselves).
    Packed(Format),
    /// Decoded exactly to f32 (F16, BF16 and F64 are widened, F32 kept).
    F32,
    /// Dequantized to f32: no format of ours holds these codes (Q5_0, Q5_1, K-quants).
    Dequantized,
    /// Not loaded: a model holding it fails to load, naming the tensor.
    Unsupported,
}

impl InMemory {
    /// The in-memory form of a tensor stored as `stored_as` ([`StoredTensor::stored_as`]: a
    /// ggml type name, which safetensors' dtype names `F32`/`F16`/`BF16` share, or one of our
    /// format names).
    pub fn of(stored_as: &str) -> InMemory {
        if let Some(t) = GgmlType::from_name(stored_as) {
            return match (t.conversion(), t) {
                (Conversion::Lossless, GgmlType::Q4_0) => InMemory::Packed(Format::Int4),
                (Conversion::Lossless, GgmlType::Q4_1) => InMemory::Packed(Format::Int4Affine),
                (Conversion::Lossless, GgmlType::Q8_0) => InMemory::Packed(Format::Int8),
                (Conversion::Dense, _) => InMemory::F32,
                (Conversion::Dequantized, _) => InMemory::Dequantized,
                _ => InMemory::Unsupported,
            };
        }
        // Our checkpoints name a scheme: `int4 g128`, or `2:4 int4 g32` for a 2:4 sparse
        // matrix, whose kept values stay packed as stored too.
        stored_as
            .trim_start_matches("2:4 ")
            .split(' ')
            .next()
            .unwrap_or_default()
            .parse::<Format>()
            .map_or(InMemory::Unsupported, InMemory::Packed)
    }

    /// Bytes in memory of a tensor of `parameters` values that takes `stored_bytes` in the
    /// file: packed formats keep the file's blocks (codes, scales and biases split apart).
    pub fn bytes(self, parameters: u64, stored_bytes: u64) -> u64 {
        match self {
            InMemory::Packed(_) => stored_bytes,
            InMemory::F32 | InMemory::Dequantized => parameters * 4,
            InMemory::Unsupported => 0,
        }
    }
}

/// The tensors of one stored type.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeSummary {
    /// The file's type name (`Q4_1`, `F32`, `BF16`).
    pub stored_as: String,
    pub tensors: usize,
    pub parameters: u64,
    /// Bytes in the file.
    pub bytes: u64,
    pub in_memory: InMemory,
    /// Bytes once loaded (an estimate; see [`ModelSummary::weights_memory_bytes`]).
    pub memory_bytes: u64,
}

/// A model's size and cost, from [`summarize`].
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    /// Values over every stored tensor (a tied embedding counts once).
    pub parameters: u64,
    /// One entry per stored type, the most bytes first.
    pub types: Vec<TypeSummary>,
    /// Estimated bytes of the weights once loaded: each type's in-memory size, plus a second
    /// copy of a tied embedding (the model holds it as the lookup table and as the output
    /// projection). The CPU backend may repack packed matrices into panels of about the same
    /// size.
    pub weights_memory_bytes: u64,
    /// KV-cache bytes per token of context ([`KvCache::bytes_per_token`]: f32 keys and values).
    pub kv_bytes_per_token: u64,
    /// The context length (`max_position_embeddings`).
    pub context_tokens: usize,
}

impl ModelSummary {
    /// KV-cache bytes of a full context (the cache grows block by block up to this).
    pub fn kv_bytes_at_context(&self) -> u64 {
        self.kv_bytes_per_token * self.context_tokens as u64
    }

    /// Estimated bytes to run one sequence at the full context: weights and KV cache, before
    /// the (small) working buffers of a forward pass.
    pub fn memory_at_context(&self) -> u64 {
        self.weights_memory_bytes + self.kv_bytes_at_context()
    }
}

/// Summarizes a model from its configuration and tensor table, reading no weight data.
pub fn summarize(src: &dyn WeightSource) -> ModelSummary {
    summarize_tensors(src.config(), &src.tensors())
}

fn summarize_tensors(config: &ModelConfig, tensors: &[StoredTensor]) -> ModelSummary {
    let mut types: Vec<TypeSummary> = Vec::new();
    let mut extra = 0;
    for t in tensors {
        let parameters = t.shape.iter().map(|&d| d as u64).product::<u64>();
        let in_memory = InMemory::of(&t.stored_as);
        let memory_bytes = in_memory.bytes(parameters, t.bytes);
        if config.tie_word_embeddings && t.name == "model.embed_tokens.weight" {
            extra += memory_bytes;
        }
        match types.iter_mut().find(|s| s.stored_as == t.stored_as) {
            Some(s) => {
                s.tensors += 1;
                s.parameters += parameters;
                s.bytes += t.bytes;
                s.memory_bytes += memory_bytes;
            }
            None => types.push(TypeSummary {
                stored_as: t.stored_as.clone(),
                tensors: 1,
                parameters,
                bytes: t.bytes,
                in_memory,
                memory_bytes,
            }),
        }
    }
    types.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.stored_as.cmp(&b.stored_as)));
    ModelSummary {
        parameters: types.iter().map(|s| s.parameters).sum(),
        weights_memory_bytes: types.iter().map(|s| s.memory_bytes).sum::<u64>() + extra,
        kv_bytes_per_token: KvCache::bytes_per_token(config),
        context_tokens: config.max_position_embeddings,
        types,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Architecture;

    fn tensor(name: &str, shape: &[usize], stored_as: &str, bytes: u64) -> StoredTensor {
        StoredTensor {
            name: name.into(),
            shape: shape.to_vec(),
            stored_as: stored_as.into(),
            bytes,
        }
    }

    #[test]
    fn stored_types_map_to_their_in_memory_forms() {
        assert_eq!(InMemory::of("Q4_1"), InMemory::Packed(Format::Int4Affine));
        assert_eq!(InMemory::of("Q4_0"), InMemory::Packed(Format::Int4));
        assert_eq!(InMemory::of("Q8_0"), InMemory::Packed(Format::Int8));
        assert_eq!(InMemory::of("BF16"), InMemory::F32);
        assert_eq!(InMemory::of("Q6_K"), InMemory::Dequantized);
        assert_eq!(InMemory::of("IQ2_XXS"), InMemory::Unsupported);
        assert_eq!(InMemory::of("fp4"), InMemory::Packed(Format::Fp4));
        assert_eq!(InMemory::of("2:4 int4 g32"), InMemory::Packed(Format::Int4));
        assert_eq!(InMemory::of("what"), InMemory::Unsupported);
    }

    #[test]
    fn a_tied_embedding_is_held_twice_and_counted_once() {
        let config = ModelConfig {
            architecture: Architecture::Llama,
            vocab_size: 100,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            max_position_embeddings: 1000,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            tie_word_embeddings: true,
            sliding_window: None,
            attention_bias: false,
            bos_token_id: None,
            eos_token_ids: vec![],
        };
        let tensors = [
            tensor("model.embed_tokens.weight", &[100, 64], "Q8_0", 6800),
            tensor(
                "model.layers.0.mlp.up_proj.weight",
                &[128, 64],
                "Q6_K",
                6720,
            ),
            tensor("model.norm.weight", &[64], "F32", 256),
        ];
        let s = summarize_tensors(&config, &tensors);
        assert_eq!(s.parameters, 6400 + 8192 + 64);
        assert_eq!(s.types[0].stored_as, "Q8_0");
        assert_eq!(s.types[1].memory_bytes, 8192 * 4);
        assert_eq!(s.weights_memory_bytes, 2 * 6800 + 8192 * 4 + 256);
        // 2 (k, v) * 2 layers * 2 kv heads * 16 dims * 4 bytes, for 1000 positions.
        assert_eq!(s.kv_bytes_per_token, 512);
        assert_eq!(s.memory_at_context(), s.weights_memory_bytes + 512_000);
    }
}
