//! Broken Hugging Face folders: each gets the error variant that says what is wrong, and its
//! message names the file (and the tensor, where one is at fault).

mod hf_support;

use std::path::Path;

use hf_support::{
    Float, random_weights, safetensors_bytes, tiny_config, tiny_config_json, write_folder,
};
use marlin_cpu::CpuBackend;
use marlin_models::hf::HfModel;
use marlin_models::{Architecture, Model, ModelError, Precision, WeightSource};
use safetensors::tensor::Dtype;
use serde_json::{Value, json};

/// A valid llama folder in `dir` (sharded in 3 when `sharded`).
fn good(dir: &Path, sharded: bool) -> Value {
    let config = tiny_config(Architecture::Llama);
    let json = tiny_config_json(Architecture::Llama);
    let shards = if sharded { 3 } else { 1 };
    write_folder(dir, &json, &random_weights(&config, 5), Float::BF16, shards);
    json
}

/// The error of opening `dir`, checked to contain every needle.
fn open_err(dir: &Path, needles: &[&str]) -> ModelError {
    let err = HfModel::open(dir).expect_err("the folder must be refused");
    let text = err.to_string();
    for n in needles {
        assert!(text.contains(n), "{n:?} not in: {text}");
    }
    err
}

fn index(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn write_index(dir: &Path, index: &Value) {
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn a_folder_without_config_or_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let e = open_err(tmp.path(), &["config.json"]);
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e}");
    std::fs::write(
        tmp.path().join("config.json"),
        tiny_config_json(Architecture::Llama).to_string(),
    )
    .unwrap();
    let e = open_err(tmp.path(), &["model.safetensors"]);
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e}");
    std::fs::write(tmp.path().join("pytorch_model.bin"), b"PK").unwrap();
    let e = open_err(tmp.path(), &["model.safetensors", "PyTorch .bin"]);
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e}");
    // marlin_models::open takes the same road.
    let e = marlin_models::open(tmp.path()).err().unwrap();
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e}");
}

#[test]
fn a_shard_the_index_names_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    good(tmp.path(), true);
    std::fs::remove_file(tmp.path().join("model-00002-of-00003.safetensors")).unwrap();
    let e = open_err(
        tmp.path(),
        &[
            "model.safetensors.index.json",
            "model-00002-of-00003.safetensors",
        ],
    );
    assert!(matches!(e, ModelError::Shards { .. }), "{e}");
}

#[test]
fn a_tensor_the_index_promises_is_not_in_its_shard() {
    let tmp = tempfile::tempdir().unwrap();
    good(tmp.path(), true);
    let mut idx = index(tmp.path());
    idx["weight_map"]["model.norm.weight"] = json!("model-00003-of-00003.safetensors");
    write_index(tmp.path(), &idx);
    let e = open_err(
        tmp.path(),
        &[
            "model.safetensors.index.json",
            "model-00003-of-00003.safetensors",
            "model.norm.weight",
        ],
    );
    assert!(matches!(e, ModelError::Shards { .. }), "{e}");
}

#[test]
fn an_index_cannot_leave_the_folder_or_lose_its_map() {
    let tmp = tempfile::tempdir().unwrap();
    good(tmp.path(), true);
    let good_index = index(tmp.path());
    for shard in [
        json!("../model-00001-of-00003.safetensors"),
        json!("/etc/passwd"),
        json!(""),
        json!(3),
    ] {
        let mut idx = good_index.clone();
        idx["weight_map"]["model.norm.weight"] = shard.clone();
        write_index(tmp.path(), &idx);
        let e = open_err(
            tmp.path(),
            &["model.safetensors.index.json", "model.norm.weight"],
        );
        assert!(matches!(e, ModelError::Malformed { .. }), "{shard}: {e}");
    }
    for bad in [
        json!({"metadata": {}}),
        json!([1]),
        json!({"weight_map": [1]}),
    ] {
        write_index(tmp.path(), &bad);
        let e = open_err(tmp.path(), &["model.safetensors.index.json"]);
        assert!(matches!(e, ModelError::Malformed { .. }), "{bad}: {e}");
    }
}

#[test]
fn a_config_that_disagrees_with_the_tensors_names_both() {
    let tmp = tempfile::tempdir().unwrap();
    let json = good(tmp.path(), false);
    let cases: [(&str, Value, &[&str]); 5] = [
        (
            "vocab_size",
            json!(100),
            &["config.json", "model.embed_tokens.weight"],
        ),
        (
            "hidden_size",
            json!(32),
            &["config.json", "model.embed_tokens.weight"],
        ),
        (
            "num_key_value_heads",
            json!(4),
            &["config.json", "model.layers.0.self_attn.k_proj.weight"],
        ),
        (
            "intermediate_size",
            json!(64),
            &["config.json", "model.layers.0.mlp.gate_proj.weight"],
        ),
        (
            "num_hidden_layers",
            json!(3),
            &["config.json", "num_hidden_layers", "2 layers"],
        ),
    ];
    for (key, value, needles) in cases {
        let mut c = json.clone();
        c[key] = value;
        std::fs::write(tmp.path().join("config.json"), c.to_string()).unwrap();
        let e = open_err(tmp.path(), needles);
        assert!(
            matches!(e, ModelError::Shape { .. } | ModelError::Config { .. }),
            "{key}: {e}"
        );
    }
    // Untied without lm_head.
    let config = tiny_config(Architecture::Llama);
    let weights: Vec<_> = random_weights(&config, 5)
        .into_iter()
        .filter(|(n, ..)| n != "lm_head.weight")
        .collect();
    write_folder(tmp.path(), &json, &weights, Float::F32, 1);
    let e = open_err(
        tmp.path(),
        &["config.json", "lm_head.weight", "tie_word_embeddings"],
    );
    assert!(matches!(e, ModelError::Config { .. }), "{e}");
}

/// Layer 1's tensors are checked by the architecture as it loads them: its errors name the
/// folder now, not an empty path.
#[test]
fn a_later_layer_of_the_wrong_shape_names_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_config(Architecture::Llama);
    let mut weights = random_weights(&config, 5);
    let down = weights
        .iter_mut()
        .find(|(n, ..)| n == "model.layers.1.mlp.down_proj.weight")
        .unwrap();
    down.1 = vec![64, 48];
    down.2.truncate(64 * 48);
    write_folder(
        tmp.path(),
        &tiny_config_json(Architecture::Llama),
        &weights,
        Float::F32,
        1,
    );
    let model = HfModel::open(tmp.path()).unwrap();
    let e = Model::load(&model, CpuBackend::detect(), Precision::F32)
        .err()
        .unwrap();
    assert!(matches!(e, ModelError::Shape { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with(&tmp.path().display().to_string()),
        "{text}"
    );
    assert!(
        text.contains("model.layers.1.mlp.down_proj.weight"),
        "{text}"
    );
}

#[test]
fn other_dtypes_are_unsupported_naming_tensor_and_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let json = good(tmp.path(), false);
    let config = tiny_config(Architecture::Llama);
    let mut tensors: Vec<_> = random_weights(&config, 5)
        .into_iter()
        .map(|(n, s, v)| (n, Dtype::BF16, s, Float::BF16.encode(&v)))
        .collect();
    let norm = tensors
        .iter_mut()
        .find(|t| t.0 == "model.norm.weight")
        .unwrap();
    norm.1 = Dtype::F64;
    norm.3 = vec![0; 64 * 8];
    std::fs::write(
        tmp.path().join("model.safetensors"),
        safetensors_bytes(&tensors),
    )
    .unwrap();
    std::fs::write(tmp.path().join("config.json"), json.to_string()).unwrap();
    let model = HfModel::open(tmp.path()).unwrap();
    let listed = model.tensors();
    let t = listed
        .iter()
        .find(|t| t.name == "model.norm.weight")
        .unwrap();
    assert_eq!((t.stored_as.as_str(), t.bytes), ("F64", 512));
    let e = model.weight("model.norm.weight").unwrap_err();
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    for needle in ["model.safetensors", "model.norm.weight", "F64", "BF16"] {
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
    let e = Model::load(&model, CpuBackend::detect(), Precision::F32)
        .err()
        .unwrap();
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
}

#[test]
fn a_damaged_weights_file_is_malformed_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    good(tmp.path(), false);
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 7, 8, 100, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = open_err(tmp.path(), &["model.safetensors"]);
        assert!(
            matches!(e, ModelError::Malformed { .. }),
            "cut at {cut}: {e}"
        );
    }
    let e = HfModel::open(tmp.path().join("nowhere")).unwrap_err();
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e}");
}

#[test]
fn a_bad_config_json_is_refused_before_the_weights_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    good(tmp.path(), false);
    std::fs::write(
        tmp.path().join("config.json"),
        b"{\"model_type\": \"llama\",",
    )
    .unwrap();
    let e = open_err(tmp.path(), &["config.json"]);
    assert!(matches!(e, ModelError::Config { .. }), "{e}");
    std::fs::write(tmp.path().join("config.json"), b"{}").unwrap();
    std::fs::write(tmp.path().join("generation_config.json"), b"nope").unwrap();
    let e = open_err(tmp.path(), &["config.json"]);
    assert!(matches!(e, ModelError::Config { .. }), "{e}");
}
