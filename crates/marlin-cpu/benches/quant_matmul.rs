//! The fused dequantize + matmul beside its two baselines, measured in the same run:
//! a dense f32 matmul of the same shape (`gemm`) and a plain streaming read of the same bytes.
//!
//! Every benchmark of a group reports throughput in bytes of the *quantized* matrix, so the
//! GB/s figures compare directly: their ratio is the ratio of times.
//!
//! `cargo bench -p marlin-cpu --bench quant_matmul` (add a filter such as `int4/m1` to narrow it).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use marlin_cpu::{CpuBackend, dense, stream::stream_read};
use marlin_quant::{Format, QuantMatrix, Scheme, quantize};
use marlin_testkit::rng::gaussian;

const N: usize = 4096;
const K: usize = 4096;
const MS: [usize; 2] = [1, 16];
const FORMATS: [Format; 3] = [Format::Int4, Format::Fp4, Format::Int8];

/// Codes, scales and biases in one buffer: what a kernel has to read, laid out for a stream.
fn weight_bytes(w: &QuantMatrix<'_>) -> Vec<u8> {
    let mut b = Vec::with_capacity(w.storage_bytes());
    b.extend_from_slice(w.codes());
    b.extend_from_slice(w.scales());
    b.extend_from_slice(w.biases());
    b
}

fn quant_matmul(c: &mut Criterion) {
    let backend = CpuBackend::detect();
    let weights = gaussian(42, N * K, 0.02);
    for format in FORMATS {
        let w = quantize(&weights, N, K, Scheme::of(format)).expect("quantize");
        let bytes = weight_bytes(&w);
        // As a model does when it loads: repack once, multiply many times.
        let prepared = backend.prepare(&w);
        for m in MS {
            let x = gaussian(7 + m as u64, m * K, 1.0);
            let mut y = vec![0f32; m * N];
            let mut group = c.benchmark_group(format!("{format}/m{m}"));
            group
                .sample_size(10)
                .warm_up_time(Duration::from_millis(300))
                .measurement_time(Duration::from_secs(1))
                .throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_function(format!("quant-{}", backend.isa()), |b| {
                b.iter(|| {
                    backend
                        .matmul_prepared(black_box(&x), m, &prepared, &mut y)
                        .expect("matmul")
                })
            });
            group.bench_function("dense-f32", |b| {
                b.iter(|| dense::matmul_f32(black_box(&x), m, &weights, N, &mut y).expect("gemm"))
            });
            group.bench_function("stream-read", |b| b.iter(|| stream_read(black_box(&bytes))));
            group.finish();
        }
    }
}

criterion_group!(benches, quant_matmul);
criterion_main!(benches);
