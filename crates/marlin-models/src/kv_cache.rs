//! A paged KV cache: keys and values live in fixed-size blocks, and each sequence has a table
//! of the blocks holding its positions, so sequences grow and end without moving anything and
//! many can share one pool (what batched decoding and the server build on).
//!
//! [`KvCache`] is the cache of a model on its device: [`CpuKvCache`] here (host memory, growing
//! block by block), or the GPU's (device buffers claimed at start, `marlin_gpu::GpuKvCache`).

use crate::device::gpu::GpuCache;
use crate::{ModelConfig, ModelError};

/// A sequence's handle in a [`KvCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqId(usize);

impl SeqId {
    pub(crate) fn new(i: usize) -> Self {
        SeqId(i)
    }

    pub(crate) fn index(self) -> usize {
        self.0
    }
}

/// The keys and values of a model's sequences, on the model's device: made by
/// [`crate::Model::new_cache`] (or [`KvCache::new`] for the CPU).
pub struct KvCache(pub(crate) Store);

pub(crate) enum Store {
    Cpu(CpuKvCache),
    Gpu(GpuCache),
}

impl KvCache {
    /// A CPU cache for `config`'s model holding up to `max_tokens` tokens over all sequences,
    /// in blocks of `block_size` positions.
    pub fn new(config: &ModelConfig, block_size: usize, max_tokens: usize) -> Self {
        KvCache(Store::Cpu(CpuKvCache::new(config, block_size, max_tokens)))
    }

    pub fn add_sequence(&mut self) -> SeqId {
        match &mut self.0 {
            Store::Cpu(c) => c.add_sequence(),
            Store::Gpu(c) => c.add_sequence(),
        }
    }

    /// Ends a sequence and returns its blocks to the pool.
    pub fn remove_sequence(&mut self, id: SeqId) {
        match &mut self.0 {
            Store::Cpu(c) => c.remove_sequence(id),
            Store::Gpu(c) => c.remove_sequence(id),
        }
    }

    /// Positions cached for a sequence.
    pub fn len(&self, id: SeqId) -> usize {
        match &self.0 {
            Store::Cpu(c) => c.len(id),
            Store::Gpu(c) => c.len(id),
        }
    }

    /// Whether a sequence has nothing cached.
    pub fn is_empty(&self, id: SeqId) -> bool {
        self.len(id) == 0
    }

    /// Forgets a sequence's positions from `len` on; whole blocks past it return to the pool.
    /// Longer than what is cached: no-op.
    pub fn truncate(&mut self, id: SeqId, len: usize) {
        match &mut self.0 {
            Store::Cpu(c) => c.truncate(id, len),
            // Only an unknown sequence fails, which has nothing to forget.
            Store::Gpu(c) => c.truncate(id, len).unwrap_or(()),
        }
    }

    /// Bytes of keys and values that one position takes: f32 keys and values for every layer
    /// and kv head, on either device.
    pub fn bytes_per_token(config: &ModelConfig) -> u64 {
        CpuKvCache::bytes_per_token(config)
    }
}

/// The CPU's paged cache.
pub struct CpuKvCache {
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    max_blocks: usize,
    /// Per layer: blocks of `[kv_heads][block_size][head_dim]` keys (a head's keys of a block
    /// are contiguous, for the dot products), and values alike.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    allocated: usize,
    free: Vec<usize>,
    seqs: Vec<Option<Sequence>>,
}

#[derive(Debug, Default)]
struct Sequence {
    blocks: Vec<usize>,
    len: usize,
}

impl CpuKvCache {
    /// A cache for `config`'s model holding up to `max_tokens` tokens over all sequences, in
    /// blocks of `block_size` positions. Memory is taken block by block as sequences grow.
    pub fn new(config: &ModelConfig, block_size: usize, max_tokens: usize) -> Self {
        let layers = config.num_hidden_layers;
        CpuKvCache {
            layers,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
            block_size,
            max_blocks: max_tokens.div_ceil(block_size),
            keys: vec![Vec::new(); layers],
            values: vec![Vec::new(); layers],
            allocated: 0,
            free: Vec::new(),
            seqs: Vec::new(),
        }
    }

    pub fn add_sequence(&mut self) -> SeqId {
        match self.seqs.iter().position(Option::is_none) {
            Some(i) => {
                self.seqs[i] = Some(Sequence::default());
                SeqId(i)
            }
            None => {
                self.seqs.push(Some(Sequence::default()));
                SeqId(self.seqs.len() - 1)
            }
        }
    }

    /// Ends a sequence and returns its blocks to the pool.
    pub fn remove_sequence(&mut self, id: SeqId) {
        if let Some(seq) = self.seqs.get_mut(id.0).and_then(Option::take) {
            self.free.extend(seq.blocks);
        }
    }

    /// Positions cached for a sequence.
    pub fn len(&self, id: SeqId) -> usize {
        self.seq(id).len
    }

    /// Whether a sequence has nothing cached.
    pub fn is_empty(&self, id: SeqId) -> bool {
        self.len(id) == 0
    }

    /// Forgets a sequence's positions from `len` on (a conversation that went another way than
    /// what was cached); whole blocks past it return to the pool. Shorter than `len`: no-op.
    pub fn truncate(&mut self, id: SeqId, len: usize) {
        let keep = len.div_ceil(self.block_size);
        let seq = self.seq_mut(id);
        if len >= seq.len {
            return;
        }
        seq.len = len;
        // Stale values left in the last kept block are never read: attention reads positions
        // below the sequence's length, and a position is written before it counts.
        let freed = seq.blocks.split_off(keep.min(seq.blocks.len()));
        self.free.extend(freed);
    }

    /// Bytes of keys and values that one position takes in a cache for `config`'s model: f32
    /// keys and values for every layer and kv head (what [`KvCache::write`] stores).
    pub fn bytes_per_token(config: &ModelConfig) -> u64 {
        let floats = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim;
        floats as u64 * std::mem::size_of::<f32>() as u64
    }

    /// Makes room for `n` more positions of a sequence.
    pub fn reserve(&mut self, id: SeqId, n: usize) -> Result<(), ModelError> {
        let need = (self.seq(id).len + n).div_ceil(self.block_size);
        while self.seq(id).blocks.len() < need {
            let block = match self.free.pop() {
                Some(b) => b,
                None if self.allocated < self.max_blocks => self.grow(),
                None => {
                    return Err(ModelError::CacheFull {
                        capacity: self.max_blocks * self.block_size,
                    });
                }
            };
            self.seq_mut(id).blocks.push(block);
        }
        Ok(())
    }

    /// Records that `n` positions were written.
    pub fn advance(&mut self, id: SeqId, n: usize) {
        self.seq_mut(id).len += n;
    }

    /// Stores the keys and values (`kv_heads * head_dim` each) of position `pos` (reserved).
    pub fn write(&mut self, layer: usize, id: SeqId, pos: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        for h in 0..self.kv_heads {
            let at = self.index(id, h, pos);
            self.keys[layer][at..at + hd].copy_from_slice(&k[h * hd..(h + 1) * hd]);
            self.values[layer][at..at + hd].copy_from_slice(&v[h * hd..(h + 1) * hd]);
        }
    }

    /// Positions `range` of kv head `head`, one block at a time: `(keys, values)`, each
    /// `(positions in this block, head_dim)` and contiguous, in position order.
    pub fn spans(
        &self,
        layer: usize,
        id: SeqId,
        head: usize,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (&[f32], &[f32])> {
        let (bs, hd) = (self.block_size, self.head_dim);
        let blocks = &self.seq(id).blocks;
        let first_block = range.start / bs;
        let end_block = range.end.div_ceil(bs);
        (first_block..end_block.max(first_block)).map(move |b| {
            let lo = range.start.max(b * bs) - b * bs;
            let hi = range.end.min((b + 1) * bs) - b * bs;
            let at = (blocks[b] * self.kv_heads + head) * bs * hd;
            (
                &self.keys[layer][at + lo * hd..at + hi * hd],
                &self.values[layer][at + lo * hd..at + hi * hd],
            )
        })
    }

    fn index(&self, id: SeqId, head: usize, pos: usize) -> usize {
        let block = self.seq(id).blocks[pos / self.block_size];
        ((block * self.kv_heads + head) * self.block_size + pos % self.block_size) * self.head_dim
    }

    fn grow(&mut self) -> usize {
        let per_block = self.kv_heads * self.block_size * self.head_dim;
        for l in 0..self.layers {
            self.keys[l].resize((self.allocated + 1) * per_block, 0.0);
            self.values[l].resize((self.allocated + 1) * per_block, 0.0);
        }
        self.allocated += 1;
        self.allocated - 1
    }

    fn seq(&self, id: SeqId) -> &Sequence {
        self.seqs[id.0]
            .as_ref()
            .expect("a SeqId names a live sequence")
    }

    fn seq_mut(&mut self, id: SeqId) -> &mut Sequence {
        self.seqs[id.0]
            .as_mut()
            .expect("a SeqId names a live sequence")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Architecture;

    fn tiny() -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            vocab_size: 8,
            hidden_size: 4,
            intermediate_size: 8,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 2,
            max_position_embeddings: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            tie_word_embeddings: true,
            sliding_window: None,
            attention_bias: false,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }

    #[test]
    fn truncate_frees_whole_blocks_and_keeps_the_prefix() {
        let config = tiny();
        let mut cache = CpuKvCache::new(&config, 4, 8);
        let seq = cache.add_sequence();
        cache.reserve(seq, 7).unwrap();
        for pos in 0..7 {
            let x = [pos as f32, 0.5];
            for layer in 0..2 {
                cache.write(layer, seq, pos, &x, &x);
            }
        }
        cache.advance(seq, 7);
        cache.truncate(seq, 3);
        assert_eq!(cache.len(seq), 3);
        let (keys, _) = cache.spans(1, seq, 0, 2..3).next().unwrap();
        assert_eq!(keys, [2.0, 0.5]);
        // The freed second block serves the growth again: 8 positions still fit.
        cache.reserve(seq, 5).unwrap();
        assert!(cache.reserve(seq, 6).is_err());
        cache.truncate(seq, 10);
        assert_eq!(cache.len(seq), 3);
    }

    #[test]
    fn bytes_per_token_counts_keys_and_values_of_every_layer() {
        // 2 (k, v) * 2 layers * 1 kv head * 2 dims * 4 bytes.
        assert_eq!(CpuKvCache::bytes_per_token(&tiny()), 32);
    }
}
