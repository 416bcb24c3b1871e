//! Quantized tiled GEMM on cooperative matrices (qmm_coop.wgsl): `y (m, n) = x (m, k) · W (n,
//! k)^T` for prefill where the device has them; [`super::qmm`] is the plain fallback.

use super::quant_decode::{self, SchemeConsts};
use crate::Capabilities;
use marlin_quant::Scheme;
use std::fmt::Write;

pub const SOURCE: &str = include_str!("qmm_coop.wgsl");

/// Set to 0, the device is opened as if it had no cooperative-matrix shape (`Capabilities::coop`
/// is None), so products that would use them use the plain qmm (to compare the two, or to step
/// around a driver's bug).
pub const COOP_ENV: &str = "MARLIN_GPU_COOP";

/// The fragment shape the kernel uses: `size` x `size` x `size`, inputs f16 (or f32) and an
/// f32 accumulator. WGSL spells only 8 x 8 and 16 x 16 fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CoopShape {
    pub size: u32,
    pub f16: bool,
}

impl CoopShape {
    /// The best shape among the device's configurations that WGSL can spell: 16 x 16 f16 (NVIDIA
    /// tensor cores), then 8 x 8 f16, then 8 x 8 f32 (Apple simdgroup matrices), all with f32
    /// accumulators; None where there is none, or where `shader_f16` is off and only f16 ones
    /// exist.
    pub fn choose(props: &[wgpu::CooperativeMatrixProperties], shader_f16: bool) -> Option<Self> {
        use wgpu::CooperativeScalarType as S;
        let has = |size: u32, ab: S| {
            props.iter().any(|p| {
                p.m_size == size
                    && p.n_size == size
                    && p.k_size == size
                    && p.ab_type == ab
                    && p.cr_type == S::F32
            })
        };
        let candidates = [(16, true), (8, true), (16, false), (8, false)];
        candidates
            .into_iter()
            .find(|&(size, f16)| {
                (shader_f16 || !f16) && has(size, if f16 { S::F16 } else { S::F32 })
            })
            .map(|(size, f16)| CoopShape { size, f16 })
    }
}

/// One compiled form of qmm_coop.wgsl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QmmCoopVariant {
    /// Rows of x per tile.
    pub bm: u32,
    /// Rows of W per tile.
    pub bn: u32,
    pub shape: CoopShape,
}

impl QmmCoopVariant {
    /// The variant for `m` rows of x, where the device can run one: cooperative matrices, and
    /// subgroups of exactly 32 (the kernel's 128 threads are 4 subgroups, one per quarter of
    /// the tile).
    pub fn new(caps: &Capabilities, m: usize) -> Option<Self> {
        let shape = caps.coop?;
        if !caps.subgroup || caps.subgroup_min_size != 32 || caps.subgroup_max_size != 32 {
            return None;
        }
        let bm = if m <= 32 { 32 } else { 64 };
        // 8 x 8 fragments: half the columns, so a subgroup keeps at most 16 accumulators.
        let bn = if shape.size == 16 { 128 } else { 64 };
        Some(QmmCoopVariant { bm, bn, shape })
    }

    /// Accumulator fragments per subgroup along m and n (each subgroup owns a quarter).
    fn fragments(&self) -> (u32, u32) {
        (self.bm / 2 / self.shape.size, self.bn / 2 / self.shape.size)
    }

    pub fn key(&self, scheme: SchemeConsts) -> String {
        format!(
            "qmm_coop.{}.bm{}.bn{}.ts{}{}",
            scheme.key(),
            self.bm,
            self.bn,
            self.shape.size,
            if self.shape.f16 { ".f16" } else { ".f32" }
        )
    }

    pub fn source(&self, scheme: SchemeConsts) -> String {
        let ts = self.shape.size;
        let ab = if self.shape.f16 { "f16" } else { "f32" };
        let (fm, fn_) = self.fragments();
        let mut head = String::new();
        if self.shape.f16 {
            head.push_str("enable f16;\n");
        }
        let _ = write!(
            head,
            "enable wgpu_cooperative_matrix;\nconst BM: u32 = {}u;\nconst BN: u32 = {}u;\n\
             const TS: u32 = {ts}u;\nalias AB = {ab};\nalias CA = coop_mat{ts}x{ts}<{ab}, A>;\n\
             alias CB = coop_mat{ts}x{ts}<{ab}, B>;\nalias CC = coop_mat{ts}x{ts}<f32, C>;\n",
            self.bm, self.bn
        );
        let (mut acc, mut mma, mut store) = (String::new(), String::new(), String::new());
        for i in 0..fm {
            for j in 0..fn_ {
                let _ = writeln!(acc, "    var acc_{i}_{j}: CC;");
            }
        }
        for i in 0..fm {
            let _ = writeln!(
                mma,
                "            let a_{i} = coopLoadT<CA>(&xs[a0 + {}u * XS + kk], XS);",
                i * ts
            );
        }
        for j in 0..fn_ {
            let _ = writeln!(
                mma,
                "            let b_{j} = coopLoad<CB>(&ws[b0 + {}u * WS + kk], WS);",
                j * ts
            );
        }
        for i in 0..fm {
            for j in 0..fn_ {
                let _ = writeln!(
                    mma,
                    "            acc_{i}_{j} = coopMultiplyAdd(a_{i}, b_{j}, acc_{i}_{j});"
                );
            }
        }
        for i in 0..fm {
            for j in 0..fn_ {
                let _ = writeln!(
                    store,
                    "    coopStoreT(acc_{i}_{j}, &cs[c0], TS);\n    store_fragment(c0, lane, \
                     width, m0 + wy * (BM / 2u) + {}u, n0 + wx * (BN / 2u) + {}u);",
                    i * ts,
                    j * ts
                );
            }
        }
        let kernel = SOURCE
            .replace("//{ACC}\n", &acc)
            .replace("//{MMA}\n", &mma)
            .replace("//{STORE}\n", &store);
        quant_decode::assemble(&head, scheme, &kernel, &[])
    }

    /// Workgroups for `m` rows of x and `n` rows of W, or `None` past the 65535 per dimension.
    pub fn groups(&self, m: u32, n: u32) -> Option<[u32; 3]> {
        super::qmm::tile_grid(m, n, self.bm, self.bn)
    }
}

/// Every form of the kernel for one scheme, for the Metal translation test: 8 x 8 fragments of
/// f16 and f32 (what Apple's simdgroup matrices offer) and NVIDIA's 16 x 16 f16.
pub(crate) fn variants(scheme: Scheme) -> Vec<(String, String)> {
    let consts = SchemeConsts::of(scheme);
    let shapes = [(8, false, 64), (8, true, 64), (16, true, 128)];
    let mut all = Vec::new();
    for (size, f16, bn) in shapes {
        for bm in [32, 64] {
            let v = QmmCoopVariant {
                bm,
                bn,
                shape: CoopShape { size, f16 },
            };
            all.push((v.key(consts), v.source(consts)));
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::qtest::{Plan, check_within, schemes};

    /// f16 inputs: every output within 2.2e-3 of its scale (`TAIL * matmul_budget(_, F16)` in
    /// marlin-testkit).
    const F16_TOL: f64 = 2.2e-3;

    /// Every format through qmm_coop, with partial tiles in m, n and K, where the device has
    /// cooperative matrices (the H100 through the device tool; lavapipe has none).
    #[test]
    fn every_format_with_partial_tiles() {
        let Some(gpu) = crate::test_gpu() else { return };
        for scheme in schemes() {
            for (m, n, k) in [(9, 67, 96), (33, 130, 67), (70, 200, 256)] {
                let Some(v) = QmmCoopVariant::new(&gpu.capabilities(), m) else {
                    return;
                };
                let tol = if v.shape.f16 { F16_TOL } else { 2.4e-5 };
                check_within(&gpu, scheme, (m, n, k), Plan::QmmCoop(v), tol);
            }
        }
    }

    /// The device's fragment choice: the best shape WGSL can spell, f16 only with SHADER_F16.
    #[test]
    fn the_best_fragment_shape_is_chosen() {
        use wgpu::{CooperativeMatrixProperties as P, CooperativeScalarType as S};
        let p = |size, ab, cr| P {
            m_size: size,
            n_size: size,
            k_size: size,
            ab_type: ab,
            cr_type: cr,
            saturating_accumulation: false,
        };
        let nvidia = [
            p(16, S::F16, S::F16),
            p(16, S::F16, S::F32),
            p(8, S::F32, S::F32),
        ];
        let shape = |size, f16| Some(CoopShape { size, f16 });
        assert_eq!(CoopShape::choose(&nvidia, true), shape(16, true));
        assert_eq!(CoopShape::choose(&nvidia, false), shape(8, false));
        assert_eq!(CoopShape::choose(&nvidia[..1], true), None, "f16 sums only");
        assert_eq!(CoopShape::choose(&[], true), None);
    }
}
