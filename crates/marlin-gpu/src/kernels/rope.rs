//! Rotary position embeddings (rope.wgsl), in place on q and k.

use bytemuck::{Pod, Zeroable};

use super::view::{apart, need, product, shape_error};
use super::{Heads, View, WG, grid};
use crate::{Gpu, GpuBuffer, GpuError};

pub const SOURCE: &str = concat!(include_str!("rope_angle.wgsl"), include_str!("rope.wgsl"));

/// Mirrors `Params` in rope.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    offset: u32,
    stride: u32,
    _pad: [u32; 3],
}

impl Gpu {
    /// Records the rotation of every head of `x` in place, token `t` at `positions[t]`, Hugging
    /// Face's rotate_half pairing (`i` with `i + head_dim / 2`) and `inv_freq` from the host
    /// (`head_dim / 2` values, Llama 3.1's scaling already applied: rope.rs's table). Where q
    /// and k lie side by side in a stacked `[tokens, q|k|v]` buffer, one call with
    /// `heads = q_heads + kv_heads` turns both.
    // x (tokens, heads * head_dim), positions (tokens) u32, inv_freq (head_dim / 2) -> x
    pub fn rope(
        &self,
        encoder: &mut crate::Recorder,
        x: View<'_>,
        dims: Heads,
        positions: &GpuBuffer,
        inv_freq: &GpuBuffer,
    ) -> Result<(), GpuError> {
        const OP: &str = "rope";
        let rows = dims.rows(OP)?;
        if !dims.head_dim.is_multiple_of(2) {
            return Err(shape_error(
                OP,
                format!("head_dim {} is odd; rope pairs halves", dims.head_dim),
            ));
        }
        let half = dims.head_dim / 2;
        let pairs = product(OP, "pairs", rows as usize, half)?;
        let (offset, stride) = x.check(OP, "x", dims.tokens, dims.heads * dims.head_dim)?;
        need(OP, "positions", positions, dims.tokens as u64)?;
        need(OP, "inv_freq", inv_freq, half as u64)?;
        apart(
            OP,
            ("x", x.buffer),
            &[("positions", positions), ("inv_freq", inv_freq)],
        )?;
        self.bindable(
            OP,
            &[
                ("x", x.buffer),
                ("positions", positions),
                ("inv_freq", inv_freq),
            ],
        )?;
        if pairs == 0 {
            return Ok(());
        }
        let params = Params {
            tokens: dims.tokens as u32,
            heads: dims.heads as u32,
            head_dim: dims.head_dim as u32,
            offset,
            stride,
            _pad: [0; 3],
        };
        let pipe = self.pipeline(OP, SOURCE);
        let groups = grid(pairs as u64, WG);
        self.dispatch(
            encoder,
            &pipe,
            &params,
            &[x.buffer, positions, inv_freq],
            groups,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_close, run, upload_u32, values};
    use super::*;

    /// Rope::new's table of crates/marlin-models/src/rope.rs (no scaling).
    fn inv_freq(theta: f32, head_dim: usize) -> Vec<f32> {
        (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f32 / head_dim as f32))
            .collect()
    }

    /// Rope::apply on every token's heads: the angle in f32 as there, its sin and cos in f64.
    fn reference(x: &[f32], width: usize, hd: usize, pos: &[u32], f: &[f32]) -> Vec<f64> {
        let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let half = hd / 2;
        for (t, &p) in pos.iter().enumerate() {
            for head in out[t * width..(t + 1) * width].chunks_exact_mut(hd) {
                for i in 0..half {
                    let (sin, cos) = ((p as f32 * f[i]) as f64).sin_cos();
                    let (a, b) = (head[i], head[i + half]);
                    head[i] = a * cos - b * sin;
                    head[i + half] = b * cos + a * sin;
                }
            }
        }
        out
    }

    // The angle is the same f32 product as the CPU's; its reduction is within 5e-7 of exact
    // for angles up to 1e8 (checked offline against exact sin/cos), sin and cos of the
    // remainder a few ulp; times |x| <= 2. Lavapipe's worst is 1.4e-7: a margin of 100.
    const TOL: f64 = 2e-5;

    #[test]
    fn turns_heads_at_near_and_far_positions() {
        let Some(gpu) = crate::test_gpu() else { return };
        // Positions far past 2*pi turns (up to 1e6 tokens) check the range reduction.
        let positions = [0u32, 1, 3, 67, 4097, 131_071, 1_000_000];
        for (heads, hd, theta) in [
            (1usize, 2usize, 10_000.0f32),
            (3, 64, 500_000.0),
            (2, 128, 1e6),
        ] {
            let tokens = positions.len();
            let x = values(hd as u64, tokens * heads * hd, 2.0);
            let f = inv_freq(theta, hd);
            let (xb, pb, fb) = (
                gpu.upload_f32("x", &x),
                upload_u32(&gpu, "pos", &positions),
                gpu.upload_f32("f", &f),
            );
            let dims = Heads {
                tokens,
                heads,
                head_dim: hd,
            };
            let v = View::rows(&xb, heads * hd);
            run(&gpu, |enc| gpu.rope(enc, v, dims, &pb, &fb).unwrap());
            let want = reference(&x, heads * hd, hd, &positions, &f);
            let what = format!("heads {heads}, head_dim {hd}");
            assert_close(&gpu.read_f32(&xb).unwrap(), &want, TOL, &what);
        }
    }

    /// q and k turned in one call inside a stacked [tokens, q|k|v]; v untouched. The table is
    /// arbitrary (as Llama 3.1's scaled one is): the kernel only reads it.
    #[test]
    fn turns_q_and_k_together_inside_a_stacked_buffer() {
        let Some(gpu) = crate::test_gpu() else { return };
        let (tokens, q_heads, kv_heads, hd) = (67usize, 3usize, 1usize, 6usize);
        let stride = (q_heads + 2 * kv_heads) * hd;
        let qkv = values(21, tokens * stride, 1.0);
        let positions: Vec<u32> = (0..tokens as u32).map(|t| 1000 + 7 * t).collect();
        let f = vec![1.0, 0.031_25, 1.5e-4];
        let (buf, pb, fb) = (
            gpu.upload_f32("qkv", &qkv),
            upload_u32(&gpu, "pos", &positions),
            gpu.upload_f32("f", &f),
        );
        let qk_heads = q_heads + kv_heads;
        let dims = Heads {
            tokens,
            heads: qk_heads,
            head_dim: hd,
        };
        run(&gpu, |enc| {
            gpu.rope(enc, View::part(&buf, 0, stride), dims, &pb, &fb)
                .unwrap()
        });
        let got = gpu.read_f32(&buf).unwrap();
        let qk = qk_heads * hd;
        for t in 0..tokens {
            let row = &qkv[t * stride..t * stride + qk];
            let want = reference(row, qk, hd, &positions[t..t + 1], &f);
            assert_close(
                &got[t * stride..t * stride + qk],
                &want,
                TOL,
                &format!("token {t}"),
            );
            assert_eq!(
                got[t * stride + qk..(t + 1) * stride],
                qkv[t * stride + qk..(t + 1) * stride]
            );
        }
    }

    #[test]
    fn refuses_bad_shapes() {
        let Some(gpu) = crate::test_gpu() else { return };
        let x = gpu.zeros("x", 4 * 12);
        let pos = upload_u32(&gpu, "pos", &[0, 1]);
        let f = gpu.zeros("f", 4 * 3);
        let mut enc = gpu.encoder();
        let dims = |heads, head_dim| Heads {
            tokens: 2,
            heads,
            head_dim,
        };
        let v = View::rows(&x, 6);
        assert!(gpu.rope(&mut enc, v, dims(1, 5), &pos, &f).is_err());
        assert!(gpu.rope(&mut enc, v, dims(2, 6), &pos, &f).is_err());
        assert!(gpu.rope(&mut enc, v, dims(1, 8), &pos, &f).is_err());
        let three = Heads {
            tokens: 3,
            ..dims(1, 4)
        };
        assert!(
            gpu.rope(&mut enc, View::rows(&x, 4), three, &pos, &f)
                .is_err()
        );
        assert!(gpu.rope(&mut enc, v, dims(1, 6), &pos, &x).is_err());
        assert!(gpu.rope(&mut enc, v, dims(1, 6), &pos, &f).is_ok());
    }
}
