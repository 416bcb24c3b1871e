// SwiGLU: out = silu(gate) * up = gate / (1 + exp(-gate)) * up, as the Llama layer of
// crates/marlin-models/src/llama.rs. gate and up are views (offset, stride), so one kernel
// reads the stacked [tokens, gate|up] output of a fused gate_up matmul (one buffer bound
// twice) or two separate buffers. One thread per output value.

struct Params {
    tokens: u32,
    // intermediate_size: values of each token's gate, up and out.
    ff: u32,
    gate_offset: u32,
    gate_stride: u32,
    up_offset: u32,
    up_stride: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= params.tokens * params.ff) {
        return;
    }
    let t = i / params.ff;
    let c = i % params.ff;
    let g = gate[params.gate_offset + t * params.gate_stride + c];
    let u = up[params.up_offset + t * params.up_stride + c];
    // The CPU's order: u * (g / (1 + exp(-g))). A very negative g gives exp(-g) = inf and
    // g / inf = -0: the limit, not NaN.
    out[i] = u * (g / (1.0 + exp(-g)));
}
