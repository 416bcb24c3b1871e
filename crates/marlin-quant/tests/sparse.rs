//! 2:4 sparsity: the scalar `SparseMatrix::dequantize` is the spec; these check it against an
//! independent reading of docs/formats.md ("2:4 sparsity") for every scheme and odd widths.

use std::borrow::Cow;

use marlin_quant::sparse::{kept_cols, position_row_bytes, prune_magnitude};
use marlin_quant::{QuantMatrix, SparseMatrix, quantize};
use marlin_testkit::{rng, schemes};
use proptest::prelude::*;

fn cols() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1), Just(3), Just(4), Just(67), Just(576), 1usize..300]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Each quad keeps its two largest weights, and dequantizing puts each kept value (as the
    /// dense scheme rounds it) at its column and 0 elsewhere.
    #[test]
    fn dequantize_matches_the_layout(cols in cols(), seed: u64) {
        let rows = 3;
        let w = rng::gaussian(seed, rows * cols, 0.1);
        for scheme in schemes() {
            let s = SparseMatrix::prune_rtn(&w, rows, cols, scheme).unwrap();
            prop_assert_eq!((s.rows(), s.cols()), (rows, cols));
            let kept = s.kept().dequantize();
            let d = s.dequantize();
            let kc = kept_cols(cols);
            for r in 0..rows {
                let pos = &s.positions()[r * position_row_bytes(cols)..];
                let mut want = vec![0f32; cols];
                for j in 0..kc {
                    let p = (pos[j / 4] >> (2 * (j % 4))) & 3;
                    let c = 4 * (j / 2) + p as usize;
                    if c < cols {
                        want[c] = kept[r * kc + j];
                    }
                }
                prop_assert_eq!(&d[r * cols..(r + 1) * cols], &want[..], "{}", scheme);
                for q in 0..cols.div_ceil(4) {
                    let quad = &w[r * cols + 4 * q..r * cols + (4 * q + 4).min(cols)];
                    let mut order: Vec<usize> = (0..quad.len()).collect();
                    order.sort_by(|&a, &b| quad[b].abs().total_cmp(&quad[a].abs()));
                    for &i in order.iter().skip(2) {
                        prop_assert_eq!(d[r * cols + 4 * q + i], 0.0);
                    }
                }
            }
        }
    }

    /// Splitting rows and concatenating them back gives the same matrix.
    #[test]
    fn concat_rows_round_trips(cols in cols(), seed: u64) {
        let w = rng::gaussian(seed, 5 * cols, 1.0);
        let scheme = schemes()[0];
        let all = SparseMatrix::prune_rtn(&w, 5, cols, scheme).unwrap();
        let a = SparseMatrix::prune_rtn(&w[..2 * cols], 2, cols, scheme).unwrap();
        let b = SparseMatrix::prune_rtn(&w[2 * cols..], 3, cols, scheme).unwrap();
        prop_assert_eq!(SparseMatrix::concat_rows(&[&a, &b]).unwrap(), all);
    }
}

#[test]
fn half_the_weights_cost_half_the_codes() {
    let (rows, cols) = (64, 576);
    let w = rng::gaussian(1, rows * cols, 0.05);
    for scheme in schemes() {
        let dense = quantize(&w, rows, cols, scheme).unwrap();
        let sparse = SparseMatrix::prune_rtn(&w, rows, cols, scheme).unwrap();
        // Kept codes and scales are half the dense ones up to group padding; positions add
        // 2 bits per kept value, 1 bit per weight of W.
        assert_eq!(sparse.positions().len(), rows * cols / 8);
        assert!(
            sparse.kept().codes().len() <= dense.codes().len() / 2 + rows * 64,
            "{scheme}"
        );
    }
}

#[test]
fn malformed_parts_are_refused() {
    let kept = quantize(&[0.5; 4], 2, 2, schemes()[0]).unwrap();
    let e = SparseMatrix::from_parts(kept.clone(), Cow::Owned(vec![0b1101]), 4).unwrap_err();
    assert!(e.to_string().contains("positions has 1 bytes"), "{e}");
    let e = SparseMatrix::from_parts(kept.clone(), Cow::Owned(vec![0b1101; 2]), 9).unwrap_err();
    assert!(e.to_string().contains("keeps 6 values"), "{e}");
    let one: QuantMatrix<'_> = kept;
    assert!(SparseMatrix::from_parts(one, Cow::Owned(vec![0b1101; 2]), 4).is_ok());
    let e = prune_magnitude(&[f32::NAN; 4], 1, 4).unwrap_err();
    assert!(e.to_string().contains("finite"), "{e}");
}

/// The worked example of docs/formats.md ("2:4 sparsity"), byte for byte.
#[test]
fn worked_example_of_the_docs() {
    let w = [0.5, -0.3, 1.0, 0.2, 0.1, -0.7, 0.05, 0.4];
    let scheme = marlin_quant::Scheme::of(marlin_quant::Format::Int8);
    let s = SparseMatrix::prune_rtn(&w, 1, 8, scheme).unwrap();
    assert_eq!(s.positions(), [0xd8]);
    assert_eq!(s.kept().cols(), 4);
    assert_eq!(&s.kept().codes()[..4], [64, 127, (-89i8) as u8, 51]);
    assert_eq!(s.kept().scales(), [0x08, 0x20]);
    let d = s.dequantize();
    println!("{d:?}");
    assert_eq!(
        d,
        [
            0.50390625, 0.0, 0.99993896, 0.0, 0.0, -0.7007446, 0.0, 0.4015503
        ]
    );
}
