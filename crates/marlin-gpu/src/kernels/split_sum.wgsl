// The sum of a split-K product's slabs: y[i] = parts[i] + parts[count + i] + ... over `splits`
// slabs of `count` values (qmm_coop.wgsl writes one slab per split of K).

struct Params {
    count: u32,
    splits: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> parts: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i < params.count) {
        var sum = 0.0;
        for (var s = 0u; s < params.splits; s++) {
            sum += parts[s * params.count + i];
        }
        y[i] = sum;
    }
}
