// sin and cos of rope's angles, exact enough at any position: the piece rope.wgsl and
// attention/rope_write.wgsl both start with (their .rs files prepend it).

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
