// Argmax over rows, for greedy sampling on the GPU: out[row] = the index of the row's largest
// value, the lowest such index on ties (as marlin-engine's sampler::argmax). One workgroup
// per row; only the ids need reading back. NaN counts as -inf: it never wins over a number.
// Comes after reduce_subgroup.wgsl or reduce_shared.wgsl (group_argmax, Lane, NO_INDEX).

struct Params {
    rows: u32,
    n: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const NEG_INF: u32 = 0xff800000u;

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
    var best = bitcast<f32>(NEG_INF);
    var at = NO_INDEX;
    if (live) {
        // Increasing indices and a strict >: each thread keeps its first largest value.
        for (var j = lane.index; j < params.n; j += GROUP_SIZE) {
            var v = x[base + j];
            // NaN by its bits: x != x may be folded away under fast math (Metal's default).
            if ((bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u) {
                v = bitcast<f32>(NEG_INF);
            }
            if (v > best || at == NO_INDEX) {
                best = v;
                at = j;
            }
        }
    }
    let first = group_argmax(best, at, lane);
    if (live && lane.index == 0u) {
        out[row] = first;
    }
}
