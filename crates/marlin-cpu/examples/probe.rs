//! Quick timing probe used while tuning kernels: `cargo run --release -p marlin-cpu --example probe`.
use std::time::Instant;

use marlin_cpu::{CpuBackend, Isa};
use marlin_quant::{Format, Scheme, quantize};

fn time<F: FnMut()>(mut f: F) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed().as_secs_f64() < 0.05 {
            f();
            n += 1;
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    best
}

fn main() {
    let (n, k) = (4096, 4096);
    let mut s = 1u64;
    let wf: Vec<f32> = (0..n * k)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((s >> 40) as f32 / 16777216.0 - 0.5) * 0.05
        })
        .collect();
    let fmts: Vec<Format> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let fmts = if fmts.is_empty() {
        vec![Format::Int4]
    } else {
        fmts
    };
    for f in fmts {
        let w = quantize(&wf, n, k, Scheme::of(f)).unwrap();
        let bytes: Vec<u8> = [w.codes(), w.scales(), w.biases()].concat();
        let ts = time(|| {
            use rayon::prelude::*;
            let s: u64 = bytes
                .par_chunks(1 << 16)
                .map(|c| {
                    c.chunks_exact(8).fold(0u64, |a, b| {
                        a.wrapping_add(u64::from_le_bytes(b.try_into().unwrap()))
                    })
                })
                .sum();
            std::hint::black_box(s);
        });
        println!(
            "{f}: stream {:.1} us {:.1} GB/s",
            ts * 1e6,
            bytes.len() as f64 / ts / 1e9
        );
        for isa in Isa::available() {
            let be = CpuBackend::new(isa).unwrap();
            let mut t1 = 0.0;
            for m in [1usize, 8, 16, 32] {
                let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
                let mut y = vec![0f32; m * n];
                let t = time(|| be.matmul(&x, m, &w, &mut y).unwrap());
                if m == 1 {
                    t1 = t;
                }
                println!(
                    "  {isa:>10} m={m:2}: {:8.1} us  {:6.1} GB/s  {:4.0}% of stream  x{:.2} of m=1",
                    t * 1e6,
                    bytes.len() as f64 / t / 1e9,
                    ts / t * 100.0,
                    t / t1
                );
            }
        }
    }
}
