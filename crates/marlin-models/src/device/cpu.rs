//! The CPU device: each op runs at once on host slices, with the fused quantized kernels and
//! SIMD of `marlin-cpu` and rayon across rows and heads.

use marlin_cpu::CpuBackend;
use rayon::prelude::*;

use super::{AttentionParts, Device, Part};
use crate::kv_cache::CpuKvCache;
use crate::layers::{Embedding, LinearGroup};
use crate::rope::{angles, rotate_by};
use crate::{ModelConfig, ModelError, SeqId, Weight};

/// Values of an element-wise op worth splitting over threads (a decode step's 16 rows of 1536
/// are not: waking the other thread costs more).
const PARALLEL_VALUES: usize = 64 * 1024;

/// The CPU at one instruction set and activation precision.
#[derive(Debug, Clone)]
pub struct CpuDevice {
    pub cpu: CpuBackend,
    /// Sees the input of every product before it runs (GPTQ's Hessians); `None` to run plainly.
    pub observer: Option<Observer>,
}

impl CpuDevice {
    pub fn new(cpu: CpuBackend) -> Self {
        CpuDevice {
            cpu,
            observer: None,
        }
    }
}

/// A callback given each product's input `x (tokens, width)` and `width`, in the order the
/// architecture runs its products (for a Llama layer: q|k|v, o, gate|up, down).
#[derive(Clone)]
pub struct Observer(pub std::sync::Arc<ObserveFn>);

/// What an [`Observer`] calls: `(x, width)`.
pub type ObserveFn = dyn Fn(&[f32], usize) + Send + Sync;

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// Rows of `width` f32 values, one per token.
pub struct CpuAct {
    pub data: Vec<f32>,
    pub width: usize,
}

/// The tokens of a pass: `(sequence, position)` of each, and how many each sequence adds.
pub struct CpuPass {
    places: Vec<(SeqId, usize)>,
    counts: Vec<(SeqId, usize)>,
    /// RoPE's (sin, cos) for each token's position, head_dim / 2 a token: made by the first
    /// layer's attention, used by every layer (a batch-16 step had spent ~0.5 ms on sin_cos).
    angles: Vec<(f32, f32)>,
}

impl Device for CpuDevice {
    type Act = CpuAct;
    type Linear = LinearGroup;
    type Vector = Vec<f32>;
    type Embedding = Embedding;
    type Cache = CpuKvCache;
    type Pass = CpuPass;

    fn describe(&self) -> String {
        format!("CPU ({})", self.cpu.isa())
    }

    fn linear(
        &self,
        weights: Vec<Weight>,
        biases: Vec<Option<Vec<f32>>>,
    ) -> Result<LinearGroup, ModelError> {
        LinearGroup::new(&self.cpu, weights, biases)
    }

    fn vector(&self, values: Vec<f32>) -> Result<Vec<f32>, ModelError> {
        Ok(values)
    }

    fn embedding(&self, table: Weight) -> Result<Embedding, ModelError> {
        Embedding::new(table)
    }

    fn cache(
        &self,
        config: &ModelConfig,
        block_size: usize,
        max_tokens: usize,
    ) -> Result<CpuKvCache, ModelError> {
        Ok(CpuKvCache::new(config, block_size, max_tokens))
    }

    fn max_cache_tokens(&self, _config: &ModelConfig) -> usize {
        // Memory is taken block by block as sequences grow.
        usize::MAX
    }

    fn kv_bytes_per_token(&self, config: &ModelConfig) -> u64 {
        CpuKvCache::bytes_per_token(config)
    }

    fn begin(
        &self,
        cache: &mut CpuKvCache,
        counts: &[(SeqId, usize)],
    ) -> Result<CpuPass, ModelError> {
        let mut places = Vec::new();
        for &(seq, n) in counts {
            cache.reserve(seq, n)?;
            let start = cache.len(seq);
            places.extend((start..start + n).map(|p| (seq, p)));
        }
        Ok(CpuPass {
            places,
            counts: counts.to_vec(),
            angles: Vec::new(),
        })
    }

    fn embed(
        &self,
        _pass: &mut CpuPass,
        table: &Embedding,
        tokens: &[u32],
    ) -> Result<CpuAct, ModelError> {
        Ok(CpuAct {
            data: table.forward(tokens),
            width: table.hidden(),
        })
    }

    fn rms_norm(
        &self,
        _pass: &mut CpuPass,
        x: &CpuAct,
        weight: &Vec<f32>,
        eps: f32,
    ) -> Result<CpuAct, ModelError> {
        let mut data = x.data.clone();
        data.chunks_exact_mut(weight.len())
            .for_each(|row| rms_norm_row(row, weight, eps));
        Ok(CpuAct {
            data,
            width: x.width,
        })
    }

    fn rms_norm_heads(
        &self,
        _pass: &mut CpuPass,
        x: &mut CpuAct,
        part: Part,
        weight: &Vec<f32>,
        eps: f32,
    ) -> Result<(), ModelError> {
        for row in x.data.chunks_exact_mut(x.width) {
            row[part.offset..part.offset + part.width()]
                .chunks_exact_mut(part.head_dim)
                .for_each(|head| rms_norm_row(head, weight, eps));
        }
        Ok(())
    }

    fn matmul(
        &self,
        _pass: &mut CpuPass,
        x: &CpuAct,
        w: &LinearGroup,
    ) -> Result<CpuAct, ModelError> {
        let tokens = x.data.len() / x.width;
        if let Some(observe) = &self.observer {
            observe.0(&x.data, x.width);
        }
        Ok(CpuAct {
            data: w.forward(&self.cpu, &x.data, tokens)?,
            width: w.out_features(),
        })
    }

    fn attention(
        &self,
        pass: &mut CpuPass,
        cache: &mut CpuKvCache,
        qkv: &mut CpuAct,
        parts: AttentionParts,
        inv_freq: &Vec<f32>,
    ) -> Result<CpuAct, ModelError> {
        let AttentionParts { layer, q, k, v, .. } = parts;
        // q and k lie side by side: one rotation covers both.
        let qk = Part {
            offset: q.offset,
            heads: q.heads + k.heads,
            head_dim: q.head_dim,
        };
        if pass.angles.is_empty() {
            pass.angles = (pass.places.iter())
                .flat_map(|&(_, pos)| angles(pos, inv_freq))
                .collect();
        }
        let rows = qkv.data.chunks_exact_mut(qkv.width);
        for (row, angles) in rows.zip(pass.angles.chunks_exact(inv_freq.len())) {
            rotate_by(&mut row[qk.offset..qk.offset + qk.width()], angles);
        }
        for (row, &(seq, pos)) in qkv.data.chunks_exact(qkv.width).zip(&pass.places) {
            let (keys, values) = (
                &row[k.offset..k.offset + k.width()],
                &row[v.offset..v.offset + v.width()],
            );
            cache.write(layer, seq, pos, keys, values);
        }
        Ok(CpuAct {
            data: attention(&self.cpu, qkv, &pass.places, cache, parts),
            width: parts.q.width(),
        })
    }

    fn swiglu(
        &self,
        _pass: &mut CpuPass,
        gate_up: &CpuAct,
        ff: usize,
    ) -> Result<CpuAct, ModelError> {
        let rows = gate_up.data.len() / gate_up.width;
        let mut data = vec![0f32; rows * ff];
        let each = |(row, out): (&[f32], &mut [f32])| {
            let (gate, up) = row.split_at(ff);
            self.cpu.silu_mul(gate, &up[..ff], out);
        };
        // A prefill chunk's rows in parallel; a decode step's few rows are cheaper on one thread.
        if rows * ff >= PARALLEL_VALUES {
            let pairs = gate_up.data.par_chunks_exact(gate_up.width);
            pairs.zip(data.par_chunks_exact_mut(ff)).for_each(each);
        } else {
            let pairs = gate_up.data.chunks_exact(gate_up.width);
            pairs.zip(data.chunks_exact_mut(ff)).for_each(each);
        }
        Ok(CpuAct { data, width: ff })
    }

    fn add(&self, _pass: &mut CpuPass, h: &mut CpuAct, x: &CpuAct) -> Result<(), ModelError> {
        h.data.iter_mut().zip(&x.data).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn rows(&self, _pass: &mut CpuPass, x: &CpuAct, rows: &[usize]) -> Result<CpuAct, ModelError> {
        let w = x.width;
        let data = rows
            .iter()
            .flat_map(|&r| x.data[r * w..(r + 1) * w].iter().copied())
            .collect();
        Ok(CpuAct { data, width: w })
    }

    fn finish(
        &self,
        pass: CpuPass,
        cache: &mut CpuKvCache,
        logits: CpuAct,
    ) -> Result<Vec<f32>, ModelError> {
        for (seq, n) in pass.counts {
            cache.advance(seq, n);
        }
        Ok(logits.data)
    }
}

/// `row / sqrt(mean(row^2) + eps) * weight`, in place.
fn rms_norm_row(row: &mut [f32], weight: &[f32], eps: f32) {
    let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    row.iter_mut()
        .zip(weight)
        .for_each(|(v, w)| *v = *v * inv * w);
}

/// Causal attention of every new token over its sequence's cached positions (itself
/// included; only the last `window` of them with a sliding window), with grouped kv heads.
// qkv (tokens, q|k|v) -> (tokens, heads * hd)
fn attention(
    cpu: &CpuBackend,
    qkv: &CpuAct,
    places: &[(SeqId, usize)],
    cache: &CpuKvCache,
    parts: AttentionParts,
) -> Vec<f32> {
    let AttentionParts {
        layer,
        q,
        k,
        window,
        ..
    } = parts;
    let (heads, hd) = (q.heads, q.head_dim);
    let mut out = vec![0f32; places.len() * q.width()];
    let group = heads / k.heads;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, head) = (i / heads, i % heads);
        let (seq, pos) = places[t];
        let at = t * qkv.width + q.offset + head * hd;
        let qh = &qkv.data[at..at + hd];
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
        cpu.softmax(&mut scores, scale);
        let mut at = 0;
        for (_, values) in spans() {
            let n = values.len() / hd;
            cpu.axpy_rows(&scores[at..at + n], values, o);
            at += n;
        }
    });
    out
}
