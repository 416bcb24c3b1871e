//! `metal-marlin bench --synthetic CONFIG`: prefill and decode speed of a model built in memory
//! with random weights in one quantized scheme (`marlin_models::synthetic`), for shapes no file
//! here has. Beside the speed: the bytes of weights a decode step reads, the bandwidth that
//! means, and the fraction of the device's bandwidth roofline it reaches, the baseline measured
//! in the same run (a compute-kernel copy on a GPU, a parallel streaming read on the CPU).

use std::time::Instant;

use anyhow::Context;
use marlin_models::synthetic::SyntheticModel;
use marlin_models::{Model, SeqTokens};
use marlin_quant::{Group, Scheme};
use serde::Serialize;

use super::model::ModelBenchArgs;
use super::timing::Timer;

#[derive(Serialize)]
struct Record {
    synthetic: String,
    scheme: String,
    device: String,
    prompt_tokens: usize,
    gen_tokens: usize,
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
    /// Bytes of quantized weights one decode step reads (layers and output projection).
    weight_bytes_per_token: u64,
    /// weight_bytes_per_token * decode_tokens_per_s.
    decode_weight_gbps: f64,
    /// The baseline: a GPU's compute-kernel copy ((read + write) / time), or the CPU's
    /// parallel streaming read.
    baseline_gbps: f64,
    /// decode_weight_gbps / baseline_gbps: 1 is a decode step as fast as reading its weights
    /// at the baseline's speed.
    fraction_of_roofline: f64,
}

pub fn run(args: &ModelBenchArgs, name: &str) -> anyhow::Result<()> {
    let config = SyntheticModel::config(name)?;
    let group = match args.group_size {
        Some(g) => Group::Size(g),
        None => args.format.default_group(),
    };
    let scheme = Scheme::new(args.format, group)
        .with_context(|| format!("--format {} --group-size {group:?}", args.format))?;
    let src = SyntheticModel::new(config, scheme)?;
    let hardware = args.model.device.open()?;
    let start = Instant::now();
    eprintln!("building {name} with random {scheme} weights ...");
    let model = Model::load(&src, hardware, args.model.precision())?;
    eprintln!(
        "built in {:.1} s on {}",
        start.elapsed().as_secs_f64(),
        model.device()
    );

    let vocab = model.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..args.prompt_tokens as u32)
        .map(|i| (i * 7919) % vocab)
        .collect();
    let mut best = (0f64, 0f64);
    for run in 0..=args.runs.max(1) {
        let (prefill, decode) = time_run(&model, &prompt, args.gen_tokens)?;
        if run > 0 {
            best = (best.0.max(prefill), best.1.max(decode));
        }
    }
    let baseline_gbps = match model.gpu() {
        Some(gpu) => super::gpu_kernels::copy_gbps(gpu, 1024)?,
        None => cpu_read_gbps(),
    };
    let bytes = src.bytes_per_token();
    let decode_weight_gbps = bytes as f64 * best.1 / 1e9;
    let device = crate::model_source::describe_device(&model);
    let record = Record {
        synthetic: name.to_string(),
        scheme: scheme.to_string(),
        device,
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        prefill_tokens_per_s: best.0,
        decode_tokens_per_s: best.1,
        weight_bytes_per_token: bytes,
        decode_weight_gbps,
        baseline_gbps,
        fraction_of_roofline: decode_weight_gbps / baseline_gbps,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        println!(
            "{} {} on {}: pp{} {:.1} tokens/s, tg{} {:.1} tokens/s; a decode step reads {:.2} GB \
             of weights: {:.0} GB/s, {:.0}% of the {:.0} GB/s baseline (best of {})",
            record.synthetic,
            record.scheme,
            record.device,
            record.prompt_tokens,
            record.prefill_tokens_per_s,
            record.gen_tokens,
            record.decode_tokens_per_s,
            bytes as f64 / 1e9,
            decode_weight_gbps,
            record.fraction_of_roofline * 100.0,
            baseline_gbps,
            args.runs.max(1)
        );
    }
    Ok(())
}

/// One prefill of `prompt` and `steps` greedy decode steps: (prefill, decode) tokens/s.
fn time_run(model: &Model, prompt: &[u32], steps: usize) -> anyhow::Result<(f64, f64)> {
    let mut cache = model.new_cache(16, prompt.len() + steps + 1)?;
    let seq = cache.add_sequence();
    // Greedy, as `generate --temperature 0`: the argmax is taken on the model's device.
    let start = Instant::now();
    let mut next = model.forward_greedy(
        &[SeqTokens {
            seq,
            tokens: prompt,
        }],
        &mut cache,
    )?;
    let prefill = prompt.len() as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..steps {
        next = model.forward_greedy(&[SeqTokens { seq, tokens: &next }], &mut cache)?;
    }
    Ok((prefill, steps as f64 / start.elapsed().as_secs_f64()))
}

/// The CPU's parallel streaming read of 1 GiB, GB/s: the baseline of `bench kernels`, timed
/// the same way.
fn cpu_read_gbps() -> f64 {
    let bytes = vec![1u8; 1 << 30];
    let time = Timer::new(None)
        .median(|| {
            std::hint::black_box(marlin_cpu::stream::stream_read(std::hint::black_box(
                &bytes,
            )));
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {});
    bytes.len() as f64 / time.as_secs_f64() / 1e9
}
