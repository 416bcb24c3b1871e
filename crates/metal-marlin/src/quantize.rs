//! `metal-marlin quantize`: a GGUF file, a Hugging Face folder or id into our checkpoint
//! (docs/quantization.md), one weight at a time, with a progress bar on stderr.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use indicatif::{ProgressBar, ProgressStyle};
use marlin_models::checkpoint::{Method, PRESETS, Recipe, Rule, quantize_model_calibrated};
use marlin_quant::{Format, Group, Scheme};

use crate::{calibration, model_source};

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The model to quantize: a GGUF file, a Hugging Face folder (F32/F16/BF16 safetensors), a
    /// Hugging Face id (org/name[@revision]), or one of our checkpoints.
    input: PathBuf,
    /// The checkpoint folder to create; it must not exist.
    #[arg(long, short)]
    output: PathBuf,
    /// Weight format of the quantized layers (default int4, or the preset's).
    #[arg(
        long,
        value_parser = PossibleValuesParser::new(Format::NAMES)
            .map(|s| s.parse::<Format>().expect("a listed format name parses"))
    )]
    format: Option<Format>,
    /// Weights per scale along the input dimension: 16, 32, 64, 128, or channel (fp8 only).
    /// Default: the format's own (32; fp8 per channel; nvfp4 16).
    #[arg(long)]
    group_size: Option<String>,
    /// How weights are rounded: rtn (round to nearest), gptq (GPTQ on calibration text,
    /// decoder layer by decoder layer) or awq (activation-aware scaling searched per layer on
    /// calibration text, then round to nearest).
    #[arg(long, default_value = "rtn")]
    method: String,
    /// A per-layer override, GLOB=FORMAT[:GROUP] or GLOB=keep, matched against tensor names
    /// with or without `.weight` (`*` any run of characters, `?` one); repeatable, the last
    /// match wins. Example: --layer 'model.layers.*.self_attn.*=int8'.
    #[arg(long = "layer", value_name = "GLOB=FORMAT[:GROUP]")]
    layers: Vec<String>,
    /// A mixed-precision recipe: int4-mixed (MLP int4, attention and the first and last layers
    /// int8) or int2-mixed (MLP int2, attention int4, first and last layers int8).
    #[arg(long, value_parser = PossibleValuesParser::new(PRESETS))]
    preset: Option<String>,
    /// GPTQ's and AWQ's calibration text (UTF-8), tokenized with the model's tokenizer and cut into
    /// samples of 512 tokens. Default: the corpus built into metal-marlin
    /// (docs/quantization.md, "Calibration").
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// GPTQ, AWQ: calibration samples of 512 tokens (default 128, or as many as the text holds).
    #[arg(long)]
    samples: Option<usize>,
    /// GPTQ: dampening added to the Hessian's diagonal, as a fraction of its mean (default 0.01).
    #[arg(long)]
    damp: Option<f64>,
    /// GPTQ: quantize columns in decreasing order of their input's energy (diag of the Hessian).
    #[arg(long)]
    act_order: bool,
    /// GPTQ: fit each group's range as min/max instead of searching the clipping that
    /// minimizes its rounding error weighted by input energy (the search is the default).
    #[arg(long)]
    no_clip_search: bool,
    /// Structured sparsity: `2:4` prunes every quantized matrix to two of each four weights
    /// (by magnitude with RTN, SparseGPT's Hessian-aware mask with GPTQ), stored compressed.
    #[arg(long)]
    sparsity: Option<String>,
}

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let method = refuse_unimplemented(&args)?;
    let input = model_source::resolve(Some(&args.input))?;
    let src =
        marlin_models::open(&input).with_context(|| format!("opening {}", input.display()))?;
    let mut recipe = recipe(&args, src.config().num_hidden_layers)?;
    recipe.method = method;
    recipe.sparse_2_4 = sparsity(args.sparsity.as_deref())?;
    let calibration = match method {
        Method::Gptq | Method::Awq => Some(calibration::load(
            &input,
            args.calibration.as_deref(),
            args.samples,
            args.damp,
            args.act_order,
            !args.no_clip_search,
        )?),
        _ => None,
    };
    let files = marlin_engine::tokenizer_files(&input)
        .with_context(|| format!("reading the tokenizer of {}", input.display()))?;
    eprintln!(
        "quantizing {} to {}{} ({}{} override(s)): {}",
        input.display(),
        if recipe.sparse_2_4 { "2:4 " } else { "" },
        recipe.default,
        recipe
            .preset
            .as_ref()
            .map_or(String::new(), |p| format!("preset {p}, ")),
        recipe.rules.len(),
        args.output.display()
    );
    let bar = progress_bar(src.config().num_hidden_layers);
    let start = Instant::now();
    let sampler = PeakSampler::start();
    let report = quantize_model_calibrated(
        src.as_ref(),
        &recipe,
        calibration.as_ref(),
        &args.output,
        &files,
        &mut |step| {
            let memory = Memory::now();
            bar.set_position(step.layers_done as u64);
            bar.set_message(format!(
                "{}  {}",
                memory.map_or(String::new(), |m| m.to_string()),
                step.name
            ));
        },
    );
    bar.finish_and_clear();
    let peak_working = sampler.stop();
    let report = report.with_context(|| format!("quantizing into {}", args.output.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {}: {} matrices quantized, {} tensors kept as stored, {:.1} MiB of weights, in \
         {seconds:.1} s (peak working memory {} MiB; peak resident {}, mapped input included)",
        args.output.display(),
        report.quantized,
        report.kept,
        report.weight_bytes as f64 / (1 << 20) as f64,
        peak_working >> 10,
        peak_resident().unwrap_or_else(|| "unknown".into()),
    );
    Ok(())
}

/// `--sparsity`: none, or `2:4` (the only pattern the format stores).
fn sparsity(arg: Option<&str>) -> anyhow::Result<bool> {
    match arg {
        None => Ok(false),
        Some("2:4") => Ok(true),
        Some(other) => bail!(
            "--sparsity {other} is not supported: only 2:4 (two of every four weights kept) is"
        ),
    }
}

/// Options that would do nothing with the chosen method are refused: calibration needs GPTQ or
/// AWQ, GPTQ's own options need GPTQ.
fn refuse_unimplemented(args: &QuantizeArgs) -> anyhow::Result<Method> {
    let method = args
        .method
        .parse::<Method>()
        .map_err(anyhow::Error::from)
        .context("--method")?;
    let calibrated = [
        ("--calibration", args.calibration.is_some()),
        ("--samples", args.samples.is_some()),
    ];
    if method == Method::Rtn
        && let Some((flag, _)) = calibrated.iter().find(|(_, given)| *given)
    {
        bail!(
            "{flag} is a calibration option: add --method gptq or --method awq, or leave it out \
             for round to nearest"
        );
    }
    let gptq_only = [
        ("--damp", args.damp.is_some()),
        ("--act-order", args.act_order),
        ("--no-clip-search", args.no_clip_search),
    ];
    if method != Method::Gptq
        && let Some((flag, _)) = gptq_only.iter().find(|(_, given)| *given)
    {
        bail!("{flag} is a GPTQ option: add --method gptq, or leave it out for round to nearest");
    }
    Ok(method)
}

/// The preset or the plain scheme, `--format` and `--group-size` over the preset's default,
/// then the `--layer` rules.
fn recipe(args: &QuantizeArgs, layers: usize) -> anyhow::Result<Recipe> {
    let mut recipe = match &args.preset {
        Some(p) => Recipe::preset(p, layers)?,
        None => Recipe::new(Scheme::of(Format::Int4)),
    };
    let format = args.format.unwrap_or(recipe.default.format());
    let group = match &args.group_size {
        Some(g) => g.parse::<Group>().context("--group-size")?,
        None if args.format.is_some() => format.default_group(),
        None => recipe.default.group(),
    };
    recipe.default = Scheme::new(format, group).context("--format with --group-size")?;
    for rule in &args.layers {
        recipe.rules.push(rule.parse::<Rule>()?);
    }
    Ok(recipe)
}

fn progress_bar(layers: usize) -> ProgressBar {
    let bar = ProgressBar::new(layers as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} layers, ETA {eta}  {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Memory now, from /proc (Linux): what the process itself allocated (RssAnon) and the mapped
/// files' pages in memory (RssFile: the input's weights, which the OS can drop at will).
struct Memory {
    working_kib: u64,
    mapped_kib: u64,
}

impl Memory {
    fn now() -> Option<Memory> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Some(Memory {
            working_kib: status_kib(&status, "RssAnon:")?,
            mapped_kib: status_kib(&status, "RssFile:")?,
        })
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory {} MiB (+{} MiB of mapped input)",
            self.working_kib >> 10,
            self.mapped_kib >> 10
        )
    }
}

/// The peak of the process's own memory (RssAnon), polled every few milliseconds on a thread:
/// the kernel records a peak only for the resident size, which counts the mapped input too.
struct PeakSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(Memory::now().map_or(0, |m| m.working_kib));
                // Short enough to catch one weight's f32 buffer, which lives tens of ms.
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        PeakSampler { stop, thread }
    }

    /// The peak in KiB (0 where /proc is missing).
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// A `kB` line of /proc/self/status.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The process's peak resident memory (VmHWM), from /proc (Linux).
fn peak_resident() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(format!("{} MiB", status_kib(&status, "VmHWM:")? >> 10))
}
