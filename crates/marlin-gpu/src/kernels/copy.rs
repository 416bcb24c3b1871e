//! A buffer copy by a compute kernel (copy.wgsl): the bandwidth baseline of the GPU bench.

use bytemuck::{Pod, Zeroable};

use crate::{Gpu, GpuBuffer, GpuError};

pub const SOURCE: &str = include_str!("copy.wgsl");

/// Mirrors `Params` in copy.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    words: u32,
    _pad: [u32; 3],
}

/// Workgroups of the copy: enough to keep every core's memory pipes full (a grid-stride loop
/// covers the rest), within one grid dimension.
const GROUPS: u64 = 8192;

impl Gpu {
    /// Records a copy of all of `src` into `dst` (at least as large; both whole multiples of
    /// 16 bytes) by a compute kernel.
    // src (bytes), dst (>= bytes) -> dst[..bytes] = src
    pub fn record_copy(
        &self,
        encoder: &mut crate::Recorder,
        src: &GpuBuffer,
        dst: &GpuBuffer,
    ) -> Result<(), GpuError> {
        let size = src.buffer.size();
        let words = u32::try_from(size / 16).ok();
        if dst.buffer.size() < size || !size.is_multiple_of(16) || words.is_none() {
            return Err(GpuError::Shape {
                op: "copy",
                what: format!(
                    "src has {size} bytes and dst {}: dst must hold src, and src must be whole \
                     16-byte words (at most 2^32 of them)",
                    dst.buffer.size()
                ),
            });
        }
        self.bindable("copy", &[("src", src), ("dst", dst)])?;
        let pipe = self.pipeline("copy", SOURCE);
        let groups = (size / 16).div_ceil(256).clamp(1, GROUPS) as u32;
        let params = Params {
            words: words.unwrap_or(0),
            _pad: [0; 3],
        };
        self.dispatch(encoder, &pipe, &params, &[src, dst], [groups, 1, 1]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn copies_every_word_and_refuses_a_short_destination() {
        let Some(gpu) = crate::test_gpu() else { return };
        // 16 bytes * (256 threads * 8192 groups) is far beyond these: one pass, and a
        // length that is not a multiple of the workgroup.
        let values: Vec<f32> = (0..4 * 1000 + 12).map(|i| i as f32 * 0.25).collect();
        let src = gpu.upload_f32("src", &values);
        let dst = gpu.zeros("dst", values.len() as u64 * 4);
        let mut enc = gpu.encoder();
        gpu.record_copy(&mut enc, &src, &dst).unwrap();
        gpu.submit(enc);
        assert_eq!(gpu.read_f32(&dst).unwrap(), values);
        let small = gpu.zeros("small", 16);
        assert!(gpu.record_copy(&mut gpu.encoder(), &src, &small).is_err());
        let odd = gpu.upload_f32("odd", &[1.0, 2.0, 3.0]);
        assert!(gpu.record_copy(&mut gpu.encoder(), &odd, &dst).is_err());
    }
}
