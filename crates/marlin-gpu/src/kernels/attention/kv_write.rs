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
    head_dim: u32,
    block_size: u32,
    n: u32,
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
        let params = Params {
            kv_heads: s.kv_heads as u32,
            head_dim: s.head_dim as u32,
            block_size: s.block_size as u32,
            n: n as u32,
        };
        let mut encoder = gpu.encoder();
        let buffers = [
            &self.keys[layer],
            &self.values[layer],
            k,
            v,
            &batch.info,
            &batch.tables,
        ];
        gpu.dispatch(&mut encoder, &pipe, &params, &buffers, grid(n as u64, WG));
        gpu.submit(encoder);
        Ok(())
    }
}
