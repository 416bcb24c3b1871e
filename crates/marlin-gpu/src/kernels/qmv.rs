//! Quantized small-batch product (qmv.wgsl): `y (m, n) = x (m, k) · W (n, k)^T` for m up to
//! [`MAX_M`], every weight byte read once for all rows of x.

use super::quant_decode::{self, SchemeConsts};
use crate::Capabilities;
use marlin_quant::Scheme;
use std::sync::OnceLock;

pub const SOURCE: &str = include_str!("qmv.wgsl");

/// The epilogue of a product that leaves y on int8 grids ([`QmvVariant::q8_out`]), with the
/// grids' arithmetic it shares with quantize_x.wgsl.
const SOURCE_Q8_OUT: &str = concat!(
    include_str!("int8_grid.wgsl"),
    include_str!("qmv_q8_out.wgsl")
);

/// The most rows of x qmv takes. Each thread keeps RPS x MT sums in registers and reloads x per
/// row of x; past 8 rows qmm, which stages x in workgroup memory and reuses each load over a
/// 4 x 4 register tile, does fewer loads per multiply-add. (To be tuned on real GPUs.)
pub const MAX_M: usize = 8;

/// The most rows of x qmv takes under `MatmulPrecision::Mixed` on a device with cooperative
/// matrices, where qmm_coop with K split takes the rest. All of them: decode stays on qmv (f16
/// inputs lose the relative precision of tiny activations, which the conformance suite's
/// special values catch), though on the H100 (N = K = 8192, INT4) qmv costs 28 / 41 / 96 / 267
/// µs at m = 1 / 2 / 4 / 8 and the split qmm_coop 84 / 86 / 88 µs at m = 2 / 4 / 8.
/// `MARLIN_QMV_MAX_M` (1 to 8) lowers it, for batched decode where f16 inputs are acceptable.
const MIXED_MAX_M: usize = MAX_M;

/// [`MIXED_MAX_M`], or `MARLIN_QMV_MAX_M`.
pub fn mixed_max_m() -> usize {
    static TUNED: OnceLock<Option<u32>> = OnceLock::new();
    super::tuned(&TUNED, "MARLIN_QMV_MAX_M")
        .map_or(MIXED_MAX_M, |m| m as usize)
        .clamp(1, MAX_M)
}

/// Threads per workgroup.
const T: u32 = 128;

/// Threads per workgroup: 512 (16 teams of 32 sharing one staged x, so each workgroup stages x
/// for 32 rows of W at m = 1, 64 beyond). On the H100 a Llama-3.1-8B INT4 decode ran
/// 212.8-214.9 tokens/s against 203.3-204.7 at 256 and 171.9-175.2 at 128 (one run), and INT4
/// N = K = 8192 at m = 2 / 4 / 8 took 35.9 / 48.0 / 76.5 µs against 34.1 / 59.2 / 188.7 at
/// 128. (At session 5's kernel 256 had measured faster than 128 and 512 at m = 1 alone.)
/// Without subgroups, past m = 1, 128: the reduction's partial sums (threads x m floats) must
/// leave room for the stage in 16 KiB. `MARLIN_QMV_THREADS` (64 to 512) overrides it, for
/// tuning.
fn threads(mt: u32, subgroups: bool) -> u32 {
    static TUNED: OnceLock<Option<u32>> = OnceLock::new();
    match super::tuned(&TUNED, "MARLIN_QMV_THREADS") {
        Some(t @ (64 | 128 | 256 | 512)) => t,
        _ if mt == 1 || subgroups => 512,
        _ => T,
    }
}

/// Rows of W a thread works on at once (each x vec4 it loads serves RPS rows): two, but four
/// for one row of x and at least [`TALL`] rows of W. On the H100 (N = K = 8192, INT4 g32, 512
/// threads, session 9) two rows against four took at m = 8 92 µs against 145 with f32 x (FP4
/// 88 against 140, INT8 86 against 160), at m = 2 32-36 against 36, at m = 4 48.9 against
/// 47.7 (int8x2 x 35.2 against 35.8); at m = 1 44 against 49 (session 5). One row or eight
/// were slower everywhere. Four rows reuse each x load more, but keep twice the sums in
/// registers and make half the workgroups: on a tall matrix there are workgroups enough
/// (session 10, m = 1, int8x2 x: 28672 x 4096 g128 30.8 µs against 32.6). `MARLIN_QMV_RPS`
/// (1, 2, 4 or 8) overrides it, for tuning on a new GPU.
fn rps(mt: u32, n: usize) -> u32 {
    static TUNED: OnceLock<Option<u32>> = OnceLock::new();
    super::tuned(&TUNED, "MARLIN_QMV_RPS")
        .filter(|r| matches!(r, 1 | 2 | 4 | 8))
        .unwrap_or(if mt == 1 && n >= TALL { 4 } else { 2 })
}

/// Rows of W from which a product of one row of x takes four rows a thread ([`rps`]).
const TALL: usize = 16384;
/// Workgroup memory for staged x (qmv.wgsl `x_stage`) at m = 1: WebGPU's guaranteed 16 KiB,
/// less the E2M1 table and the reduction's partial sums. Also the fastest on the H100 at M = 1
/// (INT4 N = K = 8192 with 256 threads: 6 KiB 26.4 µs, 12 KiB 25.8, 20 KiB 28.3, 40 KiB 40.3:
/// a larger stage leaves fewer workgroups resident). More rows of x take more (see
/// [`QmvVariant::new`]). `MARLIN_QMV_STAGE_KIB` overrides it (up to what the device allows),
/// for tuning.
const STAGE_BYTES: u32 = 12 << 10;
/// Chunks of x a stage should hold at least, so that every lane of a subgroup of 32 has one: at
/// m = 8 a 12 KiB stage holds 8, leaving three lanes in four idle.
const FULL_SPAN: u32 = 32;
/// Threads per team (one team per RPS rows) where subgroups are off.
const TK: u32 = 16;

/// What qmv multiplies: x as given, or fused into the product (decode runs a layer's norms and
/// SwiGLU this way, a dispatch each fewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QmvInput {
    #[default]
    Plain,
    /// RMSNorm of each row of x (the norm's weight at binding 3).
    RmsNorm,
    /// `silu(gate) * up` of rows of 2K: gate the first K columns, up the next K.
    SwiGlu,
}

/// One compiled form of qmv.wgsl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QmvVariant {
    /// Rows of x per dispatch (1, 2, 4 or 8): the sums each thread keeps per row of W.
    pub mt: u32,
    /// Rows of W a thread works on at once.
    pub rps: u32,
    /// Teams per workgroup where subgroups are on (without, T / TK); a workgroup covers
    /// `teams * RPS` rows of W.
    pub teams: u32,
    /// Teams are subgroups, reduced with subgroupAdd; otherwise TK threads and workgroup memory.
    pub subgroups: bool,
    /// Threads per workgroup.
    pub threads: u32,
    /// x bound as vec4s (K a multiple of 4).
    pub x_vec4: bool,
    /// K needs no padding (a multiple of 32 and of the group, so `x_vec4` too): every block of
    /// W lies inside K, and x loads need no clamping.
    pub x_whole: bool,
    /// Codes read 16 bytes at a time (4- and 8-bit formats, whose rows are whole 16-byte
    /// chunks); a word at a time otherwise.
    pub codes_vec4: bool,
    /// Workgroup memory for staged x, before the other arrays are taken from the device's
    /// limit.
    pub stage_bytes: u32,
    /// Workgroup memory the device allows.
    pub workgroup_bytes: u32,
    /// What is multiplied (x, or its norm, or the SwiGLU of its halves).
    pub input: QmvInput,
    /// `y += x W^T` (the residual connection) instead of `y = x W^T`.
    pub add_to_y: bool,
    /// x as two int8 blocks (the CPU's default activations, `MatmulPrecision::Int8x2`),
    /// multiplied by the codes in integer dot products: INT4, INT4 affine and INT8 only
    /// ([`QmvVariant::takes_q8`]). x is then quantize_x.wgsl's output, made by a dispatch
    /// before the product, which also did the input's norm or SwiGLU: `input` is `Plain`.
    pub x_q8: bool,
    /// With `x_q8`: x was quantized before its RMSNorm by the product that made it
    /// (`q8_out`), whose block sums of squares follow its planes; the norm's 1 / rms is
    /// applied to each output.
    pub norm_sums: bool,
    /// With `add_to_y`: the rows of y after the add, times the next norm's weight, also go on
    /// int8 grids for the next product (`quantize_out` in qmv.wgsl): that product then needs
    /// no quantize_x dispatch. Needs [`QmvVariant::emits_q8`].
    pub q8_out: bool,
    /// W is a stacked gate|up (n = 2 ff): each workgroup takes R / 2 rows of gate and the R /
    /// 2 rows of up of the same columns, and besides storing y puts silu(gate) * up of its
    /// columns on the int8 grids of the next product's x (K = ff), which then needs no
    /// quantize_x dispatch (qmv_q8_out.wgsl, `quantize_swiglu_out`). Needs
    /// [`QmvVariant::emits_swiglu_q8`].
    pub swiglu_out: bool,
}

impl QmvVariant {
    /// The variant for `m` rows of x of length `k` by `n` rows of W in `scheme` on a device
    /// with `caps`.
    pub fn new(caps: &Capabilities, scheme: Scheme, (m, n, k): (usize, usize, usize)) -> Self {
        let subgroups = caps.subgroup;
        let mt = (m.max(1) as u32).next_power_of_two();
        let rps = rps(mt, n);
        let mut threads = threads(mt, subgroups);
        // No more threads than rows of W to give them (a workgroup past them computes the last
        // row again): small matrices, as tests use, then waste no work.
        let min_size = if subgroups {
            caps.subgroup_min_size.max(1)
        } else {
            TK
        };
        while threads > 64 && (threads / min_size) * rps / 2 >= n.max(1) as u32 {
            threads /= 2;
        }
        // One team per subgroup of the smallest size: a larger one covers several teams.
        let teams = if subgroups {
            (threads / caps.subgroup_min_size.clamp(1, threads)).max(1)
        } else {
            threads / TK
        };
        // More rows of x than one: a stage large enough for every lane of a subgroup, where
        // the device allows it (the H100's 48 KiB: INT4 N = K = 8192 at m = 4 59.2 µs against
        // 85.8 at 12 KiB, at m = 8 188.7 against 259.4).
        let full = FULL_SPAN * mt * 9 * 16;
        let stage_bytes = if mt > 1 && full + (8 << 10) <= caps.max_workgroup_storage {
            full
        } else {
            STAGE_BYTES
        };
        QmvVariant {
            mt,
            rps,
            teams,
            subgroups,
            threads,
            stage_bytes,
            workgroup_bytes: caps.max_workgroup_storage,
            x_vec4: k.is_multiple_of(4),
            x_whole: scheme.padded_cols(k) == k,
            codes_vec4: matches!(scheme.format().bits(), 4 | 8),
            input: QmvInput::Plain,
            add_to_y: false,
            x_q8: false,
            norm_sums: false,
            q8_out: false,
            swiglu_out: false,
        }
    }

    /// Whether this variant can put silu(gate) * up of a stacked gate|up of `n` rows on int8
    /// grids ([`QmvVariant::swiglu_out`]): what [`QmvVariant::emits_q8`] asks, with the
    /// workgroups' halves whole blocks of 32 columns (so ff = n / 2 a multiple of them).
    pub fn emits_swiglu_q8(&self, n: usize) -> bool {
        self.rows_per_workgroup().is_multiple_of(64) && self.emits_q8(n)
    }

    /// Whether this variant can put the rows of y it adds to on int8 grids for the next
    /// product ([`QmvVariant::q8_out`]): its workgroups own whole blocks of 32 rows of W, `n`
    /// is a multiple of their rows, and subgroups (where on) are whole groups of 8 lanes, one
    /// block's.
    pub fn emits_q8(&self, n: usize) -> bool {
        let rows = self.rows_per_workgroup() as usize;
        let lanes = self.threads / self.teams.max(1);
        rows.is_multiple_of(32)
            && n.is_multiple_of(rows)
            && (!self.subgroups || lanes.is_multiple_of(8))
    }

    /// Whether x can be taken as int8 blocks for `scheme` ([`QmvVariant::x_q8`]): the integer
    /// formats whose rows are whole 16-byte chunks.
    pub fn takes_q8(scheme: Scheme) -> bool {
        use marlin_quant::Format;
        matches!(
            scheme.format(),
            Format::Int4 | Format::Int4Affine | Format::Int8
        )
    }

    /// Whether x is better taken as int8 blocks for a product of `n` x `k` weights in `scheme`
    /// ([`crate::MatmulPrecision::Mixed`]): for 4-bit integer codes, in matrices large enough
    /// that the faster products pay for quantize_x's dispatch. On the H100 (INT4 g128, m = 1,
    /// quantize_x included): 6144 x 4096 12.2 µs against 14.1 in f32, 28672 x 4096 32.5
    /// against 36.1, 4096 x 14336 22.6 against 26.3, but 4096 x 4096 11.1 against 10.3, and
    /// SmolLM2 (its layers' products all under 2^21 weights) decoded at 374 tokens/s against
    /// 436; INT8 8192 x 8192 35.5 µs against 32.7, a Llama-3.1-8B INT8 decode 164 against 183
    /// tokens/s. Up to 4 rows of x (`m`): at m = 8 the f32 kernel is faster (INT4 g32 8192 x 8192
    /// 92 µs against 126 with int8x2 x, session 9).
    pub fn prefers_q8(scheme: Scheme, m: usize, n: usize, k: usize) -> bool {
        const MIN_WEIGHTS: usize = 1 << 24;
        Self::takes_q8(scheme)
            && scheme.format().bits() == 4
            && m <= 4
            && n.saturating_mul(k) > MIN_WEIGHTS
    }

    /// Teams per workgroup.
    fn teams(&self) -> u32 {
        if self.subgroups {
            self.teams
        } else {
            self.threads / TK
        }
    }

    /// Rows of W per workgroup.
    pub fn rows_per_workgroup(&self) -> u32 {
        self.teams() * self.rps
    }

    /// Workgroups for `n` rows of W (laid out in 2D past 65535).
    pub fn groups(&self, n: u32) -> Option<[u32; 3]> {
        Some(super::grid(n.div_ceil(self.rows_per_workgroup()) as u64, 1))
    }

    /// Chunks of f32 x staged per step where codes are read 16 bytes at a time: as many as
    /// fit [`STAGE_BYTES`] for MT rows of x (each chunk padded by one vec4), at most 256.
    /// (Int8 x is not staged.)
    fn span(&self, scheme: SchemeConsts) -> u32 {
        let chunk_bytes = if scheme.bits() == 4 { 9 * 16 } else { 5 * 16 };
        static TUNED: OnceLock<Option<u32>> = OnceLock::new();
        let stage =
            super::tuned(&TUNED, "MARLIN_QMV_STAGE_KIB").map_or(self.stage_bytes, |k| k << 10);
        // What else the kernel keeps in workgroup memory: the norm's partial sums, the partial
        // sums of the reduction without subgroups, the E2M1 table.
        let others = 4 * self.threads * (1 + if self.subgroups { 0 } else { self.mt }) + 64;
        let stage = stage.min(self.workgroup_bytes.saturating_sub(others));
        let fit = stage / (self.mt * chunk_bytes);
        1 << fit.clamp(2, 256).ilog2()
    }

    pub fn key(&self, scheme: SchemeConsts) -> String {
        format!(
            "qmv.{}.mt{}.r{}.t{}.th{}.s{}{}{}{}{}{}{}{}{}{}{}",
            scheme.key(),
            self.mt,
            self.rps,
            self.teams(),
            self.threads,
            self.span(scheme),
            if self.subgroups { ".sg" } else { "" },
            if self.x_vec4 { ".xv4" } else { "" },
            if self.x_whole { ".xw" } else { "" },
            if self.codes_vec4 { ".cv4" } else { "" },
            match self.input {
                QmvInput::Plain => "",
                QmvInput::RmsNorm => ".norm",
                QmvInput::SwiGlu => ".swiglu",
            },
            if self.add_to_y { ".add" } else { "" },
            if self.x_q8 { ".q8" } else { "" },
            if self.norm_sums { ".nsum" } else { "" },
            if self.q8_out { ".q8out" } else { "" },
            if self.swiglu_out { ".swq8" } else { "" },
        )
    }

    pub fn source(&self, scheme: SchemeConsts) -> String {
        debug_assert!(
            !self.x_q8 || self.input == QmvInput::Plain,
            "int8 x is quantized with its norm or SwiGLU done: {self:?}"
        );
        let teams = self.teams();
        let consts = format!(
            "const MT: u32 = {}u;\nconst RPS: u32 = {}u;\nconst TEAMS: u32 = {teams}u;\n\
             const TK: u32 = {TK}u;\nconst T: u32 = {}u;\nconst SPAN: u32 = {}u;\n",
            self.mt,
            self.rps,
            self.threads,
            self.span(scheme),
        );
        let q8_out = (self.q8_out && self.add_to_y) || self.swiglu_out;
        let flags = [
            ("SUBGROUPS", self.subgroups),
            ("X_VEC4", self.x_vec4),
            ("X_WHOLE", self.x_whole),
            ("CODES_VEC4", self.codes_vec4),
            ("E2M1_TABLE", self.codes_vec4 && scheme.e2m1()),
            ("IN_NORM", self.input == QmvInput::RmsNorm),
            ("IN_SWIGLU", self.input == QmvInput::SwiGlu),
            ("ADD_TO_Y", self.add_to_y),
            ("X_Q8", self.x_q8 && self.codes_vec4),
            ("NORM_SUMS", self.norm_sums && self.x_q8 && self.codes_vec4),
            // Norms summed by a tree in workgroup memory; with subgroups NORM_SUMS has each
            // subgroup sum its own.
            (
                "ROW_NORMS",
                self.input == QmvInput::RmsNorm || (self.norm_sums && self.x_q8 && !self.subgroups),
            ),
            ("Q8_OUT", q8_out),
            ("SWIGLU_OUT", self.swiglu_out),
        ];
        let kernel = match q8_out {
            true => format!("{SOURCE}{SOURCE_Q8_OUT}"),
            false => SOURCE.to_string(),
        };
        quant_decode::assemble(&consts, scheme, &kernel, &flags)
    }
}

/// Every form of the kernel for one scheme, for the Metal translation test.
pub(crate) fn variants(scheme: Scheme) -> Vec<(String, String)> {
    let consts = SchemeConsts::of(scheme);
    let mut all = Vec::new();
    for mt in [1, 8] {
        for subgroups in [false, true] {
            for (x_vec4, x_whole) in [(false, false), (true, false), (true, true)] {
                let v = QmvVariant {
                    mt,
                    rps: 2,
                    teams: 4,
                    subgroups,
                    threads: T,
                    stage_bytes: STAGE_BYTES,
                    workgroup_bytes: 16 << 10,
                    x_vec4,
                    x_whole,
                    codes_vec4: matches!(scheme.format().bits(), 4 | 8),
                    input: QmvInput::Plain,
                    add_to_y: false,
                    x_q8: false,
                    norm_sums: false,
                    q8_out: false,
                    swiglu_out: false,
                };
                all.push((v.key(consts), v.source(consts)));
                if QmvVariant::takes_q8(scheme) {
                    let q8 = QmvVariant { x_q8: true, ..v };
                    all.push((q8.key(consts), q8.source(consts)));
                    // A decode layer's products with the next x made in their epilogue.
                    let chained = QmvVariant {
                        norm_sums: true,
                        add_to_y: true,
                        q8_out: true,
                        threads: 512,
                        teams: 16,
                        ..q8
                    };
                    all.push((chained.key(consts), chained.source(consts)));
                    // gate|up with silu(gate) * up put on the grids for down.
                    let swiglu = QmvVariant {
                        norm_sums: true,
                        swiglu_out: true,
                        threads: 512,
                        teams: 16,
                        rps: 4,
                        ..q8
                    };
                    all.push((swiglu.key(consts), swiglu.source(consts)));
                }
                for (input, add_to_y) in [(QmvInput::RmsNorm, false), (QmvInput::SwiGlu, true)] {
                    let fused = QmvVariant {
                        input,
                        add_to_y,
                        ..v
                    };
                    all.push((fused.key(consts), fused.source(consts)));
                }
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::qtest::{Plan, check, check_within};
    use marlin_quant::{Format, Group};

    /// Every format through qmv at m = 1, 3, 8 on this device's own variant.
    #[test]
    fn every_format_at_small_m() {
        let Some(gpu) = crate::test_gpu() else { return };
        for scheme in crate::kernels::qtest::schemes() {
            for (m, n, k) in [(1, 5, 67), (3, 67, 256), (8, 3, 96)] {
                check(
                    &gpu,
                    scheme,
                    (m, n, k),
                    Plan::Auto(crate::MatmulPrecision::F32),
                );
            }
        }
    }

    /// `Mixed` takes int8x2 x for the large 4-bit integer products of a Llama-3.1-8B decode of
    /// up to 4 rows and f32 x for the rest (the measurements at `QmvVariant::prefers_q8`).
    #[test]
    fn mixed_takes_int8_x_where_it_measured_faster() {
        let scheme = |f| Scheme::new(f, Group::Size(128)).unwrap();
        let (int4, affine) = (scheme(Format::Int4), scheme(Format::Int4Affine));
        for (n, k) in [(6144, 4096), (28672, 4096), (4096, 14336), (128256, 4096)] {
            assert!(QmvVariant::prefers_q8(int4, 1, n, k), "{n} x {k}");
            assert!(QmvVariant::prefers_q8(affine, 4, n, k), "{n} x {k}");
        }
        for (n, k) in [(4096, 4096), (960, 576), (3072, 576)] {
            assert!(!QmvVariant::prefers_q8(int4, 1, n, k), "{n} x {k}");
        }
        assert!(!QmvVariant::prefers_q8(int4, 8, 28672, 4096), "m = 8");
        for f in [
            Format::Int8,
            Format::Fp4,
            Format::Fp8,
            Format::Int3,
            Format::Int2,
        ] {
            assert!(!QmvVariant::prefers_q8(scheme(f), 1, 28672, 4096), "{f:?}");
        }
    }

    /// Per-output bound of int8x2 activations: the conformance suite's
    /// `TAIL * matmul_budget(_, Int8x2)` in marlin-testkit, 6 * (4e-6 + 1.25 * 2.07e-5).
    const INT8X2_TOL: f64 = 1.8e-4;

    /// The integer formats with x as int8 blocks at every group size, m = 1, 3, 8, odd K
    /// (padded blocks) included, and each team layout: within the int8x2 budget.
    #[test]
    fn int8_activations_for_the_integer_formats() {
        let Some(gpu) = crate::test_gpu() else { return };
        let caps = gpu.capabilities();
        let schemes = crate::kernels::qtest::schemes();
        for scheme in schemes.into_iter().filter(|&s| QmvVariant::takes_q8(s)) {
            for (m, n, k) in [(1, 5, 67), (3, 67, 256), (8, 3, 96), (1, 40, 1024)] {
                let plan = Plan::Auto(crate::MatmulPrecision::Int8x2);
                check_within(&gpu, scheme, (m, n, k), plan, INT8X2_TOL);
                if m != 3 {
                    continue;
                }
                let base = QmvVariant {
                    x_q8: true,
                    ..QmvVariant::new(&caps, scheme, (m, n, k))
                };
                for v in [
                    QmvVariant {
                        subgroups: false,
                        ..base
                    },
                    QmvVariant { rps: 1, ..base },
                    QmvVariant { rps: 8, ..base },
                ] {
                    check_within(&gpu, scheme, (m, n, k), Plan::Qmv(v), INT8X2_TOL);
                }
            }
        }
    }

    /// The workgroup-memory reduction, and subgroups covering more or fewer teams than the
    /// workgroup has (as when the subgroup size differs from the smallest one): every split
    /// of the work gives the same result.
    #[test]
    fn reductions_are_right_for_any_team_layout() {
        let Some(gpu) = crate::test_gpu() else { return };
        let caps = gpu.capabilities();
        let int4 = Scheme::new(Format::Int4Affine, Group::Size(32)).unwrap();
        for (m, n, k) in [(1, 67, 4097), (5, 33, 320), (2, 9, 512)] {
            let base = QmvVariant::new(&caps, int4, (m, n, k));
            let mut layouts = vec![
                QmvVariant {
                    subgroups: false,
                    ..base
                },
                // A word at a time, as the 2- and 3-bit formats read.
                QmvVariant {
                    codes_vec4: false,
                    ..base
                },
                // Clamped x loads where K would allow unclamped ones.
                QmvVariant {
                    x_whole: false,
                    ..base
                },
            ];
            // Workgroups of 128 and 256 threads.
            let other = if base.threads == T { 256 } else { T };
            layouts.push(QmvVariant {
                threads: other,
                teams: base.teams * other / base.threads,
                ..base
            });
            // Every number of rows of W per thread that MARLIN_QMV_RPS allows.
            for rps in [1, 2, 4, 8] {
                layouts.push(QmvVariant { rps, ..base });
            }
            if caps.subgroup {
                for teams in [1, 3, 64] {
                    layouts.push(QmvVariant { teams, ..base });
                }
            }
            for v in layouts {
                check(&gpu, int4, (m, n, k), Plan::Qmv(v));
            }
        }
    }
}
