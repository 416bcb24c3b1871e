//! A forward pass on the GPU device: what it records into, when it is submitted (the GPU runs
//! the first layers while the host records the next), the int8 grids one product leaves for
//! the next, and the end of the pass (submit, wait, read back).

use marlin_gpu::{GpuBuffer, KvBatch, Recorder};

use super::{GpuAct, GpuCache, GpuDevice};
use crate::ModelError;

/// One forward pass being recorded.
pub struct GpuPass {
    pub(super) encoder: Recorder,
    pub(super) batch: KvBatch,
    /// Every sequence adds one token: split-K decode attention; else the tiled prefill kernel.
    pub(super) decode: bool,
    pub(super) counts: Vec<(marlin_gpu::SeqId, usize)>,
    pub(super) started: std::time::Instant,
    /// Residual adds recorded, and submissions made, so far.
    pub(super) adds: usize,
    pub(super) submits: usize,
    /// Residual adds after which the pass is submitted next, and the gap after that.
    pub(super) next_submit: usize,
    pub(super) gap: usize,
    /// h times a norm's weight on int8 grids, left by the last product that added to h
    /// (`project_add_before_norm`) for the next, which takes it if it multiplies that norm of h.
    pub(super) int8_h: Option<Int8H>,
    /// The pass's token ids once embedded; before, the last pass's buffer to write them into.
    pub(super) token_ids: Option<GpuBuffer>,
    /// silu(gate) * up on int8 grids, left by the gate|up product (`project_before_swiglu`)
    /// for the down product, which takes it if it multiplies the SwiGLU of that gate|up.
    pub(super) int8_swiglu: Option<Int8SwiGlu>,
}

/// What `GpuPass::int8_swiglu` holds: the grids, and which gate|up they are of.
pub(super) struct Int8SwiGlu {
    pub(super) gate_up: marlin_gpu::wgpu::Buffer,
    pub(super) grids: GpuAct,
}

/// What `GpuPass::int8_h` holds: the grids, and which h and norm they are of.
pub(super) struct Int8H {
    pub(super) h: marlin_gpu::wgpu::Buffer,
    pub(super) norm: marlin_gpu::wgpu::Buffer,
    pub(super) grids: GpuAct,
}

/// When a pass is submitted, in residual adds (two per layer): after the first layer, then
/// after gaps growing by half each time, from one layer to at most eight. The GPU starts on
/// the first layer at once and runs while the host records the next; each submission holds
/// enough layers for the GPU to be busy while the host records the one after it (the host
/// records a layer in less time than the GPU runs it), and a submission has its own cost.
/// On the H100 a Llama-3.1-8B INT4 decode step records in ~2 ms and runs in ~3.2 (recorded
/// whole, then submitted once); a fixed 8 layers a submission after the first measured
/// 241-263 tokens/s, this schedule 272-277 (session 14, docs/benchmarks.md; session 6:
/// every 4 layers 196, every layer 179, 1 then 8 206-207).
const FIRST_SUBMIT: usize = 2;
const FIRST_GAP: usize = 2;
const MAX_GAP: usize = 16;

/// `MARLIN_GPU_PROFILE=1` prints, for every forward pass, the host's time recording and
/// submitting its commands, and the time from then to having the logits back.
const PROFILE_ENV: &str = "MARLIN_GPU_PROFILE";

fn profiling() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var(PROFILE_ENV).is_ok_and(|v| v == "1"))
}

impl GpuPass {
    /// A pass recording into `encoder`, over `batch`'s tokens (`counts` of each sequence),
    /// its token ids to be written into `token_ids` where given (the last pass's buffer).
    pub(super) fn new(
        encoder: Recorder,
        batch: KvBatch,
        decode: bool,
        counts: Vec<(marlin_gpu::SeqId, usize)>,
        token_ids: Option<GpuBuffer>,
    ) -> Self {
        GpuPass {
            encoder,
            batch,
            decode,
            counts,
            started: std::time::Instant::now(),
            adds: 0,
            submits: 0,
            next_submit: FIRST_SUBMIT,
            gap: FIRST_GAP,
            int8_h: None,
            token_ids,
            int8_swiglu: None,
        }
    }
}

impl GpuDevice {
    /// Runs the pass and reads back the token ids it wrote to `ids`.
    pub(super) fn read_ids(
        &self,
        pass: GpuPass,
        cache: &mut GpuCache,
        ids: &GpuBuffer,
    ) -> Result<Vec<u32>, ModelError> {
        let bytes = self.run(pass, cache, ids)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Counts a residual add, submitting what is recorded when [`FIRST_SUBMIT`]'s schedule says.
    pub(super) fn added(&self, pass: &mut GpuPass) {
        pass.adds += 1;
        if pass.adds == pass.next_submit {
            pass.next_submit += pass.gap;
            pass.gap = (pass.gap + pass.gap.div_ceil(2)).min(MAX_GAP);
            // wgpu runs submissions in order: what comes next sees all of this.
            let done = std::mem::replace(&mut pass.encoder, self.gpu.encoder());
            self.gpu.submit(done);
            pass.submits += 1;
        }
    }

    /// Ends a pass after recording, under `MARLIN_GPU_PROFILE=1`, how long its parts took.
    pub(super) fn run(
        &self,
        pass: GpuPass,
        cache: &mut GpuCache,
        out: &GpuBuffer,
    ) -> Result<Vec<u8>, ModelError> {
        self.gpu.submit(pass.encoder);
        let submitted = pass.started.elapsed();
        let bytes = self.gpu.read(out)?;
        if profiling() {
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            eprintln!(
                "{PROFILE_ENV}: {} tokens: recorded and submitted in {:.3} ms ({} submissions), \
                 then waited and read back in {:.3} ms",
                pass.batch.len(),
                ms(submitted),
                pass.submits + 1,
                ms(pass.started.elapsed() - submitted)
            );
        }
        cache.token_ids = pass.token_ids;
        for (g, n) in pass.counts {
            cache.cache.advance(g, n)?;
        }
        Ok(bytes)
    }
}
