//! Attention on the GPU against a straightforward f64 reference over dense per-sequence keys
//! and values (so the paging itself is under test too): decode and prefill, head dimensions
//! 6, 16, 64, 128 and 256, GQA ratios 1, 2, 3 and 8, contexts 1, 3, 67 and 300 (several split chunks
//! and cache blocks), a sliding window, batches of sequences of different lengths, and chunked
//! prefill then decode against one long prefill; caches of f16 (where the device has it) and
//! f32. Run both with and without subgroups (`MARLIN_GPU_SUBGROUP=0`).

use super::AttentionConfig;
use crate::kernels::View;
use crate::{Gpu, GpuError, GpuKvCache, KvDtype, KvShape, SeqId};

/// Outputs are convex combinations of values in [-1, 1]; f32 dot products of <= 256 terms and
/// sums of <= 300 weights, in another order than the reference's, stay within ~1e-6, so 1e-4
/// leaves room for a GPU's exp being a few ulp off, not for a wrong key or weight. The
/// reference reads keys and values as the cache stores them (rounded to f16 in an f16 cache),
/// so the bound is the same for both types.
const TOL: f64 = 1e-4;

/// The layer attended; layer 0 holds other data, so a kernel reading the wrong layer fails.
const LAYER: usize = 1;

/// xorshift64*: reproducible inputs without a dependency.
struct Rng(u64);

impl Rng {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        bits as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Kernel {
    Decode,
    /// Decode with this many keys per split, to cross many chunk boundaries.
    DecodeChunk(usize),
    Prefill,
}

/// A cache with sequences whose keys and values are also kept densely for the reference.
struct Fixture {
    gpu: Gpu,
    cache: GpuKvCache,
    cfg: AttentionConfig,
    seqs: Vec<SeqId>,
    /// Per sequence: (len, kv_heads, head_dim) keys and values.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    rng: Rng,
}

/// Positions the fixtures' caches hold.
const CAPACITY: usize = 2048;

impl Fixture {
    fn new(gpu: &Gpu, shape: (usize, usize, usize), seqs: usize) -> Self {
        Self::split(gpu, shape, seqs, shape.1)
    }

    /// A fixture whose cache stores `dtype`.
    fn of(gpu: &Gpu, dtype: KvDtype, shape: (usize, usize, usize), seqs: usize) -> Self {
        Self::make(gpu, dtype, shape, seqs, shape.1)
    }

    /// A fixture whose cache holds `shard_heads` kv heads per buffer, as a layer too large
    /// for one binding would.
    fn split(gpu: &Gpu, shape: (usize, usize, usize), seqs: usize, shard_heads: usize) -> Self {
        Self::make(gpu, KvDtype::for_gpu(gpu), shape, seqs, shard_heads)
    }

    fn make(
        gpu: &Gpu,
        dtype: KvDtype,
        (heads, kv_heads, head_dim): (usize, usize, usize),
        seqs: usize,
        shard_heads: usize,
    ) -> Self {
        let shape = KvShape {
            layers: 2,
            kv_heads,
            head_dim,
            block_size: 16,
        };
        let limit = (shard_heads * CAPACITY * head_dim * dtype.bytes()) as u64;
        let mut cache = GpuKvCache::with_binding_limit(gpu, shape, dtype, CAPACITY, limit).unwrap();
        assert_eq!(cache.buffers_per_layer(), kv_heads / shard_heads);
        Fixture {
            gpu: gpu.clone(),
            cfg: AttentionConfig {
                heads,
                window: None,
            },
            seqs: (0..seqs).map(|_| cache.add_sequence()).collect(),
            cache,
            keys: vec![Vec::new(); seqs],
            values: vec![Vec::new(); seqs],
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (heads * 131 + head_dim) as u64),
        }
    }

    fn row(&self) -> usize {
        self.cache.shape().kv_heads * self.cache.shape().head_dim
    }

    /// Appends `n[i]` positions to sequence `i`, writing their keys and values through one
    /// batch; returns the new places as (sequence index, position).
    fn append(&mut self, n: &[usize]) -> Vec<(usize, usize)> {
        // Reserve a block at a time, taking turns, so that every block table is scattered.
        let bs = self.cache.shape().block_size;
        let mut left = n.to_vec();
        while left.iter().any(|&x| x > 0) {
            for (i, x) in left.iter_mut().enumerate() {
                let step = (*x).min(bs);
                // Positions count only once advanced, so each call asks for the total so far.
                self.cache.reserve(self.seqs[i], n[i] - *x + step).unwrap();
                *x -= step;
            }
        }
        let mut places = Vec::new();
        let (mut k_new, mut v_new) = (Vec::new(), Vec::new());
        for (i, &count) in n.iter().enumerate() {
            let start = self.cache.len(self.seqs[i]);
            let k = self.rng.vec(count * self.row(), 1.0);
            let v = self.rng.vec(count * self.row(), 1.0);
            k_new.extend(&k);
            v_new.extend(&v);
            let dtype = self.cache.dtype();
            self.keys[i].extend(k.iter().map(|&x| stored(dtype, x)));
            self.values[i].extend(v.iter().map(|&x| stored(dtype, x)));
            places.extend((start..start + count).map(|p| (i, p)));
        }
        let batch = self.cache.batch(&self.ids(&places)).unwrap();
        // k and v side by side in one buffer, as a fused q|k|v projection leaves them.
        let row = self.row();
        let kv: Vec<f32> = k_new
            .chunks(row)
            .zip(v_new.chunks(row))
            .flat_map(|(k, v)| k.iter().chain(v).copied())
            .collect();
        let kv = self.gpu.upload_f32("k|v", &kv);
        let (k, v) = (View::part(&kv, 0, 2 * row), View::part(&kv, row, 2 * row));
        let mut enc = self.gpu.encoder();
        self.cache
            .record_write(&mut enc, LAYER, &batch, k, v)
            .unwrap();
        self.gpu.submit(enc);
        let noise = self
            .gpu
            .upload_f32("noise", &self.rng.vec(k_new.len(), 1.0));
        self.cache.write(0, &batch, &noise, &noise).unwrap();
        for (i, &count) in n.iter().enumerate() {
            self.cache.advance(self.seqs[i], count).unwrap();
        }
        places
    }

    fn ids(&self, places: &[(usize, usize)]) -> Vec<(SeqId, usize)> {
        places.iter().map(|&(s, p)| (self.seqs[s], p)).collect()
    }

    /// Random queries for `places`, (tokens, heads, head_dim); scaled so that the softmax is
    /// peaked enough for the running max to matter.
    fn queries(&mut self, places: &[(usize, usize)]) -> Vec<f32> {
        let n = places.len() * self.cfg.heads * self.cache.shape().head_dim;
        self.rng.vec(n, 3.0)
    }

    fn run(&self, kernel: Kernel, places: &[(usize, usize)], q: &[f32]) -> Vec<f32> {
        let batch = self.cache.batch(&self.ids(places)).unwrap();
        // Decode and prefill read q as one part of wider rows (3 values before, 5 after), as
        // they do a fused q|k|v output.
        let width = self.cfg.heads * self.cache.shape().head_dim;
        let stacked: Vec<f32> = q
            .chunks(width)
            .flat_map(|qt| {
                [9.0; 3]
                    .iter()
                    .chain(qt)
                    .chain(&[9.0; 5])
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
        let stacked = self.gpu.upload_f32("junk|q|junk", &stacked);
        let q_part = View::part(&stacked, 3, width + 8);
        let q = self.gpu.upload_f32("q", q);
        let out = self.gpu.zeros("out", q.len());
        let gpu = &self.gpu;
        let mut enc = gpu.encoder();
        match kernel {
            Kernel::Decode => self
                .cache
                .record_decode_attention(&mut enc, LAYER, &batch, q_part, &out, self.cfg)
                .unwrap(),
            Kernel::DecodeChunk(chunk) => {
                let window = self.cfg.window.unwrap_or(0) as u32;
                let heads = self.cfg.heads;
                let q = View::rows(&q, heads * self.cache.shape().head_dim);
                let stride = q.stride as u32;
                self.cache
                    .decode_with_chunk(
                        &mut enc,
                        LAYER,
                        &batch,
                        (q, &out),
                        (heads, (window, 0, stride)),
                        chunk,
                    )
                    .unwrap();
            }
            Kernel::Prefill => self
                .cache
                .record_prefill_attention(&mut enc, LAYER, &batch, q_part, &out, self.cfg)
                .unwrap(),
        }
        gpu.submit(enc);
        self.gpu.read_f32(&out).unwrap()
    }

    /// The reference: each token's softmax over the keys of positions [window start, pos].
    fn reference(&self, places: &[(usize, usize)], q: &[f32]) -> Vec<f64> {
        let KvShape {
            kv_heads,
            head_dim: hd,
            ..
        } = self.cache.shape();
        let heads = self.cfg.heads;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut out = vec![0f64; q.len()];
        for (t, &(s, pos)) in places.iter().enumerate() {
            let first = self.cfg.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            for h in 0..heads {
                let kvh = h / (heads / kv_heads);
                let qh = &q[(t * heads + h) * hd..][..hd];
                let at = |p: usize| (p * kv_heads + kvh) * hd;
                let scores: Vec<f64> = (first..=pos)
                    .map(|p| {
                        let k = &self.keys[s][at(p)..][..hd];
                        qh.iter()
                            .zip(k)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                let o = &mut out[(t * heads + h) * hd..][..hd];
                for (p, w) in (first..=pos).zip(&weights) {
                    let v = &self.values[s][at(p)..][..hd];
                    for (o, &v) in o.iter_mut().zip(v) {
                        *o += w / total * v as f64;
                    }
                }
            }
        }
        out
    }

    /// Runs `kernel` over `places` and checks it against the reference.
    fn check(&mut self, kernel: Kernel, places: &[(usize, usize)], what: &str) -> Vec<f32> {
        let q = self.queries(places);
        let got = self.run(kernel, places, &q);
        let want = self.reference(places, &q);
        assert_close(&got, &want, &format!("{what}, {kernel:?}, {:?}", self.cfg));
        got
    }
}

/// `x` as a cache of `dtype` holds it.
fn stored(dtype: KvDtype, x: f32) -> f32 {
    match dtype {
        KvDtype::F16 => half::f16::from_f32(x).to_f32(),
        KvDtype::F32 => x,
    }
}

/// The cache types the device has: f32 always, f16 where SHADER_F16 is on.
fn dtypes(gpu: &Gpu) -> Vec<KvDtype> {
    let mut all = vec![KvDtype::F32];
    if KvDtype::for_gpu(gpu) == KvDtype::F16 {
        all.push(KvDtype::F16);
    }
    all
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let (i, err) = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .enumerate()
        .fold(
            (0, 0f64),
            |a, (i, e)| if e > a.1 || e.is_nan() { (i, e) } else { a },
        );
    assert!(
        err <= TOL,
        "{what}: element {i} is {} instead of {} (error {err:e})",
        got[i],
        want[i]
    );
}

/// The last position of every sequence: one decode step of the whole batch.
fn last_of_each(places: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut last: Vec<(usize, usize)> = Vec::new();
    for &(s, p) in places {
        match last.iter_mut().find(|l| l.0 == s) {
            Some(l) => l.1 = l.1.max(p),
            None => last.push((s, p)),
        }
    }
    last
}

/// (heads, kv_heads, head_dim): query heads per kv head 1, 2, 3 and 8; a head dimension that
/// is not a multiple of 4 (the kernels' vec4 paths pad it or step aside).
const SHAPES: [(usize, usize, usize); 6] = [
    (2, 2, 16),
    (6, 2, 64),
    (3, 1, 128),
    (4, 4, 256),
    (8, 1, 64),
    (4, 2, 6),
];
const CONTEXTS: [usize; 4] = [1, 3, 67, 300];

#[test]
fn decode_matches_the_reference_for_a_batch_of_contexts() {
    let Some(gpu) = crate::test_gpu() else { return };
    for (shape, dtype) in SHAPES
        .into_iter()
        .flat_map(|s| dtypes(&gpu).into_iter().map(move |d| (s, d)))
    {
        let mut f = Fixture::of(&gpu, dtype, shape, CONTEXTS.len());
        let places = f.append(&CONTEXTS);
        let step = last_of_each(&places);
        let what = format!("{shape:?}, {dtype:?} cache");
        for kernel in [Kernel::Decode, Kernel::DecodeChunk(128)] {
            f.check(kernel, &step, &what);
        }
        // Every token of every sequence at once: a batch of many lengths.
        f.check(Kernel::Decode, &places, &format!("{what}, all tokens"));
    }
}

#[test]
fn prefill_matches_the_reference_for_a_batch_of_sequences() {
    let Some(gpu) = crate::test_gpu() else { return };
    for (shape, dtype) in SHAPES
        .into_iter()
        .flat_map(|s| dtypes(&gpu).into_iter().map(move |d| (s, d)))
    {
        let mut f = Fixture::of(&gpu, dtype, shape, CONTEXTS.len());
        let places = f.append(&CONTEXTS);
        f.check(
            Kernel::Prefill,
            &places,
            &format!("{shape:?}, {dtype:?} cache"),
        );
    }
}

#[test]
fn a_sliding_window_smaller_than_the_context_hides_older_keys() {
    let Some(gpu) = crate::test_gpu() else { return };
    for (shape, window) in [((6, 2, 64), 50), ((2, 1, 16), 17), ((3, 1, 128), 300)] {
        let mut f = Fixture::new(&gpu, shape, 3);
        f.cfg.window = Some(window);
        let places = f.append(&[3, 67, 300]);
        let what = format!("{shape:?}");
        f.check(Kernel::Prefill, &places, &what);
        let step = last_of_each(&places);
        f.check(Kernel::Decode, &step, &what);
        f.check(Kernel::DecodeChunk(128), &places, &what);
    }
}

#[test]
fn chunked_prefill_then_decode_matches_one_long_prefill() {
    let Some(gpu) = crate::test_gpu() else { return };
    let lens = [5usize, 70, 301];
    for (shape, window) in [((6, 2, 64), None), ((3, 1, 128), Some(40))] {
        // One long prefill of every sequence.
        let mut whole = Fixture::new(&gpu, shape, lens.len());
        whole.cfg.window = window;
        let places = whole.append(&lens);
        let q = whole.queries(&places);
        let want = whole.run(Kernel::Prefill, &places, &q);
        assert_close(&want, &whole.reference(&places, &q), "one long prefill");

        // The same keys, values and queries in a second cache: a first chunk of prefill, a
        // second chunk over the cached prefix, then decode steps of the batch.
        let mut parts = Fixture::new(&gpu, shape, lens.len());
        parts.cfg.window = window;
        parts.keys.clone_from(&whole.keys);
        parts.values.clone_from(&whole.values);
        let row = whole.cfg.heads * shape.2;
        let mut got = vec![f32::NAN; q.len()];
        let mut done = [0usize; 3];
        let mut pass = |n: [usize; 3], kernel: Kernel, parts: &mut Fixture| {
            let mut places = Vec::new();
            for (i, &count) in n.iter().enumerate() {
                places.extend((done[i]..done[i] + count).map(|p| (i, p)));
            }
            // Write the pass's keys and values: append's random ones are replaced.
            write_known(parts, &places);
            let index: Vec<usize> = places
                .iter()
                .map(|&(s, p)| token_index(&lens, s, p))
                .collect();
            let qs: Vec<f32> = index
                .iter()
                .flat_map(|&t| q[t * row..][..row].to_vec())
                .collect();
            let out = parts.run(kernel, &places, &qs);
            for (j, &t) in index.iter().enumerate() {
                got[t * row..][..row].copy_from_slice(&out[j * row..][..row]);
            }
            for (d, c) in done.iter_mut().zip(n) {
                *d += c;
            }
        };
        pass([2, 33, 150], Kernel::Prefill, &mut parts);
        pass([1, 30, 148], Kernel::Prefill, &mut parts);
        pass([1, 1, 1], Kernel::Decode, &mut parts);
        pass([1, 6, 2], Kernel::Decode, &mut parts);
        let got64: Vec<f64> = got.iter().map(|&x| x as f64).collect();
        assert_close(
            &want,
            &got64,
            &format!("{shape:?} {window:?}: chunks vs one prefill"),
        );
    }
}

/// Where token (s, p) sits in a batch of whole sequences of `lens`.
fn token_index(lens: &[usize], s: usize, p: usize) -> usize {
    lens[..s].iter().sum::<usize>() + p
}

/// Reserves and writes `places` (the next positions of their sequences) with the keys and
/// values already in `f.keys` and `f.values`, then advances.
fn write_known(f: &mut Fixture, places: &[(usize, usize)]) {
    let row = f.row();
    let (mut k, mut v) = (Vec::new(), Vec::new());
    for &(s, p) in places {
        k.extend(&f.keys[s][p * row..][..row]);
        v.extend(&f.values[s][p * row..][..row]);
    }
    let mut counts = vec![0; f.seqs.len()];
    for &(s, _) in places {
        counts[s] += 1;
    }
    for (i, &c) in counts.iter().enumerate() {
        f.cache.reserve(f.seqs[i], c).unwrap();
    }
    let batch = f.cache.batch(&f.ids(places)).unwrap();
    let (k, v) = (f.gpu.upload_f32("k", &k), f.gpu.upload_f32("v", &v));
    f.cache.write(LAYER, &batch, &k, &v).unwrap();
    for (i, &c) in counts.iter().enumerate() {
        f.cache.advance(f.seqs[i], c).unwrap();
    }
}

#[test]
fn a_layer_split_over_buffers_by_kv_heads_gives_the_same_outputs() {
    let Some(gpu) = crate::test_gpu() else { return };
    for (shape, shard_heads, window) in [
        ((6, 2, 64), 1, None),
        ((8, 4, 16), 2, Some(20)),
        ((4, 4, 128), 1, None),
    ] {
        let mut f = Fixture::split(&gpu, shape, 3, shard_heads);
        f.cfg.window = window;
        let places = f.append(&[1, 67, 300]);
        let what = format!("{shape:?} in buffers of {shard_heads} kv heads");
        f.check(Kernel::Prefill, &places, &what);
        f.check(Kernel::Decode, &last_of_each(&places), &what);
        f.check(Kernel::DecodeChunk(128), &places, &what);
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let Some(gpu) = crate::test_gpu() else { return };
    let mut f = Fixture::new(&gpu, (4, 2, 16), 1);
    let places = f.append(&[3]);
    let batch = f.cache.batch(&f.ids(&places)).unwrap();
    let q = gpu.zeros("q", 3 * 4 * 16 * 4);
    let small = gpu.zeros("small", 16);
    let cfg = f.cfg;
    let shape_err = |r: Result<(), GpuError>| matches!(r, Err(GpuError::Shape { .. }));
    let c = &f.cache;
    assert!(shape_err(
        c.decode_attention(LAYER, &batch, &q, &small, cfg)
    ));
    assert!(shape_err(
        c.prefill_attention(LAYER, &batch, &small, &q, cfg)
    ));
    assert!(shape_err(c.decode_attention(2, &batch, &q, &q, cfg)));
    let three = AttentionConfig { heads: 3, ..cfg };
    assert!(shape_err(c.prefill_attention(LAYER, &batch, &q, &q, three)));
    let zero = AttentionConfig {
        window: Some(0),
        ..cfg
    };
    assert!(shape_err(c.decode_attention(LAYER, &batch, &q, &q, zero)));
    assert!(shape_err(c.write(LAYER, &batch, &small, &small)));
    let other = Fixture::new(&gpu, (4, 2, 16), 1);
    assert!(shape_err(
        other.cache.decode_attention(LAYER, &batch, &q, &q, cfg)
    ));
    let wide = KvShape {
        layers: 1,
        kv_heads: 1,
        head_dim: 512,
        block_size: 16,
    };
    let wide = GpuKvCache::new(&gpu, wide, 16).unwrap();
    let b = wide.batch(&[]).unwrap();
    assert!(shape_err(wide.prefill_attention(0, &b, &q, &q, cfg)));
}
