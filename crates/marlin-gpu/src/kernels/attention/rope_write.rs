//! Rope and the cache write in one dispatch (rope_write.wgsl): a decoder layer's q and k turned,
//! its k and v stored, before attention reads the cache.

use bytemuck::{Pod, Zeroable};

use crate::kernels::view::{apart, need, shape_error};
use crate::kernels::{WG, grid};
use crate::{GpuBuffer, GpuError, GpuKvCache, KvBatch};

pub const SOURCE: &str = concat!(
    include_str!("../rope_angle.wgsl"),
    include_str!("rope_write.wgsl")
);

/// Mirrors `Params` in rope_write.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    tokens: u32,
    heads: u32,
    shard_heads: u32,
    head0: u32,
    head_dim: u32,
    block_size: u32,
    stride: u32,
    q_offset: u32,
    k_offset: u32,
    v_offset: u32,
    _pad: [u32; 2],
}

/// Where q, k and v lie in each token's row of a fused q|k|v activation (in values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QkvLayout {
    /// Values per token's row.
    pub stride: usize,
    /// Query heads (of the cache's head_dim) from `q_offset` on.
    pub heads: usize,
    pub q_offset: usize,
    /// The cache's kv heads, from these offsets on.
    pub k_offset: usize,
    pub v_offset: usize,
}

impl GpuKvCache {
    /// Records rope (Hugging Face's rotate_half, `inv_freq` of head_dim / 2 values, each token
    /// at its position in `batch`) on q in place and on k, and the store of the turned k and of
    /// v in `layer`: [`crate::Gpu::rope`] on q|k then [`GpuKvCache::record_write`], bit for
    /// bit, in one dispatch per buffer of the layer. The row's k is left as it was.
    // qkv (tokens, stride) -> q turned in place; the cache's slots of the tokens
    pub fn record_rope_write(
        &self,
        encoder: &mut crate::Recorder,
        layer: usize,
        batch: &KvBatch,
        qkv: &GpuBuffer,
        at: QkvLayout,
        inv_freq: &GpuBuffer,
    ) -> Result<(), GpuError> {
        const OP: &str = "rope + kv write";
        self.check(OP, layer, batch)?;
        self.check_rope_layout(OP, batch, qkv, at, inv_freq)?;
        let s = self.shape;
        let hd = s.head_dim;
        let gpu = &self.gpu;
        if batch.tokens == 0 || hd == 0 {
            return Ok(());
        }
        let pipe = self.pipeline(OP, false, || SOURCE.into());
        for shard in 0..self.buffers_per_layer() {
            // The first buffer's dispatch turns q.
            let heads = if shard == 0 { at.heads } else { 0 };
            let pairs = batch.tokens * (heads + 2 * self.shard_heads) * (hd / 2);
            let params = Params {
                tokens: batch.tokens as u32,
                heads: heads as u32,
                shard_heads: self.shard_heads as u32,
                head0: (shard * self.shard_heads) as u32,
                head_dim: hd as u32,
                block_size: s.block_size as u32,
                stride: at.stride as u32,
                q_offset: at.q_offset as u32,
                k_offset: at.k_offset as u32,
                v_offset: at.v_offset as u32,
                _pad: [0; 2],
            };
            let (keys, values) = self.shard(layer, shard);
            let buffers = [keys, values, qkv, &*batch.info, &*batch.tables, inv_freq];
            gpu.dispatch(encoder, &pipe, &params, &buffers, grid(pairs as u64, WG));
        }
        Ok(())
    }

    /// The checks on a q|k|v row that rope with the cache write needs: an even head_dim, the
    /// parts inside the row and apart, the buffers large enough and bindable.
    fn check_rope_layout(
        &self,
        op: &'static str,
        batch: &KvBatch,
        qkv: &GpuBuffer,
        at: QkvLayout,
        inv_freq: &GpuBuffer,
    ) -> Result<(), GpuError> {
        let hd = self.shape.head_dim;
        if !hd.is_multiple_of(2) {
            return Err(shape_error(
                op,
                format!("head_dim {hd} is odd; rope pairs halves"),
            ));
        }
        let parts = [
            ("q", at.q_offset, at.heads * hd),
            ("k", at.k_offset, self.shape.kv_heads * hd),
            ("v", at.v_offset, self.shape.kv_heads * hd),
        ];
        for (i, &(name, offset, width)) in parts.iter().enumerate() {
            if offset + width > at.stride {
                return Err(shape_error(
                    op,
                    format!(
                        "{name} ({width} values at {offset}) overruns a row of {}",
                        at.stride
                    ),
                ));
            }
            let overlaps = |&(_, o, w): &(&str, usize, usize)| offset < o + w && o < offset + width;
            if let Some((other, ..)) = parts[i + 1..].iter().find(|p| overlaps(p)) {
                return Err(shape_error(
                    op,
                    format!("{name} and {other} overlap in the row"),
                ));
            }
        }
        need(op, "qkv", qkv, (batch.tokens * at.stride) as u64)?;
        need(op, "inv_freq", inv_freq, (hd / 2) as u64)?;
        apart(op, ("qkv", qkv), &[("inv_freq", inv_freq)])?;
        self.gpu
            .bindable(op, &[("qkv", qkv), ("inv_freq", inv_freq)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::values;
    use crate::kernels::{Heads, View};
    use crate::{Gpu, KvDtype, KvShape};

    /// Rope then write, the two kernels apart, for `(heads, kv_heads, head_dim)` with each layer
    /// in `buffers` buffers of `dtype`: q, the row's k and v, and both layers' caches bit for
    /// bit.
    fn equals_rope_then_write(
        gpu: &Gpu,
        dtype: KvDtype,
        (heads, kv_heads, hd): (usize, usize, usize),
        buffers: usize,
    ) {
        let shape = KvShape {
            layers: 2,
            kv_heads,
            head_dim: hd,
            block_size: 16,
        };
        let capacity = 128;
        let limit = (kv_heads / buffers * capacity * hd * dtype.bytes()) as u64;
        let mut cache = GpuKvCache::with_binding_limit(gpu, shape, dtype, capacity, limit).unwrap();
        assert_eq!(cache.buffers_per_layer(), buffers);
        let (a, b) = (cache.add_sequence(), cache.add_sequence());
        // Sequence b's block comes first: its table is not the identity.
        cache.reserve(b, 20).unwrap();
        cache.reserve(a, 37).unwrap();
        let places = [(a, 0), (a, 36), (b, 3), (b, 19), (a, 17)];
        let batch = cache.batch(&places).unwrap();
        let tokens = places.len();
        // A row: 2 junk values, k, q, v, 3 junk: parts in no particular order.
        let (q_w, kv_w) = (heads * hd, kv_heads * hd);
        let at = QkvLayout {
            stride: 2 + q_w + 2 * kv_w + 3,
            heads,
            q_offset: 2 + kv_w,
            k_offset: 2,
            v_offset: 2 + kv_w + q_w,
        };
        let rows = values(hd as u64, tokens * at.stride, 2.0);
        let inv_freq: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / 1e4f32.powf(2.0 * i as f32 / hd as f32))
            .collect();
        let freq = gpu.upload_f32("inv_freq", &inv_freq);
        let positions: Vec<u32> = places.iter().map(|&(_, p)| p as u32).collect();
        let pos = crate::kernels::testing::upload_u32(gpu, "positions", &positions);

        // Layer 1: fused. Layer 0: rope on a copy's q and k (each part turned on its own), then
        // the write.
        let fused = gpu.upload_f32("qkv", &rows);
        let apart = gpu.upload_f32("qkv", &rows);
        let mut enc = gpu.encoder();
        cache
            .record_rope_write(&mut enc, 1, &batch, &fused, at, &freq)
            .unwrap();
        for (offset, h) in [(at.q_offset, heads), (at.k_offset, kv_heads)] {
            let dims = Heads {
                tokens,
                heads: h,
                head_dim: hd,
            };
            let view = View::part(&apart, offset, at.stride);
            gpu.rope(&mut enc, view, dims, &pos, &freq).unwrap();
        }
        let (k, v) = (
            View::part(&apart, at.k_offset, at.stride),
            View::part(&apart, at.v_offset, at.stride),
        );
        cache.record_write(&mut enc, 0, &batch, k, v).unwrap();
        gpu.submit(enc);

        let what = format!(
            "heads {heads}, kv heads {kv_heads}, head_dim {hd}, {buffers} buffers of {dtype:?}"
        );
        let (got, want) = (gpu.read_f32(&fused).unwrap(), gpu.read_f32(&apart).unwrap());
        for (t, (g, w)) in got
            .chunks(at.stride)
            .zip(want.chunks(at.stride))
            .enumerate()
        {
            let r = &rows[t * at.stride..(t + 1) * at.stride];
            let q = at.q_offset..at.q_offset + q_w;
            assert_eq!(g[q.clone()], w[q.clone()], "q, token {t}, {what}");
            // Everything else in the row is as it was (k turned only on its way to the cache).
            for (i, (&g, &r)) in g.iter().zip(r).enumerate() {
                if !q.contains(&i) {
                    assert_eq!(g, r, "row value {i}, token {t}, {what}");
                }
            }
        }
        for shard in 0..buffers {
            let (k0, v0) = cache.shard(0, shard);
            let (k1, v1) = cache.shard(1, shard);
            let (k1, k0) = (gpu.read(k1).unwrap(), gpu.read(k0).unwrap());
            assert!(k1 == k0, "keys, {what}");
            assert!(k1.iter().any(|&b| b != 0), "no keys written, {what}");
            let (v1, v0) = (gpu.read(v1).unwrap(), gpu.read(v0).unwrap());
            assert!(v1 == v0, "values, {what}");
        }
    }

    #[test]
    fn equals_rope_then_the_write_bit_for_bit() {
        let Some(gpu) = crate::test_gpu() else { return };
        for (dims, buffers) in [
            ((2, 2, 16), 1),
            ((6, 2, 64), 1),
            ((4, 4, 128), 2),
            ((3, 1, 6), 1),
        ] {
            for dtype in KvDtype::ALL {
                if dtype == KvDtype::F32 || gpu.capabilities().shader_f16 {
                    equals_rope_then_write(&gpu, dtype, dims, buffers);
                }
            }
        }
    }

    #[test]
    fn refuses_bad_layouts() {
        let Some(gpu) = crate::test_gpu() else { return };
        let shape = KvShape {
            layers: 1,
            kv_heads: 1,
            head_dim: 4,
            block_size: 16,
        };
        let mut cache = GpuKvCache::new(&gpu, shape, 16).unwrap();
        let s = cache.add_sequence();
        cache.reserve(s, 1).unwrap();
        let batch = cache.batch(&[(s, 0)]).unwrap();
        let (qkv, freq) = (gpu.zeros("qkv", 4 * 12), gpu.zeros("f", 8));
        let good = QkvLayout {
            stride: 12,
            heads: 1,
            q_offset: 0,
            k_offset: 4,
            v_offset: 8,
        };
        let try_with = |at| {
            let mut enc = gpu.encoder();
            cache.record_rope_write(&mut enc, 0, &batch, &qkv, at, &freq)
        };
        assert!(try_with(good).is_ok());
        let e = try_with(QkvLayout {
            v_offset: 9,
            ..good
        })
        .unwrap_err();
        assert!(e.to_string().contains("overruns"), "{e}");
        let e = try_with(QkvLayout {
            k_offset: 2,
            ..good
        })
        .unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        let e = try_with(QkvLayout {
            stride: 16,
            v_offset: 12,
            ..good
        })
        .unwrap_err();
        assert!(e.to_string().contains("qkv"), "{e}");
    }
}
