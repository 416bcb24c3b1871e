//! What `--model` names, for every command that takes one: a GGUF file, a Hugging Face folder,
//! a Hugging Face id (`org/name[@revision]`, fetched into or found in the hub cache), or, when
//! absent, the default model.

mod hub;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use marlin_cpu::CpuBackend;
use marlin_engine::{Engine, default_model};
use marlin_gpu::{AdapterChoice, Gpu};
use marlin_models::{Hardware, Precision};

pub use hub::HubId;

/// Which model, and how to run it: shared by every command that loads one.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A GGUF file, a Hugging Face folder, or a Hugging Face id (org/name or org/name@revision,
    /// fetched into the hub cache). Without it, the default SmolLM2-135M-Instruct (fetched once
    /// into the cache).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Precision of activations inside the quantized matmuls. On the GPU: f32 keeps every product
    /// and the KV cache in f32; the others keep keys and values in f16 where the device has it
    /// (half the cache memory), let prefill run on cooperative matrices in f16 with f32 sums,
    /// and decode take x as int8x2 in large 4-bit integer products (f32 in the rest).
    #[arg(long, value_enum, default_value_t = ActivationsArg::Int8x2)]
    pub activations: ActivationsArg,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Where to run: shared by every command that runs a model.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// auto: a hardware GPU (Metal, Vulkan, DX12) if there is one, else the CPU, with a notice;
    /// gpu: the GPU, any adapter (a software one such as lavapipe too), or an error; cpu.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Gpu,
}

impl DeviceArgs {
    /// The hardware `--device` names, opened.
    pub fn open(&self) -> anyhow::Result<Hardware> {
        match self.device {
            DeviceArg::Cpu => Ok(CpuBackend::detect().into()),
            DeviceArg::Gpu => {
                let gpu = Gpu::new(AdapterChoice::Any).context("--device gpu")?;
                if gpu.is_software() {
                    eprintln!(
                        "note: {} is a software GPU (it runs on the CPU): correct, not fast",
                        gpu.adapter()
                    );
                }
                Ok(gpu.into())
            }
            DeviceArg::Auto => match Gpu::new(AdapterChoice::Hardware) {
                Ok(gpu) => Ok(gpu.into()),
                Err(_) => {
                    eprintln!("no GPU found; running on the CPU (--device cpu skips the search)");
                    Ok(CpuBackend::detect().into())
                }
            },
        }
    }
}

/// Mesa's Vulkan drivers reach for Wayland when wgpu lists the adapters, and libwayland prints
/// "error: XDG_RUNTIME_DIR is invalid or not set in the environment" where that folder is
/// missing (ssh sessions, containers, CI) — on every run, since `--device auto` looks for a GPU.
/// Where it is missing, point it at a private folder of ours. Call first thing in `main`.
pub fn ensure_runtime_dir() {
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        use std::os::unix::fs::DirBuilderExt;
        let usable = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|p| Path::new(&p).is_dir());
        if usable {
            return;
        }
        let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
        let dir = std::env::temp_dir().join(format!("metal-marlin-runtime-{user}"));
        // Private, as Wayland expects of it.
        let made = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        if made.is_ok() || dir.is_dir() {
            // SAFETY: main calls this before it starts any thread, so nothing reads the
            // environment concurrently.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

/// The hardware in words for reports: the CPU's instruction set, or the GPU's adapter, backend
/// and the features its kernels use.
pub fn describe_hardware(hardware: &Hardware) -> String {
    match hardware {
        Hardware::Cpu(cpu) => format!("CPU ({})", cpu.isa()),
        Hardware::Gpu(gpu) => describe_gpu(gpu),
    }
}

/// The device a loaded model runs on, for reports: as [`describe_hardware`].
pub fn describe_device(model: &marlin_models::Model) -> String {
    model.gpu().map_or_else(|| model.device(), describe_gpu)
}

/// A GPU adapter and the features its kernels use.
pub fn describe_gpu(gpu: &Gpu) -> String {
    let caps = gpu.capabilities();
    let mut features = Vec::new();
    if caps.shader_f16 {
        features.push("f16".to_string());
    }
    if caps.subgroup {
        features.push(format!(
            "subgroups {}-{}",
            caps.subgroup_min_size, caps.subgroup_max_size
        ));
    }
    if caps.cooperative_matrix {
        features.push("cooperative matrices".into());
    }
    if features.is_empty() {
        features.push("no optional features".into());
    }
    format!("GPU {} [{}]", gpu.adapter(), features.join(", "))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActivationsArg {
    /// int8 plus an int8 residual per block of 32 (about 14 bits): transformers' tokens at
    /// close to int8 speed.
    Int8x2,
    /// Full precision: matches transformers' logits; slowest.
    F32,
    /// int8 per block of 32, as llama.cpp: fastest; can overturn near-ties.
    Int8,
}

impl ModelArgs {
    /// The model's file or folder name, its Hugging Face id, or "default" for the default.
    pub fn describe(&self) -> String {
        match &self.model {
            Some(p) if !p.exists() && hub_id(p).is_some() => p.display().to_string(),
            Some(p) => p
                .file_name()
                .map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into()),
            None => "SmolLM2-135M-Instruct.Q4_1.gguf (default)".into(),
        }
    }

    /// The CPU's activations `--activations` names.
    pub fn precision(&self) -> Precision {
        match self.activations {
            ActivationsArg::Int8x2 => Precision::Int8x2,
            ActivationsArg::F32 => Precision::F32,
            ActivationsArg::Int8 => Precision::Int8,
        }
    }

    /// Loads the model on the `--device`, fetching it first if needed.
    pub fn load(&self) -> anyhow::Result<Engine> {
        let path = resolve(self.model.as_deref())?;
        let hardware = self.device.open()?;
        Engine::load_on(&path, hardware, self.precision())
            .with_context(|| format!("loading {}", path.display()))
    }
}

/// The local file or folder that `model` names, fetching it first if needed: an existing path
/// as it is; else a Hugging Face id through the hub cache; else an error naming the path.
/// Nothing that could be a mistyped path (`./x`, `x.gguf`) goes to the hub.
pub fn resolve(model: Option<&Path>) -> anyhow::Result<PathBuf> {
    let Some(model) = model else {
        return default_model::path(|msg| eprintln!("{msg} ...")).context("the default model");
    };
    if model.exists() {
        return Ok(model.to_path_buf());
    }
    match hub_id(model) {
        Some(id) => hub::resolve(&id),
        None => bail!(
            "{}: no such file or folder. --model takes a GGUF file, a Hugging Face folder \
             (config.json, tokenizer.json, safetensors) or a Hugging Face id such as \
             HuggingFaceTB/SmolLM2-135M-Instruct",
            model.display()
        ),
    }
}

fn hub_id(model: &Path) -> Option<HubId> {
    model.to_str().and_then(HubId::parse)
}
