//! The round-trip budgets stay tied to what the quantizers do: a fresh measurement on other
//! weights lands within 10% of the stored one. If a quantizer improves or regresses, this fails
//! and asks for the table in docs/formats.md to be measured again.

use marlin_quant::quantize;
use marlin_testkit::budget::{MARGIN, measured_round_trip, round_trip_budget};
use marlin_testkit::reference::rel_rmse;
use marlin_testkit::{rng, schemes};

#[test]
fn round_trip_budgets_match_a_fresh_measurement() {
    let (rows, cols) = (64, 4096);
    let w = rng::gaussian(99, rows * cols, 0.02);
    for scheme in schemes() {
        let q = quantize(&w, rows, cols, scheme).unwrap();
        let fresh = rel_rmse(&q.dequantize(), &w);
        let stored = measured_round_trip(scheme);
        assert!(
            (fresh / stored - 1.0).abs() < 0.1,
            "{scheme}: measured {fresh:.4} now, {stored:.4} in the table: rerun \
             `cargo run --release -p marlin-testkit --example error_table` and update \
             budget.rs and docs/formats.md"
        );
        assert_eq!(round_trip_budget(scheme), stored * MARGIN);
    }
}
