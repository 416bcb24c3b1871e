//! Hugging Face folders written here (config.json and safetensors by the reference
//! implementation): every weight must come back exactly, in F32, F16 and BF16, from one file
//! or from shards; the model built on them must equal the same weights held in memory.

mod hf_support;

use hf_support::{
    ARCHS, FLOATS, Float, MapSource, random_weights, tiny_config, tiny_config_json, write_folder,
};
use marlin_cpu::CpuBackend;
use marlin_models::hf::HfModel;
use marlin_models::{KvCache, Model, Precision, SeqTokens, Weight, WeightSource};

fn dense(w: Weight) -> (Vec<usize>, Vec<f32>) {
    match w {
        Weight::Dense(t) => (t.shape, t.data),
        _ => panic!("a safetensors float tensor came back quantized"),
    }
}

#[test]
fn every_weight_comes_back_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        let config = tiny_config(arch);
        let weights = random_weights(&config, 100);
        for float in FLOATS {
            for shards in [1, 3] {
                let dir = tmp.path().join(format!("{arch:?}-{float:?}-{shards}"));
                write_folder(&dir, &tiny_config_json(arch), &weights, float, shards);
                let model = HfModel::open(&dir).unwrap();
                assert_eq!(model.config(), &config, "{dir:?}");
                assert_eq!(model.files().len(), shards);
                for (name, shape, values) in &weights {
                    let (got_shape, got) = dense(model.weight(name).unwrap());
                    assert_eq!(&got_shape, shape, "{name}");
                    let want = float.rounded(values);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{name} in {float:?}");
                }
                let listed = model.tensors();
                assert_eq!(listed.len(), weights.len());
                assert!(listed.windows(2).all(|w| w[0].name < w[1].name));
                for t in &listed {
                    let (_, shape, _) = weights.iter().find(|(n, ..)| *n == t.name).unwrap();
                    assert_eq!(&t.shape, shape);
                    assert_eq!(t.stored_as, float.name());
                    let size = if float == Float::F32 { 4 } else { 2 };
                    assert_eq!(t.bytes, (shape.iter().product::<usize>() * size) as u64);
                }
                assert_eq!(model.path(), dir.as_path());
            }
        }
    }
}

/// The logits of the last of `tokens`.
fn logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut cache = KvCache::new(model.config(), 4, 64);
    let seq = cache.add_sequence();
    model
        .forward(&[SeqTokens { seq, tokens }], &mut cache)
        .unwrap()
}

#[test]
fn a_folder_runs_exactly_as_its_weights_from_memory() {
    // 12 tokens: past Mistral's window of 8, so the window is read and applied.
    let tokens = [5, 17, 3, 88, 42, 42, 9, 1, 60, 61, 2, 95];
    let tmp = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        for (float, shards) in [(Float::BF16, 1), (Float::F16, 2)] {
            let config = tiny_config(arch);
            let weights = random_weights(&config, 7);
            let dir = tmp.path().join(format!("{arch:?}-{float:?}"));
            write_folder(&dir, &tiny_config_json(arch), &weights, float, shards);
            let folder = marlin_models::open(&dir).unwrap();
            let from_folder = Model::load(folder.as_ref(), CpuBackend::detect(), Precision::F32);
            let rounded: Vec<_> = weights
                .iter()
                .map(|(n, s, v)| (n.clone(), s.clone(), float.rounded(v)))
                .collect();
            let memory = MapSource::new(config, &rounded);
            let from_memory = Model::load(&memory, CpuBackend::detect(), Precision::F32).unwrap();
            let (a, b) = (
                logits(&from_folder.unwrap(), &tokens),
                logits(&from_memory, &tokens),
            );
            assert_eq!(a, b, "{arch:?} {float:?}");
            assert!(a.iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn tied_embeddings_need_no_lm_head() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(marlin_models::Architecture::Qwen2);
    config.tie_word_embeddings = true;
    let weights = random_weights(&config, 3);
    assert!(!weights.iter().any(|(n, ..)| n == "lm_head.weight"));
    let mut json = tiny_config_json(config.architecture);
    json["tie_word_embeddings"] = true.into();
    write_folder(tmp.path(), &json, &weights, Float::BF16, 1);
    let model = HfModel::open(tmp.path()).unwrap();
    assert!(model.config().tie_word_embeddings);
    Model::load(&model, CpuBackend::detect(), Precision::F32).unwrap();
}

#[test]
fn generation_config_adds_end_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_config(marlin_models::Architecture::Llama);
    let mut json = tiny_config_json(config.architecture);
    json["eos_token_id"] = serde_json::json!([2, 7]);
    write_folder(
        tmp.path(),
        &json,
        &random_weights(&config, 1),
        Float::F32,
        1,
    );
    std::fs::write(
        tmp.path().join("generation_config.json"),
        r#"{"bos_token_id": 1, "eos_token_id": [7, 9], "do_sample": true}"#,
    )
    .unwrap();
    let model = HfModel::open(tmp.path()).unwrap();
    assert_eq!(model.config().eos_token_ids, [2, 7, 9]);
}

/// A single model.safetensors wins over an index beside it, as in transformers.
#[test]
fn a_single_file_wins_over_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_config(marlin_models::Architecture::Llama);
    let weights = random_weights(&config, 1);
    write_folder(
        tmp.path(),
        &tiny_config_json(config.architecture),
        &weights,
        Float::F32,
        2,
    );
    write_folder(
        tmp.path(),
        &tiny_config_json(config.architecture),
        &weights,
        Float::BF16,
        1,
    );
    let model = HfModel::open(tmp.path()).unwrap();
    assert_eq!(model.files().len(), 1);
    assert_eq!(model.tensors()[0].stored_as, "BF16");
}
