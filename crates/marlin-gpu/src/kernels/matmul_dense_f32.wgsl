
// matmul_dense.wgsl's weight reader for f32 weights.
@group(0) @binding(3) var<storage, read> w: array<f32>;

fn load_w(i: u32) -> f32 {
    return w[i];
}
