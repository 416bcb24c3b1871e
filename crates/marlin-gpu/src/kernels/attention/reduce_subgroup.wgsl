// Workgroup-wide max and sum through subgroup operations, for any subgroup size: each
// subgroup reduces its own values, its first invocation leaves the result in `red` at the
// subgroup's index, and every invocation folds those `num_subgroups` partials. Nothing assumes
// how invocations map to subgroups, so 8 (lavapipe), 32 (Apple, NVIDIA) and 64 (AMD) all work.
// The including kernel defines WG, its workgroup size, and takes a `Lane` as an input.

struct Lane {
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) n_sg: u32,
}

// One slot per subgroup: at most WG of them (subgroups of one invocation).
var<workgroup> red: array<f32, WG>;

fn wg_max(x: f32, lane: Lane) -> f32 {
    let s = subgroupMax(x);
    if (lane.sg_lane == 0u) {
        red[lane.sg] = s;
    }
    workgroupBarrier();
    var r = red[0];
    for (var i = 1u; i < lane.n_sg; i++) {
        r = max(r, red[i]);
    }
    // `red` is reused by the next reduction.
    workgroupBarrier();
    return r;
}

fn wg_sum(x: f32, lane: Lane) -> f32 {
    let s = subgroupAdd(x);
    if (lane.sg_lane == 0u) {
        red[lane.sg] = s;
    }
    workgroupBarrier();
    var r = red[0];
    for (var i = 1u; i < lane.n_sg; i++) {
        r += red[i];
    }
    workgroupBarrier();
    return r;
}
