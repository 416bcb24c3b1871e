//! The paged KV cache on the GPU: keys and values of every layer in device buffers, organised
//! in fixed-size blocks (the same idea and layout as `marlin_models::KvCache`): a pool of
//! blocks, a block table per sequence, allocation, free and truncation on the host. The
//! kernels see the block tables as one u32 buffer uploaded per forward pass ([`KvBatch`]).
//!
//! Storage: one key and one value buffer per layer, each `[blocks][kv_heads][block_size]
//! [head_dim]` of [`KvDtype`] (f16 where the device has SHADER_F16; a head's keys of a block
//! are contiguous, so a tile of keys is one run of memory). Splitting per layer is what keeps a large model's cache under the storage-binding
//! limit: a kernel binds one layer's keys and values, never the whole cache. Where even one
//! layer is too large for a binding, its kv heads are split over several buffers ("shards"),
//! and the kernels run once per shard over the query heads that read it. docs/gpu.md has the
//! arithmetic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::{Gpu, GpuBuffer, GpuError};

/// A sequence's handle in a [`GpuKvCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqId(usize);

/// The shape of a model's KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions per block.
    pub block_size: usize,
}

impl KvShape {
    /// Bytes one position takes: keys and values of every layer and kv head.
    pub fn bytes_per_token(&self, dtype: KvDtype) -> u64 {
        (2 * self.layers * self.kv_heads * self.head_dim * dtype.bytes()) as u64
    }
}

/// How a cache stores keys and values. f16 where the device has SHADER_F16: half the memory
/// (twice the context in the same budget) and half the bytes attention reads per key, at a
/// relative rounding of 2^-11 per element (llama.cpp's and vLLM's default cache type too);
/// the kernels convert on load and compute in f32. f32 where the device has no f16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvDtype {
    F16,
    F32,
}

impl KvDtype {
    /// The type a cache on `gpu` uses: f16 where the device has it.
    pub fn for_gpu(gpu: &Gpu) -> Self {
        if gpu.capabilities().shader_f16 {
            KvDtype::F16
        } else {
            KvDtype::F32
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F16 => 2,
            KvDtype::F32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F16 => "f16",
            KvDtype::F32 => "f32",
        }
    }

    /// A cache kernel's pipeline key for this type.
    pub(crate) fn key(self, key: &str) -> String {
        format!("{key} (kv {})", self.name())
    }

    /// A cache kernel's source for this type: `source` after the line that names the element
    /// type `KV`.
    pub(crate) fn source(self, source: &str) -> String {
        let prelude = match self {
            KvDtype::F16 => "enable f16;\nalias KV = f16;\n",
            KvDtype::F32 => "alias KV = f32;\n",
        };
        format!("{prelude}{source}")
    }

    pub const ALL: [KvDtype; 2] = [KvDtype::F16, KvDtype::F32];
}

pub struct GpuKvCache {
    pub(crate) gpu: Gpu,
    pub(crate) shape: KvShape,
    pub(crate) dtype: KvDtype,
    /// Blocks in the pool (each layer's buffers hold all of them).
    blocks: usize,
    /// Kv heads per buffer (a divisor of kv_heads; all of them unless a layer is too large
    /// for one binding).
    pub(crate) shard_heads: usize,
    /// Per layer, then per group of `shard_heads` kv heads: `[blocks][shard_heads]
    /// [block_size][head_dim]` keys, and values alike.
    keys: Vec<GpuBuffer>,
    values: Vec<GpuBuffer>,
    free: Vec<u32>,
    seqs: Vec<Option<Sequence>>,
    /// Tells this cache's batches from another's.
    pub(crate) id: u64,
    /// The buffers of the last batch dropped, for the next.
    spare: Arc<Mutex<Spare>>,
}

#[derive(Debug, Default)]
struct Sequence {
    blocks: Vec<u32>,
    len: usize,
}

static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(0);

impl GpuKvCache {
    /// A cache holding up to `max_tokens` positions over all sequences. The whole pool is
    /// allocated now (as vLLM does): a GPU buffer cannot grow in place, and claiming the memory
    /// up front means a busy server fails at start, not in the middle of a generation.
    pub fn new(gpu: &Gpu, shape: KvShape, max_tokens: usize) -> Result<Self, GpuError> {
        Self::with_dtype(gpu, shape, KvDtype::for_gpu(gpu), max_tokens)
    }

    /// [`GpuKvCache::new`] storing `dtype` (f16 needs SHADER_F16).
    pub fn with_dtype(
        gpu: &Gpu,
        shape: KvShape,
        dtype: KvDtype,
        max_tokens: usize,
    ) -> Result<Self, GpuError> {
        let limit = gpu
            .capabilities()
            .max_storage_binding
            .min(gpu.device().limits().max_buffer_size);
        Self::with_binding_limit(gpu, shape, dtype, max_tokens, limit)
    }

    /// [`GpuKvCache::new`] storing `dtype`, with buffers of at most `limit` bytes (tests force
    /// f32 on an f16 device, and splits, with it).
    pub(crate) fn with_binding_limit(
        gpu: &Gpu,
        shape: KvShape,
        dtype: KvDtype,
        max_tokens: usize,
        limit: u64,
    ) -> Result<Self, GpuError> {
        let bad = |what: String| GpuError::Shape {
            op: "kv cache",
            what,
        };
        if shape.layers == 0 || shape.kv_heads == 0 || shape.head_dim == 0 {
            return Err(bad(format!("empty shape {shape:?}")));
        }
        if shape.block_size == 0 || max_tokens == 0 {
            return Err(bad("block size and capacity must be at least 1".into()));
        }
        if dtype == KvDtype::F16 && !gpu.capabilities().shader_f16 {
            return Err(bad("an f16 cache on a device without SHADER_F16".into()));
        }
        let size = dtype.bytes();
        // The kernels index elements with u32.
        let limit = limit.min(size as u64 * u32::MAX as u64);
        let blocks = max_tokens.div_ceil(shape.block_size);
        // One kv head's keys of one layer, the smallest unit a buffer holds.
        let head_bytes = (blocks * shape.block_size * shape.head_dim * size) as u64;
        let kv_heads = shape.kv_heads;
        let Some(shard_heads) = (1..=kv_heads)
            .rev()
            .find(|&h| kv_heads.is_multiple_of(h) && h as u64 * head_bytes <= limit)
        else {
            let fits = limit / (shape.head_dim * size) as u64 / shape.block_size as u64
                * shape.block_size as u64;
            return Err(bad(format!(
                "{max_tokens} tokens need {head_bytes} bytes per kv head and layer, more than \
                 one buffer binding of this GPU holds ({limit}); at most {fits} tokens fit: ask \
                 for fewer"
            )));
        };
        let shards = kv_heads / shard_heads;
        let buffers = |what: &str| {
            (0..shape.layers * shards)
                .map(|i| {
                    let label = format!("kv {what} layer {} shard {}", i / shards, i % shards);
                    gpu.zeros(&label, shard_heads as u64 * head_bytes)
                })
                .collect()
        };
        Ok(GpuKvCache {
            gpu: gpu.clone(),
            shape,
            dtype,
            blocks,
            shard_heads,
            keys: buffers("keys"),
            values: buffers("values"),
            // Popped from the back: block 0 is handed out first.
            free: (0..blocks as u32).rev().collect(),
            seqs: Vec::new(),
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            spare: Default::default(),
        })
    }

    /// Buffers per layer for keys (and as many for values): 1 unless one layer's keys exceed
    /// a buffer binding, in which case each holds `kv_heads / buffers_per_layer` of its heads.
    pub fn buffers_per_layer(&self) -> usize {
        self.shape.kv_heads / self.shard_heads
    }

    /// The key and value buffers of `layer`'s `shard`-th group of kv heads.
    pub(crate) fn shard(&self, layer: usize, shard: usize) -> (&GpuBuffer, &GpuBuffer) {
        let i = layer * self.buffers_per_layer() + shard;
        (&self.keys[i], &self.values[i])
    }

    pub fn shape(&self) -> KvShape {
        self.shape
    }

    /// How keys and values are stored.
    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// A kernel that reads or writes this cache, compiled for its element type: `source` (made
    /// only when the pipeline is) after [`KvDtype`]'s prelude; without runtime bounds checks
    /// where its indices are `audited` (see `Gpu::audited_pipeline_with`).
    pub(crate) fn pipeline(
        &self,
        key: &str,
        audited: bool,
        source: impl FnOnce() -> String,
    ) -> std::sync::Arc<crate::kernels::Pipeline> {
        let key = self.dtype.key(key);
        let source = || self.dtype.source(&source());
        if audited {
            self.gpu.audited_pipeline_with(&key, source)
        } else {
            self.gpu.pipeline_with(&key, source)
        }
    }

    /// Positions the pool holds over all sequences.
    pub fn capacity(&self) -> usize {
        self.blocks * self.shape.block_size
    }

    pub fn add_sequence(&mut self) -> SeqId {
        let i = match self.seqs.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.seqs.push(None);
                self.seqs.len() - 1
            }
        };
        self.seqs[i] = Some(Sequence::default());
        SeqId(i)
    }

    /// Ends a sequence and returns its blocks to the pool; an unknown id is a no-op.
    pub fn remove_sequence(&mut self, id: SeqId) {
        if let Some(seq) = self.seqs.get_mut(id.0).and_then(Option::take) {
            self.free.extend(seq.blocks);
        }
    }

    /// Positions cached for a sequence (0 for an unknown id).
    pub fn len(&self, id: SeqId) -> usize {
        self.seq(id).map_or(0, |s| s.len)
    }

    pub fn is_empty(&self, id: SeqId) -> bool {
        self.len(id) == 0
    }

    /// Forgets a sequence's positions from `len` on; whole blocks past it return to the pool.
    /// Stale values left in the last kept block are never read: attention reads positions up
    /// to each token's own, and a position is written before it is attended to.
    pub fn truncate(&mut self, id: SeqId, len: usize) -> Result<(), GpuError> {
        let keep = len.div_ceil(self.shape.block_size);
        let seq = self.seq_mut(id)?;
        if len >= seq.len {
            return Ok(());
        }
        seq.len = len;
        let freed = seq.blocks.split_off(keep.min(seq.blocks.len()));
        self.free.extend(freed);
        Ok(())
    }

    /// Makes room for `n` more positions of a sequence.
    pub fn reserve(&mut self, id: SeqId, n: usize) -> Result<(), GpuError> {
        let capacity = self.capacity();
        let need = (self.seq_mut(id)?.len + n).div_ceil(self.shape.block_size);
        let have = self.seq_mut(id)?.blocks.len();
        if need > have && need - have > self.free.len() {
            return Err(GpuError::CacheFull { capacity });
        }
        let start = self.free.len() - need.saturating_sub(have);
        let taken = self.free.split_off(start);
        self.seq_mut(id)?.blocks.extend(taken.into_iter().rev());
        Ok(())
    }

    /// Records that `n` positions (reserved, then written) now count.
    pub fn advance(&mut self, id: SeqId, n: usize) -> Result<(), GpuError> {
        let bs = self.shape.block_size;
        let seq = self.seq_mut(id)?;
        if seq.len + n > seq.blocks.len() * bs {
            return Err(GpuError::Shape {
                op: "kv cache",
                what: format!(
                    "advancing by {n} past the {} positions reserved",
                    seq.blocks.len() * bs
                ),
            });
        }
        seq.len += n;
        Ok(())
    }

    /// The device-side description of a forward pass's tokens, each at `(sequence, position)`:
    /// the block tables of the sequences involved and where each token reads and writes. Made
    /// once per forward pass and used by every layer; it describes the cache as it is now, so
    /// make a new one after sequences are removed or truncated. Drop a batch only once the
    /// commands recorded with it are submitted: the next batch is written into its buffers.
    pub fn batch(&self, places: &[(SeqId, usize)]) -> Result<KvBatch, GpuError> {
        let mut tables: Vec<u32> = Vec::new();
        let mut offsets: Vec<(SeqId, u32)> = Vec::new();
        let mut info = Vec::with_capacity(places.len() * 2);
        for &(id, pos) in places {
            let seq = self.seq(id).ok_or_else(|| unknown(id))?;
            if pos >= seq.blocks.len() * self.shape.block_size {
                return Err(GpuError::Shape {
                    op: "kv batch",
                    what: format!(
                        "position {pos} of sequence {} is not reserved ({} positions are)",
                        id.0,
                        seq.blocks.len() * self.shape.block_size
                    ),
                });
            }
            let offset = match offsets.iter().find(|(s, _)| *s == id) {
                Some(&(_, o)) => o,
                None => {
                    let o = tables.len() as u32;
                    tables.extend(&seq.blocks);
                    offsets.push((id, o));
                    o
                }
            };
            info.extend([pos as u32, offset]);
        }
        let tiles = prefill_tiles(places);
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        let gpu = &self.gpu;
        let refill = |old: Option<Arc<GpuBuffer>>, label, words: &[u32]| {
            // A spare still shared (a batch's clone outlived it) is not written.
            let old = old.and_then(|b| Arc::try_unwrap(b).ok());
            Arc::new(gpu.upload_into(old, label, bytemuck::cast_slice(words)))
        };
        let info = refill(spare.info.take(), "kv batch tokens", &info);
        let tables = refill(spare.tables.take(), "kv batch tables", &tables);
        let tiles_buf = refill(spare.tiles.take(), "kv batch tiles", &tiles);
        Ok(KvBatch {
            cache: self.id,
            tokens: places.len(),
            max_pos: places.iter().map(|p| p.1).max().unwrap_or(0),
            info,
            tables,
            n_tiles: tiles.len() / 2,
            tiles: tiles_buf,
            spare: self.spare.clone(),
        })
    }

    fn seq(&self, id: SeqId) -> Option<&Sequence> {
        self.seqs.get(id.0).and_then(Option::as_ref)
    }

    fn seq_mut(&mut self, id: SeqId) -> Result<&mut Sequence, GpuError> {
        self.seqs
            .get_mut(id.0)
            .and_then(Option::as_mut)
            .ok_or_else(|| unknown(id))
    }
}

fn unknown(id: SeqId) -> GpuError {
    GpuError::Shape {
        op: "kv cache",
        what: format!("sequence {} does not exist (removed?)", id.0),
    }
}

/// Query tokens per prefill tile: the tile height of attn_prefill.wgsl (`BQ`).
pub(crate) const PREFILL_TILE: usize = 16;

/// Prefill tiles as `[first token, count]` pairs: runs of up to [`PREFILL_TILE`] tokens of one
/// sequence at consecutive positions, so a tile's tokens share their keys.
fn prefill_tiles(places: &[(SeqId, usize)]) -> Vec<u32> {
    let mut tiles = Vec::new();
    let mut start = 0;
    for i in 1..=places.len() {
        let ends = i == places.len()
            || i - start == PREFILL_TILE
            || places[i].0 != places[i - 1].0
            || places[i].1 != places[i - 1].1 + 1;
        if ends {
            tiles.extend([start as u32, (i - start) as u32]);
            start = i;
        }
    }
    tiles
}

/// A forward pass's tokens as the kernels see them (made by [`GpuKvCache::batch`]).
pub struct KvBatch {
    pub(crate) cache: u64,
    pub(crate) tokens: usize,
    /// The largest position: the longest key range is `max_pos + 1` (less with a window).
    pub(crate) max_pos: usize,
    /// Per token `[position, offset of its sequence's block table in tables]`, u32.
    pub(crate) info: Arc<GpuBuffer>,
    /// The block tables of the batch's sequences, one after another, u32.
    pub(crate) tables: Arc<GpuBuffer>,
    /// Prefill tiles, `[first token, count]` u32 pairs.
    pub(crate) tiles: Arc<GpuBuffer>,
    pub(crate) n_tiles: usize,
    /// Where `info`, `tables` and `tiles` go back when the batch is dropped.
    spare: Arc<Mutex<Spare>>,
}

/// The buffers of the last batch dropped, for the next one ([`GpuKvCache::batch`]): a decode
/// step's are the same size step after step, and the kernels' bind groups, which name their
/// buffers, are then the same too (`bind_groups.rs`). Writing into a buffer an earlier batch's
/// commands read is safe once those are submitted: wgpu runs a queue's writes in order with
/// its submissions. A batch is dropped after its pass is submitted.
#[derive(Debug, Default)]
struct Spare {
    info: Option<Arc<GpuBuffer>>,
    tables: Option<Arc<GpuBuffer>>,
    tiles: Option<Arc<GpuBuffer>>,
}

impl Drop for GpuKvCache {
    fn drop(&mut self) {
        // The kernels' bind groups would keep the layers' buffers.
        self.gpu.forget_bind_groups();
    }
}

impl Drop for KvBatch {
    fn drop(&mut self) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        spare.info = Some(self.info.clone());
        spare.tables = Some(self.tables.clone());
        spare.tiles = Some(self.tiles.clone());
    }
}

impl KvBatch {
    /// Tokens in the batch.
    pub fn len(&self) -> usize {
        self.tokens
    }

    pub fn is_empty(&self) -> bool {
        self.tokens == 0
    }
}

impl GpuKvCache {
    /// Checks that `batch` was made by this cache and `layer` exists.
    pub(crate) fn check(
        &self,
        op: &'static str,
        layer: usize,
        batch: &KvBatch,
    ) -> Result<(), GpuError> {
        if batch.cache != self.id {
            return Err(GpuError::Shape {
                op,
                what: "the batch was made by another KV cache".into(),
            });
        }
        if layer >= self.shape.layers {
            return Err(GpuError::Shape {
                op,
                what: format!("layer {layer} of a {}-layer cache", self.shape.layers),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(gpu: &Gpu) -> GpuKvCache {
        let shape = KvShape {
            layers: 2,
            kv_heads: 1,
            head_dim: 2,
            block_size: 4,
        };
        GpuKvCache::new(gpu, shape, 8).unwrap()
    }

    #[test]
    fn blocks_are_reserved_freed_and_reused() {
        let Some(gpu) = crate::test_gpu() else { return };
        let mut cache = tiny(&gpu);
        let a = cache.add_sequence();
        cache.reserve(a, 7).unwrap();
        cache.advance(a, 7).unwrap();
        cache.truncate(a, 3).unwrap();
        assert_eq!(cache.len(a), 3);
        // The freed second block serves the growth again: 8 positions still fit.
        cache.reserve(a, 5).unwrap();
        assert!(matches!(
            cache.reserve(a, 6),
            Err(GpuError::CacheFull { .. })
        ));
        let b = cache.add_sequence();
        assert!(cache.reserve(b, 1).is_err());
        cache.remove_sequence(a);
        cache.reserve(b, 8).unwrap();
        assert!(cache.advance(b, 9).is_err());
        assert!(
            cache.reserve(a, 1).is_err(),
            "a removed sequence is an error"
        );
        assert!(
            cache.batch(&[(b, 8)]).is_err(),
            "position 8 is not reserved"
        );
    }

    /// The next batch writes its own positions and tables into the buffers of the last one
    /// dropped (so that the kernels' bind groups stay the same), and one still alive keeps
    /// its own.
    #[test]
    fn a_batch_reuses_the_buffers_of_the_last_one() {
        let Some(gpu) = crate::test_gpu() else { return };
        let mut cache = tiny(&gpu);
        let (a, b) = (cache.add_sequence(), cache.add_sequence());
        cache.reserve(a, 4).unwrap();
        cache.reserve(b, 4).unwrap();
        let words = |buf: &GpuBuffer| -> Vec<u32> {
            bytemuck::cast_slice(&gpu.read(buf).unwrap()[..buf.len() as usize]).to_vec()
        };
        let first = cache.batch(&[(a, 0), (a, 1), (a, 2)]).unwrap();
        let (info, tables) = (first.info.buffer.clone(), first.tables.buffer.clone());
        drop(first);
        let next = cache.batch(&[(b, 3)]).unwrap();
        assert_eq!(next.info.buffer, info);
        assert_eq!(next.tables.buffer, tables);
        assert_eq!(words(&next.info), [3, 0]);
        assert_eq!(words(&next.tables), cache.seq(b).unwrap().blocks);
        // `next` is alive: another batch gets buffers of its own.
        let other = cache.batch(&[(a, 2)]).unwrap();
        assert_ne!(other.info.buffer, info);
        assert_eq!(words(&other.info), [2, 0]);
        assert_eq!(words(&next.info), [3, 0]);
    }

    #[test]
    fn a_layer_larger_than_a_binding_is_split_by_kv_heads_or_refused() {
        let Some(gpu) = crate::test_gpu() else { return };
        let shape = KvShape {
            layers: 1,
            kv_heads: 8,
            head_dim: 128,
            block_size: 16,
        };
        // 64 tokens of one kv head take 32 KiB.
        let split = |limit| GpuKvCache::with_binding_limit(&gpu, shape, KvDtype::F32, 64, limit);
        assert_eq!(split(8 << 15).unwrap().buffers_per_layer(), 1);
        assert_eq!(split(7 << 15).unwrap().buffers_per_layer(), 2);
        assert_eq!(split(1 << 15).unwrap().buffers_per_layer(), 8);
        let e = split((1 << 15) - 1).err().unwrap();
        assert!(e.to_string().contains("at most 48 tokens fit"), "{e}");
        // The device's own limit: one kv head past it.
        let per_token = 128 * KvDtype::for_gpu(&gpu).bytes() as u64;
        let too_many = (gpu.capabilities().max_storage_binding / per_token + 16) as usize;
        assert!(GpuKvCache::new(&gpu, shape, too_many).is_err());
    }

    #[test]
    fn prefill_tiles_break_at_sequences_gaps_and_the_tile_height() {
        let (a, b) = (SeqId(0), SeqId(1));
        let mut places: Vec<_> = (0..20).map(|p| (a, p)).collect();
        places.extend([(b, 5), (b, 6), (b, 8), (a, 20)]);
        assert_eq!(prefill_tiles(&places), [0, 16, 16, 4, 20, 2, 22, 1, 23, 1]);
    }
}
