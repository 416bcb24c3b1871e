//! Corrupted safetensors files, config.json and model.safetensors.index.json: truncated at
//! every byte, bytes flipped, absurd lengths, offsets and shapes, arbitrary JSON. Every one
//! must give an error or a valid model, never a panic or an out-of-bounds read; whatever
//! opens must also read. Crashers found are kept at the end as plain tests.

mod hf_support;

use std::path::Path;

use hf_support::{Float, random_weights, rich_file, tiny_config, tiny_config_json, write_folder};
use marlin_models::hf::{HfModel, SafetensorsFile, parse_config};
use marlin_models::{Architecture, ModelError, Weight, WeightSource};
use proptest::prelude::*;
use serde_json::Value;

/// Opens `bytes` and, if that works, reads every tensor; whether the file opened.
fn exercise(bytes: Vec<u8>) -> bool {
    let file = match SafetensorsFile::from_bytes("fuzz.safetensors", bytes) {
        Ok(f) => f,
        Err(e) => {
            assert!(e.to_string().contains("fuzz.safetensors"), "{e}");
            return false;
        }
    };
    for t in file.tensors() {
        let data = file.tensor_data(t).unwrap();
        assert_eq!(data.len() as u64, t.n_bytes(), "{}", t.name);
        if let Ok(Weight::Dense(d)) = file.weight(&t.name) {
            assert_eq!(
                d.data.len(),
                t.shape.iter().product::<usize>(),
                "{}",
                t.name
            );
        }
    }
    true
}

/// Where the data section of a valid file starts.
fn data_start(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn the_rich_file_opens_and_reads() {
    let file = SafetensorsFile::from_bytes("rich.safetensors", rich_file()).unwrap();
    assert_eq!(file.tensors().len(), 6);
    for name in ["a.f32", "b.f16", "c.bf16", "d.scalar", "e.empty"] {
        file.weight(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let e = file.weight("f.i8").unwrap_err();
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    assert!(exercise(rich_file()));
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let bytes = rich_file();
    for len in 0..bytes.len() {
        assert!(
            !exercise(bytes[..len].to_vec()),
            "cut at {len} of {}",
            bytes.len()
        );
    }
    // So is a byte too many: the tensors must tile the data section exactly.
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(!exercise(longer));
}

#[test]
fn absurd_header_lengths_fail_fast() {
    let good = rich_file();
    let len = good.len() as u64;
    for n in [
        u64::MAX,
        u64::MAX - 7,
        1 << 63,
        100_000_001,
        len,
        len - 7,
        0,
        1,
    ] {
        let mut bytes = good.clone();
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        let e = SafetensorsFile::from_bytes("absurd.safetensors", bytes).unwrap_err();
        assert!(matches!(e, ModelError::Malformed { .. }), "{n}: {e}");
    }
}

/// A file of one header (as text) and `data_len` zero bytes.
fn with_header(header: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    bytes
}

fn malformed(header: &str, data_len: usize, needle: &str) {
    let e =
        SafetensorsFile::from_bytes("h.safetensors", with_header(header, data_len)).unwrap_err();
    assert!(matches!(e, ModelError::Malformed { .. }), "{header}: {e}");
    assert!(e.to_string().contains(needle), "{needle:?} not in {e}");
}

#[test]
fn offsets_and_shapes_that_disagree_are_malformed() {
    let t = |dtype: &str, shape: &str, begin: u64, end: u64| {
        format!(
            r#""{dtype}{begin}":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{begin},{end}]}}"#
        )
    };
    // Out of range, overlapping, a gap, a size that is not shape x dtype, ending first.
    malformed(
        &format!("{{{}}}", t("F32", "[4]", 0, 16)),
        8,
        "past the data section",
    );
    malformed(
        &format!("{{{},{}}}", t("F32", "[4]", 0, 16), t("F16", "[4]", 8, 16)),
        16,
        "overlap",
    );
    malformed(&format!("{{{}}}", t("F32", "[2]", 4, 12)), 12, "gap");
    malformed(
        &format!("{{{}}}", t("F32", "[3]", 0, 16)),
        16,
        "needs 96 bits",
    );
    malformed(
        &format!("{{{}}}", t("F32", "[0]", 8, 0)),
        8,
        "end before they begin",
    );
    malformed(&format!("{{{}}}", t("F4", "[3]", 0, 2)), 2, "needs 12 bits");
    // Shapes whose element count overflows, in elements and in bits.
    malformed(
        &format!("{{{}}}", t("F32", "[4294967296,4294967296,2]", 0, 0)),
        0,
        "2^64",
    );
    malformed(
        &format!("{{{}}}", t("F32", "[4611686018427387904]", 0, 0)),
        0,
        "2^64",
    );
    malformed(&format!("{{{}}}", t("F32", "[-1]", 0, 0)), 0, "shape");
    malformed(&format!("{{{}}}", t("F32", "[1.5]", 0, 4)), 4, "shape");
    malformed(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#,
        4,
        "data_offsets",
    );
    malformed(
        r#"{"a":{"dtype":7,"shape":[1],"data_offsets":[0,4]}}"#,
        4,
        "dtype",
    );
    malformed(r#"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, 4, "dtype");
    malformed(r#"{"a":3}"#, 0, "dtype");
    malformed("[]", 0, "JSON object");
    malformed("", 0, "JSON object");
    // A dtype the format does not define is unsupported, naming the tensor.
    let e = SafetensorsFile::from_bytes(
        "q.safetensors",
        with_header(
            r#"{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}}"#,
            1,
        ),
    )
    .unwrap_err();
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    assert!(
        e.to_string().contains("'w'") && e.to_string().contains("Q4"),
        "{e}"
    );
    // Metadata, padding spaces and an empty file are fine.
    let ok = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}   "#;
    assert!(exercise(with_header(ok, 4)));
    assert!(exercise(with_header("{}", 0)));
}

#[test]
fn bad_text_and_deep_nesting_are_malformed() {
    let mut bytes = with_header(
        r#"{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#,
        4,
    );
    bytes[10] = 0xff;
    let e = SafetensorsFile::from_bytes("u.safetensors", bytes).unwrap_err();
    assert!(e.to_string().contains("UTF-8"), "{e}");
    // serde_json's depth limit keeps 100 000 levels off the stack.
    for deep in ["[".repeat(100_000), r#"{"a":"#.repeat(100_000)] {
        malformed(&deep, 0, "JSON");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn flipped_header_bytes_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = rich_file();
        let end = data_start(&bytes);
        for (i, b) in flips {
            bytes[i.index(end)] = b;
        }
        exercise(bytes);
    }

    #[test]
    fn overwritten_header_words_never_panic(at in any::<prop::sample::Index>(), v in prop_oneof![
        any::<u64>(),
        0u64..256,
        Just(u64::MAX),
        (0u32..64).prop_map(|s| 1u64 << s),
    ]) {
        let mut bytes = rich_file();
        let at = at.index(data_start(&bytes) - 8);
        bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
        exercise(bytes);
    }

    #[test]
    fn digits_in_the_header_rewritten_never_panic(at in any::<prop::sample::Index>(), digits in "[0-9]{1,21}") {
        // Offsets and dims are decimal text: replace one number with another of any size.
        let bytes = rich_file();
        let end = data_start(&bytes);
        let header = std::str::from_utf8(&bytes[8..end]).unwrap();
        let starts: Vec<usize> = header.char_indices()
            .filter(|&(i, c)| c.is_ascii_digit() && !header[..i].ends_with(|p: char| p.is_ascii_digit()))
            .map(|(i, _)| i).collect();
        let start = starts[at.index(starts.len())];
        let len = header[start..].find(|c: char| !c.is_ascii_digit()).unwrap();
        let new = format!("{}{digits}{}", &header[..start], &header[start + len..]);
        let mut file = (new.len() as u64).to_le_bytes().to_vec();
        file.extend(new.as_bytes());
        file.extend(&bytes[end..]);
        exercise(file);
    }

    #[test]
    fn random_truncation_and_garbage_never_panic(cut in any::<prop::sample::Index>(), tail in prop::collection::vec(any::<u8>(), 0..64)) {
        let bytes = rich_file();
        let mut b = bytes[..cut.index(bytes.len())].to_vec();
        b.extend(tail);
        exercise(b);
    }

    #[test]
    fn random_bytes_are_not_safetensors(mut bytes in prop::collection::vec(any::<u8>(), 0..512), small in any::<bool>()) {
        if small && bytes.len() >= 8 {
            let n = (bytes.len() as u64 - 8) / 2;
            bytes[..8].copy_from_slice(&n.to_le_bytes());
        }
        exercise(bytes);
    }

    #[test]
    fn random_headers_never_panic(entries in prop::collection::vec(entry(), 0..5), data_len in prop_oneof![0usize..64, Just(4096)]) {
        let body: Vec<String> = entries.iter().enumerate().map(|(i, (dtype, shape, (b, e)))| {
            format!(r#""t{i}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{b},{e}]}}"#)
        }).collect();
        exercise(with_header(&format!("{{{}}}", body.join(",")), data_len));
    }
}

/// One header entry: a dtype (known, or not), dims of any size, offsets of any size.
fn entry() -> impl Strategy<Value = (&'static str, Vec<u64>, (u64, u64))> {
    let dtype = prop::sample::select(vec![
        "F32", "F16", "BF16", "I8", "F4", "F6_E2M3", "U64", "X",
    ]);
    let n = prop_oneof![0u64..20, any::<u64>(), (0u32..64).prop_map(|s| 1u64 << s)];
    (
        dtype,
        prop::collection::vec(n.clone(), 0..4),
        (n.clone(), n),
    )
}

/// A folder with a valid model in it, reused by the config and index fuzzers (which rewrite
/// config.json or the index in it).
fn folder(sharded: bool) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_config(Architecture::Qwen3);
    let weights = random_weights(&config, 3);
    let shards = if sharded { 3 } else { 1 };
    write_folder(
        tmp.path(),
        &tiny_config_json(Architecture::Qwen3),
        &weights,
        Float::F16,
        shards,
    );
    tmp
}

/// Opens the folder and, if that works, reads every weight.
fn open_all(dir: &Path) {
    match HfModel::open(dir) {
        Ok(m) => {
            for t in m.tensors() {
                m.weight(&t.name).unwrap();
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(&dir.display().to_string()), "{text}");
        }
    }
}

/// Any JSON, with the strings and numbers configurations are made of.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (0u64..70).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u32..64).prop_map(|s| Value::from(1u64 << s)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "llama3",
            "default",
            "yarn",
            "full_attention",
            "sliding_attention",
            "silu",
            "LlamaForCausalLM",
            "Qwen3ForCausalLM",
            "qwen2",
            "mistral",
            "",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((config_key(), inner), 0..4).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

const CONFIG_KEYS: [&str; 30] = [
    "architectures",
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "rope_type",
    "type",
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
    "partial_rotary_factor",
    "tie_word_embeddings",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "layer_types",
    "attention_bias",
    "quantization_config",
    "bos_token_id",
    "eos_token_id",
];

fn config_key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(CONFIG_KEYS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_config_values_never_panic(changes in prop::collection::vec((config_key(), json_value()), 1..5)) {
        let mut config = tiny_config_json(Architecture::Qwen3);
        for (key, value) in changes {
            config[key] = value;
        }
        let bytes = config.to_string();
        if parse_config(Path::new("m"), bytes.as_bytes(), None).is_ok() {
            // The configuration parsed: check it against the tensors too.
            let dir = folder(false);
            std::fs::write(dir.path().join("config.json"), &bytes).unwrap();
            open_all(dir.path());
        }
    }

    #[test]
    fn corrupted_config_bytes_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6), cut in any::<prop::sample::Index>()) {
        let mut bytes = tiny_config_json(Architecture::Mistral).to_string().into_bytes();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = parse_config(Path::new("m"), &bytes, Some(&bytes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Names are free text in safetensors: layer indexes of any size, or none at all.
    #[test]
    fn arbitrary_tensor_names_never_panic(names in prop::collection::vec("model\\.layers\\.[0-9]{1,25}(\\.[a-z_]{0,12}){0,3}|[a-z.]{0,20}", 1..4)) {
        let dir = folder(false);
        let config = tiny_config(Architecture::Qwen3);
        let mut weights = random_weights(&config, 3);
        for name in names {
            if !weights.iter().any(|(n, ..)| *n == name) {
                weights.push((name, vec![2], vec![1.0, 2.0]));
            }
        }
        write_folder(dir.path(), &tiny_config_json(Architecture::Qwen3), &weights, Float::BF16, 1);
        open_all(dir.path());
    }
}

#[test]
fn corrupted_indexes_never_panic() {
    let dir = folder(true);
    let index_path = dir.path().join("model.safetensors.index.json");
    let good = std::fs::read(&index_path).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(128));
    let strategy = (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
        prop::collection::vec((any::<prop::sample::Index>(), index_target()), 0..3),
    );
    runner
        .run(&strategy, |(flips, cut, remaps)| {
            let mut index: Value = serde_json::from_slice(&good).unwrap();
            let names: Vec<String> = index["weight_map"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            for (which, target) in remaps {
                index["weight_map"][&names[which.index(names.len())]] = target;
            }
            let mut bytes = index.to_string().into_bytes();
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            std::fs::write(&index_path, &bytes).unwrap();
            open_all(dir.path());
            Ok(())
        })
        .unwrap();
}

/// Where a fuzzed index may send a tensor.
fn index_target() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "model-00001-of-00003.safetensors",
            "model-00003-of-00003.safetensors",
            "config.json",
            "../model-00001-of-00003.safetensors",
            "/dev/zero",
            ".",
            "..",
            "",
            "C:x",
            "missing.safetensors",
        ])
        .prop_map(Value::from),
        json_value(),
    ]
}

#[test]
fn deeply_nested_json_files_are_errors() {
    let dir = folder(true);
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    std::fs::write(dir.path().join("model.safetensors.index.json"), &deep).unwrap();
    let e = HfModel::open(dir.path()).unwrap_err();
    assert!(matches!(e, ModelError::Malformed { .. }), "{e}");
    std::fs::write(dir.path().join("config.json"), &deep).unwrap();
    let e = HfModel::open(dir.path()).unwrap_err();
    assert!(matches!(e, ModelError::Config { .. }), "{e}");
    let config = tiny_config_json(Architecture::Llama).to_string();
    let e = parse_config(Path::new("m"), config.as_bytes(), Some(deep.as_bytes())).unwrap_err();
    assert!(e.to_string().contains("generation_config.json"), "{e}");
}

// Crashers, kept as plain tests.

/// The `safetensors` crate 0.8 panics on this header ("attempt to add with overflow" in
/// `read_metadata`: eight 2^61-byte tensors end at 2^64 - 8, and it adds the header length
/// unchecked); the reason the loader parses headers itself. Here it is a plain error.
#[test]
fn crasher_offsets_near_u64_max_in_the_reference_parser() {
    let n: u64 = (1 << 61) - 1;
    let entries: Vec<String> = (0..8u64)
        .map(|i| {
            format!(
                r#""t{i}":{{"dtype":"U8","shape":[{n}],"data_offsets":[{},{}]}}"#,
                i * n,
                (i + 1) * n
            )
        })
        .collect();
    let bytes = with_header(&format!("{{{}}}", entries.join(",")), 0);
    let e = SafetensorsFile::from_bytes("big.safetensors", bytes).unwrap_err();
    assert!(matches!(e, ModelError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("past the data section"), "{e}");
}

/// Found in review: a tensor named for layer usize::MAX made the layer count overflow.
#[test]
fn crasher_layer_index_usize_max() {
    let dir = folder(false);
    let config = tiny_config(Architecture::Qwen3);
    let mut weights = random_weights(&config, 3);
    weights.push((format!("model.layers.{}.x", usize::MAX), vec![1], vec![0.0]));
    write_folder(
        dir.path(),
        &tiny_config_json(Architecture::Qwen3),
        &weights,
        Float::F32,
        1,
    );
    let e = HfModel::open(dir.path()).unwrap_err();
    assert!(matches!(e, ModelError::Config { .. }), "{e}");
    assert!(e.to_string().contains("num_hidden_layers"), "{e}");
}
