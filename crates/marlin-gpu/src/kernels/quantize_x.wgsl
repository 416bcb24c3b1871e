// Rows of x put on the int8 grids that qmv.wgsl's integer products read (X_Q8): the CPU's
// default activations (`Activations::Int8x2`). Each block of 32 values goes on an int8 grid of
// its own (scale amax / 127, to nearest even, as the CPU), then what that grid missed on a
// second one. Once per product, so that the product's workgroups (hundreds of them, each
// reading all of x) multiply integers without quantizing x themselves: quantizing x in every
// workgroup cost more than the integer products saved (docs/gpu.md).
//
// What is quantized: x as given, or its RMSNorm (times the norm's weight, the CPU's order
// x * inv * w), or silu(gate) * up of a fused gate|up row (gate the first K values, up the next
// K; the CPU's order u * (g / (1 + exp(-g)))). One workgroup per row of x, one thread per block.
//
// Out, per row and block of 32 (values past K are zero): 5 vec4<u32>,
// [grid words 0..4, 4..8, residual words 0..4, 4..8, (d1, d2, S_lo, S_hi)]: word i holds the
// values 4i..4i + 4 as signed bytes; d1 and d2 are the grids' scales, S_lo and S_hi the sums of
// the dequantized values of each half block (for the products' biases and INT4's offset).
// Comes after reduce_subgroup.wgsl or reduce_shared.wgsl (group_sum, Lane, GROUP_SIZE).

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
@group(0) @binding(2) var<storage, read_write> xq: array<vec4<u32>>;
// The norm's weight (k values) in MODE_NORM; x again otherwise, unread.
@group(0) @binding(3) var<storage, read> weight: array<f32>;

@compute @workgroup_size(GROUP_SIZE)
fn main(
    lane: Lane,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let row = wg.x + wg.y * groups.x;
    // Spare workgroups of a 2D grid take part in the reduction's barriers but touch nothing.
    let live = row < params.m;
    let src = row * params.x_stride;
    var inv = 1.0;
    if (params.mode == MODE_NORM) {
        var sum_sq = 0.0;
        for (var j = lane.index; live && j < params.k; j += GROUP_SIZE) {
            let v = x[src + j];
            sum_sq += v * v;
        }
        let total = group_sum(sum_sq, lane);
        inv = 1.0 / sqrt(total / f32(params.k) + params.eps);
    }
    for (var b = lane.index; live && b < params.blocks; b += GROUP_SIZE) {
        var v: array<vec4<f32>, 8>;
        for (var i = 0u; i < 8u; i++) {
            for (var e = 0u; e < 4u; e++) {
                v[i][e] = value(src, b * 32u + 4u * i + e, inv);
            }
        }
        var q1: array<u32, 8>;
        var q2: array<u32, 8>;
        let g1 = q8_block(&v, &q1);
        let g2 = q8_block(&v, &q2);
        let d1 = g1.x;
        let d2 = g2.x;
        let at = (row * params.blocks + b) * 5u;
        xq[at] = vec4<u32>(q1[0], q1[1], q1[2], q1[3]);
        xq[at + 1u] = vec4<u32>(q1[4], q1[5], q1[6], q1[7]);
        xq[at + 2u] = vec4<u32>(q2[0], q2[1], q2[2], q2[3]);
        xq[at + 3u] = vec4<u32>(q2[4], q2[5], q2[6], q2[7]);
        xq[at + 4u] = bitcast<vec4<u32>>(vec4<f32>(d1, d2, d1 * g1.y + d2 * g2.y, d1 * g1.z + d2 * g2.z));
    }
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

// Puts `v` (32 values) on the int8 grid of its block (scale amax / 127, to nearest even, as the
// CPU) into `q`, 4 values per word, leaves in `v` what the grid missed, and returns the scale
// and the sums of the grid values of each half. A rounded value plus 1.5 * 2^23 has its two's
// complement byte as the low byte of its bits: no float-to-integer conversion. (Rounding by
// that addition itself, as the CPU's `round_small`, is undone by compilers that reassociate
// (x + M) - M: lavapipe's did.)
fn q8_block(v: ptr<function, array<vec4<f32>, 8>>, q: ptr<function, array<u32, 8>>) -> vec3<f32> {
    const MAGIC: f32 = 12582912.0;
    var amax = vec4<f32>(0.0);
    for (var i = 0u; i < 8u; i++) {
        amax = max(amax, abs((*v)[i]));
    }
    let d = max(max(amax.x, amax.y), max(amax.z, amax.w)) / 127.0;
    let inv = select(0.0, 1.0 / d, d != 0.0);
    var sums = vec2<f32>(0.0);
    for (var i = 0u; i < 8u; i++) {
        let c = round((*v)[i] * inv);
        let b = bitcast<vec4<u32>>(c + vec4<f32>(MAGIC)) & vec4<u32>(0xffu);
        (*q)[i] = b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
        (*v)[i] -= d * c;
        sums[i / 4u] += dot(c, vec4<f32>(1.0));
    }
    return vec3<f32>(d, sums);
}
