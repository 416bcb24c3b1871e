//! Time of one batched decode step at batch sizes 1 to 64: what continuous batching can gain
//! on this machine, without the server around it (docs/benchmarks.md, "The server").
//!
//! ```sh
//! cargo run --release -p marlin-engine --example batch_decode [-- MODEL.gguf]
//! BATCHES=16 STEPS=200 cargo run --release -p marlin-engine --example batch_decode  # one size, longer (to profile)
//! ```

use std::time::Instant;

use marlin_engine::{Engine, default_model};
use marlin_models::SeqTokens;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = match std::env::args().nth(1) {
        Some(p) => p.into(),
        None => default_model::path(|msg| eprintln!("{msg}"))?,
    };
    let engine = Engine::load(&path)?;
    let model = engine.model();
    let prompt: Vec<u32> = (0..32).map(|i| 1000 + i * 7).collect();
    let steps: usize = env_or("STEPS", "20")?.parse()?;
    println!("| batch | step ms | tokens/s | vs batch 1 |\n|---:|---:|---:|---:|");
    let mut base = None;
    let sizes = env_or("BATCHES", "1,2,4,8,16,32,64")?;
    for m in sizes.split(',') {
        let m: usize = m.trim().parse()?;
        // Whole blocks of 16 per sequence.
        let mut cache =
            model.new_cache(16, m * (prompt.len() + steps + 16).next_multiple_of(16))?;
        let seqs: Vec<_> = (0..m).map(|_| cache.add_sequence()).collect();
        // On a rayon worker, as the scheduler runs its steps.
        let per_step = rayon::scope(|_| -> Result<f64, marlin_models::ModelError> {
            let prefill: Vec<_> = seqs
                .iter()
                .map(|&seq| SeqTokens {
                    seq,
                    tokens: &prompt,
                })
                .collect();
            model.forward_greedy(&prefill, &mut cache)?;
            let token = [prompt[0]];
            let start = Instant::now();
            for _ in 0..steps {
                let batch: Vec<_> = seqs
                    .iter()
                    .map(|&seq| SeqTokens {
                        seq,
                        tokens: &token,
                    })
                    .collect();
                model.forward_greedy(&batch, &mut cache)?;
            }
            Ok(start.elapsed().as_secs_f64() / steps as f64)
        })?;
        let rate = m as f64 / per_step;
        let base = *base.get_or_insert(rate);
        println!(
            "| {m} | {:.2} | {rate:.0} | {:.2}x |",
            per_step * 1e3,
            rate / base
        );
    }
    Ok(())
}

/// The environment variable `name`, or `default` where it is unset.
fn env_or(name: &str, default: &str) -> Result<String, std::env::VarError> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(default.to_string()),
        other => other,
    }
}
