//! Writing new keys and values into the paged cache (kv_write.wgsl).

use bytemuck::{Pod, Zeroable};

use crate::kernels::{View, WG, grid};
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
    k_offset: u32,
    v_offset: u32,
    stride: u32,
    _pad: u32,
}

impl GpuKvCache {
    /// Stores the keys and values of `batch`'s tokens (each at its reserved position) in
    /// `layer`, submitting at once. Call [`GpuKvCache::advance`] once every layer is written.
    // k, v (tokens, kv_heads, head_dim) -> the cache's slots of those tokens
    pub fn write(
        &self,
        layer: usize,
        batch: &KvBatch,
        k: &GpuBuffer,
        v: &GpuBuffer,
    ) -> Result<(), GpuError> {
        let width = self.shape.kv_heads * self.shape.head_dim;
        self.submit_now(k, self.shape.kv_heads, |enc, k| {
            self.record_write(enc, layer, batch, k, View::rows(v, width))
        })
    }

    /// [`GpuKvCache::write`] recorded into `encoder`, with k and v where they lie (each
    /// token's `kv_heads * head_dim` values at a view's offset and stride: parts of a stacked
    /// q|k|v output). k and v must have one stride.
    // k, v (tokens, kv_heads * head_dim) views -> the cache's slots of those tokens
    pub fn record_write(
        &self,
        encoder: &mut crate::Recorder,
        layer: usize,
        batch: &KvBatch,
        k: View<'_>,
        v: View<'_>,
    ) -> Result<(), GpuError> {
        const OP: &str = "kv write";
        self.check(OP, layer, batch)?;
        let s = self.shape;
        let width = s.kv_heads * s.head_dim;
        let (k_offset, stride) = k.check(OP, "k", batch.tokens, width)?;
        let (v_offset, v_stride) = v.check(OP, "v", batch.tokens, width)?;
        if stride != v_stride {
            return Err(GpuError::Shape {
                op: OP,
                what: format!("k and v have strides {stride} and {v_stride}; they must agree"),
            });
        }
        let gpu = &self.gpu;
        gpu.bindable(OP, &[("k", k.buffer), ("v", v.buffer)])?;
        let n = batch.tokens * s.kv_heads * s.head_dim;
        if n == 0 {
            return Ok(());
        }
        let pipe = self.pipeline("kv_write", false, || SOURCE.into());
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
                k_offset,
                v_offset,
                stride,
                _pad: 0,
            };
            let (keys, values) = self.shard(layer, shard);
            let buffers = [
                keys,
                values,
                k.buffer,
                v.buffer,
                &*batch.info,
                &*batch.tables,
            ];
            let groups = grid(per_shard as u64, WG);
            gpu.dispatch(encoder, &pipe, &params, &buffers, groups);
        }
        Ok(())
    }
}
