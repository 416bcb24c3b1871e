//! Quantized tiled GEMM (qmm.wgsl): `y (m, n) = x (m, k) · W (n, k)^T` for prefill, m past
//! [`super::qmv::MAX_M`].

use super::quant_decode::{self, SchemeConsts};
use marlin_quant::Scheme;

pub const SOURCE: &str = include_str!("qmm.wgsl");

/// Rows of W per tile (BN in qmm.wgsl).
const BN: u32 = 64;

/// One compiled form of qmm.wgsl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QmmVariant {
    /// Rows of x per tile: 32 up to 32 rows (one tile holds them all, no padding waste past
    /// half), 64 beyond.
    pub bm: u32,
}

impl QmmVariant {
    pub fn new(m: usize) -> Self {
        QmmVariant {
            bm: if m <= 32 { 32 } else { 64 },
        }
    }

    pub fn key(&self, scheme: SchemeConsts) -> String {
        format!("qmm.{}.bm{}", scheme.key(), self.bm)
    }

    pub fn source(&self, scheme: SchemeConsts) -> String {
        // 16 threads along m, each with TM rows of x.
        let consts = format!(
            "const BM: u32 = {}u;\nconst TM: u32 = {}u;\n",
            self.bm,
            self.bm / 16
        );
        quant_decode::assemble(&consts, scheme, SOURCE, &[])
    }

    /// Workgroups for `m` rows of x and `n` rows of W, or `None` past the 65535 per dimension.
    pub fn groups(&self, m: u32, n: u32) -> Option<[u32; 3]> {
        tile_grid(m, n, self.bm, BN)
    }
}

/// Every form of the kernel for one scheme, for the Metal translation test.
pub(crate) fn variants(scheme: Scheme) -> Vec<(String, String)> {
    let consts = SchemeConsts::of(scheme);
    [32, 64]
        .map(|bm| {
            let v = QmmVariant { bm };
            (v.key(consts), v.source(consts))
        })
        .to_vec()
}

/// Workgroups for tiles of `bm` rows of x by `bn` rows of W (x along n, y along m), or `None`
/// past the 65535 per dimension.
pub(crate) fn tile_grid(m: u32, n: u32, bm: u32, bn: u32) -> Option<[u32; 3]> {
    let (gx, gy) = (n.div_ceil(bn), m.div_ceil(bm));
    (gx <= 65535 && gy <= 65535).then_some([gx, gy, 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::qtest::{Plan, check};

    /// Every format through qmm, with partial tiles in m, n and K.
    #[test]
    fn every_format_with_partial_tiles() {
        let Some(gpu) = crate::test_gpu() else { return };
        for scheme in crate::kernels::qtest::schemes() {
            for (m, n, k) in [(9, 67, 96), (33, 5, 67)] {
                check(
                    &gpu,
                    scheme,
                    (m, n, k),
                    Plan::Auto(crate::MatmulPrecision::F32),
                );
            }
        }
    }

    /// qmm gives qmv's answer where both apply (m = 1 and 3), tile sizes included.
    #[test]
    fn small_m_through_qmm() {
        let Some(gpu) = crate::test_gpu() else { return };
        let scheme = Scheme::of(marlin_quant::Format::Int3);
        for bm in [32, 64] {
            for m in [1, 3] {
                check(&gpu, scheme, (m, 70, 160), Plan::Qmm(QmmVariant { bm }));
            }
        }
    }
}
