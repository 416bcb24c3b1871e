//! GGUF tensors as weights: float types decode exactly; Q4_0/Q4_1/Q8_0 become INT4 /
//! INT4-affine / INT8 matrices bit for bit (checked against a transcription of ggml's
//! reference dequantization); Q5_0, Q5_1 and the K-quants dequantize as ggml does (checked on
//! blocks packed here from known values, and against gguf-py on random blocks).

mod gguf_writer;

use gguf_writer::{Rng, Val, Writer, bf16s, f16s, random_blocks, ty};
use half::f16;
use marlin_models::gguf::{GgmlType, GgufFile, dequantize};
use marlin_models::{ModelError, Weight};
use marlin_quant::Format;

fn one_tensor(dims: &[u64], t: u32, data: Vec<u8>) -> GgufFile {
    let w = Writer::default()
        .kv("general.name", Val::str("t"))
        .tensor("w", dims, t, data);
    GgufFile::from_bytes("t.gguf", w.build()).unwrap()
}

fn dense(dims: &[u64], t: u32, data: Vec<u8>) -> (Vec<usize>, Vec<f32>) {
    match one_tensor(dims, t, data).weight("w").unwrap() {
        Weight::Dense(d) => (d.shape, d.data),
        _ => panic!("expected a dense tensor"),
    }
}

#[test]
fn float_types_decode_exactly() {
    let values = [0.0, -1.5, 3.25, 65504.0, -0.0, 6.1035156e-5, 1e-7, 2.0];
    let f32_bytes = values.iter().flat_map(|v: &f32| v.to_le_bytes()).collect();
    assert_eq!(
        dense(&[4, 2], ty::F32, f32_bytes),
        (vec![2, 4], values.to_vec())
    );
    let f16_values: Vec<f32> = values.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    assert_eq!(dense(&[8], ty::F16, f16s(&values)).1, f16_values);
    assert_eq!(f16_values[7], 2.0);
    let bf16_values: Vec<f32> = values
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect();
    assert_eq!(
        dense(&[2, 2, 2], ty::BF16, bf16s(&values)),
        (vec![2, 2, 2], bf16_values)
    );
    let f64_bytes = [1.0f64, -2.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(dense(&[2], ty::F64, f64_bytes).1, vec![1.0, -2.5]);
}

/// ggml's `dequantize_row_q4_0`, `_q4_1`, `_q8_0` for one block (transcribed from
/// ggml-quants.c, as in marlin-quant's compat tests).
fn ggml_reference(t: u32, b: &[u8]) -> Vec<f32> {
    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut y = vec![0f32; 32];
    match t {
        ty::Q4_0 => {
            for j in 0..16 {
                y[j] = ((b[2 + j] & 0x0F) as i32 - 8) as f32 * d;
                y[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        ty::Q4_1 => {
            let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
            for j in 0..16 {
                y[j] = (b[4 + j] & 0x0F) as f32 * d + m;
                y[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
            }
        }
        ty::Q8_0 => {
            for j in 0..32 {
                y[j] = b[2 + j] as i8 as f32 * d;
            }
        }
        _ => unreachable!(),
    }
    y
}

#[test]
fn q4_0_q4_1_q8_0_map_without_loss() {
    let mut rng = Rng::new(1);
    for (t, format, head) in [
        (ty::Q4_0, Format::Int4, 2),
        (ty::Q4_1, Format::Int4Affine, 4),
        (ty::Q8_0, Format::Int8, 2),
    ] {
        let (rows, cols) = (5, 96);
        let block_bytes = gguf_writer::block(t).1;
        let data = random_blocks(t, rows * cols / 32, &mut rng);
        let w = one_tensor(&[cols as u64, rows as u64], t, data.clone());
        let Weight::Quant(q) = w.weight("w").unwrap() else {
            panic!("expected a quantized matrix")
        };
        assert_eq!(
            (q.format(), q.rows(), q.cols(), q.group_len()),
            (format, rows, cols, 32)
        );
        let blocks: Vec<&[u8]> = data.chunks(block_bytes).collect();
        // d, m and the codes are copied byte for byte.
        let d: Vec<u8> = blocks.iter().flat_map(|b| b[0..2].to_vec()).collect();
        let m: Vec<u8> = blocks.iter().flat_map(|b| b[2..head].to_vec()).collect();
        let codes: Vec<u8> = blocks.iter().flat_map(|b| b[head..].to_vec()).collect();
        assert_eq!(
            (q.scales(), q.biases(), q.codes()),
            (&d[..], &m[..], &codes[..])
        );
        let reference: Vec<f32> = blocks.iter().flat_map(|b| ggml_reference(t, b)).collect();
        assert_eq!(q.dequantize(), reference, "type {t}");
    }
}

#[test]
fn special_scales_are_copied_bit_for_bit() {
    // Subnormal, -0, the largest f16, infinity, NaN: never rounded or canonicalised.
    let specials = [0x0001u16, 0x8000, 0x7bff, 0x7c00, 0x7e01, 0xfbff];
    let mut data = Vec::new();
    for &s in &specials {
        data.extend(s.to_le_bytes());
        data.extend([0x5au8; 32]);
    }
    let w = one_tensor(&[32, 6], ty::Q8_0, data);
    let Ok(Weight::Quant(q)) = w.weight("w") else {
        panic!("expected a quantized matrix")
    };
    let scales: Vec<u16> = q
        .scales()
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(scales, specials);
}

/// Packs K-quant and Q5 blocks from their logical contents, following the block layouts of
/// ggml-common.h, so the tests can state what each value must be.
mod pack {
    pub fn half(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_le_bytes()
    }

    /// Q2_K: value i = d * sc[i/16] * q[i] - dmin * m[i/16], q in 0..4.
    pub fn q2_k(d: f32, dmin: f32, sc: &[u8; 16], m: &[u8; 16], q: &[u8; 256]) -> Vec<u8> {
        let mut b = vec![0u8; 84];
        for j in 0..16 {
            b[j] = sc[j] | (m[j] << 4);
        }
        for (i, &v) in q.iter().enumerate() {
            let (n, r) = (i / 128, i % 128);
            let (shift, l) = (2 * (r / 32), 32 * n + r % 32);
            b[16 + l] |= v << shift;
        }
        b[80..82].copy_from_slice(&half(d));
        b[82..84].copy_from_slice(&half(dmin));
        b
    }

    /// Q3_K: value i = d * (s[i/16] - 32) * (u[i] - 4), s 6-bit, u 3-bit.
    pub fn q3_k(d: f32, s: &[u8; 16], u: &[u8; 256]) -> Vec<u8> {
        let mut b = vec![0u8; 110];
        for (i, &v) in u.iter().enumerate() {
            let (n, r) = (i / 128, i % 128);
            let (step, l) = (r / 32, r % 32);
            b[32 + 32 * n + l] |= (v & 3) << (2 * step);
            b[l] |= (v >> 2) << (4 * n + step);
        }
        for (k, &v) in s.iter().enumerate() {
            let (g, p) = (k / 4, k % 4);
            let (lo, hi) = (v & 0xF, v >> 4);
            let sc = &mut b[96..108];
            match g {
                0 => (sc[p] |= lo, sc[8 + p] |= hi),
                1 => (sc[4 + p] |= lo, sc[8 + p] |= hi << 2),
                2 => (sc[p] |= lo << 4, sc[8 + p] |= hi << 4),
                _ => (sc[4 + p] |= lo << 4, sc[8 + p] |= hi << 6),
            };
        }
        b[108..110].copy_from_slice(&half(d));
        b
    }

    /// The 12 scale bytes of Q4_K/Q5_K: 8 6-bit scales and 8 6-bit mins.
    fn scales_k4(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
        let mut b = [0u8; 12];
        for j in 0..4 {
            b[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            b[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            b[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
        }
        b
    }

    /// Q4_K: value i = d * sc[i/32] * q[i] - dmin * m[i/32]; Q5_K when `q` has 5 bits.
    pub fn q45_k(
        five: bool,
        d: f32,
        dmin: f32,
        sc: &[u8; 8],
        m: &[u8; 8],
        q: &[u8; 256],
    ) -> Vec<u8> {
        let qs_at = if five { 48 } else { 16 };
        let mut b = vec![0u8; qs_at + 128];
        b[0..2].copy_from_slice(&half(d));
        b[2..4].copy_from_slice(&half(dmin));
        b[4..16].copy_from_slice(&scales_k4(sc, m));
        for (i, &v) in q.iter().enumerate() {
            let (c, r) = (i / 64, i % 64);
            let (high, l) = (r / 32, r % 32);
            b[qs_at + 32 * c + l] |= (v & 0xF) << (4 * high);
            if five {
                b[16 + l] |= (v >> 4) << (2 * c + high);
            }
        }
        b
    }

    /// Q6_K: value i = d * sc[i/16] * (q[i] - 32), q 6-bit, sc signed.
    pub fn q6_k(d: f32, sc: &[i8; 16], q: &[u8; 256]) -> Vec<u8> {
        let mut b = vec![0u8; 210];
        for (i, &v) in q.iter().enumerate() {
            let (n, r) = (i / 128, i % 128);
            let (quarter, l) = (r / 32, r % 32);
            let ql = 64 * n + 32 * (quarter % 2) + l;
            b[ql] |= (v & 0xF) << (4 * (quarter / 2));
            b[128 + 32 * n + l] |= (v >> 4) << (2 * quarter);
        }
        for (j, &s) in sc.iter().enumerate() {
            b[192 + j] = s as u8;
        }
        b[208..210].copy_from_slice(&half(d));
        b
    }

    /// Q5_0 (`m` None): value j = d * (q[j] - 16); Q5_1: d * q[j] + m.
    pub fn q5(d: f32, m: Option<f32>, q: &[u8; 32]) -> Vec<u8> {
        let mut b = half(d).to_vec();
        if let Some(m) = m {
            b.extend(half(m));
        }
        let mut qh = 0u32;
        for (j, &v) in q.iter().enumerate() {
            qh |= u32::from(v >> 4) << j;
        }
        b.extend(qh.to_le_bytes());
        b.extend((0..16).map(|j| (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4)));
        b
    }
}

/// Random logical contents with power-of-two d so every product is exact in f32.
fn codes<const N: usize>(rng: &mut Rng, bits: u32) -> [u8; N] {
    std::array::from_fn(|_| (rng.u64() % (1 << bits)) as u8)
}

fn dq(t: GgmlType, block: &[u8]) -> Vec<f32> {
    dequantize(t, block).unwrap()
}

#[test]
fn k_quants_dequantize_hand_packed_blocks() {
    let mut rng = Rng::new(7);
    for _ in 0..20 {
        let (d, dmin) = (0.5f32, 0.125f32);
        let (sc16, m16, q2): ([u8; 16], [u8; 16], [u8; 256]) =
            (codes(&mut rng, 4), codes(&mut rng, 4), codes(&mut rng, 2));
        let want: Vec<f32> = (0..256)
            .map(|i| d * f32::from(sc16[i / 16]) * f32::from(q2[i]) - dmin * f32::from(m16[i / 16]))
            .collect();
        assert_eq!(
            dq(GgmlType::Q2_K, &pack::q2_k(d, dmin, &sc16, &m16, &q2)),
            want,
            "Q2_K"
        );

        let (s6, u3): ([u8; 16], [u8; 256]) = (codes(&mut rng, 6), codes(&mut rng, 3));
        let want: Vec<f32> = (0..256)
            .map(|i| d * (f32::from(s6[i / 16]) - 32.0) * (f32::from(u3[i]) - 4.0))
            .collect();
        assert_eq!(dq(GgmlType::Q3_K, &pack::q3_k(d, &s6, &u3)), want, "Q3_K");

        let (sc8, m8): ([u8; 8], [u8; 8]) = (codes(&mut rng, 6), codes(&mut rng, 6));
        for (five, t) in [(false, GgmlType::Q4_K), (true, GgmlType::Q5_K)] {
            let q: [u8; 256] = codes(&mut rng, if five { 5 } else { 4 });
            let want: Vec<f32> = (0..256)
                .map(|i| {
                    d * f32::from(sc8[i / 32]) * f32::from(q[i]) - dmin * f32::from(m8[i / 32])
                })
                .collect();
            assert_eq!(
                dq(t, &pack::q45_k(five, d, dmin, &sc8, &m8, &q)),
                want,
                "{t}"
            );
        }

        let sc: [i8; 16] = std::array::from_fn(|_| rng.u64() as i8);
        let q6: [u8; 256] = codes(&mut rng, 6);
        let want: Vec<f32> = (0..256)
            .map(|i| d * f32::from(sc[i / 16]) * (f32::from(q6[i]) - 32.0))
            .collect();
        assert_eq!(dq(GgmlType::Q6_K, &pack::q6_k(d, &sc, &q6)), want, "Q6_K");

        let q5: [u8; 32] = codes(&mut rng, 5);
        let want: Vec<f32> = q5.iter().map(|&q| d * (f32::from(q) - 16.0)).collect();
        assert_eq!(dq(GgmlType::Q5_0, &pack::q5(d, None, &q5)), want, "Q5_0");
        let want: Vec<f32> = q5.iter().map(|&q| d * f32::from(q) + dmin).collect();
        assert_eq!(
            dq(GgmlType::Q5_1, &pack::q5(d, Some(dmin), &q5)),
            want,
            "Q5_1"
        );
    }
}

#[test]
fn k_quant_worked_values() {
    // Q4_K: scale 3 and min 2 for the first 32 values, d = 0.5, dmin = 0.25: code 5 gives
    // 0.5 * 3 * 5 - 0.25 * 2 = 7. Scale 5 (index 4, split over three bytes) and min 63 for
    // values 128..160: code 15 gives 0.5 * 5 * 15 - 0.25 * 63 = 21.75.
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    (sc[0], m[0], sc[4], m[4]) = (3, 2, 5, 63);
    let mut q = [0u8; 256];
    (q[0], q[130]) = (5, 15);
    let y = dq(GgmlType::Q4_K, &pack::q45_k(false, 0.5, 0.25, &sc, &m, &q));
    assert_eq!((y[0], y[1], y[130]), (7.0, -0.5, 21.75));
    // Q6_K: scale -2, code 0 (= -32) gives 0.25 * -2 * -32 = 16.
    let mut sc = [1i8; 16];
    sc[15] = -2;
    let y = dq(GgmlType::Q6_K, &pack::q6_k(0.25, &sc, &[0; 256]));
    assert_eq!((y[0], y[255]), (-8.0, 16.0));
}

/// Random blocks dequantized by gguf-py (`fixtures/gguf_dequant_reference.txt`, made by
/// `fixtures/make_gguf_fixtures.py`): an implementation of ggml's reference independent of
/// ours agrees bit for bit.
#[test]
fn k_quants_match_gguf_py_on_random_blocks() {
    let text = include_str!("fixtures/gguf_dequant_reference.txt");
    let mut lines = text.lines();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(line) = lines.next() {
        let t = match line.strip_prefix("type ").unwrap() {
            "Q5_0" => GgmlType::Q5_0,
            "Q5_1" => GgmlType::Q5_1,
            "Q2_K" => GgmlType::Q2_K,
            "Q3_K" => GgmlType::Q3_K,
            "Q4_K" => GgmlType::Q4_K,
            "Q5_K" => GgmlType::Q5_K,
            "Q6_K" => GgmlType::Q6_K,
            other => panic!("unexpected type {other}"),
        };
        let hex = lines.next().unwrap().strip_prefix("bytes ").unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let want: Vec<u32> = lines
            .next()
            .unwrap()
            .strip_prefix("values ")
            .unwrap()
            .split(' ')
            .map(|h| u32::from_str_radix(h, 16).unwrap())
            .collect();
        let got: Vec<u32> = dq(t, &bytes).iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{t}");
        seen.insert(t.id());
    }
    assert_eq!(seen.len(), 7);
}

#[test]
fn k_quant_tensors_become_dense_with_their_shape() {
    let mut rng = Rng::new(3);
    let data = random_blocks(ty::Q6_K, 3, &mut rng);
    let (shape, values) = dense(&[256, 3], ty::Q6_K, data.clone());
    assert_eq!(shape, vec![3, 256]);
    assert_eq!(values, dq(GgmlType::Q6_K, &data));
}

#[test]
fn unsupported_types_and_shapes_say_which() {
    let e = one_tensor(&[32], ty::IQ4_NL, vec![0; 18])
        .weight("w")
        .unwrap_err();
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("IQ4_NL") && msg.contains("'w'") && msg.contains("t.gguf"),
        "{msg}"
    );
    // A 3-D quantized tensor is not a matrix; trailing dims of 1 are.
    let e = one_tensor(&[32, 2, 2], ty::Q8_0, vec![0; 4 * 34])
        .weight("w")
        .unwrap_err();
    assert!(e.to_string().contains("3-D"), "{e}");
    let f = one_tensor(&[32, 2, 1], ty::Q8_0, vec![0; 2 * 34]);
    assert_eq!(f.weight("w").unwrap().shape(), vec![2, 32]);
    // A name the file lacks.
    let e = f.weight("nope").unwrap_err();
    assert!(matches!(e, ModelError::MissingTensor { .. }), "{e}");
}
