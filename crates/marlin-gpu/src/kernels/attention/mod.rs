//! Attention over the paged KV cache ([`crate::GpuKvCache`]): writing new keys and values
//! (`kv_write`; `rope_write` turns q and k by rope on the way), decode attention (split-K flash-decoding: `decode`, then `combine`) and
//! prefill attention (tiled causal flash-attention: `prefill`). Causal, grouped-query (query
//! head `h` reads kv head `h / (heads / kv_heads)`), scale `1 / sqrt(head_dim)`, optional
//! sliding window (a token sees itself and the `window - 1` positions before it), f32
//! throughout. The keys and values of a forward pass's tokens are written before attention,
//! so both kernels read every key from the cache. docs/gpu.md describes the work split.

pub mod combine;
pub mod decode;
pub mod kv_write;
pub mod prefill;
pub mod rope_write;
#[cfg(test)]
mod tests;

use crate::kernels::View;
use crate::{GpuBuffer, GpuError, GpuKvCache, KvBatch};

/// What a layer's attention needs beyond the cache's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionConfig {
    /// Query heads: a multiple of the cache's kv heads.
    pub heads: usize,
    /// Mistral's sliding window: a token sees itself and the `window - 1` before it.
    pub window: Option<usize>,
}

/// The largest head dimension the kernels take (Gemma's 256).
pub const MAX_HEAD_DIM: usize = 256;

/// Workgroups per grid dimension that every device allows.
const MAX_GROUPS: usize = 65535;

impl GpuKvCache {
    /// Records `record` into an encoder of its own, with `q` as whole rows of `heads` heads,
    /// and submits it: the attention ops for callers that do not record a pass.
    fn submit_now(
        &self,
        q: &GpuBuffer,
        heads: usize,
        record: impl FnOnce(&mut crate::Recorder, View<'_>) -> Result<(), GpuError>,
    ) -> Result<(), GpuError> {
        let mut encoder = self.gpu.encoder();
        record(&mut encoder, View::rows(q, heads * self.shape.head_dim))?;
        self.gpu.submit(encoder);
        Ok(())
    }

    /// The checks both attention kernels share; returns the window as the kernels take it
    /// (0: none) and q's offset and stride.
    fn check_attention(
        &self,
        op: &'static str,
        layer: usize,
        batch: &KvBatch,
        cfg: AttentionConfig,
        q: View<'_>,
        out: &GpuBuffer,
    ) -> Result<(u32, u32, u32), GpuError> {
        self.check(op, layer, batch)?;
        let (kv_heads, hd) = (self.shape.kv_heads, self.shape.head_dim);
        let bad = |what: String| Err(GpuError::Shape { op, what });
        if cfg.heads == 0 || !cfg.heads.is_multiple_of(kv_heads) {
            return bad(format!(
                "{} query heads are not a multiple of {kv_heads} kv heads",
                cfg.heads
            ));
        }
        if hd > MAX_HEAD_DIM {
            return bad(format!(
                "head dimension {hd} is above the {MAX_HEAD_DIM} the kernels take"
            ));
        }
        if cfg.heads > MAX_GROUPS || batch.tokens > MAX_GROUPS {
            return bad(format!(
                "{} heads x {} tokens: at most {MAX_GROUPS} of each per pass",
                cfg.heads, batch.tokens
            ));
        }
        let bytes = (batch.tokens * cfg.heads * hd * 4) as u64;
        if out.len() < bytes {
            return bad(format!(
                "{} tokens of {} heads of {hd} need {bytes} bytes; out has {}",
                batch.tokens,
                cfg.heads,
                out.len()
            ));
        }
        let (q_offset, q_stride) = q.check(op, "q", batch.tokens, cfg.heads * hd)?;
        if q.aliases(&View::rows(out, 1)) {
            return bad("q and out are one buffer; the output needs its own".into());
        }
        self.gpu.bindable(op, &[("q", q.buffer), ("out", out)])?;
        let window = match cfg.window {
            Some(0) => return bad("a sliding window of 0 positions".into()),
            Some(w) => u32::try_from(w).unwrap_or(u32::MAX),
            None => 0,
        };
        Ok((window, q_offset, q_stride))
    }
}
