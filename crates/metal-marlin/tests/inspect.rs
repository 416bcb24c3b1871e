//! `metal-marlin inspect` on the default model.

mod support;

use std::time::Duration;

use support::{Scratch, run};

#[test]
fn inspect_describes_the_default_model() {
    let model = marlin_testkit::smollm2_gguf();
    let model = model.to_str().unwrap();
    let scratch = Scratch::new("inspect");
    let limit = Duration::from_secs(60);

    let out = run(&["inspect", model], "", &scratch.0, limit);
    assert!(out.ok, "stderr: {}", out.stderr);
    for needle in [
        "llama",
        "Q4_1",
        "int4-affine",
        "134.5M",
        "context length",
        "estimates",
    ] {
        assert!(out.stdout.contains(needle), "{needle} in:\n{}", out.stdout);
    }

    let out = run(&["inspect", model, "--json"], "", &scratch.0, limit);
    assert!(out.ok, "stderr: {}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("inspect --json is JSON");
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["size_bytes"], 98_362_432);
    let params = v["parameters"].as_u64().unwrap();
    assert!((130_000_000..140_000_000).contains(&params), "{params}");
    let config = &v["config"];
    assert_eq!(config["num_hidden_layers"], 30);
    assert_eq!(config["hidden_size"], 576);
    assert_eq!(config["num_key_value_heads"], 3);
    assert_eq!(config["tie_word_embeddings"], true);
    let types = v["stored_types"].as_array().unwrap();
    let q4_1 = types
        .iter()
        .find(|t| t["stored_as"] == "Q4_1")
        .expect("Q4_1");
    assert_eq!(
        (&q4_1["in_memory"], &q4_1["conversion"]),
        (&"int4-affine".into(), &"packed".into())
    );
    let total: u64 = types
        .iter()
        .map(|t| t["parameters"].as_u64().unwrap())
        .sum();
    assert_eq!(total, params);
    let m = &v["memory_estimate"];
    // 30 layers * 3 kv heads * 64 dims, keys and values, f32.
    assert_eq!(m["kv_cache_bytes_per_token"], 2 * 30 * 3 * 64 * 4);
    let weights = m["weights_bytes"].as_u64().unwrap();
    assert!(weights > 90_000_000 && weights < 400_000_000, "{weights}");
    assert_eq!(
        m["total_bytes_at_context"].as_u64().unwrap(),
        weights + m["kv_cache_bytes_at_context"].as_u64().unwrap()
    );
}
