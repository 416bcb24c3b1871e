//! Writing new keys and values into the paged cache (kv_write.wgsl).

use bytemuck::{Pod, Zeroable};

use crate::kernels::{WG, grid};
use crate::{GpuBuffer, GpuError, GpuKvCache, KvBatch};

pub const SOURCE: &str = include_str!("kv_write.wgsl");

/// Mirrors `Params` in kv_write.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    kv_heads: u32,
    shard_heads: u32,
    head0: u32,
    head_dim: u32,
    block_size: u32,
    n: u32,
    _pad: [u32; 2],
}

impl GpuKvCache {
    /// Stores the keys and values of `batch`'s tokens (each at its reserved position) in
    /// `layer`. Call [`GpuKvCache::advance`] once every layer is written.
    // k, v (tokens, kv_heads, head_dim) -> the cache's slots of those tokens
    pub fn write(
        &self,
        layer: usize,
        batch: &KvBatch,
        k: &GpuBuffer,
        v: &GpuBuffer,
    ) -> Result<(), GpuError> {
        self.check("kv write", layer, batch)?;
        let s = self.shape;
        let n = batch.tokens * s.kv_heads * s.head_dim;
        let bytes = n as u64 * 4;
        if k.len() < bytes || v.len() < bytes {
            return Err(GpuError::Shape {
                op: "kv write",
                what: format!(
                    "{} tokens of {} kv heads of {} need {bytes} bytes; k has {}, v {}",
                    batch.tokens,
                    s.kv_heads,
                    s.head_dim,
                    k.len(),
                    v.len()
                ),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let gpu = &self.gpu;
        let pipe = gpu.pipeline("kv_write", SOURCE);
        let mut encoder = gpu.encoder();
        // Each buffer of the layer takes its own kv heads.
        let per_shard = batch.tokens * self.shard_heads * s.head_dim;
        for shard in 0..self.buffers_per_layer() {
            let params = Params {
                kv_heads: s.kv_heads as u32,
                shard_heads: self.shard_heads as u32,
                head0: (shard * self.shard_heads) as u32,
                head_dim: s.head_dim as u32,
                block_size: s.block_size as u32,
                n: per_shard as u32,
                _pad: [0; 2],
            };
            let (keys, values) = self.shard(layer, shard);
            let buffers = [keys, values, k, v, &batch.info, &batch.tables];
            let groups = grid(per_shard as u64, WG);
            gpu.dispatch(&mut encoder, &pipe, &params, &buffers, groups);
        }
        gpu.submit(encoder);
        Ok(())
    }
}
