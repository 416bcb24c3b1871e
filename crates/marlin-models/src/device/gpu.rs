//! The GPU device: the ops of a forward pass are recorded (the WGSL kernels of `marlin-gpu`)
//! and submitted every few layers, so the GPU runs while the host records; only the logits (or,
//! greedy, the token ids) come back at [`Device::finish`]. Weights are uploaded once at load,
//! each quantized matrix in its own format (the fused dequantize + matmul kernels read it as
//! stored); activations are f32 (`act.rs`). A pass and when it is submitted: `pass.rs`;
//! products run as one fused dispatch: `fused.rs`.

use marlin_gpu::kernels::{DenseWeight, Heads, View, WeightDtype};
use marlin_gpu::{
    AttentionConfig, Gpu, GpuBuffer, GpuError, GpuKvCache, GpuQuantMatrix, KvDtype, KvShape,
    MatmulPrecision, QkvLayout, QuantizeNext,
};

use super::{AttentionParts, Device, Input, Part, project_unfused};
use crate::layers::{stack_biases, stack_weights};
use crate::{DenseTensor, ModelConfig, ModelError, SeqId, Weight};

mod act;
mod fused;
mod pass;
pub use act::GpuAct;
use act::Pool;
use fused::Fused;
pub use pass::GpuPass;
use pass::Int8H;

/// A GPU adapter opened for a model.
#[derive(Debug, Clone)]
pub struct GpuDevice {
    gpu: Gpu,
    pool: Pool,
    precision: MatmulPrecision,
    /// The KV cache's element type.
    kv: KvDtype,
    /// Products that add to h leave its next norm on int8 grids for the product after them
    /// (`project_add_before_norm`); `MARLIN_GPU_CHAIN=0` turns that off, to compare.
    chain: bool,
}

/// See [`GpuDevice::chain`].
const CHAIN_ENV: &str = "MARLIN_GPU_CHAIN";

impl GpuDevice {
    pub fn new(gpu: Gpu, precision: MatmulPrecision, kv: KvDtype) -> Self {
        GpuDevice {
            pool: Pool::new(gpu.clone()),
            gpu,
            precision,
            kv,
            chain: std::env::var(CHAIN_ENV).map_or(true, |v| v != "0"),
        }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// A pooled buffer of `words` 32-bit values that are not rows of activations.
    fn words(&self, words: u64) -> GpuAct {
        self.act(1, words as usize)
    }

    /// A pooled buffer of `tokens` rows of `width` f32 values.
    fn act(&self, tokens: usize, width: usize) -> GpuAct {
        GpuAct {
            buf: Some(self.pool.take((tokens * width * 4) as u64)),
            pool: self.pool.clone(),
            tokens,
            width,
        }
    }
}

/// A linear layer on the device: quantized as stored, or dense f32.
pub struct GpuLinear {
    weight: GpuWeight,
    bias: Option<GpuBuffer>,
    out_features: usize,
    in_features: usize,
}

enum GpuWeight {
    Quant(GpuQuantMatrix),
    Dense(GpuBuffer),
}

/// An f32 embedding table in parts of whole rows, each within a storage binding.
pub struct GpuEmbedding {
    parts: Vec<GpuBuffer>,
    hidden: usize,
}

/// The paged KV cache on the device, with the model's sequence ids mapped to its own.
pub struct GpuCache {
    cache: GpuKvCache,
    ids: Vec<Option<marlin_gpu::SeqId>>,
    /// The token ids' buffer of the last pass, for the next (`Gpu::upload_into`).
    token_ids: Option<GpuBuffer>,
}

impl GpuCache {
    pub(crate) fn add_sequence(&mut self) -> SeqId {
        let id = self.cache.add_sequence();
        let i = match self.ids.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.ids.push(None);
                self.ids.len() - 1
            }
        };
        self.ids[i] = Some(id);
        SeqId::new(i)
    }

    pub(crate) fn remove_sequence(&mut self, id: SeqId) {
        if let Some(gpu_id) = self.ids.get_mut(id.index()).and_then(Option::take) {
            self.cache.remove_sequence(gpu_id);
        }
    }

    fn id(&self, id: SeqId) -> Result<marlin_gpu::SeqId, ModelError> {
        self.ids.get(id.index()).copied().flatten().ok_or_else(|| {
            ModelError::Gpu(format!("kv cache: sequence {} does not exist", id.index()))
        })
    }

    pub(crate) fn len(&self, id: SeqId) -> usize {
        self.id(id).map_or(0, |g| self.cache.len(g))
    }

    pub(crate) fn truncate(&mut self, id: SeqId, len: usize) -> Result<(), ModelError> {
        let g = self.id(id)?;
        Ok(self.cache.truncate(g, len)?)
    }
}

/// The GPU cache's shape for `config`'s model.
fn kv_shape(config: &ModelConfig, block_size: usize) -> KvShape {
    KvShape {
        layers: config.num_hidden_layers,
        kv_heads: config.num_key_value_heads,
        head_dim: config.head_dim,
        block_size,
    }
}

/// A GPU's cache takes at most this much memory unless asked for more: it is claimed whole at
/// start (a long context, like Llama 3.1's 131072 positions, would otherwise claim tens of GB).
const KV_BUDGET_BYTES: u64 = 2 << 30;

impl Device for GpuDevice {
    type Act = GpuAct;
    type Linear = GpuLinear;
    type Vector = GpuBuffer;
    type Embedding = GpuEmbedding;
    type Cache = GpuCache;
    type Pass = GpuPass;

    fn describe(&self) -> String {
        format!("GPU {}", self.gpu.adapter())
    }

    fn linear(
        &self,
        weights: Vec<Weight>,
        biases: Vec<Option<Vec<f32>>>,
    ) -> Result<GpuLinear, ModelError> {
        let outs: Vec<usize> = weights.iter().map(|w| w.shape()[0]).collect();
        // Parts that do not stack (different formats) run as one dense matrix.
        let weight = match stack_weights(&weights) {
            Some(w) => w,
            None => dense_stack(&weights)?,
        };
        let bias = match stack_biases(&biases, &outs) {
            Some(b) => b,
            // Only some parts have biases: the others' are zeros.
            None => Some(
                biases
                    .iter()
                    .zip(&outs)
                    .flat_map(|(b, &o)| b.clone().unwrap_or_else(|| vec![0.0; o]))
                    .collect(),
            ),
        };
        let (weight, out_features, in_features) = match weight {
            Weight::Quant(q) => {
                let (n, k) = (q.rows(), q.cols());
                (GpuWeight::Quant(self.gpu.upload_quant(&q)?), n, k)
            }
            Weight::Sparse(_) => return Err(sparse_on_gpu()),
            Weight::Dense(t) => {
                let &[n, k] = t.shape.as_slice() else {
                    return Err(ModelError::Gpu(format!(
                        "a linear weight of shape {:?}",
                        t.shape
                    )));
                };
                (
                    GpuWeight::Dense(self.gpu.upload_f32("dense weight", &t.data)),
                    n,
                    k,
                )
            }
        };
        Ok(GpuLinear {
            weight,
            bias: bias.map(|b| self.gpu.upload_f32("bias", &b)),
            out_features,
            in_features,
        })
    }

    fn vector(&self, values: Vec<f32>) -> Result<GpuBuffer, ModelError> {
        Ok(self.gpu.upload_f32("vector", &values))
    }

    fn embedding(&self, table: Weight) -> Result<GpuEmbedding, ModelError> {
        let (rows, hidden, data) = match table {
            Weight::Quant(q) => (q.rows(), q.cols(), q.dequantize()),
            Weight::Sparse(s) => (s.rows(), s.cols(), s.dequantize()),
            Weight::Dense(t) => match t.shape.as_slice() {
                &[rows, hidden] => (rows, hidden, t.data),
                _ => {
                    return Err(ModelError::Gpu(format!(
                        "an embedding of shape {:?}",
                        t.shape
                    )));
                }
            },
        };
        let limit = self.gpu.capabilities().max_storage_binding;
        let per_part = ((limit / (hidden.max(1) as u64 * 4)) as usize).max(1);
        let parts = data
            .chunks(per_part * hidden.max(1))
            .map(|c| self.gpu.upload_f32("embedding", c))
            .collect();
        debug_assert_eq!(data.len(), rows * hidden);
        Ok(GpuEmbedding { parts, hidden })
    }

    fn cache(
        &self,
        config: &ModelConfig,
        block_size: usize,
        max_tokens: usize,
    ) -> Result<GpuCache, ModelError> {
        let shape = kv_shape(config, block_size);
        Ok(GpuCache {
            cache: GpuKvCache::with_dtype(&self.gpu, shape, self.kv, max_tokens)?,
            ids: Vec::new(),
            token_ids: None,
        })
    }

    fn max_cache_tokens(&self, config: &ModelConfig) -> usize {
        let per_token = self.kv_bytes_per_token(config);
        (KV_BUDGET_BYTES / per_token.max(1)).max(1) as usize
    }

    fn kv_bytes_per_token(&self, config: &ModelConfig) -> u64 {
        kv_shape(config, 1).bytes_per_token(self.kv)
    }

    fn begin(
        &self,
        cache: &mut GpuCache,
        counts: &[(SeqId, usize)],
    ) -> Result<GpuPass, ModelError> {
        let mut places = Vec::new();
        let mut gpu_counts = Vec::new();
        for &(seq, n) in counts {
            let g = cache.id(seq)?;
            cache.cache.reserve(g, n)?;
            let start = cache.cache.len(g);
            places.extend((start..start + n).map(|p| (g, p)));
            gpu_counts.push((g, n));
        }
        let batch = cache.cache.batch(&places)?;
        let decode = counts.iter().all(|&(_, n)| n == 1);
        let token_ids = cache.token_ids.take();
        Ok(GpuPass::new(
            self.gpu.encoder(),
            batch,
            decode,
            gpu_counts,
            token_ids,
        ))
    }

    fn embed(
        &self,
        pass: &mut GpuPass,
        table: &GpuEmbedding,
        tokens: &[u32],
    ) -> Result<GpuAct, ModelError> {
        let ids = self.gpu.upload_into(
            pass.token_ids.take(),
            "token ids",
            bytemuck::cast_slice(tokens),
        );
        let out = self.act(tokens.len(), table.hidden);
        let parts: Vec<&GpuBuffer> = table.parts.iter().collect();
        self.gpu.embedding(
            &mut pass.encoder,
            &ids,
            tokens.len(),
            &parts,
            table.hidden,
            out.buf(),
        )?;
        pass.token_ids = Some(ids);
        Ok(out)
    }

    fn rms_norm(
        &self,
        pass: &mut GpuPass,
        x: &GpuAct,
        weight: &GpuBuffer,
        eps: f32,
    ) -> Result<GpuAct, ModelError> {
        let out = self.act(x.tokens, x.width);
        let dims = Heads {
            tokens: x.tokens,
            heads: 1,
            head_dim: x.width,
        };
        self.gpu
            .rms_norm(&mut pass.encoder, x.rows(), out.rows(), weight, dims, eps)?;
        Ok(out)
    }

    fn rms_norm_heads(
        &self,
        pass: &mut GpuPass,
        x: &mut GpuAct,
        part: Part,
        weight: &GpuBuffer,
        eps: f32,
    ) -> Result<(), ModelError> {
        let dims = Heads {
            tokens: x.tokens,
            heads: part.heads,
            head_dim: part.head_dim,
        };
        let v = x.part(part);
        self.gpu
            .rms_norm(&mut pass.encoder, v, v, weight, dims, eps)?;
        Ok(())
    }

    fn matmul(&self, pass: &mut GpuPass, x: &GpuAct, w: &GpuLinear) -> Result<GpuAct, ModelError> {
        let (m, n) = (x.tokens, w.out_features);
        debug_assert_eq!(x.width, w.in_features);
        let y = self.act(m, n);
        let enc = &mut pass.encoder;
        match &w.weight {
            GpuWeight::Quant(q) => {
                let precision = self.precision;
                self.gpu
                    .record_quant_matmul(enc, x.buf(), m, q, y.buf(), precision)?
            }
            GpuWeight::Dense(d) => {
                let dense = DenseWeight {
                    buffer: d,
                    n,
                    k: w.in_features,
                    dtype: WeightDtype::F32,
                };
                self.gpu.matmul_dense(enc, x.buf(), m, dense, y.buf())?
            }
        }
        if let Some(b) = &w.bias {
            self.gpu.add_bias(enc, y.buf(), m, n, b)?;
        }
        Ok(y)
    }

    fn attention(
        &self,
        pass: &mut GpuPass,
        cache: &mut GpuCache,
        qkv: &mut GpuAct,
        parts: AttentionParts,
        inv_freq: &GpuBuffer,
    ) -> Result<GpuAct, ModelError> {
        let AttentionParts {
            layer,
            q,
            k,
            v,
            window,
        } = parts;
        let cache = &cache.cache;
        let (enc, batch) = (&mut pass.encoder, &pass.batch);
        let at = QkvLayout {
            stride: qkv.width,
            heads: q.heads,
            q_offset: q.offset,
            k_offset: k.offset,
            v_offset: v.offset,
        };
        let out = self.act(qkv.tokens, q.width());
        let cfg = AttentionConfig {
            heads: q.heads,
            window,
        };
        cache.record_rope_write(enc, layer, batch, qkv.buf(), at, inv_freq)?;
        if pass.decode {
            cache.record_decode_attention(enc, layer, batch, qkv.part(q), out.buf(), cfg)?;
        } else {
            cache.record_prefill_attention(enc, layer, batch, qkv.part(q), out.buf(), cfg)?;
        }
        Ok(out)
    }

    fn swiglu(
        &self,
        pass: &mut GpuPass,
        gate_up: &GpuAct,
        ff: usize,
    ) -> Result<GpuAct, ModelError> {
        let out = self.act(gate_up.tokens, ff);
        let gate = View::part(gate_up.buf(), 0, gate_up.width);
        let up = View::part(gate_up.buf(), ff, gate_up.width);
        self.gpu
            .swiglu(&mut pass.encoder, gate, up, out.buf(), gate_up.tokens, ff)?;
        Ok(out)
    }

    fn add(&self, pass: &mut GpuPass, h: &mut GpuAct, x: &GpuAct) -> Result<(), ModelError> {
        pass.int8_h = None;
        self.gpu.add(&mut pass.encoder, h.buf(), x.buf(), h.len())?;
        self.added(pass);
        Ok(())
    }

    fn project(
        &self,
        pass: &mut GpuPass,
        x: Input<'_, Self>,
        w: &GpuLinear,
    ) -> Result<GpuAct, ModelError> {
        self.project_with(pass, x, w, None)
    }

    fn project_before_swiglu(
        &self,
        pass: &mut GpuPass,
        x: Input<'_, Self>,
        w: &GpuLinear,
        next: &GpuLinear,
    ) -> Result<GpuAct, ModelError> {
        self.project_with(pass, x, w, Some(next))
    }

    fn project_add(
        &self,
        pass: &mut GpuPass,
        x: Input<'_, Self>,
        w: &GpuLinear,
        h: &mut GpuAct,
    ) -> Result<(), ModelError> {
        pass.int8_h = None;
        let swiglu = pass.int8_swiglu.take();
        match self.fusion(x, w, true) {
            Some(mut fused) => {
                if let Some(input) = self.swiglu_ready(x, &swiglu, &fused) {
                    fused.fusion.input = input;
                }
                self.record_fused(pass, fused, w, h)?;
                self.added(pass);
                Ok(())
            }
            None => {
                let y = project_unfused(self, pass, x, w)?;
                self.add(pass, h, &y)
            }
        }
    }

    fn project_add_before_norm(
        &self,
        pass: &mut GpuPass,
        x: Input<'_, Self>,
        w: &GpuLinear,
        h: &mut GpuAct,
        norm: &GpuBuffer,
        next: &GpuLinear,
    ) -> Result<(), ModelError> {
        pass.int8_h = None;
        let (m, precision) = (h.tokens, self.precision);
        // Where this product can leave h on the grids and the next one takes them.
        let chains = |f: &Fused<'_>| match &next.weight {
            GpuWeight::Quant(nq) => {
                self.gpu.emits_int8_x(m, f.q, precision) && self.gpu.takes_int8_x(m, nq, precision)
            }
            GpuWeight::Dense(_) => false,
        };
        let fused = self.fusion(x, w, true).filter(|f| self.chain && chains(f));
        let Some(mut fused) = fused else {
            return self.project_add(pass, x, w, h);
        };
        let swiglu = pass.int8_swiglu.take();
        if let Some(input) = self.swiglu_ready(x, &swiglu, &fused) {
            fused.fusion.input = input;
        }
        let grids = self.words(Gpu::int8_x_bytes(m, h.width) / 4);
        fused.fusion.then_quantize = Some(QuantizeNext {
            norm,
            target: grids.buf(),
        });
        self.record_fused(pass, fused, w, h)?;
        self.added(pass);
        pass.int8_h = Some(Int8H {
            h: h.buf().raw().clone(),
            norm: norm.raw().clone(),
            grids,
        });
        Ok(())
    }

    fn rows(&self, pass: &mut GpuPass, x: &GpuAct, rows: &[usize]) -> Result<GpuAct, ModelError> {
        let out = self.act(rows.len(), x.width);
        let row_bytes = (x.width * 4) as u64;
        for (i, &r) in rows.iter().enumerate() {
            if r >= x.tokens {
                return Err(ModelError::Gpu(format!("row {r} of {} rows", x.tokens)));
            }
            pass.encoder.encoder().copy_buffer_to_buffer(
                x.buf().raw(),
                r as u64 * row_bytes,
                out.buf().raw(),
                i as u64 * row_bytes,
                row_bytes,
            );
        }
        Ok(out)
    }

    fn finish(
        &self,
        pass: GpuPass,
        cache: &mut GpuCache,
        logits: GpuAct,
    ) -> Result<Vec<f32>, ModelError> {
        let bytes = self.run(pass, cache, logits.buf())?;
        Ok(bytes[..logits.len() * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn finish_argmax(
        &self,
        mut pass: GpuPass,
        cache: &mut GpuCache,
        logits: GpuAct,
        vocab: usize,
    ) -> Result<Vec<u32>, ModelError> {
        let rows = logits.tokens;
        let ids = self.words(rows as u64);
        self.gpu
            .argmax(&mut pass.encoder, logits.buf(), ids.buf(), rows, vocab)?;
        self.read_ids(pass, cache, ids.buf())
    }

    fn finish_sample(
        &self,
        mut pass: GpuPass,
        cache: &mut GpuCache,
        logits: GpuAct,
        vocab: usize,
        choices: &[super::SampleChoice],
        penalties: &[Option<super::Penalty<'_>>],
    ) -> Result<Vec<u32>, ModelError> {
        let ids = self.words(choices.len() as u64);
        if penalties.iter().any(Option::is_some) {
            self.gpu
                .penalize(&mut pass.encoder, logits.buf(), vocab, penalties)?;
        }
        self.gpu
            .sample(&mut pass.encoder, logits.buf(), ids.buf(), vocab, choices)?;
        self.read_ids(pass, cache, ids.buf())
    }
}

/// The weights' rows one after another as one dense f32 matrix (quantized parts dequantized).
fn dense_stack(weights: &[Weight]) -> Result<Weight, ModelError> {
    let cols = weights
        .first()
        .and_then(|w| w.shape().get(1).copied())
        .unwrap_or(0);
    let mut data = Vec::new();
    let mut rows = 0;
    for w in weights {
        let shape = w.shape();
        if shape.len() != 2 || shape[1] != cols {
            return Err(ModelError::Gpu(format!(
                "linear weights of shapes {shape:?} and [_, {cols}] read different inputs"
            )));
        }
        match w {
            Weight::Quant(q) => data.extend(q.dequantize()),
            Weight::Dense(t) => data.extend_from_slice(&t.data),
            Weight::Sparse(_) => return Err(sparse_on_gpu()),
        }
        rows += shape[0];
    }
    Ok(Weight::Dense(DenseTensor {
        shape: vec![rows, cols],
        data,
    }))
}

/// The GPU has no 2:4 kernel yet: a sparse checkpoint is refused rather than silently
/// decoded to dense (which would double its memory and hide that it is not accelerated).
fn sparse_on_gpu() -> ModelError {
    ModelError::Gpu(
        "this checkpoint has 2:4 sparse matrices, which the GPU backend does not run yet; use \
         --device cpu"
            .into(),
    )
}

impl From<GpuError> for ModelError {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::CacheFull { capacity } => ModelError::CacheFull { capacity },
            e => ModelError::Gpu(e.to_string()),
        }
    }
}
