//! SwiGLU (swiglu.wgsl): the activation between the MLP's gate_up and down projections.

use bytemuck::{Pod, Zeroable};

use super::view::{apart, need, product};
use super::{View, WG, grid};
use crate::{Gpu, GpuBuffer, GpuError};

pub const SOURCE: &str = include_str!("swiglu.wgsl");

/// Mirrors `Params` in swiglu.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    tokens: u32,
    ff: u32,
    gate_offset: u32,
    gate_stride: u32,
    up_offset: u32,
    up_stride: u32,
    _pad: [u32; 2],
}

impl Gpu {
    /// Records `out = silu(gate) * up`. From a fused gate_up matmul's `[tokens, gate|up]`
    /// output (the CPU's LinearGroup layout): `gate = View::part(buf, 0, 2 * ff)`,
    /// `up = View::part(buf, ff, 2 * ff)`; from two buffers: `View::rows(g, ff)`,
    /// `View::rows(u, ff)`. `out` is a separate buffer, dense.
    // gate (tokens, ff) at its view, up (tokens, ff) at its view -> out (tokens, ff)
    pub fn swiglu(
        &self,
        encoder: &mut crate::Recorder,
        gate: View<'_>,
        up: View<'_>,
        out: &GpuBuffer,
        tokens: usize,
        ff: usize,
    ) -> Result<(), GpuError> {
        const OP: &str = "swiglu";
        let len = product(OP, "out", tokens, ff)?;
        let (gate_offset, gate_stride) = gate.check(OP, "gate", tokens, ff)?;
        let (up_offset, up_stride) = up.check(OP, "up", tokens, ff)?;
        need(OP, "out", out, len as u64)?;
        apart(
            OP,
            ("out", out),
            &[("gate", gate.buffer), ("up", up.buffer)],
        )?;
        self.bindable(
            OP,
            &[("gate", gate.buffer), ("up", up.buffer), ("out", out)],
        )?;
        if len == 0 {
            return Ok(());
        }
        let params = Params {
            tokens: tokens as u32,
            ff: ff as u32,
            gate_offset,
            gate_stride,
            up_offset,
            up_stride,
            _pad: [0; 2],
        };
        let pipe = self.pipeline(OP, SOURCE);
        let groups = grid(len as u64, WG);
        self.dispatch(
            encoder,
            &pipe,
            &params,
            &[gate.buffer, up.buffer, out],
            groups,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_close, run, values};
    use super::*;

    fn silu_mul(g: f32, u: f32) -> f64 {
        let g = g as f64;
        u as f64 * (g / (1.0 + (-g).exp()))
    }

    // Vulkan lets exp be off by 3 + 2|x| ulp, which matters only for small |g| (large ones
    // give ~g or ~0), then a division and a product. Lavapipe's worst is 1e-7.
    const TOL: f64 = 1e-5;

    #[test]
    fn from_a_stacked_gate_up_output() {
        let Some(gpu) = crate::test_gpu() else { return };
        for (tokens, ff) in [(1usize, 1usize), (3, 67), (67, 3), (2, 4097)] {
            // Gates to +-100: exp(-g) overflows to inf for the most negative ones.
            let gu = values(ff as u64, tokens * 2 * ff, 100.0);
            let (buf, out) = (
                gpu.upload_f32("gate_up", &gu),
                gpu.zeros("out", (tokens * ff * 4) as u64),
            );
            let (gate, up) = (View::part(&buf, 0, 2 * ff), View::part(&buf, ff, 2 * ff));
            run(&gpu, |enc| {
                gpu.swiglu(enc, gate, up, &out, tokens, ff).unwrap()
            });
            let want: Vec<f64> = gu
                .chunks_exact(2 * ff)
                .flat_map(|row| (0..ff).map(move |c| silu_mul(row[c], row[ff + c])))
                .collect();
            let what = format!("tokens {tokens}, ff {ff}");
            assert_close(&gpu.read_f32(&out).unwrap(), &want, TOL, &what);
        }
    }

    #[test]
    fn from_two_buffers() {
        let Some(gpu) = crate::test_gpu() else { return };
        let (tokens, ff) = (3usize, 67usize);
        let (g, u) = (values(1, tokens * ff, 8.0), values(2, tokens * ff, 8.0));
        let (gb, ub) = (gpu.upload_f32("g", &g), gpu.upload_f32("u", &u));
        let out = gpu.zeros("out", (tokens * ff * 4) as u64);
        run(&gpu, |enc| {
            gpu.swiglu(
                enc,
                View::rows(&gb, ff),
                View::rows(&ub, ff),
                &out,
                tokens,
                ff,
            )
            .unwrap()
        });
        let want: Vec<f64> = g.iter().zip(&u).map(|(&g, &u)| silu_mul(g, u)).collect();
        assert_close(&gpu.read_f32(&out).unwrap(), &want, TOL, "two buffers");
    }

    #[test]
    fn refuses_bad_shapes() {
        let Some(gpu) = crate::test_gpu() else { return };
        let buf = gpu.zeros("gate_up", 4 * 12);
        let out = gpu.zeros("out", 4 * 6);
        let mut enc = gpu.encoder();
        let (gate, up) = (View::part(&buf, 0, 6), View::part(&buf, 3, 6));
        assert!(gpu.swiglu(&mut enc, gate, up, &out, 3, 3).is_err());
        assert!(
            gpu.swiglu(&mut enc, gate, View::part(&buf, 4, 6), &out, 2, 3)
                .is_err()
        );
        assert!(gpu.swiglu(&mut enc, gate, up, &buf, 2, 3).is_err());
        assert!(gpu.swiglu(&mut enc, gate, up, &out, 2, 3).is_ok());
    }
}
