
// matmul_dense.wgsl's weight reader for f16 weights, two to a u32 (the even element in the
// low half, as little-endian bytes lay them out). unpack2x16float is core WGSL, so this needs
// no SHADER_F16 and runs on every device; the products are in f32 either way.
@group(0) @binding(3) var<storage, read> w: array<u32>;

fn load_w(i: u32) -> f32 {
    let pair = unpack2x16float(w[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}
