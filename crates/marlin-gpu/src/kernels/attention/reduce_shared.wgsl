// Workgroup-wide max and sum through workgroup memory, for devices without subgroup
// operations (or MARLIN_GPU_SUBGROUP=0): a tree over `red`, halving each step. The including
// kernel defines WG (a power of two), its workgroup size, and takes a `Lane` as an input.

struct Lane {
    @builtin(local_invocation_index) lid: u32,
}

var<workgroup> red: array<f32, WG>;

fn wg_max(x: f32, lane: Lane) -> f32 {
    red[lane.lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        if (lane.lid < s) {
            red[lane.lid] = max(red[lane.lid], red[lane.lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    // `red` is reused by the next reduction.
    workgroupBarrier();
    return r;
}

fn wg_sum(x: f32, lane: Lane) -> f32 {
    red[lane.lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        if (lane.lid < s) {
            red[lane.lid] += red[lane.lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}
