//! Bias add (bias.wgsl): the biases of Qwen2's q/k/v projections, after their matmul.

use bytemuck::{Pod, Zeroable};

use super::view::{apart, need, product};
use super::{WG, grid};
use crate::{Gpu, GpuBuffer, GpuError};

pub const SOURCE: &str = include_str!("bias.wgsl");

/// Mirrors `Params` in bias.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    _pad: [u32; 2],
}

impl Gpu {
    /// Records `y[r] += bias` for every row, as Linear::forward adds its bias. For a fused
    /// q|k|v matmul the bias is the three biases one after another (the CPU's stack_biases).
    // y (rows, n), bias (n) -> y (rows, n)
    pub fn add_bias(
        &self,
        encoder: &mut crate::Recorder,
        y: &GpuBuffer,
        rows: usize,
        n: usize,
        bias: &GpuBuffer,
    ) -> Result<(), GpuError> {
        const OP: &str = "add_bias";
        let len = product(OP, "y", rows, n)?;
        need(OP, "y", y, len as u64)?;
        need(OP, "bias", bias, n as u64)?;
        apart(OP, ("y", y), &[("bias", bias)])?;
        self.bindable(OP, &[("y", y), ("bias", bias)])?;
        if len == 0 {
            return Ok(());
        }
        let params = Params {
            rows: rows as u32,
            n: n as u32,
            _pad: [0; 2],
        };
        let pipe = self.pipeline(OP, SOURCE);
        self.dispatch(encoder, &pipe, &params, &[y, bias], grid(len as u64, WG));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, values};

    // One f32 addition per value, as the CPU: exact agreement.
    #[test]
    fn adds_the_bias_to_every_row() {
        let Some(gpu) = crate::test_gpu() else { return };
        for (rows, n) in [(1usize, 1usize), (3, 67), (67, 3), (2, 4097)] {
            let (y, b) = (values(n as u64, rows * n, 4.0), values(3, n, 1.0));
            let (yb, bb) = (gpu.upload_f32("y", &y), gpu.upload_f32("b", &b));
            run(&gpu, |enc| gpu.add_bias(enc, &yb, rows, n, &bb).unwrap());
            let want: Vec<f32> = y
                .chunks_exact(n)
                .flat_map(|r| r.iter().zip(&b).map(|(y, b)| y + b))
                .collect();
            assert_eq!(gpu.read_f32(&yb).unwrap(), want, "rows {rows}, n {n}");
        }
    }

    #[test]
    fn refuses_bad_shapes() {
        let Some(gpu) = crate::test_gpu() else { return };
        let (y, b) = (gpu.zeros("y", 4 * 6), gpu.zeros("b", 4 * 2));
        let mut enc = gpu.encoder();
        assert!(gpu.add_bias(&mut enc, &y, 2, 4, &b).is_err());
        assert!(gpu.add_bias(&mut enc, &y, 2, 3, &b).is_err());
        // y as its own bias: one buffer bound read-write and read-only.
        assert!(gpu.add_bias(&mut enc, &y, 3, 2, &y).is_err());
        assert!(gpu.add_bias(&mut enc, &y, 3, 2, &b).is_ok());
    }
}
