//! `metal-marlin bench`: speed measurements, each against a baseline taken in the same run.

mod gpu_kernels;
mod kernels;
mod model;
mod report;
mod serve;
mod synthetic;
mod timing;

use clap::{Args, Subcommand};

/// Without a subcommand: a model's prefill and decode speed.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Option<BenchCommand>,
    #[command(flatten)]
    model: model::ModelBenchArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Fused dequantize + matmul of every format against dense f32 and a streaming read.
    Kernels(kernels::KernelsArgs),
    /// The HTTP server's aggregate tokens/s and time to first token at 1, 4, 16, 64 streams.
    Serve(serve::ServeBenchArgs),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        Some(BenchCommand::Kernels(args)) => kernels::run(&args),
        Some(BenchCommand::Serve(args)) => serve::run(&args),
        None => model::run(&args.model),
    }
}
