// RMSNorm over rows: out = x / sqrt(mean(x^2) + eps) * weight, one workgroup per row; the
// same math, in the same order, as RmsNorm in crates/marlin-models/src/layers.rs. A row is
// one head of one token, so the one kernel serves the layer norms (heads = 1, dim = hidden)
// and Qwen3's q/k norms (rows of head_dim inside a stacked q|k|v output).
// Comes after reduce_subgroup.wgsl or reduce_shared.wgsl (group_sum, Lane, GROUP_SIZE).

struct Params {
    // tokens * heads
    rows: u32,
    // Rows per token.
    heads: u32,
    dim: u32,
    eps: f32,
    // Token t's heads start at offset + t * stride (elements), head h dim elements later.
    x_offset: u32,
    x_stride: u32,
    out_offset: u32,
    out_stride: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Both read_write: in place binds one buffer twice, which wgpu allows only for read_write.
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;

@compute @workgroup_size(GROUP_SIZE)
fn main(
    lane: Lane,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let row = wg.x + wg.y * groups.x;
    // The 2D grid past 65535 rows has spare workgroups; they still take part in the
    // reduction's barriers (uniform control flow) but touch no memory.
    let live = row < params.rows;
    let token = row / params.heads;
    let head = row % params.heads;
    let src = params.x_offset + token * params.x_stride + head * params.dim;
    let dst = params.out_offset + token * params.out_stride + head * params.dim;

    var sum_sq = 0.0;
    if (live) {
        for (var j = lane.index; j < params.dim; j += GROUP_SIZE) {
            let v = x[src + j];
            sum_sq += v * v;
        }
    }
    let total = group_sum(sum_sq, lane);
    let inv = 1.0 / sqrt(total / f32(params.dim) + params.eps);
    // In place is safe: every thread has read its values (the reduction's barriers) and
    // writes only the values it read itself.
    if (live) {
        for (var j = lane.index; j < params.dim; j += GROUP_SIZE) {
            out[dst + j] = x[src + j] * inv * weight[j];
        }
    }
}
