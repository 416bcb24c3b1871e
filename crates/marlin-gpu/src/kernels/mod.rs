//! The kernels: one op, one file (DESIGN.md house rule 1). `<op>.wgsl` holds the shader,
//! `<op>.rs` beside it its parameters (a `#[repr(C)]` struct mirrored in WGSL), its launch and
//! its tests. This module compiles and caches pipelines and records dispatches.
//!
//! Every op records into a caller's [`Recorder`] ([`Gpu::encoder`], then
//! [`Gpu::submit`]): a forward pass puts all its dispatches into one encoder (DESIGN.md: a
//! submit costs 0.1-0.3 ms, a dispatch ~4 µs).
//!
//! The row kernels (rms_norm, softmax, argmax) reduce across a workgroup through
//! `group_sum`/`group_max`/`group_argmax`, which come in two builds prepended to the kernel's
//! own source: `reduce_subgroup.wgsl` (subgroup operations) and `reduce_shared.wgsl`
//! (workgroup memory only). WGSL has no preprocessor and a shader that names a subgroup
//! builtin fails validation on a device without SUBGROUP, so the choice is made by
//! concatenation ([`Variants`]). The dense matmul's weight reader is chosen the same way
//! (`matmul_dense_f32.wgsl` or `matmul_dense_f16.wgsl`).

pub mod add;
pub mod argmax;
pub mod attention;
pub mod bias;
pub mod copy;
pub mod embedding;
pub mod matmul_dense;
pub mod penalize;
pub mod rms_norm;
pub mod rope;
pub mod sample;
pub mod softmax;
pub mod split_sum;
pub mod swiglu;
#[cfg(test)]
mod testing;
pub(crate) mod view;

pub use matmul_dense::{DenseWeight, WeightDtype};
pub use view::{Heads, View};
pub mod qmm;
pub mod qmm_coop;
pub mod qmv;
#[cfg(test)]
pub(crate) mod qtest;
pub mod quant_decode;
pub mod quantize_x;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytemuck::Pod;

use crate::bind_groups::BindKey;
use crate::{Gpu, GpuBuffer, Recorder};

/// A tuning override from the environment variable `name` (a number), read once per process
/// into `cell`: kernels are chosen on every product, too often to read the environment.
pub(crate) fn tuned(cell: &'static std::sync::OnceLock<Option<u32>>, name: &str) -> Option<u32> {
    *cell.get_or_init(|| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok()))
}

/// Every kernel's WGSL source by file name, for the MSL translation test. The quantized matmul
/// kernels and the KV cache's are not complete on their own (quant_decode.rs assembles the
/// first, the cache's element type heads the second): see [`generated_sources`].
pub const SOURCES: &[(&str, &str)] = &[
    ("add.wgsl", add::SOURCE),
    ("argmax.wgsl (subgroup)", argmax::SOURCES.subgroup),
    ("argmax.wgsl (shared)", argmax::SOURCES.shared),
    ("bias.wgsl", bias::SOURCE),
    ("copy.wgsl", copy::SOURCE),
    ("embedding.wgsl", embedding::SOURCE),
    ("matmul_dense.wgsl (f32)", matmul_dense::SOURCE_F32),
    ("matmul_dense.wgsl (f16)", matmul_dense::SOURCE_F16),
    ("penalize.wgsl", penalize::SOURCE),
    ("rms_norm.wgsl (subgroup)", rms_norm::SOURCES.subgroup),
    ("rms_norm.wgsl (shared)", rms_norm::SOURCES.shared),
    ("rope.wgsl", rope::SOURCE),
    ("sample.wgsl (subgroup)", sample::SOURCES.subgroup),
    ("sample.wgsl (shared)", sample::SOURCES.shared),
    ("softmax.wgsl (subgroup)", softmax::SOURCES.subgroup),
    ("softmax.wgsl (shared)", softmax::SOURCES.shared),
    ("quantize_x.wgsl (subgroup)", quantize_x::SOURCES.subgroup),
    ("quantize_x.wgsl (shared)", quantize_x::SOURCES.shared),
    ("split_sum.wgsl", split_sum::SOURCE),
    ("swiglu.wgsl", swiglu::SOURCE),
    ("attention/combine.wgsl", attention::combine::SOURCE),
];

/// A row kernel's two builds: its source after `reduce_subgroup.wgsl` or after
/// `reduce_shared.wgsl`.
pub struct Variants {
    pub subgroup: &'static str,
    pub shared: &'static str,
}

/// The [`Variants`] of a row kernel's WGSL files (concatenated in order).
macro_rules! with_reductions {
    ($($file:literal),+) => {
        $crate::kernels::Variants {
            subgroup: concat!(include_str!("reduce_subgroup.wgsl"), $(include_str!($file)),+),
            shared: concat!(include_str!("reduce_shared.wgsl"), $(include_str!($file)),+),
        }
    };
}
pub(crate) use with_reductions;

/// Every assembled form of the kernels built from several pieces (qmv.wgsl and qmm.wgsl with
/// quant_decode.wgsl, for every format and variant; decode_subgroup.wgsl with its constants),
/// by pipeline key, for the MSL translation test.
pub fn generated_sources() -> Vec<(String, String)> {
    let mut all = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for format in marlin_quant::Format::ALL {
        for group in marlin_quant::Group::SIZES.map(marlin_quant::Group::Size) {
            let Ok(scheme) = marlin_quant::Scheme::new(format, group) else {
                continue;
            };
            for (key, source) in qmv::variants(scheme)
                .into_iter()
                .chain(qmm::variants(scheme))
                .chain(qmm_coop::variants(scheme))
            {
                if seen.insert(key.clone()) {
                    all.push((key, source));
                }
            }
        }
    }
    // The kernels that read or write the KV cache, for each element type; decode attention on
    // subgroups at sizes 8 (lavapipe), 32 and 64, head_dim 16 to 256.
    use attention::{decode, kv_write, prefill, rope_write};
    let mut cache = vec![
        (
            "attention/rope_write.wgsl".to_string(),
            rope_write::SOURCE.to_string(),
        ),
        ("attention/kv_write.wgsl".into(), kv_write::SOURCE.into()),
        (
            "attention/decode.wgsl (subgroup)".into(),
            decode::SOURCE_SUBGROUP.into(),
        ),
        (
            "attention/decode.wgsl (shared)".into(),
            decode::SOURCE_SHARED.into(),
        ),
        (
            "attention/prefill.wgsl (64)".into(),
            prefill::SOURCE_64.into(),
        ),
        (
            "attention/prefill.wgsl (128)".into(),
            prefill::SOURCE_128.into(),
        ),
        (
            "attention/prefill.wgsl (256)".into(),
            prefill::SOURCE_256.into(),
        ),
    ];
    for min in [8, 32, 64] {
        for acc in [1, 4, 8, 16] {
            cache.push((
                decode::subgroup_key(min, acc),
                decode::subgroup_source(min, acc),
            ));
        }
    }
    for dtype in crate::KvDtype::ALL {
        all.extend(
            cache
                .iter()
                .map(|(key, source)| (dtype.key(key), dtype.source(source))),
        );
    }
    all
}

/// Threads per workgroup of the element-wise kernels; grids are laid out in 2D past 65535
/// workgroups (the per-dimension limit).
pub(crate) const WG: u32 = 256;

/// A compiled kernel: its pipeline and the layout of its bind group 0.
pub(crate) struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    /// The cache key: the kernel and its variant, for profiles.
    key: String,
}

/// Compiled pipelines by name: each kernel is compiled once per device.
#[derive(Default)]
pub(crate) struct PipelineCache(Mutex<HashMap<String, Arc<Pipeline>>>);

/// The explicit bind group layouts of qmv and qmm. Pipelines made with `layout: None` each get
/// their own group layouts, with which no other pipeline's bind group is compatible; sharing
/// these lets a quantized matrix make its weights' bind group once, at upload, for every
/// kernel and every m.
pub(crate) struct QuantLayouts {
    /// Group 0, per call: params (uniform), x (read), y (read-write), norm weight (read), y's
    /// int8 grids (read-write).
    pub call: wgpu::BindGroupLayout,
    /// Group 1, per part of a matrix: codes, scales, biases (read).
    pub weights: wgpu::BindGroupLayout,
    pipeline: wgpu::PipelineLayout,
}

impl QuantLayouts {
    fn new(device: &wgpu::Device) -> Self {
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let read = wgpu::BufferBindingType::Storage { read_only: true };
        let call = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("quant call"),
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, read),
                entry(2, wgpu::BufferBindingType::Storage { read_only: false }),
                // qmv's norm weight where it norms x (x again otherwise).
                entry(3, read),
                // qmv's int8 grids of y for the next product (y again otherwise).
                entry(4, wgpu::BufferBindingType::Storage { read_only: false }),
            ],
        });
        let weights = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("quant weights"),
            entries: &[entry(0, read), entry(1, read), entry(2, read)],
        });
        let pipeline = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("quant"),
            bind_group_layouts: &[Some(&call), Some(&weights)],
            immediate_size: 0,
        });
        QuantLayouts {
            call,
            weights,
            pipeline,
        }
    }
}

impl Gpu {
    /// The pipeline of `source`'s entry point `main`, compiled on first use under `key`.
    pub(crate) fn pipeline(&self, key: &str, source: &str) -> Arc<Pipeline> {
        self.pipeline_with(key, || source.to_string())
    }

    /// [`Gpu::pipeline`] for generated sources: `source` runs only when `key` is not compiled
    /// yet, so a launch costs a lookup, not the assembly of its source.
    pub(crate) fn pipeline_with(
        &self,
        key: &str,
        source: impl FnOnce() -> String,
    ) -> Arc<Pipeline> {
        self.cached_pipeline(key, || self.compile(key, &source(), None, false))
    }

    /// [`Gpu::pipeline_with`] for a kernel whose every index has been audited (the audit is
    /// at the top of its source): compiled without wgpu's runtime bounds checks unless
    /// `MARLIN_GPU_CHECKED=1`. Prefill attention: 1.23x on the H100 without them.
    pub(crate) fn audited_pipeline_with(
        &self,
        key: &str,
        source: impl FnOnce() -> String,
    ) -> Arc<Pipeline> {
        self.cached_pipeline(key, || self.compile(key, &source(), None, true))
    }

    /// A quantized matmul kernel (qmv, qmm): bind group 0 is [`QuantLayouts::call`] (params,
    /// x, y), group 1 [`QuantLayouts::weights`] (codes, scales, biases), so one weight bind
    /// group serves every pipeline. Compiled without wgpu's runtime bounds checks unless
    /// `MARLIN_GPU_CHECKED=1`: the audit of every index is at the top of quant_decode.wgsl,
    /// and the conformance suite covers these kernels.
    pub(crate) fn quant_pipeline(
        &self,
        key: &str,
        source: impl FnOnce() -> String,
    ) -> Arc<Pipeline> {
        self.cached_pipeline(key, || {
            let layouts = self.quant_layouts();
            self.compile(
                key,
                &source(),
                Some((&layouts.pipeline, &layouts.call)),
                true,
            )
        })
    }

    fn cached_pipeline(&self, key: &str, make: impl FnOnce() -> Pipeline) -> Arc<Pipeline> {
        let mut cache = self
            .inner
            .pipelines
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(p) = cache.get(key) {
            return p.clone();
        }
        let p = Arc::new(make());
        cache.insert(key.to_string(), p.clone());
        p
    }

    /// Compiles `source`'s `main`, with wgpu's own layout (`explicit` None) or an explicit one
    /// (and its group 0); with bounds checks, or, for `audited` kernels and unless
    /// `MARLIN_GPU_CHECKED=1`, without runtime checks; loops are never instrumented (see below).
    fn compile(
        &self,
        key: &str,
        source: &str,
        explicit: Option<(&wgpu::PipelineLayout, &wgpu::BindGroupLayout)>,
        audited: bool,
    ) -> Pipeline {
        let device = self.device();
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(key),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        let module = if audited && !self.inner.runtime_checks {
            // SAFETY: only the quantized matmul kernels and prefill attention come here, and
            // every index in them is in bounds and every loop bounded, given the shapes the host
            // checks before it records a dispatch (the audits at the top of quant_decode.wgsl
            // and attention/prefill.wgsl); their tests run them this way.
            unsafe {
                device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        } else {
            // wgpu's default also counts every loop's iterations and breaks out past 2^64,
            // against shaders that might not end: that counter kept NVIDIA's compiler from
            // unrolling our short loops and issuing their loads together (on the H100, prefill
            // of a Llama-3.1-8B went from 2565 to 3941 tokens/s without it, decode from 182 to
            // 202). The bounds checks stay.
            let mut checks = wgpu::ShaderRuntimeChecks::checked();
            checks.force_loop_bounding = false;
            // SAFETY: every loop of every kernel ends: each steps by a positive constant, a
            // subgroup or workgroup count (at least 1) or a grid stride, or halves a constant,
            // towards a bound that the host keeps far below 2^32, so no counter wraps.
            unsafe { device.create_shader_module_trusted(desc, checks) }
        };
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key),
            layout: explicit.map(|(pipeline, _)| pipeline),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let layout = match explicit {
            Some((_, group0)) => group0.clone(),
            None => pipeline.get_bind_group_layout(0),
        };
        Pipeline {
            pipeline,
            layout,
            key: key.to_string(),
        }
    }

    /// The bind group layouts of the quantized matmul kernels, made once per device.
    pub(crate) fn quant_layouts(&self) -> &QuantLayouts {
        self.inner
            .quant_layouts
            .get_or_init(|| QuantLayouts::new(self.device()))
    }

    /// Records one dispatch of `pipe`: `params` as the uniform at binding 0, then `buffers` at
    /// bindings 1, 2, ... in order.
    pub(crate) fn dispatch<P: Pod>(
        &self,
        encoder: &mut crate::Recorder,
        pipe: &Pipeline,
        params: &P,
        buffers: &[&GpuBuffer],
        groups: [u32; 3],
    ) {
        self.dispatch_with(encoder, pipe, params, buffers, None, groups);
    }

    /// [`Gpu::dispatch`] with a bind group made beforehand (the weights of a quantized matrix)
    /// as group 1.
    pub(crate) fn dispatch_with<P: Pod>(
        &self,
        encoder: &mut crate::Recorder,
        pipe: &Pipeline,
        params: &P,
        buffers: &[&GpuBuffer],
        group1: Option<&wgpu::BindGroup>,
        groups: [u32; 3],
    ) {
        let (block, offset, size) = encoder.params(self, bytemuck::bytes_of(params));
        let key = BindKey {
            layout: pipe.layout.clone(),
            params: (encoder.block(block).clone(), offset, size.get()),
            buffers: buffers.iter().map(|b| b.buffer.clone()).collect(),
        };
        let bind = self.inner.bind_groups.get(key, |key| {
            let (block, offset, size) = &key.params;
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: block,
                    offset: *offset,
                    size: wgpu::BufferSize::new(*size),
                }),
            }];
            entries.extend(
                key.buffers
                    .iter()
                    .zip(1..)
                    .map(|(b, i)| wgpu::BindGroupEntry {
                        binding: i,
                        resource: b.as_entire_binding(),
                    }),
            );
            self.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &key.layout,
                entries: &entries,
            })
        });
        let pass = encoder.pass_for(&pipe.key);
        pass.set_pipeline(&pipe.pipeline);
        pass.set_bind_group(0, &bind, &[]);
        if let Some(g1) = group1 {
            pass.set_bind_group(1, g1, &[]);
        }
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
    }

    /// The pipeline of a row kernel: its subgroup build where the device has subgroups (and
    /// `MARLIN_GPU_SUBGROUP` is not 0), its workgroup-memory build otherwise.
    pub(crate) fn row_pipeline(&self, key: &str, variants: &Variants) -> Arc<Pipeline> {
        if self.capabilities().subgroup {
            self.pipeline(&format!("{key}/subgroup"), variants.subgroup)
        } else {
            self.pipeline(&format!("{key}/shared"), variants.shared)
        }
    }

    /// A recorder for the ops to record into; [`Gpu::submit`] sends it.
    pub fn encoder(&self) -> Recorder {
        let encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        Recorder::new(self, encoder)
    }

    /// Sends what `encoder` recorded to the device; [`Gpu::read`] waits for it.
    pub fn submit(&self, encoder: Recorder) {
        let (commands, blocks, profile) = encoder.finish(self);
        self.queue().submit([commands]);
        self.return_uniform_blocks(blocks);
        if let Some((read, kernels)) = profile {
            self.print_profile(&read, &kernels);
        }
    }

    /// A uniform block of `bytes` for a [`Recorder`]'s parameters: one given back earlier, or
    /// a new one.
    pub(crate) fn uniform_block(&self, bytes: u64) -> wgpu::Buffer {
        let mut pool = self
            .inner
            .uniform_blocks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match pool.iter().position(|b| b.size() == bytes) {
            Some(i) => pool.swap_remove(i),
            None => self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernel params"),
                size: bytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        }
    }

    /// Keeps submitted blocks for later recorders (a few: a forward pass needs two or three).
    pub(crate) fn return_uniform_blocks(&self, blocks: Vec<wgpu::Buffer>) {
        let mut pool = self
            .inner
            .uniform_blocks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pool.extend(blocks);
        pool.truncate(16);
    }
}

/// Workgroups for `threads` threads of `per_group` each, in 2D when one dimension is not
/// enough; kernels rebuild the linear index as `x + y * num_workgroups.x * per_group`.
pub(crate) fn grid(threads: u64, per_group: u32) -> [u32; 3] {
    let groups = threads.div_ceil(per_group as u64).max(1);
    const MAX: u64 = 65535;
    if groups <= MAX {
        [groups as u32, 1, 1]
    } else {
        [MAX as u32, groups.div_ceil(MAX) as u32, 1]
    }
}
