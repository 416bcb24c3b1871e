//! `metal-marlin bench serve`: aggregate generated tokens/s and time to first token of the HTTP
//! server at several numbers of concurrent streams, over loopback, in one run (so the ratio to
//! one stream is measured against a baseline of the same run).

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use marlin_engine::scheduler::SchedulerConfig;
use marlin_server::{Server, ServerConfig, client};
use serde_json::json;

use crate::model_source::ModelArgs;

#[derive(Debug, Args)]
pub struct ServeBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Numbers of concurrent streams, each measured in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    streams: Vec<usize>,
    /// Tokens generated per request (end-of-sequence ignored, so every request makes them all).
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Requests each stream makes one after another.
    #[arg(long, default_value_t = 2)]
    requests: usize,
}

/// One level's measurement.
struct Level {
    streams: usize,
    tokens: usize,
    wall: Duration,
    /// Sorted.
    ttft: Vec<Duration>,
}

pub fn run(args: &ServeBenchArgs) -> anyhow::Result<()> {
    let most = args.streams.iter().copied().max().unwrap_or(1);
    if args.max_tokens == 0 || args.requests == 0 || args.streams.contains(&0) {
        bail!("--streams, --max-tokens and --requests must be at least 1");
    }
    let engine = args.model.load()?;
    let device = crate::model_source::describe_device(engine.model());
    let config = ServerConfig {
        served_model_name: "bench".into(),
        scheduler: SchedulerConfig {
            max_batch: most,
            kv_cache_tokens: most * (args.max_tokens + 64) + 1024,
            ..Default::default()
        },
        ..Default::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let server = Server::start(Arc::new(engine), config, listener, false)?;
    let addr = server.addr();
    eprintln!("model {}, {device}", args.model.describe());
    // Warm-up: first-touch of weights and caches.
    one_request(addr, 0, 4)?;
    println!(
        "| streams | requests | tokens | seconds | tokens/s | vs first row | TTFT p50 ms | TTFT p90 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut base = None;
    for &n in &args.streams {
        let level = measure(addr, n, args.requests, args.max_tokens)?;
        let rate = level.tokens as f64 / level.wall.as_secs_f64();
        let base = *base.get_or_insert(rate);
        let pct = |p: f64| {
            let i = ((level.ttft.len() - 1) as f64 * p).round() as usize;
            level.ttft[i].as_secs_f64() * 1e3
        };
        println!(
            "| {} | {} | {} | {:.2} | {:.1} | {:.2}x | {:.0} | {:.0} |",
            level.streams,
            level.ttft.len(),
            level.tokens,
            level.wall.as_secs_f64(),
            rate,
            rate / base,
            pct(0.5),
            pct(0.9)
        );
    }
    server.stop()?;
    Ok(())
}

fn measure(
    addr: SocketAddr,
    streams: usize,
    requests: usize,
    max_tokens: usize,
) -> anyhow::Result<Level> {
    let barrier = Arc::new(Barrier::new(streams + 1));
    let threads: Vec<_> = (0..streams)
        .map(|s| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..requests)
                    .map(|r| one_request(addr, s * requests + r, max_tokens))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut tokens = 0;
    let mut ttft = Vec::new();
    for t in threads {
        let runs = t
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        for (n, first) in runs {
            tokens += n;
            ttft.push(first);
        }
    }
    let wall = start.elapsed();
    ttft.sort();
    Ok(Level {
        streams,
        tokens,
        wall,
        ttft,
    })
}

/// One streamed completion: (tokens generated, time to the first one).
fn one_request(addr: SocketAddr, i: usize, max_tokens: usize) -> anyhow::Result<(usize, Duration)> {
    let topics = [
        "the sea", "a city", "numbers", "trees", "music", "the moon", "bread", "rain",
    ];
    let body = json!({
        "model": "bench",
        "prompt": format!("Write a short story about {} (number {i}).", topics[i % topics.len()]),
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string();
    let start = Instant::now();
    let mut s = client::open(addr, "POST", "/v1/completions", &[], Some(body.as_bytes()))?;
    if s.status != 200 {
        let status = s.status;
        bail!("the server answered {status}: {}", s.finish()?.text());
    }
    let mut first = None;
    let mut tokens = 0;
    while let Some(event) = s.next_event()? {
        if event == "[DONE]" {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(&event)?;
        if first.is_none() && v["choices"].as_array().is_some_and(|c| !c.is_empty()) {
            first = Some(start.elapsed());
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = n as usize;
        }
    }
    Ok((tokens, first.unwrap_or_else(|| start.elapsed())))
}
