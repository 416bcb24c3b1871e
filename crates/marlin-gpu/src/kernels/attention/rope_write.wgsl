// Rope, then the new tokens' keys and values into their slots of the paged cache, in one
// dispatch where rope.wgsl and kv_write.wgsl took two (each dispatch of a decode step costs
// ~5 µs on the H100 before its work): each token's q heads turn in place in its q|k|v row
// (Hugging Face's rotate_half: value i pairs with i + head_dim / 2 and turns by pos *
// inv_freq[i], as Rope::apply in crates/marlin-models/src/rope.rs), its k heads turn on their
// way into the cache (the row keeps them as they were: only the cache is read after), its v
// heads are copied. One thread per pair (i, i + head_dim / 2) of one head: the q heads, then
// this buffer's k heads, then its v heads (kv_cache.rs: a layer larger than a binding is split
// by kv heads, one dispatch per buffer; the first turns q). Comes after the cache's prelude
// (kv_cache.rs: KvDtype, the element type KV) and rope_angle.wgsl.

struct Params {
    tokens: u32,
    // Query heads turned by this dispatch: all of them, or 0 after a layer's first buffer.
    heads: u32,
    // The buffer's kv heads: shard_heads of them from head0 on.
    shard_heads: u32,
    head0: u32,
    head_dim: u32,
    block_size: u32,
    // Token t's row starts at t * stride in qkv; q, k and v at these offsets in it.
    stride: u32,
    q_offset: u32,
    k_offset: u32,
    v_offset: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// One layer's cache (of the shard's heads): [blocks][shard_heads][block_size][head_dim].
@group(0) @binding(1) var<storage, read_write> k_cache: array<KV>;
@group(0) @binding(2) var<storage, read_write> v_cache: array<KV>;
// (tokens, stride): q turned in place.
@group(0) @binding(3) var<storage, read_write> qkv: array<f32>;
// Per token [position, offset of its block table in tables].
@group(0) @binding(4) var<storage, read> info: array<u32>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
// head_dim / 2 inverse frequencies (any scaling applied by the host).
@group(0) @binding(6) var<storage, read> inv_freq: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let hd = params.head_dim;
    let half = hd / 2u;
    let slots = params.heads + 2u * params.shard_heads;
    let p = gid.x + gid.y * groups.x * 256u;
    if (p >= params.tokens * slots * half) {
        return;
    }
    let i = p % half;
    let slot = (p / half) % slots;
    let t = p / (half * slots);
    let pos = info[2u * t];
    let row = t * params.stride;
    // f32 like transformers (and rope.rs): angle = pos * inv_freq in float32.
    let sc = sin_cos(f32(pos) * inv_freq[i]);
    if (slot < params.heads) {
        let at = row + params.q_offset + slot * hd + i;
        let a = qkv[at];
        let b = qkv[at + half];
        qkv[at] = a * sc.y - b * sc.x;
        qkv[at + half] = b * sc.y + a * sc.x;
        return;
    }
    let kv_slot = slot - params.heads;
    let h = kv_slot % params.shard_heads;
    let block = tables[info[2u * t + 1u] + pos / params.block_size];
    let dst = ((block * params.shard_heads + h) * params.block_size + pos % params.block_size)
        * hd + i;
    let src = row + (params.head0 + h) * hd + i;
    if (kv_slot < params.shard_heads) {
        let a = qkv[params.k_offset + src];
        let b = qkv[params.k_offset + src + half];
        k_cache[dst] = KV(a * sc.y - b * sc.x);
        k_cache[dst + half] = KV(b * sc.y + a * sc.x);
    } else {
        v_cache[dst] = KV(qkv[params.v_offset + src]);
        v_cache[dst + half] = KV(qkv[params.v_offset + src + half]);
    }
}
