//! Stacking matrices by rows (fused projections).

#[test]
fn concat_rows_stacks_alike_matrices_and_refuses_others() {
    use marlin_quant::{Format, QuantMatrix, Scheme, quantize};
    let a_w: Vec<f32> = (0..3 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
    let b_w: Vec<f32> = (0..2 * 64).map(|i| (i as f32 * 0.11).cos()).collect();
    let scheme = Scheme::of(Format::Int4Affine);
    let a = quantize(&a_w, 3, 64, scheme).unwrap();
    let b = quantize(&b_w, 2, 64, scheme).unwrap();
    let ab = QuantMatrix::concat_rows(&[&a, &b]).unwrap();
    assert_eq!((ab.rows(), ab.cols()), (5, 64));
    assert_eq!(ab.dequantize(), [a.dequantize(), b.dequantize()].concat());
    let other = quantize(&b_w, 2, 64, Scheme::of(Format::Int4)).unwrap();
    assert!(
        QuantMatrix::concat_rows(&[&a, &other]).is_none(),
        "formats differ"
    );
    let narrow = quantize(&a_w, 6, 32, scheme).unwrap();
    assert!(
        QuantMatrix::concat_rows(&[&a, &narrow]).is_none(),
        "widths differ"
    );
}
