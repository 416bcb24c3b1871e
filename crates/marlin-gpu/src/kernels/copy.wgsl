// Device-to-device copy by the shader cores: the bandwidth baseline of the GPU bench. NVIDIA's
// Vulkan runs `copy_buffer_to_buffer` on a copy engine well below the SMs' bandwidth, so that
// command is no yardstick for a kernel. 16 bytes per load, grid-stride loop.

struct Params {
    // 16-byte words to copy.
    words: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    // Never past either buffer, whatever the host passed.
    let n = min(params.words, min(arrayLength(&src), arrayLength(&dst)));
    let stride = groups.x * 256u;
    for (var i = gid.x; i < n; i += stride) {
        dst[i] = src[i];
    }
}
