// Argmax over rows, for greedy sampling on the GPU: out[row] = the index of the row's largest
// value, the lowest such index on ties (as marlin-engine's sampler::argmax). One workgroup
// per row; only the ids need reading back. NaN counts as -inf: it never wins over a number.
// Comes after reduce_subgroup.wgsl or reduce_shared.wgsl (group_argmax, Lane, NO_INDEX).

// A long row (a vocabulary of 128256) is too much for one workgroup (190 µs on the H100): it is
// split into chunks of `chunk` values, one workgroup each (stage 1), whose best (value, index)
// pairs a second dispatch reduces (stage 2). Stage 0 is the whole row in one workgroup.

struct Params {
    rows: u32,
    n: u32,
    // Values per chunk (stage 1), and chunks per row (stages 1 and 2).
    chunk: u32,
    chunks: u32,
    stage: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
// Stage 1's best of each chunk: (value, index as f32 bits) pairs, (rows, chunks).
@group(0) @binding(3) var<storage, read_write> part: array<f32>;

const NEG_INF: u32 = 0xff800000u;

// NaN by its bits counts as -inf: x != x may be folded away under fast math (Metal's default).
fn sane(v: f32) -> f32 {
    if ((bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u) {
        return bitcast<f32>(NEG_INF);
    }
    return v;
}

@compute @workgroup_size(GROUP_SIZE)
fn main(
    lane: Lane,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // Stage 1: workgroup (chunk, row); else one workgroup per row, 2D past 65535 rows.
    var row = wg.x + wg.y * groups.x;
    var lo = 0u;
    var hi = params.n;
    if (params.stage == 1u) {
        row = wg.y;
        lo = wg.x * params.chunk;
        hi = min(params.n, lo + params.chunk);
    }
    if (params.stage == 2u) {
        hi = params.chunks;
    }
    // Spare workgroups of the 2D grid join the barriers but touch no memory.
    let live = row < params.rows;
    var best = bitcast<f32>(NEG_INF);
    var at = NO_INDEX;
    if (live) {
        // Increasing indices and a strict >: each thread keeps its first largest value. Stage
        // 2's pairs come in chunk order, so their indices increase too.
        for (var j = lo + lane.index; j < hi; j += GROUP_SIZE) {
            var v: f32;
            var i: u32;
            if (params.stage == 2u) {
                let p = 2u * (row * params.chunks + j);
                v = part[p];
                i = bitcast<u32>(part[p + 1u]);
            } else {
                v = sane(x[row * params.n + j]);
                i = j;
            }
            if (v > best || at == NO_INDEX) {
                best = v;
                at = i;
            }
        }
    }
    let first = group_argmax(best, at, lane);
    if (live && lane.index == 0u) {
        if (params.stage == 1u) {
            let p = 2u * (row * params.chunks + wg.x);
            // The chunk's best value: the one at `first` (every chunk has values).
            part[p] = sane(x[row * params.n + first]);
            part[p + 1u] = bitcast<f32>(first);
        } else {
            out[row] = first;
        }
    }
}
