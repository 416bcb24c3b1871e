//! A model loaded onto the hardware it runs on: the architecture's math (llama.rs) on the CPU
//! or the GPU device, with the matching KV cache.

use marlin_cpu::{Activations, CpuBackend};
use marlin_gpu::Gpu;

use crate::device::Device;
use crate::device::cpu::CpuDevice;
use crate::device::gpu::GpuDevice;
use crate::kv_cache::{KvCache, SeqId, Store};
use crate::llama::Llama;
use crate::{ModelConfig, ModelError, WeightSource};

/// Where a model runs.
#[derive(Debug, Clone)]
pub enum Hardware {
    Cpu(CpuBackend),
    Gpu(Gpu),
}

impl From<CpuBackend> for Hardware {
    fn from(cpu: CpuBackend) -> Self {
        Hardware::Cpu(cpu)
    }
}

impl From<Gpu> for Hardware {
    fn from(gpu: Gpu) -> Self {
        Hardware::Gpu(gpu)
    }
}

/// The precision of activations inside the quantized matmuls. On the GPU, F32 keeps every
/// product in f32; the others let prefill run on cooperative matrices in f16 with f32 sums where
/// the device has them, and decode's large 4-bit integer products take x as int8x2 (the GPU has
/// no int8-only path), f32 elsewhere (`MatmulPrecision::Mixed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32: matches transformers; slowest.
    F32,
    /// int8 plus an int8 residual per block of 32 (about 14 bits): transformers' tokens at
    /// close to int8 speed. On SmolLM2 it gives the same greedy tokens as f32 where int8 does not
    /// (docs/cpu-kernels.md).
    #[default]
    Int8x2,
    /// int8 per block of 32, as llama.cpp: fastest; can overturn near-ties.
    Int8,
}

impl Precision {
    fn activations(self) -> Activations {
        match self {
            Precision::F32 => Activations::F32,
            Precision::Int8x2 => Activations::Int8x2,
            Precision::Int8 => Activations::Int8,
        }
    }

    /// The arithmetic of the GPU's quantized products under this precision.
    pub fn gpu_matmul(self) -> marlin_gpu::MatmulPrecision {
        match self {
            Precision::F32 => marlin_gpu::MatmulPrecision::F32,
            Precision::Int8x2 | Precision::Int8 => marlin_gpu::MatmulPrecision::Mixed,
        }
    }

    /// How a GPU's KV cache stores keys and values under this precision: f32 at F32 (to match
    /// transformers), otherwise f16 where the device has it.
    pub fn gpu_kv(self, gpu: &marlin_gpu::Gpu) -> marlin_gpu::KvDtype {
        match self {
            Precision::F32 => marlin_gpu::KvDtype::F32,
            Precision::Int8x2 | Precision::Int8 => marlin_gpu::KvDtype::for_gpu(gpu),
        }
    }
}

/// New tokens of one sequence, positioned after what its cache holds.
pub struct SeqTokens<'a> {
    pub seq: SeqId,
    pub tokens: &'a [u32],
}

/// A model ready to run: its weights prepared for one device.
pub struct Model(On);

enum On {
    Cpu(Llama<CpuDevice>),
    Gpu(Llama<GpuDevice>),
}

impl Model {
    /// Builds the model from `src` on `hardware` (a `CpuBackend` or a `Gpu`), uploading or
    /// preparing every weight once. `precision` sets the CPU's activations (overriding the
    /// backend's own setting), and on the GPU the products' arithmetic
    /// ([`Precision::gpu_matmul`]).
    pub fn load(
        src: &dyn WeightSource,
        hardware: impl Into<Hardware>,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        Ok(Model(match hardware.into() {
            Hardware::Cpu(cpu) => {
                let cpu = cpu.with_activations(precision.activations());
                On::Cpu(Llama::load(src, CpuDevice::new(cpu))?)
            }
            Hardware::Gpu(gpu) => return Self::load_on_gpu(src, gpu, precision, None),
        }))
    }

    /// [`Model::load`] on `gpu`, with the products' arithmetic `matmul` where given instead of
    /// [`Precision::gpu_matmul`]'s (`MatmulPrecision::Int8x2` takes x on int8 grids for every
    /// product of the integer formats, not only the large ones: for tests and benchmarks).
    pub fn load_on_gpu(
        src: &dyn WeightSource,
        gpu: marlin_gpu::Gpu,
        precision: Precision,
        matmul: Option<marlin_gpu::MatmulPrecision>,
    ) -> Result<Self, ModelError> {
        let matmul = matmul.unwrap_or(precision.gpu_matmul());
        let device = GpuDevice::new(gpu.clone(), matmul, precision.gpu_kv(&gpu));
        let model = Llama::load(src, device)?;
        // Uploads report failures (out of memory) asynchronously: surface them here.
        gpu.check()?;
        Ok(Model(On::Gpu(model)))
    }

    pub fn config(&self) -> &ModelConfig {
        match &self.0 {
            On::Cpu(m) => m.config(),
            On::Gpu(m) => m.config(),
        }
    }

    /// The device in words: `CPU (avx512)`, `GPU NVIDIA H100 (Vulkan, DiscreteGpu)`.
    pub fn device(&self) -> String {
        match &self.0 {
            On::Cpu(m) => m.device().describe(),
            On::Gpu(m) => m.device().describe(),
        }
    }

    /// The GPU the model runs on, if it does.
    pub fn gpu(&self) -> Option<&Gpu> {
        match &self.0 {
            On::Cpu(_) => None,
            On::Gpu(m) => Some(m.device().gpu()),
        }
    }

    /// A KV cache on the model's device for up to `max_tokens` positions over all sequences,
    /// in blocks of `block_size`. A GPU claims it whole now; see [`Model::max_cache_tokens`].
    pub fn new_cache(&self, block_size: usize, max_tokens: usize) -> Result<KvCache, ModelError> {
        let config = self.config();
        Ok(KvCache(match &self.0 {
            On::Cpu(m) => Store::Cpu(m.device().cache(config, block_size, max_tokens)?),
            On::Gpu(m) => Store::Gpu(m.device().cache(config, block_size, max_tokens)?),
        }))
    }

    /// The most positions a cache on this device should be made for (unbounded on the CPU,
    /// whose cache grows as it fills; a memory budget on a GPU, which claims it up front).
    pub fn max_cache_tokens(&self) -> usize {
        match &self.0 {
            On::Cpu(m) => m.device().max_cache_tokens(m.config()),
            On::Gpu(m) => m.device().max_cache_tokens(m.config()),
        }
    }

    /// Bytes of keys and values one position takes in this model's caches: f32 on the CPU,
    /// f16 on a GPU with SHADER_F16 (`marlin_gpu::KvDtype`).
    pub fn kv_bytes_per_token(&self) -> u64 {
        match &self.0 {
            On::Cpu(m) => m.device().kv_bytes_per_token(m.config()),
            On::Gpu(m) => m.device().kv_bytes_per_token(m.config()),
        }
    }

    /// Runs the new tokens of every sequence in one pass (prefill chunks and decode steps
    /// alike) and returns the logits of each sequence's last new token.
    // batch (total tokens) -> logits (batch.len(), vocab)
    pub fn forward(
        &self,
        batch: &[SeqTokens<'_>],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, ModelError> {
        match (&self.0, &mut cache.0) {
            (On::Cpu(m), Store::Cpu(c)) => m.forward(batch, c),
            (On::Gpu(m), Store::Gpu(c)) => m.forward(batch, c),
            _ => Err(other_device()),
        }
    }

    /// [`Model::forward`] with the logits of every new token, the sequences' tokens one after
    /// another in batch order (scoring text: perplexity).
    // batch (total tokens) -> logits (total tokens, vocab)
    pub fn forward_all(
        &self,
        batch: &[SeqTokens<'_>],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, ModelError> {
        match (&self.0, &mut cache.0) {
            (On::Cpu(m), Store::Cpu(c)) => m.forward_all(batch, c),
            (On::Gpu(m), Store::Gpu(c)) => m.forward_all(batch, c),
            _ => Err(other_device()),
        }
    }

    /// [`Model::forward`] for greedy decoding: each sequence's most likely next token (the
    /// first on ties), computed where the model runs: a GPU reads back token ids, not logits.
    // batch (total tokens) -> (batch.len())
    pub fn forward_greedy(
        &self,
        batch: &[SeqTokens<'_>],
        cache: &mut KvCache,
    ) -> Result<Vec<u32>, ModelError> {
        match (&self.0, &mut cache.0) {
            (On::Cpu(m), Store::Cpu(c)) => m.forward_argmax(batch, c),
            (On::Gpu(m), Store::Gpu(c)) => m.forward_argmax(batch, c),
            _ => Err(other_device()),
        }
    }

    /// [`Model::forward`] for sampling: each sequence's next token drawn under its choice
    /// (`crate::device::sample_row`), after its penalties where given (`penalties`: empty, or
    /// one per sequence), where the model runs: a GPU reads back token ids, not logits.
    // batch (total tokens), choices (batch.len()) -> (batch.len())
    pub fn forward_sample(
        &self,
        batch: &[SeqTokens<'_>],
        cache: &mut KvCache,
        choices: &[crate::device::SampleChoice],
        penalties: &[Option<crate::device::Penalty<'_>>],
    ) -> Result<Vec<u32>, ModelError> {
        match (&self.0, &mut cache.0) {
            (On::Cpu(m), Store::Cpu(c)) => m.forward_sample(batch, c, choices, penalties),
            (On::Gpu(m), Store::Gpu(c)) => m.forward_sample(batch, c, choices, penalties),
            _ => Err(other_device()),
        }
    }
}

fn other_device() -> ModelError {
    ModelError::Config {
        path: Default::default(),
        what: "the KV cache was made for another device than the model's: make it with \
               Model::new_cache"
            .into(),
    }
}
