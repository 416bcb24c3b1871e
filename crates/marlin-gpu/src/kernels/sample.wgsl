// Sampling a token from each row of logits with temperature, top-k, top-p and min-p, on the
// device, so that a decode step reads back token ids only. One workgroup per row.
//
// The kept tokens are those whose logit is at least a threshold (and, for min-p, whose
// probability is at least min_p times the largest): the k-th largest logit for top-k, the logit
// where the mass of the most likely tokens, taken in order, first reaches top_p for top-p (both
// found exactly by a radix select over the logits' order-preserving bit patterns, 8 bits a
// round, with a histogram in workgroup memory; top-p's masses as fixed-point integers, 2^31 the
// whole). Ties at a threshold are all kept. Then `u` (uniform in [0, 1), from the host's seeded
// generator) picks the token whose interval of the kept probability mass holds it, the tokens
// taken in a fixed order (thread by thread): the distribution of marlin_engine's sampler,
// without sorting. Comes after reduce_subgroup.wgsl or reduce_shared.wgsl.

struct Params {
    rows: u32,
    vocab: u32,
    _pad0: u32,
    _pad1: u32,
}

// One row's choice (mirrors `SampleChoice` in sample.rs).
struct Choice {
    // 1 / temperature (> 0).
    inv_t: f32,
    // 0: all.
    top_k: u32,
    // 1: all.
    top_p: f32,
    // 0: none.
    min_p: f32,
    // Uniform in [0, 1).
    u: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> choices: array<Choice>;
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> picked_digit: u32;
var<workgroup> picked_need: u32;
var<workgroup> sums: array<f32, GROUP_SIZE>;
var<workgroup> chosen: atomic<u32>;

// The logit's bits, mapped so that larger logits have larger keys (NaN: never kept).
fn key(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// The largest key K such that the weight of the row's tokens with key >= K reaches `target`
// (weights from `weight`: 1 a token when `by_mass` is false, else its fixed-point probability
// under `kmin`, `mx`, `inv_t`, `total`). `target` 0 takes the whole weight times `top_p` as the
// target (top-p), computed from the first round's histogram. Call from uniform control flow.
fn select_key(
    lane: Lane,
    base: u32,
    by_mass: bool,
    target_in: u32,
    top_p: f32,
    kmin: u32,
    mx: f32,
    inv_t: f32,
    total: f32,
) -> u32 {
    var prefix = 0u;
    var mask = 0u;
    var remaining = target_in;
    for (var round = 0u; round < 4u; round++) {
        let shift = 24u - 8u * round;
        atomicStore(&hist[lane.index], 0u);
        workgroupBarrier();
        for (var j = lane.index; j < params.vocab; j += GROUP_SIZE) {
            let l = logits[base + j];
            let k = key(l);
            if ((k & mask) != prefix || k < kmin || l != l) {
                continue;
            }
            var w = 1u;
            if (by_mass) {
                w = u32(floor(exp((l - mx) * inv_t) / total * 2147483648.0));
            }
            atomicAdd(&hist[(k >> shift) & 255u], w);
        }
        workgroupBarrier();
        if (lane.index == 0u) {
            var need = remaining;
            if (round == 0u && by_mass) {
                var whole = 0u;
                for (var d = 0u; d < 256u; d++) {
                    whole += atomicLoad(&hist[d]);
                }
                need = max(1u, min(whole, u32(ceil(top_p * f32(whole)))));
            }
            // Digits from the largest down, until the weight reaches what is needed.
            var d = 255u;
            loop {
                let h = atomicLoad(&hist[d]);
                if (h >= need || d == 0u) {
                    break;
                }
                need -= h;
                d -= 1u;
            }
            picked_digit = d;
            picked_need = need;
        }
        let d = workgroupUniformLoad(&picked_digit);
        remaining = workgroupUniformLoad(&picked_need);
        prefix |= d << shift;
        mask |= 255u << shift;
    }
    return prefix;
}

// Top-k's threshold: the k-th largest key.
fn count_key(lane: Lane, base: u32, k: u32) -> u32 {
    return select_key(lane, base, false, k, 1.0, 0u, 0.0, 1.0, 1.0);
}

// Top-p's threshold: the largest key K such that the tokens of keys >= K (and >= kmin) hold
// top_p of the kept mass `total` (probabilities under mx and inv_t).
fn mass_key(lane: Lane, base: u32, top_p: f32, kmin: u32, mx: f32, inv_t: f32, total: f32) -> u32 {
    return select_key(lane, base, true, 0u, top_p, kmin, mx, inv_t, total);
}

@compute @workgroup_size(GROUP_SIZE)
fn main(lane: Lane, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let row = min(wg.x + wg.y * groups.x, params.rows - 1u);
    let live = wg.x + wg.y * groups.x < params.rows;
    let c = choices[row];
    let base = row * params.vocab;

    // The largest logit and its index (the fallback where rounding leaves u past the mass).
    var mx = -3.4028235e38;
    var at = NO_INDEX;
    for (var j = lane.index; j < params.vocab; j += GROUP_SIZE) {
        let l = logits[base + j];
        if (l > mx) {
            mx = l;
            at = j;
        }
    }
    let best = group_argmax(mx, at, lane);
    mx = group_max(mx, lane);

    // Keys at least kmin are kept.
    var kmin = 0u;
    if (c.top_k > 0u && c.top_k < params.vocab) {
        kmin = count_key(lane, base, c.top_k);
    }
    if (c.top_p < 1.0) {
        var total = 0.0;
        for (var j = lane.index; j < params.vocab; j += GROUP_SIZE) {
            let l = logits[base + j];
            if (key(l) >= kmin && l == l) {
                total += exp((l - mx) * c.inv_t);
            }
        }
        total = group_sum(total, lane);
        kmin = max(kmin, mass_key(lane, base, c.top_p, kmin, mx, c.inv_t, total));
    }

    // This thread's kept mass, its place among the threads', and the token u falls on.
    var mine = 0.0;
    for (var j = lane.index; j < params.vocab; j += GROUP_SIZE) {
        mine += kept(logits[base + j], kmin, mx, c);
    }
    sums[lane.index] = mine;
    atomicStore(&chosen, NO_INDEX);
    workgroupBarrier();
    var before = 0.0;
    var all = 0.0;
    for (var t = 0u; t < GROUP_SIZE; t++) {
        let s = sums[t];
        before += select(0.0, s, t < lane.index);
        all += s;
    }
    var r = c.u * all - before;
    if (r >= 0.0 && r < mine) {
        for (var j = lane.index; j < params.vocab; j += GROUP_SIZE) {
            let p = kept(logits[base + j], kmin, mx, c);
            if (r < p) {
                atomicMin(&chosen, j);
                break;
            }
            r -= p;
        }
    }
    workgroupBarrier();
    if (lane.index == 0u && live) {
        let token = atomicLoad(&chosen);
        ids[row] = select(token, best, token == NO_INDEX);
    }
}

// A token's probability, relative to the most likely one's, if it is kept; 0 otherwise.
fn kept(l: f32, kmin: u32, mx: f32, c: Choice) -> f32 {
    let p = exp((l - mx) * c.inv_t);
    return select(0.0, p, key(l) >= kmin && l == l && p >= c.min_p);
}
