//! The GPU backend: the ops of a model in WGSL, run through wgpu on Metal (Apple), Vulkan
//! (Linux, Windows, Android) or DX12 (Windows). Without a GPU, Mesa's lavapipe runs the same
//! kernels on the CPU, which is how CI tests them.

mod backend;
mod bind_groups;
mod buffer;
mod context;
mod error;
pub mod kernels;
mod kv_cache;
mod qmatmul;
mod recorder;
mod timing;

pub use backend::GpuBackend;
pub use buffer::GpuBuffer;
pub use context::{AdapterChoice, CHECKED_ENV, Capabilities, Gpu};
pub use error::GpuError;
pub use kernels::attention::rope_write::QkvLayout;
pub use kernels::attention::{AttentionConfig, MAX_HEAD_DIM};
pub use kernels::penalize::Penalty;
pub use kernels::sample::SampleChoice;
pub use kv_cache::{GpuKvCache, KvBatch, KvDtype, KvShape, SeqId};
pub use qmatmul::{FusedInput, Fusion, GpuQuantMatrix, MatmulPrecision, QuantizeNext};
pub use recorder::Recorder;
pub use timing::BatchTime;
/// The wgpu version the GPU types come from; callers name its types (adapters, features) from here.
pub use wgpu;

/// Set to 1 where a GPU adapter (lavapipe counts) must exist: tests then fail instead of
/// skipping when none is found. CI sets it.
pub const REQUIRE_GPU_ENV: &str = "MARLIN_REQUIRE_GPU";

/// The GPU for tests: any adapter, lavapipe included, opened once per process and shared (a
/// process that opened a device per test exhausted the NVIDIA driver after a few dozen). `None`
/// (the test skips, saying so) when there is none, unless `MARLIN_REQUIRE_GPU=1`, where that
/// is a failure.
pub fn test_gpu() -> Option<Gpu> {
    static SHARED: std::sync::OnceLock<Result<Gpu, String>> = std::sync::OnceLock::new();
    match SHARED.get_or_init(|| Gpu::new(AdapterChoice::Any).map_err(|e| e.to_string())) {
        Ok(gpu) => Some(gpu.clone()),
        Err(e) if std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v == "1") => {
            panic!("{REQUIRE_GPU_ENV}=1 but {e}")
        }
        Err(e) => {
            eprintln!("skipping a GPU test: {e}");
            None
        }
    }
}
