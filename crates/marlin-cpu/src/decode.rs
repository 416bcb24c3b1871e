//! Turning one packed row into what the kernels multiply with.
//!
//! Every format except FP8 is put on an unsigned integer grid: `w = gs * c + gb` per group, with
//! `c` a u8 code small enough for `u8 x i8` dot-product instructions. FP8 is not on an integer
//! grid and is decoded to f32.

use half::f16;
use half::slice::HalfFloatSliceExt;
use marlin_quant::codec::{e2m1_decode, e4m3_decode, e8m0_decode};
use marlin_quant::layout::block_bytes;
use marlin_quant::{BLOCK, Format, QuantMatrix, ScaleType};

use crate::Isa;
use crate::kernels;

/// The integer-grid code of each 4-bit code. INT4 codes are already on the grid; an E2M1 value
/// `v` becomes `2v + 12` (0..=24), because `2v` is an integer for every E2M1 value.
pub(crate) fn lut4(format: Format) -> [u8; 16] {
    match format {
        Format::Fp4 | Format::Mxfp4 | Format::Nvfp4 => {
            std::array::from_fn(|q| (2.0 * e2m1_decode(q as u8) + 12.0) as u8)
        }
        _ => std::array::from_fn(|q| q as u8),
    }
}

/// The value of one grid step relative to the stored scale: 1/2 for the FP4 formats (whose
/// grid codes are doubled E2M1 values), 1 otherwise. Kernels that read stored scales directly
/// fold it into the activations' scales.
pub(crate) fn grid_step(format: Format) -> f32 {
    match format {
        Format::Fp4 | Format::Mxfp4 | Format::Nvfp4 => 0.5,
        _ => 1.0,
    }
}

/// `z` when the format's grid value is `gs * (c + z)` (symmetric formats); `None` when each
/// group has a free bias (affine formats) or no grid (FP8).
pub(crate) fn grid_zero(format: Format) -> Option<i32> {
    match format {
        Format::Int4 => Some(-8),
        Format::Int8 => Some(-128),
        Format::Fp4 | Format::Mxfp4 | Format::Nvfp4 => Some(-12),
        Format::Int4Affine | Format::Int3 | Format::Int2 | Format::Fp8 => None,
    }
}

/// Whether the format has an integer grid (every format but FP8).
pub(crate) fn on_grid(format: Format) -> bool {
    format != Format::Fp8
}

/// Grid scale and bias per group of consecutive rows. Each row's groups are followed by 4
/// floats of padding so that kernels may load 128 bits at any group.
pub(crate) struct GroupScales {
    gs: Vec<f32>,
    gb: Vec<f32>,
    stride: usize,
}

impl GroupScales {
    /// The scales of rows `first..first + rows`.
    pub fn of_rows(w: &QuantMatrix<'_>, first: usize, rows: usize) -> Self {
        let stride = w.groups_per_row() + 4;
        let mut s = GroupScales {
            gs: vec![0.0; rows * stride],
            gb: vec![0.0; rows * stride],
            stride,
        };
        for i in 0..rows {
            let groups = w.groups_per_row();
            let (gs, gb) = (
                &mut s.gs[i * stride..i * stride + groups],
                &mut s.gb[i * stride..i * stride + groups],
            );
            grid_scales(w, first + i, gs, gb);
        }
        s
    }

    /// Scales and biases of the `i`-th row, with their padding.
    pub fn row(&self, i: usize) -> (&[f32], &[f32]) {
        let r = i * self.stride..(i + 1) * self.stride;
        (&self.gs[r.clone()], &self.gb[r])
    }
}

/// Grid scales and biases of row `row` (for FP8, just its scales) into `gs` and `gb`
/// (`groups_per_row` each).
fn grid_scales(w: &QuantMatrix<'_>, row: usize, gs: &mut [f32], gb: &mut [f32]) {
    let format = w.format();
    decode_scales(w, row, gs);
    match format {
        Format::Int4Affine | Format::Int3 | Format::Int2 => decode_biases(w, row, gb),
        Format::Fp4 | Format::Mxfp4 | Format::Nvfp4 => {
            gs.iter_mut().for_each(|s| *s *= grid_step(format));
        }
        Format::Int4 | Format::Int8 | Format::Fp8 => {}
    }
    if let Some(z) = grid_zero(format) {
        gs.iter()
            .zip(gb.iter_mut())
            .for_each(|(s, b)| *b = z as f32 * s);
    }
}

/// Grid codes of row `row` into `codes[..k_pad]`.
pub(crate) fn grid_codes(isa: Isa, w: &QuantMatrix<'_>, row: usize, codes: &mut [u8]) {
    let format = w.format();
    let packed = w.row_codes(row);
    match format.bits() {
        4 => kernels::decode_nibbles(isa, packed, &lut4(format), codes),
        // Offset binary: flipping the sign bit adds 128 to a two's-complement byte.
        8 => codes
            .iter_mut()
            .zip(packed)
            .for_each(|(c, &q)| *c = q ^ 0x80),
        2 => {
            for (p, c) in packed.chunks_exact(8).zip(codes.chunks_exact_mut(BLOCK)) {
                unpack_2bit_planes(p, c);
            }
        }
        3 => {
            for (p, c) in packed
                .chunks_exact(block_bytes(3))
                .zip(codes.chunks_exact_mut(BLOCK))
            {
                unpack_2bit_planes(&p[..8], c);
                // Bit i of the high word belongs to code i: spread each byte of it over 8 codes.
                for (byte, out) in p[8..12].iter().zip(c.chunks_exact_mut(8)) {
                    let high = u64::from_le_bytes(out.try_into().expect("8 codes"))
                        | SPREAD_BITS[*byte as usize] << 2;
                    out.copy_from_slice(&high.to_le_bytes());
                }
            }
        }
        bits => unreachable!("no format has {bits}-bit codes"),
    }
}

/// One 2-bit block (8 bytes) to 32 codes: byte j holds codes j + 8i in bits 2i..2i+2, so one
/// shift and mask of the 8 bytes as a u64 yields 8 consecutive codes.
fn unpack_2bit_planes(packed: &[u8], codes: &mut [u8]) {
    let v = u64::from_le_bytes(packed.try_into().expect("8 bytes"));
    for (i, out) in codes.chunks_exact_mut(8).enumerate() {
        out.copy_from_slice(&((v >> (2 * i)) & 0x0303_0303_0303_0303).to_le_bytes());
    }
}

/// Byte i of `SPREAD_BITS[b]` is bit i of `b`.
static SPREAD_BITS: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            table[b] |= (((b >> i) & 1) as u64) << (8 * i);
            i += 1;
        }
        b += 1;
    }
    table
};

/// Row `row` as f32 weights in `values[..k_pad]` (values past K are whatever the padding codes
/// mean; the activations there are zero), given its grid scales `gs`, `gb` (see
/// [`GroupScales::row`]). `codes` is scratch of k_pad bytes.
pub(crate) fn f32_row(
    isa: Isa,
    w: &QuantMatrix<'_>,
    row: usize,
    (gs, gb): (&[f32], &[f32]),
    codes: &mut [u8],
    values: &mut [f32],
) {
    let group_len = w.group_len();
    if !on_grid(w.format()) {
        kernels::decode_fp8(isa, w.row_codes(row), gs, group_len, values);
        return;
    }
    grid_codes(isa, w, row, codes);
    let groups = values
        .chunks_exact_mut(group_len)
        .zip(codes.chunks_exact(group_len));
    for (g, (vals, codes)) in groups.enumerate() {
        let (gs, gb) = (gs[g], gb[g]);
        vals.iter_mut()
            .zip(codes)
            .for_each(|(v, &c)| *v = gs * c as f32 + gb);
    }
}

/// E4M3 values of all 256 codes (NaN codes decode to NaN, as the specification says).
pub(crate) fn e4m3_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|c| e4m3_decode(c as u8)))
}

/// The scales of one row as f32 (NVFP4's global scale folded in).
fn decode_scales(w: &QuantMatrix<'_>, row: usize, out: &mut [f32]) {
    let groups = out.len();
    let kind = w.format().scale_type();
    let bytes = &w.scales()[row * groups * kind.bytes()..(row + 1) * groups * kind.bytes()];
    match kind {
        ScaleType::F16 => f16_to_f32(bytes, out),
        ScaleType::F32 => out
            .iter_mut()
            .zip(bytes.chunks_exact(4))
            .for_each(|(o, b)| {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }),
        ScaleType::E8M0 => out
            .iter_mut()
            .zip(bytes)
            .for_each(|(o, &e)| *o = e8m0_decode(e)),
        ScaleType::E4M3 => {
            let (table, global) = (e4m3_table(), w.global_scale());
            out.iter_mut()
                .zip(bytes)
                .for_each(|(o, &e)| *o = table[e as usize] * global);
        }
    }
}

fn decode_biases(w: &QuantMatrix<'_>, row: usize, out: &mut [f32]) {
    let groups = out.len();
    f16_to_f32(&w.biases()[row * groups * 2..(row + 1) * groups * 2], out);
}

/// Little-endian f16 bytes to f32, with F16C where the CPU has it (through `half`).
fn f16_to_f32(bytes: &[u8], out: &mut [f32]) {
    match bytemuck::try_cast_slice::<u8, f16>(bytes) {
        Ok(halves) if cfg!(target_endian = "little") => halves.convert_to_f32_slice(out),
        _ => out
            .iter_mut()
            .zip(bytes.chunks_exact(2))
            .for_each(|(o, b)| {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }),
    }
}
