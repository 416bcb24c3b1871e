// Shared by the quantized matmul kernels (qmv.wgsl, qmm.wgsl): decoding codes and scales of
// every marlin-quant format straight from their stored bytes (docs/formats.md).
//
// quant_decode.rs prepends the constants FORMAT, BITS, SCALE_KIND, HAS_BIAS and SPLIT16 of one
// scheme, so each format compiles to its own pipeline and the driver drops the other branches.
// The kernel declares the bindings `codes`, `scales`, `biases` (array<u32>) and `params` (with
// `global_scale`) used here.
//
// A "unit" is what one thread decodes from one u32 of codes (plus, for INT3, the block's word of
// high bits): 4, 8 or 16 weights, as NV vec4s at offsets `unit_offset(q, i)` in their 32-weight
// block. Units keep x reads coalesced: the units of a block touch consecutive vec4s of x.

// Indexing (audited 2026-11-23 for `create_shader_module_trusted`: qmv and qmm run WITHOUT
// wgpu's runtime bounds checks unless MARLIN_GPU_CHECKED=1). Every index is in bounds by
// construction, given what the host guarantees before recording (qmatmul.rs): m >= 1, K >= 1,
// a part has >= 1 row, codes/scales/biases are exactly the part's stored bytes (padded to
// words), x holds >= m * K and y >= m * y_stride f32.
// - codes[row * blocks * WPB + b * WPB + q] (and + 2 for INT3): row is clamped to n - 1
//   (`min(.., params.n - 1u)`), b < blocks (qmv: u < blocks * UPB; qmm: the block loop;
//   qmm_coop's fetch before its loop clamps b to blocks - 1, a split may start past the end),
//   q < UPB <= WPB; the part holds n * blocks * WPB words.
// - scales/biases at g (+1 at group 16): g = row * groups + (b >> group_shift) or 2b + 1 <
//   n * groups, since groups counts padded K (2 * blocks at group 16; per channel the shift is
//   31); f16/E8M0/E4M3 entries are read from word i >> 1 or i >> 2 of a word-padded buffer.
//   Biases are read only where HAS_BIAS (else the 4-byte placeholder is never touched).
// - x: rows are clamped to m - 1 and columns to K - 1 (K - 4 for vec4 x, K a multiple of 4),
//   masked by select (qmv with X_WHOLE: K needs no padding, K = blocks * 32, so every column
//   read, kk + 3 < blocks * 32, is inside K; rows stop at mi < m); y: stored only where
//   row < n and mi < m, at most (m - 1) * y_stride + row0 + n - 1 < m * y_stride.
// - Workgroup and private arrays: indices are loop counters below the constant array sizes
//   (qmv `partial[li * MT + mi]`, li < T; qmm xt_index < BK * BM since the xor stays in an
//   aligned block of 32, wt < BK * BN / 4; qmm_coop's tiles: a row below BM or BN times the
//   row stride XS or WS, plus an offset below 32 / KP).
// - qmv with CODES_VEC4 (4- and 8-bit formats, whose rows are whole 16-byte chunks: a block is
//   16 or 32 bytes): codes[row * (blocks * WPB / 4) + c] as vec4<u32>, row clamped as above,
//   c < blocks * UPB / 4 = blocks * WPB / 4 (UPB = WPB for these formats).
// - qmv's chain (2026-11-24: qmv_q8_out.wgsl, NORM_SUMS in qmv.wgsl). Q8_OUT: h_out[mi * R
//   + ..] with mi <= MT - 1 (slots clamped), norm_w[b * 32 + 4i + 3] with b clamped to
//   n / 32 - 1 (the host checks norm_w holds n values), q8_part[(t & ~7) + 7] with t clamped
//   below 8 * MT * R / 32, and q8_out written only by live slots (mi < m, a tile inside n)
//   below m * blocks * 21 words, which the host checks (`Gpu::int8_x_bytes`; one part, n a
//   multiple of R). NORM_SUMS: xq word
//   m * 5 * blocks * 4 + mi * blocks + b with mi < m and b < blocks, inside the same size.
// - Every loop has a bound fixed by params or constants (force_loop_bounding is off too).
// Keep this true when editing any of these files (and qmv_q8_out.wgsl): the conformance suite
// runs unchecked.

// The launch parameters of both kernels; mirrors `QuantParams` in quant_decode.rs.
struct Params {
    // Rows of x.
    m: u32,
    // Rows of W in this part (a matrix past the binding limit is split by rows).
    n: u32,
    // Columns of x: K before padding, the row stride of x.
    k: u32,
    // 32-weight blocks per row of W (padded K / 32).
    blocks: u32,
    // Scale groups per row of W.
    groups: u32,
    // Group of block b: b >> group_shift (31 per channel: always group 0; unused at group 16).
    group_shift: u32,
    // N of the whole matrix: the row stride of y.
    y_stride: u32,
    // First row of this part in W: where its columns start in y.
    row0: u32,
    // NVFP4's per-tensor scale.
    global_scale: f32,
    // Blocks of K per split where qmm_coop splits K (workgroup z takes blocks z * split_blocks..
    // and writes slab z of y, rows z * m..); `blocks` otherwise.
    split_blocks: u32,
    // Elements from one row of x to the next: K, or 2K for qmv's IN_SWIGLU (gate|up rows).
    x_stride: u32,
    // qmv's IN_NORM: the RMSNorm's epsilon.
    eps: f32,
}

const FMT_FP4: u32 = 0u;
const FMT_MXFP4: u32 = 1u;
const FMT_NVFP4: u32 = 2u;
const FMT_INT4: u32 = 3u;
const FMT_INT4_AFFINE: u32 = 4u;
const FMT_INT8: u32 = 5u;
const FMT_FP8: u32 = 6u;
const FMT_INT3: u32 = 7u;
const FMT_INT2: u32 = 8u;

const SCALE_F16: u32 = 0u;
const SCALE_F32: u32 = 1u;
const SCALE_E8M0: u32 = 2u;
const SCALE_E4M3: u32 = 3u;

// u32 words of codes per 32-weight block: 32 * BITS / 32.
const WPB: u32 = BITS;
// Units per block: INT3 has 2 (its two words of low bits; the high word rides along).
const UPB: u32 = select(BITS, 2u, BITS == 3u);
// vec4s per unit: 32 weights per block over UPB units.
const NV: u32 = 8u / UPB;

// Offset in its block of vec4 `i` of unit `q` (docs/formats.md, "Codes of one 32-weight block"):
// 8 bits: byte j is weight j; 4 bits: byte j holds weights j and j + 16; 2 and 3 bits: byte j
// holds weights j, j + 8, j + 16, j + 24.
fn unit_offset(q: u32, i: u32) -> u32 {
    if (BITS == 8u) {
        return 4u * q;
    }
    if (BITS == 4u) {
        return 4u * q + 16u * i;
    }
    return 4u * q + 8u * i;
}

fn nan_f32() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

// f16 bits to f32, exact for subnormals too: unpack2x16float may flush f16 subnormals to zero,
// and a group of small INT8 weights has a subnormal scale (amax / 127 below 6.1e-5). Normal
// values, zeros, infinities and NaN come from unpack2x16float (one conversion); a subnormal,
// m * 2^-24, from 1 + m / 1024 (m put in the mantissa of 1.0) less 1, times 2^-14: exact, and
// no integer-to-float conversion, which made this a fifth of qmv's time at M = 1 on the H100.
fn f16_to_f32(h: u32) -> f32 {
    let v = unpack2x16float(h).x;
    let sub = (bitcast<f32>(0x3f800000u | ((h & 0x3ffu) << 13u)) - 1.0) * 6.1035156e-5;
    return select(v, select(sub, -sub, (h & 0x8000u) != 0u), (h & 0x7c00u) == 0u);
}

// E4M3 as a signed integer multiple of 2^-9, exact in f32 (at most 15 * 2^14): normals are
// (8 + m) * 2^(e - 1) units, subnormals m units. 0x7F and 0xFF are NaN, as in the spec.
fn e4m3_units(q: u32) -> f32 {
    let e = (q >> 3u) & 15u;
    let man = q & 7u;
    // For e = 0 the shift amount wraps (WGSL takes it modulo 32), but select discards it.
    let mag = f32(select(man, (man + 8u) << (e - 1u), e != 0u));
    let v = select(mag, -mag, (q & 0x80u) != 0u);
    return select(v, nan_f32(), (q & 0x7fu) == 0x7fu);
}

// Twice the E2M1 value of each code: 2 * {0, 0.5, 1, 1.5, 2, 3, 4, 6} are the nibbles of
// 0xC8643210 (an integer per code, no table in memory); bit 3 is the sign. The 1/2 goes into
// the scale.
fn e2m1x2(c: vec4<u32>) -> vec4<f32> {
    let mag = vec4<f32>((vec4<u32>(0xC8643210u) >> ((c & vec4<u32>(7u)) * 4u)) & vec4<u32>(15u));
    return select(mag, -mag, (c & vec4<u32>(8u)) != vec4<u32>(0u));
}

// The value of each code on the format's grid: the weight is `scale_at(g) * v + bias_at(g)`.
fn grid_values(c: vec4<u32>) -> vec4<f32> {
    if (FORMAT == FMT_FP4 || FORMAT == FMT_MXFP4 || FORMAT == FMT_NVFP4) {
        return e2m1x2(c);
    }
    if (FORMAT == FMT_INT4) {
        return vec4<f32>(c) - 8.0;
    }
    return vec4<f32>(c);
}

// Byte `i` of a byte array read as u32 words, given the word that holds it.
fn byte_of(i: u32, word: u32) -> u32 {
    return (word >> (8u * (i & 3u))) & 0xffu;
}

// Decoded scale of entry `i` (row * groups + group) of this part, times the format's grid step
// (1/2 for the E2M1 formats, whose grid values are doubled; 2^-9 for FP8's integer units).
fn scale_at(i: u32) -> f32 {
    if (SCALE_KIND == SCALE_F16) {
        let h = (scales[i >> 1u] >> (16u * (i & 1u))) & 0xffffu;
        return f16_to_f32(h) * select(1.0, 0.5, FORMAT == FMT_FP4);
    }
    if (SCALE_KIND == SCALE_F32) {
        // FP8, the only format with f32 scales.
        return bitcast<f32>(scales[i]) * 0.001953125; // 2^-9
    }
    let b = byte_of(i, scales[i >> 2u]);
    if (SCALE_KIND == SCALE_E8M0) {
        // 2^(e - 127) times the E2M1 step 1/2; 0xFF is NaN.
        return select(ldexp(1.0, i32(b) - 128), nan_f32(), b == 255u);
    }
    // E4M3 block scale of NVFP4, times its per-tensor f32 scale and the E2M1 step 1/2.
    return e4m3_units(b) * 0.001953125 * params.global_scale * 0.5;
}

fn bias_at(i: u32) -> f32 {
    if (!HAS_BIAS) {
        return 0.0;
    }
    return f16_to_f32((biases[i >> 1u] >> (16u * (i & 1u))) & 0xffffu);
}

// Integer codes without int-to-float conversions (a quarter-rate instruction on NVIDIA): a code
// is put in the mantissa of 1.0, v = 1 + code / 2^BITS, exactly, in two bit operations; the
// grid value is GRID_STEP * (v - GRID_OFF) (INT4: 16 (v - 1.5) = code - 8; INT4 affine:
// 16 (v - 1) = code; INT8, whose byte's sign bit is flipped: 256 (v - 1.5) = the signed byte).
// A weight is then scale * GRID_STEP * v + (bias - scale * GRID_STEP * GRID_OFF): one
// multiply-add whose product is exact in f32 (v has at most 9 significant bits, an f16 scale 11).

// The formats decoded this way (by `magic4` and `values8`).
const MAGIC_CODES: bool = FORMAT == FMT_INT4 || FORMAT == FMT_INT4_AFFINE || FORMAT == FMT_INT8;

// Mantissa bits 19..22 (4-bit codes) and 15..22 (8-bit codes) of 1.0.
const MAGIC4_MASK: u32 = 0x00780000u;
const MAGIC8_MASK: u32 = 0x007f8000u;
const ONE_BITS: u32 = 0x3f800000u;

fn grid_step() -> f32 {
    if (FORMAT == FMT_INT4 || FORMAT == FMT_INT4_AFFINE) {
        return 16.0;
    }
    if (FORMAT == FMT_INT8) {
        return 256.0;
    }
    return 1.0;
}

fn grid_off() -> f32 {
    if (FORMAT == FMT_INT4 || FORMAT == FMT_INT8) {
        return 1.5;
    }
    if (FORMAT == FMT_INT4_AFFINE) {
        return 1.0;
    }
    return 0.0;
}

// The 8 weights of a 4-bit word of an integer format as [vec4 at offset 4q, vec4 at offset
// 4q + 16] (byte j holds weights j and j + 16): 1 + code / 16 each.
fn magic4(w: u32) -> array<vec4<f32>, 2> {
    // Nibble 2j of the word (bits 8j..8j + 3) and nibble 2j + 1 moved to bits 19..22.
    let lo = vec4<u32>(w << 19u, w << 11u, w << 3u, w >> 5u);
    let hi = vec4<u32>(w << 15u, w << 7u, w >> 1u, w >> 9u);
    let mask = vec4<u32>(MAGIC4_MASK);
    let one = vec4<u32>(ONE_BITS);
    return array(bitcast<vec4<f32>>((lo & mask) | one), bitcast<vec4<f32>>((hi & mask) | one));
}

// The 4 weights of an 8-bit word: 1 + (byte ^ 0x80) / 256 for INT8, E4M3 units for FP8.
fn values8(w: u32) -> vec4<f32> {
    if (FORMAT == FMT_FP8) {
        let bytes = vec4<u32>(w, w >> 8u, w >> 16u, w >> 24u) & vec4<u32>(0xffu);
        return vec4<f32>(e4m3_units(bytes.x), e4m3_units(bytes.y), e4m3_units(bytes.z),
                         e4m3_units(bytes.w));
    }
    // Byte j moved to bits 15..22 with its sign bit flipped (0x00400000), on 1.0.
    let v = vec4<u32>(w << 15u, w << 7u, w >> 1u, w >> 9u);
    return bitcast<vec4<f32>>((v & vec4<u32>(MAGIC8_MASK)) ^ vec4<u32>(ONE_BITS | 0x00400000u));
}

//#if CODES_VEC4
//#else
// Grid values of unit `q` of block `b` of the row whose codes start at word `row_word`, as NV
// vec4s (unused ones zero), in the order of `unit_offset`.
fn unit_values(row_word: u32, b: u32, q: u32) -> array<vec4<f32>, 4> {
    let base = row_word + b * WPB;
    // Bit p of an INT3 block's third word is the high bit of weight p.
    var high = 0u;
    if (BITS == 3u) {
        high = codes[base + 2u];
    }
    return word_values(codes[base + q], high, q);
}
//#endif

// Grid values of unit `q` of a block, given its word `w` (and, for INT3, the block's word of
// high bits), as NV vec4s (unused ones zero), in the order of `unit_offset`.
fn word_values(w: u32, high_word: u32, q: u32) -> array<vec4<f32>, 4> {
    var v: array<vec4<f32>, 4>;
    let bytes = vec4<u32>(w, w >> 8u, w >> 16u, w >> 24u) & vec4<u32>(0xffu);
    if (BITS == 8u) {
        if (FORMAT == FMT_FP8) {
            v[0] = vec4<f32>(e4m3_units(bytes.x), e4m3_units(bytes.y), e4m3_units(bytes.z),
                             e4m3_units(bytes.w));
        } else {
            // INT8: sign-extend each byte.
            v[0] = vec4<f32>(bitcast<vec4<i32>>(bytes << vec4<u32>(24u)) >> vec4<u32>(24u));
        }
    } else if (BITS == 4u) {
        v[0] = grid_values(bytes & vec4<u32>(15u));
        v[1] = grid_values(bytes >> vec4<u32>(4u));
    } else {
        // 2 bits, and the low two bits of 3: vec4 i takes bits 2i..2i+2 of each byte.
        var high = vec4<u32>(0u);
        if (BITS == 3u) {
            high = vec4<u32>(high_word >> (4u * q)) >> vec4<u32>(0u, 1u, 2u, 3u);
        }
        for (var i = 0u; i < 4u; i++) {
            let low = (bytes >> vec4<u32>(2u * i)) & vec4<u32>(3u);
            let hi = ((high >> vec4<u32>(8u * i)) & vec4<u32>(1u)) << vec4<u32>(2u);
            v[i] = grid_values(low | hi);
        }
    }
    return v;
}
