//! Decode attention's second step: merging the split-K partials (combine.wgsl). Launched by
//! [`crate::GpuKvCache::decode_attention`] right after decode.wgsl, in the same submission.

use bytemuck::{Pod, Zeroable};

pub const SOURCE: &str = include_str!("combine.wgsl");

/// Mirrors `Params` in combine.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub heads: u32,
    pub head_dim: u32,
    pub splits: u32,
    pub _pad: u32,
}
