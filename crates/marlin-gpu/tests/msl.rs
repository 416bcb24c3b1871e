//! The guard of the Metal path, which cannot run on these Linux machines: every kernel must
//! parse, validate and translate to Metal Shading Language 2.3 (the version with simdgroup
//! matrices, which the cooperative-matrix kernels need) without an error.

use naga::back::msl;
use naga::valid::{Capabilities, ValidationFlags, Validator};

#[test]
fn every_kernel_translates_to_metal_shading_language() {
    let mut failures = Vec::new();
    for (name, source) in marlin_gpu::kernels::SOURCES {
        if let Err(e) = translate(source) {
            failures.push(format!("{name}: {e}"));
        }
    }
    for (key, source) in marlin_gpu::kernels::generated_sources() {
        if let Err(e) = translate(&source) {
            failures.push(format!("{key}: {e}"));
        }
    }
    assert!(
        !marlin_gpu::kernels::SOURCES.is_empty(),
        "no kernels listed in kernels::SOURCES"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn translate(source: &str) -> Result<String, String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .map_err(|e| format!("{:?}", e.into_inner()))?;
    let options = msl::Options {
        lang_version: (2, 3),
        ..Default::default()
    };
    let (msl, _) = msl::write_string(&module, &info, &options, &msl::PipelineOptions::default())
        .map_err(|e| e.to_string())?;
    Ok(msl)
}

/// The test can fail: a kernel with an error is caught.
#[test]
fn a_broken_kernel_is_caught() {
    assert!(translate("@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }").is_err());
}
