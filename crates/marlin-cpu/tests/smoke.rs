use marlin_cpu::{Activations, CpuBackend, Isa};
use marlin_quant::{Format, Group, Scheme, quantize};

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

#[test]
fn every_isa_matches_dequantized_reference() {
    let mut seed = 7u64;
    for &(m, n, k) in &[(1, 3, 67), (3, 67, 256), (9, 5, 4097), (16, 33, 128)] {
        let wf: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
        let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
        for format in Format::ALL {
            let groups: Vec<Group> = match format {
                Format::Mxfp4 | Format::Nvfp4 => vec![format.default_group()],
                Format::Fp8 => vec![Group::PerChannel, Group::Size(16)],
                _ => Group::SIZES.iter().map(|&g| Group::Size(g)).collect(),
            };
            for g in groups {
                let w = quantize(&wf, n, k, Scheme::new(format, g).unwrap()).unwrap();
                let deq = w.dequantize();
                let mut reference = vec![0f64; m * n];
                for i in 0..m {
                    for j in 0..n {
                        reference[i * n + j] = (0..k)
                            .map(|t| x[i * k + t] as f64 * deq[j * k + t] as f64)
                            .sum();
                    }
                }
                let scale = (k as f64).sqrt() * 0.6;
                for isa in Isa::available() {
                    for acts in [Activations::Int8, Activations::F32] {
                        let be = CpuBackend::new(isa).unwrap().with_activations(acts);
                        let mut y = vec![0f32; m * n];
                        be.matmul(&x, m, &w, &mut y).unwrap();
                        let tol = if acts == Activations::F32 || format == Format::Fp8 {
                            1e-4
                        } else {
                            3e-2
                        };
                        for (a, b) in y.iter().zip(&reference) {
                            assert!(
                                ((*a as f64) - b).abs() <= tol * scale,
                                "{format} {g} {isa} {acts:?} m{m} n{n} k{k}: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }
}
