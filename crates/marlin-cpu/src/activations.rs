//! Activations quantized to 8 bits inside the kernel, as llama.cpp's Q8_0: blocks of 32 with an
//! f32 scale `amax / 127`. The error this adds is measured in `docs/formats.md`; the f32 path
//! ([`crate::Activations::F32`]) avoids it.

use marlin_quant::BLOCK;

/// `m` rows of activations on the int8 grid, laid out for the kernels.
pub(crate) struct Q8Rows {
    pub m: usize,
    /// Row length padded to the weights' padded K.
    pub k_pad: usize,
    /// (m, k_pad) int8 values; zero past K.
    pub q: Vec<i8>,
    /// (m, k_pad / 4): the block scale of every 4 values, one per 32-bit SIMD lane, so the
    /// kernels load lane scales instead of shuffling block scales.
    pub lane_scale: Vec<f32>,
    /// (m, groups): sum of the dequantized activations of each weight group, for bias terms.
    pub group_sum: Vec<f32>,
}

impl Q8Rows {
    // x (m, k) -> Q8Rows (m, k_pad)
    pub fn quantize(x: &[f32], m: usize, k: usize, k_pad: usize, group_len: usize) -> Self {
        let groups = k_pad / group_len;
        let mut out = Q8Rows {
            m,
            k_pad,
            q: vec![0; m * k_pad],
            lane_scale: vec![0.0; m * k_pad / 4],
            group_sum: vec![0.0; m * groups],
        };
        let mut block = [0f32; BLOCK];
        for r in 0..m {
            let xr = &x[r * k..(r + 1) * k];
            let q = &mut out.q[r * k_pad..(r + 1) * k_pad];
            let lanes = &mut out.lane_scale[r * k_pad / 4..(r + 1) * k_pad / 4];
            let sums = &mut out.group_sum[r * groups..(r + 1) * groups];
            for b in 0..k_pad / BLOCK {
                let start = b * BLOCK;
                block.fill(0.0);
                if start < k {
                    let end = (start + BLOCK).min(k);
                    block[..end - start].copy_from_slice(&xr[start..end]);
                }
                let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
                for (i, v) in block.iter().enumerate() {
                    let qi = (v * inv).round() as i8;
                    q[start + i] = qi;
                    sums[(start + i) / group_len] += d * qi as f32;
                }
                lanes[start / 4..(start + BLOCK) / 4].fill(d);
            }
        }
        out
    }

    pub fn row(&self, r: usize) -> (&[i8], &[f32]) {
        let (k, l) = (self.k_pad, self.k_pad / 4);
        (
            &self.q[r * k..(r + 1) * k],
            &self.lane_scale[r * l..(r + 1) * l],
        )
    }

    pub fn group_sums(&self, r: usize) -> &[f32] {
        let g = self.group_sum.len() / self.m;
        &self.group_sum[r * g..(r + 1) * g]
    }
}
