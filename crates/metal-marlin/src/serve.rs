//! `metal-marlin serve`: the OpenAI-compatible HTTP server (docs/serving.md).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use marlin_engine::Engine;
use marlin_engine::scheduler::SchedulerConfig;
use marlin_models::Precision;
use marlin_server::{Server, ServerConfig};

use crate::model_source::{self, ActivationsArg, DeviceArgs};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A GGUF file, a Hugging Face folder or id; without it, the default SmolLM2-135M-Instruct.
    pub model: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Precision of activations inside the quantized matmuls (as `generate --activations`).
    #[arg(long, value_enum, default_value_t = ActivationsArg::Int8x2)]
    pub activations: ActivationsArg,
    /// Require `Authorization: Bearer KEY` on /v1/* and the tokenizer routes.
    #[arg(long)]
    pub api_key: Option<String>,
    /// The model's name in the API (default: the model file or folder name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Sequences decoded together in one forward pass at most.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Requests waiting for a place at most; more get 429 at once.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Prompt plus new tokens of one request at most (default: the model's context).
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Memory for the KV cache of all requests, in bytes, with an optional K, M, G (powers of
    /// 1024) suffix: 512M, 4G. Default: 2G on the CPU (taken as it fills), the device's budget
    /// on a GPU (taken at start).
    #[arg(long, value_parser = parse_bytes)]
    pub kv_cache_memory: Option<u64>,
    /// Prompt tokens prefilled per step over all requests (bounds the stall that a long
    /// prompt causes the others).
    #[arg(long, default_value_t = 256)]
    pub prefill_chunk: usize,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let path = model_source::resolve(args.model.as_deref())?;
    let hardware = args.device.open()?;
    let precision = match args.activations {
        ActivationsArg::Int8x2 => Precision::Int8x2,
        ActivationsArg::F32 => Precision::F32,
        ActivationsArg::Int8 => Precision::Int8,
    };
    eprintln!("loading {} ...", path.display());
    let engine = Engine::load_on(&path, hardware, precision)
        .with_context(|| format!("loading {}", path.display()))?;
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| default_name(args.model.as_deref(), &path));
    let scheduler = scheduler_config(&args, &engine);
    let config = ServerConfig {
        served_model_name: name.clone(),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        scheduler,
        ..Default::default()
    };
    let addr = format!("{}:{}", args.host, args.port);
    let listener = TcpListener::bind(&addr).with_context(|| {
        format!("listening on {addr}: is another server using the port? (--port)")
    })?;
    let device = model_source::describe_device(engine.model());
    let server = Server::start(Arc::new(engine), config, listener, true)?;
    let url = format!("http://{}/v1", server.addr());
    println!("serving {name} on {device} at {url}");
    println!("ready: try  curl {url}/models   (Ctrl-C stops)");
    server.wait()?;
    eprintln!("stopped");
    Ok(())
}

/// The API name: the model file's stem or the folder's (or id's) last part.
fn default_name(given: Option<&Path>, path: &Path) -> String {
    let Some(given) = given else {
        return "SmolLM2-135M-Instruct".into();
    };
    let p = if given.exists() { path } else { given };
    let name = if p.is_file() {
        p.file_stem()
    } else {
        p.file_name()
    };
    name.map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}

fn scheduler_config(args: &ServeArgs, engine: &Engine) -> SchedulerConfig {
    let model = engine.model();
    let per_token = model.kv_bytes_per_token().max(1);
    let on_gpu = model.gpu().is_some();
    let budget = match args.kv_cache_memory {
        Some(b) => b / per_token,
        None if on_gpu => u64::MAX,
        None => (2u64 << 30) / per_token,
    };
    let kv_cache_tokens = (budget as usize).min(model.max_cache_tokens()).max(16);
    SchedulerConfig {
        max_batch: args.max_batch,
        max_queue: args.max_queue,
        max_model_len: args.max_model_len.unwrap_or(0),
        kv_cache_tokens,
        prefill_chunk: args.prefill_chunk,
        ..Default::default()
    }
}

/// `4G`, `512M`, `65536`: bytes.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 10),
        Some((i, 'm' | 'M')) => (&s[..i], 20),
        Some((i, 'g' | 'G')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size: give bytes, or a number with K, M or G"))?;
    Ok((n * (1u64 << shift) as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_bytes("4G"), Ok(4 << 30));
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").is_err());
    }
}
