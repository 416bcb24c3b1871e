//! `metal-marlin eval`: measuring a model's quality. `eval perplexity`: sliding-window
//! perplexity on a text file (marlin_engine::perplexity).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use marlin_engine::perplexity::perplexity;
use serde::Serialize;

use crate::model_source::ModelArgs;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    what: EvalCommand,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Perplexity on a text file: windows of --context tokens every --stride tokens, each
    /// scoring only the tokens no earlier window scored.
    Perplexity(PerplexityArgs),
}

#[derive(Debug, Args)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to score (UTF-8), tokenized with the model's tokenizer.
    #[arg(long)]
    text: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    context: usize,
    /// Tokens between window starts (at most --context; smaller gives more context per scored
    /// token and costs more).
    #[arg(long, default_value_t = 512)]
    stride: usize,
    /// Print one JSON object {"perplexity", "tokens", "seconds"}.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct JsonOut {
    perplexity: f64,
    tokens: usize,
    seconds: f64,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    match args.what {
        EvalCommand::Perplexity(args) => run_perplexity(args),
    }
}

fn run_perplexity(args: PerplexityArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.text)
        .with_context(|| format!("reading {} (a UTF-8 text file)", args.text.display()))?;
    let engine = args.model.load()?;
    let ids = engine.encode(&text)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} windows, ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let start = Instant::now();
    let result = perplexity(
        engine.model(),
        &ids,
        args.context,
        args.stride,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    );
    bar.finish_and_clear();
    let result = result?;
    let seconds = start.elapsed().as_secs_f64();
    let mut stdout = std::io::stdout().lock();
    let line = if args.json {
        serde_json::to_string(&JsonOut {
            perplexity: result.perplexity,
            tokens: result.tokens,
            seconds,
        })?
    } else {
        format!(
            "perplexity {:.4} over {} tokens (context {}, stride {}) in {seconds:.1} s on {}",
            result.perplexity,
            result.tokens,
            args.context,
            args.stride,
            crate::model_source::describe_device(engine.model()),
        )
    };
    crate::stdout_closed_is_fine(writeln!(stdout, "{line}"))
}
