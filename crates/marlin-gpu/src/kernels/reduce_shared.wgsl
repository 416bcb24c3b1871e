// Workgroup reductions in workgroup memory only: the build of the row kernels (rms_norm,
// softmax, argmax) for devices without SUBGROUP (or with MARLIN_GPU_SUBGROUP=0), prepended to
// their source (kernels/mod.rs). reduce_subgroup.wgsl defines the same names with subgroup
// operations.
//
// Every function holds workgroup barriers: call it from uniform control flow, from every
// thread of the workgroup.

// Threads per workgroup of every row kernel; the trees below halve it down to 1, so it must
// be a power of two.
const GROUP_SIZE: u32 = 256u;
// The index a thread offers to group_argmax when it saw no value.
const NO_INDEX: u32 = 0xffffffffu;

struct Lane {
    @builtin(local_invocation_index) index: u32,
}

var<workgroup> red_value: array<f32, GROUP_SIZE>;
var<workgroup> red_index: array<u32, GROUP_SIZE>;

// The sum of v over the workgroup, the same value in every thread.
fn group_sum(v: f32, lane: Lane) -> f32 {
    red_value[lane.index] = v;
    workgroupBarrier();
    for (var span = GROUP_SIZE / 2u; span > 0u; span >>= 1u) {
        if (lane.index < span) {
            red_value[lane.index] += red_value[lane.index + span];
        }
        workgroupBarrier();
    }
    let total = red_value[0];
    // All must have read slot 0 before a next reduction writes it.
    workgroupBarrier();
    return total;
}

// The largest v over the workgroup, in every thread.
fn group_max(v: f32, lane: Lane) -> f32 {
    red_value[lane.index] = v;
    workgroupBarrier();
    for (var span = GROUP_SIZE / 2u; span > 0u; span >>= 1u) {
        if (lane.index < span) {
            red_value[lane.index] = max(red_value[lane.index], red_value[lane.index + span]);
        }
        workgroupBarrier();
    }
    let best = red_value[0];
    workgroupBarrier();
    return best;
}

// The lowest index among the largest values (the CPU sampler's tie rule), in every thread.
// Each thread offers its own best (v, i), i = NO_INDEX where it saw nothing (v = -inf); v
// must not be NaN.
fn group_argmax(v: f32, i: u32, lane: Lane) -> u32 {
    red_value[lane.index] = v;
    red_index[lane.index] = i;
    workgroupBarrier();
    for (var span = GROUP_SIZE / 2u; span > 0u; span >>= 1u) {
        if (lane.index < span) {
            let w = red_value[lane.index + span];
            let j = red_index[lane.index + span];
            let b = red_value[lane.index];
            if (w > b || (w == b && j < red_index[lane.index])) {
                red_value[lane.index] = w;
                red_index[lane.index] = j;
            }
        }
        workgroupBarrier();
    }
    let at = red_index[0];
    workgroupBarrier();
    return at;
}
