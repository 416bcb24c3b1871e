//! `metal-marlin bench`: speed measurements, each against a baseline taken in the same run.

mod kernels;
mod report;
mod timing;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Fused dequantize + matmul of every format against dense f32 and a streaming read.
    Kernels(kernels::KernelsArgs),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchCommand::Kernels(args) => kernels::run(&args),
    }
}
