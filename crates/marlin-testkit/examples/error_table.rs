//! Measures the error of every format and group size and prints the markdown table of
//! `docs/formats.md`, from which the budgets of `marlin_testkit::budget` are derived.
//!
//! ```text
//! cargo run --release -p marlin-testkit --example error_table            # the markdown table
//! cargo run --release -p marlin-testkit --example error_table -- --rust  # budget.rs constants
//! ```
//!
//! Columns: relative RMSE of the RTN round trip on Gaussian weights (256 x 4096, std 0.02) and
//! on the same weights with 0.1% outliers of 10-20 std; the relative error of the CPU matmul
//! (x 16 x 4096, std 1) against the f64 product with the dequantized weights, with f32
//! activations (worst ISA: rounding noise only) and with int8 activations (what they add); and
//! the largest difference between a SIMD ISA and the scalar one, per activation mode.

use marlin_cpu::{Activations, CpuBackend, Isa};
use marlin_quant::{Group, Scheme, quantize};
use marlin_testkit::reference::{self, MatmulError};
use marlin_testkit::{budget, rng, schemes};

const ROWS: usize = 256;
const COLS: usize = 4096;
const STD: f32 = 0.02;
const M: usize = 16;

struct Row {
    scheme: Scheme,
    bits_per_weight: f64,
    gaussian: f64,
    outliers: f64,
    f32_matmul: f64,
    int8_matmul: f64,
    int8x2_matmul: f64,
    /// Largest difference of a SIMD ISA from the scalar one: (f32, int8 activations).
    isa_spread: (f64, f64),
}

fn measure(scheme: Scheme, x: &[f32]) -> Row {
    let w = rng::gaussian(1, ROWS * COLS, STD);
    let wo = rng::with_outliers(1, ROWS * COLS, STD, 0.001, 10.0);
    let q = quantize(&w, ROWS, COLS, scheme).expect("Gaussian weights quantize");
    let qo = quantize(&wo, ROWS, COLS, scheme).expect("weights with outliers quantize");
    let deq = q.dequantize();
    let y_ref = reference::matmul(x, M, COLS, &deq, ROWS);
    let scale = reference::matmul_scale(x, M, COLS, &deq, ROWS);
    let run = |isa: Isa, acts: Activations| {
        let be = CpuBackend::new(isa)
            .expect("available ISA")
            .with_activations(acts);
        let mut y = vec![0f32; M * ROWS];
        be.matmul(x, M, &q, &mut y).expect("matmul runs");
        y
    };
    // Worst over ISAs of the error against the reference and against the scalar ISA.
    let worst = |acts| {
        let scalar: Vec<f64> = run(Isa::Scalar, acts).iter().map(|&v| v as f64).collect();
        let (mut to_ref, mut to_scalar) = (0f64, 0f64);
        for isa in Isa::available() {
            let y = run(isa, acts);
            to_ref = to_ref.max(MatmulError::measure(&y, &y_ref, &scale).rel);
            to_scalar = to_scalar.max(MatmulError::measure(&y, &scalar, &scale).rel);
        }
        (to_ref, to_scalar)
    };
    let (f32_matmul, f32_spread) = worst(Activations::F32);
    let (int8_matmul, int8_spread) = worst(Activations::Int8);
    let (int8x2_matmul, _) = worst(Activations::Int8x2);
    Row {
        scheme,
        bits_per_weight: q.storage_bytes() as f64 * 8.0 / (ROWS * COLS) as f64,
        gaussian: reference::rel_rmse(&deq, &w),
        outliers: reference::rel_rmse(&qo.dequantize(), &wo),
        f32_matmul,
        int8_matmul,
        int8x2_matmul,
        isa_spread: (f32_spread, int8_spread),
    }
}

fn group_label(g: Group) -> String {
    match g {
        Group::Size(s) => s.to_string(),
        Group::PerChannel => "channel".to_string(),
    }
}

fn main() {
    let rust = std::env::args().any(|a| a == "--rust");
    let x = rng::gaussian(2, M * COLS, 1.0);
    let rows: Vec<Row> = schemes().into_iter().map(|s| measure(s, &x)).collect();
    if rust {
        for r in &rows {
            println!(
                "    (Format::{:?}, Group::{:?}, {:.4e}),",
                r.scheme.format(),
                r.scheme.group(),
                r.gaussian
            );
        }
        let max = |f: fn(&Row) -> f64| rows.iter().map(f).fold(0f64, f64::max);
        let rounding = max(|r| r.f32_matmul.max(r.isa_spread.0).max(r.isa_spread.1));
        println!("ROUNDING (measured, round up) = {rounding:.3e}");
        println!("INT8_ACTIVATIONS = {:.3e}", max(|r| r.int8_matmul));
        println!("INT8X2_ACTIVATIONS = {:.3e}", max(|r| r.int8x2_matmul));
        return;
    }
    println!(
        "| format | group | bits/weight | round trip, gaussian | round trip, 0.1% outliers | budget | matmul, f32 acts | matmul, int8 acts | matmul, int8x2 acts | ISA spread, f32 / int8 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.3} | {:.4} | {:.4} | {:.4} | {:.1e} | {:.1e} | {:.1e} | {:.1e} / {:.1e} |",
            r.scheme.format(),
            group_label(r.scheme.group()),
            r.bits_per_weight,
            r.gaussian,
            r.outliers,
            budget::round_trip_budget(r.scheme),
            r.f32_matmul,
            r.int8_matmul,
            r.int8x2_matmul,
            r.isa_spread.0,
            r.isa_spread.1,
        );
    }
}
