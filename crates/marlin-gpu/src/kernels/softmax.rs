//! Softmax over rows (softmax.wgsl): the sampler's probabilities from the last tokens' logits.

use bytemuck::{Pod, Zeroable};

use super::view::{need, product, shape_error};
use super::{Variants, grid, with_reductions};
use crate::{Gpu, GpuBuffer, GpuError};

pub const SOURCES: Variants = with_reductions!("softmax.wgsl");

/// Mirrors `Params` in softmax.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    scale: f32,
    _pad: u32,
}

impl Gpu {
    /// Records `out = softmax(x * scale)` over each row of `n` values; `scale` is
    /// 1 / temperature (1 for the plain softmax). `out` may be `x` (in place). Stable: the
    /// row's maximum is subtracted first, so any finite logits work; a row of only -inf gives
    /// NaN.
    // x (rows, n) -> out (rows, n)
    pub fn softmax(
        &self,
        encoder: &mut crate::Recorder,
        x: &GpuBuffer,
        out: &GpuBuffer,
        rows: usize,
        n: usize,
        scale: f32,
    ) -> Result<(), GpuError> {
        const OP: &str = "softmax";
        let len = product(OP, "x", rows, n)?;
        need(OP, "x", x, len as u64)?;
        need(OP, "out", out, len as u64)?;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(shape_error(
                OP,
                format!("scale {scale} must be finite and > 0 (it is 1 / temperature)"),
            ));
        }
        self.bindable(OP, &[("x", x), ("out", out)])?;
        if len == 0 {
            return Ok(());
        }
        let params = Params {
            rows: rows as u32,
            n: n as u32,
            scale,
            _pad: 0,
        };
        let pipe = self.row_pipeline(OP, &SOURCES);
        self.dispatch(encoder, &pipe, &params, &[x, out], grid(rows as u64, 1));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_close, run, values};

    fn reference(x: &[f32], n: usize, scale: f32) -> Vec<f64> {
        x.chunks_exact(n)
            .flat_map(|row| {
                let scaled: Vec<f64> = row.iter().map(|&v| v as f64 * scale as f64).collect();
                let m = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scaled.iter().map(|v| (v - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(move |v| v / s)
            })
            .collect()
    }

    // Probabilities are <= 1; exp's relative error (a few ulp), the f32 sum over <= 4097 terms
    // in <= 25 levels, and the final product keep each within ~3e-6 of the exact value.
    // Lavapipe's worst is 2e-8.
    const TOL: f64 = 1e-5;

    #[test]
    fn matches_the_f64_softmax_on_odd_rows() {
        let Some(gpu) = crate::test_gpu() else { return };
        for (rows, n) in [(1usize, 1usize), (3, 3), (2, 67), (1, 4097), (67, 5)] {
            // Logits up to +-40: exp without the max shift would overflow at scale 3.
            let x = values(n as u64, rows * n, 40.0);
            for scale in [1.0f32, 3.0, 0.25] {
                let (xb, out) = (
                    gpu.upload_f32("x", &x),
                    gpu.zeros("p", (rows * n * 4) as u64),
                );
                run(&gpu, |enc| {
                    gpu.softmax(enc, &xb, &out, rows, n, scale).unwrap()
                });
                let what = format!("rows {rows}, n {n}, scale {scale}");
                assert_close(
                    &gpu.read_f32(&out).unwrap(),
                    &reference(&x, n, scale),
                    TOL,
                    &what,
                );
            }
        }
    }

    #[test]
    fn works_in_place_and_sums_to_one() {
        let Some(gpu) = crate::test_gpu() else { return };
        let n = 4097;
        let x = values(3, n, 20.0);
        let xb = gpu.upload_f32("x", &x);
        run(&gpu, |enc| gpu.softmax(enc, &xb, &xb, 1, n, 1.0).unwrap());
        let p = gpu.read_f32(&xb).unwrap();
        assert_close(&p, &reference(&x, n, 1.0), TOL, "in place");
        let total: f64 = p.iter().map(|&v| v as f64).sum();
        assert!((total - 1.0).abs() < 1e-5, "sums to {total}");
    }

    #[test]
    fn refuses_bad_input() {
        let Some(gpu) = crate::test_gpu() else { return };
        let x = gpu.zeros("x", 4 * 6);
        let mut enc = gpu.encoder();
        assert!(gpu.softmax(&mut enc, &x, &x, 2, 4, 1.0).is_err());
        assert!(gpu.softmax(&mut enc, &x, &x, 2, 3, 0.0).is_err());
        assert!(gpu.softmax(&mut enc, &x, &x, 2, 3, f32::INFINITY).is_err());
        assert!(gpu.softmax(&mut enc, &x, &x, usize::MAX, 3, 1.0).is_err());
        assert!(gpu.softmax(&mut enc, &x, &x, 2, 3, 1.0).is_ok());
    }
}
