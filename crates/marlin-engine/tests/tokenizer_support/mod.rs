//! Loads the committed SmolLM2 fixtures (made by `fixtures/make_tokenizer_fixtures.py`).

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;

use marlin_models::FileVocab;
use serde_json::Value;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture is committed");
    serde_json::from_str(&text).expect("fixture is valid JSON")
}

/// SmolLM2-135M-Instruct's GGUF vocabulary, rebuilt from the compact fixture: the first
/// tokens as listed, then one token per merge (the merge's two tokens joined), which is how
/// SmolLM2's ids are laid out (the generating script checks it against the file).
pub fn smollm2_vocab() -> FileVocab {
    let meta = read_json("smollm2-vocab.json");
    let bytes = std::fs::read(fixture("smollm2-merges.bin")).expect("fixture is committed");
    let ids: Vec<usize> = bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .collect();
    let mut tokens: Vec<String> = meta["base_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let mut merges = Vec::with_capacity(ids.len() / 2);
    for pair in ids.chunks_exact(2) {
        let (left, right) = (tokens[pair[0]].clone(), tokens[pair[1]].clone());
        merges.push(format!("{left} {right}"));
        tokens.push(left + &right);
    }
    let mut token_types = Vec::with_capacity(tokens.len());
    for run in meta["token_type_runs"].as_array().unwrap() {
        let (ty, count) = (run[0].as_i64().unwrap(), run[1].as_u64().unwrap());
        token_types.extend(std::iter::repeat_n(ty as i32, count as usize));
    }
    let id = |key: &str| meta[key].as_u64().map(|v| v as u32);
    FileVocab {
        model: meta["model"].as_str().unwrap().to_owned(),
        pre: meta["pre"].as_str().unwrap().to_owned(),
        tokens,
        token_types,
        merges,
        bos_token_id: id("bos_token_id"),
        eos_token_id: id("eos_token_id"),
        unknown_token_id: id("unknown_token_id"),
        padding_token_id: id("padding_token_id"),
        add_bos_token: meta["add_bos_token"].as_bool().unwrap(),
        add_space_prefix: meta["add_space_prefix"].as_bool().unwrap(),
        chat_template: meta["chat_template"].as_str().map(str::to_owned),
    }
}

/// transformers' outputs for the fixture strings and conversations.
pub fn reference() -> Value {
    read_json("tokenizer-reference.json")
}

pub fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("a list of ids")
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}
