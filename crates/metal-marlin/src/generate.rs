//! `metal-marlin generate`: complete a prompt (or answer a chat message) and stream the text.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use marlin_cpu::CpuBackend;
use marlin_engine::chat::Message;
use marlin_engine::generate::GenerateParams;
use marlin_engine::sampler::SamplingParams;
use marlin_engine::{Engine, TextParams, default_model};
use marlin_models::Precision;
use serde::Serialize;

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
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one.
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Above 1 discourages repeating tokens already in the text.
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Seed for sampling: the same seed gives the same text.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop before this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Print one JSON object (ids, text, finish reason, speeds) instead of streaming text.
    #[arg(long)]
    json: bool,
}

/// Which model, and how to run it: shared by every command that loads one.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A GGUF file or a Hugging Face folder (config.json, safetensors, tokenizer.json). Without
    /// it, the default SmolLM2-135M-Instruct (fetched once into the cache).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Precision of activations inside the quantized matmuls.
    #[arg(long, value_enum, default_value_t = ActivationsArg::Mixed)]
    pub activations: ActivationsArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActivationsArg {
    /// int8, but f32 into the attention's q, k and v projections: transformers' answers at
    /// nearly int8 speed.
    Mixed,
    /// Full precision everywhere: matches transformers' logits; slowest.
    F32,
    /// int8 everywhere (per block of 32, as llama.cpp does): fastest; can overturn near-ties.
    Int8,
}

impl ModelArgs {
    /// The model's file name, or "default" for the embedded default.
    pub fn describe(&self) -> String {
        match &self.model {
            Some(p) => p
                .file_name()
                .map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into()),
            None => "SmolLM2-135M-Instruct.Q4_1.gguf (default)".into(),
        }
    }

    /// Loads the model, fetching the default one first if needed.
    pub fn load(&self) -> anyhow::Result<Engine> {
        let path = match &self.model {
            Some(p) => p.clone(),
            None => {
                default_model::path(|msg| eprintln!("{msg} ...")).context("the default model")?
            }
        };
        if !path.exists() {
            bail!(
                "{}: no such file or folder; pass a GGUF file or a Hugging Face model folder to \
                 --model (hub ids are not fetched: download the folder first)",
                path.display()
            );
        }
        let precision = match self.activations {
            ActivationsArg::Mixed => Precision::Mixed,
            ActivationsArg::F32 => Precision::F32,
            ActivationsArg::Int8 => Precision::Int8,
        };
        Engine::load_on(&path, CpuBackend::detect(), precision)
            .with_context(|| format!("loading {}", path.display()))
    }
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
    let params = TextParams {
        generate: GenerateParams {
            max_tokens: args.max_tokens,
            sampling: SamplingParams {
                temperature: args.temperature,
                top_k: args.top_k,
                top_p: args.top_p,
                min_p: args.min_p,
                repetition_penalty: args.repetition_penalty,
                seed: args.seed,
                ..Default::default()
            },
            ..Default::default()
        },
        stop_strings: args.stop,
    };
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
        writeln!(stdout, "{}", serde_json::to_string(&out)?)?;
    } else {
        writeln!(stdout)?;
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
