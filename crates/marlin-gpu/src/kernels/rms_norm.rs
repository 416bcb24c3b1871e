//! RMSNorm over rows of heads (rms_norm.wgsl): the layer norms and Qwen3's per-head q/k norms.

use bytemuck::{Pod, Zeroable};

use super::view::{apart, need, shape_error};
use super::{Heads, Variants, View, grid, with_reductions};
use crate::{Gpu, GpuBuffer, GpuError};

pub const SOURCES: Variants = with_reductions!("rms_norm.wgsl");

/// Mirrors `Params` in rms_norm.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    dim: u32,
    eps: f32,
    x_offset: u32,
    x_stride: u32,
    out_offset: u32,
    out_stride: u32,
}

impl Gpu {
    /// Records `out = x / sqrt(mean(x^2) + eps) * weight` over every head of every token, the
    /// mean taken over each head's `head_dim` values. `out` may be `x` itself (the same view:
    /// in place), or any view of another buffer.
    // x (tokens, heads * head_dim), weight (head_dim) -> out (tokens, heads * head_dim)
    pub fn rms_norm(
        &self,
        encoder: &mut crate::Recorder,
        x: View<'_>,
        out: View<'_>,
        weight: &GpuBuffer,
        dims: Heads,
        eps: f32,
    ) -> Result<(), GpuError> {
        const OP: &str = "rms_norm";
        let rows = dims.rows(OP)?;
        let width = dims.heads * dims.head_dim;
        let (x_offset, x_stride) = x.check(OP, "x", dims.tokens, width)?;
        let (out_offset, out_stride) = out.check(OP, "out", dims.tokens, width)?;
        if x.aliases(&out) && !x.same_as(&out) {
            return Err(shape_error(
                OP,
                "x and out share a buffer at different places; in place needs the same view".into(),
            ));
        }
        need(OP, "weight", weight, dims.head_dim as u64)?;
        apart(OP, ("x", x.buffer), &[("weight", weight)])?;
        apart(OP, ("out", out.buffer), &[("weight", weight)])?;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(shape_error(
                OP,
                format!("eps {eps} is not a finite value >= 0"),
            ));
        }
        self.bindable(
            OP,
            &[("x", x.buffer), ("out", out.buffer), ("weight", weight)],
        )?;
        if rows == 0 || dims.head_dim == 0 {
            return Ok(());
        }
        let params = Params {
            rows,
            heads: dims.heads as u32,
            dim: dims.head_dim as u32,
            eps,
            x_offset,
            x_stride,
            out_offset,
            out_stride,
        };
        let pipe = self.row_pipeline(OP, &SOURCES);
        // One workgroup per row.
        let groups = grid(rows as u64, 1);
        self.dispatch(
            encoder,
            &pipe,
            &params,
            &[x.buffer, out.buffer, weight],
            groups,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_close, run, values};
    use super::*;

    /// RmsNorm::forward_inplace of crates/marlin-models/src/layers.rs, in f64.
    fn reference(x: &[f32], w: &[f32], eps: f32) -> Vec<f64> {
        x.chunks_exact(w.len())
            .flat_map(|row| {
                let mean_sq =
                    row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / w.len() as f64;
                let inv = 1.0 / (mean_sq + eps as f64).sqrt();
                row.iter()
                    .zip(w)
                    .map(move |(&v, &w)| v as f64 * inv * w as f64)
            })
            .collect()
    }

    // Each thread adds at most dim / 256 + 1 squares before the reduction's 8 levels (or the
    // subgroup's): with dim <= 4097, about 25 roundings of relative 6e-8 in the sum, and one
    // in each of sqrt, the division and the two products: ~2e-6. Lavapipe's worst is 9e-8.
    const TOL: f64 = 1e-5;

    #[test]
    fn normalizes_rows_of_odd_widths() {
        let Some(gpu) = crate::test_gpu() else { return };
        for (tokens, dim) in [
            (1usize, 1usize),
            (3, 67),
            (2, 4097),
            (67, 3),
            (5, 256),
            (1, 9000),
        ] {
            let x = values(dim as u64, tokens * dim, 3.0);
            let w = values(7, dim, 1.5);
            let (xb, wb) = (gpu.upload_f32("x", &x), gpu.upload_f32("w", &w));
            let out = gpu.zeros("out", (tokens * dim * 4) as u64);
            let heads = Heads {
                tokens,
                heads: 1,
                head_dim: dim,
            };
            run(&gpu, |enc| {
                gpu.rms_norm(
                    enc,
                    View::rows(&xb, dim),
                    View::rows(&out, dim),
                    &wb,
                    heads,
                    1e-6,
                )
                .unwrap()
            });
            let what = format!("tokens {tokens}, dim {dim}");
            assert_close(
                &gpu.read_f32(&out).unwrap(),
                &reference(&x, &w, 1e-6),
                TOL,
                &what,
            );
        }
    }

    /// Qwen3's q norm: in place on the q heads of a stacked [tokens, q|k|v] buffer; k and v
    /// stay as they were.
    #[test]
    fn normalizes_heads_in_place_inside_a_stacked_buffer() {
        let Some(gpu) = crate::test_gpu() else { return };
        let (tokens, q_heads, kv_heads, hd) = (3usize, 4usize, 2usize, 67usize);
        let stride = (q_heads + 2 * kv_heads) * hd;
        let qkv = values(11, tokens * stride, 2.0);
        let w = values(12, hd, 1.0);
        let (buf, wb) = (gpu.upload_f32("qkv", &qkv), gpu.upload_f32("w", &w));
        let q = View::part(&buf, 0, stride);
        let heads = Heads {
            tokens,
            heads: q_heads,
            head_dim: hd,
        };
        run(&gpu, |enc| {
            gpu.rms_norm(enc, q, q, &wb, heads, 1e-5).unwrap()
        });
        let got = gpu.read_f32(&buf).unwrap();
        for t in 0..tokens {
            let row = t * stride;
            let q_width = q_heads * hd;
            let want = reference(&qkv[row..row + q_width], &w, 1e-5);
            assert_close(&got[row..row + q_width], &want, TOL, &format!("token {t}"));
            assert_eq!(
                got[row + q_width..row + stride],
                qkv[row + q_width..row + stride]
            );
        }
    }

    /// More rows than one grid dimension holds (65535): the 2D grid and its spare workgroups.
    #[test]
    fn normalizes_more_rows_than_one_grid_dimension() {
        let Some(gpu) = crate::test_gpu() else { return };
        let (tokens, dim) = (65_537usize, 2usize);
        let x = values(5, tokens * dim, 1.0);
        let w = vec![1.0f32; dim];
        let (xb, wb) = (gpu.upload_f32("x", &x), gpu.upload_f32("w", &w));
        let heads = Heads {
            tokens,
            heads: 1,
            head_dim: dim,
        };
        let v = View::rows(&xb, dim);
        run(&gpu, |enc| {
            gpu.rms_norm(enc, v, v, &wb, heads, 0.0).unwrap()
        });
        assert_close(
            &gpu.read_f32(&xb).unwrap(),
            &reference(&x, &w, 0.0),
            TOL,
            "65537 rows",
        );
    }

    #[test]
    fn refuses_bad_shapes() {
        let Some(gpu) = crate::test_gpu() else { return };
        let x = gpu.zeros("x", 4 * 10);
        let other = gpu.zeros("other", 4 * 10);
        let w = gpu.zeros("w", 4 * 5);
        let heads = Heads {
            tokens: 2,
            heads: 1,
            head_dim: 5,
        };
        let mut enc = gpu.encoder();
        let (v, o) = (View::rows(&x, 5), View::rows(&other, 5));
        // Too short, overlapping parts, a shifted alias, a short weight, a bad eps.
        let too_many = Heads { tokens: 3, ..heads };
        assert!(gpu.rms_norm(&mut enc, v, o, &w, too_many, 0.0).is_err());
        assert!(
            gpu.rms_norm(&mut enc, View::part(&x, 0, 4), o, &w, heads, 0.0)
                .is_err()
        );
        assert!(
            gpu.rms_norm(&mut enc, v, View::part(&x, 0, 6), &w, heads, 0.0)
                .is_err()
        );
        let short = gpu.zeros("w", 4 * 4);
        assert!(gpu.rms_norm(&mut enc, v, o, &short, heads, 0.0).is_err());
        assert!(gpu.rms_norm(&mut enc, v, o, &w, heads, f32::NAN).is_err());
        let huge = Heads {
            tokens: usize::MAX,
            ..heads
        };
        assert!(gpu.rms_norm(&mut enc, v, o, &w, huge, 0.0).is_err());
        assert!(gpu.rms_norm(&mut enc, v, v, &x, heads, 0.0).is_err());
        assert!(gpu.rms_norm(&mut enc, v, o, &w, heads, 0.0).is_ok());
    }
}
