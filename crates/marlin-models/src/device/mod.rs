//! What a model asks of the hardware it runs on. An architecture (llama.rs) is written once
//! against [`Device`]: it says which ops run in which order on which weights, and each device
//! decides how. The CPU ([`cpu`]) computes each op at once on host slices; the GPU ([`gpu`])
//! records every op of a forward pass into one command encoder, submits it once, and reads back
//! only the logits.
//!
//! The ops are the few a decoder layer is made of, at the granularity the GPU kernels fuse
//! (DESIGN.md: one encoder per forward pass, the attention writes the cache and attends in one
//! call), so neither device pays for the other's shape.

pub mod cpu;
pub mod gpu;

use crate::{ModelConfig, ModelError, SeqId, Weight};

/// Where one tensor lies in each token's row of a wider activation: `heads` heads of
/// `head_dim` values from column `offset` on (q, k and v of a fused q|k|v projection; gate and
/// up of a fused gate|up one). The ops read and write a part in place, without copying it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub offset: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Part {
    /// Values of one token.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// The attention of one layer: the parts of its fused q|k|v activation and the window.
#[derive(Debug, Clone, Copy)]
pub struct AttentionParts {
    pub layer: usize,
    pub q: Part,
    pub k: Part,
    pub v: Part,
    /// Mistral's sliding window (a token sees itself and the `window - 1` before it).
    pub window: Option<usize>,
}

/// What a product multiplies: an activation as it is, or the RMSNorm of its rows, or the
/// SwiGLU of its gate and up halves. A device may fuse the function into the product (the GPU
/// does at decode: a dispatch fewer each).
pub enum Input<'a, D: Device> {
    Plain(&'a D::Act),
    /// RMSNorm of every row with this weight and epsilon (as [`Device::rms_norm`]).
    RmsNorm(&'a D::Act, &'a D::Vector, f32),
    /// `silu(gate) * up` of a fused gate|up activation of `2 * ff` columns (as
    /// [`Device::swiglu`]).
    SwiGlu(&'a D::Act, usize),
}

impl<D: Device> Clone for Input<'_, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D: Device> Copy for Input<'_, D> {}

impl<'a, D: Device> Input<'a, D> {
    /// The activation the input is computed from.
    pub fn source(&self) -> &'a D::Act {
        match *self {
            Input::Plain(x) | Input::RmsNorm(x, ..) | Input::SwiGlu(x, _) => x,
        }
    }
}

/// `f(x) W^T` op by op: the norm or SwiGLU, then the product. What [`Device::project`] does
/// unless a device fuses it.
// x (t, in) or gate|up (t, 2 * in) -> (t, out)
pub fn project_unfused<D: Device>(
    dev: &D,
    pass: &mut D::Pass,
    x: Input<'_, D>,
    w: &D::Linear,
) -> Result<D::Act, ModelError> {
    match x {
        Input::Plain(x) => dev.matmul(pass, x, w),
        Input::RmsNorm(x, weight, eps) => {
            let normed = dev.rms_norm(pass, x, weight, eps)?;
            dev.matmul(pass, &normed, w)
        }
        Input::SwiGlu(gate_up, ff) => {
            let act = dev.swiglu(pass, gate_up, ff)?;
            dev.matmul(pass, &act, w)
        }
    }
}

/// A device a model runs on. Weights are prepared for it once at load; a forward pass is
/// [`Device::begin`], the ops in order, then [`Device::finish`].
pub trait Device: Send + Sync + Sized {
    /// Activations: one row of f32 values per token of the pass.
    type Act;
    /// A linear layer's weights (one matrix, or several reading the same input stacked by
    /// rows) with their biases.
    type Linear: Send + Sync;
    /// A vector of weights: a norm's scales, rope's inverse frequencies.
    type Vector: Send + Sync;
    type Embedding: Send + Sync;
    /// The keys and values of every sequence, paged.
    type Cache;
    /// One forward pass: where its tokens sit in the cache and, on a GPU, the commands so far.
    type Pass;

    /// The device in words, for logs and `inspect`.
    fn describe(&self) -> String;

    /// `y = x W^T + b` for weights `[out_i, in]` that all read the same input: the outputs
    /// lie side by side, part `i` at the sum of the widths before it.
    fn linear(
        &self,
        weights: Vec<Weight>,
        biases: Vec<Option<Vec<f32>>>,
    ) -> Result<Self::Linear, ModelError>;
    fn vector(&self, values: Vec<f32>) -> Result<Self::Vector, ModelError>;
    fn embedding(&self, table: Weight) -> Result<Self::Embedding, ModelError>;
    /// A cache for `max_tokens` positions over all sequences, in blocks of `block_size`.
    fn cache(
        &self,
        config: &ModelConfig,
        block_size: usize,
        max_tokens: usize,
    ) -> Result<Self::Cache, ModelError>;
    /// The most positions a cache of this device should hold for `config`'s model (a GPU
    /// claims its whole cache up front; the CPU's grows as it fills).
    fn max_cache_tokens(&self, config: &ModelConfig) -> usize;
    /// Bytes of keys and values one position of `config`'s model takes in this device's cache.
    fn kv_bytes_per_token(&self, config: &ModelConfig) -> u64;

    /// Starts a pass over `counts[i].1` new tokens of each sequence `counts[i].0`, placed
    /// after what the cache holds (room is reserved here).
    fn begin(
        &self,
        cache: &mut Self::Cache,
        counts: &[(SeqId, usize)],
    ) -> Result<Self::Pass, ModelError>;

    // tokens (t) -> (t, hidden)
    fn embed(
        &self,
        pass: &mut Self::Pass,
        table: &Self::Embedding,
        tokens: &[u32],
    ) -> Result<Self::Act, ModelError>;

    /// RMSNorm of every row: `x / sqrt(mean(x^2) + eps) * weight`.
    // x (t, dim) -> (t, dim)
    fn rms_norm(
        &self,
        pass: &mut Self::Pass,
        x: &Self::Act,
        weight: &Self::Vector,
        eps: f32,
    ) -> Result<Self::Act, ModelError>;

    /// RMSNorm of each head of `part`, in place (Qwen3's q and k norms).
    // x (t, width) -> same
    fn rms_norm_heads(
        &self,
        pass: &mut Self::Pass,
        x: &mut Self::Act,
        part: Part,
        weight: &Self::Vector,
        eps: f32,
    ) -> Result<(), ModelError>;

    // x (t, in) -> (t, out)
    fn matmul(
        &self,
        pass: &mut Self::Pass,
        x: &Self::Act,
        w: &Self::Linear,
    ) -> Result<Self::Act, ModelError>;

    /// Turns q and k of `qkv` by rotary embeddings at each token's position (Hugging Face's
    /// rotate_half; `inv_freq` has head_dim / 2 values), writes the tokens' keys and values
    /// into `layer` of the cache, then computes causal attention of their queries over their
    /// sequences' positions, GQA included. q is turned in place; k may be left as it was.
    // qkv (t, q|k|v) -> (t, heads * head_dim)
    fn attention(
        &self,
        pass: &mut Self::Pass,
        cache: &mut Self::Cache,
        qkv: &mut Self::Act,
        parts: AttentionParts,
        inv_freq: &Self::Vector,
    ) -> Result<Self::Act, ModelError>;

    /// `silu(gate) * up` for a fused gate|up activation of `2 * ff` columns.
    // gate_up (t, 2 * ff) -> (t, ff)
    fn swiglu(
        &self,
        pass: &mut Self::Pass,
        gate_up: &Self::Act,
        ff: usize,
    ) -> Result<Self::Act, ModelError>;

    /// `h += x`, the residual connection.
    // h (t, d), x (t, d) -> h
    fn add(
        &self,
        pass: &mut Self::Pass,
        h: &mut Self::Act,
        x: &Self::Act,
    ) -> Result<(), ModelError>;

    /// `f(x) W^T + b`, f the input's function ([`project_unfused`] unless the device fuses it).
    // x (t, in) or gate|up (t, 2 * in) -> (t, out)
    fn project(
        &self,
        pass: &mut Self::Pass,
        x: Input<'_, Self>,
        w: &Self::Linear,
    ) -> Result<Self::Act, ModelError> {
        project_unfused(self, pass, x, w)
    }

    /// `h += f(x) W^T + b`: a product and the residual connection after it.
    // x (t, in) or gate|up (t, 2 * in), h (t, out) -> h
    fn project_add(
        &self,
        pass: &mut Self::Pass,
        x: Input<'_, Self>,
        w: &Self::Linear,
        h: &mut Self::Act,
    ) -> Result<(), ModelError> {
        let y = self.project(pass, x, w)?;
        self.add(pass, h, &y)
    }

    /// [`Device::project`] of a stacked gate|up whose output only feeds
    /// `Input::SwiGlu(.., _)` of `next` (the down product): a device may make that product's
    /// input in this one (the GPU puts silu(gate) * up on the int8 grids `next` takes, in the
    /// same dispatch). By default `project`.
    // x (t, in) -> gate|up (t, 2 * ff)
    fn project_before_swiglu(
        &self,
        pass: &mut Self::Pass,
        x: Input<'_, Self>,
        w: &Self::Linear,
        next: &Self::Linear,
    ) -> Result<Self::Act, ModelError> {
        let _ = next;
        self.project(pass, x, w)
    }

    /// [`Device::project_add`] where the next op is `project(Input::RmsNorm(h, norm, _), next)`:
    /// a device may make that product's input in this one (the GPU puts h times `norm` on the
    /// int8 grids `next` takes, in the same dispatch). By default `project_add`.
    // x (t, in) or gate|up (t, 2 * in), h (t, out) -> h
    fn project_add_before_norm(
        &self,
        pass: &mut Self::Pass,
        x: Input<'_, Self>,
        w: &Self::Linear,
        h: &mut Self::Act,
        norm: &Self::Vector,
        next: &Self::Linear,
    ) -> Result<(), ModelError> {
        let _ = (norm, next);
        self.project_add(pass, x, w, h)
    }

    /// The rows `rows` of `x`, in that order (each sequence's last token, for the logits).
    // x (t, d) -> (rows.len(), d)
    fn rows(
        &self,
        pass: &mut Self::Pass,
        x: &Self::Act,
        rows: &[usize],
    ) -> Result<Self::Act, ModelError>;

    /// Ends the pass: the cache counts its tokens, and `logits` comes back to the host.
    // logits (sequences, vocab) -> host (sequences * vocab)
    fn finish(
        &self,
        pass: Self::Pass,
        cache: &mut Self::Cache,
        logits: Self::Act,
    ) -> Result<Vec<f32>, ModelError>;

    /// [`Device::finish`] for greedy decoding: only each row's [`argmax`] comes back (a GPU
    /// computes it there, and reads back a token id instead of the vocabulary's logits).
    // logits (sequences, vocab) -> host (sequences)
    fn finish_argmax(
        &self,
        pass: Self::Pass,
        cache: &mut Self::Cache,
        logits: Self::Act,
        vocab: usize,
    ) -> Result<Vec<u32>, ModelError> {
        let logits = self.finish(pass, cache, logits)?;
        Ok(logits.chunks_exact(vocab).map(argmax).collect())
    }

    /// [`Device::finish`] for sampling: only each row's token drawn under `choices[row]`
    /// ([`sample_row`]), after `penalties[row]` where given (empty: none), comes back (a GPU
    /// penalizes and draws it there).
    // logits (sequences, vocab) -> host (sequences)
    fn finish_sample(
        &self,
        pass: Self::Pass,
        cache: &mut Self::Cache,
        logits: Self::Act,
        vocab: usize,
        choices: &[SampleChoice],
        penalties: &[Option<Penalty<'_>>],
    ) -> Result<Vec<u32>, ModelError> {
        let logits = self.finish(pass, cache, logits)?;
        Ok(logits
            .chunks_exact(vocab)
            .zip(choices)
            .enumerate()
            .map(|(r, (row, c))| match penalties.get(r).copied().flatten() {
                Some(p) => sample_row(&penalize(row, &p), c),
                None => sample_row(row, c),
            })
            .collect())
    }
}

/// One row's repetition, presence and frequency penalties and the tokens its sequence has
/// seen, applied before its draw by [`Device::finish_sample`] (marlin-gpu's type: a GPU applies
/// them where the logits are).
pub use marlin_gpu::Penalty;

/// `logits` with `p` applied to the tokens it has seen ([`Penalty::apply`]).
pub fn penalize(logits: &[f32], p: &Penalty<'_>) -> Vec<f32> {
    let mut out = logits.to_vec();
    for &(t, n) in p.seen {
        if let Some(l) = out.get_mut(t as usize) {
            *l = p.apply(*l, n);
        }
    }
    out
}

/// How one row's token is drawn by [`Device::finish_sample`]: temperature, top-k, top-p, min-p
/// and the host's uniform draw `u` (marlin-gpu's type, the GPU being where it matters).
pub use marlin_gpu::SampleChoice;

/// A token drawn from `logits` under `c`: the tokens kept by top-k, top-p and min-p (in that
/// order; ties at a threshold all kept), then the one, in index order, whose share of their
/// probability mass holds `c.u`. The distribution of marlin_engine's sampler; the GPU's
/// `Gpu::sample` draws from the same one (taking the tokens in another order, so the same `u`
/// may give another token).
pub fn sample_row(logits: &[f32], c: &SampleChoice) -> u32 {
    let mut sorted: Vec<f32> = logits.iter().copied().filter(|l| !l.is_nan()).collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let Some(&mx) = sorted.first() else {
        return 0;
    };
    let p = |l: f32| ((l - mx) / c.temperature).exp();
    let mut floor = f32::NEG_INFINITY;
    if c.top_k > 0 && c.top_k < sorted.len() {
        floor = sorted[c.top_k - 1];
    }
    if c.top_p < 1.0 {
        let kept = || sorted.iter().copied().filter(|&l| l >= floor);
        let total: f32 = kept().map(p).sum();
        let mut mass = 0.0;
        if let Some(l) = kept().find(|&l| {
            mass += p(l);
            mass >= c.top_p * total
        }) {
            floor = l;
        }
    }
    let keep = |l: f32| l >= floor && p(l) >= c.min_p;
    let total: f32 = logits.iter().copied().filter(|&l| keep(l)).map(p).sum();
    let mut r = c.u * total;
    for (i, &l) in logits.iter().enumerate() {
        if keep(l) {
            if r < p(l) {
                return i as u32;
            }
            r -= p(l);
        }
    }
    argmax(logits)
}

/// The index of the largest logit (the first one on ties): greedy decoding's choice.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's penalties change the seen tokens' logits alone, as the GPU's kernel does
    /// (`Penalty::apply`: divide a positive logit, multiply a negative one, then subtract), and
    /// skip tokens past the vocabulary.
    #[test]
    fn penalize_changes_the_seen_tokens_only() {
        let logits = [2.0f32, -1.0, 0.5, 3.0];
        let seen = [(0u32, 2u32), (1, 1), (9, 5)];
        let p = Penalty {
            repetition: 2.0,
            presence: 0.5,
            frequency: 0.25,
            seen: &seen,
        };
        assert_eq!(
            penalize(&logits, &p),
            [2.0 / 2.0 - 1.0, -2.0 - 0.75, 0.5, 3.0]
        );
    }

    /// Over evenly spaced u, `sample_row` draws each kept token for its share of the kept
    /// probability mass, and nothing else: no filter, top-k, top-p and min-p.
    #[test]
    fn sample_row_follows_the_kept_probabilities() {
        let logits = [0.5f32, 2.0, -1.0, 1.0, 0.0];
        let soft: Vec<f64> = {
            let e: Vec<f64> = logits.iter().map(|&l| (l as f64 - 2.0).exp()).collect();
            let t: f64 = e.iter().sum();
            e.iter().map(|x| x / t).collect()
        };
        let base = SampleChoice::plain(1.0);
        // (choice, the tokens it keeps): top-p 0.7 keeps 2.0 and 1.0 (0.55 + 0.20); min-p 0.2
        // keeps the logits within ln 5 of the largest.
        let cases = [
            (base, vec![0, 1, 2, 3, 4]),
            (SampleChoice { top_k: 2, ..base }, vec![1, 3]),
            (SampleChoice { top_p: 0.7, ..base }, vec![1, 3]),
            (SampleChoice { min_p: 0.2, ..base }, vec![0, 1, 3]),
        ];
        let draws = 1000;
        for (c, kept) in cases {
            let mut shares = [0f64; 5];
            for i in 0..draws {
                let u = (i as f32 + 0.5) / draws as f32;
                shares[sample_row(&logits, &SampleChoice { u, ..c }) as usize] +=
                    1.0 / draws as f64;
            }
            let mass: f64 = kept.iter().map(|&i| soft[i]).sum();
            for (i, &share) in shares.iter().enumerate() {
                let want = if kept.contains(&i) {
                    soft[i] / mass
                } else {
                    0.0
                };
                assert!(
                    (share - want).abs() <= 2.0 / draws as f64,
                    "{c:?} {i}: {share} vs {want}"
                );
            }
        }
    }
}
