//! The Llama family: Llama 2/3/3.1, SmolLM, Mistral, Qwen2 (q/k/v biases) and Qwen3 (RMSNorm on
//! each head of q and k). Only the math: weights come from a [`WeightSource`], linear layers
//! do not know whether they are quantized, and the CPU backend is handed in.

use std::ops::Range;

use marlin_cpu::{Activations, CpuBackend};
use rayon::prelude::*;

use crate::kv_cache::{KvCache, SeqId};
use crate::layers::{Embedding, Linear, LinearGroup, RmsNorm};
use crate::rope::Rope;
use crate::{Architecture, ModelConfig, ModelError, Weight, WeightSource};

pub struct Llama {
    config: ModelConfig,
    cpu: CpuBackend,
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
}

struct DecoderLayer {
    input_layernorm: RmsNorm,
    /// q_proj, k_proj and v_proj.
    qkv: LinearGroup,
    o_proj: Linear,
    /// Qwen3: RMSNorm over each head of q and k, before rope.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    post_attention_layernorm: RmsNorm,
    /// gate_proj and up_proj.
    gate_up: LinearGroup,
    down_proj: Linear,
}

/// The tensors a model of configuration `c` reads and their shapes (PyTorch order,
/// `[out_features, in_features]`): the embedding, the final norm and an untied output, then
/// each layer of `layers`. For checking a checkpoint before loading it, and for making models
/// in tests and benchmarks. `None` when the head sizes overflow.
pub fn tensor_shapes(c: &ModelConfig, layers: Range<usize>) -> Option<Vec<(String, Vec<usize>)>> {
    let (d, hd, ff, vocab) = (c.hidden_size, c.head_dim, c.intermediate_size, c.vocab_size);
    let q = c.num_attention_heads.checked_mul(hd)?;
    let kv = c.num_key_value_heads.checked_mul(hd)?;
    let mut out: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, d]),
        ("model.norm.weight".into(), vec![d]),
    ];
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".into(), vec![vocab, d]));
    }
    for i in layers {
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
        out.extend(
            layer
                .into_iter()
                .map(|(n, s)| (format!("model.layers.{i}.{n}"), s)),
        );
    }
    Some(out)
}

/// What building a layer needs: the weights, the configuration and the backends.
struct Loader<'a> {
    src: &'a dyn WeightSource,
    config: &'a ModelConfig,
    cpu: CpuBackend,
}

impl Loader<'_> {
    fn norm(&self, name: &str) -> Result<RmsNorm, ModelError> {
        RmsNorm::new(self.src.weight(name)?, self.config.rms_norm_eps)
    }

    /// `{name}.weight`, without bias.
    fn linear(&self, name: &str) -> Result<Linear, ModelError> {
        Linear::new(&self.cpu, self.src.weight(&format!("{name}.weight"))?, None)
    }

    /// Layers reading the same input, stacked into one product where their weights allow;
    /// with their biases when the configuration has attention biases and `with_bias`.
    fn group(&self, names: &[String], with_bias: bool) -> Result<LinearGroup, ModelError> {
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for name in names {
            weights.push(self.src.weight(&format!("{name}.weight"))?);
            biases.push(if with_bias && self.config.attention_bias {
                Some(self.bias(&format!("{name}.bias"))?)
            } else {
                None
            });
        }
        LinearGroup::new(&self.cpu, weights, biases)
    }

    fn bias(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        match self.src.weight(name)? {
            Weight::Dense(t) if t.shape.len() == 1 => Ok(t.data),
            other => Err(ModelError::Shape {
                path: Default::default(),
                name: name.to_string(),
                expected: vec![0],
                got: other.shape(),
            }),
        }
    }
}

impl DecoderLayer {
    fn load(load: &Loader<'_>, i: usize) -> Result<Self, ModelError> {
        let p = format!("model.layers.{i}");
        let head_norm = |n: &str| -> Result<Option<RmsNorm>, ModelError> {
            match load.config.architecture {
                Architecture::Qwen3 => Ok(Some(load.norm(&format!("{p}.self_attn.{n}.weight"))?)),
                _ => Ok(None),
            }
        };
        let layer = DecoderLayer {
            input_layernorm: load.norm(&format!("{p}.input_layernorm.weight"))?,
            qkv: load.group(
                &["q_proj", "k_proj", "v_proj"].map(|n| format!("{p}.self_attn.{n}")),
                true,
            )?,
            o_proj: load.linear(&format!("{p}.self_attn.o_proj"))?,
            q_norm: head_norm("q_norm")?,
            k_norm: head_norm("k_norm")?,
            post_attention_layernorm: load.norm(&format!("{p}.post_attention_layernorm.weight"))?,
            gate_up: load.group(
                &["gate_proj", "up_proj"].map(|n| format!("{p}.mlp.{n}")),
                false,
            )?,
            down_proj: load.linear(&format!("{p}.mlp.down_proj"))?,
        };
        layer.check(load.config, i)?;
        Ok(layer)
    }

    /// Every weight's shape against the configuration, so a mismatch is an error at load
    /// time naming the tensor, not a wrong answer or a panic later.
    fn check(&self, c: &ModelConfig, i: usize) -> Result<(), ModelError> {
        let (d, hd, ff) = (c.hidden_size, c.head_dim, c.intermediate_size);
        let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let part = |g: &LinearGroup, j| g.part_shape(j);
        let whole = |l: &Linear| (l.out_features(), l.in_features());
        let linears = [
            ("self_attn.q_proj", part(&self.qkv, 0), (q, d)),
            ("self_attn.k_proj", part(&self.qkv, 1), (kv, d)),
            ("self_attn.v_proj", part(&self.qkv, 2), (kv, d)),
            ("self_attn.o_proj", whole(&self.o_proj), (d, q)),
            ("mlp.gate_proj", part(&self.gate_up, 0), (ff, d)),
            ("mlp.up_proj", part(&self.gate_up, 1), (ff, d)),
            ("mlp.down_proj", whole(&self.down_proj), (d, ff)),
        ];
        for (name, got, expected) in linears {
            if got != expected {
                return Err(shape(
                    i,
                    name,
                    vec![expected.0, expected.1],
                    vec![got.0, got.1],
                ));
            }
        }
        let norms = [
            ("input_layernorm", Some(&self.input_layernorm), d),
            (
                "post_attention_layernorm",
                Some(&self.post_attention_layernorm),
                d,
            ),
            ("self_attn.q_norm", self.q_norm.as_ref(), hd),
            ("self_attn.k_norm", self.k_norm.as_ref(), hd),
        ];
        for (name, norm, dim) in norms {
            if let Some(norm) = norm.filter(|n| n.dim() != dim) {
                return Err(shape(i, name, vec![dim], vec![norm.dim()]));
            }
        }
        Ok(())
    }
}

fn shape(layer: usize, name: &str, expected: Vec<usize>, got: Vec<usize>) -> ModelError {
    let name = format!("model.layers.{layer}.{name}.weight");
    ModelError::Shape {
        path: Default::default(),
        name,
        expected,
        got,
    }
}

/// The precision of activations inside the quantized matmuls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32: matches transformers; slowest.
    F32,
    /// int8 plus an int8 residual per block of 32 (about 14 bits): transformers' tokens at
    /// close to int8 speed. On SmolLM2 it gives the same greedy tokens as f32 where int8 does not
    /// (docs/cpu-kernels.md).
    #[default]
    Int8x2,
    /// int8 per block of 32, as llama.cpp: fastest; can overturn near-ties.
    Int8,
}

impl Precision {
    fn activations(self) -> Activations {
        match self {
            Precision::F32 => Activations::F32,
            Precision::Int8x2 => Activations::Int8x2,
            Precision::Int8 => Activations::Int8,
        }
    }
}

/// New tokens of one sequence, positioned after what its cache holds.
pub struct SeqTokens<'a> {
    pub seq: SeqId,
    pub tokens: &'a [u32],
}

impl Llama {
    /// Builds the model from `src`, preparing every weight for `cpu` at `precision` (which
    /// overrides the backend's own activation setting).
    pub fn load(
        src: &dyn WeightSource,
        cpu: CpuBackend,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        // Layers see weights, not files: name the source in their errors here.
        Self::load_from(src, cpu, precision).map_err(|e| e.in_file(src.path()))
    }

    fn load_from(
        src: &dyn WeightSource,
        cpu: CpuBackend,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let cpu = cpu.with_activations(precision.activations());
        let config = src.config().clone();
        let load = Loader {
            src,
            config: &config,
            cpu,
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::load(&load, i))
            .collect::<Result<Vec<_>, ModelError>>()?;
        // Tied embeddings: the embedding matrix is also the output projection.
        let head = if config.tie_word_embeddings {
            "model.embed_tokens"
        } else {
            "lm_head"
        };
        Ok(Llama {
            embed_tokens: Embedding::new(src.weight("model.embed_tokens.weight")?)?,
            lm_head: load.linear(head)?,
            norm: load.norm("model.norm.weight")?,
            rope: Rope::new(&config),
            layers,
            config,
            cpu,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Runs the new tokens of every sequence in one pass (prefill chunks and decode steps
    /// alike) and returns the logits of each sequence's last new token.
    // batch (total tokens) -> logits (batch.len(), vocab)
    pub fn forward(
        &self,
        batch: &[SeqTokens<'_>],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, ModelError> {
        let vocab = self.embed_tokens.vocab_size();
        let mut tokens = Vec::new();
        let mut places = Vec::new(); // (sequence, position) of every token
        for s in batch {
            if let Some(&id) = s.tokens.iter().find(|&&t| t as usize >= vocab) {
                return Err(ModelError::TokenOutOfRange { id, vocab });
            }
            cache.reserve(s.seq, s.tokens.len())?;
            let start = cache.len(s.seq);
            tokens.extend_from_slice(s.tokens);
            places.extend((0..s.tokens.len()).map(|i| (s.seq, start + i)));
        }
        let n = tokens.len();
        let mut h = self.embed_tokens.forward(&tokens);
        for (l, layer) in self.layers.iter().enumerate() {
            self.layer(l, layer, &mut h, &places, cache)?;
        }
        for s in batch {
            cache.advance(s.seq, s.tokens.len());
        }
        // Only each sequence's last token needs logits.
        let hidden = self.config.hidden_size;
        let mut last = Vec::with_capacity(batch.len() * hidden);
        let mut end = 0;
        for s in batch {
            end += s.tokens.len();
            last.extend_from_slice(&h[(end - 1) * hidden..end * hidden]);
        }
        debug_assert_eq!(end, n);
        self.norm.forward_inplace(&mut last);
        self.lm_head.forward(&self.cpu, &last, batch.len())
    }

    // h (tokens, hidden) -> h, updated in place
    fn layer(
        &self,
        l: usize,
        layer: &DecoderLayer,
        h: &mut [f32],
        places: &[(SeqId, usize)],
        cache: &mut KvCache,
    ) -> Result<(), ModelError> {
        let (n, cpu) = (places.len(), &self.cpu);
        let (heads, kv_heads, hd) = (
            self.config.num_attention_heads,
            self.config.num_key_value_heads,
            self.config.head_dim,
        );
        let mut x = h.to_vec();
        layer.input_layernorm.forward_inplace(&mut x);
        let [mut q, mut k, v]: [Vec<f32>; 3] = layer
            .qkv
            .forward(cpu, &x, n)?
            .try_into()
            .expect("the group has q, k and v");
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            qn.forward_inplace(&mut q);
            kn.forward_inplace(&mut k);
        }
        for (i, &(seq, pos)) in places.iter().enumerate() {
            let (qi, ki) = (
                &mut q[i * heads * hd..(i + 1) * heads * hd],
                &mut k[i * kv_heads * hd..(i + 1) * kv_heads * hd],
            );
            self.rope.apply(qi, pos);
            self.rope.apply(ki, pos);
            cache.write(
                l,
                seq,
                pos,
                ki,
                &v[i * kv_heads * hd..(i + 1) * kv_heads * hd],
            );
        }
        let window = self.config.sliding_window;
        let attn = attention(cpu, &q, places, cache, l, (heads, kv_heads, hd), window);
        let o = layer.o_proj.forward(cpu, &attn, n)?;
        h.iter_mut().zip(&o).for_each(|(a, b)| *a += b);

        let mut x = h.to_vec();
        layer.post_attention_layernorm.forward_inplace(&mut x);
        let [gate, mut up]: [Vec<f32>; 2] = layer
            .gate_up
            .forward(cpu, &x, n)?
            .try_into()
            .expect("the group has gate and up");
        // SwiGLU: silu(gate) * up.
        up.iter_mut()
            .zip(&gate)
            .for_each(|(u, g)| *u *= g / (1.0 + (-g).exp()));
        let down = layer.down_proj.forward(cpu, &up, n)?;
        h.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        Ok(())
    }
}

/// Causal attention of every new token over its sequence's cached positions (itself
/// included; only the last `window` of them with a sliding window), with grouped kv heads.
// q (tokens, heads * hd) -> (tokens, heads * hd)
fn attention(
    cpu: &CpuBackend,
    q: &[f32],
    places: &[(SeqId, usize)],
    cache: &KvCache,
    layer: usize,
    (heads, kv_heads, hd): (usize, usize, usize),
    window: Option<usize>,
) -> Vec<f32> {
    let mut out = vec![0f32; q.len()];
    let group = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, head) = (i / heads, i % heads);
        let (seq, pos) = places[t];
        let qh = &q[i * hd..(i + 1) * hd];
        let kvh = head / group;
        let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let spans = || cache.spans(layer, seq, kvh, first..pos + 1);
        let mut scores = vec![0f32; pos + 1 - first];
        let mut at = 0;
        for (keys, _) in spans() {
            let n = keys.len() / hd;
            cpu.dot_rows(keys, qh, &mut scores[at..at + n]);
            at += n;
        }
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut total = 0f32;
        for s in scores.iter_mut() {
            *s = ((*s - max) * scale).exp();
            total += *s;
        }
        scores.iter_mut().for_each(|s| *s /= total);
        let mut at = 0;
        for (_, values) in spans() {
            let n = values.len() / hd;
            cpu.axpy_rows(&scores[at..at + n], values, o);
            at += n;
        }
    });
    out
}
