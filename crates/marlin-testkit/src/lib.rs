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
