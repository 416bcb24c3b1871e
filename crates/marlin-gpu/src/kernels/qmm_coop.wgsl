// Quantized tiled GEMM on cooperative matrices (tensor cores through VK_KHR_cooperative_matrix
// on NVIDIA, simdgroup matrices on Apple): y (m, n) = x (m, k) · W (n, k)^T, for prefill.
//
// A workgroup of GY x GX subgroups owns a BM x BN tile of y (2 x 2; 1 x 4 for a 16-row tile;
// 2 x 4 for a packed 64-row one); subgroup (wy, wx) owns its (BM / GY) x (BN / GX) part as
// FM x FN accumulator fragments of TS x TS (f32). Per
// 32-weight block of K the workgroup stages the x tile (BM x 32) and the W tile (BN x 32,
// decoded once from the stored bytes with its scales) in workgroup memory as AB (f16 where the
// device takes it), then each subgroup multiplies its fragments over the block's 32 / TS steps.
// While the fragments multiply, every thread already has the next block's codes and x in
// flight (loaded into registers before the multiply, stored after the barrier): one block of
// prefetch, so the loads' latency hides behind the matrix work. (Two to four blocks in flight
// measured the same on the H100, at M = 16 and 32 with K split: there the decoding into the
// tiles is the cost, not the loads' latency.)
//
// Split K: where the tiles alone are too few workgroups to fill the device (a small batch, or a
// short prefill), qmm_coop.rs gives the grid a z dimension. Workgroup z multiplies only blocks
// z * split_blocks.. of K and writes its sums to slab z of y (rows z * m..); split_sum.wgsl then
// adds the slabs. Without a split, z is 0 and split_blocks is every block.
//
// Prepended by qmm_coop.rs: the `enable` lines, BM, BN, TS, GY, GX, KP, the aliases AB, CA, CB,
// CC of the fragment types and TILE of the staged tiles' elements, and quant_decode.wgsl with
// its format constants. The lines `//{ACC}`, `//{MMA}` and `//{STORE}` are replaced by
// qmm_coop.rs with the declarations, multiply-adds and stores of the FM x FN accumulators (a
// fragment cannot live in an array).
//
// PACKED (f16 fragments): the tiles' elements are vec4<f16> (TILE, KP = 4 values an element),
// written with one 8-byte store per 4 values; a cooperative load reads them as f16 rows, its
// stride counted in elements. Otherwise TILE = AB and KP = 1: one store per value.

@group(0) @binding(0) var<uniform> params: Params;
@group(1) @binding(0) var<storage, read> codes: array<u32>;
@group(1) @binding(1) var<storage, read> scales: array<u32>;
@group(1) @binding(2) var<storage, read> biases: array<u32>;
//#if X_VEC4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
//#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
//#endif
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// Threads: GY x GX subgroups of 32 (the variant is chosen only where subgroups are 32 wide).
const T: u32 = 32u * GY * GX;
// K per step: one block, so a unit never straddles two steps.
const BK: u32 = 32u;
// Row strides of the staged tiles, in elements: BK plus 8 values (16 bytes, which the fragment
// loads want), so consecutive rows start in different banks.
const XS: u32 = (BK + 8u) / KP;
const WS: u32 = (BK + 8u) / KP;
// Runs of 4 x values each thread stages per block; units of W (one code word each) per thread.
const XPT: u32 = BM * BK / 4u / T;
const UPT: u32 = BN * UPB / T;

// x tile [m][k], row-major: fragment A (m x k) loads it with coopLoadT.
var<workgroup> xs: array<TILE, BM * XS>;
// W tile [n][k]: fragment B (k x n) loads it column-major with coopLoad.
var<workgroup> ws: array<TILE, BN * WS>;
// One TS x TS fragment per subgroup on its way to y (row-major).
var<workgroup> cs: array<f32, GY * GX * TS * TS>;

// A thread's share of one block: its runs of 4 x values and its units' code words (and, for
// INT3, the block's word of high bits).
struct Staged {
    xv: array<vec4<f32>, XPT>,
    words: array<vec2<u32>, UPT>,
}

// x[mm][kk..kk + 4], zero past m and K (kk is a multiple of 4).
fn x_run(mm: u32, kk: u32) -> vec4<f32> {
    let row = min(mm, params.m - 1u) * params.k;
//#if X_VEC4
    // K is a multiple of 4, so the run is inside K when it starts there.
    let v = x[(row + min(kk, params.k - 4u)) / 4u];
    return select(vec4<f32>(0.0), v, mm < params.m && kk < params.k);
//#else
    var v: vec4<f32>;
    for (var j = 0u; j < 4u; j++) {
        let kj = kk + j;
        v[j] = select(0.0, x[row + min(kj, params.k - 1u)], mm < params.m && kj < params.k);
    }
    return v;
//#endif
}

// Loads block b's share of thread li (x zero past m and K; rows of W past n repeat the last).
fn fetch(li: u32, m0: u32, n0: u32, b: u32) -> Staged {
    var s: Staged;
    for (var i = 0u; i < XPT; i++) {
        let e = li + i * T;
        s.xv[i] = x_run(m0 + e / (BK / 4u), b * BK + 4u * (e % (BK / 4u)));
    }
    let row_words = params.blocks * WPB;
    for (var i = 0u; i < UPT; i++) {
        let v = li + i * T;
        let row = min(n0 + v / UPB, params.n - 1u);
        // A split that starts past the last block (only where a test forces the splits) fetches
        // the last block before its empty loop, which never stages it.
        let base = row * row_words + min(b, params.blocks - 1u) * WPB;
        var high = 0u;
        if (BITS == 3u) {
            high = codes[base + 2u];
        }
        s.words[i] = vec2<u32>(codes[base + v % UPB], high);
    }
    return s;
}

// Write 4 consecutive values of a row of the x or W tile at element `at` (a multiple of 4 / KP).
//#if PACKED
fn put_x(at: u32, v: vec4<f32>) {
    xs[at] = TILE(v);
}

fn put_w(at: u32, v: vec4<f32>) {
    ws[at] = TILE(v);
}
//#else
fn put_x(at: u32, v: vec4<f32>) {
    xs[at] = AB(v.x);
    xs[at + 1u] = AB(v.y);
    xs[at + 2u] = AB(v.z);
    xs[at + 3u] = AB(v.w);
}

fn put_w(at: u32, v: vec4<f32>) {
    ws[at] = AB(v.x);
    ws[at + 1u] = AB(v.y);
    ws[at + 2u] = AB(v.z);
    ws[at + 3u] = AB(v.w);
}
//#endif

// Writes a fetched share of block b into the tiles: x as AB, W decoded with its scales. At a
// small batch this decoding is most of the kernel's work (the tile's multiplies are few), so
// each unit's scales and biases are decoded once (twice at group 16), and the integer formats
// take the conversion-free `magic4` / `values8` values with the grid folded into one
// multiply-add.
fn stage(li: u32, n0: u32, b: u32, s: Staged) {
    for (var i = 0u; i < XPT; i++) {
        let e = li + i * T;
        put_x((e / (BK / 4u)) * XS + (e % (BK / 4u)) * (4u / KP), s.xv[i]);
    }
    for (var i = 0u; i < UPT; i++) {
        let v = li + i * T;
        let nl = v / UPB;
        let q = v % UPB;
        let row = min(n0 + nl, params.n - 1u);
        let g = row * params.groups + select(b >> params.group_shift, 2u * b, SPLIT16);
        // Scale and bias of the block's first 16 weights and, at group 16, of its last 16.
        var sc = vec2<f32>(scale_at(g));
        var bi = vec2<f32>(bias_at(g));
        if (SPLIT16) {
            sc.y = scale_at(g + 1u);
            bi.y = bias_at(g + 1u);
        }
        var vals: array<vec4<f32>, 4>;
        if (MAGIC_CODES) {
            // weight = scale * GRID_STEP * v + (bias - scale * GRID_STEP * GRID_OFF).
            sc *= grid_step();
            bi -= sc * grid_off();
            if (BITS == 4u) {
                let m4 = magic4(s.words[i].x);
                vals[0] = m4[0];
                vals[1] = m4[1];
            } else {
                vals[0] = values8(s.words[i].x);
            }
        } else {
            vals = word_values(s.words[i].x, s.words[i].y, q);
        }
        for (var j = 0u; j < NV; j++) {
            let off = unit_offset(q, j);
            // At group 16 the second half of the block has the next group's scale and bias.
            let hi = SPLIT16 && off >= 16u;
            let w = vals[j] * select(sc.x, sc.y, hi) + select(bi.x, bi.y, hi);
            put_w(nl * WS + off / KP, w);
        }
    }
}

@compute @workgroup_size(T)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_id) sid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) width: u32,
) {
    let n0 = wg.x * BN;
    let m0 = wg.y * BM;
    // This subgroup's part: rows wy * BM / GY.. of the tile, columns wx * BN / GX.. .
    let wy = sid / GX;
    let wx = sid % GX;
    let a0 = wy * (BM / GY) * XS;
    let b0 = wx * (BN / GX) * WS;
    // This workgroup's blocks of K, and the slab of y its sums go to.
    let b_first = wg.z * params.split_blocks;
    let b_end = min(b_first + params.split_blocks, params.blocks);
    let slab = wg.z * params.m;
//{ACC}
//#if PREFETCH
    var next = fetch(li, m0, n0, b_first);
//#endif
    for (var b = b_first; b < b_end; b++) {
//#if PREFETCH
        stage(li, n0, b, next);
//#else
        stage(li, n0, b, fetch(li, m0, n0, b));
//#endif
        workgroupBarrier();
//#if PREFETCH
        if (b + 1u < b_end) {
            next = fetch(li, m0, n0, b + 1u);
        }
//#endif
        for (var kk = 0u; kk < BK; kk += TS) {
//{MMA}
        }
        workgroupBarrier();
    }
    // Fragment (i, j) covers rows ri.. and columns cj.. of the tile; it goes to y through cs,
    // which keeps the stores inside m and n.
    let c0 = sid * TS * TS;
//{STORE}
}

// Writes this subgroup's fragment staged at cs[c0..] to slab `slab` of y at tile rows r0..,
// columns c1.., inside m and n; the barriers around it let every subgroup see its own
// coopStore.
fn store_fragment(c0: u32, lane: u32, width: u32, slab: u32, r0: u32, c1: u32) {
    workgroupBarrier();
    for (var e = lane; e < TS * TS; e += width) {
        let mm = r0 + e / TS;
        let nn = c1 + e % TS;
        if (mm < params.m && nn < params.n) {
            y[(slab + mm) * params.y_stride + params.row0 + nn] = cs[c0 + e];
        }
    }
    workgroupBarrier();
}
