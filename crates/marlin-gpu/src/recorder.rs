//! Recording a submission: every dispatch goes into one compute pass, and every kernel's
//! parameters into shared uniform blocks written once when the work is submitted.
//!
//! Measured on the H100 (Vulkan) with a pass and a uniform buffer per dispatch: a SmolLM2
//! decode step of 393 dispatches spent 1.8 ms creating uniform buffers, 5.8 ms in the submit
//! and 8.5 ms running on the GPU, for 80 MB of weights (tens of µs at its bandwidth). One pass
//! lets wgpu track the buffers once and place only the barriers the dispatches need; one
//! uniform block per 256 dispatches replaces as many buffer allocations and staging copies.

use std::num::NonZeroU64;

use crate::Gpu;

/// Bytes of one uniform block: 256 dispatches at the usual 256-byte offset alignment.
const BLOCK_BYTES: u64 = 64 << 10;

/// Commands being recorded for one submission ([`Gpu::encoder`], then [`Gpu::submit`]).
pub struct Recorder {
    encoder: wgpu::CommandEncoder,
    /// The open compute pass, which holds the encoder until it ends.
    pass: Option<wgpu::ComputePass<'static>>,
    /// Uniform blocks and the bytes written into each so far.
    blocks: Vec<(wgpu::Buffer, Vec<u8>)>,
    /// `MARLIN_GPU_PROFILE=kernels`: each dispatch in a pass of its own between timestamps.
    profile: Option<KernelProfile>,
}

/// What [`Recorder::finish`] gives: the commands, the uniform blocks to give back once they
/// are submitted, and, when profiling, the buffer the timestamps will be read from with the
/// kernel of each pair.
pub(crate) type Finished = (
    wgpu::CommandBuffer,
    Vec<wgpu::Buffer>,
    Option<(wgpu::Buffer, Vec<String>)>,
);

/// Timestamps around each dispatch, and which kernel each pair belongs to.
pub(crate) struct KernelProfile {
    queries: wgpu::QuerySet,
    pub(crate) kernels: Vec<String>,
}

/// Timestamp pairs one profiled submission holds at most (wgpu's query-set limit is 4096).
pub(crate) const PROFILE_DISPATCHES: u32 = 2048;

/// `MARLIN_GPU_PROFILE=kernels` times every dispatch by GPU timestamps (each in a compute pass
/// of its own, so slower than usual) and prints the time per kernel after each submission.
pub const PROFILE_ENV: &str = "MARLIN_GPU_PROFILE";

pub(crate) fn profiling_kernels() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var(PROFILE_ENV).is_ok_and(|v| v == "kernels"))
}

impl Recorder {
    pub(crate) fn new(gpu: &Gpu, encoder: wgpu::CommandEncoder) -> Self {
        let profile = (profiling_kernels() && gpu.has_timestamps()).then(|| KernelProfile {
            queries: gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * PROFILE_DISPATCHES,
            }),
            kernels: Vec::new(),
        });
        Recorder {
            encoder,
            pass: None,
            blocks: Vec::new(),
            profile,
        }
    }

    /// The pass for a dispatch of kernel `key`: the open one, or, when profiling, a new one
    /// between timestamps.
    pub(crate) fn pass_for(&mut self, key: &str) -> &mut wgpu::ComputePass<'static> {
        match &mut self.profile {
            Some(p) if (p.kernels.len() as u32) < PROFILE_DISPATCHES => {
                let i = p.kernels.len() as u32;
                p.kernels.push(key.to_string());
                self.pass = None;
                let pass = self
                    .encoder
                    .begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &p.queries,
                            beginning_of_pass_write_index: Some(2 * i),
                            end_of_pass_write_index: Some(2 * i + 1),
                        }),
                    })
                    .forget_lifetime();
                self.pass.insert(pass)
            }
            _ => self.pass(),
        }
    }

    /// The encoder itself, for commands outside a compute pass (copies, timestamps): the open
    /// pass ends here, and the next dispatch opens another.
    pub fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        &mut self.encoder
    }

    /// The compute pass the dispatches go into, opened on first use.
    pub(crate) fn pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        let encoder = &mut self.encoder;
        self.pass.get_or_insert_with(|| {
            encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                .forget_lifetime()
        })
    }

    /// Places `params` in a uniform block: the block and the binding of its bytes.
    pub(crate) fn params(&mut self, gpu: &Gpu, params: &[u8]) -> (usize, u64, NonZeroU64) {
        let align = gpu.inner.uniform_align;
        // Uniform bindings are read in 16-byte rows: bind whole rows.
        let size = (params.len() as u64).div_ceil(16).max(1) * 16;
        let fits = |used: usize| (used as u64).next_multiple_of(align) + size <= BLOCK_BYTES;
        if !self.blocks.last().is_some_and(|(_, used)| fits(used.len())) {
            self.blocks.push((
                gpu.uniform_block(BLOCK_BYTES),
                Vec::with_capacity(BLOCK_BYTES as usize),
            ));
        }
        let index = self.blocks.len() - 1;
        let bytes = &mut self.blocks[index].1;
        let offset = (bytes.len() as u64).next_multiple_of(align);
        bytes.resize(offset as usize, 0);
        bytes.extend_from_slice(params);
        bytes.resize((offset + size) as usize, 0);
        (index, offset, NonZeroU64::new(size).expect("at least 16"))
    }

    /// The uniform block `index`, for a bind group.
    pub(crate) fn block(&self, index: usize) -> &wgpu::Buffer {
        &self.blocks[index].0
    }

    /// Writes the parameters to their blocks and returns the encoder's commands, the blocks to
    /// give back once they are submitted, and, when profiling, the buffer the timestamps will
    /// be in with the kernel of each pair.
    pub(crate) fn finish(mut self, gpu: &Gpu) -> Finished {
        self.pass = None;
        let profile = self
            .profile
            .take()
            .filter(|p| !p.kernels.is_empty())
            .map(|p| {
                let bytes = 16 * p.kernels.len() as u64;
                let buffer = |usage| {
                    gpu.device().create_buffer(&wgpu::BufferDescriptor {
                        label: Some("kernel profile"),
                        size: bytes,
                        usage,
                        mapped_at_creation: false,
                    })
                };
                let resolved =
                    buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
                let read = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
                let pairs = 2 * p.kernels.len() as u32;
                self.encoder
                    .resolve_query_set(&p.queries, 0..pairs, &resolved, 0);
                self.encoder
                    .copy_buffer_to_buffer(&resolved, 0, &read, 0, bytes);
                (read, p.kernels)
            });
        for (buffer, bytes) in &self.blocks {
            // wgpu runs queue writes before the commands submitted after them, and after those
            // submitted before: a block reused from an earlier submission is safe.
            gpu.queue().write_buffer(buffer, 0, bytes);
        }
        let blocks = self.blocks.into_iter().map(|(b, _)| b).collect();
        (self.encoder.finish(), blocks, profile)
    }
}

impl Gpu {
    /// The GPU time of each kernel of a profiled submission (waits for it), to stderr.
    pub(crate) fn print_profile(&self, read: &wgpu::Buffer, kernels: &[String]) {
        let Ok(bytes) = self.map_read(read) else {
            return;
        };
        let period = f64::from(self.queue().get_timestamp_period());
        let tick =
            |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]));
        let mut by_kernel: Vec<(String, f64, usize)> = Vec::new();
        for (i, k) in kernels.iter().enumerate() {
            let us = tick(2 * i + 1).saturating_sub(tick(2 * i)) as f64 * period / 1e3;
            match by_kernel.iter_mut().find(|(name, _, _)| name == k) {
                Some(e) => {
                    e.1 += us;
                    e.2 += 1;
                }
                None => by_kernel.push((k.clone(), us, 1)),
            }
        }
        by_kernel.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = by_kernel.iter().map(|e| e.1).sum();
        eprintln!(
            "{}: {} dispatches, {total:.1} µs of kernels",
            PROFILE_ENV,
            kernels.len()
        );
        for (k, us, n) in by_kernel {
            eprintln!("  {us:10.1} µs {n:5} x  {k}");
        }
    }
}
