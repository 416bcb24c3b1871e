// Softmax over rows, numerically stable: out = exp((x - max) * scale) / sum, one workgroup per
// row. scale = 1 / temperature (> 0): softmax(x * scale) has the same maximum at the same
// place, so subtracting max before scaling changes nothing but keeps every exp <= 1.
// Comes after reduce_subgroup.wgsl or reduce_shared.wgsl (group_sum, group_max, Lane).

struct Params {
    rows: u32,
    n: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Both read_write: in place binds one buffer twice, which wgpu allows only for read_write.
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(GROUP_SIZE)
fn main(
    lane: Lane,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let row = wg.x + wg.y * groups.x;
    // Spare workgroups of the 2D grid join the barriers but touch no memory.
    let live = row < params.rows;
    let base = row * params.n;
    // -inf: the identity of max (a literal would overflow WGSL's constant evaluation).
    var m = bitcast<f32>(0xff800000u);
    if (live) {
        for (var j = lane.index; j < params.n; j += GROUP_SIZE) {
            m = max(m, x[base + j]);
        }
    }
    let row_max = group_max(m, lane);
    var s = 0.0;
    if (live) {
        // Each thread keeps to its own indices in all three passes: in place is safe.
        for (var j = lane.index; j < params.n; j += GROUP_SIZE) {
            let e = exp((x[base + j] - row_max) * params.scale);
            out[base + j] = e;
            s += e;
        }
    }
    // The largest term is exp(0) = 1, so the sum is >= 1: no division by zero.
    let inv = 1.0 / group_sum(s, lane);
    if (live) {
        for (var j = lane.index; j < params.n; j += GROUP_SIZE) {
            out[base + j] = out[base + j] * inv;
        }
    }
}
