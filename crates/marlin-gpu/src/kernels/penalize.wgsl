// Repetition, presence and frequency penalties on rows of logits, in place, before a draw
// (sample.wgsl) or the argmax: one thread per (row, token its sequence has seen, times seen),
// the host's list, in which a row's token appears once. As marlin_engine's Sampler::penalize:
// the repetition penalty divides a positive logit and multiplies a negative one, then
// presence + frequency * count is subtracted.

struct Params {
    vocab: u32,
    // Entries in `seen`.
    n: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// (rows, vocab)
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
// Per entry: (row, token, count, 0), token < vocab.
@group(0) @binding(2) var<storage, read> seen: array<vec4<u32>>;
// Per row: (repetition, presence, frequency, 0).
@group(0) @binding(3) var<storage, read> penalties: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= params.n) {
        return;
    }
    let e = seen[i];
    let p = penalties[e.x];
    let at = e.x * params.vocab + e.y;
    var l = logits[at];
    if (p.x != 1.0) {
        l = select(l * p.x, l / p.x, l > 0.0);
    }
    logits[at] = l - (p.y + p.z * f32(e.z));
}
