//! Damaged checkpoints: the weights file truncated, its bytes flipped, its header and metadata
//! edited to lie, config.json's block wrong. Every one must give an error naming the file and
//! the problem, or a checkpoint whose every weight reads; never a panic or an out-of-bounds read.

use std::path::{Path, PathBuf};

use marlin_models::checkpoint::{Checkpoint, Recipe, quantize_model};
use marlin_models::hf::HfModel;
use marlin_models::{Weight, WeightSource};
use marlin_quant::{Format, Group, Scheme};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// A small valid checkpoint with every kind of part: codes, f16 scales and biases (int2 g16),
/// E4M3 scales and the global scale (nvfp4), f32 scales (fp8), dense F32 tensors.
fn valid() -> (tempfile::TempDir, PathBuf) {
    made(false)
}

/// [`valid`] with every matrix 2:4 sparse: each also has a positions part.
fn valid_sparse() -> (tempfile::TempDir, PathBuf) {
    made(true)
}

fn made(sparse: bool) -> (tempfile::TempDir, PathBuf) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llama");
    let src = HfModel::open(fixture).unwrap();
    let mut recipe = Recipe::new(Scheme::new(Format::Int2, Group::Size(16)).unwrap());
    recipe.rules.push("*.self_attn.*=nvfp4".parse().unwrap());
    recipe.rules.push("*.down_proj=fp8".parse().unwrap());
    recipe.sparse_2_4 = sparse;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ckpt");
    quantize_model(&src, &recipe, &out, &[], &mut |_| {}).unwrap();
    (dir, out)
}

fn weights(dir: &Path) -> PathBuf {
    dir.join("model.safetensors")
}

/// Opens the folder and, if that works, reads every weight; whether it opened. An error must
/// name a file of the folder.
fn exercise(dir: &Path) -> bool {
    let ckpt = match Checkpoint::open(dir) {
        Ok(c) => c,
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("model.safetensors") || msg.contains("config.json"),
                "{msg}"
            );
            return false;
        }
    };
    for t in ckpt.tensors() {
        match ckpt.weight(&t.name) {
            Ok(Weight::Quant(q)) => assert_eq!(vec![q.rows(), q.cols()], t.shape),
            Ok(Weight::Sparse(s)) => assert_eq!(vec![s.rows(), s.cols()], t.shape),
            Ok(Weight::Dense(d)) => {
                assert_eq!(d.data.len(), t.shape.iter().product::<usize>())
            }
            Err(e) => assert!(e.to_string().contains("model.safetensors"), "{e}"),
        }
    }
    true
}

/// A positions byte that repeats a position (two kept values in one column) is refused.
#[test]
fn corrupt_sparse_positions_are_an_error() {
    let (_keep, dir) = valid_sparse();
    assert!(exercise(&dir));
    let bytes = std::fs::read(weights(&dir)).unwrap();
    let (header, mut data) = split(&bytes);
    let part = "model.layers.0.mlp.up_proj.weight.positions";
    let at = header[part]["data_offsets"][0].as_u64().unwrap() as usize;
    data[at] = 0b0101;
    std::fs::write(weights(&dir), join(&header, &data)).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    let e = ckpt
        .weight("model.layers.0.mlp.up_proj.weight")
        .unwrap_err();
    assert!(e.to_string().contains("distinct and increasing"), "{e}");
}

#[test]
fn truncating_a_sparse_checkpoint_is_an_error() {
    let (_keep, dir) = valid_sparse();
    let bytes = std::fs::read(weights(&dir)).unwrap();
    for len in (0..bytes.len()).step_by(97) {
        std::fs::write(weights(&dir), &bytes[..len]).unwrap();
        assert!(!exercise(&dir), "cut at {len} of {} opened", bytes.len());
    }
}

#[test]
fn truncation_is_an_error_naming_the_file() {
    let (_keep, dir) = valid();
    let bytes = std::fs::read(weights(&dir)).unwrap();
    assert!(exercise(&dir));
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let points = (0..64)
        .chain((64..header_end + 64).step_by(7))
        .chain((header_end..bytes.len()).step_by(251));
    for len in points.filter(|&l| l < bytes.len()) {
        std::fs::write(weights(&dir), &bytes[..len]).unwrap();
        assert!(!exercise(&dir), "cut at {len} of {} opened", bytes.len());
    }
}

/// The header as JSON, and the data after it.
fn split(bytes: &[u8]) -> (Map<String, Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn join(header: &Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// Rewrites the metadata's description of one matrix.
fn edit_description(header: &mut Map<String, Value>, name: &str, f: impl Fn(&mut Value)) {
    let meta = header["__metadata__"].as_object_mut().unwrap();
    let mut described: Value =
        serde_json::from_str(meta["marlin.quantized"].as_str().unwrap()).unwrap();
    f(&mut described[name]);
    meta["marlin.quantized"] = Value::String(described.to_string());
}

#[test]
fn a_lying_header_is_an_error_saying_what_is_wrong() {
    let (_keep, dir) = valid();
    let bytes = std::fs::read(weights(&dir)).unwrap();
    const Q: &str = "model.layers.0.mlp.up_proj.weight";
    type Edit = Box<dyn Fn(&mut Map<String, Value>)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|h| edit_description(h, Q, |d| d["format"] = "int5".into())),
            "unknown format 'int5'",
        ),
        (
            Box::new(|h| edit_description(h, Q, |d| d["format"] = "int4".into())),
            "needs",
        ),
        (
            Box::new(|h| edit_description(h, Q, |d| d["group_size"] = 48.into())),
            "group",
        ),
        (
            Box::new(|h| edit_description(h, Q, |d| d["shape"] = serde_json::json!([128, 65]))),
            "needs",
        ),
        (
            Box::new(|h| {
                edit_description(h, Q, |d| d["shape"] = serde_json::json!([u64::MAX, 64]))
            }),
            "too large",
        ),
        (
            Box::new(|h| {
                h["__metadata__"]
                    .as_object_mut()
                    .unwrap()
                    .remove("marlin.quantized");
            }),
            "no 'marlin.quantized'",
        ),
        (
            Box::new(|h| h["__metadata__"]["marlin.quantized"] = "[1, 2]".into()),
            "not a JSON object",
        ),
        (
            Box::new(|h| {
                edit_description(h, Q, |_| {});
                let meta = h["__metadata__"].as_object_mut().unwrap();
                let mut d: Value =
                    serde_json::from_str(meta["marlin.quantized"].as_str().unwrap()).unwrap();
                d.as_object_mut().unwrap().remove(Q);
                meta["marlin.quantized"] = Value::String(d.to_string());
            }),
            "neither a dense",
        ),
        (
            Box::new(|h| {
                h[&format!("{Q}.biases")]["dtype"] = "BF16".into();
            }),
            "needs F16",
        ),
    ];
    for (edit, needle) in cases {
        let (mut header, data) = split(&bytes);
        edit(&mut header);
        std::fs::write(weights(&dir), join(&header, &data)).unwrap();
        let e = Checkpoint::open(&dir).unwrap_err().to_string();
        assert!(e.contains(needle), "expected '{needle}' in: {e}");
        assert!(e.contains("model.safetensors"), "{e}");
    }
}

#[test]
fn a_wrong_quantization_config_is_an_error() {
    let (_keep, dir) = valid();
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    type Edit<'a> = &'a dyn Fn(&mut Value);
    let cases: [(Edit<'_>, &str); 4] = [
        (
            &|c| c["quantization_config"]["version"] = 99.into(),
            "upgrade",
        ),
        (
            &|c| c["quantization_config"]["version"] = "1".into(),
            "version",
        ),
        (
            &|c| c["quantization_config"] = 3.into(),
            "quantization_config",
        ),
        (&|c| c["num_hidden_layers"] = 1.into(), "num_hidden_layers"),
    ];
    for (edit, needle) in cases {
        let mut config: Value = serde_json::from_str(&text).unwrap();
        edit(&mut config);
        std::fs::write(&path, config.to_string()).unwrap();
        let e = Checkpoint::open(&dir).unwrap_err().to_string();
        assert!(
            e.contains(needle) && e.contains("config.json"),
            "'{needle}' in: {e}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Flipped bytes in the header or the first data bytes: an error or a readable checkpoint.
    #[test]
    fn flipped_bytes_never_panic(
        flips in prop::collection::vec((0usize..1 << 16, any::<u8>()), 1..6),
        sparse: bool,
    ) {
        let (_keep, dir) = made(sparse);
        let mut bytes = std::fs::read(weights(&dir)).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let span = (8 + n + 256).min(bytes.len());
        for (at, v) in flips {
            bytes[at % span] ^= v | 1;
        }
        std::fs::write(weights(&dir), &bytes).unwrap();
        exercise(&dir);
    }
}
