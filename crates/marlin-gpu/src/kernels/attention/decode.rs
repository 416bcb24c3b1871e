//! Decode attention: split-K flash-decoding over the paged cache (decode.wgsl, then
//! combine.wgsl).

use bytemuck::{Pod, Zeroable};

use super::{AttentionConfig, combine};
use crate::kernels::View;
use crate::{GpuBuffer, GpuError, GpuKvCache, KvBatch};

/// decode.wgsl after the reductions through subgroup operations and decode_keys.wgsl.
pub const SOURCE_SUBGROUP: &str = concat!(
    include_str!("reduce_subgroup.wgsl"),
    include_str!("decode_keys.wgsl"),
    include_str!("decode.wgsl")
);
/// decode.wgsl after the reductions through workgroup memory and decode_keys.wgsl.
pub const SOURCE_SHARED: &str = concat!(
    include_str!("reduce_shared.wgsl"),
    include_str!("decode_keys.wgsl"),
    include_str!("decode.wgsl")
);

/// decode_subgroup.wgsl after decode_keys.wgsl, for its constants (SG, ACC) to precede.
pub const SOURCE_SUBGROUP_SPLIT: &str = concat!(
    include_str!("decode_keys.wgsl"),
    include_str!("decode_subgroup.wgsl")
);

/// Keys per workgroup step (`WG` in decode.wgsl).
const TILE: usize = 128;
/// The smallest chunk, and the step of chunk lengths. Each invocation scores a whole key, a
/// long serial loop, so a decode step of one sequence is latency-bound unless many workgroups
/// share the keys: on the H100 a Llama-3.1-8B layer's decode attention over 130 keys took
/// 86 µs as one 256-key chunk per head (32 workgroups in all).
const MIN_CHUNK: usize = 32;
/// The step of chunk lengths for decode_subgroup.wgsl: its 4 subgroups take 16 keys each at a
/// time. A context of up to this many keys is one split, attended without combine.wgsl.
/// `MARLIN_DECODE_CHUNK` (a multiple of 64) overrides it, for tuning.
const SUBGROUP_CHUNK: usize = 64;

/// decode_subgroup.wgsl's pipeline key for a smallest subgroup size `min` and `acc` vec4s per
/// lane.
pub(crate) fn subgroup_key(min: u32, acc: usize) -> String {
    let (batch, hoist) = subgroup_tuning();
    format!(
        "attention decode sg{min} acc{acc} b{batch} h{}",
        hoist as u8
    )
}

/// decode_subgroup.wgsl's source for those constants (built only when the pipeline is).
pub(crate) fn subgroup_source(min: u32, acc: usize) -> String {
    let (batch, hoist) = subgroup_tuning();
    format!(
        "const SG: u32 = {min}u;\nconst ACC: u32 = {acc}u;\nconst BATCH: u32 = {batch}u;\n\
         const HOIST: bool = {hoist};\n{SOURCE_SUBGROUP_SPLIT}"
    )
}

/// Keys a subgroup takes at once, and whether their values are loaded together with their keys
/// (before the scores' reductions, not after). On the H100 (Llama-3.1-8B's shape, f16 cache,
/// `examples/attention_cost.rs`) 8 keys with their values hoisted took 62 µs a layer at 12288
/// keys where 16 without took 111-125 (and 32 took 162): fewer registers a lane, more
/// subgroups in flight. `MARLIN_DECODE_BATCH` and `MARLIN_DECODE_HOIST=0|1` override them, for
/// tuning.
fn subgroup_tuning() -> (u32, bool) {
    static BATCH: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    static HOIST: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let batch = crate::kernels::tuned(&BATCH, "MARLIN_DECODE_BATCH").map_or(8, |b| b.clamp(1, 32));
    let hoist = crate::kernels::tuned(&HOIST, "MARLIN_DECODE_HOIST") != Some(0);
    (batch, hoist)
}

/// Vec4s of the output each lane keeps: the head's vec4s over the subgroup's lanes. A hardware
/// GPU's smallest subgroup size is trusted (32 on NVIDIA and Apple: one vec4 a lane at
/// head_dim 128, which measured 10% faster than keeping four); a software adapter may run
/// subgroups smaller than it reports (lavapipe at a vector width of 1024 reports 32 and runs
/// 16), so there the lanes are counted as 4. `MARLIN_DECODE_ACC` overrides it, for tuning.
fn subgroup_acc(gpu: &crate::Gpu, hd: usize) -> usize {
    static ACC: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let lanes = if gpu.is_software() {
        4
    } else {
        gpu.capabilities().subgroup_min_size.max(4) as usize
    };
    crate::kernels::tuned(&ACC, "MARLIN_DECODE_ACC")
        .map_or((hd / 4).div_ceil(lanes), |a| a as usize)
}

fn subgroup_chunk() -> usize {
    static TUNED: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    crate::kernels::tuned(&TUNED, "MARLIN_DECODE_CHUNK").map_or(SUBGROUP_CHUNK, |c| {
        (c as usize).next_multiple_of(64).max(64)
    })
}

/// Splits per (token, head) at most: 32 heads x 32 splits is ~1000 workgroups, enough to fill
/// the largest GPUs for a single sequence; longer contexts get longer chunks instead.
const MAX_SPLITS: usize = 32;

/// Mirrors `Params` in decode_keys.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    block_size: u32,
    chunk: u32,
    splits: u32,
    window: u32,
    scale: f32,
    head0: u32,
    shard_heads: u32,
    q_offset: u32,
    q_stride: u32,
}

/// Keys per split for a longest key range of `keys`.
fn chunk_for(keys: usize, grain: usize) -> usize {
    grain.max(keys.div_ceil(MAX_SPLITS).next_multiple_of(grain))
}

impl GpuKvCache {
    /// Whether decode runs decode_subgroup.wgsl: subgroups (of 4 or more) on and head_dim a
    /// multiple of 4 (its rows are read as vec4s).
    fn subgroup_kernel(&self) -> bool {
        let caps = self.gpu.capabilities();
        caps.subgroup && caps.subgroup_min_size >= 4 && self.shape.head_dim.is_multiple_of(4)
    }

    /// Attention of `batch`'s tokens over `layer`'s cache, each token with its own sequence
    /// and position (any mix: decode steps of many sequences, or prefill tokens). Best where
    /// tokens are few and contexts long; [`GpuKvCache::prefill_attention`] is faster for
    /// runs of tokens of one sequence.
    // q (tokens, heads, head_dim) -> out (tokens, heads, head_dim)
    pub fn decode_attention(
        &self,
        layer: usize,
        batch: &KvBatch,
        q: &GpuBuffer,
        out: &GpuBuffer,
        cfg: AttentionConfig,
    ) -> Result<(), GpuError> {
        self.submit_now(q, cfg.heads, |enc, q| {
            self.record_decode_attention(enc, layer, batch, q, out, cfg)
        })
    }

    /// [`GpuKvCache::decode_attention`] recorded into `encoder`, with q where it lies (each
    /// token's heads at the view's offset and stride: a part of a stacked q|k|v output).
    // q (tokens, heads * head_dim) view -> out (tokens, heads, head_dim)
    pub fn record_decode_attention(
        &self,
        encoder: &mut crate::Recorder,
        layer: usize,
        batch: &KvBatch,
        q: View<'_>,
        out: &GpuBuffer,
        cfg: AttentionConfig,
    ) -> Result<(), GpuError> {
        let checked = self.check_attention("decode attention", layer, batch, cfg, q, out)?;
        let keys = (batch.max_pos + 1).min(cfg.window.unwrap_or(usize::MAX));
        let heads = cfg.heads;
        let grain = if self.subgroup_kernel() {
            subgroup_chunk()
        } else {
            MIN_CHUNK
        };
        self.decode_with_chunk(
            encoder,
            layer,
            batch,
            (q, out),
            (heads, checked),
            chunk_for(keys, grain),
        )
    }

    /// [`GpuKvCache::decode_attention`] with `chunk` keys per split (tests force small ones).
    pub(crate) fn decode_with_chunk(
        &self,
        encoder: &mut crate::Recorder,
        layer: usize,
        batch: &KvBatch,
        (q, out): (View<'_>, &GpuBuffer),
        (heads, (window, q_offset, q_stride)): (usize, (u32, u32, u32)),
        chunk: usize,
    ) -> Result<(), GpuError> {
        if batch.tokens == 0 {
            return Ok(());
        }
        let gpu = &self.gpu;
        let hd = self.shape.head_dim;
        let keys = (batch.max_pos + 1).min(if window == 0 {
            usize::MAX
        } else {
            window as usize
        });
        let mut splits = keys.div_ceil(chunk);
        let mut chunk = chunk;
        // The partials must fit one binding: fewer, longer chunks where they would not.
        let per_split = (batch.tokens * heads * (hd + 2) * 4) as u64;
        let limit = gpu.capabilities().max_storage_binding;
        if splits as u64 * per_split > limit {
            splits = (limit / per_split).max(1) as usize;
            chunk = keys.div_ceil(splits).next_multiple_of(TILE);
            splits = keys.div_ceil(chunk);
        }
        if splits > super::MAX_GROUPS {
            return Err(GpuError::Shape {
                op: "decode attention",
                what: format!("{splits} splits of {chunk} keys: use longer chunks"),
            });
        }
        // Written here and read by the combine right after: the device's scratch buffer, the
        // same one step after step.
        let part = gpu.scratch(splits as u64 * per_split);

        let sg = self.subgroup_kernel();
        let pipe = if sg {
            let caps = gpu.capabilities();
            let min = caps.subgroup_min_size.max(1);
            let acc = subgroup_acc(gpu, hd);
            self.pipeline(&subgroup_key(min, acc), false, || subgroup_source(min, acc))
        } else if gpu.capabilities().subgroup {
            self.pipeline("attention decode (subgroup)", false, || {
                SOURCE_SUBGROUP.into()
            })
        } else {
            self.pipeline("attention decode (shared)", false, || SOURCE_SHARED.into())
        };
        let shard_q_heads = heads / self.shape.kv_heads * self.shard_heads;
        for shard in 0..self.buffers_per_layer() {
            let params = Params {
                heads: heads as u32,
                kv_heads: self.shape.kv_heads as u32,
                head_dim: hd as u32,
                block_size: self.shape.block_size as u32,
                chunk: chunk as u32,
                splits: splits as u32,
                window,
                scale: 1.0 / (hd as f32).sqrt(),
                head0: (shard * shard_q_heads) as u32,
                shard_heads: self.shard_heads as u32,
                q_offset,
                q_stride,
            };
            let (keys, values) = self.shard(layer, shard);
            let groups = [splits as u32, shard_q_heads as u32, batch.tokens as u32];
            let mut buffers = vec![q.buffer, keys, values, &*batch.info, &*batch.tables, &part];
            if sg {
                buffers.push(out);
            }
            gpu.dispatch(encoder, &pipe, &params, &buffers, groups);
        }
        if sg && splits == 1 {
            // decode_subgroup.wgsl wrote the output itself.
            return Ok(());
        }

        let pipe = gpu.pipeline("attention combine", combine::SOURCE);
        let params = combine::Params {
            heads: heads as u32,
            head_dim: hd as u32,
            splits: splits as u32,
            _pad: 0,
        };
        let groups = [heads as u32, batch.tokens as u32, 1];
        gpu.dispatch(encoder, &pipe, &params, &[&part, out], groups);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_whole_grains_and_splits_stay_few() {
        for grain in [MIN_CHUNK, SUBGROUP_CHUNK] {
            assert_eq!(chunk_for(1, grain), grain);
            assert_eq!(chunk_for(300, grain), grain);
            for keys in [1000, 8191, 131_072, 1_000_003] {
                let chunk = chunk_for(keys, grain);
                assert_eq!(chunk % grain, 0);
                assert!(keys.div_ceil(chunk) <= MAX_SPLITS, "{keys}");
            }
        }
    }
}
