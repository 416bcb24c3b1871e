//! `metal-marlin`: the command line of Metal Marlin.
//!
//! Each subcommand lives in its own module; this file only parses arguments and dispatches.

mod bench;
mod calibration;
mod chat;
mod eval;
mod generate;
mod inspect;
mod model_source;
mod quantize;
mod sampling;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "metal-marlin",
    version,
    about = "Quantized LLM inference with fused dequantize + matmul kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Complete a prompt, or answer a chat message with --chat, streaming the text.
    Generate(generate::GenerateArgs),
    /// A conversation: one message per line of standard input, each reply streamed.
    Chat(chat::ChatArgs),
    /// A model's configuration, parameters, tensor types and the memory it needs to run.
    Inspect(inspect::InspectArgs),
    /// Measure speed: a model's prefill and decode (default), or the kernels (`bench kernels`).
    Bench(bench::BenchArgs),
    /// Quantize a model (GGUF file, Hugging Face folder or id) into a Metal Marlin checkpoint.
    Quantize(quantize::QuantizeArgs),
    /// Measure a model's quality: `eval perplexity --text FILE`.
    Eval(eval::EvalArgs),
    /// Serve a model over an OpenAI-compatible HTTP API (docs/serving.md).
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    model_source::ensure_runtime_dir();
    let result = match Cli::parse().command {
        Command::Generate(args) => generate::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Bench(args) => bench::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole chain of causes on one line, without a backtrace.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A write to standard output, where a reader that stopped early (`| head`) is not a failure.
fn stdout_closed_is_fine(written: std::io::Result<()>) -> anyhow::Result<()> {
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r.map_err(|e| anyhow::anyhow!("writing to standard output: {e}"))?),
    }
}
