//! The Llama family: Llama 2/3/3.1, SmolLM, Mistral, Qwen2 (q/k/v biases) and Qwen3 (RMSNorm on
//! each head of q and k). Only the math: weights come from a [`WeightSource`], linear layers
//! do not know whether they are quantized, and the ops run on whatever [`Device`] is handed in.

use std::ops::Range;

use crate::device::{AttentionParts, Device, Input, Part};
use crate::model::SeqTokens;
use crate::rope::Rope;
use crate::{Architecture, ModelConfig, ModelError, Weight, WeightSource};

pub(crate) struct Llama<D: Device> {
    config: ModelConfig,
    device: D,
    vocab: usize,
    embed_tokens: D::Embedding,
    layers: Vec<DecoderLayer<D>>,
    norm: D::Vector,
    lm_head: D::Linear,
    /// Rope's inverse frequencies (head_dim / 2), scaling included.
    inv_freq: D::Vector,
}

struct DecoderLayer<D: Device> {
    input_layernorm: D::Vector,
    /// q_proj, k_proj and v_proj, side by side.
    qkv: D::Linear,
    o_proj: D::Linear,
    /// Qwen3: RMSNorm over each head of q and k, before rope.
    q_norm: Option<D::Vector>,
    k_norm: Option<D::Vector>,
    post_attention_layernorm: D::Vector,
    /// gate_proj and up_proj, side by side.
    gate_up: D::Linear,
    down_proj: D::Linear,
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

/// Which tokens of a pass get logits.
#[derive(Clone, Copy)]
enum Logits {
    Last,
    All,
}

/// What building a layer needs: the weights, the configuration and the device.
struct Loader<'a, D> {
    src: &'a dyn WeightSource,
    config: &'a ModelConfig,
    device: &'a D,
}

impl<D: Device> Loader<'_, D> {
    /// The weight `name`, which must have the shape `expected` (PyTorch order).
    fn weight(&self, name: &str, expected: &[usize]) -> Result<Weight, ModelError> {
        let w = self.src.weight(name)?;
        if w.shape() != expected {
            return Err(shape(name, expected.to_vec(), w.shape()));
        }
        Ok(w)
    }

    /// A dense vector of `len` values (a norm's weight, a bias).
    fn values(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        match self.weight(name, &[len])? {
            Weight::Dense(t) => Ok(t.data),
            w @ (Weight::Quant(_) | Weight::Sparse(_)) => Err(shape(name, vec![len], w.shape())),
        }
    }

    fn norm(&self, name: &str, len: usize) -> Result<D::Vector, ModelError> {
        self.device.vector(self.values(name, len)?)
    }

    /// Layers reading the same input, `(name, out_features)` each: their `.weight`s, and their
    /// `.bias`es when `with_bias` and the configuration has attention biases.
    fn linear(
        &self,
        parts: &[(String, usize)],
        in_features: usize,
        with_bias: bool,
    ) -> Result<D::Linear, ModelError> {
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for (name, out) in parts {
            weights.push(self.weight(&format!("{name}.weight"), &[*out, in_features])?);
            biases.push(if with_bias && self.config.attention_bias {
                Some(self.values(&format!("{name}.bias"), *out)?)
            } else {
                None
            });
        }
        self.device.linear(weights, biases)
    }
}

impl<D: Device> DecoderLayer<D> {
    fn load(load: &Loader<'_, D>, i: usize) -> Result<Self, ModelError> {
        let c = load.config;
        let p = format!("model.layers.{i}");
        let (d, hd, ff) = (c.hidden_size, c.head_dim, c.intermediate_size);
        let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let head_norm = |n: &str| -> Result<Option<D::Vector>, ModelError> {
            match c.architecture {
                Architecture::Qwen3 => {
                    Ok(Some(load.norm(&format!("{p}.self_attn.{n}.weight"), hd)?))
                }
                _ => Ok(None),
            }
        };
        let attn = |n: &str, out| (format!("{p}.self_attn.{n}"), out);
        let mlp = |n: &str, out| (format!("{p}.mlp.{n}"), out);
        Ok(DecoderLayer {
            input_layernorm: load.norm(&format!("{p}.input_layernorm.weight"), d)?,
            qkv: load.linear(
                &[attn("q_proj", q), attn("k_proj", kv), attn("v_proj", kv)],
                d,
                true,
            )?,
            o_proj: load.linear(&[attn("o_proj", d)], q, false)?,
            q_norm: head_norm("q_norm")?,
            k_norm: head_norm("k_norm")?,
            post_attention_layernorm: load
                .norm(&format!("{p}.post_attention_layernorm.weight"), d)?,
            gate_up: load.linear(&[mlp("gate_proj", ff), mlp("up_proj", ff)], d, false)?,
            down_proj: load.linear(&[mlp("down_proj", d)], ff, false)?,
        })
    }
}

fn shape(name: &str, expected: Vec<usize>, got: Vec<usize>) -> ModelError {
    ModelError::Shape {
        path: Default::default(),
        name: name.to_string(),
        expected,
        got,
    }
}

impl<D: Device> Llama<D> {
    /// Builds the model from `src`, preparing every weight for `device`.
    pub(crate) fn load(src: &dyn WeightSource, device: D) -> Result<Self, ModelError> {
        // Layers see weights, not files: name the source in their errors here.
        Self::load_from(src, device).map_err(|e| e.in_file(src.path()))
    }

    fn load_from(src: &dyn WeightSource, device: D) -> Result<Self, ModelError> {
        let config = src.config().clone();
        let load = Loader {
            src,
            config: &config,
            device: &device,
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::load(&load, i))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let d = config.hidden_size;
        let table = src.weight("model.embed_tokens.weight")?;
        let vocab = match table.shape().as_slice() {
            &[vocab, hidden] if hidden == d => vocab,
            _ => {
                return Err(shape(
                    "model.embed_tokens.weight",
                    vec![config.vocab_size, d],
                    table.shape(),
                ));
            }
        };
        // Tied embeddings: the embedding matrix is also the output projection.
        let head = if config.tie_word_embeddings {
            "model.embed_tokens"
        } else {
            "lm_head"
        };
        let lm_head = load.linear(&[(head.to_string(), vocab)], d, false)?;
        let norm = load.norm("model.norm.weight", d)?;
        let inv_freq = device.vector(Rope::new(&config).inv_freq().to_vec())?;
        let embed_tokens = device.embedding(table)?;
        Ok(Llama {
            embed_tokens,
            lm_head,
            norm,
            inv_freq,
            layers,
            vocab,
            config,
            device,
        })
    }

    pub(crate) fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub(crate) fn device(&self) -> &D {
        &self.device
    }

    /// Runs the new tokens of every sequence in one pass (prefill chunks and decode steps
    /// alike) and returns the logits of each sequence's last new token.
    // batch (total tokens) -> logits (batch.len(), vocab)
    pub(crate) fn forward(
        &self,
        batch: &[SeqTokens<'_>],
        cache: &mut D::Cache,
    ) -> Result<Vec<f32>, ModelError> {
        let (pass, logits) = self.record(batch, cache, Logits::Last)?;
        self.device.finish(pass, cache, logits)
    }

    /// [`Llama::forward`] with the logits of every new token, in batch order (perplexity).
    // batch (total tokens) -> logits (total tokens, vocab)
    pub(crate) fn forward_all(
        &self,
        batch: &[SeqTokens<'_>],
        cache: &mut D::Cache,
    ) -> Result<Vec<f32>, ModelError> {
        let (pass, logits) = self.record(batch, cache, Logits::All)?;
        self.device.finish(pass, cache, logits)
    }

    /// [`Llama::forward`] for greedy decoding: each sequence's most likely next token.
    // batch (total tokens) -> (batch.len())
    pub(crate) fn forward_argmax(
        &self,
        batch: &[SeqTokens<'_>],
        cache: &mut D::Cache,
    ) -> Result<Vec<u32>, ModelError> {
        let (pass, logits) = self.record(batch, cache, Logits::Last)?;
        self.device.finish_argmax(pass, cache, logits, self.vocab)
    }

    /// [`Llama::forward_argmax`] drawing each sequence's token under its choice instead.
    pub(crate) fn forward_sample(
        &self,
        batch: &[SeqTokens<'_>],
        cache: &mut D::Cache,
        choices: &[crate::device::SampleChoice],
        penalties: &[Option<crate::device::Penalty<'_>>],
    ) -> Result<Vec<u32>, ModelError> {
        if choices.len() != batch.len() || !(penalties.is_empty() || penalties.len() == batch.len())
        {
            return Err(ModelError::Config {
                path: Default::default(),
                what: format!(
                    "{} sampling choices and {} penalties for {} sequences; give one choice per \
                     sequence, and one penalty per sequence or none",
                    choices.len(),
                    penalties.len(),
                    batch.len()
                ),
            });
        }
        let (pass, logits) = self.record(batch, cache, Logits::Last)?;
        self.device
            .finish_sample(pass, cache, logits, self.vocab, choices, penalties)
    }

    /// The pass up to the logits of each sequence's last token, or of every token.
    fn record(
        &self,
        batch: &[SeqTokens<'_>],
        cache: &mut D::Cache,
        which: Logits,
    ) -> Result<(D::Pass, D::Act), ModelError> {
        let dev = &self.device;
        let mut tokens = Vec::new();
        let mut last = Vec::new(); // each sequence's last token, by index in the pass
        for s in batch {
            if s.tokens.is_empty() {
                return Err(ModelError::Config {
                    path: Default::default(),
                    what: "a sequence in the batch has no new tokens".into(),
                });
            }
            if let Some(&id) = s.tokens.iter().find(|&&t| t as usize >= self.vocab) {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    vocab: self.vocab,
                });
            }
            tokens.extend_from_slice(s.tokens);
            last.push(tokens.len() - 1);
        }
        let counts: Vec<_> = batch.iter().map(|s| (s.seq, s.tokens.len())).collect();
        let mut pass = dev.begin(cache, &counts)?;
        let mut h = dev.embed(&mut pass, &self.embed_tokens, &tokens)?;
        let run = LayerRun {
            dev,
            config: &self.config,
            inv_freq: &self.inv_freq,
        };
        for (l, layer) in self.layers.iter().enumerate() {
            // What multiplies h after this layer: the next layer's q|k|v product, of its input
            // norm, or the head, of the final norm.
            let next = match self.layers.get(l + 1) {
                Some(next) => (&next.input_layernorm, &next.qkv),
                None => (&self.norm, &self.lm_head),
            };
            run.layer(&mut pass, cache, l, layer, &mut h, Some(next))?;
        }
        // Unless every token's are asked for, only each sequence's last token needs logits (at
        // decode, every token is one).
        let h = match which {
            Logits::Last if !last.iter().copied().eq(0..tokens.len()) => {
                dev.rows(&mut pass, &h, &last)?
            }
            _ => h,
        };
        let x = Input::RmsNorm(&h, &self.norm, self.config.rms_norm_eps);
        let logits = dev.project(&mut pass, x, &self.lm_head)?;
        Ok((pass, logits))
    }
}

/// What running a decoder layer needs besides its weights.
struct LayerRun<'a, D: Device> {
    dev: &'a D,
    config: &'a ModelConfig,
    inv_freq: &'a D::Vector,
}

impl<D: Device> LayerRun<'_, D> {
    /// One decoder layer on the residual stream h, which it updates in place (its attention's
    /// and its MLP's outputs are added to it); `l` is the layer's place in the cache, `next`
    /// the norm and product that take h after it, where known.
    // h (tokens, hidden) -> h, updated in place
    fn layer(
        &self,
        pass: &mut D::Pass,
        cache: &mut D::Cache,
        l: usize,
        layer: &DecoderLayer<D>,
        h: &mut D::Act,
        next: Option<(&D::Vector, &D::Linear)>,
    ) -> Result<(), ModelError> {
        let (dev, c, inv_freq) = (self.dev, self.config, self.inv_freq);
        let eps = c.rms_norm_eps;
        let (hd, ff) = (c.head_dim, c.intermediate_size);
        let (heads, kv_heads) = (c.num_attention_heads, c.num_key_value_heads);
        let part = |offset, heads| Part {
            offset,
            heads,
            head_dim: hd,
        };
        let q = part(0, heads);
        let k = part(heads * hd, kv_heads);
        let v = part((heads + kv_heads) * hd, kv_heads);

        let x = Input::RmsNorm(h, &layer.input_layernorm, eps);
        let mut qkv = dev.project(pass, x, &layer.qkv)?;
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            dev.rms_norm_heads(pass, &mut qkv, q, qn, eps)?;
            dev.rms_norm_heads(pass, &mut qkv, k, kn, eps)?;
        }
        let window = c.sliding_window;
        let parts = AttentionParts {
            layer: l,
            q,
            k,
            v,
            window,
        };
        let attn = dev.attention(pass, cache, &mut qkv, parts, inv_freq)?;
        let (post_norm, o) = (&layer.post_attention_layernorm, &layer.o_proj);
        dev.project_add_before_norm(pass, Input::Plain(&attn), o, h, post_norm, &layer.gate_up)?;

        let x = Input::RmsNorm(h, post_norm, eps);
        let (gate_up, down) = (&layer.gate_up, &layer.down_proj);
        let gate_up = dev.project_before_swiglu(pass, x, gate_up, down)?;
        let x = Input::SwiGlu(&gate_up, ff);
        match next {
            Some((norm, next)) => dev.project_add_before_norm(pass, x, down, h, norm, next),
            None => dev.project_add(pass, x, down, h),
        }
    }
}

/// One decoder layer on its own, holding only its own weights: a model run a layer at a time,
/// each layer over every calibration token before the next (GPTQ quantizes each layer on the
/// outputs of the layers before it, already quantized), with memory for one layer.
pub(crate) struct LayerAlone<D: Device> {
    config: ModelConfig,
    layer: DecoderLayer<D>,
    inv_freq: D::Vector,
}

impl<D: Device> LayerAlone<D> {
    /// Layer `l` of `src` (its weights as `src` gives them) on `device`.
    pub(crate) fn load(src: &dyn WeightSource, device: &D, l: usize) -> Result<Self, ModelError> {
        let config = src.config().clone();
        let load = Loader {
            src,
            config: &config,
            device,
        };
        let layer = DecoderLayer::load(&load, l).map_err(|e| e.in_file(src.path()))?;
        let inv_freq = device.vector(Rope::new(&config).inv_freq().to_vec())?;
        Ok(LayerAlone {
            config,
            layer,
            inv_freq,
        })
    }

    /// The layer on the residual stream h of a pass, its keys and values in layer 0 of `cache`
    /// (a cache for a one-layer model is enough).
    // h (tokens, hidden) -> h, updated in place
    pub(crate) fn forward(
        &self,
        device: &D,
        pass: &mut D::Pass,
        cache: &mut D::Cache,
        h: &mut D::Act,
    ) -> Result<(), ModelError> {
        let run = LayerRun {
            dev: device,
            config: &self.config,
            inv_freq: &self.inv_freq,
        };
        run.layer(pass, cache, 0, &self.layer, h, None)
    }
}
