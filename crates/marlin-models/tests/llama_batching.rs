//! The Llama model's bookkeeping, on a small random model: the KV cache, chunked prefill and
//! batching must not change the numbers.

use std::collections::HashMap;

use marlin_cpu::CpuBackend;
use marlin_models::{
    Architecture, DenseTensor, KvCache, Model, ModelConfig, ModelError, Precision, SeqTokens,
    StoredTensor, Weight, WeightSource, llama,
};
use marlin_quant::{Format, Scheme, quantize};
use marlin_testkit::rng::gaussian;

struct MapSource {
    config: ModelConfig,
    weights: HashMap<String, Weight>,
}

impl WeightSource for MapSource {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn contains(&self, name: &str) -> bool {
        self.weights.contains_key(name)
    }
    fn tensors(&self) -> Vec<StoredTensor> {
        let mut out: Vec<StoredTensor> = self
            .weights
            .iter()
            .map(|(name, w)| StoredTensor {
                name: name.clone(),
                shape: w.shape(),
                stored_as: "memory".into(),
                bytes: 0,
            })
            .collect();
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        out
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

fn config(architecture: Architecture) -> ModelConfig {
    ModelConfig {
        architecture,
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
        tie_word_embeddings: true,
        sliding_window: None,
        attention_bias: architecture == Architecture::Qwen2,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    }
}

/// Random weights; matrices in `format` when given, else dense.
fn source(architecture: Architecture, format: Option<Format>) -> MapSource {
    let c = config(architecture);
    let mut seed = 0;
    let mut w = HashMap::new();
    let mut put = |name: String, shape: Vec<usize>, std: f32| {
        seed += 1;
        let data = gaussian(seed, shape.iter().product(), std);
        let weight = match (format, shape.as_slice()) {
            (Some(f), &[n, k]) => Weight::Quant(quantize(&data, n, k, Scheme::of(f)).unwrap()),
            _ => Weight::Dense(DenseTensor { shape, data }),
        };
        w.insert(name, weight);
    };
    for (name, shape) in llama::tensor_shapes(&c, 0..c.num_hidden_layers).unwrap() {
        // Norms and the embedding around 1, projections small: logits of a sensible size.
        let std = if name.ends_with("norm.weight") || name.contains("embed") {
            1.0
        } else {
            0.1
        };
        put(name, shape, std);
    }
    MapSource {
        config: c,
        weights: w,
    }
}

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * scale,
            "{what}: logit {i}: {x} vs {y}"
        );
    }
}

const PROMPT: [u32; 7] = [5, 17, 3, 88, 42, 42, 9];

#[test]
fn one_chunk_equals_token_by_token_through_the_cache() {
    for arch in [
        Architecture::Llama,
        Architecture::Qwen2,
        Architecture::Qwen3,
    ] {
        for format in [None, Some(Format::Int4)] {
            let model = Model::load(
                &source(arch, format),
                CpuBackend::detect(),
                Precision::Int8x2,
            )
            .unwrap();
            let mut cache = KvCache::new(model.config(), 4, 64);
            let a = cache.add_sequence();
            let whole = model
                .forward(
                    &[SeqTokens {
                        seq: a,
                        tokens: &PROMPT,
                    }],
                    &mut cache,
                )
                .unwrap();
            let b = cache.add_sequence();
            let mut last = Vec::new();
            for t in PROMPT.chunks(1) {
                last = model
                    .forward(&[SeqTokens { seq: b, tokens: t }], &mut cache)
                    .unwrap();
            }
            close(&last, &whole, &format!("{arch:?} {format:?}"));
            assert_eq!(cache.len(a), PROMPT.len());
        }
    }
}

#[test]
fn a_batch_equals_its_sequences_alone() {
    let src = source(Architecture::Llama, Some(Format::Int4));
    let model = Model::load(&src, CpuBackend::detect(), Precision::Int8x2).unwrap();
    let (p1, p2): (&[u32], &[u32]) = (&PROMPT, &[7, 7, 60]);
    let alone = |p: &[u32]| {
        let mut cache = KvCache::new(model.config(), 4, 64);
        let s = cache.add_sequence();
        model
            .forward(&[SeqTokens { seq: s, tokens: p }], &mut cache)
            .unwrap()
    };
    let mut cache = KvCache::new(model.config(), 4, 64);
    let (s1, s2) = (cache.add_sequence(), cache.add_sequence());
    let batch = [
        SeqTokens {
            seq: s1,
            tokens: p1,
        },
        SeqTokens {
            seq: s2,
            tokens: p2,
        },
    ];
    let both = model.forward(&batch, &mut cache).unwrap();
    let vocab = model.config().vocab_size;
    close(&both[..vocab], &alone(p1), "first sequence");
    close(&both[vocab..], &alone(p2), "second sequence");
}

#[test]
fn a_full_cache_and_bad_tokens_are_errors() {
    let model = Model::load(
        &source(Architecture::Llama, None),
        CpuBackend::detect(),
        Precision::Int8x2,
    )
    .unwrap();
    let mut cache = KvCache::new(model.config(), 4, 4);
    let s = cache.add_sequence();
    let err = model
        .forward(
            &[SeqTokens {
                seq: s,
                tokens: &PROMPT,
            }],
            &mut cache,
        )
        .unwrap_err();
    assert!(
        matches!(err, ModelError::CacheFull { capacity: 4 }),
        "{err}"
    );
    let err = model
        .forward(
            &[SeqTokens {
                seq: s,
                tokens: &[96],
            }],
            &mut cache,
        )
        .unwrap_err();
    assert!(
        matches!(err, ModelError::TokenOutOfRange { id: 96, vocab: 96 }),
        "{err}"
    );
}

#[test]
fn a_config_that_disagrees_with_a_tensor_names_it() {
    let mut src = source(Architecture::Llama, None);
    src.config.intermediate_size = 80;
    let err = Model::load(&src, CpuBackend::detect(), Precision::Int8x2)
        .err()
        .expect("load must fail");
    assert!(
        err.to_string()
            .contains("model.layers.0.mlp.gate_proj.weight"),
        "{err}"
    );
}
