//! Every backend present on this machine, and the runner behind [`crate::on_every_backend!`].

use std::any::Any;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};

use marlin_core::QuantMatmul;
use marlin_cpu::{Activations, CpuBackend, Isa};
use marlin_gpu::{GpuBackend, MatmulPrecision};
use marlin_quant::Scheme;

use crate::budget::{self, Precision};

/// A backend under test, with the activation precision its error budget depends on.
/// Derefs to the backend, so `b.name()` and `b.quant_matmul(..)` work directly.
pub struct TestBackend {
    backend: Box<dyn QuantMatmul>,
    precision: Precision,
}

impl TestBackend {
    pub fn new(backend: Box<dyn QuantMatmul>, precision: Precision) -> Self {
        TestBackend { backend, precision }
    }

    /// The precision of activations inside its quantized matmul.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// [`budget::matmul_budget`] for this backend.
    pub fn matmul_budget(&self, scheme: Scheme) -> f64 {
        budget::matmul_budget(scheme, self.precision)
    }
}

impl Deref for TestBackend {
    type Target = dyn QuantMatmul;
    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}

/// Every backend present: the CPU at every available ISA, each with int8, f32 and int8x2
/// activations, and the GPU (f32, and int8x2 decode) when [`marlin_gpu::test_gpu`] finds an adapter,
/// lavapipe included. With `MARLIN_REQUIRE_GPU=1` a missing adapter is a failure, not a skip.
///
/// `MARLIN_TEST_BACKEND=<text>` keeps only the backends whose name contains `<text>`, e.g.
/// `MARLIN_TEST_BACKEND=avx2` while debugging one kernel.
pub fn backends() -> Vec<TestBackend> {
    let mut all = Vec::new();
    for isa in Isa::available() {
        let cpu = CpuBackend::new(isa).expect("Isa::available lists only available levels");
        for acts in [Activations::Int8, Activations::F32, Activations::Int8x2] {
            all.push(TestBackend::new(
                Box::new(cpu.with_activations(acts)),
                acts.into(),
            ));
        }
    }
    // Opened once per process by marlin-gpu, so every test shares its compiled pipelines.
    if let Some(gpu) = marlin_gpu::test_gpu() {
        all.push(TestBackend::new(
            Box::new(GpuBackend::new(gpu.clone())),
            Precision::F32,
        ));
        // Int8x2 decode for the integer formats, with prefill on cooperative matrices in f16
        // where the device has them (whose error bounds both); and Mixed there too.
        let coop = gpu.capabilities().coop.is_some();
        all.push(TestBackend::new(
            Box::new(GpuBackend::with_precision(
                gpu.clone(),
                MatmulPrecision::Int8x2,
            )),
            if coop {
                Precision::F16
            } else {
                Precision::Int8x2
            },
        ));
        if coop {
            all.push(TestBackend::new(
                Box::new(GpuBackend::with_precision(gpu, MatmulPrecision::Mixed)),
                Precision::F16,
            ));
        }
    }
    let filter = std::env::var("MARLIN_TEST_BACKEND").unwrap_or_default();
    all.retain(|b| b.name().contains(filter.as_str()));
    all
}

/// Runs `body` on every backend; if any fail, panics naming each failed backend and its
/// message. Every backend runs even after one fails, so one report shows them all.
pub fn run_on_every_backend(test: &str, body: impl Fn(&TestBackend)) {
    let all = backends();
    assert!(
        !all.is_empty(),
        "{test}: no backend matches MARLIN_TEST_BACKEND"
    );
    let mut failures = Vec::new();
    for backend in &all {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| body(backend))) {
            failures.push(format!("[{}] {}", backend.name(), panic_message(&*payload)));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{test} failed on {} of {} backends:\n{}",
            failures.len(),
            all.len(),
            failures.join("\n")
        );
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(panic without a message)".to_string()
    }
}

/// Defines a `#[test]` that runs its body once per backend of [`backends`], with the backend
/// (a `&TestBackend`) bound to the given name. A failure names the backend.
///
/// ```
/// use marlin_testkit::on_every_backend;
///
/// on_every_backend! {
///     /// Attributes and doc comments are kept.
///     fn reports_a_name(backend) {
///         assert!(!backend.name().is_empty());
///     }
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! on_every_backend {
    ($(
        $(#[$meta:meta])*
        fn $name:ident($backend:ident) $body:block
    )*) => {$(
        $(#[$meta])*
        #[test]
        fn $name() {
            $crate::backends::run_on_every_backend(
                stringify!($name),
                |$backend: &$crate::backends::TestBackend| $body,
            );
        }
    )*};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_scalar_in_both_precisions_and_names_are_unique() {
        let names: Vec<String> = backends().iter().map(|b| b.name()).collect();
        assert!(names.contains(&"cpu-scalar".to_string()), "{names:?}");
        assert!(names.contains(&"cpu-scalar-f32".to_string()), "{names:?}");
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    #[test]
    fn a_failure_names_every_failing_backend() {
        let err = catch_unwind(|| {
            run_on_every_backend("demo", |b| {
                assert!(b.precision() == Precision::Int8, "wanted int8");
            })
        })
        .expect_err("f32 backends fail");
        let msg = panic_message(&*err);
        assert!(msg.contains("[cpu-scalar-f32] wanted int8"), "{msg}");
        assert!(!msg.contains("[cpu-scalar] "), "{msg}");
    }
}
