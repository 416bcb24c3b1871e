//! `metal-marlin generate`: complete a prompt (or answer a chat message) and stream the text.

use std::io::{Read, Write};

use anyhow::Context;
use clap::Args;
use marlin_engine::chat::Message;
use serde::Serialize;

use crate::model_source::ModelArgs;
use crate::sampling::SamplingArgs;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt; read from standard input when absent.
    prompt: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
    /// Treat the prompt as a user message and apply the model's chat template.
    #[arg(long)]
    chat: bool,
    /// A system message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object (ids, text, finish reason, speeds) instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    prompt_token_ids: &'a [u32],
    token_ids: &'a [u32],
    text: &'a str,
    finish_reason: &'a str,
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let text = match args.prompt {
        Some(p) => p,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the prompt from stdin")?;
            s
        }
    };
    let engine = args.model.load()?;
    let prompt = if args.chat {
        let mut messages: Vec<Message> = args.system.iter().map(Message::system).collect();
        messages.push(Message::user(text));
        engine.encode_chat(&messages)?
    } else {
        engine.encode(&text)?
    };
    let params = args.sampling.text_params();
    let stream = !args.json;
    let done = engine.generate(&prompt, &params, |piece| {
        if stream {
            let mut out = std::io::stdout().lock();
            // A closed pipe (e.g. `| head`) ends the output, not the program's correctness.
            let _ = out.write_all(piece.as_bytes()).and_then(|()| out.flush());
        }
    })?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let out = JsonOut {
            prompt_token_ids: &done.prompt_token_ids,
            token_ids: &done.token_ids,
            text: &done.text,
            finish_reason: done.finish_reason.as_str(),
            prefill_tokens_per_s: done.prefill_tokens_per_s,
            decode_tokens_per_s: done.decode_tokens_per_s,
        };
        crate::stdout_closed_is_fine(writeln!(stdout, "{}", serde_json::to_string(&out)?))?;
    } else {
        crate::stdout_closed_is_fine(writeln!(stdout))?;
        eprintln!(
            "prefill {} tokens at {:.1} tokens/s, decode {} tokens at {:.1} tokens/s ({})",
            done.prompt_token_ids.len(),
            done.prefill_tokens_per_s,
            done.token_ids.len(),
            done.decode_tokens_per_s,
            done.finish_reason.as_str()
        );
    }
    Ok(())
}
