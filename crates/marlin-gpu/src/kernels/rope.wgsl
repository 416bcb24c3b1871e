// Rotary position embeddings in place, Hugging Face's rotate_half convention: in each head,
// value i pairs with value i + head_dim / 2 and turns by pos * inv_freq[i] (Rope::apply in
// crates/marlin-models/src/rope.rs). The inverse frequencies come from the host, so Llama
// 3.1's scaling (or any other) is only a different table. One thread per pair.

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

// 2*pi in three parts for Cody-Waite reduction: C1 and C2 carry 12 significant bits each, so
// that their products with the 12-bit halves of k are exact in f32; C3 is the rest (2*pi -
// C1 - C2 - C3 is 2e-17). Without this, sin of a large angle (pos 1e5 turns far past 2*pi)
// is left to the GPU's own range reduction, which Vulkan does not bound and fast math
// (Metal's default) makes coarse.
const C1: f32 = 6.283203125;
const C2: f32 = -1.7814338207244873e-05;
const C3: f32 = -3.4822063010864213e-09;
const INV_TWO_PI: f32 = 0.15915494309189535;

// (sin a, cos a) for a in f32, as the CPU's f32 sin_cos of the same f32 angle: the angle is
// reduced to about [-pi, pi] (a little past near 1e8, where a / 2pi rounds in f32), within
// 5e-7 of exact for |a| up to 1e8.
fn sin_cos(a: f32) -> vec2<f32> {
    let b = abs(a);
    // k < 2^24 is exact in an f32 and splits into two 12-bit halves.
    let k = round(b * INV_TWO_PI);
    let ku = u32(k);
    let k_hi = f32(ku & 0xfff000u);
    let k_lo = f32(ku & 0xfffu);
    // Each product is exact and each difference nearly cancels: no rounding but the last.
    var r = b - k_hi * C1;
    r = r - k_lo * C1;
    r = r - k_hi * C2;
    r = r - k_lo * C2;
    r = r - k * C3;
    // sin is odd, cos even.
    return vec2(sign(a) * sin(r), cos(r));
}

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
