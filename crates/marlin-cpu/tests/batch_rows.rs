//! A row's product must not depend on the rows batched with it: the server's continuous
//! batching promises each sequence exactly the greedy output it would get alone. The panel
//! kernel tiles activation rows (int8x2 doubling them), so every batch size from 1 to 33 is
//! checked against the rows run one at a time, bit for bit, at every ISA level this CPU has,
//! and against the scalar level within its tolerance.

use marlin_cpu::{Activations, CpuBackend, Isa};
use marlin_quant::{Format, Group, Scheme, quantize};
use marlin_testkit::budget::{TAIL, isa_agreement};
use marlin_testkit::reference::{self, MatmulError};
use marlin_testkit::rng;

/// N and K that are not multiples of a panel (16 rows) or a block (32): a partial last panel,
/// padding inside the last block.
const N: usize = 37;
const K: usize = 200;
/// Batch sizes 1..=MAX_M: past two tiles of int8x2 rows.
const MAX_M: usize = 33;

/// The schemes the panel kernel serves (4-bit codes with f16 or E8M0 scales, and INT8; groups
/// of 32 or more), with every group size.
fn panel_schemes() -> Vec<Scheme> {
    let mut out = Vec::new();
    for format in [Format::Int4, Format::Int4Affine, Format::Fp4, Format::Int8] {
        for g in [32, 64, 128] {
            out.extend(Scheme::new(format, Group::Size(g)).ok());
        }
    }
    out.push(Scheme::of(Format::Mxfp4));
    out
}

#[test]
fn each_row_of_a_batch_equals_that_row_alone() {
    let x = rng::gaussian(11, MAX_M * K, 1.0);
    let wf = rng::gaussian(12, N * K, 0.02);
    for scheme in panel_schemes() {
        let w = quantize(&wf, N, K, scheme).unwrap_or_else(|e| panic!("{scheme}: {e}"));
        let deq = w.dequantize();
        let scale = reference::matmul_scale(&x, MAX_M, K, &deq, N);
        for acts in [Activations::Int8, Activations::Int8x2] {
            let scalar = CpuBackend::new(Isa::Scalar).unwrap().with_activations(acts);
            let mut want = vec![0f32; MAX_M * N];
            scalar.matmul(&x, MAX_M, &w, &mut want).unwrap();
            let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
            let tol = isa_agreement(scheme, acts.into());
            for isa in Isa::available() {
                let be = CpuBackend::new(isa).unwrap().with_activations(acts);
                let prepared = be.prepare(&w);
                let mut alone = vec![0f32; MAX_M * N];
                for (r, y) in alone.chunks_exact_mut(N).enumerate() {
                    be.matmul_prepared(&x[r * K..(r + 1) * K], 1, &prepared, y)
                        .unwrap();
                }
                for m in 1..=MAX_M {
                    let mut y = vec![0f32; m * N];
                    be.matmul_prepared(&x[..m * K], m, &prepared, &mut y)
                        .unwrap();
                    let differs = y
                        .iter()
                        .zip(&alone)
                        .position(|(a, b)| a.to_bits() != b.to_bits());
                    if let Some(i) = differs {
                        panic!(
                            "{isa} {acts:?} {scheme}: y[{i}] of a batch of {m} is {} but {} \
                             with its row alone",
                            y[i], alone[i]
                        );
                    }
                    let e = MatmulError::measure(&y, &want[..m * N], &scale[..m * N]);
                    assert!(
                        e.max_rel <= TAIL * tol,
                        "{isa} {acts:?} {scheme} m{m}: y[{}] = {} vs scalar {} ({:.2e} > {:.2e})",
                        e.worst,
                        y[e.worst],
                        want[e.worst],
                        e.max_rel,
                        TAIL * tol
                    );
                }
            }
        }
    }
}
