//! Argmax over rows (argmax.wgsl): greedy sampling on the GPU, reading back only the ids.

use bytemuck::{Pod, Zeroable};

use super::view::{apart, need, product, shape_error};
use super::{Variants, grid, with_reductions};
use crate::{Gpu, GpuBuffer, GpuError};

pub const SOURCES: Variants = with_reductions!("argmax.wgsl");

/// Mirrors `Params` in argmax.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    chunk: u32,
    chunks: u32,
    stage: u32,
    _pad: [u32; 3],
}

/// Values per workgroup of a long row's first stage.
const CHUNK: usize = 4096;

impl Gpu {
    /// Records `out[r] = ` the index of the largest value of row `r` (a u32), the lowest index
    /// on ties, as `marlin_engine::sampler::argmax`. NaN counts as -inf, so it never wins over
    /// a number (the CPU sampler instead keeps index 0 when the row starts with NaN).
    // x (rows, n) -> out (rows) u32
    pub fn argmax(
        &self,
        encoder: &mut crate::Recorder,
        x: &GpuBuffer,
        out: &GpuBuffer,
        rows: usize,
        n: usize,
    ) -> Result<(), GpuError> {
        const OP: &str = "argmax";
        let len = product(OP, "x", rows, n)?;
        if n == 0 {
            return Err(shape_error(OP, "an empty row has no argmax".into()));
        }
        need(OP, "x", x, len as u64)?;
        need(OP, "out", out, rows as u64)?;
        apart(OP, ("out", out), &[("x", x)])?;
        self.bindable(OP, &[("x", x), ("out", out)])?;
        if rows == 0 {
            return Ok(());
        }
        let chunks = n.div_ceil(CHUNK);
        let pipe = self.row_pipeline(OP, &SOURCES);
        let params = |stage, chunks| Params {
            rows: rows as u32,
            n: n as u32,
            chunk: CHUNK as u32,
            chunks: chunks as u32,
            stage,
            _pad: [0; 3],
        };
        // Chunks by rows must fit one grid (65535 a side); past that, a workgroup per row.
        if chunks <= 1 || chunks > 65535 || rows > 65535 {
            // A binding cannot be empty; stage 0 never touches `part`.
            let part = self.scratch(8);
            let buffers = [x, out, &part];
            self.dispatch(
                encoder,
                &pipe,
                &params(0, 1),
                &buffers,
                grid(rows as u64, 1),
            );
            return Ok(());
        }
        // Written by stage 1 and read by stage 2 right after: the device's scratch buffer, the
        // same one call after call.
        let part = self.scratch((rows * chunks * 8) as u64);
        let buffers = [x, out, &part];
        let groups = [chunks as u32, rows as u32, 1];
        self.dispatch(encoder, &pipe, &params(1, chunks), &buffers, groups);
        self.dispatch(
            encoder,
            &pipe,
            &params(2, chunks),
            &buffers,
            grid(rows as u64, 1),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{read_u32, run, values};

    /// marlin-engine's sampler::argmax: the first largest.
    fn reference(row: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &l) in row.iter().enumerate() {
            if l > row[best] {
                best = i;
            }
        }
        best as u32
    }

    fn argmax_rows(gpu: &crate::Gpu, x: &[f32], rows: usize, n: usize) -> Vec<u32> {
        let (xb, out) = (gpu.upload_f32("x", x), gpu.zeros("ids", (rows * 4) as u64));
        run(gpu, |enc| gpu.argmax(enc, &xb, &out, rows, n).unwrap());
        read_u32(gpu, &out)
    }

    #[test]
    fn finds_the_largest_of_odd_rows() {
        let Some(gpu) = crate::test_gpu() else { return };
        for (rows, n) in [
            (1usize, 1usize),
            (3, 3),
            (2, 67),
            (1, 4097),
            (67, 5),
            (1, 151_936),
            (3, 9000),
        ] {
            let x = values(n as u64 + 1, rows * n, 10.0);
            let want: Vec<u32> = x.chunks_exact(n).map(reference).collect();
            assert_eq!(argmax_rows(&gpu, &x, rows, n), want, "rows {rows}, n {n}");
        }
    }

    /// Ties go to the lowest index wherever the copies sit: in one thread, in one subgroup,
    /// across subgroups and across the 256 threads' strides.
    #[test]
    fn ties_go_to_the_lowest_index() {
        let Some(gpu) = crate::test_gpu() else { return };
        let n = 4097;
        for places in [
            vec![5usize, 6],
            vec![300, 44],
            vec![4096, 3000, 1025],
            vec![7, 7 + 256],
            vec![255, 1, 2, 3],
            vec![0, 4096],
        ] {
            let mut x = values(9, n, 1.0);
            for &p in &places {
                x[p] = 2.0;
            }
            let want = *places.iter().min().unwrap() as u32;
            assert_eq!(
                argmax_rows(&gpu, &x, 1, n),
                vec![want],
                "copies at {places:?}"
            );
        }
        // All equal, and all -inf: index 0.
        assert_eq!(argmax_rows(&gpu, &vec![0.5; 67], 1, 67), vec![0]);
        assert_eq!(
            argmax_rows(&gpu, &vec![f32::NEG_INFINITY; 67], 1, 67),
            vec![0]
        );
    }

    #[test]
    fn nan_never_wins_over_a_number() {
        let Some(gpu) = crate::test_gpu() else { return };
        let mut x = vec![f32::NAN; 67];
        x[40] = -3.0;
        x[50] = -5.0;
        assert_eq!(argmax_rows(&gpu, &x, 1, 67), vec![40]);
    }

    #[test]
    fn refuses_bad_input() {
        let Some(gpu) = crate::test_gpu() else { return };
        let (x, out) = (gpu.zeros("x", 4 * 6), gpu.zeros("out", 4));
        let mut enc = gpu.encoder();
        assert!(gpu.argmax(&mut enc, &x, &out, 1, 0).is_err());
        assert!(gpu.argmax(&mut enc, &x, &out, 1, 7).is_err());
        assert!(gpu.argmax(&mut enc, &x, &out, 2, 3).is_err());
        assert!(gpu.argmax(&mut enc, &x, &x, 1, 6).is_err());
        assert!(gpu.argmax(&mut enc, &x, &out, 1, 6).is_ok());
    }
}
