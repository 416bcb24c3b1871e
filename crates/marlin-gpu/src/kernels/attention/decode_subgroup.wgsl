// Decode attention, step 1 of 2, on devices with subgroups (decode.wgsl serves the others, and
// head dimensions that are not a multiple of 4): the same partials for combine.wgsl, one
// workgroup per (split, head, token), with few memory latencies one after another.
//
// decode.wgsl gives each thread a key and walks its row alone, then reduces the tile over the
// workgroup, barrier after barrier: on the H100 a decode step's attention took 20 µs a layer
// for a context of under 200 keys, nearly all of it waiting on memory in turn. Here each of the
// workgroup's 4 subgroups runs an online softmax of its own over keys BATCH at a time: its
// lanes split the head dimension (one vec4 of every key per lane at head_dim = 4 * subgroup
// size), so a key's row is one coalesced read; the BATCH keys' loads are issued together, their
// dot products summed by subgroupAdd. Nothing is shared until the end, where the subgroups'
// (max, sum, output) are merged in workgroup memory as combine.wgsl merges splits. A split of
// a single chunk (the whole context) writes the final output itself, and no combine runs.
//
// Comes after the cache's prelude (kv_cache.rs: KvDtype, the element type KV; keys and values
// are converted to f32 on load) and decode_keys.wgsl (Params, the shared bindings,
// split_keys). Prepended by decode.rs: SG (the device's smallest subgroup size: the workgroup is 4 of them),
// BATCH (keys a subgroup takes at once), HOIST (their values loaded with their keys) and ACC
// (vec4s of the output each lane keeps: enough for the device's smallest subgroup to cover the
// head, decode.rs says how it is counted).

const WG: u32 = 4u * SG;
// Largest head dimension, in vec4s.
const HD4_MAX: u32 = 64u;
// Stands for -infinity: exp(NEG - m) is 0 for any real m, and NEG - NEG is 0, not NaN.
const NEG: f32 = -3.0e38;


// One layer's cache: [blocks][shard_heads][block_size][head_dim], head_dim a multiple of 4.
@group(0) @binding(2) var<storage, read> k_cache: array<vec4<KV>>;
@group(0) @binding(3) var<storage, read> v_cache: array<vec4<KV>>;
// (tokens, heads, head_dim): written here instead when there is one split.
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

// The query, pre-scaled.
var<workgroup> qs: array<vec4<f32>, HD4_MAX>;
// Each subgroup's running max, sum and output, for the merge.
var<workgroup> sub_m: array<f32, 4>;
var<workgroup> sub_l: array<f32, 4>;
var<workgroup> sub_acc: array<vec4<f32>, 4 * HD4_MAX>;

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(num_subgroups) nsg: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    // Counting active invocations (not trusting subgroup_size) keeps a partial subgroup right.
    let lane = subgroupExclusiveAdd(1u);
    let width = subgroupAdd(1u);
    let split = wg.x;
    let head = params.head0 + wg.y;
    let t = wg.z;
    let hd = params.head_dim;
    let hd4 = hd / 4u;
    let keys = split_keys(split, head, t);
    let start = keys.start;
    let end = keys.end;
    let kvh = keys.kvh;
    let table = keys.table;
    let q_row = keys.q_row;
    for (var i = li; i < hd4; i += WG) {
        let at = q_row + 4u * i;
        qs[i] = vec4<f32>(q[at], q[at + 1u], q[at + 2u], q[at + 3u]) * params.scale;
    }
    workgroupBarrier();

    var m = NEG;
    var l = 0.0;
    // Output vec4s lane, lane + width, ...
    var acc: array<vec4<f32>, ACC>;
    // Subgroup sid takes keys start + sid * BATCH.., then every nsg * BATCH further.
    for (var k0 = start + sid * BATCH; k0 < end; k0 += nsg * BATCH) {
        var rows: array<u32, BATCH>;
        for (var b = 0u; b < BATCH; b++) {
            // Keys past the end read the last key again and weigh nothing.
            let key = min(k0 + b, end - 1u);
            let block = tables[table + key / params.block_size];
            rows[b] = ((block * params.shard_heads + kvh) * params.block_size
                + key % params.block_size) * hd4;
        }
        var dots: array<f32, BATCH>;
        // HOIST: the first vec4 of every value requested with the keys, before the reductions.
        var vals: array<vec4<f32>, BATCH>;
        for (var j = 0u; j < ACC; j++) {
            let i = lane + j * width;
            if (i < hd4) {
                let qv = qs[i];
                for (var b = 0u; b < BATCH; b++) {
                    dots[b] += dot(qv, vec4<f32>(k_cache[rows[b] + i]));
                }
                if (HOIST && j == 0u) {
                    for (var b = 0u; b < BATCH; b++) {
                        vals[b] = vec4<f32>(v_cache[rows[b] + i]);
                    }
                }
            }
        }
        var s: array<f32, BATCH>;
        var m_new = m;
        for (var b = 0u; b < BATCH; b++) {
            s[b] = select(NEG, subgroupAdd(dots[b]), k0 + b < end);
            m_new = max(m_new, s[b]);
        }
        // Key k0 is real, so m_new is.
        let alpha = exp(m - m_new);
        var p: array<f32, BATCH>;
        var p_sum = 0.0;
        for (var b = 0u; b < BATCH; b++) {
            p[b] = select(0.0, exp(s[b] - m_new), k0 + b < end);
            p_sum += p[b];
        }
        l = l * alpha + p_sum;
        for (var j = 0u; j < ACC; j++) {
            let i = lane + j * width;
            if (i < hd4) {
                var a = acc[j] * alpha;
                for (var b = 0u; b < BATCH; b++) {
                    if (HOIST && j == 0u) {
                        a += p[b] * vals[b];
                    } else {
                        a += p[b] * vec4<f32>(v_cache[rows[b] + i]);
                    }
                }
                acc[j] = a;
            }
        }
        m = m_new;
    }

    // A subgroup with no keys left m = NEG, l = 0, acc = 0: it weighs nothing below. Subgroups
    // fold into 4 slots, 4 at a time: a device may run smaller subgroups than it reports (lavapipe
    // at a vector width of 1024 reports 32 and runs 16), so there may be more than 4.
    let slot = sid % 4u;
    for (var r = 0u; r * 4u < nsg; r++) {
        let mine = sid / 4u == r;
        var m_old = NEG;
        var l_old = 0.0;
        if (mine && r > 0u) {
            m_old = sub_m[slot];
            l_old = sub_l[slot];
        }
        // Everyone has read the slots before they change.
        workgroupBarrier();
        if (mine) {
            let m_new = max(m_old, m);
            let w_old = exp(m_old - m_new);
            let w_own = exp(m - m_new);
            if (lane == 0u) {
                sub_m[slot] = m_new;
                sub_l[slot] = l_old * w_old + l * w_own;
            }
            for (var j = 0u; j < ACC; j++) {
                let i = lane + j * width;
                if (i < hd4) {
                    let at = slot * HD4_MAX + i;
                    var prev = vec4<f32>(0.0);
                    if (r > 0u) {
                        prev = sub_acc[at];
                    }
                    sub_acc[at] = prev * w_old + acc[j] * w_own;
                }
            }
        }
        workgroupBarrier();
    }
    let slots = min(nsg, 4u);
    var m_all = NEG;
    for (var g = 0u; g < slots; g++) {
        m_all = max(m_all, sub_m[g]);
    }
    var l_all = 0.0;
    for (var g = 0u; g < slots; g++) {
        l_all += sub_l[g] * exp(sub_m[g] - m_all);
    }
    let at = ((t * params.heads + head) * params.splits + split) * (hd + 2u);
    let o_row = (t * params.heads + head) * hd;
    for (var i = li; i < hd4; i += WG) {
        var o = vec4<f32>(0.0);
        for (var g = 0u; g < slots; g++) {
            o += sub_acc[g * HD4_MAX + i] * exp(sub_m[g] - m_all);
        }
        for (var e = 0u; e < 4u; e++) {
            if (params.splits == 1u) {
                // One split holds every key of the token, its own at least: l_all > 0.
                out[o_row + 4u * i + e] = o[e] / l_all;
            } else {
                part[at + 2u + 4u * i + e] = o[e];
            }
        }
    }
    // A split past the token's keys leaves m = NEG, l = 0: it weighs nothing in the merge.
    if (li == 0u && params.splits > 1u) {
        part[at] = m_all;
        part[at + 1u] = l_all;
    }
}
