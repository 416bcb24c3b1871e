//! A decoder-shaped chain of ops recorded into one encoder and submitted once, as a forward
//! pass records them: each op reads what the one before wrote (wgpu orders the passes), and
//! the whole chain matches the same math in f64 on the CPU. Through the public API only.

use marlin_gpu::Recorder;
use marlin_gpu::kernels::{DenseWeight, Heads, View, WeightDtype};
use marlin_gpu::{Gpu, GpuBuffer, GpuError};

const VOCAB: usize = 67;
const HIDDEN: usize = 16;
const HEADS: usize = 2;
const HEAD_DIM: usize = 8;
const FF: usize = 24;
const EPS: f32 = 1e-5;

/// Seeded values in [-scale, scale) (a 64-bit LCG's top bits: enough for test data).
fn values(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

struct Weights {
    embed: Vec<f32>,
    norm: Vec<f32>,
    q: Vec<f32>,
    q_bias: Vec<f32>,
    q_norm: Vec<f32>,
    inv_freq: Vec<f32>,
    gate_up: Vec<f32>,
    down: Vec<f32>,
}

fn weights() -> Weights {
    Weights {
        embed: values(1, VOCAB * HIDDEN, 1.0),
        norm: values(2, HIDDEN, 1.0),
        q: values(3, HIDDEN * HIDDEN, 0.5),
        q_bias: values(4, HIDDEN, 0.1),
        q_norm: values(5, HEAD_DIM, 1.0),
        inv_freq: (0..HEAD_DIM / 2)
            .map(|i| 1.0 / 10_000f32.powf(2.0 * i as f32 / HEAD_DIM as f32))
            .collect(),
        gate_up: values(6, 2 * FF * HIDDEN, 0.5),
        down: values(7, HIDDEN * FF, 0.5),
    }
}

// x (rows, dim), w (dim) -> (rows, dim)
fn rms(x: &[f64], w: &[f32]) -> Vec<f64> {
    x.chunks_exact(w.len())
        .flat_map(|r| {
            let inv =
                1.0 / (r.iter().map(|v| v * v).sum::<f64>() / w.len() as f64 + EPS as f64).sqrt();
            r.iter().zip(w).map(move |(v, &w)| v * inv * w as f64)
        })
        .collect()
}

// x (m, k), w (n, k) -> (m, n)
fn matmul(x: &[f64], w: &[f32], n: usize) -> Vec<f64> {
    let k = w.len() / n;
    x.chunks_exact(k)
        .flat_map(|r| (0..n).map(move |j| (0..k).map(|c| r[c] * w[j * k + c] as f64).sum()))
        .collect()
}

/// The chain on the CPU: embedding, norm, q projection with bias, Qwen3-style head norm,
/// rope, gate_up from q (standing in for attention's output), SwiGLU, down, residual, norm
/// and the tied head. Returns the logits (tokens, vocab).
fn cpu_chain(w: &Weights, ids: &[u32], positions: &[u32]) -> Vec<f64> {
    let mut h: Vec<f64> = ids
        .iter()
        .flat_map(|&id| {
            w.embed[id as usize * HIDDEN..][..HIDDEN]
                .iter()
                .map(|&v| v as f64)
        })
        .collect();
    let x = rms(&h, &w.norm);
    let mut q = matmul(&x, &w.q, HIDDEN);
    q.iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v += w.q_bias[i % HIDDEN] as f64);
    let mut q = rms(&q, &w.q_norm);
    let half = HEAD_DIM / 2;
    for (t, &p) in positions.iter().enumerate() {
        for head in q[t * HIDDEN..(t + 1) * HIDDEN].chunks_exact_mut(HEAD_DIM) {
            for (i, f) in w.inv_freq.iter().enumerate() {
                let (sin, cos) = ((p as f32 * f) as f64).sin_cos();
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * cos - b * sin;
                head[i + half] = b * cos + a * sin;
            }
        }
    }
    let gu = matmul(&q, &w.gate_up, 2 * FF);
    let act: Vec<f64> = gu
        .chunks_exact(2 * FF)
        .flat_map(|r| (0..FF).map(move |c| r[FF + c] * (r[c] / (1.0 + (-r[c]).exp()))))
        .collect();
    let down = matmul(&act, &w.down, HIDDEN);
    h.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
    matmul(&rms(&h, &w.norm), &w.embed, VOCAB)
}

/// `Weights` on the device.
struct OnDevice {
    embed: GpuBuffer,
    norm: GpuBuffer,
    q: GpuBuffer,
    q_bias: GpuBuffer,
    q_norm: GpuBuffer,
    inv_freq: GpuBuffer,
    gate_up: GpuBuffer,
    down: GpuBuffer,
}

fn upload(gpu: &Gpu, w: &Weights) -> OnDevice {
    let up = |name, v: &[f32]| gpu.upload_f32(name, v);
    OnDevice {
        embed: up("embed", &w.embed),
        norm: up("norm", &w.norm),
        q: up("q", &w.q),
        q_bias: up("q_bias", &w.q_bias),
        q_norm: up("q_norm", &w.q_norm),
        inv_freq: up("inv_freq", &w.inv_freq),
        gate_up: up("gate_up", &w.gate_up),
        down: up("down", &w.down),
    }
}

/// The activations of `n` tokens, and the token ids and positions.
struct Activations {
    n: usize,
    ids: GpuBuffer,
    positions: GpuBuffer,
    h: GpuBuffer,
    x: GpuBuffer,
    q: GpuBuffer,
    gate_up: GpuBuffer,
    act: GpuBuffer,
    down: GpuBuffer,
    logits: GpuBuffer,
    probs: GpuBuffer,
    best: GpuBuffer,
}

fn activations(gpu: &Gpu, ids: &[u32], positions: &[u32]) -> Activations {
    let n = ids.len();
    let zeros = |values: usize| gpu.zeros("activation", (values * 4) as u64);
    Activations {
        n,
        ids: gpu.upload("ids", bytemuck::cast_slice(ids)),
        positions: gpu.upload("positions", bytemuck::cast_slice(positions)),
        h: zeros(n * HIDDEN),
        x: zeros(n * HIDDEN),
        q: zeros(n * HIDDEN),
        gate_up: zeros(n * 2 * FF),
        act: zeros(n * FF),
        down: zeros(n * HIDDEN),
        logits: zeros(n * VOCAB),
        probs: zeros(n * VOCAB),
        best: zeros(n),
    }
}

fn dense(buffer: &GpuBuffer, n: usize, k: usize) -> DenseWeight<'_> {
    DenseWeight {
        buffer,
        n,
        k,
        dtype: WeightDtype::F32,
    }
}

/// cpu_chain's steps, recorded into one encoder.
fn record(gpu: &Gpu, enc: &mut Recorder, w: &OnDevice, a: &Activations) -> Result<(), GpuError> {
    let n = a.n;
    let rows = |b| View::rows(b, HIDDEN);
    let plain = Heads {
        tokens: n,
        heads: 1,
        head_dim: HIDDEN,
    };
    let per_head = Heads {
        tokens: n,
        heads: HEADS,
        head_dim: HEAD_DIM,
    };
    gpu.embedding(enc, &a.ids, n, &[&w.embed], HIDDEN, &a.h)?;
    gpu.rms_norm(enc, rows(&a.h), rows(&a.x), &w.norm, plain, EPS)?;
    gpu.matmul_dense(enc, &a.x, n, dense(&w.q, HIDDEN, HIDDEN), &a.q)?;
    gpu.add_bias(enc, &a.q, n, HIDDEN, &w.q_bias)?;
    gpu.rms_norm(enc, rows(&a.q), rows(&a.q), &w.q_norm, per_head, EPS)?;
    gpu.rope(enc, rows(&a.q), per_head, &a.positions, &w.inv_freq)?;
    gpu.matmul_dense(enc, &a.q, n, dense(&w.gate_up, 2 * FF, HIDDEN), &a.gate_up)?;
    let gate = View::part(&a.gate_up, 0, 2 * FF);
    let up = View::part(&a.gate_up, FF, 2 * FF);
    gpu.swiglu(enc, gate, up, &a.act, n, FF)?;
    gpu.matmul_dense(enc, &a.act, n, dense(&w.down, HIDDEN, FF), &a.down)?;
    gpu.add(enc, &a.h, &a.down, n * HIDDEN)?;
    gpu.rms_norm(enc, rows(&a.h), rows(&a.x), &w.norm, plain, EPS)?;
    gpu.matmul_dense(enc, &a.x, n, dense(&w.embed, VOCAB, HIDDEN), &a.logits)?;
    gpu.softmax(enc, &a.logits, &a.probs, n, VOCAB, 1.0)?;
    gpu.argmax(enc, &a.logits, &a.best, n, VOCAB)
}

#[test]
fn a_layer_of_ops_in_one_encoder_matches_the_cpu() {
    let Some(gpu) = marlin_gpu::test_gpu() else {
        return;
    };
    let w = weights();
    let (ids, positions) = ([3u32, 66, 0, 17, 5], [0u32, 1, 2, 3, 4]);
    let (on_device, a) = (upload(&gpu, &w), activations(&gpu, &ids, &positions));
    let mut enc = gpu.encoder();
    record(&gpu, &mut enc, &on_device, &a).unwrap();
    gpu.submit(enc);

    let want = cpu_chain(&w, &ids, &positions);
    let got = gpu.read_f32(&a.logits).unwrap();
    // A dozen f32 ops deep over sums of <= 48 terms, on logits of magnitude ~10: 1e-4 is
    // ~100x the rounding one would expect, and far below what a wrong op would give.
    for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g as f64 - r).abs() <= 1e-4 * (1.0 + r.abs()),
            "logit {i}: {g} vs {r}"
        );
    }
    let probs = gpu.read_f32(&a.probs).unwrap();
    let best: Vec<u32> = gpu
        .read(&a.best)
        .unwrap()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    for t in 0..a.n {
        let row = &want[t * VOCAB..(t + 1) * VOCAB];
        let top = (0..VOCAB).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        assert_eq!(best[t], top as u32, "token {t}");
        let total: f32 = probs[t * VOCAB..(t + 1) * VOCAB].iter().sum();
        assert!(
            (total - 1.0).abs() < 1e-5,
            "token {t}: probabilities sum to {total}"
        );
    }
}
