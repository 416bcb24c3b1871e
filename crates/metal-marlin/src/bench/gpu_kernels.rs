//! `metal-marlin bench kernels --device gpu`: the quantized matmul on the GPU (`Gpu::quant_matmul`,
//! qmv up to M = 8, qmm beyond) for each format and M, against two baselines measured in the
//! same run on the same device:
//!
//! - a device-to-device copy of a large buffer by a compute kernel (marlin-gpu's copy.wgsl; not
//!   `copy_buffer_to_buffer`, which NVIDIA runs on a slower copy engine), whose bandwidth is
//!   counted as **read + write** bytes per second (2 x the buffer's bytes / time): what the
//!   memory moves, the ceiling a kernel that only reads can approach;
//! - M = 1 of the same format: `vs M=1` is the Marlin ratio (the M = 16 row is the target).
//!
//! Timing: `calls` products are recorded into one encoder and submitted once
//! ([`marlin_gpu::Gpu::time_batch`]); a call's time is the batch's time / `calls`, the median
//! over [`BATCHES`] batches, after a warm-up batch (pipelines compiled, memory touched). The
//! batch's time is the GPU's timestamps around it where the device offers `TIMESTAMP_QUERY`,
//! else the host clock around submit + wait, minus nothing (one submit and one wake-up, about
//! 0.1-0.3 ms, spread over the batch). The `timer` field says which.
//!
//! The weights cycle through enough uploaded copies of the matrix to span [`ROTATE_BYTES`], so
//! that no call finds its weights in the L2 cache left by the one before (H100: 50 MB) and the
//! numbers are memory bandwidth, not cache bandwidth. Calls of one batch write the same y and
//! so run one after another, as the layers of a model do.

use std::time::Duration;

use anyhow::{Context, bail};
use marlin_gpu::{AdapterChoice, BatchTime, Gpu, GpuError, GpuQuantMatrix};
use marlin_quant::{Format, quantize};
use serde::Serialize;

use super::kernels::{KernelsArgs, SEED, contiguous_bytes, group_name, random, scheme, sorted_ms};

/// N and K on the GPU unless given: an 8192 x 8192 INT8 matrix is 71 MB.
const GPU_DIM: usize = 8192;
/// Bytes of weights the calls cycle through (at most [`MAX_COPIES`] copies of the matrix).
const ROTATE_BYTES: usize = 256 << 20;
const MAX_COPIES: usize = 16;
/// Caps N x K (the host holds the f32 matrix while quantizing it).
const MAX_WEIGHTS: usize = 1 << 28;
/// Timed batches per measurement (the median is reported).
const BATCHES: usize = 5;
/// A batch lasts about this long unless `--iters` fixes its calls.
const TARGET_BATCH: Duration = Duration::from_millis(50);
const MIN_CALLS: usize = 4;
const MAX_CALLS: usize = 2000;

/// One format at one M on the GPU. Times in microseconds per call; 1 GB = 1e9 bytes.
#[derive(Debug, Clone, Serialize)]
pub struct GpuRecord {
    pub format: &'static str,
    pub group: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Bytes of the quantized matrix (codes + scales + biases): what the kernel has to read.
    pub weight_bytes: usize,
    /// Copies of the matrix the calls cycle through (weights not in cache).
    pub weight_copies: usize,
    /// Products per submitted batch.
    pub calls_per_batch: usize,
    /// `gpu-timestamps` or `wall-clock` (submit + wait, nothing subtracted).
    pub timer: &'static str,
    /// Time of one product by `timer`.
    pub time_us: f64,
    /// Time of one product by the host clock (submit + wait of the batch / calls).
    pub wall_us: f64,
    /// `weight_bytes / time_us`.
    pub gbps: f64,
    /// `2 M N K / time_us`, in TFLOP/s.
    pub tflops: f64,
    /// The copy baseline of this format's run: read + write bytes / time.
    pub copy_gbps: f64,
    /// `gbps / copy_gbps`: 1 means the kernel reads weights as fast as the copy moves bytes.
    pub fraction_of_copy: f64,
    /// `time_us / time_us at M=1` of the same format (null if M=1 was not run).
    pub cost_vs_m1: Option<f64>,
    #[serde(flatten)]
    pub device: DeviceInfo,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub adapter: String,
    /// A CPU implementation (lavapipe): the numbers are not speed results.
    pub software: bool,
    pub subgroup: bool,
    pub cooperative_matrix: bool,
    /// Whether the quantized matmul kept wgpu's runtime bounds checks (`MARLIN_GPU_CHECKED=1`).
    pub runtime_checks: bool,
}

pub fn run(args: &KernelsArgs) -> anyhow::Result<()> {
    let n = args.n.unwrap_or(GPU_DIM);
    let k = args.k.or(args.n).unwrap_or(GPU_DIM);
    if n.checked_mul(k).is_none_or(|w| w > MAX_WEIGHTS) {
        bail!("N x K = {n} x {k} is too many weights; keep N x K at most {MAX_WEIGHTS}");
    }
    let gpu = Gpu::new(AdapterChoice::Any).context("opening a GPU for bench kernels")?;
    let caps = gpu.capabilities();
    let device = DeviceInfo {
        adapter: gpu.adapter(),
        software: gpu.is_software(),
        subgroup: caps.subgroup,
        cooperative_matrix: caps.cooperative_matrix,
        runtime_checks: gpu.runtime_checks(),
    };
    let timer = if gpu.has_timestamps() {
        "gpu-timestamps"
    } else {
        "wall-clock"
    };
    let header = [
        format!(
            "# bench kernels --device gpu: N={n} K={k}, {}",
            device.adapter
        ),
        format!("# features: {:?}", gpu.features()),
        format!(
            "# subgroups {} (sizes {}..{}), cooperative matrix {}, runtime bounds checks {}, \
             largest binding {} MiB",
            on(caps.subgroup),
            caps.subgroup_min_size,
            caps.subgroup_max_size,
            on(caps.cooperative_matrix),
            on(gpu.runtime_checks()),
            caps.max_storage_binding >> 20
        ),
        format!(
            "# products: {} ({})",
            match args.gpu_precision {
                super::kernels::GpuPrecisionArg::Int8x2 => {
                    "int8x2: M <= 8 of INT4/INT8 with x as int8 + int8 residual; mixed"
                }
                super::kernels::GpuPrecisionArg::Mixed => "mixed",
                super::kernels::GpuPrecisionArg::F32 => "f32",
            },
            match (args.gpu_precision, caps.coop) {
                (super::kernels::GpuPrecisionArg::F32, _) | (_, None) => {
                    "f32 throughout".to_string()
                }
                (_, Some(c)) => format!(
                    "M > {2} on {0}x{0} cooperative matrices, {1} inputs, f32 sums, K split for \
                     few tiles",
                    c.size,
                    if c.f16 { "f16" } else { "f32" },
                    marlin_gpu::kernels::qmv::mixed_max_m()
                ),
            }
        ),
        format!(
            "# timer: {timer} ({}), median of {BATCHES} batches of many calls in one submit",
            if timer == "wall-clock" {
                "host clock around submit + wait, nothing subtracted"
            } else {
                "GPU timestamps before the first and after the last call of a batch"
            }
        ),
        format!(
            "# copy baseline: a compute-kernel copy of {} MiB, GB/s = (read + write bytes) / time",
            args.copy_mib
        ),
    ];
    let software_note = "# SOFTWARE ADAPTER (CPU emulation): these numbers are NOT speed results";
    if args.json {
        if device.software {
            eprintln!("{software_note}");
        }
    } else {
        for line in &header {
            println!("{line}");
        }
        if device.software {
            println!("{software_note}");
        }
    }

    let precision = args.gpu_precision.into();
    let ms = sorted_ms(&args.m);
    let copy_bytes = args.copy_mib << 20;
    let src = gpu.zeros("copy src", copy_bytes);
    let dst = gpu.zeros("copy dst", copy_bytes);
    let weights = random(n * k, SEED);
    let xs: Vec<_> = ms
        .iter()
        .map(|&m| gpu.upload_f32("x", &random(m * k, SEED + m as u64)))
        .collect();
    let ys: Vec<_> = ms
        .iter()
        .map(|&m| gpu.zeros("y", (m * n * 4) as u64))
        .collect();

    if !args.json {
        println!("{}", table_head());
    }
    let mut records = Vec::new();
    for format in gpu_formats(&args.formats) {
        let scheme = scheme(format, args.group);
        eprintln!("measuring {scheme} ...");
        let w = quantize(&weights, n, k, scheme)
            .with_context(|| format!("quantizing a random {n}x{k} matrix to {scheme}"))?;
        let weight_bytes = contiguous_bytes(&w).len();
        let copies = ROTATE_BYTES.div_ceil(weight_bytes).clamp(1, MAX_COPIES);
        let mats = (0..copies)
            .map(|_| gpu.upload_quant(&w))
            .collect::<Result<Vec<GpuQuantMatrix>, _>>()
            .with_context(|| format!("uploading {scheme}"))?;
        drop(w);
        // Let the uploads land, and the device settle after the host's quantization: the first
        // copy after hundreds of MB of uploads measured at half speed on the H100.
        gpu.wait()?;
        measure(&gpu, args.iters, |enc, _| gpu.record_copy(enc, &src, &dst))?;
        // The copy right before this format's products: both see the same device state.
        let (copy, _, _) = measure(&gpu, args.iters, |enc, _| gpu.record_copy(enc, &src, &dst))?;
        let copy_gbps = 2.0 * copy_bytes as f64 / copy.as_secs_f64() / 1e9;
        let mut m1 = None;
        for ((&m, x), y) in ms.iter().zip(&xs).zip(&ys) {
            let (time, wall, calls) = measure(&gpu, args.iters, |enc, i| {
                gpu.record_quant_matmul(enc, x, m, &mats[i % copies], y, precision)
            })
            .with_context(|| format!("{scheme} matmul at M={m}"))?;
            if m == 1 {
                m1 = Some(time);
            }
            let secs = time.as_secs_f64();
            let gbps = weight_bytes as f64 / secs / 1e9;
            let record = GpuRecord {
                format: format.name(),
                group: group_name(scheme.group()),
                m,
                n,
                k,
                weight_bytes,
                weight_copies: copies,
                calls_per_batch: calls,
                timer,
                time_us: secs * 1e6,
                wall_us: wall.as_secs_f64() * 1e6,
                gbps,
                tflops: 2.0 * (m * n * k) as f64 / secs / 1e12,
                copy_gbps,
                fraction_of_copy: gbps / copy_gbps,
                cost_vs_m1: m1.map(|t: Duration| secs / t.as_secs_f64()),
                device: device.clone(),
            };
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

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The asked formats in their order without repeats, or INT4 and FP4 first, then the others.
fn gpu_formats(asked: &[Format]) -> Vec<Format> {
    let mut out = super::kernels::formats(asked);
    if asked.is_empty() {
        out.retain(|f| !matches!(f, Format::Int4 | Format::Fp4));
        out.splice(0..0, [Format::Int4, Format::Fp4]);
    }
    out
}

/// The bandwidth of a compute-kernel copy of `mib` MiB on `gpu`: (read + write bytes) / time,
/// GB/s. The baseline of the GPU benchmarks.
pub(super) fn copy_gbps(gpu: &Gpu, mib: u64) -> anyhow::Result<f64> {
    // Within one storage binding (lavapipe's is 128 MiB).
    let limit = gpu.capabilities().max_storage_binding >> 20 << 20;
    let bytes = (mib << 20).min(limit);
    let (src, dst) = (gpu.zeros("copy src", bytes), gpu.zeros("copy dst", bytes));
    let (copy, _, _) = measure(gpu, None, |enc, _| gpu.record_copy(enc, &src, &dst))?;
    Ok(2.0 * bytes as f64 / copy.as_secs_f64() / 1e9)
}

/// Times `record(encoder, i)` for calls i = 0, 1, ... recorded into one encoder: returns the
/// time per call (by the GPU's timestamps where offered, else the host clock), the host-clock
/// time per call, and the calls per batch; each the median over [`BATCHES`] batches.
fn measure(
    gpu: &Gpu,
    iters: Option<usize>,
    record: impl Fn(&mut marlin_gpu::Recorder, usize) -> Result<(), GpuError>,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let batch = |calls: usize| -> Result<BatchTime, GpuError> {
        gpu.time_batch(|enc| (0..calls).try_for_each(|i| record(enc, i)))
    };
    // Warm-up: compiles the pipelines and touches every buffer; then an estimate of one call.
    batch(2)?;
    let probe = batch(MIN_CALLS)?;
    let per_call = probe.gpu.unwrap_or(probe.wall).as_secs_f64() / MIN_CALLS as f64;
    let calls = iters.unwrap_or_else(|| {
        ((TARGET_BATCH.as_secs_f64() / per_call.max(1e-9)).ceil() as usize)
            .clamp(MIN_CALLS, MAX_CALLS)
    });
    let mut chosen = Vec::with_capacity(BATCHES);
    let mut walls = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let t = batch(calls)?;
        chosen.push(t.gpu.unwrap_or(t.wall) / calls as u32);
        walls.push(t.wall / calls as u32);
    }
    chosen.sort_unstable();
    walls.sort_unstable();
    Ok((chosen[BATCHES / 2], walls[BATCHES / 2], calls))
}

/// The table's column titles, aligned with [`table_row`].
fn table_head() -> String {
    format!(
        "{:<12} {:>7} {:>4} {:>10} {:>8} {:>8} {:>10} {:>8} {:>7} {:>10}",
        "format",
        "group",
        "M",
        "time µs",
        "GB/s",
        "TFLOP/s",
        "copy GB/s",
        "of copy",
        "vs M=1",
        "wall µs"
    )
}

fn table_row(r: &GpuRecord) -> String {
    let m1 = r
        .cost_vs_m1
        .map_or_else(|| "-".to_string(), |c| format!("{c:.2}x"));
    format!(
        "{:<12} {:>7} {:>4} {:>10.2} {:>8.1} {:>8.2} {:>10.1} {:>7.0}% {:>7} {:>10.2}",
        r.format,
        r.group,
        r.m,
        r.time_us,
        r.gbps,
        r.tflops,
        r.copy_gbps,
        r.fraction_of_copy * 100.0,
        m1,
        r.wall_us
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_and_fp4_come_first_by_default() {
        let all = gpu_formats(&[]);
        assert_eq!(&all[..2], [Format::Int4, Format::Fp4]);
        assert_eq!(all.len(), Format::ALL.len());
        assert_eq!(gpu_formats(&[Format::Int8]), [Format::Int8]);
    }

    /// The whole benchmark on a small shape, where a GPU adapter exists (lavapipe counts).
    #[test]
    fn the_gpu_benchmark_runs_on_a_small_shape() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            args: KernelsArgs,
        }
        let argv = [
            "kernels",
            "--device",
            "gpu",
            "--n",
            "40",
            "--k",
            "70",
            "--m",
            "1,9",
            "--format",
            "int4,nvfp4",
            "--iters",
            "2",
            "--copy-mib",
            "1",
        ];
        let args = Cli::try_parse_from(argv).unwrap().args;
        if Gpu::new(AdapterChoice::Any).is_err()
            && std::env::var(marlin_gpu::REQUIRE_GPU_ENV).map_or(true, |v| v != "1")
        {
            eprintln!("skipping: no GPU adapter");
            return;
        }
        run(&args).unwrap();
        let json = Cli::try_parse_from(argv.iter().copied().chain(["--json"])).unwrap();
        run(&json.args).unwrap();
    }
}
