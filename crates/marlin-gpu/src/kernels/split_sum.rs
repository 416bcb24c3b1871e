//! The sum of a split-K product's slabs (split_sum.wgsl): `y = Σ_s parts[s]`.

use bytemuck::{Pod, Zeroable};

use super::{WG, grid};
use crate::{Gpu, GpuBuffer};

pub const SOURCE: &str = include_str!("split_sum.wgsl");

/// Mirrors `Params` in split_sum.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    count: u32,
    splits: u32,
    _pad: [u32; 2],
}

impl Gpu {
    /// Records `y[i] = Σ_s parts[s * count + i]` for i < count: the caller (the quantized
    /// matmul) has checked the sizes.
    pub(crate) fn record_split_sum(
        &self,
        encoder: &mut crate::Recorder,
        y: &GpuBuffer,
        parts: &GpuBuffer,
        count: usize,
        splits: u32,
    ) {
        debug_assert!(y.len() >= count as u64 * 4);
        debug_assert!(parts.len() >= count as u64 * 4 * splits as u64);
        let pipe = self.pipeline("split_sum", SOURCE);
        let params = Params {
            count: count as u32,
            splits,
            _pad: [0; 2],
        };
        self.dispatch(encoder, &pipe, &params, &[y, parts], grid(count as u64, WG));
    }
}
