//! Bit packing of one block of 32 codes into `4 * bits` bytes (see `docs/formats.md`).
//!
//! - 8 bits: byte `i` is code `i`.
//! - 4 bits: byte `j` (0..16) holds code `j` in its low nibble and code `j + 16` in its high
//!   nibble: the GGUF Q4_0/Q4_1 order, so those blocks copy over byte for byte.
//! - 2 bits: byte `j` (0..8) holds code `j + 8 i` in bits `2i..2i+2`: one shift and mask per
//!   quarter of the block yields 8 consecutive codes.
//! - 3 bits: the low two bits as in the 2-bit layout (8 bytes), then the high bits as a
//!   little-endian u32 whose bit `i` belongs to code `i` (4 bytes).

use crate::BLOCK;

/// Bytes of one packed block of 32 codes.
pub const fn block_bytes(bits: u32) -> usize {
    4 * bits as usize
}

/// Packs 32 codes (each below `2^bits`) into `out[..block_bytes(bits)]`.
pub fn pack_block(bits: u32, codes: &[u8; BLOCK], out: &mut [u8]) {
    let out = &mut out[..block_bytes(bits)];
    match bits {
        8 => out.copy_from_slice(codes),
        4 => {
            for j in 0..16 {
                out[j] = (codes[j] & 0xF) | (codes[j + 16] << 4);
            }
        }
        2 => pack_2bit(codes, out),
        3 => {
            pack_2bit(codes, &mut out[..8]);
            let high = (0..BLOCK).fold(0u32, |acc, i| acc | (((codes[i] >> 2) as u32 & 1) << i));
            out[8..12].copy_from_slice(&high.to_le_bytes());
        }
        _ => unreachable!("no format has {bits}-bit codes"),
    }
}

/// Unpacks `block_bytes(bits)` bytes into 32 codes.
pub fn unpack_block(bits: u32, packed: &[u8], codes: &mut [u8; BLOCK]) {
    match bits {
        8 => codes.copy_from_slice(&packed[..BLOCK]),
        4 => {
            for j in 0..16 {
                codes[j] = packed[j] & 0xF;
                codes[j + 16] = packed[j] >> 4;
            }
        }
        2 => unpack_2bit(packed, codes),
        3 => {
            unpack_2bit(packed, codes);
            let high = u32::from_le_bytes([packed[8], packed[9], packed[10], packed[11]]);
            for (i, c) in codes.iter_mut().enumerate() {
                *c |= (((high >> i) & 1) as u8) << 2;
            }
        }
        _ => unreachable!("no format has {bits}-bit codes"),
    }
}

fn pack_2bit(codes: &[u8; BLOCK], out: &mut [u8]) {
    for j in 0..8 {
        out[j] = (0..4).fold(0u8, |acc, i| acc | ((codes[j + 8 * i] & 3) << (2 * i)));
    }
}

fn unpack_2bit(packed: &[u8], codes: &mut [u8; BLOCK]) {
    for j in 0..8 {
        for i in 0..4 {
            codes[j + 8 * i] = (packed[j] >> (2 * i)) & 3;
        }
    }
}
