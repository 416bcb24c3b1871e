//! Residual add, `y += x` (add.wgsl).

use bytemuck::{Pod, Zeroable};

use super::{WG, grid};
use crate::{Gpu, GpuBuffer, GpuError};

pub const SOURCE: &str = include_str!("add.wgsl");

/// Mirrors `Params` in add.wgsl (uniforms are padded to 16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

impl Gpu {
    /// `y += x` over `n` f32 values, submitted at once (see [`Gpu::add`] to record instead).
    // y (n), x (n) -> y (n)
    pub fn add_inplace(&self, y: &GpuBuffer, x: &GpuBuffer, n: usize) -> Result<(), GpuError> {
        let mut encoder = self.encoder();
        self.add(&mut encoder, y, x, n)?;
        self.submit(encoder);
        Ok(())
    }

    /// Records `y += x` over `n` f32 values: the residual add.
    // y (n), x (n) -> y (n)
    pub fn add(
        &self,
        encoder: &mut crate::Recorder,
        y: &GpuBuffer,
        x: &GpuBuffer,
        n: usize,
    ) -> Result<(), GpuError> {
        let bytes = n as u64 * 4;
        if y.len() < bytes || x.len() < bytes || n > u32::MAX as usize {
            return Err(GpuError::Shape {
                op: "add",
                what: format!(
                    "{n} values need {bytes} bytes; y has {}, x {}",
                    y.len(),
                    x.len()
                ),
            });
        }
        super::view::apart("add", ("y", y), &[("x", x)])?;
        self.bindable("add", &[("y", y), ("x", x)])?;
        let pipe = self.pipeline("add", SOURCE);
        let params = Params {
            n: n as u32,
            _pad: [0; 3],
        };
        self.dispatch(encoder, &pipe, &params, &[y, x], grid(n as u64, WG));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn adds_every_element_of_odd_lengths() {
        let Some(gpu) = crate::test_gpu() else { return };
        for n in [1usize, 3, 67, 4097] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32).collect();
            let (y, x) = (gpu.upload_f32("y", &a), gpu.upload_f32("x", &b));
            gpu.add_inplace(&y, &x, n).unwrap();
            let got = gpu.read_f32(&y).unwrap();
            let want: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a + b).collect();
            assert_eq!(got, want, "n = {n}");
        }
    }

    #[test]
    fn refuses_short_or_shared_buffers() {
        let Some(gpu) = crate::test_gpu() else { return };
        let (y, x) = (gpu.zeros("y", 4 * 3), gpu.zeros("x", 4 * 2));
        let mut enc = gpu.encoder();
        assert!(gpu.add(&mut enc, &y, &x, 3).is_err());
        assert!(gpu.add(&mut enc, &y, &y, 3).is_err());
        assert!(gpu.add(&mut enc, &y, &x, 2).is_ok());
    }
}
