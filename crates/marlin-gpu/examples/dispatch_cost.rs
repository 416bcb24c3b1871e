//! What one dispatch costs inside a recorded pass, apart from its work: many tiny `add`s on
//! one buffer (each depends on the one before, so each waits at a barrier) and on buffers of
//! their own, timed by the GPU's timestamps and by the host (recording, submit, wait). A decode
//! step of a model is hundreds of dispatches, so this is its floor.
//!
//! ```sh
//! cargo run --release -p marlin-gpu --example dispatch_cost [-- DISPATCHES]
//! ```

use std::time::Instant;

use marlin_gpu::{AdapterChoice, Gpu};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(400), |a| a.parse())?;
    let gpu = Gpu::new(AdapterChoice::Any)?;
    println!("adapter: {}", gpu.adapter());
    let len = 4096;
    let x = gpu.upload_f32("x", &vec![1.0; len]);
    let ys: Vec<_> = (0..n).map(|_| gpu.zeros("y", (len * 4) as u64)).collect();
    for (what, chained) in [("dependent (one buffer)", true), ("independent", false)] {
        let mut best = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..5 {
            let start = Instant::now();
            let mut recording = 0.0;
            let t = gpu.time_batch(|rec| {
                for (i, y) in ys.iter().enumerate() {
                    let y = if chained { &ys[0] } else { y };
                    gpu.add(rec, y, &x, len)?;
                    let _ = i;
                }
                recording = start.elapsed().as_secs_f64();
                Ok(())
            })?;
            let gpu_s = t.gpu.unwrap_or(t.wall).as_secs_f64();
            best = (
                best.0.min(recording),
                best.1.min(t.wall.as_secs_f64()),
                best.2.min(gpu_s),
            );
        }
        let us = |s: f64| s * 1e6 / n as f64;
        println!(
            "{n} {what} dispatches: recording {:.2} µs, submit and wait {:.2} µs, GPU {:.2} µs \
             per dispatch",
            us(best.0),
            us(best.1),
            us(best.2)
        );
    }
    Ok(())
}
