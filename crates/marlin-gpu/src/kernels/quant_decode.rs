//! What the quantized matmul kernels share (quant_decode.wgsl): their launch parameters, the
//! decoding of every format's codes and scales, and the assembly of a kernel's source.
//!
//! A kernel's source is, in order: a header of `const` declarations for one scheme and one
//! variant of the kernel (tile sizes, rows of x...), quant_decode.wgsl, then the kernel's own
//! file with its `//#if NAME` / `//#else` / `//#endif` sections kept or dropped. Constants
//! rather than uniforms let the driver fold every format test and unroll every loop over a
//! tile; the sections exist because a shader that merely names a subgroup builtin cannot be
//! created on a device without subgroups. Each assembled source is compiled once per device
//! (`Gpu::pipeline_with`) under a key that names all of it.

use bytemuck::{Pod, Zeroable};
use marlin_quant::{Format, Group, ScaleType, Scheme};

pub const SOURCE: &str = include_str!("quant_decode.wgsl");

/// Mirrors `Params` in quant_decode.wgsl (used by qmv.wgsl and qmm.wgsl).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct QuantParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub blocks: u32,
    pub groups: u32,
    pub group_shift: u32,
    pub y_stride: u32,
    pub row0: u32,
    pub global_scale: f32,
    /// Blocks of K per split of a split-K product (qmm_coop's workgroups along z each take
    /// one split and write their own slab of y); `blocks` where K is not split.
    pub split_blocks: u32,
    /// Elements from one row of x to the next: K, or 2K for a fused gate|up input (qmv).
    pub x_stride: u32,
    /// The RMSNorm's epsilon where qmv norms its input.
    pub eps: f32,
}

/// The constants of one scheme that quant_decode.wgsl reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SchemeConsts {
    format: u32,
    bits: u32,
    scale_kind: u32,
    has_bias: bool,
    /// Group 16: a 32-weight block holds two groups.
    split16: bool,
}

impl SchemeConsts {
    pub fn of(scheme: Scheme) -> Self {
        let format = scheme.format();
        SchemeConsts {
            // The FMT_* numbering of quant_decode.wgsl.
            format: match format {
                Format::Fp4 => 0,
                Format::Mxfp4 => 1,
                Format::Nvfp4 => 2,
                Format::Int4 => 3,
                Format::Int4Affine => 4,
                Format::Int8 => 5,
                Format::Fp8 => 6,
                Format::Int3 => 7,
                Format::Int2 => 8,
            },
            bits: format.bits(),
            scale_kind: match format.scale_type() {
                ScaleType::F16 => 0,
                ScaleType::F32 => 1,
                ScaleType::E8M0 => 2,
                ScaleType::E4M3 => 3,
            },
            has_bias: format.has_bias(),
            split16: scheme.group() == Group::Size(16),
        }
    }

    /// Bits per code.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// FP4, MXFP4 or NVFP4: codes on the E2M1 grid.
    pub fn e2m1(&self) -> bool {
        self.format <= 2
    }

    /// INT4, INT4 affine or INT8: codes decoded without a table (`MAGIC_CODES` in
    /// quant_decode.wgsl).
    pub fn magic_codes(&self) -> bool {
        matches!(self.format, 3..=5)
    }

    /// Names the scheme in a pipeline key: `f3.s0` is INT4 with f16 scales, `.g16` group 16.
    pub fn key(&self) -> String {
        let split = if self.split16 { ".g16" } else { "" };
        format!("f{}.s{}{split}", self.format, self.scale_kind)
    }

    fn header(&self) -> String {
        format!(
            "const FORMAT: u32 = {}u;\nconst BITS: u32 = {}u;\nconst SCALE_KIND: u32 = {}u;\n\
             const HAS_BIAS: bool = {};\nconst SPLIT16: bool = {};\n",
            self.format, self.bits, self.scale_kind, self.has_bias, self.split16
        )
    }
}

/// The launch parameters of `scheme` for `m` rows of x (K = `k`) against the `n` rows of W
/// starting at `row0`, in a product whose y has `y_stride` columns.
pub(crate) fn params(
    scheme: Scheme,
    (m, n, k): (usize, usize, usize),
    row0: usize,
    y_stride: usize,
    global_scale: f32,
) -> QuantParams {
    let padded = scheme.padded_cols(k);
    let blocks = padded / marlin_quant::BLOCK;
    let group_shift = match scheme.group() {
        // Blocks per group is a power of two (group 32, 64, 128); group 16 uses SPLIT16.
        Group::Size(g) => (g as usize / marlin_quant::BLOCK).max(1).trailing_zeros(),
        // One group per row: any block shifted right by 31 is block 0's group.
        Group::PerChannel => 31,
    };
    QuantParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        blocks: blocks as u32,
        groups: scheme.groups_per_row(k) as u32,
        group_shift,
        y_stride: y_stride as u32,
        row0: row0 as u32,
        global_scale,
        split_blocks: blocks as u32,
        x_stride: k as u32,
        eps: 0.0,
    }
}

/// A kernel's full source: `consts` (its own header lines), the scheme's constants, the shared
/// snippet, then `kernel` with its `//#if` sections resolved by `flags`.
pub(crate) fn assemble(
    consts: &str,
    scheme: SchemeConsts,
    kernel: &str,
    flags: &[(&str, bool)],
) -> String {
    let mut out = String::with_capacity(consts.len() + SOURCE.len() + kernel.len() + 256);
    out.push_str(consts);
    out.push_str(&scheme.header());
    out.push_str(&preprocess(SOURCE, flags));
    out.push_str(&preprocess(kernel, flags));
    out
}

/// Keeps the lines of `//#if NAME` sections whose NAME is set in `flags` (and of their
/// `//#else` otherwise); a name missing from `flags` counts as unset. Sections may nest.
pub(crate) fn preprocess(source: &str, flags: &[(&str, bool)]) -> String {
    let set = |name: &str| flags.iter().any(|&(f, on)| f == name && on);
    // One entry per open section: whether its current branch is kept.
    let mut keep: Vec<bool> = Vec::new();
    let mut out = String::with_capacity(source.len());
    for line in source.lines() {
        let directive = line.trim_start();
        if let Some(name) = directive.strip_prefix("//#if ") {
            let outer = keep.last().copied().unwrap_or(true);
            keep.push(outer && set(name.trim()));
        } else if directive.starts_with("//#else") {
            let outer = keep.len() < 2 || keep[keep.len() - 2];
            if let Some(k) = keep.last_mut() {
                *k = outer && !*k;
            }
        } else if directive.starts_with("//#endif") {
            keep.pop();
        } else if keep.last().copied().unwrap_or(true) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::qmm::QmmVariant;
    use crate::kernels::qmv::QmvVariant;
    use crate::kernels::qtest::Plan;
    use marlin_quant::QuantMatrix;
    use marlin_quant::layout::pack_block;

    /// Packs `codes` (row-major, n x 32, each below 2^bits) into one block per row.
    fn pack(bits: u32, codes: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; codes.len() / 32 * 4 * bits as usize];
        for (row, chunk) in codes
            .chunks_exact(32)
            .zip(out.chunks_exact_mut(4 * bits as usize))
        {
            pack_block(bits, row.try_into().unwrap(), chunk);
        }
        out
    }

    /// Matrices of edge codes, each n x 32: subnormal f16 scales and biases, every E4M3 code
    /// (NaN included), E4M3 subnormal and negative block scales, E8M0 scales with NaN, INT8 -128.
    fn edge_matrices() -> Vec<QuantMatrix<'static>> {
        let f16s = |h: &[u16]| h.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        let s = |f: Format, g: u32| Scheme::new(f, Group::Size(g)).unwrap();
        let nibbles: Vec<u8> = (0..4 * 32).map(|i| (i * 7 % 16) as u8).collect();
        let parts = [
            // Every E4M3 code: rows 3 and 7 hold 0x7F and 0xFF (NaN).
            (
                s(Format::Fp8, 32),
                8,
                (0..=255).collect(),
                f32s(&[1.0, -0.25, 3.0, 1.0, 0.5, 2.0, 1e-3, 1.0]),
                vec![],
                1.0,
            ),
            (
                s(Format::Int8, 32),
                2,
                (0..64).map(|i| (i * 8 + 1) as u8).collect(),
                f16s(&[0x0001, 0x83ff]),
                vec![],
                1.0,
            ),
            (
                s(Format::Mxfp4, 32),
                4,
                pack(4, &nibbles),
                vec![0x7f, 0x80, 0x70, 0xff],
                vec![],
                1.0,
            ),
            (
                s(Format::Nvfp4, 16),
                4,
                pack(4, &nibbles),
                vec![0x01, 0x07, 0x08, 0x7e, 0xb8, 0x38, 0x7f, 0x00],
                vec![],
                0.5,
            ),
            (
                s(Format::Fp4, 16),
                4,
                pack(4, &nibbles),
                f16s(&[0x0001, 0x8200, 0x3c00, 0x7bff, 0x0400, 0x03ff, 0, 1]),
                vec![],
                1.0,
            ),
            (
                s(Format::Int4Affine, 32),
                4,
                pack(4, &nibbles),
                f16s(&[0x0001, 0x3c00, 0x8001, 0x2e66]),
                f16s(&[0x8001, 0x03ff, 0xbc00, 0]),
                1.0,
            ),
        ];
        parts
            .into_iter()
            .map(|(scheme, n, codes, scales, biases, g)| {
                QuantMatrix::from_vecs(scheme, (n, 32), codes, scales, biases, g).unwrap()
            })
            .collect()
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    /// With x the rows of the identity, y is W transposed as the GPU decodes it: it must be what
    /// the scalar spec decodes, NaN for NaN (a NaN weight makes its whole row of W NaN, since
    /// 0 x NaN is NaN).
    #[test]
    fn edge_codes_decode_as_the_spec() {
        let Some(gpu) = crate::test_gpu() else { return };
        let caps = gpu.capabilities();
        for w in edge_matrices() {
            let (n, k) = (w.rows(), w.cols());
            let deq = w.dequantize();
            let gw = gpu.upload_quant(&w).unwrap();
            // Columns c0.. of W through qmv (8 at a time) and all 32 through qmm.
            let runs = (0..k).step_by(8).map(|c0| {
                (
                    c0,
                    8,
                    Plan::Qmv(QmvVariant::new(&caps, w.scheme(), (8, n, k))),
                )
            });
            for (c0, m, plan) in runs.chain([(0, k, Plan::Qmm(QmmVariant::new(k)))]) {
                let mut x = vec![0f32; m * k];
                (0..m).for_each(|i| x[i * k + c0 + i] = 1.0);
                let (xb, yb) = (gpu.upload_f32("x", &x), gpu.zeros("y", (m * n * 4) as u64));
                gpu.quant_matmul_with(&xb, m, &gw, &yb, plan).unwrap();
                let y = gpu.read_f32(&yb).unwrap();
                for (i, r) in (0..m).flat_map(|i| (0..n).map(move |r| (i, r))) {
                    let row = &deq[r * k..(r + 1) * k];
                    let want = if row.iter().any(|v| v.is_nan()) {
                        f32::NAN
                    } else {
                        row[c0 + i]
                    };
                    let got = y[i * n + r];
                    let same =
                        (want.is_nan() && got.is_nan()) || (got - want).abs() <= want.abs() * 1e-6;
                    assert!(
                        same,
                        "{} row {r} col {}: {got} but the spec says {want} ({plan:?})",
                        w.scheme(),
                        c0 + i
                    );
                }
            }
        }
    }

    #[test]
    fn preprocess_keeps_the_branch_of_each_flag() {
        let src = "a\n//#if X\nb\n//#if Y\nc\n//#else\nd\n//#endif\n//#else\ne\n//#endif\nf\n";
        assert_eq!(preprocess(src, &[("X", true), ("Y", true)]), "a\nb\nc\nf\n");
        assert_eq!(preprocess(src, &[("X", true)]), "a\nb\nd\nf\n");
        assert_eq!(preprocess(src, &[("Y", true)]), "a\ne\nf\n");
    }

    #[test]
    fn group_shift_maps_blocks_to_groups() {
        let int4 = |g| Scheme::new(Format::Int4, Group::Size(g)).unwrap();
        let shift = |s| params(s, (1, 1, 4097), 0, 1, 1.0).group_shift;
        assert_eq!(shift(int4(32)), 0);
        assert_eq!(shift(int4(64)), 1);
        assert_eq!(shift(int4(128)), 2);
        let fp8 = Scheme::new(Format::Fp8, Group::PerChannel).unwrap();
        assert_eq!(params(fp8, (1, 1, 4097), 0, 1, 1.0).groups, 1);
        assert_eq!(params(int4(16), (1, 1, 67), 0, 1, 1.0).groups, 6);
    }
}
