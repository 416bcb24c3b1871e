//! What the kernels' tests share: seeded values, a closeness check against an f64 reference,
//! and running one recorded op.

use crate::{Gpu, GpuBuffer};

/// `len` values in `[-scale, scale)`, the same for the same seed (splitmix64: no dependency,
/// and plenty for test data).
pub fn values(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // The top 24 bits: exact in an f32.
            let unit = (z >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * unit - 1.0) * scale
        })
        .collect()
}

/// `|got - want| <= tol * (1 + |want|)` everywhere: relative for large values, absolute near
/// zero (where a relative bound means nothing).
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (&g, &w))| (i, (g as f64 - w).abs() / (1.0 + w.abs())))
        .fold(
            (0, 0.0f64),
            |a, b| if b.1 > a.1 || b.1.is_nan() { b } else { a },
        );
    assert!(
        worst.1 <= tol,
        "{what}: element {} is {} where {} was wanted (error {:.3e} > {tol:.1e})",
        worst.0,
        got[worst.0],
        want[worst.0],
        worst.1
    );
}

/// Records with `op` into a new encoder, submits it, and waits (through the read-back).
pub fn run(gpu: &Gpu, op: impl FnOnce(&mut crate::Recorder)) {
    let mut encoder = gpu.encoder();
    op(&mut encoder);
    gpu.submit(encoder);
}

pub fn read_u32(gpu: &Gpu, buf: &GpuBuffer) -> Vec<u32> {
    gpu.read(buf)
        .unwrap()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

pub fn upload_u32(gpu: &Gpu, label: &str, values: &[u32]) -> GpuBuffer {
    gpu.upload(label, bytemuck::cast_slice(values))
}
