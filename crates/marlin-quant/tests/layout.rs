//! Packing: `unpack ∘ pack` is the identity on codes, `pack ∘ unpack` on bytes, for every width,
//! and each width puts each weight where `docs/formats.md` says.

use marlin_quant::BLOCK;
use marlin_quant::layout::{block_bytes, pack_block, unpack_block};
use proptest::prelude::*;

const WIDTHS: [u32; 4] = [2, 3, 4, 8];

proptest! {
    #[test]
    fn unpack_inverts_pack(bits in prop::sample::select(WIDTHS.to_vec()), seed: u64) {
        let codes: [u8; BLOCK] = marlin_testkit::rng::codes(seed, BLOCK, bits).try_into().unwrap();
        // Bytes past the block must stay untouched: packing writes exactly block_bytes.
        let mut packed = vec![0xA5u8; block_bytes(bits) + 3];
        pack_block(bits, &codes, &mut packed);
        prop_assert_eq!(&packed[block_bytes(bits)..], &[0xA5u8; 3][..]);
        let mut back = [0u8; BLOCK];
        unpack_block(bits, &packed, &mut back);
        prop_assert_eq!(back, codes);
    }

    #[test]
    fn unpack_inverts_pack_on_proptest_codes(
        bits in prop::sample::select(WIDTHS.to_vec()),
        raw in prop::array::uniform32(any::<u8>()),
    ) {
        let codes = raw.map(|c| (c as u32 & ((1 << bits) - 1)) as u8);
        let mut packed = vec![0u8; block_bytes(bits)];
        pack_block(bits, &codes, &mut packed);
        let mut back = [0u8; BLOCK];
        unpack_block(bits, &packed, &mut back);
        prop_assert_eq!(back, codes);
    }

    /// Every byte pattern is a valid block (32 x bits = 8 x block_bytes), so packing is a
    /// bijection and the other composition is the identity too.
    #[test]
    fn pack_inverts_unpack(bits in prop::sample::select(WIDTHS.to_vec()), bytes in prop::array::uniform32(any::<u8>())) {
        let packed = &bytes[..block_bytes(bits)];
        let mut codes = [0u8; BLOCK];
        unpack_block(bits, packed, &mut codes);
        prop_assert!(codes.iter().all(|&c| (c as u32) < 1 << bits));
        let mut again = vec![0u8; block_bytes(bits)];
        pack_block(bits, &codes, &mut again);
        prop_assert_eq!(&again[..], packed);
    }
}

/// The code of weight `i` alone set to all ones: which bits of which bytes light up.
fn lit(bits: u32, i: usize) -> Vec<u8> {
    let mut codes = [0u8; BLOCK];
    codes[i] = ((1u16 << bits) - 1) as u8;
    let mut packed = vec![0u8; block_bytes(bits)];
    pack_block(bits, &codes, &mut packed);
    packed
}

fn only(len: usize, at: &[(usize, u8)]) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for &(i, b) in at {
        v[i] = b;
    }
    v
}

#[test]
fn block_sizes() {
    assert_eq!(WIDTHS.map(block_bytes), [8, 12, 16, 32]);
}

#[test]
fn eight_bit_byte_i_is_weight_i() {
    for i in 0..BLOCK {
        assert_eq!(lit(8, i), only(32, &[(i, 0xFF)]));
    }
}

#[test]
fn four_bit_is_gguf_nibble_order() {
    for j in 0..16 {
        assert_eq!(
            lit(4, j),
            only(16, &[(j, 0x0F)]),
            "weight {j}: low nibble of byte {j}"
        );
        assert_eq!(
            lit(4, j + 16),
            only(16, &[(j, 0xF0)]),
            "weight {}: high nibble",
            j + 16
        );
    }
}

#[test]
fn two_bit_byte_j_holds_weights_j_plus_8i() {
    for i in 0..4 {
        for j in 0..8 {
            assert_eq!(
                lit(2, j + 8 * i),
                only(8, &[(j, 3 << (2 * i))]),
                "weight {}",
                j + 8 * i
            );
        }
    }
}

#[test]
fn three_bit_is_two_bit_planes_then_a_high_bit_word() {
    for i in 0..4 {
        for j in 0..8 {
            let w = j + 8 * i;
            let high = (1u32 << w).to_le_bytes();
            let mut want = only(12, &[(j, 3 << (2 * i))]);
            want[8..].copy_from_slice(&high);
            assert_eq!(lit(3, w), want, "weight {w}");
        }
    }
}
