//! Device buffers: upload, zero-fill, read back.

use wgpu::util::DeviceExt;

use crate::{Gpu, GpuError};

/// A storage buffer on the device.
#[derive(Debug)]
pub struct GpuBuffer {
    pub(crate) buffer: wgpu::Buffer,
    /// Bytes the caller asked for (the buffer itself is rounded up to 4).
    len: u64,
}

impl GpuBuffer {
    /// Bytes of data (before rounding up to whole 32-bit words).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The wgpu buffer, for commands recorded outside the kernels (a copy between buffers).
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Gpu {
    /// Copies `bytes` to a new storage buffer; WGSL reads it as `array<u32>` or `array<f32>`,
    /// so the length is padded with zeros to whole 32-bit words (and to at least one word: an
    /// empty binding is not allowed).
    pub fn upload(&self, label: &str, bytes: &[u8]) -> GpuBuffer {
        let padded = bytes.len().div_ceil(4).max(1) * 4;
        let contents = if padded == bytes.len() {
            std::borrow::Cow::Borrowed(bytes)
        } else {
            let mut v = bytes.to_vec();
            v.resize(padded, 0);
            std::borrow::Cow::Owned(v)
        };
        let buffer = self
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &contents,
                usage: USAGE,
            });
        GpuBuffer {
            buffer,
            len: bytes.len() as u64,
        }
    }

    /// [`Gpu::upload`] into `reuse` where it is large enough (its old contents past `bytes`
    /// stay), written by the queue in order with the submissions: whatever was submitted
    /// before reads the old contents, whatever is submitted after the new. A new buffer
    /// otherwise, with room to grow (a power of two of at least 256 bytes). For inputs that
    /// change every forward pass: the same buffer pass after pass keeps the kernels' bind
    /// groups the same.
    pub fn upload_into(&self, reuse: Option<GpuBuffer>, label: &str, bytes: &[u8]) -> GpuBuffer {
        let padded = (bytes.len().div_ceil(4).max(1) * 4) as u64;
        let buffer = match reuse {
            Some(b) if b.buffer.size() >= padded => b.buffer,
            _ => self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: padded.next_power_of_two().max(256),
                usage: USAGE,
                mapped_at_creation: false,
            }),
        };
        let mut words = bytes.to_vec();
        words.resize(padded as usize, 0);
        self.queue().write_buffer(&buffer, 0, &words);
        GpuBuffer {
            buffer,
            len: bytes.len() as u64,
        }
    }

    /// Drops the bind groups the kernels keep for their next calls (`bind_groups.rs`), and
    /// with them their hold on buffers: for an owner letting go of large buffers that the
    /// kernels bound (a model's activations, a KV cache).
    pub fn forget_bind_groups(&self) {
        self.inner.bind_groups.clear();
    }

    /// [`Gpu::forget_bind_groups`] for the bind groups of `buffer` alone.
    pub fn forget_bind_groups_of(&self, buffer: &GpuBuffer) {
        self.inner.bind_groups.forget(&buffer.buffer);
    }

    pub fn upload_f32(&self, label: &str, values: &[f32]) -> GpuBuffer {
        self.upload(label, bytemuck::cast_slice(values))
    }

    /// A device buffer of at least `len` bytes for intermediate results that live within one
    /// recorded operation (the slabs of a split-K product), shared by every such operation on
    /// this device: operations run in the order they are recorded and submitted, so one never
    /// sees another's contents. Grows when asked for more; never zeroed.
    pub(crate) fn scratch(&self, len: u64) -> GpuBuffer {
        let mut held = self
            .inner
            .scratch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let buffer = match held.as_ref() {
            Some(b) if b.size() >= len => b.clone(),
            _ => {
                // Whole MiBs, so that slightly larger requests reuse it, within one binding.
                let limit = self.capabilities().max_storage_binding & !3;
                let size = (len.max(1).div_ceil(1 << 20) << 20)
                    .min(limit)
                    .max(len.div_ceil(4) * 4);
                let b = self.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("scratch"),
                    size,
                    usage: USAGE,
                    mapped_at_creation: false,
                });
                // Bind groups of the old one would keep it.
                if held.replace(b.clone()).is_some() {
                    self.forget_bind_groups();
                }
                b
            }
        };
        GpuBuffer { buffer, len }
    }

    /// A buffer of `len` zero bytes (rounded up to whole words).
    pub fn zeros(&self, label: &str, len: u64) -> GpuBuffer {
        let buffer = self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: len.div_ceil(4).max(1) * 4,
            usage: USAGE,
            // wgpu zero-initializes buffers created without a mapping.
            mapped_at_creation: false,
        });
        GpuBuffer { buffer, len }
    }

    /// Reads a buffer back to the host, waiting for all submitted work first.
    pub fn read(&self, src: &GpuBuffer) -> Result<Vec<u8>, GpuError> {
        let size = src.buffer.size();
        let staging = self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        encoder.copy_buffer_to_buffer(&src.buffer, 0, &staging, 0, size);
        self.queue().submit([encoder.finish()]);
        let data = self.map_read(&staging)?;
        Ok(data[..src.len as usize].to_vec())
    }

    /// The bytes of a `MAP_READ` buffer, once the device has finished all submitted work.
    pub(crate) fn map_read(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>, GpuError> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| GpuError::Lost("the read-back was dropped".into()))?
            .map_err(|e| GpuError::Lost(e.to_string()))?;
        let data = staging
            .get_mapped_range(..)
            .map_err(|e| GpuError::Lost(e.to_string()))?
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    pub fn read_f32(&self, src: &GpuBuffer) -> Result<Vec<f32>, GpuError> {
        let bytes = self.read(src)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}
