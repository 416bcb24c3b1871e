// Workgroup reductions through subgroup operations: the build of the row kernels (rms_norm,
// softmax, argmax) for devices with SUBGROUP, prepended to their source (kernels/mod.rs).
// reduce_shared.wgsl defines the same names with workgroup memory only.
//
// Right for any subgroup size (8 on lavapipe, 32 on Apple and NVIDIA, 64 on AMD): each
// subgroup's result goes to the slot of its subgroup_id, never to index / size, which would
// assume a placement of invocations in subgroups that no API promises.
//
// Every function holds workgroup barriers: call it from uniform control flow, from every
// thread of the workgroup.

// Threads per workgroup of every row kernel.
const GROUP_SIZE: u32 = 256u;
// The index a thread offers to group_argmax when it saw no value.
const NO_INDEX: u32 = 0xffffffffu;

struct Lane {
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
}

// One slot per subgroup: GROUP_SIZE slots cover even subgroups of a single invocation.
var<workgroup> red_value: array<f32, GROUP_SIZE>;
var<workgroup> red_index: array<u32, GROUP_SIZE>;

// The sum of v over the workgroup, the same value in every thread.
fn group_sum(v: f32, lane: Lane) -> f32 {
    let s = subgroupAdd(v);
    if (lane.sg_lane == 0u) {
        red_value[lane.sg_id] = s;
    }
    workgroupBarrier();
    // Every thread adds the slots in one order, so all get the same total.
    var total = 0.0;
    for (var i = 0u; i < lane.sg_count; i++) {
        total += red_value[i];
    }
    // All must have read the slots before a next reduction writes them.
    workgroupBarrier();
    return total;
}

// The largest v over the workgroup, in every thread.
fn group_max(v: f32, lane: Lane) -> f32 {
    let s = subgroupMax(v);
    if (lane.sg_lane == 0u) {
        red_value[lane.sg_id] = s;
    }
    workgroupBarrier();
    var best = red_value[0];
    for (var i = 1u; i < lane.sg_count; i++) {
        best = max(best, red_value[i]);
    }
    workgroupBarrier();
    return best;
}

// The lowest index among the largest values (the CPU sampler's tie rule), in every thread.
// Each thread offers its own best (v, i), i = NO_INDEX where it saw nothing (v = -inf); v
// must not be NaN.
fn group_argmax(v: f32, i: u32, lane: Lane) -> u32 {
    let m = subgroupMax(v);
    let first = subgroupMin(select(NO_INDEX, i, v == m));
    if (lane.sg_lane == 0u) {
        red_value[lane.sg_id] = m;
        red_index[lane.sg_id] = first;
    }
    workgroupBarrier();
    var best = red_value[0];
    var at = red_index[0];
    for (var s = 1u; s < lane.sg_count; s++) {
        let w = red_value[s];
        let j = red_index[s];
        if (w > best || (w == best && j < at)) {
            best = w;
            at = j;
        }
    }
    workgroupBarrier();
    return at;
}
