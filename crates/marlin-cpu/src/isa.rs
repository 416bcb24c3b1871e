//! Which instruction set the kernels use, chosen at run time.

use std::fmt;
use std::str::FromStr;

/// An instruction-set level of the CPU kernels. Every level computes the same result within
/// the format's tolerance; `Scalar` is always built and tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    Scalar,
    /// AVX2 + FMA + F16C (x86-64, 2013 on).
    Avx2,
    /// AVX-512 F/BW/VL + VNNI (x86-64 server parts, Ice Lake on, Zen 4 on).
    Avx512Vnni,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    /// Whether this CPU can run the level.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                Isa::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every level this CPU can run, slowest first.
    pub fn available() -> Vec<Isa> {
        Self::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The fastest level available, unless `MARLIN_CPU_ISA` names another one.
    pub fn detect() -> Isa {
        let best = *Self::available()
            .last()
            .expect("scalar is always available");
        match std::env::var("MARLIN_CPU_ISA")
            .ok()
            .and_then(|s| s.parse::<Isa>().ok())
        {
            Some(isa) if isa.is_available() => isa,
            _ => best,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| format!("unknown CPU ISA '{s}': expected scalar, avx2 or avx512vnni"))
    }
}
