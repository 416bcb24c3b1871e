//! Per-call bind groups kept for the next call with the same resources.
//!
//! Every dispatch binds its parameters (a slot of a uniform block) and its buffers as group 0.
//! A decode step records the same dispatches on the same buffers step after step (activations
//! come from a pool, uniform blocks are given back after each submission and taken again), so
//! making each bind group anew is wasted host time: on lavapipe's host (SmolLM2, 185
//! dispatches a step) creating them took 0.37 of the 0.89 ms of recording a step. A bind group
//! refers to its buffers, not to their contents, so one made for the same layout, uniform slot
//! and buffers is the same bind group.
//!
//! A cached bind group keeps its buffers alive. So the cache is two generations: lookups move
//! entries into the current one, and when it is full it becomes the previous one, whose
//! entries nobody asked for again are dropped at the next turn. Buffers a program stopped using
//! are held for at most two turns ([`GENERATION`] new bind groups each), and where large ones
//! are let go the owner says so: [`crate::Gpu::forget_bind_groups`] drops every cached bind
//! group (a KV cache dropped, the scratch buffer grown), [`crate::Gpu::forget_bind_groups_of`]
//! those of one buffer (an activation leaving the model's pool).

use std::collections::HashMap;
use std::sync::Mutex;

/// Bind groups a generation holds: a decode step makes a few hundred.
const GENERATION: usize = 1024;

/// What a group-0 bind group is made of: the layout, the parameters' uniform slot (block,
/// offset, size) and the storage buffers, in binding order.
#[derive(PartialEq, Eq, Hash)]
pub(crate) struct BindKey {
    pub layout: wgpu::BindGroupLayout,
    pub params: (wgpu::Buffer, u64, u64),
    pub buffers: Vec<wgpu::Buffer>,
}

#[derive(Default)]
pub(crate) struct BindGroupCache(Mutex<Generations>);

#[derive(Default)]
struct Generations {
    current: HashMap<BindKey, wgpu::BindGroup>,
    previous: HashMap<BindKey, wgpu::BindGroup>,
}

impl BindGroupCache {
    /// The bind group of `key`: a cached one, or the one `make` makes (then cached).
    pub(crate) fn get(
        &self,
        key: BindKey,
        make: impl FnOnce(&BindKey) -> wgpu::BindGroup,
    ) -> wgpu::BindGroup {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = g.current.get(&key) {
            return b.clone();
        }
        let bind = match g.previous.remove(&key) {
            Some(b) => b,
            None => make(&key),
        };
        if g.current.len() >= GENERATION {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(key, bind.clone());
        bind
    }
}

impl BindGroupCache {
    /// Drops every cached bind group.
    pub(crate) fn clear(&self) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.current.clear();
        g.previous.clear();
    }

    /// Drops the cached bind groups that bind `buffer` (a walk over the cache: for a buffer
    /// let go now and then, not every dispatch).
    pub(crate) fn forget(&self, buffer: &wgpu::Buffer) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let keep = |k: &BindKey, _: &mut wgpu::BindGroup| {
            k.params.0 != *buffer && !k.buffers.contains(buffer)
        };
        g.current.retain(keep);
        g.previous.retain(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same resources: the cached bind group; other resources: a new one; an entry not asked
    /// for during two generations is dropped (its buffers no longer held).
    #[test]
    fn reuses_and_forgets() {
        let Some(gpu) = crate::test_gpu() else {
            return;
        };
        let device = gpu.device();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: None,
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
        let uniform = |size| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage: wgpu::BufferUsages::UNIFORM,
                mapped_at_creation: false,
            })
        };
        let (a, b) = (uniform(2048), uniform(2048));
        let made = std::cell::Cell::new(0);
        let cache = BindGroupCache::default();
        let get = |buffer: &wgpu::Buffer, offset: u64| {
            let key = BindKey {
                layout: layout.clone(),
                params: (buffer.clone(), offset, 16),
                buffers: Vec::new(),
            };
            cache.get(key, |k| {
                made.set(made.get() + 1);
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &k.layout,
                    entries: &[wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &k.params.0,
                            offset: k.params.1,
                            size: wgpu::BufferSize::new(k.params.2),
                        }),
                    }],
                })
            })
        };
        let first = get(&a, 0);
        assert_eq!(get(&a, 0), first);
        assert_eq!(made.get(), 1);
        assert_ne!(get(&a, 256), first);
        assert_ne!(get(&b, 0), first);
        assert_eq!(made.get(), 3);
        // Two generations of other bind groups push (a, 0) out; (b, 0), asked for in between,
        // stays. (Offsets are multiples of 256, the largest uniform offset alignment: a
        // validation error here would fail every later test on the shared device.)
        for i in 0..2 * GENERATION as u64 {
            let c = uniform(2048);
            get(&c, 256 * (i % 8));
            if i == GENERATION as u64 {
                get(&b, 0);
            }
        }
        let n = made.get();
        get(&b, 0);
        assert_eq!(made.get(), n, "asked for within the last generation: kept");
        get(&a, 0);
        assert_eq!(
            made.get(),
            n + 1,
            "not asked for in two generations: made again"
        );
    }
}
