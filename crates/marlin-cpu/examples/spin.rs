//! One quantized product in a loop, for profiling a kernel at one shape:
//! `cargo run --release -p marlin-cpu --example spin -- N K M FORMAT [int8|int8x2] [SECONDS]`.
use std::time::Instant;

use marlin_cpu::{Activations, CpuBackend};
use marlin_quant::{Format, Scheme, quantize};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let (n, k, m): (usize, usize, usize) = (
        arg(0, "3072").parse().unwrap(),
        arg(1, "576").parse().unwrap(),
        arg(2, "16").parse().unwrap(),
    );
    let format: Format = arg(3, "int4-affine").parse().unwrap();
    let activations = match arg(4, "int8x2").as_str() {
        "int8" => Activations::Int8,
        _ => Activations::Int8x2,
    };
    let seconds: f64 = arg(5, "3").parse().unwrap();
    let mut s = 1u64;
    let mut random = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((s >> 40) as f32 / 16777216.0 - 0.5) * 0.05
            })
            .collect()
    };
    let w = quantize(&random(n * k), n, k, Scheme::of(format)).unwrap();
    let x = random(m * k);
    let mut y = vec![0f32; m * n];
    let be = CpuBackend::detect().with_activations(activations);
    let prepared = be.prepare(&w);
    // On a rayon worker, as the engine runs its passes (a call from outside the pool would pay
    // for waking a worker and waiting on a latch every time).
    let (calls, best) = rayon::scope(|_| {
        let (start, mut calls, mut best) = (Instant::now(), 0u64, f64::MAX);
        while start.elapsed().as_secs_f64() < seconds {
            let t = Instant::now();
            for _ in 0..20 {
                be.matmul_prepared(&x, m, &prepared, &mut y).unwrap();
            }
            best = best.min(t.elapsed().as_secs_f64() / 20.0);
            calls += 20;
        }
        (calls, best)
    });
    println!(
        "{n}x{k} m={m} {format}: best {:.1} us over {calls} calls",
        best * 1e6
    );
}
