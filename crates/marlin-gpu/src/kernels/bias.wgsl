// Bias add: y[r, c] += bias[c] over rows of n values (Qwen2's q/k/v biases, stacked as the
// fused q|k|v matmul's columns are). One thread per value.

struct Params {
    rows: u32,
    n: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i < params.rows * params.n) {
        y[i] = y[i] + bias[i % params.n];
    }
}
