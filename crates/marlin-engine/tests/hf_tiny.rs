//! The engine on the golden Hugging Face fixtures (marlin-models/tests/fixtures/tiny, made by
//! `scripts/make_tiny_checkpoints.py`): a folder loads whole, its tokenizer and chat template
//! give transformers' ids, and greedy generation continues as transformers did.
//!
//! llama and mistral keep their chat template inside tokenizer_config.json (transformers 4.x),
//! qwen2 and qwen3 in chat_template.jinja (5.x); all four share one tokenizer.json.

use std::path::{Path, PathBuf};

use marlin_engine::chat::Message;
use marlin_engine::generate::{FinishReason, GenerateParams};
use marlin_engine::{Engine, TextParams};
use serde_json::Value;

const FAMILIES: [&str; 4] = ["llama", "mistral", "qwen2", "qwen3"];

fn folder(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../marlin-models/tests/fixtures/tiny")
        .join(family)
}

fn reference(family: &str) -> Value {
    let path = folder(family).join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn engine(family: &str) -> Engine {
    Engine::load(folder(family)).unwrap_or_else(|e| panic!("{family}: {e}"))
}

#[test]
fn the_tokenizer_gives_transformers_ids() {
    for family in FAMILIES {
        let engine = engine(family);
        let reference = reference(family);
        let cases = reference["tokenizer"]["encode"].as_array().unwrap();
        assert!(cases.len() >= 5, "{family}: too few tokenizer cases");
        for case in cases {
            let text = case["text"].as_str().unwrap();
            assert_eq!(
                engine.encode(text).unwrap(),
                ids(&case["ids"]),
                "{family}: {text:?}"
            );
        }
    }
}

#[test]
fn the_chat_template_gives_transformers_ids() {
    for family in FAMILIES {
        let engine = engine(family);
        let chat = &reference(family)["tokenizer"]["chat"];
        assert_eq!(chat["add_generation_prompt"], Value::Bool(true));
        let messages: Vec<Message> = chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        assert_eq!(
            engine.encode_chat(&messages).unwrap(),
            ids(&chat["ids"]),
            "{family}: transformers rendered {:?}",
            chat["text"]
        );
    }
}

/// Every prompt, through the engine's own loop (chunked prefill, sampler, stop tokens): the
/// same tokens as transformers' greedy search, up to the first end-of-sequence token, where
/// the engine stops and transformers (told not to) went on.
#[test]
fn greedy_generation_continues_as_transformers() {
    for family in FAMILIES {
        let engine = engine(family);
        let reference = reference(family);
        let eos = ids(&reference["eos_token_ids"]);
        for prompt in reference["prompts"].as_array().unwrap() {
            let (ids_in, want) = (ids(&prompt["ids"]), ids(&prompt["greedy"]));
            let stop = want.iter().position(|t| eos.contains(t));
            let params = TextParams {
                generate: GenerateParams {
                    max_tokens: want.len(),
                    // Several passes over the longer prompts.
                    prefill_chunk: 7,
                    ..Default::default()
                },
                ..Default::default()
            };
            let done = engine.generate(&ids_in, &params, |_| {}).unwrap();
            assert_eq!(
                done.token_ids,
                want[..stop.unwrap_or(want.len())],
                "{family}, prompt of {} tokens",
                ids_in.len()
            );
            let finish = match stop {
                Some(_) => FinishReason::Stop,
                None => FinishReason::Length,
            };
            assert_eq!(done.finish_reason, finish, "{family}");
        }
    }
}
