//! x on the int8 grids of the integer products (quantize_x.wgsl): what qmv.wgsl multiplies under
//! `MatmulPrecision::Int8x2`, made once per product by a dispatch of its own.

use bytemuck::{Pod, Zeroable};

use super::{Variants, with_reductions};
use crate::qmatmul::FusedInput;
use crate::{Gpu, GpuBuffer};

pub const SOURCES: Variants = with_reductions!("int8_grid.wgsl", "quantize_x.wgsl");

/// Bytes of one block of 32 values of x on its grids: 5 vec4s of words.
pub const BLOCK_BYTES: u64 = 80;

/// Blocks a workgroup quantizes (quantize_x.wgsl `BPW`: 8 threads each, of the row kernels'
/// 256).
const BLOCKS_PER_WORKGROUP: usize = 32;

/// Mirrors `Params` in quantize_x.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    k: u32,
    blocks: u32,
    x_stride: u32,
    mode: u32,
    eps: f32,
    _pad: [u32; 2],
}

impl Gpu {
    /// Records `out = grids(f(x))` for `m` rows of `k` values, `x_stride` floats apart, in
    /// `blocks` blocks of 32 each (K padded with zeros), where f is `input` (the RMSNorm takes
    /// its weight from `input`; SwiGLU reads rows of 2K). The caller has checked the shapes
    /// (qmatmul.rs): `x` holds `m` rows, `out` `m * blocks * BLOCK_BYTES` bytes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_quantize_x(
        &self,
        encoder: &mut crate::Recorder,
        x: &GpuBuffer,
        (m, k, blocks): (usize, usize, usize),
        x_stride: usize,
        input: FusedInput<'_>,
        out: &GpuBuffer,
    ) {
        let (mode, eps, weight) = match input {
            // Already on its grids: never asked for (qmatmul.rs), and x as given otherwise.
            FusedInput::Plain | FusedInput::NormedInt8 { .. } | FusedInput::Int8 { .. } => {
                (0, 0.0, x)
            }
            FusedInput::RmsNorm { weight, eps } => (1, eps, weight),
            FusedInput::SwiGlu => (2, 0.0, x),
        };
        let params = Params {
            m: m as u32,
            k: k as u32,
            blocks: blocks as u32,
            x_stride: x_stride as u32,
            mode,
            eps,
            _pad: [0; 2],
        };
        let pipe = self.row_pipeline("quantize_x", &SOURCES);
        // A workgroup per BLOCKS_PER_WORKGROUP blocks of a row (m is at most qmv's MAX_M).
        let groups = [blocks.div_ceil(BLOCKS_PER_WORKGROUP) as u32, m as u32, 1];
        self.dispatch(encoder, &pipe, &params, &[x, out, weight], groups);
    }
}
