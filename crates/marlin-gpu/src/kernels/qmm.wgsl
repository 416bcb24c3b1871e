// Quantized tiled GEMM for prefill: y (m, n) = x (m, k) · W (n, k)^T, m past qmv's reach.
//
// A workgroup owns a BM x BN tile of y. Per 32-weight block of K it stages the x tile (BM x 32)
// and the dequantized W tile (32 x BN, decoded once from the stored bytes) in workgroup memory,
// then each thread accumulates a TM x 4 register tile. Every weight byte is read once per BM rows
// of x (once in all for m <= BM).
//
// The three steps are separate functions so that the cooperative-matrix variant (simdgroup
// matrices on Apple, tensor cores on NVIDIA) can reuse the staging and decoding and replace only
// `multiply_tiles` with coopLoad / coopMultiplyAdd over f16 tiles.
//
// Prepended by qmm.rs: BM, TM and quant_decode.wgsl with its format constants.

// Group 0 changes with every call (params, x, y); group 1 is the weights' bind group, made
// once per part of a matrix at upload (qmatmul.rs).
@group(0) @binding(0) var<uniform> params: Params;
@group(1) @binding(0) var<storage, read> codes: array<u32>;
@group(1) @binding(1) var<storage, read> scales: array<u32>;
@group(1) @binding(2) var<storage, read> biases: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// Threads: a 16 x 16 grid, thread (tx, ty) owning rows ty * TM.. of x and rows 4 tx.. of W.
const T: u32 = 256u;
// Rows of W per tile.
const BN: u32 = 64u;
// K per step: one block, so a unit never straddles two steps.
const BK: u32 = 32u;
// x tile, k-major, its rows of x permuted per k (see `xt_index`).
var<workgroup> xt: array<f32, BK * BM>;
// Dequantized W tile, k-major, four rows of W per vec4: wt[kk * BN / 4 + row / 4][row % 4].
// With xt, 16 KiB at BM = 64: the most every WebGPU device allows.
var<workgroup> wt: array<vec4<f32>, BK * BN / 4u>;

// Where x tile element (kk, row of x) lives: row ^ kk spreads the 32 k of one row over 32
// banks for the transposing writes, where a plain stride of BM (a multiple of 32) would put
// them all in one bank; the xor stays inside the row's aligned block of 32 (BM >= 32).
fn xt_index(kk: u32, mm: u32) -> u32 {
    return kk * BM + (mm ^ kk);
}

// Stages x[m0.., b * 32..] (zero past m and past K), reading along K (coalesced).
fn load_x_tile(li: u32, m0: u32, b: u32) {
    for (var e = li; e < BM * BK; e += T) {
        let mm = m0 + e / BK;
        let kk = b * BK + e % BK;
        let live = mm < params.m && kk < params.k;
        let i = min(mm, params.m - 1u) * params.k + min(kk, params.k - 1u);
        xt[xt_index(e % BK, e / BK)] = select(0.0, x[i], live);
    }
}

// Decodes block b of rows n0.. of W into the tile (rows past n repeat the last row; their
// outputs are never stored).
fn decode_w_tile(li: u32, n0: u32, b: u32) {
    let row_words = params.blocks * WPB;
    for (var v = li; v < BN * UPB; v += T) {
        let nl = v / UPB;
        let q = v % UPB;
        let row = min(n0 + nl, params.n - 1u);
        let vals = unit_values(row * row_words, b, q);
        let g = row * params.groups + select(b >> params.group_shift, 2u * b, SPLIT16);
        for (var i = 0u; i < NV; i++) {
            let off = unit_offset(q, i);
            // At group 16 the second half of the block has the next group's scale and bias.
            let gi = g + select(0u, off >> 4u, SPLIT16);
            let w = vals[i] * scale_at(gi) + bias_at(gi);
            for (var e = 0u; e < 4u; e++) {
                wt[(off + e) * (BN / 4u) + nl / 4u][nl % 4u] = w[e];
            }
        }
    }
}

// acc[i] += x tile row (ty * TM + i) times W tile rows 4 tx..4 tx + 4, over the 32 k of a step.
fn multiply_tiles(tx: u32, ty: u32, acc: ptr<function, array<vec4<f32>, TM>>) {
    for (var kk = 0u; kk < BK; kk++) {
        let w = wt[kk * (BN / 4u) + tx];
        for (var i = 0u; i < TM; i++) {
            (*acc)[i] += xt[xt_index(kk, ty * TM + i)] * w;
        }
    }
}

@compute @workgroup_size(T)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let n0 = wg.x * BN;
    let m0 = wg.y * BM;
    let tx = li % 16u;
    let ty = li / 16u;
    var acc: array<vec4<f32>, TM>;
    for (var b = 0u; b < params.blocks; b++) {
        load_x_tile(li, m0, b);
        decode_w_tile(li, n0, b);
        workgroupBarrier();
        multiply_tiles(tx, ty, &acc);
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let mm = m0 + ty * TM + i;
        for (var e = 0u; e < 4u; e++) {
            let nn = n0 + 4u * tx + e;
            if (mm < params.m && nn < params.n) {
                y[mm * params.y_stride + params.row0 + nn] = acc[i][e];
            }
        }
    }
}
