//! Dense matmul `y = x W^T` for f32 or f16 weights (matmul_dense.wgsl): unquantized models'
//! linear layers, and an unquantized output head.

use bytemuck::{Pod, Zeroable};

use super::view::{apart, need, product, shape_error};
use crate::{Gpu, GpuBuffer, GpuError};

/// With f32 weights.
pub const SOURCE_F32: &str = concat!(
    include_str!("matmul_dense.wgsl"),
    include_str!("matmul_dense_f32.wgsl")
);
/// With f16 weights (read through `unpack2x16float`: no SHADER_F16 needed).
pub const SOURCE_F16: &str = concat!(
    include_str!("matmul_dense.wgsl"),
    include_str!("matmul_dense_f16.wgsl")
);

/// The block of y one workgroup computes (BM = BN in matmul_dense.wgsl).
const TILE: usize = 64;

/// Mirrors `Params` in matmul_dense.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

/// How a dense weight's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    /// IEEE half, little-endian, packed without padding (two to a 32-bit word).
    F16,
}

/// A dense weight on the device: `(n, k)` row-major, as PyTorch stores a linear layer's
/// `[out_features, in_features]`.
#[derive(Debug, Clone, Copy)]
pub struct DenseWeight<'a> {
    pub buffer: &'a GpuBuffer,
    pub n: usize,
    pub k: usize,
    pub dtype: WeightDtype,
}

impl Gpu {
    /// Records `y = x W^T`: f32 products and sums whatever the weight's dtype.
    // x (m, k), w (n, k) -> y (m, n)
    pub fn matmul_dense(
        &self,
        encoder: &mut crate::Recorder,
        x: &GpuBuffer,
        m: usize,
        w: DenseWeight<'_>,
        y: &GpuBuffer,
    ) -> Result<(), GpuError> {
        const OP: &str = "matmul_dense";
        let (n, k) = (w.n, w.k);
        let x_len = product(OP, "x", m, k)?;
        let w_len = product(OP, "w", n, k)?;
        let y_len = product(OP, "y", m, n)?;
        need(OP, "x", x, x_len as u64)?;
        need(OP, "y", y, y_len as u64)?;
        let (source, w_bytes) = match w.dtype {
            WeightDtype::F32 => (SOURCE_F32, w_len as u64 * 4),
            WeightDtype::F16 => (SOURCE_F16, w_len as u64 * 2),
        };
        if w.buffer.len() < w_bytes {
            let what = format!(
                "w ({n}, {k}) {:?} needs {w_bytes} bytes, has {}",
                w.dtype,
                w.buffer.len()
            );
            return Err(shape_error(OP, what));
        }
        apart(OP, ("y", y), &[("x", x), ("w", w.buffer)])?;
        let groups = [n.div_ceil(TILE), m.div_ceil(TILE)];
        if groups.iter().any(|&g| g > 65_535) {
            return Err(shape_error(
                OP,
                format!("{m} x {n} needs {groups:?} workgroups, past 65535 a side; split it"),
            ));
        }
        self.bindable(OP, &[("x", x), ("w", w.buffer), ("y", y)])?;
        if y_len == 0 {
            return Ok(());
        }
        let params = Params {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            _pad: 0,
        };
        let key = match w.dtype {
            WeightDtype::F32 => "matmul_dense/f32",
            WeightDtype::F16 => "matmul_dense/f16",
        };
        let pipe = self.pipeline(key, source);
        let groups = [groups[0] as u32, groups[1] as u32, 1];
        self.dispatch(encoder, &pipe, &params, &[x, y, w.buffer], groups);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::super::testing::{run, values};
    use super::*;

    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (1, 67, 4097),
        (3, 67, 67),
        (67, 3, 67),
        (67, 67, 3),
        (65, 129, 17),
        (1, 4097, 3),
        (130, 70, 33),
    ];

    /// (y, sum |x w|) per output in f64.
    fn reference(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut y = vec![0.0; m * n];
        let mut mag = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for c in 0..k {
                    let p = x[i * k + c] as f64 * w[j * k + c] as f64;
                    y[i * n + j] += p;
                    mag[i * n + j] += p.abs();
                }
            }
        }
        (y, mag)
    }

    fn gemm(gpu: &Gpu, x: &[f32], m: usize, w: &[f32], n: usize, dtype: WeightDtype) -> Vec<f32> {
        let k = x.len() / m;
        let wb = match dtype {
            WeightDtype::F32 => gpu.upload_f32("w", w),
            WeightDtype::F16 => {
                let h: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
                gpu.upload("w", bytemuck::cast_slice(&h))
            }
        };
        let (xb, y) = (
            gpu.upload_f32("x", x),
            gpu.upload_f32("y", &vec![f32::NAN; m * n]),
        );
        let weight = DenseWeight {
            buffer: &wb,
            n,
            k,
            dtype,
        };
        run(gpu, |enc| {
            gpu.matmul_dense(enc, &xb, m, weight, &y).unwrap()
        });
        gpu.read_f32(&y).unwrap()
    }

    /// Small integers: every product and sum is exact in f32 (and in f16 for the weights), so
    /// the result must equal the reference exactly; a wrong index cannot hide in rounding.
    #[test]
    fn exact_on_integers_for_odd_shapes() {
        let Some(gpu) = crate::test_gpu() else { return };
        for &(m, n, k) in SHAPES {
            let ints = |seed, len| -> Vec<f32> {
                values(seed, len, 3.0).iter().map(|v| v.round()).collect()
            };
            let (x, w) = (ints(m as u64, m * k), ints(n as u64 + 99, n * k));
            let want: Vec<f32> = reference(&x, m, k, &w, n)
                .0
                .iter()
                .map(|&v| v as f32)
                .collect();
            for dtype in [WeightDtype::F32, WeightDtype::F16] {
                let got = gemm(&gpu, &x, m, &w, n, dtype);
                assert_eq!(got, want, "{m} x {n} x {k}, {dtype:?}");
            }
        }
    }

    /// Random values: within the bound of a recursive f32 sum of k products,
    /// |error| <= k * 2^-24 * sum |x w| (twice it for margin), f16 weights read exactly.
    #[test]
    fn within_the_f32_summation_bound_on_random_values() {
        let Some(gpu) = crate::test_gpu() else { return };
        for &(m, n, k) in SHAPES {
            let x = values(m as u64 + 5, m * k, 1.0);
            let w32 = values(n as u64 + 6, n * k, 0.5);
            let w16: Vec<f32> = w32.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
            for (dtype, w) in [(WeightDtype::F32, &w32), (WeightDtype::F16, &w16)] {
                let got = gemm(&gpu, &x, m, w, n, dtype);
                let (want, mag) = reference(&x, m, k, w, n);
                let bound = 2.0 * (k + 1) as f64 * (-24f64).exp2();
                for (i, ((&g, &r), &s)) in got.iter().zip(&want).zip(&mag).enumerate() {
                    assert!(
                        (g as f64 - r).abs() <= bound * s,
                        "{m} x {n} x {k} {dtype:?}: y[{i}] = {g}, wanted {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_bad_shapes() {
        let Some(gpu) = crate::test_gpu() else { return };
        let (x, w, y) = (
            gpu.zeros("x", 4 * 6),
            gpu.zeros("w", 4 * 6),
            gpu.zeros("y", 4 * 4),
        );
        let weight = |n, k, dtype| DenseWeight {
            buffer: &w,
            n,
            k,
            dtype,
        };
        let mut enc = gpu.encoder();
        assert!(
            gpu.matmul_dense(&mut enc, &x, 3, weight(2, 3, WeightDtype::F32), &y)
                .is_err()
        );
        assert!(
            gpu.matmul_dense(&mut enc, &x, 2, weight(3, 3, WeightDtype::F32), &y)
                .is_err()
        );
        assert!(
            gpu.matmul_dense(&mut enc, &x, 2, weight(4, 3, WeightDtype::F16), &y)
                .is_err()
        );
        assert!(
            gpu.matmul_dense(&mut enc, &x, 2, weight(2, 3, WeightDtype::F32), &x)
                .is_err()
        );
        assert!(
            gpu.matmul_dense(&mut enc, &x, 2, weight(2, 3, WeightDtype::F32), &y)
                .is_ok()
        );
        assert!(
            gpu.matmul_dense(&mut enc, &x, 2, weight(2, 3, WeightDtype::F16), &y)
                .is_ok()
        );
    }
}
