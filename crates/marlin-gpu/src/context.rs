//! The GPU device: which adapter, which features, and the one place that waits for it.

use std::sync::Arc;

use crate::GpuError;

/// Which adapters [`Gpu::new`] may pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterChoice {
    /// A real GPU (discrete, integrated or virtual); never a CPU implementation such as
    /// lavapipe. What `--device auto` and `--device gpu` use.
    Hardware,
    /// Any adapter, software ones included: lavapipe runs every kernel on the CPU, so tests and
    /// CI use it where there is no GPU.
    Any,
}

/// What the device offers that the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// WGSL `f16` (`enable f16;`).
    pub shader_f16: bool,
    /// Subgroup operations (`subgroupAdd`...), with sizes between these bounds.
    pub subgroup: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX`: simdgroup matrices on Apple, tensor cores through
    /// VK_KHR_cooperative_matrix on NVIDIA.
    pub cooperative_matrix: bool,
    /// The fragment shape qmm_coop uses, where the device offers one WGSL can spell.
    pub coop: Option<crate::kernels::qmm_coop::CoopShape>,
    /// The largest storage buffer one binding may cover, in bytes.
    pub max_storage_binding: u64,
    /// Workgroup memory a kernel may declare, in bytes (16 KiB on every WebGPU device; 48 KiB
    /// on the H100, 32 KiB on Apple GPUs).
    pub max_workgroup_storage: u32,
}

/// A GPU device and its queue, shared by every buffer and kernel made on it.
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub caps: Capabilities,
    pub pipelines: crate::kernels::PipelineCache,
    /// Group 0 of the dispatches, by what they bind ([`crate::bind_groups`]).
    pub bind_groups: crate::bind_groups::BindGroupCache,
    pub quant_layouts: std::sync::OnceLock<crate::kernels::QuantLayouts>,
    /// The buffer split-K products write their partial sums to ([`Gpu::scratch`]).
    pub scratch: std::sync::Mutex<Option<wgpu::Buffer>>,
    /// Uniform blocks of submitted recorders, for the next ones.
    pub uniform_blocks: std::sync::Mutex<Vec<wgpu::Buffer>>,
    /// Where kernel parameters may start in a uniform block (the device's offset alignment,
    /// at least 16).
    pub uniform_align: u64,
    /// `MARLIN_GPU_CHECKED=1`: the kernels compiled without wgpu's runtime bounds checks
    /// (the quantized matmul) keep them, for debugging.
    pub runtime_checks: bool,
    /// The features the device was opened with.
    pub features: wgpu::Features,
    /// The first error wgpu reported outside a call that returns one (out of memory when
    /// creating a buffer, say): wgpu's default is to panic; [`Gpu::wait`] returns it instead.
    pub failure: Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .field("caps", &self.inner.caps)
            .finish()
    }
}

/// `MARLIN_GPU_SUBGROUP=0` turns subgroup operations off even where the adapter has them, so
/// that the kernels' fallback runs (CI runs the suite both ways on lavapipe).
const SUBGROUP_ENV: &str = "MARLIN_GPU_SUBGROUP";

/// `MARLIN_GPU_F16=0` turns SHADER_F16 off even where the adapter has it: the KV cache and the
/// prefill GEMM's operands stay f32, as on a device without f16 (CI runs the suite so too).
const F16_ENV: &str = "MARLIN_GPU_F16";

/// `MARLIN_GPU_CHECKED=1` compiles every kernel with wgpu's runtime bounds checks, the audited
/// ones (the quantized matmul, see quant_decode.wgsl) included: for debugging a kernel change.
pub const CHECKED_ENV: &str = "MARLIN_GPU_CHECKED";

impl Gpu {
    /// Opens the best adapter of `choice`: discrete before integrated before virtual before
    /// software. `WGPU_BACKEND` (e.g. `vulkan`) narrows the backends tried.
    pub fn new(choice: AdapterChoice) -> Result<Gpu, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let seen: Vec<String> = adapters.iter().map(|a| describe(&a.get_info())).collect();
        let adapter = adapters
            .into_iter()
            .filter(|a| {
                choice == AdapterChoice::Any || a.get_info().device_type != wgpu::DeviceType::Cpu
            })
            .min_by_key(|a| rank(a.get_info().device_type))
            .ok_or(GpuError::NoAdapter {
                wanted: match choice {
                    AdapterChoice::Hardware => "a hardware GPU",
                    AdapterChoice::Any => "any GPU adapter",
                },
                seen,
            })?;
        Self::open(adapter)
    }

    fn open(adapter: wgpu::Adapter) -> Result<Gpu, GpuError> {
        let info = adapter.get_info();
        let offered = adapter.features();
        let subgroups_allowed = std::env::var(SUBGROUP_ENV).map_or(true, |v| v != "0");
        let mut wanted = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        if std::env::var(F16_ENV).map_or(true, |v| v != "0") {
            wanted |= wgpu::Features::SHADER_F16;
        }
        // GPU timestamps for `bench kernels --device gpu` (a pass's start and end only).
        wanted |= wgpu::Features::TIMESTAMP_QUERY;
        if subgroups_allowed {
            wanted |= wgpu::Features::SUBGROUP;
        }
        let features = offered & wanted;
        let adapter_limits = adapter.limits();
        // Ask for the adapter's own limits: large models need the largest bindings it allows.
        let limits = adapter_limits.clone();
        // SAFETY: the token only allows asking for experimental features; cooperative matrices
        // are asked for only where the adapter offers them, and used by kernels the
        // conformance suite checks on such devices.
        let experimental = unsafe { wgpu::ExperimentalFeatures::enabled() };
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("metal-marlin"),
            required_features: features,
            required_limits: limits,
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&descriptor)).map_err(|e| {
                GpuError::Device {
                    adapter: describe(&info),
                    what: e.to_string(),
                }
            })?;
        let failure: Arc<std::sync::Mutex<Option<String>>> = Default::default();
        let first = failure.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = first.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        let caps = Capabilities {
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroup: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            cooperative_matrix: features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
            coop: if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
                && std::env::var(crate::kernels::qmm_coop::COOP_ENV).map_or(true, |v| v != "0")
            {
                crate::kernels::qmm_coop::CoopShape::choose(
                    &adapter.cooperative_matrix_properties(),
                    features.contains(wgpu::Features::SHADER_F16),
                )
            } else {
                None
            },
            max_storage_binding: adapter_limits.max_storage_buffer_binding_size,
            max_workgroup_storage: adapter_limits.max_compute_workgroup_storage_size,
        };
        Ok(Gpu {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                caps,
                pipelines: Default::default(),
                bind_groups: Default::default(),
                scratch: Default::default(),
                quant_layouts: Default::default(),
                uniform_blocks: Default::default(),
                uniform_align: u64::from(adapter_limits.min_uniform_buffer_offset_alignment)
                    .max(16),
                runtime_checks: std::env::var(CHECKED_ENV).is_ok_and(|v| v == "1"),
                features,
                failure,
            }),
        })
    }

    /// The adapter in words: name, backend and type.
    pub fn adapter(&self) -> String {
        describe(&self.inner.info)
    }

    /// The features the device was opened with (those the kernels or the bench use and the
    /// adapter offers).
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }

    /// Whether the audited kernels keep wgpu's runtime bounds checks (`MARLIN_GPU_CHECKED=1`).
    pub fn runtime_checks(&self) -> bool {
        self.inner.runtime_checks
    }

    pub fn capabilities(&self) -> Capabilities {
        self.inner.caps
    }

    /// Whether this adapter is a CPU implementation (lavapipe): correct, never fast.
    pub fn is_software(&self) -> bool {
        self.inner.info.device_type == wgpu::DeviceType::Cpu
    }

    pub(crate) fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    pub(crate) fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// Blocks until the device has finished all submitted work (uploads included); an error
    /// wgpu reported since the device opened (see [`Gpu::check`]) fails it.
    pub fn wait(&self) -> Result<(), GpuError> {
        self.inner
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map(|_| ())
            .map_err(|e| GpuError::Lost(e.to_string()))?;
        self.check()
    }

    /// The first error wgpu reported outside a call that returns one, typically running out
    /// of GPU memory while uploading a model; the device is not to be trusted after it.
    pub fn check(&self) -> Result<(), GpuError> {
        let failure = self.inner.failure.lock().unwrap_or_else(|p| p.into_inner());
        match failure.as_ref() {
            Some(e) => Err(GpuError::Lost(e.clone())),
            None => Ok(()),
        }
    }
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}
