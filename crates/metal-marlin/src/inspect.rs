//! `metal-marlin inspect`: what a model is (configuration, parameters, stored tensor types and
//! what they become in memory) and what running it takes, without loading its weights.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use marlin_models::{InMemory, ModelConfig, ModelSummary, summarize};
use serde::Serialize;

use crate::model_source;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A GGUF file, a Hugging Face folder or a Hugging Face id (as --model elsewhere); the
    /// default model when absent.
    model: Option<PathBuf>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
    /// The device the report names (what `generate` would run on).
    #[command(flatten)]
    device: model_source::DeviceArgs,
}

#[derive(Serialize)]
struct Report {
    path: PathBuf,
    /// The device the model would run on: the CPU's instruction set, or the GPU adapter,
    /// backend and features.
    device: String,
    /// The file's size, or the sum of the folder's files.
    size_bytes: u64,
    architecture: String,
    config: Config,
    parameters: u64,
    stored_types: Vec<StoredType>,
    memory_estimate: Memory,
}

/// The configuration under Hugging Face `config.json` names.
#[derive(Serialize)]
struct Config {
    num_hidden_layers: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    rope_theta: f32,
    rope_scaling: Option<RopeScaling>,
    sliding_window: Option<usize>,
    tie_word_embeddings: bool,
}

#[derive(Serialize)]
struct RopeScaling {
    rope_type: &'static str,
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_max_position_embeddings: usize,
}

#[derive(Serialize)]
struct StoredType {
    stored_as: String,
    tensors: usize,
    parameters: u64,
    bytes: u64,
    /// Our format name or `f32`; null when not loadable.
    in_memory: Option<String>,
    /// `packed` (kept bit for bit), `exact` (decoded to f32), `dequantized` or `unsupported`.
    conversion: &'static str,
    memory_bytes: u64,
}

/// Estimates, in bytes.
#[derive(Serialize)]
struct Memory {
    weights_bytes: u64,
    kv_cache_dtype: &'static str,
    kv_cache_bytes_per_token: u64,
    context_tokens: usize,
    kv_cache_bytes_at_context: u64,
    total_bytes_at_context: u64,
}

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let path = model_source::resolve(args.model.as_deref())?;
    let source =
        marlin_models::open(&path).with_context(|| format!("inspecting {}", path.display()))?;
    let summary = summarize(source.as_ref());
    let hardware = args.device.open()?;
    let device = model_source::describe_hardware(&hardware);
    // The cache's element: f16 on a GPU that has it, f32 otherwise (marlin_gpu::KvDtype).
    let kv_dtype = match &hardware {
        marlin_models::Hardware::Gpu(gpu) => marlin_gpu::KvDtype::for_gpu(gpu),
        marlin_models::Hardware::Cpu(_) => marlin_gpu::KvDtype::F32,
    };
    let report = Report {
        device,
        size_bytes: size_on_disk(&path)?,
        architecture: format!("{:?}", source.config().architecture).to_lowercase(),
        config: config(source.config()),
        parameters: summary.parameters,
        stored_types: stored_types(&summary),
        memory_estimate: memory(&summary, kv_dtype),
        path,
    };
    let out = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        text(&report)
    };
    let mut stdout = std::io::stdout().lock();
    crate::stdout_closed_is_fine(
        stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush()),
    )
}

fn config(c: &ModelConfig) -> Config {
    Config {
        num_hidden_layers: c.num_hidden_layers,
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.num_key_value_heads,
        head_dim: c.head_dim,
        vocab_size: c.vocab_size,
        max_position_embeddings: c.max_position_embeddings,
        rope_theta: c.rope_theta,
        rope_scaling: c.rope_scaling.map(|s| RopeScaling {
            rope_type: "llama3",
            factor: s.factor,
            low_freq_factor: s.low_freq_factor,
            high_freq_factor: s.high_freq_factor,
            original_max_position_embeddings: s.original_max_position_embeddings,
        }),
        sliding_window: c.sliding_window,
        tie_word_embeddings: c.tie_word_embeddings,
    }
}

fn stored_types(s: &ModelSummary) -> Vec<StoredType> {
    s.types
        .iter()
        .map(|t| {
            let (in_memory, conversion) = match t.in_memory {
                InMemory::Packed(f) => (Some(f.name().to_string()), "packed"),
                InMemory::F32 => (Some("f32".into()), "exact"),
                InMemory::Dequantized => (Some("f32".into()), "dequantized"),
                InMemory::Unsupported => (None, "unsupported"),
            };
            StoredType {
                stored_as: t.stored_as.clone(),
                tensors: t.tensors,
                parameters: t.parameters,
                bytes: t.bytes,
                in_memory,
                conversion,
                memory_bytes: t.memory_bytes,
            }
        })
        .collect()
}

/// The summary's estimate (f32 keys and values) for a cache of `kv`.
fn memory(s: &ModelSummary, kv: marlin_gpu::KvDtype) -> Memory {
    let per_token = s.kv_bytes_per_token / 4 * kv.bytes() as u64;
    let at_context = per_token * s.context_tokens as u64;
    Memory {
        weights_bytes: s.weights_memory_bytes,
        kv_cache_dtype: kv.name(),
        kv_cache_bytes_per_token: per_token,
        context_tokens: s.context_tokens,
        kv_cache_bytes_at_context: at_context,
        total_bytes_at_context: s.weights_memory_bytes + at_context,
    }
}

/// A file's size, or the sum of a folder's files (links followed, as in a hub snapshot).
fn size_on_disk(path: &Path) -> anyhow::Result<u64> {
    let meta = std::fs::metadata(path).with_context(|| path.display().to_string())?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let entries = std::fs::read_dir(path).with_context(|| path.display().to_string())?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum())
}

fn text(r: &Report) -> String {
    let c = &r.config;
    let opt = |v: Option<usize>| v.map_or("none".to_string(), |v| v.to_string());
    let rope_scaling = c.rope_scaling.as_ref().map_or("none".to_string(), |s| {
        format!(
            "{} (factor {}, low/high frequency factors {}/{}, original context {})",
            s.rope_type,
            s.factor,
            s.low_freq_factor,
            s.high_freq_factor,
            s.original_max_position_embeddings
        )
    });
    let rows: [(&str, String); 12] = [
        ("layers", c.num_hidden_layers.to_string()),
        ("hidden size", c.hidden_size.to_string()),
        ("intermediate size", c.intermediate_size.to_string()),
        ("attention heads", c.num_attention_heads.to_string()),
        ("kv heads", c.num_key_value_heads.to_string()),
        ("head dim", c.head_dim.to_string()),
        ("vocab size", c.vocab_size.to_string()),
        ("context length", c.max_position_embeddings.to_string()),
        ("rope theta", c.rope_theta.to_string()),
        ("rope scaling", rope_scaling),
        ("sliding window", opt(c.sliding_window)),
        ("tied embeddings", yes_no(c.tie_word_embeddings)),
    ];
    let mut out = format!(
        "path          {}\ndevice        {}\nsize          {} ({} bytes)\narchitecture  {}\n\
         parameters    {} ({})\n\nconfiguration\n",
        r.path.display(),
        r.device,
        bytes(r.size_bytes),
        r.size_bytes,
        r.architecture,
        count(r.parameters),
        r.parameters
    );
    for (name, value) in rows {
        out += &format!("  {name:<19} {value}\n");
    }
    out += &types_table(&r.stored_types);
    let m = &r.memory_estimate;
    out += &format!(
        "\nmemory to run (estimates)\n  weights in memory   {}\n  KV cache            {} per \
         token ({} keys and values), {} at the full context of {} tokens\n  total               \
         {} at the full context, plus working buffers\n",
        bytes(m.weights_bytes),
        bytes(m.kv_cache_bytes_per_token),
        m.kv_cache_dtype,
        bytes(m.kv_cache_bytes_at_context),
        m.context_tokens,
        bytes(m.total_bytes_at_context)
    );
    out
}

fn types_table(types: &[StoredType]) -> String {
    let mut out = format!(
        "\nstored tensors\n  {:<8} {:>7} {:>12} {:>11}  {}\n",
        "type", "tensors", "parameters", "bytes", "in memory"
    );
    for t in types {
        let in_memory = match (t.conversion, &t.in_memory) {
            ("packed", Some(f)) => format!("{f}, packed as stored ({})", bytes(t.memory_bytes)),
            ("dequantized", _) => format!("f32, dequantized ({})", bytes(t.memory_bytes)),
            (_, Some(f)) => format!("{f} ({})", bytes(t.memory_bytes)),
            (_, None) => "not supported: the model will not load".into(),
        };
        out += &format!(
            "  {:<8} {:>7} {:>12} {:>11}  {in_memory}\n",
            t.stored_as,
            t.tensors,
            count(t.parameters),
            bytes(t.bytes)
        );
    }
    out
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// `134.5M`, `1.2B`, `576`.
fn count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

/// Binary units: `93.8 MiB`.
fn bytes(n: u64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(98_362_432), "93.8 MiB");
        assert_eq!(count(134_515_008), "134.5M");
        assert_eq!(count(8_030_261_248), "8.03B");
    }
}
