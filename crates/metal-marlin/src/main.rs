//! `metal-marlin`: the command line of Metal Marlin.
//!
//! Each subcommand lives in its own module; this file only parses arguments and dispatches.

mod bench;
mod generate;

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
    /// Measure speed: a model's prefill and decode (default), or the kernels (`bench kernels`).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
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
