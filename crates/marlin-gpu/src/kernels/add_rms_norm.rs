//! The residual add fused with the RMSNorm after it (add_rms_norm.wgsl).

use bytemuck::{Pod, Zeroable};

use super::view::{apart, need, product, shape_error};
use super::{Variants, grid, with_reductions};
use crate::{Gpu, GpuBuffer, GpuError};

pub const SOURCES: Variants = with_reductions!("add_rms_norm.wgsl");

/// Mirrors `Params` in add_rms_norm.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad: u32,
}

impl Gpu {
    /// Records `h += x`, then `out = h / sqrt(mean(h^2) + eps) * weight` over each row: what
    /// [`Gpu::add`] followed by [`Gpu::rms_norm`] give, bit for bit, in one dispatch.
    // h, x (rows, dim), weight (dim) -> h updated, out (rows, dim)
    #[allow(clippy::too_many_arguments)]
    pub fn add_rms_norm(
        &self,
        encoder: &mut crate::Recorder,
        h: &GpuBuffer,
        x: &GpuBuffer,
        out: &GpuBuffer,
        weight: &GpuBuffer,
        (rows, dim): (usize, usize),
        eps: f32,
    ) -> Result<(), GpuError> {
        const OP: &str = "add_rms_norm";
        let len = product(OP, "h", rows, dim)?;
        for (name, buf) in [("h", h), ("x", x), ("out", out)] {
            need(OP, name, buf, len as u64)?;
        }
        need(OP, "weight", weight, dim as u64)?;
        apart(OP, ("h", h), &[("x", x), ("weight", weight), ("out", out)])?;
        apart(OP, ("out", out), &[("x", x), ("weight", weight)])?;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(shape_error(
                OP,
                format!("eps {eps} is not a finite value >= 0"),
            ));
        }
        self.bindable(OP, &[("h", h), ("x", x), ("out", out), ("weight", weight)])?;
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let params = Params {
            rows: rows as u32,
            dim: dim as u32,
            eps,
            _pad: 0,
        };
        let pipe = self.row_pipeline(OP, &SOURCES);
        let buffers = [h, x, out, weight];
        self.dispatch(encoder, &pipe, &params, &buffers, grid(rows as u64, 1));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, values};
    use super::super::{Heads, View};

    /// Bit for bit what the add and the norm give one after the other, for odd widths.
    #[test]
    fn equals_add_then_rms_norm() {
        let Some(gpu) = crate::test_gpu() else { return };
        for (rows, dim) in [(1usize, 1usize), (3, 67), (2, 4097), (67, 3)] {
            let (h0, x) = (values(1, rows * dim, 2.0), values(2, rows * dim, 2.0));
            let w = values(3, dim, 1.5);
            let (xb, wb) = (gpu.upload_f32("x", &x), gpu.upload_f32("w", &w));
            let (fused_h, fused_out) = (
                gpu.upload_f32("h", &h0),
                gpu.zeros("out", (rows * dim * 4) as u64),
            );
            let (plain_h, plain_out) = (
                gpu.upload_f32("h", &h0),
                gpu.zeros("out", (rows * dim * 4) as u64),
            );
            run(&gpu, |enc| {
                gpu.add_rms_norm(enc, &fused_h, &xb, &fused_out, &wb, (rows, dim), 1e-5)
                    .unwrap();
                gpu.add(enc, &plain_h, &xb, rows * dim).unwrap();
                let dims = Heads {
                    tokens: rows,
                    heads: 1,
                    head_dim: dim,
                };
                let (hv, ov) = (View::rows(&plain_h, dim), View::rows(&plain_out, dim));
                gpu.rms_norm(enc, hv, ov, &wb, dims, 1e-5).unwrap();
            });
            let read = |b| gpu.read_f32(b).unwrap();
            assert_eq!(read(&fused_h), read(&plain_h), "h, {rows} x {dim}");
            assert_eq!(read(&fused_out), read(&plain_out), "out, {rows} x {dim}");
            let want: Vec<f32> = h0.iter().zip(&x).map(|(a, b)| a + b).collect();
            assert_eq!(read(&fused_h), want);
        }
    }

    #[test]
    fn refuses_bad_shapes() {
        let Some(gpu) = crate::test_gpu() else { return };
        let (h, x, out, w) = (
            gpu.zeros("h", 40),
            gpu.zeros("x", 40),
            gpu.zeros("out", 40),
            gpu.zeros("w", 20),
        );
        let mut enc = gpu.encoder();
        assert!(
            gpu.add_rms_norm(&mut enc, &h, &x, &out, &w, (2, 5), 1e-5)
                .is_ok()
        );
        assert!(
            gpu.add_rms_norm(&mut enc, &h, &x, &out, &w, (3, 5), 1e-5)
                .is_err()
        );
        assert!(
            gpu.add_rms_norm(&mut enc, &h, &x, &out, &w, (1, 10), 1e-5)
                .is_err()
        );
        assert!(
            gpu.add_rms_norm(&mut enc, &h, &h, &out, &w, (2, 5), 1e-5)
                .is_err()
        );
        assert!(
            gpu.add_rms_norm(&mut enc, &h, &x, &h, &w, (2, 5), 1e-5)
                .is_err()
        );
        assert!(
            gpu.add_rms_norm(&mut enc, &h, &x, &out, &w, (2, 5), f32::NAN)
                .is_err()
        );
    }
}
