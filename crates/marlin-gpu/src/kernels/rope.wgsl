// Rotary position embeddings in place, Hugging Face's rotate_half convention: in each head,
// value i pairs with value i + head_dim / 2 and turns by pos * inv_freq[i] (Rope::apply in
// crates/marlin-models/src/rope.rs). The inverse frequencies come from the host, so Llama
// 3.1's scaling (or any other) is only a different table. One thread per pair. Comes after
// rope_angle.wgsl (sin_cos).

struct Params {
    tokens: u32,
    // Heads per token: q's and k's together when they lie side by side (q|k|v).
    heads: u32,
    head_dim: u32,
    // Token t's heads start at offset + t * stride (elements).
    offset: u32,
    stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
// One position per token.
@group(0) @binding(2) var<storage, read> positions: array<u32>;
// head_dim / 2 inverse frequencies.
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let half_dim = params.head_dim / 2u;
    let p = gid.x + gid.y * groups.x * 256u;
    if (p >= params.tokens * params.heads * half_dim) {
        return;
    }
    let i = p % half_dim;
    let head = (p / half_dim) % params.heads;
    let t = p / (half_dim * params.heads);
    // f32 like transformers (and rope.rs): angle = pos * inv_freq in float32.
    let sc = sin_cos(f32(positions[t]) * inv_freq[i]);
    let at = params.offset + t * params.stride + head * params.head_dim + i;
    let a = x[at];
    let b = x[at + half_dim];
    x[at] = a * sc.y - b * sc.x;
    x[at + half_dim] = b * sc.y + a * sc.x;
}
