// Quantized small-batch product (GEMV at m = 1): y (m, n) = x (m, k) · W (n, k)^T for m <= MT.
//
// Bandwidth-bound: every weight byte is read once, by one thread, for all m rows of x. A
// workgroup owns R = TEAMS * RPS consecutive rows of W. A team (a subgroup where subgroups are
// on, TK threads otherwise) takes RPS rows at a time; its threads split those rows' units (K)
// between them: consecutive threads read consecutive words of a row and consecutive vec4s of x,
// so both streams are coalesced. Each thread decodes its unit of all RPS rows once, then
// multiplies it with every row of x, loading each x vec4 once for the RPS rows.
//
// x is read from global memory, not staged in workgroup memory: each x element is used by one
// thread per team, and the teams of a workgroup read the same x at about the same time, so the
// cache serves them; staging would add a copy and a barrier per chunk and save no traffic.
//
// Reduction: with subgroups, the team is a subgroup and subgroupAdd sums it; the roles come from
// the subgroup builtins (not from local_invocation_index), so this is right for any subgroup
// size and any mapping of invocations to subgroups. Without, partial sums go through
// workgroup memory.
//
// Prepended by qmv.rs: MT, RPS, TEAMS, TK, T and quant_decode.wgsl with its format constants;
// with Q8_OUT, int8_grid.wgsl and qmv_q8_out.wgsl follow (`quantize_out`).
// Sections between `//#if NAME` and `//#endif` are kept only when NAME is set (SUBGROUPS,
// X_VEC4), so a shader without subgroups never names a subgroup builtin.

// Group 0 changes with every call (params, x, y); group 1 is the weights' bind group, made
// once per part of a matrix at upload (qmatmul.rs).
@group(0) @binding(0) var<uniform> params: Params;
//#if CODES_VEC4
@group(1) @binding(0) var<storage, read> codes: array<vec4<u32>>;
//#else
@group(1) @binding(0) var<storage, read> codes: array<u32>;
//#endif
@group(1) @binding(1) var<storage, read> scales: array<u32>;
@group(1) @binding(2) var<storage, read> biases: array<u32>;
//#if X_Q8
// x on its int8 grids (quantize_x.wgsl): 5 vec4s per block of 32 of each row.
@group(0) @binding(1) var<storage, read> xq: array<vec4<u32>>;
//#else
//#if X_VEC4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
//#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
//#endif
//#endif
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// IN_NORM: the RMSNorm weight (k values); Q8_OUT: the next norm's weight (n values); other
// variants bind x here again, unused.
@group(0) @binding(3) var<storage, read> norm_w: array<f32>;
//#if Q8_OUT
// Where `quantize_out` puts the rows of y this product adds to, on int8 grids, for the next
// product; other variants bind y here again, unused.
@group(0) @binding(4) var<storage, read_write> q8_out: array<u32>;
//#endif

// Rows of W per workgroup.
const R: u32 = TEAMS * RPS;

//#if ROW_NORMS
// 1 / rms of each row of x (IN_NORM, NORM_SUMS: `row_norms`), and the reduction's partial sums.
var<workgroup> norm_inv: array<f32, MT>;
var<workgroup> norm_red: array<f32, T>;

// norm_inv[mi] = 1 / sqrt(s / k + eps), s the sum of every thread's `part` of row mi's squares:
// a tree in workgroup memory (T is a power of two). Call from uniform control flow.
fn set_norm_inv(li: u32, mi: u32, part: f32) {
    norm_red[li] = part;
    for (var span = T / 2u; span > 0u; span >>= 1u) {
        workgroupBarrier();
        if (li < span) {
            norm_red[li] += norm_red[li + span];
        }
    }
    workgroupBarrier();
    if (li == 0u) {
        norm_inv[mi] = 1.0 / sqrt(norm_red[0] / f32(params.k) + params.eps);
    }
    workgroupBarrier();
}
//#endif

//#if SUBGROUPS
//#else
// Partial sums of every thread for one row of W, for the reduction without subgroups.
var<workgroup> partial: array<f32, T * MT>;
//#endif

//#if X_Q8
//#else
// x[mi, col0 + kk..col0 + kk + 4], zero past K and past the m rows of x (rows params.x_stride
// apart: wider than K where x is a fused gate|up activation).
fn load_x4(mi: u32, kk: u32, col0: u32) -> vec4<f32> {
//#if X_WHOLE
    // K needs no padding (K = blocks * 32), and callers stop at mi = m.
    return x[(mi * params.x_stride + col0 + kk) >> 2u];
//#else
    let row = min(mi, params.m - 1u) * params.x_stride + col0;
    let live = mi < params.m;
//#if X_VEC4
    // K, the stride and col0 are multiples of 4 here (qmv.rs checks), so a vec4 lies wholly
    // inside or past K.
    return select(vec4<f32>(0.0), x[(row + min(kk, params.k - 4u)) >> 2u], live && kk < params.k);
//#else
    var v: vec4<f32>;
    for (var e = 0u; e < 4u; e++) {
        v[e] = select(0.0, x[row + min(kk + e, params.k - 1u)], live && kk + e < params.k);
    }
    return v;
//#endif
//#endif
}

//#if IN_NORM
//#if CODES_VEC4
// Each thread's sum of squares of the x it staged, by row of x (`staged_x4`): staging reads every
// value of x once per workgroup, so the norm costs no second pass over x.
var<private> sq: array<f32, MT>;
//#endif

// norm_inv[mi] = 1 / sqrt(mean(x[mi]^2) + eps) for every row of x, computed by each workgroup
// rather than by a dispatch of its own. Where x is staged, from the sums of squares the staging
// gathered (reading the rows again here, from the cache, held a Llama-3.1-8B INT4 decode on the
// H100 to 199-200 tokens/s against 207-208); otherwise each workgroup reads the rows whole. It runs
// after the product so that it cannot hold back the weight stream. Call from uniform control
// flow: it has barriers.
fn row_norms(li: u32) {
    for (var mi = 0u; mi < MT; mi++) {
        if (mi >= params.m) {
            break;
        }
//#if CODES_VEC4
        let s = sq[mi];
//#else
        var s = 0.0;
        for (var kk = 4u * li; kk < params.k; kk += 4u * T) {
            let v = load_x4(mi, kk, 0u);
            s += dot(v, v);
        }
//#endif
        set_norm_inv(li, mi, s);
    }
}
//#endif

// What the product multiplies: x[mi, kk..kk + 4] as given, or times the norm's weight (IN_NORM:
// the row's 1 / rms, a factor of the whole dot product, multiplies it at the store), or
// silu(gate) * up of a fused gate|up row (IN_SWIGLU: gate at column kk, up K further; the CPU's
// order u * (g / (1 + exp(-g)))).
fn input_x4(mi: u32, kk: u32) -> vec4<f32> {
//#if IN_SWIGLU
    let g = load_x4(mi, kk, 0u);
    let u = load_x4(mi, kk, params.k);
    return u * (g / (vec4<f32>(1.0) + exp(-g)));
//#else
//#if IN_NORM
    return load_x4(mi, kk, 0u) * norm_w4(kk);
//#else
    return load_x4(mi, kk, 0u);
//#endif
//#endif
}

//#if IN_NORM
// The norm's weight at columns kk..kk + 4 (zero past K).
fn norm_w4(kk: u32) -> vec4<f32> {
    var w: vec4<f32>;
    for (var e = 0u; e < 4u; e++) {
        w[e] = select(0.0, norm_w[min(kk + e, params.k - 1u)], kk + e < params.k);
    }
    return w;
}
//#endif

//#if CODES_VEC4
// input_x4 for the staging, which also adds the squares of an IN_NORM row to this thread's `sq`.
fn staged_x4(mi: u32, kk: u32) -> vec4<f32> {
//#if IN_NORM
    let raw = load_x4(mi, kk, 0u);
    sq[mi] += dot(raw, raw);
    return raw * norm_w4(kk);
//#else
    return input_x4(mi, kk);
//#endif
}
//#endif

//#endif

// This thread's partial sums for rows first..first + RPS of this part (rows past n repeat the
// last row and are never stored), over units lane, lane + width, ... < units.
//#if CODES_VEC4
// Here a thread reads 16 bytes of each row at once, four consecutive units of one block (what
// 4- and 8-bit rows allow: whole 16-byte chunks, a block being one or two of them): four times
// the bytes in flight of a word at a time, and one scale lookup per chunk instead of per unit.
// Chunk c holds units 4c..4c + 3: for 4 bits the whole block b = c, for 8 bits half (c % 2) of
// block b = c / 2.
//
// The codes are decoded with as few instructions as possible, since at m = 1 a weight's share
// of the work is only a multiply-add: with int-to-float conversions (a quarter-rate instruction
// on NVIDIA) and per-vec4 selects the kernel was instruction-bound at a third of the bandwidth.
// Integer codes are decoded without conversions (quant_decode.wgsl, `magic4`): the grid value is
// GRID_STEP * (v - GRID_OFF), so a row's dot product over a vec4 is
// GRID_STEP * (dot(v, x) - GRID_OFF * sum(x)), and sum(x) serves every row. The subtraction loses
// at most a few bits of the f32 sum (v and the offset are within a factor 2 of each other). E2M1
// codes are looked up in a 16-entry table in workgroup memory (`e2m1_table`: one word per bank,
// so a subgroup's lookups never conflict); FP8 keeps `e4m3_units`.

// x floats of a chunk: a block for 4 bits, half a block for 8.
const CX: u32 = select(16u, 32u, BITS == 4u);

// Codes of chunk c of rows first..first + RPS (rows past n repeat the last one).
fn chunk_codes(first: u32, c: u32) -> array<vec4<u32>, RPS> {
    let row_chunks = params.blocks * WPB / 4u;
    var words: array<vec4<u32>, RPS>;
    for (var r = 0u; r < RPS; r++) {
        words[r] = codes[min(first + r, params.n - 1u) * row_chunks + c];
    }
    return words;
}

//#if X_Q8
// x as the CPU's default activations (Int8x2), put on its grids once per product by
// quantize_x.wgsl: each block of 32 values on an int8 grid, then what that missed on a second
// one, in 5 planes of a vec4 per block (grid words 0..4, 4..8, residual words 0..4, 4..8, (d1,
// d2, S_lo, S_hi)), word i holding the values 4i..4i + 4; S_lo and S_hi the sums of the
// dequantized values of each half, for the biases and INT4's offset. A weight word's 4 or 8 codes meet x in 4-wide
// integer dot products (dot4I8Packed: one instruction on GPUs with integer dot products),
// without decoding a code to a float: at m = 1 the float decode (two integer operations and a
// multiply-add per weight) holds INT4 to half the copy bandwidth. x is read straight from
// global memory (blocks * 80 bytes a row, 10 KiB at K = 4096, which every workgroup reads, from
// the cache; lanes on consecutive blocks read consecutive vec4s of a plane): no staging, no
// barriers.
const BV: u32 = 5u;

//#if NORM_SUMS
// x quantized before its norm by the product that made it (Q8_OUT): its planes are followed by
// each block's sum of squares of the unnormed row, from which the norm's 1 / rms comes; it
// multiplies each output (a factor of the whole dot product; the norm's weight is in the
// grids). This thread's part of row mi's sum of squares: blocks lane, lane + width, ...
fn sum_sq_part(mi: u32, lane: u32, width: u32) -> f32 {
    let pb = params.blocks;
    let sums = params.m * BV * pb * 4u;
    var s = 0.0;
    for (var b = lane; b < pb; b += width) {
        let w = sums + mi * pb + b;
        s += bitcast<f32>(xq[w >> 2u][w & 3u]);
    }
    return s;
}

//#if SUBGROUPS
// 1 / rms of every row of x, summed by each subgroup on its own (no barrier).
fn norm_invs(lane: u32, width: u32) -> array<f32, MT> {
    var inv: array<f32, MT>;
    for (var mi = 0u; mi < MT; mi++) {
        // m is uniform; rows past it have no sums.
        if (mi >= params.m) {
            break;
        }
        let total = subgroupAdd(sum_sq_part(mi, lane, width));
        inv[mi] = 1.0 / sqrt(total / f32(params.k) + params.eps);
    }
    return inv;
}
//#else
// norm_inv[mi] for every row of x. Call from uniform control flow: it has barriers.
fn row_norms(li: u32) {
    for (var mi = 0u; mi < MT; mi++) {
        if (mi >= params.m) {
            break;
        }
        set_norm_inv(li, mi, sum_sq_part(mi, li, T));
    }
}
//#endif
//#endif

// Integer dot product of 16 codes (as signed bytes) with 16 values of x.
fn dot16(a: vec4<u32>, b: vec4<u32>) -> i32 {
    return dot4I8Packed(a.x, b.x) + dot4I8Packed(a.y, b.y) + dot4I8Packed(a.z, b.z)
        + dot4I8Packed(a.w, b.w);
}

// Chunks whose codes a lane requests together (PF * RPS vec4s of registers), before it
// multiplies any of them: a small product (4096 x 4096) is over in a few rounds of loads, so the
// loads of a round must be in flight together.
const PF: u32 = max(1u, 8u / RPS);

fn accumulate(li: u32, first: u32, lane: u32, width: u32, live: bool) -> array<array<f32, MT>, RPS> {
    var acc: array<array<f32, MT>, RPS>;
    let row_chunks = select(0u, params.blocks * WPB / 4u, live);
    for (var c0 = lane; c0 < row_chunks; c0 += PF * width) {
        // Past the row the last chunk is read again (from the cache) and not multiplied.
        var pre: array<array<vec4<u32>, RPS>, PF>;
        for (var i = 0u; i < PF; i++) {
            pre[i] = chunk_codes(first, min(c0 + i * width, row_chunks - 1u));
        }
        for (var i = 0u; i < PF; i++) {
            let c = c0 + i * width;
            if (c >= row_chunks) {
                break;
            }
            multiply_chunk(&acc, pre[i], first, c);
        }
    }
    return acc;
}

// Adds chunk c of rows first..first + RPS, whose codes are `words`, times x to acc.
fn multiply_chunk(
    acc: ptr<function, array<array<f32, MT>, RPS>>,
    words: array<vec4<u32>, RPS>,
    first: u32,
    c: u32,
) {
    // INT4's grid value is code - 8: the dot product with the codes is 8 sum(x) too large.
    let off = select(0.0, 8.0, FORMAT == FMT_INT4);
    // 4 bits: the chunk's low nibbles are the block's values 0..16, its high ones 16..32 (byte
    // j holds weights j and j + 16); 8 bits: the chunk is half c & 1 of its block, one signed
    // byte per weight.
    var lo: array<vec4<u32>, RPS>;
    var hi: array<vec4<u32>, RPS>;
    for (var r = 0u; r < RPS; r++) {
        if (BITS == 4u) {
            lo[r] = words[r] & vec4<u32>(0x0f0f0f0fu);
            hi[r] = (words[r] >> vec4<u32>(4u)) & vec4<u32>(0x0f0f0f0fu);
        } else {
            lo[r] = words[r];
        }
    }
    let sb = scales_of(first, 4u * c / UPB);
    let half = c & 1u;
    for (var mi = 0u; mi < MT; mi++) {
        if (mi >= params.m) {
            break;
        }
        // Plane p of this block is xq[at + p * blocks].
        let at = mi * BV * params.blocks + c * CX / 32u;
        let pb = params.blocks;
        let xm = bitcast<vec4<f32>>(xq[at + 4u * pb]);
        let d1 = xm.x;
        let d2 = xm.y;
        if (BITS == 8u) {
            let x1 = xq[at + half * pb];
            let x2 = xq[at + (2u + half) * pb];
            let s = select(xm.z, xm.w, half == 1u);
            for (var r = 0u; r < RPS; r++) {
                let t = d1 * f32(dot16(lo[r], x1)) + d2 * f32(dot16(lo[r], x2));
                let scale = select(sb.s_lo[r], sb.s_hi[r], SPLIT16 && half == 1u);
                let bias = select(sb.b_lo[r], sb.b_hi[r], SPLIT16 && half == 1u);
                (*acc)[r][mi] += scale * t + bias * s;
            }
            continue;
        }
        let x1l = xq[at];
        let x1h = xq[at + pb];
        let x2l = xq[at + 2u * pb];
        let x2h = xq[at + 3u * pb];
        for (var r = 0u; r < RPS; r++) {
            if (SPLIT16) {
                let tl = d1 * f32(dot16(lo[r], x1l)) + d2 * f32(dot16(lo[r], x2l));
                let th = d1 * f32(dot16(hi[r], x1h)) + d2 * f32(dot16(hi[r], x2h));
                (*acc)[r][mi] += sb.s_lo[r] * (tl - off * xm.z) + sb.b_lo[r] * xm.z
                    + sb.s_hi[r] * (th - off * xm.w) + sb.b_hi[r] * xm.w;
            } else {
                let a1 = dot16(lo[r], x1l) + dot16(hi[r], x1h);
                let a2 = dot16(lo[r], x2l) + dot16(hi[r], x2h);
                let s = xm.z + xm.w;
                (*acc)[r][mi] += sb.s_lo[r] * (d1 * f32(a1) + d2 * f32(a2) - off * s)
                    + sb.b_lo[r] * s;
            }
        }
    }
}
//#else
//#if E2M1_TABLE
// Twice the E2M1 value of each code (the 1/2 is in the scale), filled by `main`.
var<workgroup> e2m1_table: array<f32, 16>;
//#endif

// The 8 weights of a 4-bit word as [vec4 at offset 4q, vec4 at offset 4q + 16] (byte j holds
// weights j and j + 16): 1 + code / 16 for the integer formats, the doubled E2M1 value else.
fn values4(w: u32) -> array<vec4<f32>, 2> {
//#if E2M1_TABLE
    let lo = vec4<u32>(w, w >> 8u, w >> 16u, w >> 24u) & vec4<u32>(15u);
    let hi = vec4<u32>(w >> 4u, w >> 12u, w >> 20u, w >> 28u) & vec4<u32>(15u);
    return array(
        vec4<f32>(e2m1_table[lo.x], e2m1_table[lo.y], e2m1_table[lo.z], e2m1_table[lo.w]),
        vec4<f32>(e2m1_table[hi.x], e2m1_table[hi.y], e2m1_table[hi.z], e2m1_table[hi.w]),
    );
//#else
    return magic4(w);
//#endif
}

// x of SPAN chunks at a time, staged in workgroup memory by the whole workgroup. A lane's chunk
// is a different block from its neighbours', so reading x straight from global memory made
// every vec4 load of a subgroup touch 32 cache lines (32 times the L1 work of a coalesced one):
// that, not the arithmetic, held the kernel to a third of the bandwidth. Here x is read from
// global memory coalesced, once per workgroup, and each chunk's x sits CV vec4s apart, one
// more than its length, so the 8 lanes of a 16-byte access phase hit 8 distinct groups of 4
// banks.
const CV: u32 = CX / 4u + 1u;
var<workgroup> x_stage: array<vec4<f32>, MT * SPAN * CV>;

// Stages x[mi, c0 * CX..(c0 + SPAN) * CX] for every row of x (zero past m and past K).
fn stage_x(li: u32, c0: u32) {
    for (var v = li; v < MT * SPAN * (CX / 4u); v += T) {
        let mi = v / (SPAN * (CX / 4u));
        let cl = (v / (CX / 4u)) % SPAN;
        let kk = (c0 + cl) * CX + 4u * (v % (CX / 4u));
        var xv = vec4<f32>(0.0);
        if (mi < params.m && kk < params.blocks * 32u) {
            xv = staged_x4(mi, kk);
        }
        x_stage[(mi * SPAN + cl) * CV + v % (CX / 4u)] = xv;
    }
}

// Every thread of the workgroup calls this the same number of times (it has barriers); `live`
// is false for a team past TEAMS, which then multiplies nothing.
fn accumulate(li: u32, first: u32, lane: u32, width: u32, live: bool) -> array<array<f32, MT>, RPS> {
    var acc: array<array<f32, MT>, RPS>;
    let row_chunks = params.blocks * WPB / 4u;
    let off = grid_off();
    for (var c0 = 0u; c0 < row_chunks; c0 += SPAN) {
        workgroupBarrier();
        stage_x(li, c0);
        workgroupBarrier();
        for (var cl = lane; cl < SPAN; cl += width) {
            let c = c0 + cl;
            if (c >= row_chunks || !live) {
                break;
            }
            let words = chunk_codes(first, c);
            let b = 4u * c / UPB;
            // Scales times the grid step, and biases, of the chunk's lo and hi 16 weights (8
            // bits: both of the half the chunk is in).
            var sb = scales_of(first, b);
            let upper = BITS == 8u && SPLIT16 && (c & 1u) == 1u;
            for (var r = 0u; r < RPS; r++) {
                if (SPLIT16) {
                    let s_hi = sb.s_hi[r] * grid_step();
                    let b_hi = sb.b_hi[r];
                    sb.s_lo[r] = select(sb.s_lo[r] * grid_step(), s_hi, upper);
                    sb.b_lo[r] = select(sb.b_lo[r], b_hi, upper);
                    sb.s_hi[r] = s_hi;
                } else {
                    sb.s_lo[r] *= grid_step();
                }
            }
            for (var j = 0u; j < 4u; j++) {
                var lo: array<vec4<f32>, RPS>;
                var hi: array<vec4<f32>, RPS>;
                for (var r = 0u; r < RPS; r++) {
                    if (BITS == 4u) {
                        let v = values4(words[r][j]);
                        lo[r] = v[0];
                        hi[r] = v[1];
                    } else {
                        lo[r] = values8(words[r][j]);
                    }
                }
                for (var mi = 0u; mi < MT; mi++) {
                    // m is uniform: rows of x past it (m = 3 on the MT = 4 pipeline) cost
                    // nothing.
                    if (mi >= params.m) {
                        break;
                    }
                    // Word j's x: 4j in the chunk (4 bits: and 16 further for the high nibbles).
                    let at = (mi * SPAN + cl) * CV + j;
                    let xl = x_stage[at];
                    var xh = vec4<f32>(0.0);
                    if (BITS == 4u) {
                        xh = x_stage[at + 4u];
                    }
                    let sum_l = dot(xl, vec4<f32>(1.0));
                    let sum_h = dot(xh, vec4<f32>(1.0));
                    for (var r = 0u; r < RPS; r++) {
                        let dl = dot(lo[r], xl) - off * sum_l;
                        if (BITS == 8u) {
                            acc[r][mi] += sb.s_lo[r] * dl + sb.b_lo[r] * sum_l;
                            continue;
                        }
                        let dh = dot(hi[r], xh) - off * sum_h;
                        if (SPLIT16) {
                            acc[r][mi] += sb.s_lo[r] * dl + sb.s_hi[r] * dh + sb.b_lo[r] * sum_l
                                + sb.b_hi[r] * sum_h;
                        } else {
                            acc[r][mi] += sb.s_lo[r] * (dl + dh) + sb.b_lo[r] * (sum_l + sum_h);
                        }
                    }
                }
            }
        }
    }
    return acc;
}
//#endif
//#else
fn accumulate(li: u32, first: u32, lane: u32, width: u32, live: bool) -> array<array<f32, MT>, RPS> {
    var acc: array<array<f32, MT>, RPS>;
    let row_words = params.blocks * WPB;
    let units = select(0u, params.blocks * UPB, live);
    for (var u = lane; u < units; u += width) {
        let b = u / UPB;
        let q = u % UPB;
        var vals: array<array<vec4<f32>, 4>, RPS>;
        for (var r = 0u; r < RPS; r++) {
            vals[r] = unit_values(min(first + r, params.n - 1u) * row_words, b, q);
        }
        add_unit(&acc, b, q, vals, scales_of(first, b));
    }
    return acc;
}

// Adds unit q of block b of rows first..first + RPS (their grid values `vals`, scales `sb`)
// times x to acc.
fn add_unit(
    acc: ptr<function, array<array<f32, MT>, RPS>>,
    b: u32,
    q: u32,
    vals: array<array<vec4<f32>, 4>, RPS>,
    sb: BlockScales,
) {
    for (var mi = 0u; mi < MT; mi++) {
        // m is uniform: rows of x past it (m = 3 on the MT = 4 pipeline) cost nothing.
        if (mi >= params.m) {
            break;
        }
        var xv: array<vec4<f32>, 4>;
        // Sums of x over the lo and hi weights, for the biases. Which half a vec4 falls in is
        // chosen by select, not by indexing: a vector indexed by a run-time value may live in
        // slow local memory.
        var xs = vec2<f32>(0.0);
        for (var i = 0u; i < NV; i++) {
            let off = unit_offset(q, i);
            xv[i] = input_x4(mi, b * 32u + off);
            if (HAS_BIAS) {
                let sum = dot(xv[i], vec4<f32>(1.0));
                xs += select(vec2<f32>(sum, 0.0), vec2<f32>(0.0, sum), off >= 16u);
            }
        }
        for (var r = 0u; r < RPS; r++) {
            var d = vec2<f32>(0.0);
            for (var i = 0u; i < NV; i++) {
                let p = dot(vals[r][i], xv[i]);
                d += select(vec2<f32>(p, 0.0), vec2<f32>(0.0, p), unit_offset(q, i) >= 16u);
            }
            if (SPLIT16) {
                (*acc)[r][mi] += sb.s_lo[r] * d.x + sb.s_hi[r] * d.y + sb.b_lo[r] * xs.x
                    + sb.b_hi[r] * xs.y;
            } else {
                (*acc)[r][mi] += sb.s_lo[r] * (d.x + d.y) + sb.b_lo[r] * (xs.x + xs.y);
            }
        }
    }
}
//#endif

// Scale and bias of block b's first (lo) and second (hi) 16 weights in rows first..first + RPS:
// they differ only at group 16.
struct BlockScales {
    s_lo: array<f32, RPS>,
    s_hi: array<f32, RPS>,
    b_lo: array<f32, RPS>,
    b_hi: array<f32, RPS>,
}

fn scales_of(first: u32, b: u32) -> BlockScales {
    var s: BlockScales;
    for (var r = 0u; r < RPS; r++) {
        let row = min(first + r, params.n - 1u);
        let g = row * params.groups + select(b >> params.group_shift, 2u * b, SPLIT16);
        s.s_lo[r] = scale_at(g);
        s.b_lo[r] = bias_at(g);
        if (SPLIT16) {
            s.s_hi[r] = scale_at(g + 1u);
            s.b_hi[r] = bias_at(g + 1u);
        }
    }
    return s;
}

// The first row of W of the team whose rows start at `local` in this workgroup's R: R
// consecutive rows, or with SWIGLU_OUT (W a stacked gate|up, n = 2 ff) R / 2 rows of gate and
// the R / 2 rows of up of the same columns, so that the workgroup holds both halves of
// silu(gate) * up for R / 2 columns of the next product's x.
fn first_row(tile: u32, local: u32) -> u32 {
//#if SWIGLU_OUT
    const H: u32 = R / 2u;
    return select(tile * H + local, params.n / 2u + tile * H + local - H, local >= H);
//#else
    return tile * R + local;
//#endif
}

//#if SWIGLU_OUT
// Where row `row` of W lies in its workgroup's R (`first_row`'s inverse).
fn local_row(row: u32) -> u32 {
    const H: u32 = R / 2u;
    let ff = params.n / 2u;
    return select(row % H, H + (row - ff) % H, row >= ff);
}
//#endif

fn store(row: u32, mi: u32, v: f32) {
    if (row < params.n && mi < params.m) {
        let at = mi * params.y_stride + params.row0 + row;
//#if ROW_NORMS
        let v = v * norm_inv[mi];
//#endif
//#if ADD_TO_Y
        // The residual connection: y += x W^T (the CPU's h + o).
        let sum = y[at] + v;
        y[at] = sum;
//#if Q8_OUT
        h_out[mi * R + row % R] = sum;
//#endif
//#else
        y[at] = v;
//#if SWIGLU_OUT
        h_out[mi * R + local_row(row)] = v;
//#endif
//#endif
    }
}

@compute @workgroup_size(T)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
//#if SUBGROUPS
    @builtin(subgroup_id) sid: u32,
    @builtin(num_subgroups) nsg: u32,
//#endif
) {
//#if E2M1_TABLE
    if (li < 16u) {
        e2m1_table[li] = e2m1x2(vec4<u32>(li)).x;
    }
    workgroupBarrier();
//#endif
    let tile = wg.x + wg.y * nwg.x;
//#if SUBGROUPS
    // Counting active invocations (rather than trusting subgroup_size) keeps a partial subgroup
    // right too.
    let lane = subgroupExclusiveAdd(1u);
    let width = subgroupAdd(1u);
    // Subgroups take teams sid, sid + nsg, ...: TEAMS assumed the smallest subgroup size, and a
    // larger one leaves fewer subgroups, each taking several teams. The pass count is the same
    // for the whole workgroup; a team past TEAMS has no units and stores nothing.
    let passes = (TEAMS + nsg - 1u) / nsg;
//#if NORM_SUMS
    var inv: array<f32, MT>;
//#endif
    for (var p = 0u; p < passes; p++) {
        let team = sid + p * nsg;
        let live = team < TEAMS;
        let first = first_row(tile, team * RPS);
        let acc = accumulate(li, first, lane, width, live);
//#if ROW_NORMS
        if (p == 0u) {
            row_norms(li);
        }
//#endif
//#if NORM_SUMS
        // After the product, so that its loads cannot hold back the weight stream's.
        if (p == 0u) {
            inv = norm_invs(lane, width);
        }
//#endif
        for (var r = 0u; r < RPS; r++) {
            for (var mi = 0u; mi < MT; mi++) {
                var total = subgroupAdd(acc[r][mi]);
//#if NORM_SUMS
                total *= inv[mi];
//#endif
                if (lane == 0u && live) {
                    store(first + r, mi, total);
                }
            }
        }
    }
//#if Q8_OUT
    workgroupBarrier();
    // Eight consecutive lanes of one subgroup a block (subgroups hold multiples of 8 lanes:
    // qmv.rs checks).
//#if SWIGLU_OUT
    quantize_swiglu_out(sid * width + lane, tile);
//#else
    quantize_out(sid * width + lane, tile);
//#endif
//#endif
//#else
    let team = li / TK;
    let lane = li % TK;
    let first = first_row(tile, team * RPS);
    let acc = accumulate(li, first, lane, TK, true);
//#if ROW_NORMS
    row_norms(li);
//#endif
    for (var r = 0u; r < RPS; r++) {
        for (var mi = 0u; mi < MT; mi++) {
            partial[li * MT + mi] = acc[r][mi];
        }
        workgroupBarrier();
        for (var mi = lane; mi < MT; mi += TK) {
            var total = 0.0;
            for (var j = 0u; j < TK; j++) {
                total += partial[(team * TK + j) * MT + mi];
            }
            store(first + r, mi, total);
        }
        workgroupBarrier();
    }
//#if Q8_OUT
//#if SWIGLU_OUT
    quantize_swiglu_out(li, tile);
//#else
    quantize_out(li, tile);
//#endif
//#endif
//#endif
}
