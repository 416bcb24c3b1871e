//! The test kit of Metal Marlin (a dev-dependency only).
//!
//! - [`rng`]: random tensors from fixed seeds.
//! - [`reference`]: plain f64 reference ops and error measures.
//! - [`budget`]: named error budgets per format and group size, from measured numbers.
//! - [`backends`]: every backend present, and [`on_every_backend!`], which runs a test body on
//!   each of them and names the backend in any failure.

pub mod backends;
pub mod budget;
pub mod reference;
pub mod rng;

pub use backends::{TestBackend, backends};
pub use budget::{Precision, matmul_budget, round_trip_budget};

use marlin_quant::{Format, Group, Scheme};

/// Every scheme a user can ask for: each format with each group it allows
/// (16/32/64/128, MXFP4 fixed at 32, NVFP4 at 16, FP8 also per-channel).
pub fn schemes() -> Vec<Scheme> {
    let groups = Group::SIZES
        .iter()
        .map(|&g| Group::Size(g))
        .chain([Group::PerChannel]);
    let groups: Vec<Group> = groups.collect();
    Format::ALL
        .iter()
        .flat_map(|&f| groups.iter().filter_map(move |&g| Scheme::new(f, g).ok()))
        .collect()
}

/// The default model (SmolLM2-135M-Instruct, GGUF Q4_1) for tests that run it:
/// `MARLIN_SMOLLM2_GGUF` when set, else the cache that `metal-marlin generate` uses, fetching it
/// there first if needed (`marlin_models::default_model`). A test that needs it fails, with the
/// reason, when it cannot be had: a skipped test would hide a missing model on CI.
pub fn smollm2_gguf() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("MARLIN_SMOLLM2_GGUF").filter(|p| !p.is_empty()) {
        let p = std::path::PathBuf::from(p);
        assert!(
            p.is_file(),
            "MARLIN_SMOLLM2_GGUF={} is not a file",
            p.display()
        );
        return p;
    }
    marlin_models::default_model::path(|msg| eprintln!("{msg}"))
        .unwrap_or_else(|e| panic!("the default model is needed by this test: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_cover_every_format_and_allowed_group() {
        let s = schemes();
        assert_eq!(s.len(), 31);
        for f in Format::ALL {
            assert!(s.contains(&Scheme::of(f)), "{f} default group missing");
        }
        assert!(s.contains(&Scheme::new(Format::Fp8, Group::PerChannel).unwrap()));
    }
}
