// The residual add and the RMSNorm after it, in one pass over the row: h += x, then
// out = h / sqrt(mean(h^2) + eps) * weight. A decoder layer does this twice (after attention,
// and after the MLP before the next layer's norm): one dispatch instead of two, and h read once.
// The same arithmetic, in the same order, as add.wgsl followed by rms_norm.wgsl.
// Comes after reduce_subgroup.wgsl or reduce_shared.wgsl (group_sum, Lane).

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// (rows, dim), updated in place.
@group(0) @binding(1) var<storage, read_write> h: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;

@compute @workgroup_size(GROUP_SIZE)
fn main(
    lane: Lane,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let row = wg.x + wg.y * groups.x;
    // Spare workgroups of the 2D grid join the reduction's barriers but touch no memory.
    let live = row < params.rows;
    let base = row * params.dim;
    var sum_sq = 0.0;
    if (live) {
        for (var j = lane.index; j < params.dim; j += GROUP_SIZE) {
            let v = h[base + j] + x[base + j];
            h[base + j] = v;
            sum_sq += v * v;
        }
    }
    let total = group_sum(sum_sq, lane);
    let inv = 1.0 / sqrt(total / f32(params.dim) + params.eps);
    // Each thread reads back only the values it wrote.
    if (live) {
        for (var j = lane.index; j < params.dim; j += GROUP_SIZE) {
            out[base + j] = h[base + j] * inv * weight[j];
        }
    }
}
