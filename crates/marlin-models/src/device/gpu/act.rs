//! The GPU device's activations: rows of f32 in device buffers from a pool that reuses them
//! pass after pass.

use std::sync::{Arc, Mutex};

use marlin_gpu::kernels::View;
use marlin_gpu::{Gpu, GpuBuffer};

use crate::device::Part;

/// Activation buffers that outlived their use, for the next op that needs one of that size: a
/// forward pass allocates the same sizes layer after layer and pass after pass, so after the
/// first pass nothing is allocated. Reuse inside one encoder is safe: wgpu orders the
/// dispatches that touch a buffer as they were recorded.
#[derive(Debug, Clone)]
pub(super) struct Pool {
    free: Arc<Mutex<Vec<GpuBuffer>>>,
    /// Told to drop the bind groups of a buffer that leaves the pool, so that they do not keep it.
    gpu: Gpu,
}

/// Buffers the pool keeps at most (a prefill chunk's sizes are not a decode step's).
const POOL_MAX: usize = 64;

impl Pool {
    pub(super) fn new(gpu: Gpu) -> Self {
        Pool {
            free: Default::default(),
            gpu,
        }
    }

    pub(super) fn take(&self, bytes: u64) -> GpuBuffer {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        match free.iter().rposition(|b| b.len() == bytes) {
            Some(i) => free.swap_remove(i),
            None => self.gpu.zeros("activations", bytes),
        }
    }

    fn give(&self, buf: GpuBuffer) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() >= POOL_MAX {
            let gone = free.remove(0);
            self.gpu.forget_bind_groups_of(&gone);
        }
        free.push(buf);
    }
}

/// Rows of f32 activations in a device buffer, which goes back to the pool when dropped.
pub struct GpuAct {
    pub(super) buf: Option<GpuBuffer>,
    pub(super) pool: Pool,
    pub(super) tokens: usize,
    pub(super) width: usize,
}

impl GpuAct {
    pub(super) fn buf(&self) -> &GpuBuffer {
        self.buf.as_ref().expect("present until dropped")
    }

    pub(super) fn rows(&self) -> View<'_> {
        View::rows(self.buf(), self.width)
    }

    pub(super) fn part(&self, p: Part) -> View<'_> {
        View::part(self.buf(), p.offset, self.width)
    }

    pub(super) fn len(&self) -> usize {
        self.tokens * self.width
    }
}

impl Drop for GpuAct {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.give(b);
        }
    }
}
