// Writes the new tokens' keys and values (after rope) into their slots of the paged cache,
// for the kv heads of one buffer (all of them unless a layer is split, kv_cache.rs says why).
// One thread per element of (tokens, shard_heads, head_dim). After the cache's prelude
// (kv_cache.rs: KvDtype): KV, the cache's element type.

struct Params {
    kv_heads: u32,
    // The buffer's kv heads: shard_heads of them from head0 on.
    shard_heads: u32,
    head0: u32,
    head_dim: u32,
    block_size: u32,
    // tokens * shard_heads * head_dim
    n: u32,
    // Token t's kv heads start at k_offset + t * stride in k_new (v_offset in v_new): k and v
    // may be parts of a stacked q|k|v output.
    k_offset: u32,
    v_offset: u32,
    stride: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// One layer's cache (of the shard's heads): [blocks][shard_heads][block_size][head_dim].
@group(0) @binding(1) var<storage, read_write> k_cache: array<KV>;
@group(0) @binding(2) var<storage, read_write> v_cache: array<KV>;
// (tokens, kv_heads, head_dim)
@group(0) @binding(3) var<storage, read> k_new: array<f32>;
@group(0) @binding(4) var<storage, read> v_new: array<f32>;
// Per token [position, offset of its block table in tables].
@group(0) @binding(5) var<storage, read> info: array<u32>;
@group(0) @binding(6) var<storage, read> tables: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= params.n) {
        return;
    }
    let hd = params.head_dim;
    let d = i % hd;
    let h = (i / hd) % params.shard_heads;
    let t = i / (hd * params.shard_heads);
    let pos = info[2u * t];
    let block = tables[info[2u * t + 1u] + pos / params.block_size];
    let at = ((block * params.shard_heads + h) * params.block_size + pos % params.block_size) * hd
        + d;
    let src = t * params.stride + (params.head0 + h) * hd + d;
    k_cache[at] = KV(k_new[params.k_offset + src]);
    v_cache[at] = KV(v_new[params.v_offset + src]);
}
