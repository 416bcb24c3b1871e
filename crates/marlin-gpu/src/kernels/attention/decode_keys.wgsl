// What both split-K decode kernels start with (decode.wgsl, decode_subgroup.wgsl; decode.rs
// puts it first): their parameters, the bindings they share, and the keys a workgroup takes.

struct Params {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    block_size: u32,
    // Keys per split, and splits per (token, head).
    chunk: u32,
    splits: u32,
    // Sliding window (a token sees itself and the window - 1 before it); 0: none.
    window: u32,
    // 1 / sqrt(head_dim)
    scale: f32,
    // This dispatch's query heads start at head0; the cache buffer holds the shard_heads kv
    // heads they read (all of them unless a layer is split, kv_cache.rs says why).
    head0: u32,
    shard_heads: u32,
    // Token t's query heads start at q_offset + t * q_stride (elements): q may be one part of a
    // stacked q|k|v output.
    q_offset: u32,
    q_stride: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// (tokens, heads, head_dim), at q_offset with a row stride of q_stride
@group(0) @binding(1) var<storage, read> q: array<f32>;
// Per token [position, offset of its block table in tables].
@group(0) @binding(4) var<storage, read> info: array<u32>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
// (tokens, heads, splits, 2 + head_dim): m, l, then the output scaled by exp(-m), unnormalised.
@group(0) @binding(6) var<storage, read_write> part: array<f32>;

// The keys of one workgroup: split `split` of token t's range [window start, position] for query
// head `head` (of all the heads).
struct Keys {
    // The token's position and where its block table starts in tables.
    pos: u32,
    table: u32,
    // Keys start..end (end at most pos + 1; start >= end past the token's keys).
    start: u32,
    end: u32,
    // The kv head's index within this dispatch's cache buffer.
    kvh: u32,
    // Where the head's query starts in q.
    q_row: u32,
}

fn split_keys(split: u32, head: u32, t: u32) -> Keys {
    var k: Keys;
    k.pos = info[2u * t];
    k.table = info[2u * t + 1u];
    var first = 0u;
    if (params.window > 0u && k.pos + 1u > params.window) {
        first = k.pos + 1u - params.window;
    }
    k.start = first + split * params.chunk;
    k.end = min(k.start + params.chunk, k.pos + 1u);
    let group = params.heads / params.kv_heads;
    k.kvh = head / group - params.head0 / group;
    k.q_row = params.q_offset + t * params.q_stride + head * params.head_dim;
    return k;
}
