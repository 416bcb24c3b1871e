//! Dequantization of the ggml block types that none of our formats holds (Q5_0, Q5_1 and the
//! K-quants Q2_K..Q6_K), ported line for line from ggml's reference `dequantize_row_*`
//! (`ggml-quants.c`), keeping its order of float operations so results match bit for bit.
//! Plain float types are decoded here too.

use half::f16;
use rayon::prelude::*;

use super::types::GgmlType;

/// ggml's `QK_K`: values per K-quant super-block.
const QK_K: usize = 256;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Decodes whole blocks of `t` to f32; None for a type this module does not decode.
/// `data.len()` must be a multiple of the type's block bytes (a trailing partial block is
/// ignored).
pub fn dequantize(t: GgmlType, data: &[u8]) -> Option<Vec<f32>> {
    let block: fn(&[u8], &mut [f32]) = match t {
        GgmlType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, y| y[0] = f16_at(b, 0),
        // bf16 is the top half of an f32.
        GgmlType::BF16 => {
            |b, y| y[0] = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
        }
        GgmlType::F64 => {
            |b, y| y[0] = f64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])) as f32
        }
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q2_K => q2_k,
        GgmlType::Q3_K => q3_k,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q5_K => q5_k,
        GgmlType::Q6_K => q6_k,
        _ => return None,
    };
    // Block sizes are at most 292 bytes and 256 values: they fit in usize.
    let (bytes, len) = (t.block_bytes() as usize, t.block_len() as usize);
    let n_blocks = data.len() / bytes;
    let mut out = vec![0f32; n_blocks * len];
    // Plain types have one value per block: batch them so each task does real work.
    let per_task = (4096 / len).max(1);
    out.par_chunks_mut(len * per_task)
        .zip(data.par_chunks(bytes * per_task))
        .for_each(|(y, x)| {
            for (y, x) in y.chunks_exact_mut(len).zip(x.chunks_exact(bytes)) {
                block(x, y);
            }
        });
    Some(out)
}

/// `block_q5_0`: f16 d, u32 qh (the fifth bits), 16 bytes of nibbles; `y = (q - 16) * d`.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        // Bit j of qh is the fifth bit of value j, bit j + 16 that of value j + 16.
        let xh_0 = ((qh >> j) << 4) & 0x10;
        let xh_1 = (qh >> (j + 12)) & 0x10;
        let x0 = ((u32::from(qs[j]) & 0x0F) | xh_0) as i32 - 16;
        let x1 = ((u32::from(qs[j]) >> 4) | xh_1) as i32 - 16;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

/// `block_q5_1`: f16 d, f16 m, u32 qh, 16 bytes of nibbles; `y = q * d + m`.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let xh_0 = ((qh >> j) << 4) & 0x10;
        let xh_1 = (qh >> (j + 12)) & 0x10;
        let x0 = (u32::from(qs[j]) & 0x0F) | xh_0;
        let x1 = (u32::from(qs[j]) >> 4) | xh_1;
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

/// `block_q2_K`: scales[16] (low nibble scale, high nibble min, per 16 values), qs[64]
/// (2-bit codes), f16 d, f16 dmin; `y = d * sc * q - dmin * m`.
fn q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let d = f16_at(b, 80);
    let min = f16_at(b, 82);
    let mut y = y.iter_mut();
    let mut is = 0;
    for n in 0..QK_K / 128 {
        // Each 32 bytes of qs hold 128 values: 4 shifts x (16 + 16) bytes.
        let q = &b[16 + 32 * n..16 + 32 * n + 32];
        for shift in [0, 2, 4, 6] {
            for half in [0, 16] {
                let sc = scales[is];
                is += 1;
                let dl = d * f32::from(sc & 0xF);
                let ml = min * f32::from(sc >> 4);
                for l in 0..16 {
                    let code = ((q[l + half] >> shift) & 3) as i8;
                    if let Some(out) = y.next() {
                        *out = dl * f32::from(code) - ml;
                    }
                }
            }
        }
    }
}

/// The 16 6-bit scales of a Q3_K block, unpacked from 12 bytes as ggml does with its two
/// masks (`kmask1` picks the 2 high bits, `kmask2` the 4 low bits of each scale).
fn q3_k_scales(packed: &[u8]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let word =
        |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (a0, a1, tmp) = (word(0), word(4), word(8));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, a) in aux.iter().enumerate() {
        for (k, byte) in a.to_le_bytes().into_iter().enumerate() {
            out[4 * i + k] = byte as i8;
        }
    }
    out
}

/// `block_q3_K`: hmask[32] (the third bit), qs[64] (low 2 bits), scales[12] (16 6-bit
/// scales), f16 d; `y = d * (sc - 32) * (q - (high bit clear ? 4 : 0))`.
fn q3_k(b: &[u8], y: &mut [f32]) {
    let hm = &b[0..32];
    let scales = q3_k_scales(&b[96..108]);
    let d_all = f16_at(b, 108);
    let mut y = y.iter_mut();
    let mut is = 0;
    // One bit of hmask per (n, shift): it walks 1, 2, ..., 128 across both halves.
    let mut m: u8 = 1;
    for n in 0..QK_K / 128 {
        let q = &b[32 + 32 * n..32 + 32 * n + 32];
        for shift in [0, 2, 4, 6] {
            for half in [0, 16] {
                let dl = d_all * f32::from(i16::from(scales[is]) - 32);
                is += 1;
                for l in 0..16 {
                    let low = ((q[l + half] >> shift) & 3) as i8;
                    let high = if hm[l + half] & m != 0 { 0 } else { 4 };
                    if let Some(out) = y.next() {
                        *out = dl * f32::from(low - high);
                    }
                }
            }
            m = m.wrapping_shl(1);
        }
    }
}

/// ggml's `get_scale_min_k4`: scale and min `j` (0..8) of a Q4_K/Q5_K block, 6 bits each,
/// packed in 12 bytes (the first 4 of each in bytes 0..8, the other 4 split over bytes 8..12
/// and the top bits of bytes 0..8).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `block_q4_K`: f16 d, f16 dmin, scales[12], qs[128]; per 32 values
/// `y = d * sc * q - dmin * m`.
fn q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    for (chunk, y) in y.chunks_exact_mut(64).enumerate() {
        let q = &b[16 + 32 * chunk..16 + 32 * chunk + 32];
        let (sc, m) = scale_min_k4(2 * chunk, scales);
        let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
        let (sc, m) = scale_min_k4(2 * chunk + 1, scales);
        let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
        for l in 0..32 {
            y[l] = d1 * f32::from(q[l] & 0xF) - m1;
            y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// `block_q5_K`: f16 d, f16 dmin, scales[12], qh[32] (fifth bits), qs[128]; like Q4_K with
/// 16 added where the fifth bit is set.
fn q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    for (chunk, y) in y.chunks_exact_mut(64).enumerate() {
        let ql = &b[48 + 32 * chunk..48 + 32 * chunk + 32];
        // Chunk c's low nibbles use bit 2c of qh, its high nibbles bit 2c + 1.
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let (sc, m) = scale_min_k4(2 * chunk, scales);
        let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
        let (sc, m) = scale_min_k4(2 * chunk + 1, scales);
        let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * f32::from((ql[l] & 0xF) + h1) - m1;
            y[l + 32] = d2 * f32::from((ql[l] >> 4) + h2) - m2;
        }
    }
}

/// `block_q6_K`: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (i8, per 16
/// values), f16 d; `y = d * sc * (q - 32)`.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for (n, y) in y.chunks_exact_mut(128).enumerate() {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = |i: usize| f32::from(b[192 + 8 * n + i] as i8);
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            y[l] = d * sc(is) * f32::from(q1);
            y[l + 32] = d * sc(is + 2) * f32::from(q2);
            y[l + 64] = d * sc(is + 4) * f32::from(q3);
            y[l + 96] = d * sc(is + 6) * f32::from(q4);
        }
    }
}
