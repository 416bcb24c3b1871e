// Embedding gather: out[t] = table[ids[t]], rows of hidden f32 values. A table larger than one
// storage binding comes in parts of whole rows, one dispatch each: a dispatch copies the rows
// whose ids fall in its part and leaves the others to the other parts. An id past the whole
// vocabulary gets a row of zeros from every dispatch: the host refuses such ids before it
// records (marlin-models does), but the kernel must never read past the table whatever it is
// given.

struct Params {
    tokens: u32,
    hidden: u32,
    // Rows of the whole table.
    vocab: u32,
    // The ids this part holds: first_row .. first_row + part_rows.
    first_row: u32,
    part_rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= params.tokens * params.hidden) {
        return;
    }
    let t = i / params.hidden;
    let c = i % params.hidden;
    let id = ids[t];
    if (id >= params.vocab) {
        out[i] = 0.0;
        return;
    }
    // Unsigned: an id below first_row wraps to a large value and fails the test too.
    let local = id - params.first_row;
    if (local < params.part_rows) {
        out[i] = table[local * params.hidden + c];
    }
}
