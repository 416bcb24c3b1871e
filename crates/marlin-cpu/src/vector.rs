//! f32 vector primitives for the parts of a model that are not matmuls (attention's scores and
//! weighted sums), at the backend's instruction-set level.

use crate::{CpuBackend, Isa, kernels};

impl CpuBackend {
    /// `a · b`. Panics if the lengths differ (a caller's bug, not an input error).
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot of slices of different lengths");
        kernels::f32_dot(self.isa(), a, b)
    }

    /// `y += alpha * x`. Panics if the lengths differ.
    pub fn axpy(&self, alpha: f32, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), y.len(), "axpy of slices of different lengths");
        match self.isa() {
            // SAFETY: a backend exists only at an ISA the CPU has (`CpuBackend::new`).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { axpy_avx512(alpha, x, y) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { axpy_avx2(alpha, x, y) },
            _ => axpy_scalar(alpha, x, y),
        }
    }
}

/// Plain loop: with the target features of its caller the compiler vectorizes it (element-wise,
/// so no reassociation is needed).
#[inline(always)]
fn axpy_scalar(alpha: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn axpy_avx512(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy_scalar(alpha, x, y)
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy_scalar(alpha, x, y)
}

#[cfg(test)]
mod tests {
    use crate::{CpuBackend, Isa};

    #[test]
    fn dot_and_axpy_agree_with_plain_loops_at_every_isa() {
        let a: Vec<f32> = (0..67).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..67).map(|i| (i as f32 * 0.11).cos()).collect();
        let want_dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        for isa in Isa::available() {
            let cpu = CpuBackend::new(isa).unwrap();
            assert!((cpu.dot(&a, &b) as f64 - want_dot).abs() < 1e-5, "{isa}");
            let mut y = b.clone();
            cpu.axpy(0.5, &a, &mut y);
            for i in 0..67 {
                assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6, "{isa} {i}");
            }
        }
    }
}
