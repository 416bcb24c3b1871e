//! `metal-marlin bench kernels`: the fused dequantize + matmul of every format, timed beside
//! two baselines taken in the same run: a dense f32 matmul of the same shape (the `gemm`
//! crate) and a plain streaming read of the quantized matrix's bytes.

use std::hint::black_box;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};

use marlin_cpu::{Activations, CpuBackend, Isa, dense, peak, stream::stream_read};
use marlin_quant::{Format, Group, QuantMatrix, Scheme, quantize};

use super::report::{Machine, Record, Times, table_head, table_row};
use super::timing::Timer;

/// The random weights and activations are the same on every run.
pub(super) const SEED: u64 = 0x4D61_726C_696E; // "Marlin"
/// Caps N x K so the f32 copy the dense baseline needs stays within 1 GiB.
const MAX_WEIGHTS: usize = 1 << 28;

/// N and K on the CPU unless given.
const CPU_DIM: usize = 4096;

/// `--gpu-precision`: the arithmetic of the GPU's products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GpuPrecisionArg {
    Int8x2,
    Mixed,
    F32,
}

impl From<GpuPrecisionArg> for marlin_gpu::MatmulPrecision {
    fn from(p: GpuPrecisionArg) -> Self {
        match p {
            GpuPrecisionArg::Int8x2 => marlin_gpu::MatmulPrecision::Int8x2,
            GpuPrecisionArg::Mixed => marlin_gpu::MatmulPrecision::Mixed,
            GpuPrecisionArg::F32 => marlin_gpu::MatmulPrecision::F32,
        }
    }
}

#[derive(Debug, Args)]
pub struct KernelsArgs {
    /// Where the kernels run: the CPU (this module) or the GPU (bench/gpu_kernels.rs).
    #[arg(long, value_enum, default_value_t = BenchDevice::Cpu)]
    pub(super) device: BenchDevice,
    /// Print a JSON array, one record per format and M, instead of a table.
    #[arg(long)]
    pub(super) json: bool,
    /// Output features: rows of W (N, K) [default: 4096 on the CPU, 8192 on the GPU].
    #[arg(long, value_parser = dim())]
    pub(super) n: Option<usize>,
    /// Input features: columns of W (N, K), the dimension groups run along [default: as --n].
    #[arg(long, value_parser = dim())]
    pub(super) k: Option<usize>,
    /// Activation rows (tokens in a batch), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,8,16,32",
        value_parser = clap::value_parser!(u16).range(1..=4096).map(usize::from)
    )]
    pub(super) m: Vec<usize>,
    /// Formats to measure, repeated or comma-separated (default: every format).
    #[arg(
        long = "format",
        value_name = "FORMAT",
        value_delimiter = ',',
        value_parser = PossibleValuesParser::new(Format::NAMES)
            .map(|s| s.parse::<Format>().expect("a listed format name parses"))
    )]
    pub(super) formats: Vec<Format>,
    /// Weights per scale along K; formats that fix their group (mxfp4, nvfp4) or do not allow
    /// this one keep their default.
    #[arg(
        long,
        value_parser = PossibleValuesParser::new(["16", "32", "64", "128", "channel"])
            .map(|s| s.parse::<Group>().expect("a listed group parses"))
    )]
    pub(super) group: Option<Group>,
    /// Kernel instruction set (default: the fastest this CPU has, or MARLIN_CPU_ISA).
    #[arg(
        long,
        value_parser = PossibleValuesParser::new(Isa::ALL.map(Isa::name))
            .map(|s| s.parse::<Isa>().expect("a listed ISA parses"))
    )]
    isa: Option<Isa>,
    /// Precision of activations inside the quantized matmul.
    #[arg(long, value_enum, default_value_t = ActivationsArg::Int8)]
    activations: ActivationsArg,
    /// GPU only: `mixed` lets products past M = 8 run on cooperative matrices in f16 (f32 sums)
    /// where the device has them, as models do by default; `int8x2` also takes x at M <= 8 as
    /// int8 plus an int8 residual for the integer formats (integer dot products); `f32` keeps
    /// every product in f32.
    #[arg(long, value_enum, default_value_t = GpuPrecisionArg::Mixed)]
    pub(super) gpu_precision: GpuPrecisionArg,
    /// Timed calls per measurement (default: enough to last about 0.2 s, at least 5); on the
    /// GPU, calls per submitted batch (default: enough for about 50 ms).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|v| v as usize))]
    pub(super) iters: Option<usize>,
    /// GPU only: MiB of each buffer of the copy baseline (source and destination).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=16384).map(|v| v as u64))]
    pub(super) copy_mib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum BenchDevice {
    Cpu,
    Gpu,
}

fn dim() -> impl TypedValueParser<Value = usize> {
    clap::value_parser!(u32)
        .range(1..=1 << 20)
        .map(|v| v as usize)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ActivationsArg {
    /// Quantized to int8 per block of 32, as llama.cpp does (fast).
    Int8,
    /// Full f32.
    F32,
    /// int8 plus an int8 residual: near f32 through the int8 kernels.
    Int8x2,
}

impl ActivationsArg {
    fn name(self) -> &'static str {
        match self {
            ActivationsArg::Int8 => "int8",
            ActivationsArg::Int8x2 => "int8x2",
            ActivationsArg::F32 => "f32",
        }
    }
}

pub fn run(args: &KernelsArgs) -> anyhow::Result<()> {
    if args.device == BenchDevice::Gpu {
        return super::gpu_kernels::run(args);
    }
    let n = args.n.unwrap_or(CPU_DIM);
    let k = args.k.or(args.n).unwrap_or(CPU_DIM);
    if n.checked_mul(k).is_none_or(|w| w > MAX_WEIGHTS) {
        bail!(
            "N x K = {n} x {k} is too many weights: the dense f32 baseline needs them all in \
             memory, so keep N x K at most {MAX_WEIGHTS} (e.g. --n 16384 --k 16384)"
        );
    }
    let backend = backend(args)?;
    let machine = Machine {
        cpu: cpu_model(),
        isa: backend.isa().to_string(),
        activations: args.activations.name(),
        threads: rayon::current_num_threads(),
        int8_peak_gmacs: {
            eprintln!("measuring the int8 multiply-add peak ...");
            peak::int8_macs_per_second(backend.isa(), Duration::from_millis(250)) / 1e9
        },
    };
    let formats = formats(&args.formats);
    let ms = sorted_ms(&args.m);
    let timer = Timer::new(args.iters);

    if !args.json {
        println!("{}", machine.header(n, k));
    }
    let weights = random(n * k, SEED);
    let xs: Vec<Vec<f32>> = ms.iter().map(|&m| random(m * k, SEED + m as u64)).collect();
    let mut y = vec![0f32; ms.last().copied().unwrap_or(1) * n];
    eprintln!("measuring the dense f32 baseline ...");
    let dense_times = ms
        .iter()
        .zip(&xs)
        .map(|(&m, x)| timer.median(|| dense::matmul_f32(x, m, &weights, n, &mut y[..m * n])))
        .collect::<Result<Vec<_>, _>>()
        .context("dense f32 baseline")?;

    if !args.json {
        println!("{}", table_head());
    }
    let mut records = Vec::new();
    for format in formats {
        let scheme = scheme(format, args.group);
        eprintln!("measuring {scheme} ...");
        let w = quantize(&weights, n, k, scheme)
            .with_context(|| format!("quantizing a random {n}x{k} matrix to {scheme}"))?;
        let bytes = contiguous_bytes(&w);
        // As a model does when it loads: repack once (where the CPU has a panel kernel), then
        // time only the products.
        let prepared = backend.prepare(&w);
        let mut m1 = None;
        for ((&m, x), &dense) in ms.iter().zip(&xs).zip(&dense_times) {
            let y = &mut y[..m * n];
            // The streaming read right before the matmul, so both see the same machine load.
            let stream = timer
                .median(|| {
                    black_box(stream_read(black_box(&bytes)));
                    Ok::<(), std::convert::Infallible>(())
                })
                .unwrap_or_else(|never| match never {});
            let quant = timer
                .median(|| backend.matmul_prepared(black_box(x), m, &prepared, y))
                .with_context(|| format!("{scheme} matmul at M={m}"))?;
            if m == 1 {
                m1 = Some(quant);
            }
            let times = Times {
                quant,
                dense,
                stream,
                m1,
            };
            let record = Record::new(
                format.name(),
                group_name(scheme.group()),
                (m, n, k),
                bytes.len(),
                times,
                machine.clone(),
            );
            if !args.json {
                println!("{}", table_row(&record));
            }
            records.push(record);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    }
    Ok(())
}

/// The asked M values ascending without repeats, so M=1 is measured first and every later M
/// can be compared with it.
pub(super) fn sorted_ms(asked: &[usize]) -> Vec<usize> {
    let mut ms = asked.to_vec();
    ms.sort_unstable();
    ms.dedup();
    ms
}

fn backend(args: &KernelsArgs) -> anyhow::Result<CpuBackend> {
    let activations = match args.activations {
        ActivationsArg::Int8 => Activations::Int8,
        ActivationsArg::F32 => Activations::F32,
        ActivationsArg::Int8x2 => Activations::Int8x2,
    };
    let backend = match args.isa {
        None => CpuBackend::detect(),
        Some(isa) => CpuBackend::new(isa).with_context(|| {
            let have: Vec<_> = Isa::available().iter().map(|i| i.name()).collect();
            format!(
                "this CPU cannot run --isa {isa}; it has: {}",
                have.join(", ")
            )
        })?,
    };
    Ok(backend.with_activations(activations))
}

/// The user's formats in their order without repeats, or every format.
pub(super) fn formats(asked: &[Format]) -> Vec<Format> {
    if asked.is_empty() {
        return Format::ALL.to_vec();
    }
    let mut out: Vec<Format> = Vec::new();
    for f in asked {
        if !out.contains(f) {
            out.push(*f);
        }
    }
    out
}

/// `format` with the asked group where the format allows it, else with its default group.
pub(super) fn scheme(format: Format, group: Option<Group>) -> Scheme {
    match group.map(|g| Scheme::new(format, g)) {
        Some(Ok(scheme)) => scheme,
        Some(Err(why)) => {
            let default = Scheme::of(format);
            eprintln!("note: {why}; measuring {default} instead");
            default
        }
        None => Scheme::of(format),
    }
}

pub(super) fn group_name(group: Group) -> String {
    match group {
        Group::Size(g) => g.to_string(),
        Group::PerChannel => "channel".to_string(),
    }
}

/// Codes, scales and biases in one buffer: the bytes a kernel reads, laid out for a stream.
pub(super) fn contiguous_bytes(w: &QuantMatrix<'_>) -> Vec<u8> {
    let mut b = Vec::with_capacity(w.storage_bytes());
    b.extend_from_slice(w.codes());
    b.extend_from_slice(w.scales());
    b.extend_from_slice(w.biases());
    b
}

/// Uniform values in [-1, 1) from a xorshift generator seeded with `seed`.
pub(super) fn random(len: usize, seed: u64) -> Vec<f32> {
    // Any odd state works; the multiply spreads small seeds over all bits.
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // The top 24 bits scaled to [0, 2), shifted to [-1, 1).
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The CPU's marketing name where the OS tells it (Linux), else the architecture.
pub(super) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: KernelsArgs,
    }

    fn parse(argv: &[&str]) -> Result<KernelsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("kernels").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults_follow_the_issue() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.n, a.k), (None, None));
        assert_eq!(a.device, BenchDevice::Cpu);
        assert_eq!(a.m, [1, 8, 16, 32]);
        assert_eq!(formats(&a.formats), Format::ALL);
        assert_eq!(a.activations, ActivationsArg::Int8);
    }

    #[test]
    fn flags_parse() {
        let a = parse(&[
            "--m", "16,1", "--format", "int4", "--format", "fp8,int4", "--group", "64", "--isa",
            "scalar", "--iters", "3",
        ])
        .unwrap();
        assert_eq!(a.m, [16, 1]);
        assert_eq!(formats(&a.formats), [Format::Int4, Format::Fp8]);
        assert_eq!(a.group, Some(Group::Size(64)));
        assert_eq!(a.isa, Some(Isa::Scalar));
        assert_eq!(a.iters, Some(3));
    }

    #[test]
    fn bad_values_are_rejected_with_the_choices() {
        for (argv, expect) in [
            (&["--format", "int5"][..], "int4-affine"),
            (&["--group", "48"], "128"),
            (&["--isa", "neon"], "avx512vnni"),
            (&["--activations", "f16"], "int8"),
            (&["--m", "0"], "1..=4096"),
            (&["--n", "abc"], "invalid digit"),
            (&["--iters", "0"], "1..=1000000"),
        ] {
            let err = parse(argv).unwrap_err().to_string();
            assert!(err.contains(expect), "{argv:?}: {err}");
        }
    }

    #[test]
    fn groups_a_format_forbids_fall_back_to_its_default() {
        assert_eq!(
            scheme(Format::Mxfp4, Some(Group::Size(64))),
            Scheme::of(Format::Mxfp4)
        );
        assert_eq!(
            scheme(Format::Int4, Some(Group::Size(128))),
            Scheme::new(Format::Int4, Group::Size(128)).unwrap()
        );
        assert_eq!(
            scheme(Format::Int4, Some(Group::PerChannel)),
            Scheme::of(Format::Int4)
        );
    }

    #[test]
    fn the_benchmark_runs_on_a_small_shape() {
        let a = parse(&[
            "--n", "40", "--k", "70", "--m", "1,3", "--iters", "1", "--json",
        ])
        .unwrap();
        run(&a).unwrap();
    }

    #[test]
    fn random_values_are_in_range_and_repeatable() {
        let a = random(1000, 1);
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        assert_eq!(a, random(1000, 1));
        assert_ne!(a, random(1000, 2));
    }
}
