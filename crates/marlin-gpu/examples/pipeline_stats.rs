//! What the Vulkan driver made of the kernels: registers, shared memory and the like per
//! pipeline, as `VK_KHR_pipeline_executable_properties` reports them (NVIDIA does), for every
//! generated kernel whose key contains a filter. wgpu creates pipelines without asking for
//! these statistics, so this builds its own: WGSL -> SPIR-V with naga, as wgpu would (no
//! bounds checks: the kernels are created as trusted modules), then a compute pipeline with
//! `CAPTURE_STATISTICS` on a device of its own.
//!
//! ```sh
//! cargo run --release -p marlin-gpu --example pipeline_stats -- qmm_coop.int4.g128   # a key filter
//! ```
//!
//! Occupancy from the numbers: an SM of an H100 has 65536 registers and 228 KiB of shared
//! memory for at most 2048 threads; a workgroup of T threads using R registers a thread and S
//! bytes of shared memory fits min(65536 / (R T), 233472 / S, 2048 / T) times.

use std::error::Error;
use std::ffi::CStr;

use ash::vk;

fn main() -> Result<(), Box<dyn Error>> {
    let filter = std::env::args().nth(1).unwrap_or_else(|| "qmm_coop".into());
    // SAFETY: loading the Vulkan loader library; ash's documented entry point.
    let entry = unsafe { ash::Entry::load()? };
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
    let info = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: valid create info; the instance outlives every object made from it below.
    let instance = unsafe { entry.create_instance(&info, None)? };
    // SAFETY: a live instance.
    let devices = unsafe { instance.enumerate_physical_devices()? };
    let has = |pd, ext: &CStr| {
        // SAFETY: a physical device of this instance.
        let exts =
            unsafe { instance.enumerate_device_extension_properties(pd) }.unwrap_or_default();
        exts.iter()
            .any(|e| e.extension_name_as_c_str().is_ok_and(|n| n == ext))
    };
    let stats_ext = ash::khr::pipeline_executable_properties::NAME;
    let coop_ext = ash::khr::cooperative_matrix::NAME;
    let pd = devices
        .into_iter()
        .find(|&pd| has(pd, stats_ext))
        .ok_or("no Vulkan device with VK_KHR_pipeline_executable_properties")?;
    // Cooperative matrices where the device has them (not lavapipe: its kernels fail below).
    let with_coop = has(pd, coop_ext);
    let wanted: Vec<&CStr> = if with_coop {
        vec![stats_ext, coop_ext]
    } else {
        vec![stats_ext]
    };
    // SAFETY: a physical device of this instance.
    let props = unsafe { instance.get_physical_device_properties(pd) };
    let name = props
        .device_name_as_c_str()
        .unwrap_or(c"?")
        .to_string_lossy();
    println!("# {name}");
    // The features the kernels' SPIR-V can ask for, where the device has them.
    let mut has11 = vk::PhysicalDeviceVulkan11Features::default();
    let mut has12 = vk::PhysicalDeviceVulkan12Features::default();
    let mut has13 = vk::PhysicalDeviceVulkan13Features::default();
    let mut all = vk::PhysicalDeviceFeatures2::default()
        .push_next(&mut has11)
        .push_next(&mut has12)
        .push_next(&mut has13);
    // SAFETY: a physical device of this instance; the chain is of valid structures.
    unsafe { instance.get_physical_device_features2(pd, &mut all) };
    let (f11, f12, f13) = (has11, has12, has13);
    let mut v11 = vk::PhysicalDeviceVulkan11Features::default()
        .storage_buffer16_bit_access(f11.storage_buffer16_bit_access != 0)
        .uniform_and_storage_buffer16_bit_access(f11.uniform_and_storage_buffer16_bit_access != 0);
    let mut v12 = vk::PhysicalDeviceVulkan12Features::default()
        .shader_float16(f12.shader_float16 != 0)
        .shader_int8(f12.shader_int8 != 0)
        .storage_buffer8_bit_access(f12.storage_buffer8_bit_access != 0)
        .vulkan_memory_model(f12.vulkan_memory_model != 0)
        .vulkan_memory_model_device_scope(f12.vulkan_memory_model_device_scope != 0);
    let mut v13 = vk::PhysicalDeviceVulkan13Features::default()
        .subgroup_size_control(f13.subgroup_size_control != 0)
        .shader_integer_dot_product(f13.shader_integer_dot_product != 0);
    let mut coop =
        vk::PhysicalDeviceCooperativeMatrixFeaturesKHR::default().cooperative_matrix(true);
    let mut stats = vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default()
        .pipeline_executable_info(true);
    let priorities = [1.0];
    let queues = [vk::DeviceQueueCreateInfo::default()
        .queue_family_index(0)
        .queue_priorities(&priorities)];
    let names: Vec<_> = wanted.iter().map(|n| n.as_ptr()).collect();
    let mut info = vk::DeviceCreateInfo::default()
        .queue_create_infos(&queues)
        .enabled_extension_names(&names)
        .push_next(&mut v11)
        .push_next(&mut v12)
        .push_next(&mut v13)
        .push_next(&mut stats);
    if with_coop {
        info = info.push_next(&mut coop);
    }
    // SAFETY: valid create info for a physical device of this instance.
    let device = unsafe { instance.create_device(pd, &info, None)? };
    let exec = ash::khr::pipeline_executable_properties::Device::new(&instance, &device);

    for (key, source) in marlin_gpu::kernels::generated_sources() {
        if !key.contains(&filter) {
            continue;
        }
        match pipeline_stats(&device, &exec, &source) {
            Ok(lines) => println!("{key}: {}", lines.join(", ")),
            Err(e) => println!("{key}: {e}"),
        }
    }
    // SAFETY: every object made from the device was destroyed in `pipeline_stats`.
    unsafe {
        device.destroy_device(None);
        instance.destroy_instance(None);
    }
    Ok(())
}

/// The driver's statistics of one kernel's compute pipeline, as "name value" strings.
fn pipeline_stats(
    device: &ash::Device,
    exec: &ash::khr::pipeline_executable_properties::Device,
    source: &str,
) -> Result<Vec<String>, Box<dyn Error>> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)?;
    let unchecked = naga::proc::BoundsCheckPolicy::Unchecked;
    let options = naga::back::spv::Options {
        lang_version: (1, 6),
        flags: naga::back::spv::WriterFlags::empty(),
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: unchecked,
            buffer: unchecked,
            image_load: unchecked,
            binding_array: unchecked,
        },
        zero_initialize_workgroup_memory: naga::back::spv::ZeroInitializeWorkgroupMemoryMode::None,
        force_loop_bounding: false,
        ..Default::default()
    };
    let stage = naga::back::spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: "main".into(),
    };
    let spv = naga::back::spv::write_vec(&module, &info, &options, Some(&stage))?;
    // One descriptor set layout per group, a buffer per binding as the module declares it.
    let mut sets: Vec<Vec<vk::DescriptorSetLayoutBinding>> = Vec::new();
    for (_, var) in module.global_variables.iter() {
        let Some(binding) = &var.binding else {
            continue;
        };
        let kind = match var.space {
            naga::AddressSpace::Uniform => vk::DescriptorType::UNIFORM_BUFFER,
            naga::AddressSpace::Storage { .. } => vk::DescriptorType::STORAGE_BUFFER,
            _ => continue,
        };
        let group = binding.group as usize;
        if sets.len() <= group {
            sets.resize(group + 1, Vec::new());
        }
        sets[group].push(
            vk::DescriptorSetLayoutBinding::default()
                .binding(binding.binding)
                .descriptor_type(kind)
                .descriptor_count(1)
                .stage_flags(vk::ShaderStageFlags::COMPUTE),
        );
    }
    // SAFETY: objects of this device, made and destroyed here, in order.
    unsafe {
        let layouts = sets
            .iter()
            .map(|b| {
                device.create_descriptor_set_layout(
                    &vk::DescriptorSetLayoutCreateInfo::default().bindings(b),
                    None,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let layout = device.create_pipeline_layout(
            &vk::PipelineLayoutCreateInfo::default().set_layouts(&layouts),
            None,
        )?;
        let shader =
            device.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&spv), None)?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(shader)
            .name(c"main");
        let info = vk::ComputePipelineCreateInfo::default()
            .flags(vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR)
            .stage(stage)
            .layout(layout);
        let pipeline = device
            .create_compute_pipelines(vk::PipelineCache::null(), &[info], None)
            .map_err(|(_, e)| e)?[0];
        let mut lines = Vec::new();
        let executables = exec.get_pipeline_executable_properties(
            &vk::PipelineInfoKHR::default().pipeline(pipeline),
        )?;
        for i in 0..executables.len() as u32 {
            let at = vk::PipelineExecutableInfoKHR::default()
                .pipeline(pipeline)
                .executable_index(i);
            for s in exec.get_pipeline_executable_statistics(&at)? {
                let name = s.name_as_c_str().unwrap_or(c"?").to_string_lossy();
                let value = match s.format {
                    vk::PipelineExecutableStatisticFormatKHR::BOOL32 => s.value.b32.to_string(),
                    vk::PipelineExecutableStatisticFormatKHR::INT64 => s.value.i64.to_string(),
                    vk::PipelineExecutableStatisticFormatKHR::UINT64 => s.value.u64.to_string(),
                    vk::PipelineExecutableStatisticFormatKHR::FLOAT64 => s.value.f64.to_string(),
                    _ => "?".into(),
                };
                lines.push(format!("{name} {value}"));
            }
        }
        device.destroy_pipeline(pipeline, None);
        device.destroy_shader_module(shader, None);
        device.destroy_pipeline_layout(layout, None);
        for l in layouts {
            device.destroy_descriptor_set_layout(l, None);
        }
        Ok(lines)
    }
}
