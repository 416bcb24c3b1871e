//! Test helpers of the quantized matmul kernels: seeded data, and one product checked against
//! the f64 product of x with the scalar `QuantMatrix::dequantize` (the spec of every format).
//! The full conformance suite is crates/marlin-testkit/tests/quant_matmul.rs; these tests cover
//! what it cannot reach from the trait: forced kernels and variants.

pub(crate) use crate::qmatmul::Plan;
use marlin_quant::{Format, Group, Scheme, quantize};

/// Every scheme a user can ask for (each format with each group it allows).
pub(crate) fn schemes() -> Vec<Scheme> {
    let groups = Group::SIZES.map(Group::Size);
    Format::ALL
        .iter()
        .flat_map(|&f| {
            groups
                .into_iter()
                .chain([Group::PerChannel])
                .filter_map(move |g| Scheme::new(f, g).ok())
        })
        .collect()
}

/// `len` values of N(0, std²) from `seed` (xorshift64* and Box-Muller).
pub(crate) fn gaussian(seed: u64, len: usize, std: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        // The top 53 bits as a float in (0, 1].
        ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) + 1) as f64 / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let (u1, u2) = (uniform(), uniform());
            let r = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (r * std as f64) as f32
        })
        .collect()
}

/// Runs `scheme` at (m, n, k) on `gpu` with `plan` and checks every output against the f64
/// reference, relative to `sqrt(sum_k (x w)^2)`: within 2.4e-5, the conformance suite's
/// per-output bound (`TAIL * matmul_budget(_, F32)` in marlin-testkit).
pub(crate) fn check(gpu: &crate::Gpu, scheme: Scheme, shape: (usize, usize, usize), plan: Plan) {
    check_within(gpu, scheme, shape, plan, 2.4e-5);
}

/// [`check`] with every output within `tol` of its scale.
pub(crate) fn check_within(
    gpu: &crate::Gpu,
    scheme: Scheme,
    (m, n, k): (usize, usize, usize),
    plan: Plan,
    tol: f64,
) {
    let seed = (m * 7919 + n * 104_729 + k) as u64;
    let x = gaussian(seed, m * k, 1.0);
    let w = quantize(&gaussian(seed + 1, n * k, 0.02), n, k, scheme).unwrap();
    let deq = w.dequantize();
    let gw = gpu.upload_quant(&w).unwrap();
    let xb = gpu.upload_f32("x", &x);
    let yb = gpu.zeros("y", (m * n * 4) as u64);
    gpu.quant_matmul_with(&xb, m, &gw, &yb, plan)
        .unwrap_or_else(|e| panic!("{scheme} m{m} n{n} k{k}: {e}"));
    let y = gpu.read_f32(&yb).unwrap();
    for i in 0..m {
        for j in 0..n {
            let (xr, wr) = (&x[i * k..(i + 1) * k], &deq[j * k..(j + 1) * k]);
            let exact: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
            let scale: f64 = xr
                .iter()
                .zip(wr)
                .map(|(&a, &b)| (a as f64 * b as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let err = (y[i * n + j] as f64 - exact).abs() / scale.max(f64::MIN_POSITIVE);
            assert!(
                err <= tol,
                "{scheme} m{m} n{n} k{k} {plan:?}: y[{i},{j}] = {} but the reference is {exact} \
                 (error {err:.2e} of its scale)",
                y[i * n + j]
            );
        }
    }
}
