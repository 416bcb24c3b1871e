//! The library API in a few lines: load a model, ask it a question, stream the answer.
//!
//! ```sh
//! cargo run --release -p marlin-engine --example chat                      # the default model
//! cargo run --release -p marlin-engine --example chat -- model.gguf "Why is the sky blue?"
//! ```

use std::io::Write;

use marlin_engine::{Engine, Message, TextParams, default_model};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    // A GGUF file or a Hugging Face folder; else the default model, fetched once into the cache.
    let path = match args.next() {
        Some(path) => path.into(),
        None => default_model::path(|note| eprintln!("{note}"))?,
    };
    let question = args
        .next()
        .unwrap_or_else(|| "What is the capital of France?".into());

    let engine = Engine::load(&path)?;
    let prompt = engine.encode_chat(&[Message::user(question)])?;
    let mut params = TextParams::default();
    params.generate.max_tokens = 128;
    let done = engine.generate(&prompt, &params, |text| {
        print!("{text}");
        let _ = std::io::stdout().flush();
    })?;
    println!();
    eprintln!(
        "{} tokens, {:?}, decode {:.1} tokens/s",
        done.token_ids.len(),
        done.finish_reason,
        done.decode_tokens_per_s
    );
    Ok(())
}
