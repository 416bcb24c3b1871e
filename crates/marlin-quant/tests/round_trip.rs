//! Quantize -> dequantize stays within each scheme's round-trip budget (measured error x margin,
//! see `marlin_testkit::budget`) for every format and allowed group size, including K that is
//! not a multiple of the group (K is padded).

use half::{bf16, f16};
use marlin_quant::{Format, Group, Scheme, quantize, quantize_bf16, quantize_f16};
use marlin_testkit::budget::round_trip_budget;
use marlin_testkit::reference::rel_rmse;
use marlin_testkit::{rng, schemes};
use proptest::prelude::*;

/// Weights per test matrix: enough that the relative RMSE is a stable statistic (a few percent
/// from its mean, well inside the 25% margin).
const WEIGHTS: usize = 4096;

fn cols() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1), Just(3), Just(67), Just(4097), 1usize..600]
}

/// Weight scales from 1/256 to 8: typical LLM layers sit near 0.02. Much smaller weights push
/// f16 group scales into subnormals (see docs/formats.md).
fn std() -> impl Strategy<Value = f32> {
    (-8.0f32..3.0).prop_map(f32::exp2)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn round_trip_is_within_budget(cols in cols(), std in std(), seed: u64) {
        let rows = WEIGHTS.div_ceil(cols);
        let w = rng::gaussian(seed, rows * cols, std);
        for scheme in schemes() {
            let q = quantize(&w, rows, cols, scheme).unwrap();
            prop_assert_eq!((q.rows(), q.cols()), (rows, cols));
            prop_assert_eq!(q.padded_cols() % 32, 0);
            prop_assert_eq!(q.padded_cols() % q.group_len(), 0);
            prop_assert!(q.padded_cols() >= cols && q.padded_cols() - cols < q.group_len().max(32));
            let err = rel_rmse(&q.dequantize(), &w);
            let budget = round_trip_budget(scheme);
            prop_assert!(
                err <= budget,
                "{} on {}x{} std {}: relative RMSE {:.4} > budget {:.4}",
                scheme, rows, cols, std, err, budget
            );
        }
    }

    /// f16 and bf16 inputs quantize exactly as their f32 values do.
    #[test]
    fn half_inputs_match_f32(cols in cols(), seed: u64) {
        let rows = 2;
        let w = rng::gaussian(seed, rows * cols, 0.05);
        let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let fh: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
        let fb: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
        for scheme in schemes() {
            prop_assert_eq!(
                quantize_f16(&wh, rows, cols, scheme).unwrap(),
                quantize(&fh, rows, cols, scheme).unwrap()
            );
            prop_assert_eq!(
                quantize_bf16(&wb, rows, cols, scheme).unwrap(),
                quantize(&fb, rows, cols, scheme).unwrap()
            );
        }
    }
}

/// Values already on a format's grid come back exactly (the quantizer does not drift).
#[test]
fn grid_values_are_exact() {
    // One group per row; each row spans the full code range of its format.
    let int4: Vec<f32> = (0..32).map(|i| ((i % 16) as f32 - 8.0) * 0.25).collect();
    let q = quantize(&int4, 1, 32, Scheme::of(Format::Int4)).unwrap();
    assert_eq!(q.dequantize(), int4);
    for (f, levels) in [
        (Format::Int4Affine, 16),
        (Format::Int3, 8),
        (Format::Int2, 4),
    ] {
        let affine: Vec<f32> = (0..32).map(|i| (i % levels) as f32 * 0.5 - 1.0).collect();
        let q = quantize(&affine, 1, 32, Scheme::of(f)).unwrap();
        assert_eq!(q.dequantize(), affine, "{f}");
    }
    let e2m1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0f32];
    let fp4: Vec<f32> = (0..32)
        .map(|i| e2m1[i % 8] * if i >= 16 { -1.0 } else { 1.0 })
        .collect();
    for f in [Format::Fp4, Format::Mxfp4, Format::Nvfp4] {
        assert_eq!(
            quantize(&fp4, 1, 32, Scheme::of(f)).unwrap().dequantize(),
            fp4,
            "{f}"
        );
    }
    let int8: Vec<f32> = (0..32).map(|i| (i as f32 * 8.0 - 127.0) / 64.0).collect();
    let int8 = [&int8[..31], &[127.0 / 64.0]].concat();
    let q = quantize(
        &int8,
        1,
        32,
        Scheme::new(Format::Int8, Group::Size(32)).unwrap(),
    )
    .unwrap();
    assert_eq!(q.dequantize(), int8);
}

/// A zero matrix stays zero in every scheme (no NaN from a zero scale).
#[test]
fn zeros_stay_zero() {
    for scheme in schemes() {
        let q = quantize(&[0.0; 3 * 67], 3, 67, scheme).unwrap();
        assert!(q.dequantize().iter().all(|&v| v == 0.0), "{scheme}");
    }
}

/// The odd widths of the design (1, 3, 67, 4097 columns) for every scheme, whatever proptest
/// happens to draw.
#[test]
fn odd_widths_are_within_budget() {
    for cols in [1, 3, 67, 4097] {
        let rows = WEIGHTS.div_ceil(cols);
        let w = rng::gaussian(cols as u64, rows * cols, 0.02);
        for scheme in schemes() {
            let q = quantize(&w, rows, cols, scheme).unwrap();
            let err = rel_rmse(&q.dequantize(), &w);
            let budget = round_trip_budget(scheme);
            assert!(
                err <= budget,
                "{scheme} {rows}x{cols}: {err:.4} > {budget:.4}"
            );
        }
    }
}
