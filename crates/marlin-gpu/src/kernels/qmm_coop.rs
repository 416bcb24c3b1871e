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

/// One compiled form of qmm_coop.wgsl, and how many splits of K a product runs it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QmmCoopVariant {
    /// Rows of x per tile: 16, 32 or 64.
    pub bm: u32,
    /// Rows of W per tile.
    pub bn: u32,
    pub shape: CoopShape,
    /// The subgroups' grid over the tile (rows, columns): 4 or 8 subgroups of 32.
    pub grid: (u32, u32),
    /// Tiles of vec4<f16>, one store per 4 values (16 x 16 f16 fragments; see qmm_coop.wgsl).
    pub packed: bool,
    /// x read 16 bytes at a time (K a multiple of 4).
    pub x_vec4: bool,
    /// Parts K is split into (workgroups along z; their slabs of y are added by split_sum).
    /// Not part of the compiled form: one pipeline runs every split.
    pub splits: u32,
}

/// Workgroups a product should offer the device before K is split: enough to keep every
/// compute unit of a large GPU busy with several (an H100 has 132). `MARLIN_QMM_SPLIT_TARGET`
/// overrides it (1 turns splitting off), for tuning.
fn split_target() -> u32 {
    static TUNED: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    super::tuned(&TUNED, "MARLIN_QMM_SPLIT_TARGET")
        .unwrap_or(512)
        .max(1)
}

/// `MARLIN_QMM_PACKED=0` turns the packed tiles (and the eight subgroups that come with them)
/// off, to compare; read once.
fn packed_allowed() -> bool {
    static TUNED: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    super::tuned(&TUNED, "MARLIN_QMM_PACKED") != Some(0)
}

/// Whether a step fetches the next block into registers before its multiplies. That holds
/// the next block's x and codes across the step: for INT4 103 registers a thread against 76
/// without (H100, `examples/pipeline_stats.rs`), so 2 workgroups an SM instead of 3. The
/// integer formats measured 1-4% faster without (session 12), FP4 (decoded through a table)
/// 6% slower; `MARLIN_QMM_PREFETCH=0|1` sets it for every format, to compare.
fn prefetch(scheme: SchemeConsts) -> bool {
    static TUNED: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    match super::tuned(&TUNED, "MARLIN_QMM_PREFETCH") {
        Some(v) => v != 0,
        None => !scheme.magic_codes(),
    }
}

/// Fewest blocks of K a split takes: a shorter one spends more on the slabs than it saves.
const MIN_SPLIT_BLOCKS: u32 = 8;

impl QmmCoopVariant {
    /// The variant for `m` rows of x, where the device can run one: cooperative matrices, and
    /// subgroups of exactly 32 (the kernel's threads are 4 or 8 subgroups, each owning a part of
    /// the tile). K is not split; see [`QmmCoopVariant::split_for`].
    pub fn new(caps: &Capabilities, m: usize) -> Option<Self> {
        let shape = caps.coop?;
        if !caps.subgroup || caps.subgroup_min_size != 32 || caps.subgroup_max_size != 32 {
            return None;
        }
        let packed = shape.f16 && shape.size == 16 && packed_allowed();
        let bm = match m {
            ..=16 => 16,
            17..=32 => 32,
            _ => 64,
        };
        // 8 x 8 fragments: half the columns, so a subgroup keeps at most 16 accumulators.
        let bn = if shape.size == 16 { 128 } else { 64 };
        // Packed 64 x 128 tiles: eight subgroups of 32 x 32 (H100, N = K = 4096, M = 2048: 585
        // against 622 µs with four of 32 x 64; 128-row tiles, 256-column tiles and two tiles
        // staged in turn all measured slower).
        let grid = match bm {
            16 => (1, 4),
            64 if packed => (2, 4),
            _ => (2, 2),
        };
        Some(QmmCoopVariant {
            bm,
            bn,
            shape,
            grid,
            packed,
            x_vec4: false,
            splits: 1,
        })
    }

    /// This variant for K columns of x: 16-byte loads of x where K is a multiple of 4.
    pub fn for_k(self, k: usize) -> Self {
        QmmCoopVariant {
            x_vec4: k.is_multiple_of(4),
            ..self
        }
    }

    /// This variant with K split so that `m` x `n` with `blocks` blocks of K offers the
    /// device about [`split_target`] workgroups (each split at least [`MIN_SPLIT_BLOCKS`]
    /// blocks long), and `m * n * splits` f32 slabs fit in `max_binding` bytes.
    pub fn split_for(self, m: u32, n: u32, blocks: u32, max_binding: u64) -> Self {
        let tiles = n.div_ceil(self.bn) * m.div_ceil(self.bm);
        let slabs_that_fit = max_binding / (m as u64 * n as u64 * 4).max(1);
        let splits = split_target()
            .div_ceil(tiles)
            .min(blocks / MIN_SPLIT_BLOCKS)
            .min(slabs_that_fit.min(u32::MAX as u64) as u32)
            .max(1);
        // Even splits: the last one is not left with a sliver.
        let per = blocks.div_ceil(splits).max(1);
        QmmCoopVariant {
            splits: blocks.div_ceil(per).max(1),
            ..self
        }
    }

    /// Blocks of K per split.
    pub fn split_blocks(&self, blocks: u32) -> u32 {
        blocks.div_ceil(self.splits).max(1)
    }

    /// Accumulator fragments per subgroup along m and n.
    fn fragments(&self) -> (u32, u32) {
        let (gy, gx) = self.grid;
        (
            self.bm / gy / self.shape.size,
            self.bn / gx / self.shape.size,
        )
    }

    pub fn key(&self, scheme: SchemeConsts) -> String {
        format!(
            "qmm_coop.{}.bm{}.bn{}.ts{}{}.g{}x{}{}{}",
            scheme.key(),
            self.bm,
            self.bn,
            self.shape.size,
            if self.shape.f16 { ".f16" } else { ".f32" },
            self.grid.0,
            self.grid.1,
            if self.packed { ".packed" } else { "" },
            if self.x_vec4 { ".xv4" } else { "" },
        ) + if prefetch(scheme) { "" } else { ".nopf" }
    }

    pub fn source(&self, scheme: SchemeConsts) -> String {
        let ts = self.shape.size;
        let ab = if self.shape.f16 { "f16" } else { "f32" };
        let (fm, fn_) = self.fragments();
        let mut head = String::new();
        if self.shape.f16 {
            head.push_str("enable f16;\n");
        }
        let (gy, gx) = self.grid;
        let (tile, kp) = if self.packed {
            ("vec4<f16>", 4)
        } else {
            ("AB", 1)
        };
        let _ = write!(
            head,
            "enable wgpu_cooperative_matrix;\nconst BM: u32 = {}u;\nconst BN: u32 = {}u;\n\
             const TS: u32 = {ts}u;\nconst GY: u32 = {gy}u;\nconst GX: u32 = {gx}u;\n\
             const KP: u32 = {kp}u;\nalias AB = {ab};\nalias TILE = {tile};\n\
             alias CA = coop_mat{ts}x{ts}<{ab}, A>;\nalias CB = coop_mat{ts}x{ts}<{ab}, B>;\n\
             alias CC = coop_mat{ts}x{ts}<f32, C>;\n",
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
                "            let a_{i} = coopLoadT<CA>(&xs[a0 + {}u * XS + kk / KP], XS);",
                i * ts
            );
        }
        for j in 0..fn_ {
            let _ = writeln!(
                mma,
                "            let b_{j} = coopLoad<CB>(&ws[b0 + {}u * WS + kk / KP], WS);",
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
                     width, slab, m0 + wy * (BM / GY) + {}u, n0 + wx * (BN / GX) + {}u);",
                    i * ts,
                    j * ts
                );
            }
        }
        let kernel = SOURCE
            .replace("//{ACC}\n", &acc)
            .replace("//{MMA}\n", &mma)
            .replace("//{STORE}\n", &store);
        quant_decode::assemble(
            &head,
            scheme,
            &kernel,
            &[
                ("PACKED", self.packed),
                ("X_VEC4", self.x_vec4),
                ("PREFETCH", prefetch(scheme)),
            ],
        )
    }

    /// Workgroups for `m` rows of x and `n` rows of W (z: the splits of K), or `None` past the
    /// 65535 per dimension.
    pub fn groups(&self, m: u32, n: u32) -> Option<[u32; 3]> {
        let [x, y, _] = super::qmm::tile_grid(m, n, self.bm, self.bn)?;
        (self.splits <= 65535).then_some([x, y, self.splits])
    }
}

/// Every form of the kernel for one scheme, for the Metal translation test: 8 x 8 fragments of
/// f16 and f32 (what Apple's simdgroup matrices offer) and NVIDIA's 16 x 16 f16.
pub(crate) fn variants(scheme: Scheme) -> Vec<(String, String)> {
    let consts = SchemeConsts::of(scheme);
    let shapes = [(8, false, 64), (8, true, 64), (16, true, 128)];
    let mut all = Vec::new();
    for (size, f16, bn) in shapes {
        let packed = size == 16;
        for (bm, grid) in [(16, (1, 4)), (32, (2, 2)), (64, (2, 2)), (64, (2, 4))] {
            // Eight subgroups only with 128-column tiles (each thread then decodes a unit).
            if grid.1 == 4 && bm > 16 && bn < 128 {
                continue;
            }
            for x_vec4 in [false, true] {
                let v = QmmCoopVariant {
                    bm,
                    bn,
                    shape: CoopShape { size, f16 },
                    grid,
                    packed,
                    x_vec4,
                    splits: 1,
                };
                all.push((v.key(consts), v.source(consts)));
            }
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
            for (m, n, k) in [(9, 67, 96), (33, 130, 67), (70, 200, 256), (130, 150, 100)] {
                let Some(v) = QmmCoopVariant::new(&gpu.capabilities(), m) else {
                    return;
                };
                let tol = if v.shape.f16 { F16_TOL } else { 2.4e-5 };
                // The chosen form, with 16-byte x loads where K allows them, with the tiles
                // one value at a time, and 64-row tiles on eight subgroups.
                let mut forms = vec![v, v.for_k(k), QmmCoopVariant { packed: false, ..v }];
                if v.bm == 64 && v.bn == 128 {
                    forms.push(QmmCoopVariant {
                        grid: (2, 4),
                        packed: false,
                        ..v
                    });
                }
                for form in forms {
                    check_within(&gpu, scheme, (m, n, k), Plan::QmmCoop(form), tol);
                }
            }
        }
    }

    /// K split into 2, 3 and 7 parts (slabs added by split_sum) gives the unsplit answer, at
    /// tiles of 16, 32 and 64 rows; and the split chosen for a small batch on a wide matrix
    /// covers every block of K.
    #[test]
    fn split_k_gives_the_unsplit_result() {
        let Some(gpu) = crate::test_gpu() else { return };
        let int4 = Scheme::of(marlin_quant::Format::Int4);
        for (m, n, k) in [(16, 130, 32 * 24), (20, 67, 32 * 17 + 5), (40, 200, 32 * 9)] {
            let Some(v) = QmmCoopVariant::new(&gpu.capabilities(), m) else {
                return;
            };
            let tol = if v.shape.f16 { F16_TOL } else { 2.4e-5 };
            for splits in [2, 3, 7] {
                let plan = Plan::QmmCoop(QmmCoopVariant { splits, ..v });
                check_within(&gpu, int4, (m, n, k), plan, tol);
            }
        }
        let v = QmmCoopVariant::new(&gpu.capabilities(), 16).unwrap();
        let split = v.split_for(16, 8192, 256, 1 << 30);
        assert!(split.splits > 1, "{split:?}");
        assert!(split.split_blocks(256) * split.splits >= 256);
        assert!(
            split.split_blocks(256) * (split.splits - 1) < 256,
            "no empty split"
        );
        assert_eq!(
            v.split_for(16, 8192, 256, 16 * 8192 * 4).splits,
            1,
            "slabs fit a binding"
        );
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
