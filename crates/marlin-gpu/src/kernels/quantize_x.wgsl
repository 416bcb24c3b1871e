// Rows of x put on the int8 grids that qmv.wgsl's integer products read (X_Q8): the CPU's
// default activations (`Activations::Int8x2`). Each block of 32 values goes on an int8 grid of
// its own (scale amax / 127, to nearest even, as the CPU), then what that grid missed on a
// second one, 256 times finer. Once per product, so that the product's workgroups (hundreds of them, each
// reading all of x) multiply integers without quantizing x themselves: quantizing x in every
// workgroup cost more than the integer products saved (docs/gpu.md).
//
// What is quantized: x as given, or its RMSNorm (times the norm's weight, the CPU's order
// x * inv * w), or silu(gate) * up of a fused gate|up row (gate the first K values, up the next
// K; the CPU's order u * (g / (1 + exp(-g)))). A workgroup takes BPW blocks of one row, 8 threads
// per block, a vec4 each, so that loads are coalesced and a block's steps run side by side.
//
// Out, per row: 5 planes of `blocks` vec4<u32> each (values past K are zero): grid words 0..4,
// grid words 4..8, residual words 0..4, residual words 4..8, (d1, d2, S_lo, S_hi). Word i holds
// the values 4i..4i + 4 as signed bytes; d1 and d2 are the grids' scales, S_lo and S_hi the
// sums of the dequantized values of each half block (for the products' biases and INT4's
// offset). In planes, the threads of a product that take consecutive blocks read consecutive
// vec4s (a block's 80 bytes side by side would spread each of their loads over 20 cache lines).
// Comes after reduce_subgroup.wgsl or reduce_shared.wgsl (group_sum, Lane, GROUP_SIZE) and
// int8_grid.wgsl (on_grid, grid_word, max_abs4).

struct Params {
    // Rows of x.
    m: u32,
    // Values per row (the product's K).
    k: u32,
    // Blocks of 32 per row (K padded).
    blocks: u32,
    // Floats from one row of x to the next.
    x_stride: u32,
    // MODE_PLAIN, MODE_NORM or MODE_SWIGLU.
    mode: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

const MODE_PLAIN: u32 = 0u;
const MODE_NORM: u32 = 1u;
const MODE_SWIGLU: u32 = 2u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// The planes as words: vec4 v of plane p of row r is words ((r * 5 + p) * blocks + v) * 4...
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;
// The norm's weight (k values) in MODE_NORM; x again otherwise, unread.
@group(0) @binding(3) var<storage, read> weight: array<f32>;

// Blocks a workgroup takes at once.
const BPW: u32 = GROUP_SIZE / 8u;
// Each thread's value for the block-wide maxima and sums.
var<workgroup> part: array<f32, GROUP_SIZE>;

@compute @workgroup_size(GROUP_SIZE)
fn main(lane: Lane, @builtin(workgroup_id) wg: vec3<u32>) {
    // Workgroup (c, r) takes blocks c * BPW.. of row r: a row's blocks are spread over the
    // device, not walked by one workgroup (which took ~7 µs of a decode layer's products at
    // K = 4096 on the H100).
    let row = wg.y;
    let src = row * params.x_stride;
    var inv = 1.0;
    if (params.mode == MODE_NORM) {
        // Every workgroup of the row sums the whole row's squares (from the cache).
        var sum_sq = 0.0;
        for (var j = lane.index; j < params.k; j += GROUP_SIZE) {
            let v = x[src + j];
            sum_sq += v * v;
        }
        let total = group_sum(sum_sq, lane);
        inv = 1.0 / sqrt(total / f32(params.k) + params.eps);
    }
    let t = lane.index;
    // This thread's word of its block: values 4i..4i + 4.
    let i = t % 8u;
    let b = wg.x * BPW + t / 8u;
    let mine = b < params.blocks;
    var v = vec4<f32>(0.0);
    if (mine) {
        for (var e = 0u; e < 4u; e++) {
            v[e] = value(src, b * 32u + 4u * i + e, inv);
        }
    }
    // The block on its grid (int8_grid.wgsl), then what that missed on a second one.
    let d1 = block_max(max_abs4(v), t) / 127.0;
    let c1 = on_grid(v, d1);
    let r = v - d1 * c1;
    let d2 = residual_step(d1);
    let c2 = residual_grid(r, d2);
    // The sums of each half block's dequantized values: threads 0..4 of a block hold the first
    // half, 4..8 the second.
    part[t] = d1 * dot(c1, vec4<f32>(1.0)) + d2 * dot(c2, vec4<f32>(1.0));
    workgroupBarrier();
    if (!mine) {
        return;
    }
    let plane = (row * 5u) * params.blocks + b;
    xq[(plane + (i / 4u) * params.blocks) * 4u + i % 4u] = grid_word(c1);
    xq[(plane + (2u + i / 4u) * params.blocks) * 4u + i % 4u] = grid_word(c2);
    if (i == 0u) {
        let s_lo = part[t] + part[t + 1u] + part[t + 2u] + part[t + 3u];
        let s_hi = part[t + 4u] + part[t + 5u] + part[t + 6u] + part[t + 7u];
        let ms = (plane + 4u * params.blocks) * 4u;
        xq[ms] = bitcast<u32>(d1);
        xq[ms + 1u] = bitcast<u32>(d2);
        xq[ms + 2u] = bitcast<u32>(s_lo);
        xq[ms + 3u] = bitcast<u32>(s_hi);
    }
}

// The largest `a` over the 8 threads of thread t's block, in each of them. Call from uniform
// control flow: it has barriers.
fn block_max(a: f32, t: u32) -> f32 {
    part[t] = a;
    workgroupBarrier();
    let base = t - t % 8u;
    var m = part[base];
    for (var j = 1u; j < 8u; j++) {
        m = max(m, part[base + j]);
    }
    workgroupBarrier();
    return m;
}

// Value j of the row at src as the product multiplies it (zero past K).
fn value(src: u32, j: u32, inv: f32) -> f32 {
    if (j >= params.k) {
        return 0.0;
    }
    let v = x[src + j];
    switch params.mode {
        case MODE_NORM: {
            return v * inv * weight[j];
        }
        case MODE_SWIGLU: {
            let u = x[src + params.k + j];
            return u * (v / (1.0 + exp(-v)));
        }
        default: {
            return v;
        }
    }
}
