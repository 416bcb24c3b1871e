// Decode attention, step 2 of 2: merges the split-K partials of decode.wgsl. One workgroup per
// (head, token); each invocation owns output dimensions d = lid, lid + 64, ... and weighs every
// split's partial by exp(m_split - m_max), so no reduction across invocations is needed.

const WG: u32 = 64u;
// Stands for -infinity, as in decode.wgsl.
const NEG: f32 = -3.0e38;

struct Params {
    heads: u32,
    head_dim: u32,
    splits: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// (tokens, heads, splits, 2 + head_dim): m, l, unnormalised output.
@group(0) @binding(1) var<storage, read> part: array<f32>;
// (tokens, heads, head_dim)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let head = wg.x;
    let t = wg.y;
    let hd = params.head_dim;
    let stride = hd + 2u;
    let first = (t * params.heads + head) * params.splits * stride;
    var m = NEG;
    for (var s = 0u; s < params.splits; s++) {
        m = max(m, part[first + s * stride]);
    }
    var l = 0.0;
    for (var s = 0u; s < params.splits; s++) {
        let at = first + s * stride;
        l += part[at + 1u] * exp(part[at] - m);
    }
    let o_row = (t * params.heads + head) * hd;
    for (var d = lid; d < hd; d += WG) {
        var o = 0.0;
        for (var s = 0u; s < params.splits; s++) {
            let at = first + s * stride;
            o += part[at + 2u + d] * exp(part[at] - m);
        }
        out[o_row + d] = o / l;
    }
}
