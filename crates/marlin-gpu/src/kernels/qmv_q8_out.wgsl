// qmv.wgsl's epilogue for Q8_OUT (appended by qmv.rs after int8_grid.wgsl, under the same
// flags): the rows of y a product adds to, put on the int8 grids of the next product's x.

// The rows of y this workgroup stored (after the add), by row of x, for `quantize_out`.
var<workgroup> h_out: array<f32, MT * R>;
//#if SUBGROUPS
//#else
// Per thread of `quantize_out`: its part of a block's maximum, then its part of the block's
// sums (dequantized values, squares of y).
var<workgroup> q8_part: array<vec2<f32>, 8u * MT * (R / 32u)>;
//#endif

// The next product's x, made here instead of by a quantize_x.wgsl dispatch of its own: this
// workgroup's R rows of y (R / 32 whole blocks of each row of x, n a multiple of R: qmv.rs
// checks) times the next norm's weight, on the int8 grids and in the planes quantize_x.wgsl
// makes (int8_grid.wgsl, eight threads a block, a vec4 each), for K = n; then, after every row's
// planes, each block's sum of squares of y, from which the next product takes its norm's 1 /
// rms (NORM_SUMS). Quantizing y * weight rather than the normed row gives the same grids up to
// rounding (a block's scale and values scale alike). `slot` numbers the threads (eight
// consecutive slots a block). Call from uniform control flow.
fn quantize_out(slot: u32, tile: u32) {
    let s = out_slot(slot, tile, R, params.n);
    let h = h_out4(s.at);
    let col = s.b * 32u + 4u * s.i;
    let v = h * vec4<f32>(norm_w[col], norm_w[col + 1u], norm_w[col + 2u], norm_w[col + 3u]);
    // The block's sum of squares of y, after every row's planes.
    let sq = write_grids(s, v, dot(h, h));
    if (s.live && s.i == 0u) {
        q8_out[params.m * 5u * s.blocks * 4u + s.mi * s.blocks + s.b] = bitcast<u32>(sq);
    }
}

// Where an epilogue's thread works: slot `slot` of workgroup `tile`, whose `cols` columns of
// the next x (of `total` a row) are cols / 32 blocks of each row of x, eight threads a block.
struct OutSlot {
    // A thread past the blocks reads a live thread's slot and writes nothing.
    live: bool,
    t: u32,
    // The thread's word of its block (values 4i..4i + 4), the row of x, the block in the row.
    i: u32,
    mi: u32,
    b: u32,
    // Blocks a row, and where the thread's 4 values start in h_out.
    blocks: u32,
    at: u32,
}

fn out_slot(slot: u32, tile: u32, cols: u32, total: u32) -> OutSlot {
    let bw = cols / 32u;
    var s: OutSlot;
    s.live = slot < 8u * bw * params.m && tile * cols < total;
    s.t = min(slot, 8u * bw * MT - 1u);
    s.i = s.t % 8u;
    let bl = (s.t / 8u) % bw;
    s.mi = s.t / (8u * bw);
    s.blocks = total / 32u;
    s.b = min(tile * bw + bl, s.blocks - 1u);
    s.at = s.mi * R + bl * 32u + 4u * s.i;
    return s;
}

// Four values of h_out from `at`.
fn h_out4(at: u32) -> vec4<f32> {
    return vec4<f32>(h_out[at], h_out[at + 1u], h_out[at + 2u], h_out[at + 3u]);
}

// The 4 values `v` of slot s (block s.b of row s.mi of the next product's x) on the int8 grids
// (int8_grid.wgsl), written in quantize_x.wgsl's 5 planes a row where s.live; returns the sum
// of `sq` over the block's 8 threads (in its first). Call from uniform control flow.
fn write_grids(s: OutSlot, v: vec4<f32>, sq: f32) -> f32 {
    let i = s.i;
    let blocks = s.blocks;
    let d1 = block_max_out(s.t, s.live, max_abs4(v)) / 127.0;
    let c1 = on_grid(v, d1);
    let r = v - d1 * c1;
    let d2 = residual_step(d1);
    let c2 = residual_grid(r, d2);
    // The block's sums: of its two halves' dequantized values, and of sq.
    let sums = block_sums_out(s.t, s.live, d1 * dot(c1, vec4<f32>(1.0)) + d2 * dot(c2, vec4<f32>(1.0)), sq);
    if (s.live) {
        let plane = (s.mi * 5u) * blocks + s.b;
        q8_out[(plane + (i / 4u) * blocks) * 4u + i % 4u] = grid_word(c1);
        q8_out[(plane + (2u + i / 4u) * blocks) * 4u + i % 4u] = grid_word(c2);
        if (i == 0u) {
            let ms = (plane + 4u * blocks) * 4u;
            q8_out[ms] = bitcast<u32>(d1);
            q8_out[ms + 1u] = bitcast<u32>(d2);
            q8_out[ms + 2u] = bitcast<u32>(sums.x);
            q8_out[ms + 3u] = bitcast<u32>(sums.y);
        }
    }
    return sums.z;
}

//#if SWIGLU_OUT
// With SWIGLU_OUT, instead of `quantize_out`: this workgroup's R / 2 columns of silu(gate) *
// up (gate in h_out's first R / 2 rows, up in the next: `first_row`), in the CPU's order u * (g
// / (1 + exp(-g))) as quantize_x.wgsl, on the int8 grids of the next product's x (K = n / 2,
// R / 2 a multiple of 32 and n / 2 of R / 2: qmv.rs checks), in quantize_x.wgsl's 5 planes a
// row (no sums of squares: that product takes x as it is). Call from uniform control flow.
fn quantize_swiglu_out(slot: u32, tile: u32) {
    const H: u32 = R / 2u;
    let s = out_slot(slot, tile, H, params.n / 2u);
    let g = h_out4(s.at);
    let u = h_out4(s.at + H);
    let v = u * (g / (vec4<f32>(1.0) + exp(-g)));
    _ = write_grids(s, v, 0.0);
}
//#endif

//#if SUBGROUPS
// The largest `v` of the 8 lanes of thread t's block (lanes 8j..8j + 8 of one subgroup).
fn block_max_out(t: u32, live: bool, v: f32) -> f32 {
    var m = v;
    m = max(m, subgroupShuffleXor(m, 1u));
    m = max(m, subgroupShuffleXor(m, 2u));
    return max(m, subgroupShuffleXor(m, 4u));
}

// For the first lane of a block: the sums of `half` over its lanes 0..4 and 4..8, and of `sq`
// over all 8.
fn block_sums_out(t: u32, live: bool, half: f32, sq: f32) -> vec3<f32> {
    var a = vec2<f32>(half, sq);
    a += subgroupShuffleXor(a, 1u);
    a += subgroupShuffleXor(a, 2u);
    let other = subgroupShuffleXor(a, 4u);
    return vec3<f32>(a.x, other.x, a.y + other.y);
}
//#else
// The largest `v` of the 8 threads of thread t's block.
fn block_max_out(t: u32, live: bool, v: f32) -> f32 {
    workgroupBarrier();
    if (live) {
        q8_part[t].x = v;
    }
    workgroupBarrier();
    let g = t & ~7u;
    var m = 0.0;
    for (var j = 0u; j < 8u; j++) {
        m = max(m, q8_part[g + j].x);
    }
    return m;
}

// For the first thread of a block: the sums of `half` over its threads 0..4 and 4..8, and of
// `sq` over all 8.
fn block_sums_out(t: u32, live: bool, half: f32, sq: f32) -> vec3<f32> {
    workgroupBarrier();
    if (live) {
        q8_part[t] = vec2<f32>(half, sq);
    }
    workgroupBarrier();
    let g = t & ~7u;
    var s = vec3<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        s += vec3<f32>(q8_part[g + j].x, q8_part[g + 4u + j].x, q8_part[g + j].y + q8_part[g + 4u + j].y);
    }
    return s;
}
//#endif
