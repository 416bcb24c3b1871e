//! A paged KV cache: keys and values live in fixed-size blocks, and each sequence has a table
//! of the blocks holding its positions, so sequences grow and end without moving anything and
//! many can share one pool (what batched decoding and the server build on).

use crate::{ModelConfig, ModelError};

/// A sequence's handle in a [`KvCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqId(usize);

pub struct KvCache {
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

impl KvCache {
    /// A cache for `config`'s model holding up to `max_tokens` tokens over all sequences, in
    /// blocks of `block_size` positions. Memory is taken block by block as sequences grow.
    pub fn new(config: &ModelConfig, block_size: usize, max_tokens: usize) -> Self {
        let layers = config.num_hidden_layers;
        KvCache {
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

    /// The key and value of kv head `head` at `pos`.
    pub fn get(&self, layer: usize, id: SeqId, head: usize, pos: usize) -> (&[f32], &[f32]) {
        let at = self.index(id, head, pos);
        let hd = self.head_dim;
        (
            &self.keys[layer][at..at + hd],
            &self.values[layer][at..at + hd],
        )
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
