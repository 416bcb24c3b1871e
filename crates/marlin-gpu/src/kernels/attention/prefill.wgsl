// Prefill attention: tiled causal flash-attention over the paged cache. One workgroup per
// (tile, head): a tile is up to BQ tokens of one sequence at consecutive positions (made on the
// host). The new tokens' keys and values are already in the cache, beside the sequence's
// earlier ones, so chunked prefill (a chunk whose prefix was cached by an earlier pass) is the
// same loop. The workgroup walks the keys from the first token's window start to the last
// token's position, BK at a time:
//   1. the BK keys and values are copied from their blocks to workgroup memory;
//   2. the BQ x BK scores (query tile in workgroup memory, pre-scaled) are computed, each
//      invocation whole dot products, so no reduction across invocations is needed;
//   3. each query row is owned by TPR invocations, each with ACC output dimensions
//      (d = col, col + TPR, ...); they all read the row's BK scores, update the row's running
//      max and sum (online softmax) and accumulate the values. Masked keys (after the row's
//      position, or before its window) weigh 0.
// Keys and values are stored as KV (the cache's prelude, kv_cache.rs: KvDtype) and copied to
// workgroup memory as f32. The line before this file sets HD_MAX (the largest head dimension) and BK so that the tiles
// fit Metal's 32 KiB of workgroup memory: (64, 32) takes 22.8 KiB, (128, 16) 25.5 KiB and
// (256, 4) 24.5 KiB.
//
// Compiled without wgpu's runtime bounds checks (Gpu::audited_pipeline_with; 1.23x on the H100)
// unless MARLIN_GPU_CHECKED=1. The audit, given what the host checks before a dispatch
// (GpuKvCache::check_attention, KvBatch, the variant chosen by head_dim):
// - tiles[2 tile + 0..1]: tile < the grid's x, the batch's tile count. info[2 first + 0..1]:
//   first < tokens (a tile lies inside the batch).
// - tables[table + key / bs]: key <= last, the tile's last position, which the batch checked is
//   reserved in its sequence's table (table is that table's offset).
// - k_cache / v_cache[rows[j] + d]: rows[j] = ((block * shard_heads + kvh) * bs + key % bs) *
//   hd with block < the pool's blocks (a table holds only allocated blocks), kvh < shard_heads
//   (head lies in this dispatch's query heads, which read this buffer's kv heads), d < hd: under
//   blocks * shard_heads * bs * hd, the buffer's length.
// - q[q_offset + (first + i) * q_stride + head * hd + d] with i < count, head < heads, d < hd:
//   inside the view the host checked for tokens rows of heads * hd.
// - out[((first + row) * heads + head) * hd + d] with row < count, d < hd: under tokens * heads
//   * hd, which the host checked out holds.
// - Workgroup arrays: i, row < BQ (row = lid / TPR, lid < WG = BQ * TPR); j < BK; d / 4 < hd4 <=
//   HD4 (hd <= HD_MAX: the host picks the build by head_dim and refuses more than 256);
//   KS4 > HD4; e < BQ * BK for scores; r < ACC4 for acc, and col + r * TPR < hd4 where vs is read.

const WG: u32 = 128u;
// Query rows per tile (PREFILL_TILE on the host).
const BQ: u32 = 16u;
// Rows of the tiles in vec4s: the loops over the head dimension read workgroup memory 16
// bytes at a time (a fourth of the loads of reading floats; on the H100 the float loops ran at
// ~1 TFLOP/s). A head dimension that is not a multiple of 4 is padded with zeros.
const HD4: u32 = HD_MAX / 4u;
// Invocations per query row, and the output vec4s each owns (col, col + TPR, ...).
const TPR: u32 = WG / BQ;
const ACC4: u32 = HD4 / TPR;
// Key rows are padded by one vec4: the score loop's invocations read different keys at the
// same d, and the odd stride (in vec4s) puts a quarter-warp's 16-byte reads in different banks.
const KS4: u32 = HD4 + 1u;
// Stands for -infinity: exp(NEG - m) is 0 for any real m, and NEG - NEG is 0, not NaN.
const NEG: f32 = -3.0e38;

struct Params {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    block_size: u32,
    // Sliding window (a token sees itself and the window - 1 before it); 0: none.
    window: u32,
    // 1 / sqrt(head_dim)
    scale: f32,
    // This dispatch's query heads start at head0; the cache buffer holds the shard_heads kv
    // heads they read (all of them unless a layer is split, kv_cache.rs says why).
    head0: u32,
    shard_heads: u32,
    // Token t's query heads start at q_offset + t * q_stride (elements).
    q_offset: u32,
    q_stride: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// (tokens, heads, head_dim), at q_offset with a row stride of q_stride
@group(0) @binding(1) var<storage, read> q: array<f32>;
// One layer's cache (of the shard's heads): [blocks][shard_heads][block_size][head_dim].
@group(0) @binding(2) var<storage, read> k_cache: array<KV>;
@group(0) @binding(3) var<storage, read> v_cache: array<KV>;
// Per token [position, offset of its block table in tables].
@group(0) @binding(4) var<storage, read> info: array<u32>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
// Per tile [first token, count].
@group(0) @binding(6) var<storage, read> tiles: array<u32>;
// (tokens, heads, head_dim)
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

var<workgroup> qs: array<vec4<f32>, BQ * HD4>;
var<workgroup> ks: array<vec4<f32>, BK * KS4>;
var<workgroup> vs: array<vec4<f32>, BK * HD4>;
var<workgroup> scores: array<f32, BQ * BK>;
// Where each key of the tile starts in the cache.
var<workgroup> rows: array<u32, BK>;

// The first position a token at `pos` sees.
fn window_start(pos: u32) -> u32 {
    if (params.window > 0u && pos + 1u > params.window) {
        return pos + 1u - params.window;
    }
    return 0u;
}

@compute @workgroup_size(128)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let tile = wg.x;
    let head = params.head0 + wg.y;
    let first = tiles[2u * tile];
    let count = tiles[2u * tile + 1u];
    let hd = params.head_dim;
    let bs = params.block_size;
    let pos0 = info[2u * first];
    let table = info[2u * first + 1u];
    let last = pos0 + count - 1u;
    let group = params.heads / params.kv_heads;
    // The kv head's index within the buffer.
    let kvh = head / group - params.head0 / group;

    // The head dimension in vec4s, the last one padded with zeros.
    let hd4 = (hd + 3u) / 4u;
    for (var e = lid; e < BQ * hd4 * 4u; e += WG) {
        let i = e / (hd4 * 4u);
        let d = e % (hd4 * 4u);
        var x = 0.0;
        if (i < count && d < hd) {
            x = q[params.q_offset + (first + i) * params.q_stride + head * hd + d] * params.scale;
        }
        qs[i * HD4 + d / 4u][d % 4u] = x;
    }

    let row = lid / TPR;
    let col = lid % TPR;
    let q_pos = pos0 + row;
    let q_first = window_start(q_pos);
    var m = NEG;
    var l = 0.0;
    var acc: array<vec4<f32>, ACC4>;

    for (var k0 = window_start(pos0); k0 <= last; k0 += BK) {
        if (lid < BK) {
            let key = min(k0 + lid, last);
            let block = tables[table + key / bs];
            rows[lid] = ((block * params.shard_heads + kvh) * bs + key % bs) * hd;
        }
        workgroupBarrier();
        for (var e = lid; e < BK * hd4 * 4u; e += WG) {
            let j = e / (hd4 * 4u);
            let d = e % (hd4 * 4u);
            // Keys past `last` repeat the last one (rows clamps them); their scores are masked.
            var k = 0.0;
            var v = 0.0;
            if (d < hd) {
                k = f32(k_cache[rows[j] + d]);
                v = f32(v_cache[rows[j] + d]);
            }
            ks[j * KS4 + d / 4u][d % 4u] = k;
            vs[j * HD4 + d / 4u][d % 4u] = v;
        }
        workgroupBarrier();
        for (var e = lid; e < BQ * BK; e += WG) {
            let i = e / BK;
            let j = e % BK;
            // Four independent sums: the loads of consecutive d4 are issued together.
            var s = vec4<f32>(0.0);
            for (var d4 = 0u; d4 < hd4; d4++) {
                s += qs[i * HD4 + d4] * ks[j * KS4 + d4];
            }
            scores[e] = (s.x + s.y) + (s.z + s.w);
        }
        workgroupBarrier();

        var tile_max = NEG;
        for (var j = 0u; j < BK; j++) {
            let key = k0 + j;
            if (key <= q_pos && key >= q_first) {
                tile_max = max(tile_max, scores[row * BK + j]);
            }
        }
        let m_new = max(m, tile_max);
        let alpha = exp(m - m_new);
        l *= alpha;
        for (var r = 0u; r < ACC4; r++) {
            acc[r] *= alpha;
        }
        for (var j = 0u; j < BK; j++) {
            let key = k0 + j;
            if (key <= q_pos && key >= q_first) {
                let p = exp(scores[row * BK + j] - m_new);
                l += p;
                for (var r = 0u; r < ACC4; r++) {
                    if (col + r * TPR < hd4) {
                        acc[r] += p * vs[j * HD4 + col + r * TPR];
                    }
                }
            }
        }
        m = m_new;
        // ks, vs, scores and rows are rewritten by the next tile.
        workgroupBarrier();
    }

    if (row < count) {
        let o_row = ((first + row) * params.heads + head) * hd;
        for (var r = 0u; r < ACC4; r++) {
            for (var c = 0u; c < 4u; c++) {
                let d = 4u * (col + r * TPR) + c;
                if (d < hd) {
                    out[o_row + d] = acc[r][c] / l;
                }
            }
        }
    }
}
