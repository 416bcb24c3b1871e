//! GGUF Q4_0 / Q4_1 / Q8_0 and MLX affine blocks map onto our formats without loss: the same
//! bytes (or repacked nibbles for MLX) dequantize to the same values as those formats' own
//! reference code, transcribed below.

use std::borrow::Cow;

use half::f16;
use marlin_quant::{Format, Group, QuantMatrix, Scheme};
use proptest::prelude::*;

fn matrix(
    scheme: Scheme,
    rows: usize,
    cols: usize,
    codes: &[u8],
    scales: &[f16],
    biases: &[f16],
) -> QuantMatrix<'static> {
    let le = |v: &[f16]| -> Vec<u8> { v.iter().flat_map(|h| h.to_le_bytes()).collect() };
    QuantMatrix::from_parts(
        scheme,
        rows,
        cols,
        Cow::Owned(codes.to_vec()),
        Cow::Owned(le(scales)),
        Cow::Owned(le(biases)),
        1.0,
    )
    .unwrap()
}

/// ggml's `dequantize_row_q4_0`: `y[j] = (qs[j] & 15 - 8) * d`, `y[j + 16] = (qs[j] >> 4 - 8) * d`.
fn ggml_q4_0(d: f16, qs: &[u8; 16]) -> [f32; 32] {
    let mut y = [0f32; 32];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d.to_f32();
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d.to_f32();
    }
    y
}

/// ggml's `dequantize_row_q4_1`: `y = q * d + m` in the same nibble order.
fn ggml_q4_1(d: f16, m: f16, qs: &[u8; 16]) -> [f32; 32] {
    let mut y = [0f32; 32];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0F) as f32 * d.to_f32() + m.to_f32();
        y[j + 16] = (qs[j] >> 4) as f32 * d.to_f32() + m.to_f32();
    }
    y
}

/// ggml's `dequantize_row_q8_0`: `y[j] = qs[j] * d`, qs signed.
fn ggml_q8_0(d: f16, qs: &[u8; 32]) -> [f32; 32] {
    qs.map(|q| q as i8 as f32 * d.to_f32())
}

const G32: Group = Group::Size(32);

#[test]
fn int4_is_q4_0_on_a_hand_built_block() {
    // d = 0.5; weight 0 has code 0 (-8 * 0.5 = -4), weight 16 code 15 (7 * 0.5 = 3.5),
    // weight 1 code 8 (0), weight 17 code 9 (0.5).
    let mut qs = [0x88u8; 16];
    qs[0] = 0xF0;
    qs[1] = 0x98;
    let d = f16::from_f32(0.5);
    let w = matrix(
        Scheme::new(Format::Int4, G32).unwrap(),
        1,
        32,
        &qs,
        &[d],
        &[],
    );
    let y = w.dequantize();
    assert_eq!((y[0], y[16], y[1], y[17]), (-4.0, 3.5, 0.0, 0.5));
    assert_eq!(y, ggml_q4_0(d, &qs));
}

#[test]
fn int4_affine_is_q4_1_on_a_hand_built_block() {
    // d = 0.25, m = -1: code 0 -> -1, code 15 -> 2.75, code 4 -> 0.
    let mut qs = [0x44u8; 16];
    qs[3] = 0xF0;
    let (d, m) = (f16::from_f32(0.25), f16::from_f32(-1.0));
    let w = matrix(
        Scheme::new(Format::Int4Affine, G32).unwrap(),
        1,
        32,
        &qs,
        &[d],
        &[m],
    );
    let y = w.dequantize();
    assert_eq!((y[3], y[19], y[0]), (-1.0, 2.75, 0.0));
    assert_eq!(y, ggml_q4_1(d, m, &qs));
}

#[test]
fn int8_is_q8_0_on_a_hand_built_block() {
    // d = 0.125: byte 0x81 is -127 -> -15.875, 0x7F is 127 -> 15.875, 0xFF is -1.
    let mut qs = [0u8; 32];
    (qs[0], qs[1], qs[2], qs[31]) = (0x81, 0x7F, 0xFF, 0x02);
    let d = f16::from_f32(0.125);
    let w = matrix(
        Scheme::new(Format::Int8, G32).unwrap(),
        1,
        32,
        &qs,
        &[d],
        &[],
    );
    let y = w.dequantize();
    assert_eq!((y[0], y[1], y[2], y[31]), (-15.875, 15.875, -0.125, 0.25));
    assert_eq!(y, ggml_q8_0(d, &qs));
}

/// MLX affine 4-bit: 8 codes per little-endian u32, code `i` of a word in bits `4i..4i + 4`;
/// `w = scale * q + bias` per group. Our layout wants GGUF nibble order per 32-weight block.
fn mlx_to_ours(words: &[u32]) -> Vec<u8> {
    let codes: Vec<u8> = words
        .iter()
        .flat_map(|w| (0..8).map(move |i| ((w >> (4 * i)) & 0xF) as u8))
        .collect();
    codes
        .chunks_exact(32)
        .flat_map(|b| (0..16).map(move |j| b[j] | b[j + 16] << 4))
        .collect()
}

fn mlx_dequantize(words: &[u32], scales: &[f16], biases: &[f16], group: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        for k in 0..8 {
            let g = (i * 8 + k) / group;
            let q = ((w >> (4 * k)) & 0xF) as f32;
            out.push(scales[g].to_f32() * q + biases[g].to_f32());
        }
    }
    out
}

fn halves(seed: &[u16]) -> Vec<f16> {
    // Finite, normal f16 values from arbitrary bits: keep the sign and mantissa, pick a moderate
    // exponent.
    seed.iter()
        .map(|b| f16::from_bits((b & 0x83FF) | 0x2C00))
        .collect()
}

proptest! {
    #[test]
    fn q4_0_blocks_copy_over(blocks in prop::collection::vec((any::<u16>(), prop::array::uniform16(any::<u8>())), 1..5)) {
        let d = halves(&blocks.iter().map(|b| b.0).collect::<Vec<_>>());
        let qs: Vec<u8> = blocks.iter().flat_map(|b| b.1).collect();
        let w = matrix(Scheme::new(Format::Int4, G32).unwrap(), 1, 32 * blocks.len(), &qs, &d, &[]);
        let want: Vec<f32> = blocks.iter().zip(&d).flat_map(|(b, &d)| ggml_q4_0(d, &b.1)).collect();
        prop_assert_eq!(w.dequantize(), want);
    }

    #[test]
    fn q4_1_blocks_copy_over(blocks in prop::collection::vec((any::<u16>(), any::<u16>(), prop::array::uniform16(any::<u8>())), 1..5)) {
        let d = halves(&blocks.iter().map(|b| b.0).collect::<Vec<_>>());
        let m = halves(&blocks.iter().map(|b| b.1).collect::<Vec<_>>());
        let qs: Vec<u8> = blocks.iter().flat_map(|b| b.2).collect();
        let w = matrix(Scheme::new(Format::Int4Affine, G32).unwrap(), 1, 32 * blocks.len(), &qs, &d, &m);
        let want: Vec<f32> = blocks.iter().enumerate().flat_map(|(i, b)| ggml_q4_1(d[i], m[i], &b.2)).collect();
        prop_assert_eq!(w.dequantize(), want);
    }

    #[test]
    fn q8_0_blocks_copy_over(blocks in prop::collection::vec((any::<u16>(), prop::array::uniform32(any::<u8>())), 1..5)) {
        let d = halves(&blocks.iter().map(|b| b.0).collect::<Vec<_>>());
        let qs: Vec<u8> = blocks.iter().flat_map(|b| b.1).collect();
        let w = matrix(Scheme::new(Format::Int8, G32).unwrap(), 1, 32 * blocks.len(), &qs, &d, &[]);
        let want: Vec<f32> = blocks.iter().zip(&d).flat_map(|(b, &d)| ggml_q8_0(d, &b.1)).collect();
        prop_assert_eq!(w.dequantize(), want);
    }

    /// MLX 4-bit affine at group 32, 64 or 128 is int4-affine after repacking the nibbles.
    #[test]
    fn mlx_4bit_affine_repacks_without_loss(
        group in prop::sample::select(vec![32usize, 64, 128]),
        groups in 1usize..4,
        seed in any::<u64>(),
    ) {
        let cols = group * groups;
        let words: Vec<u32> = marlin_testkit::rng::codes(seed, cols / 2, 8)
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let bits: Vec<u16> = marlin_testkit::rng::codes(seed ^ 1, 4 * groups, 8)
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let (scales, biases) = (halves(&bits[..groups]), halves(&bits[groups..]));
        let scheme = Scheme::new(Format::Int4Affine, Group::Size(group as u32)).unwrap();
        let w = matrix(scheme, 1, cols, &mlx_to_ours(&words), &scales, &biases);
        prop_assert_eq!(w.dequantize(), mlx_dequantize(&words, &scales, &biases, group));
    }
}
