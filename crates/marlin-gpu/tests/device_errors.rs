//! Errors wgpu reports outside a call that returns one (a buffer the device cannot make, as
//! when a model does not fit in GPU memory) become a `GpuError` at the next wait, not a panic.
//! A process of its own: the device it breaks is not the shared test device.

use marlin_gpu::{AdapterChoice, Gpu, GpuError};

#[test]
fn an_impossible_buffer_is_an_error_not_a_panic() {
    let gpu = match Gpu::new(AdapterChoice::Any) {
        Ok(gpu) => gpu,
        Err(e) if std::env::var(marlin_gpu::REQUIRE_GPU_ENV).is_ok_and(|v| v == "1") => {
            panic!("{e}")
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    assert!(gpu.check().is_ok());
    let _huge = gpu.zeros("more than any device holds", 1 << 62);
    let err = gpu.read(&gpu.zeros("small", 4)).unwrap_err();
    assert!(matches!(err, GpuError::Lost(_)), "{err}");
    assert!(err.to_string().contains("smaller model"), "{err}");
    assert!(gpu.check().is_err());
}
