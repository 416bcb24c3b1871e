// Dense matmul y = x W^T for f32 activations: x (m, k), W (n, k) row-major as PyTorch stores
// a linear layer's weight, y (m, n). Tiled through workgroup memory: a workgroup computes a
// 64 x 64 block of y, 16 values of k at a time, each thread a 4 x 4 block of it. Loads past
// m, n or k read nothing and count as zero, so any shape is right.
// Comes before matmul_dense_f32.wgsl or matmul_dense_f16.wgsl: binding 3 (w) and load_w.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

// The tiles k-major, 4 rows (or columns) to a vec4: the inner loop reads a thread's 4 rows
// of x and 4 columns of W as one vec4 each. 2 x 4 KiB, far below Metal's 32 KiB.
var<workgroup> x_tile: array<vec4<f32>, 256>;
var<workgroup> w_tile: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let m0 = wg.y * BM;
    let n0 = wg.x * BN;
    // This thread's rows of y are m0 + 4 ty .. + 3, its columns n0 + 4 tx .. + 3.
    let tx = t % (BN / 4u);
    let ty = t / (BN / 4u);
    var acc: array<vec4<f32>, 4>;
    let tiles = (params.k + BK - 1u) / BK;
    for (var kt = 0u; kt < tiles; kt++) {
        let k0 = kt * BK;
        // 64 x 16 values of each tile, 4 per thread; neighbouring threads read neighbouring
        // k of one row, which coalesces.
        for (var j = 0u; j < 4u; j++) {
            let e = t + j * 256u;
            let r = e / BK;
            let c = e % BK;
            let kk = k0 + c;
            var xv = 0.0;
            if (m0 + r < params.m && kk < params.k) {
                xv = x[(m0 + r) * params.k + kk];
            }
            x_tile[(c * BM + r) / 4u][r % 4u] = xv;
            var wv = 0.0;
            if (n0 + r < params.n && kk < params.k) {
                wv = load_w((n0 + r) * params.k + kk);
            }
            w_tile[(c * BN + r) / 4u][r % 4u] = wv;
        }
        workgroupBarrier();
        for (var c = 0u; c < BK; c++) {
            let a = x_tile[c * (BM / 4u) + ty];
            let b = w_tile[c * (BN / 4u) + tx];
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        // The next tile's loads must wait until everyone has read this one.
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = m0 + ty * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let col = n0 + tx * 4u + j;
            if (row < params.m && col < params.n) {
                y[row * params.n + col] = acc[i][j];
            }
        }
    }
}
