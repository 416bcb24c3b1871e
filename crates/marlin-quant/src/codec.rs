//! Scalar codecs of the small float types: FP4 E2M1, FP8 E4M3 and the E8M0 scale.
//! Encoders round to nearest, ties to even, and saturate at the largest finite value.

/// E2M1 magnitudes of codes 0..8; bit 3 is the sign.
pub const E2M1_VALUES: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
pub const E2M1_MAX: f32 = 6.0;
pub const E4M3_MAX: f32 = 448.0;

pub fn e2m1_decode(code: u8) -> f32 {
    let v = E2M1_VALUES[(code & 7) as usize];
    if code & 8 != 0 { -v } else { v }
}

/// Nearest E2M1 code; ties go to the even code (even mantissa bit).
pub fn e2m1_encode(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 8 } else { 0 };
    sign | nearest(&E2M1_VALUES, x.abs()) as u8
}

pub fn e4m3_decode(code: u8) -> f32 {
    let exp = (code >> 3) & 0xF;
    let man = (code & 7) as f32;
    let v = match exp {
        // 0x7F and 0xFF are the only NaNs of E4M3 (no infinities).
        15 if code & 7 == 7 => f32::NAN,
        0 => man / 8.0 * 2f32.powi(-6),
        e => (1.0 + man / 8.0) * 2f32.powi(e as i32 - 7),
    };
    if code & 0x80 != 0 { -v } else { v }
}

/// Nearest E4M3 code, saturating at ±448; NaN encodes as 0x7F.
pub fn e4m3_encode(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7F;
    }
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    sign | nearest(e4m3_magnitudes(), x.abs()) as u8
}

/// The 127 finite non-negative E4M3 values, indexed by code.
fn e4m3_magnitudes() -> &'static [f32; 127] {
    static TABLE: std::sync::OnceLock<[f32; 127]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|c| e4m3_decode(c as u8)))
}

/// `2^(e - 127)`; e = 255 is NaN.
pub fn e8m0_decode(e: u8) -> f32 {
    if e == 255 {
        f32::NAN
    } else {
        2f32.powi(e as i32 - 127)
    }
}

/// Index of the entry of the ascending `table` nearest to `a >= 0`; ties to the even index,
/// values past the end saturate to the last entry.
fn nearest(table: &[f32], a: f32) -> usize {
    let hi = table.partition_point(|&v| v < a);
    if hi == 0 {
        return 0;
    }
    if hi == table.len() {
        return table.len() - 1;
    }
    let (dlo, dhi) = (a - table[hi - 1], table[hi] - a);
    if dlo < dhi || (dlo == dhi && (hi - 1) % 2 == 0) {
        hi - 1
    } else {
        hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_known_values() {
        assert_eq!(e4m3_decode(0x7E), 448.0);
        assert_eq!(e4m3_decode(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_decode(0x38), 1.0);
        assert!(e4m3_decode(0x7F).is_nan());
        assert_eq!(e4m3_encode(1000.0), 0x7E);
        assert_eq!(e4m3_encode(-1.0), 0xB8);
        // 1.0625 lies halfway between 1.0 (code 0x38) and 1.125 (0x39): ties to even.
        assert_eq!(e4m3_encode(1.0625), 0x38);
    }

    #[test]
    fn e4m3_round_trips_every_finite_code() {
        for c in 0..=255u8 {
            if c & 0x7F == 0x7F {
                continue;
            }
            assert_eq!(
                e4m3_encode(e4m3_decode(c)).to_ne_bytes(),
                c.to_ne_bytes(),
                "code {c:#x}"
            );
        }
    }

    #[test]
    fn e2m1_rounding() {
        assert_eq!(e2m1_encode(0.25), 0); // tie between 0 and 0.5 goes to even code 0
        assert_eq!(e2m1_encode(2.5), 4); // tie between 2 (code 4) and 3 (code 5)
        assert_eq!(e2m1_encode(-5.1), 8 | 7);
        assert_eq!(e2m1_encode(100.0), 7);
        for c in 0..16u8 {
            assert_eq!(e2m1_decode(e2m1_encode(e2m1_decode(c))), e2m1_decode(c));
        }
    }
}
