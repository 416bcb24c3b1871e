//! Prefill attention: tiled causal flash-attention over the paged cache (prefill.wgsl).

use bytemuck::{Pod, Zeroable};

use super::AttentionConfig;
use crate::kernels::View;
use crate::{GpuBuffer, GpuError, GpuKvCache, KvBatch};

/// prefill.wgsl for head dimensions up to 64, 128 and 256: key tiles (BK) shrink as rows grow
/// so that the tiles fit 32 KiB of workgroup memory (Metal's limit).
pub const SOURCE_64: &str = concat!(
    "const HD_MAX: u32 = 64u; const BK: u32 = 32u;\n",
    include_str!("prefill.wgsl")
);
pub const SOURCE_128: &str = concat!(
    "const HD_MAX: u32 = 128u; const BK: u32 = 16u;\n",
    include_str!("prefill.wgsl")
);
pub const SOURCE_256: &str = concat!(
    "const HD_MAX: u32 = 256u; const BK: u32 = 4u;\n",
    include_str!("prefill.wgsl")
);

/// Mirrors `Params` in prefill.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    block_size: u32,
    window: u32,
    scale: f32,
    head0: u32,
    shard_heads: u32,
    q_offset: u32,
    q_stride: u32,
    _pad: [u32; 2],
}

impl GpuKvCache {
    /// Attention of `batch`'s tokens over `layer`'s cache, a tile of up to 16 consecutive
    /// tokens of one sequence per workgroup: prefill, or a chunk of it whose earlier tokens
    /// are already cached. Correct for any batch (a tile breaks where the sequence or the
    /// positions do), but single tokens are better served by
    /// [`GpuKvCache::decode_attention`].
    // q (tokens, heads, head_dim) -> out (tokens, heads, head_dim)
    pub fn prefill_attention(
        &self,
        layer: usize,
        batch: &KvBatch,
        q: &GpuBuffer,
        out: &GpuBuffer,
        cfg: AttentionConfig,
    ) -> Result<(), GpuError> {
        self.submit_now(q, cfg.heads, |enc, q| {
            self.record_prefill_attention(enc, layer, batch, q, out, cfg)
        })
    }

    /// [`GpuKvCache::prefill_attention`] recorded into `encoder`, with q where it lies (each
    /// token's heads at the view's offset and stride: a part of a stacked q|k|v output).
    // q (tokens, heads * head_dim) view -> out (tokens, heads, head_dim)
    pub fn record_prefill_attention(
        &self,
        encoder: &mut crate::Recorder,
        layer: usize,
        batch: &KvBatch,
        q: View<'_>,
        out: &GpuBuffer,
        cfg: AttentionConfig,
    ) -> Result<(), GpuError> {
        let (window, q_offset, q_stride) =
            self.check_attention("prefill attention", layer, batch, cfg, q, out)?;
        if batch.tokens == 0 {
            return Ok(());
        }
        let gpu = &self.gpu;
        let hd = self.shape.head_dim;
        let (source, key) = match hd {
            0..=64 => (SOURCE_64, "attention prefill 64"),
            65..=128 => (SOURCE_128, "attention prefill 128"),
            _ => (SOURCE_256, "attention prefill 256"),
        };
        let pipe = self.pipeline(key, true, || source.into());
        // One dispatch per buffer of the layer, over the query heads that read its kv heads.
        let shard_q_heads = cfg.heads / self.shape.kv_heads * self.shard_heads;
        for shard in 0..self.buffers_per_layer() {
            let params = Params {
                heads: cfg.heads as u32,
                kv_heads: self.shape.kv_heads as u32,
                head_dim: hd as u32,
                block_size: self.shape.block_size as u32,
                window,
                scale: 1.0 / (hd as f32).sqrt(),
                head0: (shard * shard_q_heads) as u32,
                shard_heads: self.shard_heads as u32,
                q_offset,
                q_stride,
                _pad: [0; 2],
            };
            let (keys, values) = self.shard(layer, shard);
            let buffers = [
                q.buffer,
                keys,
                values,
                &*batch.info,
                &*batch.tables,
                &*batch.tiles,
                out,
            ];
            // Tiles never outnumber tokens, which check_attention bounds.
            let groups = [batch.n_tiles as u32, shard_q_heads as u32, 1];
            gpu.dispatch(encoder, &pipe, &params, &buffers, groups);
        }
        Ok(())
    }
}
