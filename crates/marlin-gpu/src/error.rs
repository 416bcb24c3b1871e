use thiserror::Error;

/// Errors of the GPU backend; each says what the user can do.
#[derive(Debug, Error)]
pub enum GpuError {
    #[error(
        "no {wanted} found (adapters seen: {seen:?}); install the GPU's Vulkan driver (on Linux \
         without a GPU, Mesa's lavapipe: the package mesa-vulkan-drivers), or run on the CPU \
         with --device cpu"
    )]
    NoAdapter {
        wanted: &'static str,
        seen: Vec<String>,
    },
    #[error("could not open the GPU {adapter}: {what}")]
    Device { adapter: String, what: String },
    #[error(
        "the GPU device was lost or failed: {0}; if it ran out of memory, use a smaller model or \
         format; else rerun, or use --device cpu"
    )]
    Lost(String),
    #[error(
        "the KV cache is full ({capacity} positions); end or shorten other sequences, or make \
         the cache larger"
    )]
    CacheFull { capacity: usize },
    #[error("{op}: {what}")]
    Shape { op: &'static str, what: String },
}

impl From<GpuError> for marlin_core::CoreError {
    fn from(e: GpuError) -> Self {
        marlin_core::CoreError::Backend(e.to_string())
    }
}
