//! Timing recorded work on the device, for `metal-marlin bench kernels --device gpu`: a batch of
//! many ops recorded into one encoder, submitted once, timed by the host's clock and, where the
//! device offers `TIMESTAMP_QUERY`, by the GPU's own timestamps.

use std::time::{Duration, Instant};

use crate::{Gpu, GpuError};

/// How long one batch took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchTime {
    /// Host clock from just before the submit to the end of the wait for the device: the
    /// batch's GPU time plus one submit and one wake-up (0.1-0.3 ms; nothing is subtracted).
    pub wall: Duration,
    /// GPU clock from a timestamp written before the first recorded op to one written after the
    /// last has finished (`None` without `TIMESTAMP_QUERY`).
    pub gpu: Option<Duration>,
}

impl Gpu {
    /// Whether [`Gpu::time_batch`] gives GPU timestamps.
    pub fn has_timestamps(&self) -> bool {
        self.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Records `record` into one encoder between two timestamps (where offered), submits it
    /// once and waits for it. The timestamps are written by an empty compute pass before the
    /// work (its start) and one after it (its end, which Vulkan writes once all earlier
    /// commands of the queue have finished).
    pub fn time_batch(
        &self,
        record: impl FnOnce(&mut crate::Recorder) -> Result<(), GpuError>,
    ) -> Result<BatchTime, GpuError> {
        let device = self.device();
        let mut encoder = self.encoder();
        let stamps = self.has_timestamps().then(|| {
            device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("batch timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            })
        });
        let mark = |encoder: &mut wgpu::CommandEncoder, qs: &wgpu::QuerySet, start: bool| {
            let index = Some(if start { 0 } else { 1 });
            let writes = wgpu::ComputePassTimestampWrites {
                query_set: qs,
                beginning_of_pass_write_index: if start { index } else { None },
                end_of_pass_write_index: if start { None } else { index },
            };
            drop(encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("timestamp"),
                timestamp_writes: Some(writes),
            }));
        };
        if let Some(qs) = &stamps {
            mark(encoder.encoder(), qs, true);
        }
        record(&mut encoder)?;
        let readback = stamps.as_ref().map(|qs| {
            let encoder = encoder.encoder();
            mark(encoder, qs, false);
            let buffer = |usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps"),
                    size: 16,
                    usage,
                    mapped_at_creation: false,
                })
            };
            let resolved = buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
            let read = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
            encoder.resolve_query_set(qs, 0..2, &resolved, 0);
            encoder.copy_buffer_to_buffer(&resolved, 0, &read, 0, 16);
            read
        });
        let start = Instant::now();
        self.submit(encoder);
        self.wait()?;
        let wall = start.elapsed();
        let gpu = match readback {
            None => None,
            Some(read) => {
                let bytes = self.map_read(&read)?;
                let tick = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
                let ticks = tick(8).saturating_sub(tick(0));
                let ns = ticks as f64 * f64::from(self.queue().get_timestamp_period());
                // A zero span means the device wrote no real timestamps: use the host clock.
                (ns > 0.0).then(|| Duration::from_nanos(ns as u64))
            }
        };
        Ok(BatchTime { wall, gpu })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_batch_is_timed_and_runs() {
        let Some(gpu) = crate::test_gpu() else { return };
        let src = gpu.upload_f32("src", &[1.0, 2.0, 3.0, 4.0]);
        let dst = gpu.zeros("dst", 16);
        let t = gpu
            .time_batch(|enc| gpu.record_copy(enc, &src, &dst))
            .unwrap();
        assert!(t.wall > std::time::Duration::ZERO);
        assert_eq!(gpu.read_f32(&dst).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        let small = gpu.zeros("small", 4);
        assert!(gpu.record_copy(&mut gpu.encoder(), &src, &small).is_err());
    }
}
