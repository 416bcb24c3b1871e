//! config.json into ModelConfig: the shapes transformers 4 and 5 write, the defaults of
//! transformers' config classes, and what is refused.

use std::path::Path;

use marlin_models::hf::parse_config;
use marlin_models::{Architecture, ModelConfig, ModelError, RopeScaling};
use serde_json::{Value, json};

fn parse(config: &Value) -> Result<ModelConfig, ModelError> {
    parse_config(Path::new("m"), config.to_string().as_bytes(), None)
}

const LLAMA31: RopeScaling = RopeScaling {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
};

/// What `LlamaConfig(...).to_json_string(use_diff=False)` writes in transformers 5.23:
/// rope_theta inside `rope_parameters`, and many fields we do not read.
#[test]
fn transformers_5_llama_with_rope_parameters() {
    let c = parse(&json!({
        "_name_or_path": "", "architectures": ["LlamaForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "bos_token_id": 1, "chunk_size_feed_forward": 0,
        "dtype": null, "eos_token_id": [2, 3], "head_dim": 16, "hidden_act": "silu",
        "hidden_size": 64, "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
        "initializer_range": 0.02, "intermediate_size": 96, "is_encoder_decoder": false,
        "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "max_position_embeddings": 16384,
        "mlp_bias": false, "model_type": "llama", "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "pad_token_id": null,
        "pretraining_tp": 1, "problem_type": null, "return_dict": true, "rms_norm_eps": 1e-06,
        "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_theta": 500000.0,
            "rope_type": "llama3"},
        "tie_word_embeddings": false, "transformers_version": "5.23.0", "use_cache": true,
        "vocab_size": 96
    }))
    .unwrap();
    assert_eq!(
        c,
        ModelConfig {
            architecture: Architecture::Llama,
            vocab_size: 96,
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            max_position_embeddings: 16384,
            rms_norm_eps: 1e-6,
            rope_theta: 500_000.0,
            rope_scaling: Some(LLAMA31),
            tie_word_embeddings: false,
            sliding_window: None,
            attention_bias: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2, 3],
        }
    );
}

/// Llama 3.1 8B's config.json as transformers 4 wrote it: `rope_scaling` beside a top-level
/// `rope_theta`; and the same with the older `type` key.
#[test]
fn transformers_4_llama31_with_rope_scaling() {
    let mut config = json!({
        "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
        "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256
    });
    for key in ["rope_type", "type"] {
        let scaling = config["rope_scaling"].as_object_mut().unwrap();
        scaling.remove("rope_type");
        scaling.insert(key.into(), json!("llama3"));
        let c = parse(&config).unwrap();
        assert_eq!(c.rope_theta, 500_000.0);
        assert_eq!(c.rope_scaling, Some(LLAMA31));
        assert_eq!((c.head_dim, c.num_key_value_heads), (128, 8));
        assert_eq!(c.eos_token_ids, [128001, 128008, 128009]);
        assert_eq!(c.bos_token_id, Some(128000));
        assert_eq!(c.rms_norm_eps, 1e-5);
    }
    // Without original_max_position_embeddings, transformers takes max_position_embeddings.
    config["rope_scaling"]
        .as_object_mut()
        .unwrap()
        .remove("original_max_position_embeddings");
    let c = parse(&config).unwrap();
    assert_eq!(
        c.rope_scaling.unwrap().original_max_position_embeddings,
        131072
    );
}

/// Qwen2.5-0.5B-Instruct (transformers 4): a window configured but switched off, tied
/// embeddings, head size from hidden / heads, q/k/v biases.
#[test]
fn qwen25_with_its_window_switched_off() {
    let c = parse(&json!({
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu",
        "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
        "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2",
        "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
        "tie_word_embeddings": true, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
        "vocab_size": 151936
    }))
    .unwrap();
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert_eq!((c.head_dim, c.sliding_window), (64, None));
    assert!(c.attention_bias && c.tie_word_embeddings);
    assert_eq!((c.rope_theta, c.rope_scaling), (1e6, None));
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids),
        (Some(151643), vec![151645])
    );
}

/// Qwen3-0.6B (transformers 4; rope_theta written as an integer) and transformers 5's
/// Qwen3Config with `layer_types` all full attention.
#[test]
fn qwen3_in_both_shapes() {
    let c = parse(&json!({
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
        "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
        "intermediate_size": 3072, "max_position_embeddings": 40960, "max_window_layers": 28,
        "model_type": "qwen3", "num_attention_heads": 16, "num_hidden_layers": 28,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": null,
        "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true,
        "use_sliding_window": false, "vocab_size": 151936
    }))
    .unwrap();
    assert_eq!(
        (c.architecture, c.head_dim, c.rope_theta),
        (Architecture::Qwen3, 128, 1e6)
    );
    assert!(!c.attention_bias);
    let c = parse(&json!({
        "attention_bias": false, "bos_token_id": null, "eos_token_id": null, "head_dim": 16,
        "hidden_act": "silu", "hidden_size": 64, "intermediate_size": 96,
        "layer_types": ["full_attention", "full_attention"], "max_position_embeddings": 16384,
        "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "sliding_window": null, "tie_word_embeddings": false, "use_sliding_window": false,
        "vocab_size": 96
    }))
    .unwrap();
    assert_eq!((c.head_dim, c.bos_token_id), (16, None));
    assert!(c.eos_token_ids.is_empty());
}

/// Mistral 7B v0.1 slides a 4096-token window; v0.2 on writes null (none).
#[test]
fn mistral_sliding_window() {
    let mut config = json!({
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
        "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": false,
        "vocab_size": 32000
    });
    assert_eq!(parse(&config).unwrap().sliding_window, Some(4096));
    config["sliding_window"] = Value::Null;
    assert_eq!(parse(&config).unwrap().sliding_window, None);
    config["sliding_window"] = json!(0);
    assert!(matches!(parse(&config), Err(ModelError::Config { .. })));
}

fn minimal(model_type: &str) -> Value {
    json!({
        "model_type": model_type, "vocab_size": 96, "hidden_size": 64,
        "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4
    })
}

/// Absent fields take the defaults of transformers' config classes.
#[test]
fn absent_fields_take_transformers_defaults() {
    for (ty, arch) in [
        ("llama", Architecture::Llama),
        ("mistral", Architecture::Mistral),
        ("qwen2", Architecture::Qwen2),
        ("qwen3", Architecture::Qwen3),
    ] {
        let c = parse(&minimal(ty)).unwrap();
        assert_eq!(c.architecture, arch);
        assert_eq!(c.num_key_value_heads, 4, "{ty}");
        // Qwen3Config's head_dim defaults to 128, the others' to hidden / heads.
        let head_dim = if arch == Architecture::Qwen3 { 128 } else { 16 };
        assert_eq!(c.head_dim, head_dim, "{ty}");
        assert_eq!((c.rope_theta, c.rope_scaling), (10_000.0, None), "{ty}");
        assert_eq!(c.rms_norm_eps, 1e-6, "{ty}");
        assert!(!c.tie_word_embeddings, "{ty}");
        assert_eq!(c.attention_bias, arch == Architecture::Qwen2, "{ty}");
        let window = (arch == Architecture::Mistral).then_some(4096);
        assert_eq!(c.sliding_window, window, "{ty}");
        // LlamaConfig and MistralConfig default to Llama 2's BOS 1 and EOS 2.
        let llama_like = matches!(arch, Architecture::Llama | Architecture::Mistral);
        assert_eq!(c.bos_token_id, llama_like.then_some(1), "{ty}");
        assert_eq!(c.eos_token_ids, if llama_like { vec![2] } else { vec![] });
        let max_position = match arch {
            Architecture::Llama => 2048,
            Architecture::Mistral => 131_072,
            _ => 32_768,
        };
        assert_eq!(c.max_position_embeddings, max_position);
    }
    // null means None where transformers reads it so.
    let mut c = minimal("qwen3");
    c["head_dim"] = Value::Null;
    c["num_key_value_heads"] = Value::Null;
    c["eos_token_id"] = Value::Null;
    let c = parse(&c).unwrap();
    assert_eq!((c.head_dim, c.num_key_value_heads), (16, 4));
    // architectures[0] wins over model_type.
    let mut c = minimal("llama");
    c["architectures"] = json!(["Qwen2ForCausalLM"]);
    assert_eq!(parse(&c).unwrap().architecture, Architecture::Qwen2);
}

/// A refused configuration: the variant, and the message naming config.json and `needle`.
fn refused(config: &Value, needle: &str) -> ModelError {
    let err = parse(config).expect_err(needle);
    let text = err.to_string();
    assert!(text.contains("config.json"), "{text}");
    assert!(text.contains(needle), "{needle:?} not in {text}");
    err
}

#[test]
fn unsupported_models_are_refused_with_what_is_supported() {
    let mut c = minimal("llama");
    c["architectures"] = json!(["MixtralForCausalLM"]);
    let e = refused(&c, "MixtralForCausalLM");
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("Qwen3ForCausalLM"), "{e}");
    let e = refused(&minimal("gemma2"), "gemma2");
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    let mut c = minimal("llama");
    c.as_object_mut().unwrap().remove("model_type");
    assert!(matches!(
        refused(&c, "model_type"),
        ModelError::Config { .. }
    ));
}

#[test]
fn what_our_graph_does_not_compute_is_refused() {
    let cases: [(&str, Value, &str); 9] = [
        (
            "llama",
            json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
            "yarn",
        ),
        (
            "llama",
            json!({"rope_scaling": {"type": "linear", "factor": 2.0}}),
            "linear",
        ),
        (
            "llama",
            json!({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}),
            "dynamic",
        ),
        (
            "qwen2",
            json!({"rope_scaling": {"rope_type": "longrope"}}),
            "longrope",
        ),
        (
            "qwen2",
            json!({"quantization_config": {"quant_method": "gptq", "bits": 4}}),
            "gptq",
        ),
        (
            "llama",
            json!({"quantization_config": {"quant_method": "awq"}}),
            "awq",
        ),
        ("llama", json!({"hidden_act": "gelu"}), "gelu"),
        ("llama", json!({"attention_bias": true}), "attention_bias"),
        ("llama", json!({"mlp_bias": true}), "mlp_bias"),
    ];
    for (ty, extra, needle) in cases {
        let mut c = minimal(ty);
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let e = refused(&c, needle);
        assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    }
}

#[test]
fn qwen_sliding_layers_are_refused_unless_none_slides() {
    let mut c = minimal("qwen2");
    c["use_sliding_window"] = json!(true);
    c["sliding_window"] = json!(16);
    c["max_window_layers"] = json!(1);
    let e = refused(&c, "sliding");
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    // Every layer below max_window_layers: none slides, so it loads.
    c["max_window_layers"] = json!(2);
    assert_eq!(parse(&c).unwrap().sliding_window, None);
    // transformers 5 lists the layers.
    c["layer_types"] = json!(["full_attention", "sliding_attention"]);
    refused(&c, "sliding");
}

#[test]
fn bad_values_name_the_field() {
    for (key, value) in [
        ("hidden_size", json!("64")),
        ("hidden_size", json!(-1)),
        ("hidden_size", json!(64.5)),
        ("vocab_size", json!(1u64 << 40)),
        ("num_attention_heads", json!(0)),
        ("num_key_value_heads", json!(3)),
        ("rms_norm_eps", json!(-1.0)),
        ("rms_norm_eps", json!(1e300)),
        ("rope_theta", json!(0)),
        ("eos_token_id", json!([2, "x"])),
        ("bos_token_id", json!(-1)),
        ("tie_word_embeddings", json!("yes")),
        ("head_dim", json!(15)),
        ("architectures", json!("LlamaForCausalLM")),
        ("rope_scaling", json!([1])),
        ("layer_types", json!(7)),
    ] {
        let mut c = minimal("llama");
        c[key] = value.clone();
        if key == "layer_types" {
            c["model_type"] = json!("qwen2");
        }
        let e = parse(&c).expect_err(key);
        assert!(
            matches!(e, ModelError::Config { .. }),
            "{key} = {value}: {e}"
        );
        let text = e.to_string();
        assert!(text.contains("config.json"), "{text}");
        let named = text.contains(key) || key == "head_dim" || key == "num_attention_heads";
        assert!(named, "{key} = {value}: {text}");
    }
    // A llama3 rope without its factors.
    let mut c = minimal("llama");
    c["rope_parameters"] = json!({"rope_type": "llama3", "factor": 8.0});
    refused(&c, "rope_parameters.low_freq_factor");
    c["rope_parameters"] = json!({"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 4.0, "high_freq_factor": 4.0});
    refused(&c, "high_freq_factor");
}

#[test]
fn generation_config_end_tokens_join_and_errors_name_it() {
    let config = minimal("qwen2").to_string();
    let gen_config = br#"{"bos_token_id": 5, "eos_token_id": [7, 8]}"#;
    let c = parse_config(Path::new("m"), config.as_bytes(), Some(gen_config)).unwrap();
    assert_eq!((c.bos_token_id, c.eos_token_ids), (Some(5), vec![7, 8]));
    let e = parse_config(
        Path::new("m"),
        config.as_bytes(),
        Some(b"{\"eos_token_id\": 1.5}"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("generation_config.json"), "{e}");
    assert!(e.to_string().contains("eos_token_id"), "{e}");
}

#[test]
fn not_json_is_a_config_error_naming_the_file() {
    for bytes in [&b"{\"model_type\": "[..], b"[]", b"\xff\xfe{}", b""] {
        let e = parse_config(Path::new("m"), bytes, None).unwrap_err();
        assert!(matches!(e, ModelError::Config { .. }), "{e}");
        assert!(e.to_string().contains("config.json"), "{e}");
    }
}
