//! Tests of qmatmul.rs: parts, encoders, fusions and the errors of bad shapes.

use super::*;
use crate::kernels::qtest;
use marlin_quant::{Format, Group, quantize};

/// A matrix split into parts of a few rows gives exactly the unsplit result, with both
/// kernels, and the parts cover every row once.
#[test]
fn split_matrices_give_the_unsplit_result() {
    let Some(gpu) = crate::test_gpu() else { return };
    let scheme = Scheme::new(Format::Int4Affine, Group::Size(16)).unwrap();
    let (n, k) = (37, 67);
    let w = quantize(&qtest::gaussian(1, n * k, 0.02), n, k, scheme).unwrap();
    let whole = gpu.upload_quant(&w).unwrap();
    // One row of codes is 48 bytes and of scales 12: 100 bytes hold 2 rows.
    let split = gpu.upload_quant_split(&w, 100).unwrap();
    assert_eq!((whole.parts(), split.parts()), (1, 19));
    assert_eq!(whole.device_bytes(), split.device_bytes());
    for m in [1, 3, 40] {
        let x = gpu.upload_f32("x", &qtest::gaussian(2, m * k, 1.0));
        let run = |w: &GpuQuantMatrix| {
            let y = gpu.zeros("y", (m * n * 4) as u64);
            gpu.quant_matmul(&x, m, w, &y, MatmulPrecision::F32)
                .unwrap();
            gpu.read_f32(&y).unwrap()
        };
        assert_eq!(run(&whole), run(&split), "m = {m}");
    }
    // Split K over parts of W: every part writes its columns of each slab.
    if let Some(v) = QmmCoopVariant::new(&gpu.capabilities(), 20) {
        let m = 20;
        let x = gpu.upload_f32("x", &qtest::gaussian(2, m * k, 1.0));
        let run = |w: &GpuQuantMatrix, splits| {
            let y = gpu.zeros("y", (m * n * 4) as u64);
            let plan = Plan::QmmCoop(QmmCoopVariant { splits, ..v });
            gpu.quant_matmul_with(&x, m, w, &y, plan).unwrap();
            gpu.read_f32(&y).unwrap()
        };
        assert_eq!(run(&whole, 2), run(&split, 2));
        let (one, two) = (run(&whole, 1), run(&whole, 2));
        for (a, b) in one.iter().zip(&two) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
    let err = gpu.upload_quant_split(&w, 40).unwrap_err().to_string();
    assert!(err.contains("48 bytes"), "{err}");
}

/// Products recorded into one encoder (one weight bind group, made at upload, serving
/// qmv and qmm at every m) give exactly what separate calls give, in order: the second
/// product reads the y the first wrote.
#[test]
fn many_products_record_into_one_encoder() {
    let Some(gpu) = crate::test_gpu() else { return };
    let scheme = Scheme::of(Format::Int4);
    let (n, k) = (64, 64);
    let w = quantize(&qtest::gaussian(4, n * k, 0.02), n, k, scheme).unwrap();
    let w = gpu.upload_quant(&w).unwrap();
    for m in [1, 8, 9, 40] {
        let x = gpu.upload_f32("x", &qtest::gaussian(5, m * k, 1.0));
        let (y1, y2) = (
            gpu.zeros("y1", (m * n * 4) as u64),
            gpu.zeros("y2", (m * n * 4) as u64),
        );
        gpu.quant_matmul(&x, m, &w, &y1, MatmulPrecision::F32)
            .unwrap();
        gpu.quant_matmul(&y1, m, &w, &y2, MatmulPrecision::F32)
            .unwrap();
        let separate = (gpu.read_f32(&y1).unwrap(), gpu.read_f32(&y2).unwrap());
        let (z1, z2) = (
            gpu.zeros("z1", (m * n * 4) as u64),
            gpu.zeros("z2", (m * n * 4) as u64),
        );
        let mut enc = gpu.encoder();
        gpu.record_quant_matmul(&mut enc, &x, m, &w, &z1, MatmulPrecision::F32)
            .unwrap();
        gpu.record_quant_matmul(&mut enc, &z1, m, &w, &z2, MatmulPrecision::F32)
            .unwrap();
        assert!(
            gpu.record_quant_matmul(&mut enc, &x, 0, &w, &z2, MatmulPrecision::F32)
                .is_err()
        );
        gpu.submit(enc);
        let one = (gpu.read_f32(&z1).unwrap(), gpu.read_f32(&z2).unwrap());
        assert_eq!(separate, one, "m = {m}");
    }
}

/// A product that adds to h and leaves h on int8 grids for the next one
/// (`Fusion::then_quantize`), then that next product multiplying RMSNorm(h) from them
/// (`FusedInput::NormedInt8`), give the h and the result of the same two products with the
/// next one's x made by quantize_x: h exactly, the result to the rounding of the grids'
/// scales.
/// A `rows` x `cols` matrix of Gaussian weights (seed `seed`) in `scheme`, on the device.
fn gaussian_matrix(
    gpu: &Gpu,
    scheme: Scheme,
    seed: u64,
    (rows, cols): (usize, usize),
) -> GpuQuantMatrix {
    let w = quantize(
        &qtest::gaussian(seed, rows * cols, 0.05),
        rows,
        cols,
        scheme,
    );
    gpu.upload_quant(&w.unwrap()).unwrap()
}

/// `y` within 1e-5 of `y_ref`'s largest magnitude (not all zero) everywhere.
fn assert_near(y: &[f32], y_ref: &[f32], what: &str) {
    let scale = y_ref.iter().fold(0f32, |a, v| a.max(v.abs()));
    assert!(scale > 0.0, "{what}: all zero");
    for (i, (a, b)) in y.iter().zip(y_ref).enumerate() {
        assert!((a - b).abs() <= 1e-5 * scale, "{what} [{i}]: {a} vs {b}");
    }
}

#[test]
fn a_product_quantizes_the_next_products_x() {
    let Some(gpu) = crate::test_gpu() else { return };
    let precision = MatmulPrecision::Int8x2;
    for format in [Format::Int4, Format::Int4Affine] {
        let scheme = Scheme::of(format);
        let (n, k1, n2) = (256, 96, 40);
        let up = |seed, rows, cols| gaussian_matrix(&gpu, scheme, seed, (rows, cols));
        let (w1, w2) = (up(11, n, k1), up(12, n2, n));
        let norm = gpu.upload_f32("norm", &qtest::gaussian(13, n, 1.0));
        let eps = 1e-5;
        for m in [1, 3] {
            assert!(gpu.takes_int8_x(m, &w2, precision));
            if !gpu.emits_int8_x(m, &w1, precision) {
                // Workgroups of fewer than 32 rows of W: m > 1 without subgroups, or
                // subgroups of 64 (8 teams of 2 rows).
                let caps = gpu.capabilities();
                assert!(
                    (m > 1 && !caps.subgroup) || caps.subgroup_min_size > 32,
                    "m = {m}"
                );
                continue;
            }
            let x = gpu.upload_f32("x", &qtest::gaussian(14, m * k1, 1.0));
            let h0 = qtest::gaussian(15, m * n, 1.0);
            let run = |chained: bool| {
                let h = gpu.upload_f32("h", &h0);
                let y = gpu.zeros("y", (m * n2 * 4) as u64);
                let grids = gpu.zeros("grids", Gpu::int8_x_bytes(m, n));
                let mut enc = gpu.encoder();
                let next = QuantizeNext {
                    norm: &norm,
                    target: &grids,
                };
                let first = Fusion {
                    add_to_y: true,
                    then_quantize: chained.then_some(next),
                    ..Fusion::default()
                };
                gpu.record_quant_matmul_fused(&mut enc, &x, m, &w1, &h, precision, first)
                    .unwrap();
                let input = match chained {
                    true => FusedInput::NormedInt8 { xq: &grids, eps },
                    false => FusedInput::RmsNorm { weight: &norm, eps },
                };
                let second = Fusion {
                    input,
                    ..Fusion::default()
                };
                gpu.record_quant_matmul_fused(&mut enc, &h, m, &w2, &y, precision, second)
                    .unwrap();
                gpu.submit(enc);
                (gpu.read_f32(&h).unwrap(), gpu.read_f32(&y).unwrap())
            };
            let (h_ref, y_ref) = run(false);
            let (h, y) = run(true);
            assert_eq!(h, h_ref, "{format:?} m = {m}");
            assert_near(&y, &y_ref, &format!("{format:?} m = {m}"));
        }
    }
}

/// A gate|up product that puts silu(gate) * up on int8 grids (`then_swiglu`) stores the same
/// y, and the down product taking those grids (`FusedInput::Int8`) gives what it gives from
/// the SwiGLU of y through quantize_x (to rounding: the block sums are added in another
/// order).
#[test]
fn a_gate_up_product_quantizes_the_down_products_x() {
    let Some(gpu) = crate::test_gpu() else { return };
    let precision = MatmulPrecision::Int8x2;
    for format in [Format::Int4, Format::Int4Affine] {
        let scheme = Scheme::of(format);
        // ff a multiple of every workgroup's half (up to 128 rows of gate: 64 teams of 4 rows
        // at subgroups of 8); 2 ff = 16384 rows (qmv's tall matrices) take 4 rows a team, which
        // subgroups of 32 need for workgroups of 64 rows.
        for (ff, k1, n2) in [(256, 96, 40), (8192, 32, 8)] {
            let up = |seed, rows, cols| gaussian_matrix(&gpu, scheme, seed, (rows, cols));
            let (gate_up, down) = (up(21, 2 * ff, k1), up(22, n2, ff));
            for m in [1, 3] {
                assert!(gpu.takes_int8_x(m, &down, precision));
                if !gpu.emits_swiglu_int8_x(m, &gate_up, precision) {
                    // Workgroups of fewer than 64 rows of W: m > 1 without subgroups, subgroups
                    // of 64 (8 teams of 2 or 4 rows), or of 32 but at m = 1 from 16384 rows
                    // (16 teams of 2 rows, 4 there).
                    let caps = gpu.capabilities();
                    assert!(
                        (m > 1 && !caps.subgroup)
                            || caps.subgroup_min_size > 32
                            || (caps.subgroup_min_size == 32 && (2 * ff < 16384 || m > 1)),
                        "ff = {ff}, m = {m}"
                    );
                    continue;
                }
                let x = gpu.upload_f32("x", &qtest::gaussian(23, m * k1, 1.0));
                let run = |chained: bool| {
                    let gu = gpu.zeros("gate|up", (m * 2 * ff * 4) as u64);
                    let y = gpu.zeros("y", (m * n2 * 4) as u64);
                    let grids = gpu.zeros("grids", Gpu::int8_x_bytes(m, ff));
                    let mut enc = gpu.encoder();
                    let first = Fusion {
                        then_swiglu: chained.then_some(&grids),
                        ..Fusion::default()
                    };
                    gpu.record_quant_matmul_fused(&mut enc, &x, m, &gate_up, &gu, precision, first)
                        .unwrap();
                    let input = match chained {
                        true => FusedInput::Int8 { xq: &grids },
                        false => FusedInput::SwiGlu,
                    };
                    let second = Fusion {
                        input,
                        ..Fusion::default()
                    };
                    gpu.record_quant_matmul_fused(&mut enc, &gu, m, &down, &y, precision, second)
                        .unwrap();
                    gpu.submit(enc);
                    (gpu.read_f32(&gu).unwrap(), gpu.read_f32(&y).unwrap())
                };
                let (gu_ref, y_ref) = run(false);
                let (gu, y) = run(true);
                assert_eq!(gu, gu_ref, "{format:?} ff = {ff}, m = {m}");
                assert_near(&y, &y_ref, &format!("{format:?} ff = {ff}, m = {m}"));
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let Some(gpu) = crate::test_gpu() else { return };
    let w = quantize(
        &qtest::gaussian(3, 3 * 64, 0.02),
        3,
        64,
        Scheme::of(Format::Int8),
    );
    let w = gpu.upload_quant(&w.unwrap()).unwrap();
    let x = gpu.upload_f32("x", &[0.0; 2 * 64]);
    let y = gpu.zeros("y", 2 * 3 * 4);
    let err = |m| {
        gpu.quant_matmul(&x, m, &w, &y, MatmulPrecision::F32)
            .unwrap_err()
            .to_string()
    };
    assert!(err(0).contains("m must be at least 1"));
    assert!(err(3).contains("x holds 512 bytes"), "{}", err(3));
    let small = gpu.zeros("y", 5 * 4);
    let e = gpu
        .quant_matmul(&x, 2, &w, &small, MatmulPrecision::F32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("y holds 20 bytes"), "{e}");
}

/// The fused forms give what the separate ops give: the norm (its sum in another order,
/// within 1e-5) and SwiGLU with the residual add (within 1e-6), at m = 1, 3 and 8, for K
/// with and without vec4 loads, and for a matrix in several parts; with int8x2 x too
/// (within 3e-4: x is put on the int8 grids before the norm's 1 / rms in one, after it in
/// the other).
#[test]
fn fused_products_equal_the_separate_ops() {
    use crate::kernels::{Heads, View};
    let Some(gpu) = crate::test_gpu() else { return };
    let read = |b: &GpuBuffer| gpu.read_f32(b).unwrap();
    let record = |op: &mut dyn FnMut(&mut crate::Recorder)| {
        let mut enc = gpu.encoder();
        op(&mut enc);
        gpu.submit(enc);
    };
    let schemes = [
        Scheme::new(Format::Int4, Group::Size(32)).unwrap(),
        Scheme::new(Format::Fp4, Group::Size(16)).unwrap(),
        Scheme::new(Format::Int8, Group::Size(128)).unwrap(),
        Scheme::new(Format::Int3, Group::Size(64)).unwrap(),
    ];
    for (i, scheme) in schemes.into_iter().enumerate() {
        for (m, n, k) in [(1, 37, 256), (3, 9, 67), (8, 70, 128)] {
            let wq = quantize(&qtest::gaussian(i as u64, n * k, 0.02), n, k, scheme).unwrap();
            let uploads = [
                gpu.upload_quant(&wq).unwrap(),
                gpu.upload_quant_split(&wq, 600).unwrap(),
            ];
            let precisions = [
                (MatmulPrecision::F32, 1f32),
                (MatmulPrecision::Int8x2, 300.0),
            ];
            for (w, (p, loose)) in uploads.into_iter().zip(precisions) {
                let what = format!("{scheme} m {m} n {n} k {k}, {} parts, {p:?}", w.parts());
                assert!(gpu.fuses_quant_matmul(m, &w, p), "{what}");
                let plain = |x: &GpuBuffer| {
                    let y = gpu.zeros("y", (m * n * 4) as u64);
                    gpu.quant_matmul(x, m, &w, &y, p).unwrap();
                    read(&y)
                };
                let fused = |x: &GpuBuffer, y: &GpuBuffer, fusion| {
                    record(&mut |enc| {
                        gpu.record_quant_matmul_fused(enc, x, m, &w, y, p, fusion)
                            .unwrap()
                    });
                    read(y)
                };

                // Norm.
                let h = gpu.upload_f32("h", &qtest::gaussian(7, m * k, 3.0));
                let nw = gpu.upload_f32("norm", &qtest::gaussian(8, k, 1.0));
                let normed = gpu.zeros("normed", (m * k * 4) as u64);
                let dims = Heads {
                    tokens: m,
                    heads: 1,
                    head_dim: k,
                };
                record(&mut |enc| {
                    let (hv, nv) = (View::rows(&h, k), View::rows(&normed, k));
                    gpu.rms_norm(enc, hv, nv, &nw, dims, 1e-5).unwrap()
                });
                let want = plain(&normed);
                let y = gpu.zeros("y", (m * n * 4) as u64);
                let input = FusedInput::RmsNorm {
                    weight: &nw,
                    eps: 1e-5,
                };
                let got = fused(
                    &h,
                    &y,
                    Fusion {
                        input,
                        ..Fusion::default()
                    },
                );
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * loose.min(30.0) * (1.0 + w.abs()),
                        "norm {what}: {g} vs {w}"
                    );
                }

                // SwiGLU, and the residual add.
                let gate_up = gpu.upload_f32("gate_up", &qtest::gaussian(9, m * 2 * k, 2.0));
                let act = gpu.zeros("act", (m * k * 4) as u64);
                record(&mut |enc| {
                    let gate = View::part(&gate_up, 0, 2 * k);
                    let up = View::part(&gate_up, k, 2 * k);
                    gpu.swiglu(enc, gate, up, &act, m, k).unwrap()
                });
                let residual = qtest::gaussian(10, m * n, 1.0);
                let want: Vec<f32> = plain(&act)
                    .iter()
                    .zip(&residual)
                    .map(|(a, r)| r + a)
                    .collect();
                let y = gpu.upload_f32("y", &residual);
                let input = FusedInput::SwiGlu;
                let got = fused(
                    &gate_up,
                    &y,
                    Fusion {
                        input,
                        add_to_y: true,
                        ..Fusion::default()
                    },
                );
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-6 * loose * (1.0 + w.abs()),
                        "swiglu {what}: {g} vs {w}"
                    );
                }
            }
        }
    }
    // Past qmv's rows the tiled kernels fuse nothing: an error, not a wrong result.
    let w = quantize(&qtest::gaussian(1, 8 * 64, 0.02), 8, 64, schemes[0]).unwrap();
    let w = gpu.upload_quant(&w).unwrap();
    let (x, y) = (gpu.zeros("x", 40 * 128 * 4), gpu.zeros("y", 40 * 8 * 4));
    assert!(!gpu.fuses_quant_matmul(40, &w, MatmulPrecision::F32));
    let mut enc = gpu.encoder();
    let fusion = Fusion {
        input: FusedInput::SwiGlu,
        add_to_y: true,
        ..Fusion::default()
    };
    let e = gpu
        .record_quant_matmul_fused(&mut enc, &x, 40, &w, &y, MatmulPrecision::F32, fusion)
        .unwrap_err();
    assert!(e.to_string().contains("fuses no norm"), "{e}");
}
