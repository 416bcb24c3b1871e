//! What attention costs per layer at Llama-3.1-8B's shape (32 query heads, 8 kv heads of 128),
//! timed by the GPU's timestamps, for an f16 and an f32 cache: decode (one token of one
//! sequence over CONTEXT positions, the layer's call recorded 32 times into one pass, a decode
//! step's worth) and prefill (CONTEXT tokens of one sequence, causal, 4 calls a pass). For tuning the decode kernel (its knobs:
//! `MARLIN_DECODE_CHUNK`, `MARLIN_DECODE_BATCH`, `MARLIN_DECODE_ACC`, `MARLIN_DECODE_HOIST`).
//!
//! ```sh
//! cargo run --release -p marlin-gpu --example attention_cost [-- CONTEXT...]
//! ```

use marlin_gpu::Recorder;
use marlin_gpu::kernels::View;
use marlin_gpu::{AdapterChoice, AttentionConfig, Gpu, GpuError, GpuKvCache, KvDtype, KvShape};

/// µs per call of `record`, `calls` of them recorded into one pass, best of `runs` passes.
fn per_call(
    gpu: &Gpu,
    runs: usize,
    calls: usize,
    record: impl Fn(&mut Recorder) -> Result<(), GpuError>,
) -> Result<f64, GpuError> {
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = gpu.time_batch(|rec| {
            for _ in 0..calls {
                record(rec)?;
            }
            Ok(())
        })?;
        best = best.min(t.gpu.unwrap_or(t.wall).as_secs_f64());
    }
    Ok(best * 1e6 / calls as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let contexts: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let contexts = if contexts.is_empty() {
        vec![192, 1024, 4096, 12288]
    } else {
        contexts
    };
    let gpu = Gpu::new(AdapterChoice::Any)?;
    println!("adapter: {}", gpu.adapter());
    let (heads, kv_heads, head_dim, calls) = (32, 8, 128, 32);
    let shape = KvShape {
        layers: 1,
        kv_heads,
        head_dim,
        block_size: 16,
    };
    let cfg = AttentionConfig {
        heads,
        window: None,
    };
    let q = gpu.upload_f32("q", &vec![0.01; heads * head_dim]);
    let out = gpu.zeros("out", (heads * head_dim * 4) as u64);
    for dtype in KvDtype::ALL {
        if dtype == KvDtype::F16 && !gpu.capabilities().shader_f16 {
            continue;
        }
        for &context in &contexts {
            let mut cache = GpuKvCache::with_dtype(&gpu, shape, dtype, context)?;
            let seq = cache.add_sequence();
            cache.reserve(seq, context)?;
            cache.advance(seq, context - 1)?;
            let batch = cache.batch(&[(seq, context - 1)])?;
            let per_call = per_call(&gpu, 5, calls, |rec| {
                let q = View::rows(&q, heads * head_dim);
                cache.record_decode_attention(rec, 0, &batch, q, &out, cfg)
            })?;
            let bytes = (2 * context * kv_heads * head_dim * dtype.bytes()) as f64;
            println!(
                "{} cache, context {context}: {per_call:.1} µs per layer ({:.0} GB/s of the \
                 cache read once)",
                dtype.name(),
                bytes / per_call / 1e3
            );
        }
        // Prefill: every position of one sequence of `tokens`, causal.
        for &tokens in &contexts {
            let mut cache = GpuKvCache::with_dtype(&gpu, shape, dtype, tokens)?;
            let seq = cache.add_sequence();
            cache.reserve(seq, tokens)?;
            let places: Vec<_> = (0..tokens).map(|p| (seq, p)).collect();
            let batch = cache.batch(&places)?;
            let q = gpu.upload_f32("q", &vec![0.01; tokens * heads * head_dim]);
            let out = gpu.zeros("out", (tokens * heads * head_dim * 4) as u64);
            let per_call = per_call(&gpu, 3, calls.min(4), |rec| {
                let q = View::rows(&q, heads * head_dim);
                cache.record_prefill_attention(rec, 0, &batch, q, &out, cfg)
            })?;
            // Causal: about tokens^2 / 2 scores, each 2 head_dim multiply-adds (q.k and p.v).
            let flops = (tokens * tokens) as f64 * 2.0 * head_dim as f64 * heads as f64;
            println!(
                "{} cache, prefill of {tokens}: {per_call:.1} µs per layer ({:.2} TFLOP/s)",
                dtype.name(),
                flops / per_call / 1e6
            );
        }
    }
    Ok(())
}
