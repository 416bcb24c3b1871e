//! What `--model` names, for every command that takes one: a GGUF file, a Hugging Face folder,
//! a Hugging Face id (`org/name[@revision]`, fetched into or found in the hub cache), or, when
//! absent, the default model.

mod hub;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use marlin_cpu::CpuBackend;
use marlin_engine::{Engine, default_model};
use marlin_models::Precision;

pub use hub::HubId;

/// Which model, and how to run it: shared by every command that loads one.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A GGUF file, a Hugging Face folder, or a Hugging Face id (org/name or org/name@revision,
    /// fetched into the hub cache). Without it, the default SmolLM2-135M-Instruct (fetched once
    /// into the cache).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Precision of activations inside the quantized matmuls.
    #[arg(long, value_enum, default_value_t = ActivationsArg::Int8x2)]
    pub activations: ActivationsArg,
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

    /// Loads the model, fetching it first if needed.
    pub fn load(&self) -> anyhow::Result<Engine> {
        let path = resolve(self.model.as_deref())?;
        let precision = match self.activations {
            ActivationsArg::Int8x2 => Precision::Int8x2,
            ActivationsArg::F32 => Precision::F32,
            ActivationsArg::Int8 => Precision::Int8,
        };
        Engine::load_on(&path, CpuBackend::detect(), precision)
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
