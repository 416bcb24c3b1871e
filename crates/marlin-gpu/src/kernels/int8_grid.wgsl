// The int8 grids of x that qmv.wgsl's integer products read (`MatmulPrecision::Int8x2`, the
// CPU's default activations): each block of 32 values on a grid of step d = amax / 127, then
// what that grid missed on a second one of step d / 256 (`residual_step`, `residual_grid`).
// Shared by quantize_x.wgsl and qmv's epilogue (qmv_q8_out.wgsl), so that both put x on the
// same grids as the CPU.

// The largest magnitude of four values.
fn max_abs4(v: vec4<f32>) -> f32 {
    return max(max(abs(v.x), abs(v.y)), max(abs(v.z), abs(v.w)));
}

// v on the grid of step d (a block's amax / 127; 0 for a block of zeros): the nearest codes,
// to nearest even, as the CPU.
fn on_grid(v: vec4<f32>, d: f32) -> vec4<f32> {
    return round(v * select(0.0, 1.0 / d, d != 0.0));
}

// The residual grid's step for a block whose grid step is d: d / 256 (exact: a power of two;
// the CPU's `residual_step`).
fn residual_step(d: f32) -> f32 {
    return d / 256.0;
}

// The residual r of a block on its grid of step d2 = residual_step(d). |r| <= d / 2, so the
// codes lie in [-128, 128]; 128 saturates to 127, as the CPU's conversion to i8 does.
fn residual_grid(r: vec4<f32>, d2: f32) -> vec4<f32> {
    return min(on_grid(r, d2), vec4<f32>(127.0));
}

// Four codes (integers in [-128, 127]) as the signed bytes of one word, code e in byte e. A
// rounded value plus 1.5 * 2^23 has its two's complement byte as the low byte of its bits: no
// float-to-integer conversion. (Rounding by that addition itself, as the CPU's `round_small`,
// is undone by compilers that reassociate (x + M) - M: lavapipe's did.)
fn grid_word(c: vec4<f32>) -> u32 {
    let l = bitcast<vec4<u32>>(c + vec4<f32>(12582912.0)) & vec4<u32>(0xffu);
    return l.x | (l.y << 8u) | (l.z << 16u) | (l.w << 24u);
}
