//! `metal-marlin bench` (no subcommand): prefill and decode speed of a whole model, measured as
//! llama.cpp's llama-bench does (pp: a prompt of N tokens; tg: N generated tokens).

use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use marlin_engine::TextParams;
use marlin_engine::generate::GenerateParams;
use marlin_quant::Format;
use serde::Serialize;

use crate::model_source::ModelArgs;

#[derive(Debug, Args)]
pub struct ModelBenchArgs {
    #[command(flatten)]
    pub(super) model: ModelArgs,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 128)]
    pub(super) prompt_tokens: usize,
    /// Tokens generated for the decode measurement.
    #[arg(long, default_value_t = 64)]
    pub(super) gen_tokens: usize,
    /// Measured runs (after one warm-up run); the best is reported.
    #[arg(long, default_value_t = 3)]
    pub(super) runs: usize,
    #[arg(long)]
    pub(super) json: bool,
    /// Instead of --model: a model of this architecture and size with random weights, built
    /// in memory. A preset (llama-3.1-8b, llama-3.2-1b, qwen3-4b, smollm2-135m) or a
    /// config.json file.
    #[arg(long, conflicts_with = "model")]
    pub(super) synthetic: Option<String>,
    /// The synthetic model's weight format.
    #[arg(
        long,
        default_value = "int4",
        requires = "synthetic",
        value_parser = PossibleValuesParser::new(Format::NAMES)
            .map(|s| s.parse::<Format>().expect("a listed format name parses"))
    )]
    pub(super) format: Format,
    /// The synthetic model's group size (16, 32, 64, 128; default: the format's own).
    #[arg(long, requires = "synthetic")]
    pub(super) group_size: Option<u32>,
}

#[derive(Serialize)]
struct Record {
    model: String,
    /// The CPU's instruction set, or the GPU adapter, backend and features.
    device: String,
    activations: String,
    threads: usize,
    prompt_tokens: usize,
    gen_tokens: usize,
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
}

pub fn run(args: &ModelBenchArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.synthetic {
        return super::synthetic::run(args, name);
    }
    anyhow::ensure!(
        args.prompt_tokens > 0 && args.gen_tokens > 1,
        "need --prompt-tokens >= 1 and --gen-tokens >= 2"
    );
    let engine = args.model.load()?;
    // A fixed prompt of ordinary tokens (ids past the special ones), the same on every run;
    // tiny test vocabularies have fewer than 1000 ids.
    let vocab = engine.model().config().vocab_size as u32;
    let first = 1000.min(vocab / 2);
    let prompt: Vec<u32> = (0..args.prompt_tokens as u32)
        .map(|i| first + (i * 7919) % (vocab - first))
        .collect();
    let params = TextParams {
        generate: GenerateParams {
            max_tokens: args.gen_tokens,
            ..Default::default()
        },
        ..Default::default()
    };
    // Generation must not stop early, or the decode count would be short: no stop tokens here.
    let mut best = (0f64, 0f64);
    for run in 0..=args.runs.max(1) {
        let done = engine.generate_without_stops(&prompt, &params)?;
        if run > 0 {
            best = (
                best.0.max(done.prefill_tokens_per_s),
                best.1.max(done.decode_tokens_per_s),
            );
        }
    }
    let model = engine.model();
    let device = crate::model_source::describe_device(model);
    let record = Record {
        device,
        model: args.model.describe(),
        // On the GPU, unless --activations says f32, prefill runs on f16 cooperative matrices
        // and decode's large 4-bit integer products take x as int8x2 (MatmulPrecision::Mixed).
        activations: match model.gpu() {
            Some(gpu)
                if args.model.precision().gpu_matmul() != marlin_gpu::MatmulPrecision::F32 =>
            {
                let prefill = if gpu.capabilities().coop.is_some() {
                    "f16"
                } else {
                    "f32"
                };
                format!("{prefill} prefill, f32 or int8x2 decode")
            }
            Some(_) => "f32".into(),
            None => format!("{:?}", args.model.activations).to_lowercase(),
        },
        threads: rayon::current_num_threads(),
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        prefill_tokens_per_s: best.0,
        decode_tokens_per_s: best.1,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        println!(
            "{} on {}: pp{} {:.1} tokens/s, tg{} {:.1} tokens/s ({} activations, {} threads, \
             best of {})",
            record.model,
            record.device,
            record.prompt_tokens,
            record.prefill_tokens_per_s,
            record.gen_tokens,
            record.decode_tokens_per_s,
            record.activations,
            record.threads,
            args.runs.max(1)
        );
    }
    Ok(())
}
