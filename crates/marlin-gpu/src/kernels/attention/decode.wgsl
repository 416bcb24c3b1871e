// Decode attention, step 1 of 2 (split-K flash-decoding): one workgroup per (split, head,
// token) attends one query head of one token over one chunk of its keys, with an online
// softmax, and leaves a partial result (running max m, sum l, unnormalised output) that
// combine.wgsl merges over the chunks. Splitting the keys is what fills a GPU when there are
// few tokens (decode of one sequence has only `heads` (token, head) pairs).
//
// Per tile of WG keys: each invocation scores one key against the query (a whole dot product,
// so no reduction), the workgroup reduces the tile's max and sum (wg_max / wg_sum: subgroup
// operations or workgroup memory, whichever file precedes this one), then each invocation
// accumulates the tile's values for the output dimensions it owns (d = lid and lid + WG).
// Keys of the chunk beyond the token's own position (causality) or before its window are not
// visited at all: the host splits the range [window start, position] of each token. Comes
// after the cache's prelude (kv_cache.rs: KvDtype, the element type KV; converted to f32 on
// load) and decode_keys.wgsl (Params, the shared bindings, split_keys).

const WG: u32 = 128u;
// Largest head dimension: each invocation owns 2 output dimensions.
const HD_MAX: u32 = 256u;
// Stands for -infinity: exp(NEG - m) is 0 for any real m, and NEG - NEG is 0, not NaN.
const NEG: f32 = -3.0e38;


// One layer's cache (of the shard's heads): [blocks][shard_heads][block_size][head_dim].
@group(0) @binding(2) var<storage, read> k_cache: array<KV>;
@group(0) @binding(3) var<storage, read> v_cache: array<KV>;

// The query, pre-scaled.
var<workgroup> qs: array<f32, HD_MAX>;
// The tile's probabilities and where each key's row starts in the cache.
var<workgroup> ps: array<f32, WG>;
var<workgroup> rows: array<u32, WG>;

// sum over j < n of ps[j] * value j at dimension d, in four independent sums (their loads
// issued together).
fn weighted(n: u32, d: u32) -> f32 {
    var a = vec4<f32>(0.0);
    var j = 0u;
    for (; j + 4u <= n; j += 4u) {
        a += vec4<f32>(ps[j], ps[j + 1u], ps[j + 2u], ps[j + 3u])
            * vec4<f32>(vec4<KV>(v_cache[rows[j] + d], v_cache[rows[j + 1u] + d],
                                 v_cache[rows[j + 2u] + d], v_cache[rows[j + 3u] + d]));
    }
    for (; j < n; j++) {
        a.x += ps[j] * f32(v_cache[rows[j] + d]);
    }
    return (a.x + a.y) + (a.z + a.w);
}

@compute @workgroup_size(128)
fn main(lane: Lane, @builtin(workgroup_id) wg: vec3<u32>) {
    let lid = lane.lid;
    let split = wg.x;
    let head = params.head0 + wg.y;
    let t = wg.z;
    let hd = params.head_dim;
    let keys = split_keys(split, head, t);
    let start = keys.start;
    let end = keys.end;
    let kvh = keys.kvh;
    let table = keys.table;
    for (var d = lid; d < hd; d += WG) {
        qs[d] = q[keys.q_row + d] * params.scale;
    }
    workgroupBarrier();

    var m = NEG;
    var l = 0.0;
    // Output dimensions lid and lid + WG.
    var acc0 = 0.0;
    var acc1 = 0.0;
    for (var k0 = start; k0 < end; k0 += WG) {
        let key = k0 + lid;
        let valid = key < end;
        var s = NEG;
        if (valid) {
            let block = tables[table + key / params.block_size];
            let row = ((block * params.shard_heads + kvh) * params.block_size
                + key % params.block_size) * hd;
            rows[lid] = row;
            // Four independent sums: their loads are issued together, not one latency each.
            var dot = vec4<f32>(0.0);
            var d = 0u;
            for (; d + 4u <= hd; d += 4u) {
                dot += vec4<f32>(qs[d], qs[d + 1u], qs[d + 2u], qs[d + 3u])
                    * vec4<f32>(vec4<KV>(k_cache[row + d], k_cache[row + d + 1u],
                                         k_cache[row + d + 2u], k_cache[row + d + 3u]));
            }
            for (; d < hd; d++) {
                dot.x += qs[d] * f32(k_cache[row + d]);
            }
            s = (dot.x + dot.y) + (dot.z + dot.w);
        }
        let m_new = max(m, wg_max(s, lane));
        // Every tile visited has a valid key, so m_new is real here.
        let p = select(0.0, exp(s - m_new), valid);
        ps[lid] = p;
        let alpha = exp(m - m_new);
        l = l * alpha + wg_sum(p, lane);
        workgroupBarrier();
        let n = min(WG, end - k0);
        let d0 = lid;
        let d1 = lid + WG;
        if (d0 < hd) {
            acc0 = acc0 * alpha + weighted(n, d0);
        }
        if (d1 < hd) {
            acc1 = acc1 * alpha + weighted(n, d1);
        }
        m = m_new;
        // ps and rows are rewritten by the next tile.
        workgroupBarrier();
    }

    // A split past the token's keys leaves m = NEG, l = 0: it weighs nothing in the merge.
    let at = ((t * params.heads + head) * params.splits + split) * (hd + 2u);
    if (lid == 0u) {
        part[at] = m;
        part[at + 1u] = l;
    }
    if (lid < hd) {
        part[at + 2u + lid] = acc0;
    }
    if (lid + WG < hd) {
        part[at + 2u + lid + WG] = acc1;
    }
}
