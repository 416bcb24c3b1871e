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
// Values of a row each thread holds in registers, and the row length they cover.
const E: u32 = 16u;
const CHUNK: u32 = GROUP_SIZE * E;
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

    // Loads first, all of a thread's E values, then the arithmetic: each value read in a loop
    // of its own (and, in place, written between reads, which the compiler cannot reorder)
    // cost one memory latency each, 16 of them for a 4096-wide row: on the H100 the norm took
    // 17 µs where its data takes under one. Values past the registers (rows over
    // GROUP_SIZE * E) are read again for the output, E at a time. The per-thread order of the
    // sums is still j = lane, lane + GROUP_SIZE, ...
    let n = select(0u, params.dim, live);
    let v = chunk_of(src, 0u, n, lane);
    var sum_sq = 0.0;
    for (var e = 0u; e < E; e++) {
        sum_sq += v[e] * v[e];
    }
    for (var c0 = CHUNK; c0 < n; c0 += CHUNK) {
        let w = chunk_of(src, c0, n, lane);
        for (var e = 0u; e < E; e++) {
            sum_sq += w[e] * w[e];
        }
    }
    let total = group_sum(sum_sq, lane);
    let inv = 1.0 / sqrt(total / f32(params.dim) + params.eps);
    // In place is safe: every thread has read its values (the reduction's barriers) and
    // writes only the values it read itself.
    normed_out(v, 0u, n, inv, dst, lane);
    for (var c0 = CHUNK; c0 < n; c0 += CHUNK) {
        normed_out(chunk_of(src, c0, n, lane), c0, n, inv, dst, lane);
    }
}

// This thread's E values of the row at src in the chunk at c0 (zero past n), loaded together.
fn chunk_of(src: u32, c0: u32, n: u32, lane: Lane) -> array<f32, E> {
    var v: array<f32, E>;
    for (var e = 0u; e < E; e++) {
        let j = c0 + e * GROUP_SIZE + lane.index;
        if (j < n) {
            v[e] = x[src + j];
        }
    }
    return v;
}

// out[dst + j] = v * inv * weight[j] for this thread's E values of the chunk at c0, the
// weights' loads issued together before the stores.
fn normed_out(v: array<f32, E>, c0: u32, n: u32, inv: f32, dst: u32, lane: Lane) {
    var g: array<f32, E>;
    for (var e = 0u; e < E; e++) {
        let j = c0 + e * GROUP_SIZE + lane.index;
        if (j < n) {
            g[e] = weight[j];
        }
    }
    for (var e = 0u; e < E; e++) {
        let j = c0 + e * GROUP_SIZE + lane.index;
        if (j < n) {
            out[dst + j] = v[e] * inv * g[e];
        }
    }
}
